//! vrouterd: the gateway's control sidecar. See `vrouterd run --help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use cvlan_sidecar::daemon::{self, Settings};
use cvlan_tables::SegmentParams;
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(
    name = "vrouterd",
    version,
    about = "CloudVLAN gateway sidecar: writes the shared-memory tables the fast path reads, runs the WireGuard handshakes it punts, and follows the control plane",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the sidecar (enrols on first start, then holds the control plane's Sync stream;
    /// or serves tables from a --bootstrap file without a control plane).
    Run(Box<RunArgs>),
}

#[derive(ValueEnum, Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    Text,
    Json,
}

/// Flags win over VROUTERD_* environment variables, which win over the --config file.
#[derive(clap::Args, Debug, Default)]
struct RunArgs {
    /// TOML file with any of the options below (keys as the long flag names, with '-' or '_').
    #[arg(long, env = "VROUTERD_CONFIG")]
    config: Option<PathBuf>,
    /// Control plane node listener, e.g. https://cp.example:8443.
    #[arg(long, env = "VROUTERD_SERVER")]
    server: Option<String>,
    /// File holding the vrouter join token (first start only; the token is also read from
    /// VROUTERD_JOIN_TOKEN).
    #[arg(long, env = "VROUTERD_JOIN_TOKEN_FILE")]
    join_token_file: Option<PathBuf>,
    /// Trust this CA certificate (PEM) instead of the CA pin carried by the join token.
    #[arg(long, env = "VROUTERD_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// State directory: WireGuard key, machine key, certificate, cached tables [default: /var/lib/vrouterd].
    #[arg(long, env = "VROUTERD_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The gateway's underlay address and WireGuard port (outer source of every packet).
    #[arg(long, env = "VROUTERD_LISTEN")]
    listen: Option<SocketAddr>,
    /// Shared-memory table segment [default: /dev/shm/cvlan-tables].
    #[arg(long, env = "VROUTERD_SEGMENT")]
    segment: Option<PathBuf>,
    /// Keypair table size when creating the segment (power of two) [default: 65536].
    #[arg(long, env = "VROUTERD_KEYPAIR_CAPACITY")]
    keypair_capacity: Option<u32>,
    /// Bytes per generation slot when creating the segment [default: 67108864].
    #[arg(long, env = "VROUTERD_SLOT_SIZE")]
    slot_size: Option<usize>,
    /// Worker slots when creating the segment [default: 16].
    #[arg(long, env = "VROUTERD_MAX_WORKERS")]
    max_workers: Option<u32>,
    /// Our punt socket (vrouter-dpdk sends punted packets here) [default: /run/cvlan/vrouterd-punt.sock].
    #[arg(long, env = "VROUTERD_PUNT_SOCKET")]
    punt_socket: Option<PathBuf>,
    /// vrouter-dpdk's socket (TX and STATS_REQ go there) [default: /run/cvlan/vrouter-dpdk.sock].
    #[arg(long, env = "VROUTERD_DPDK_SOCKET")]
    dpdk_socket: Option<PathBuf>,
    /// Control socket for vrouterctl [default: /run/cvlan/vrouterd.sock].
    #[arg(long, env = "VROUTERD_CONTROL_SOCKET")]
    control_socket: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (GET /metrics).
    #[arg(long, env = "VROUTERD_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Tables from this TOML file instead of the control plane (see README.md).
    #[arg(long, env = "VROUTERD_BOOTSTRAP")]
    bootstrap: Option<PathBuf>,
    /// Handshake messages per second above which initiations must carry a cookie [default: 1000].
    #[arg(long, env = "VROUTERD_COOKIE_THRESHOLD")]
    cookie_threshold: Option<u32>,
    /// Log format [default: text].
    #[arg(long, env = "VROUTERD_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(alias = "server")]
    server: Option<String>,
    #[serde(alias = "join-token-file")]
    join_token_file: Option<PathBuf>,
    #[serde(alias = "ca-file")]
    ca_file: Option<PathBuf>,
    #[serde(alias = "state-dir")]
    state_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    segment: Option<PathBuf>,
    #[serde(alias = "keypair-capacity")]
    keypair_capacity: Option<u32>,
    #[serde(alias = "slot-size")]
    slot_size: Option<usize>,
    #[serde(alias = "max-workers")]
    max_workers: Option<u32>,
    #[serde(alias = "punt-socket")]
    punt_socket: Option<PathBuf>,
    #[serde(alias = "dpdk-socket")]
    dpdk_socket: Option<PathBuf>,
    #[serde(alias = "control-socket")]
    control_socket: Option<PathBuf>,
    #[serde(alias = "metrics-listen")]
    metrics_listen: Option<SocketAddr>,
    bootstrap: Option<PathBuf>,
    #[serde(alias = "cookie-threshold")]
    cookie_threshold: Option<u32>,
    #[serde(alias = "log-format")]
    log_format: Option<LogFormat>,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

fn settings(a: RunArgs) -> anyhow::Result<(Settings, LogFormat)> {
    let f: FileConfig = match &a.config {
        Some(p) => toml::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("parsing {}", p.display()))?,
        None => FileConfig::default(),
    };
    let listen = a
        .listen
        .or(f.listen)
        .context("--listen IP:PORT (the underlay address) is required")?;
    let token_file = a.join_token_file.or(f.join_token_file);
    let join_token = match token_file {
        Some(p) => Some(
            std::fs::read_to_string(&p)
                .with_context(|| format!("reading the join token file {}", p.display()))?,
        ),
        None => std::env::var("VROUTERD_JOIN_TOKEN").ok(),
    }
    .map(cvlan_sidecar::control::JoinToken);
    let s = Settings {
        server: a.server.or(f.server),
        join_token,
        ca_file: a.ca_file.or(f.ca_file),
        state_dir: a
            .state_dir
            .or(f.state_dir)
            .unwrap_or_else(|| cvlan_sidecar::DEFAULT_STATE_DIR.into()),
        listen,
        segment: a
            .segment
            .or(f.segment)
            .unwrap_or_else(|| cvlan_sidecar::DEFAULT_SEGMENT.into()),
        params: SegmentParams {
            keypair_capacity: a.keypair_capacity.or(f.keypair_capacity).unwrap_or(1 << 16),
            slot_size: a.slot_size.or(f.slot_size).unwrap_or(64 << 20),
            max_workers: a.max_workers.or(f.max_workers).unwrap_or(16),
        },
        punt_socket: a
            .punt_socket
            .or(f.punt_socket)
            .unwrap_or_else(|| cvlan_sidecar::DEFAULT_PUNT_SOCKET.into()),
        dpdk_socket: a
            .dpdk_socket
            .or(f.dpdk_socket)
            .unwrap_or_else(|| cvlan_sidecar::DEFAULT_DPDK_SOCKET.into()),
        control_socket: a
            .control_socket
            .or(f.control_socket)
            .unwrap_or_else(|| cvlan_sidecar::DEFAULT_CONTROL_SOCKET.into()),
        metrics_listen: a.metrics_listen.or(f.metrics_listen),
        bootstrap: a.bootstrap.or(f.bootstrap),
        cookie_threshold: a.cookie_threshold.or(f.cookie_threshold).unwrap_or(1000),
    };
    if s.server.is_none() && s.bootstrap.is_none() {
        anyhow::bail!("either --server URL or --bootstrap FILE is required");
    }
    if !s.params.keypair_capacity.is_power_of_two() {
        anyhow::bail!("--keypair-capacity must be a power of two");
    }
    Ok((s, a.log_format.or(f.log_format).unwrap_or(LogFormat::Text)))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let Cmd::Run(args) = cli.cmd;
    let (s, format) = match settings(*args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("vrouterd: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logs(format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vrouterd: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => return,
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("stopping");
            let _ = tx.send(true);
        });
        daemon::run(s, rx).await
    });
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "vrouterd failed");
            std::process::ExitCode::FAILURE
        }
    }
}
