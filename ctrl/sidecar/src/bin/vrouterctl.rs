//! vrouterctl: look at a running vrouterd (tables, peers, keypairs' ages, counters, punt queue).
#![allow(clippy::print_stdout)] // a CLI: stdout is its output

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use cvlan_sidecar::ctl::{Request, Response, render};

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Command {
    /// Generation, key, control plane connection, counts.
    Status,
    /// Tenants with their ACL and route sizes.
    Tables,
    /// Peers: endpoint, keypair ages, handshake in flight.
    Peers,
    /// Keypairs (indices, ages, roles; never keys).
    Keypairs,
    /// Slow-path counters and the data plane's per-port/worker/peer/tenant counters.
    Counters,
    /// Punt socket statistics.
    Punt,
}

impl Command {
    fn name(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Tables => "tables",
            Self::Peers => "peers",
            Self::Keypairs => "keypairs",
            Self::Counters => "counters",
            Self::Punt => "punt",
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "vrouterctl",
    version,
    about = "Inspect a running vrouterd through its control socket"
)]
struct Cli {
    /// vrouterd's control socket.
    #[arg(long, env = "VROUTERD_CONTROL_SOCKET", default_value = cvlan_sidecar::DEFAULT_CONTROL_SOCKET)]
    socket: PathBuf,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
    /// What to show.
    #[arg(value_enum)]
    command: Command,
}

fn ask(socket: &PathBuf, cmd: &str) -> Result<Response, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot connect to {}: {e} (is vrouterd running?)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut line = serde_json::to_vec(&Request { cmd: cmd.into() }).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    BufReader::new(s)
        .read_line(&mut resp)
        .map_err(|e| format!("no answer: {e}"))?;
    serde_json::from_str(&resp).map_err(|e| format!("bad answer: {e}"))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let cmd = cli.command.name();
    match ask(&cli.socket, cmd) {
        Ok(Response {
            ok: true,
            data: Some(d),
            ..
        }) => {
            if cli.json {
                println!("{d}");
            } else {
                print!("{}", render(cmd, &d));
            }
            std::process::ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!("vrouterctl: {}", r.error.unwrap_or_else(|| "failed".into()));
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("vrouterctl: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
