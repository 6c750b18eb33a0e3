//! `cvlan-bench wg`: TCP throughput (iperf3) between two namespaces of one lab, in one run,
//! over
//! - raw veth through the lab's bridge (the ceiling: no tunnel at all),
//! - two Debian `wireguard-go` peers configured with `wg`,
//! - two `boringtun-cli` peers (installed outside the project; skipped when absent),
//! - two `cvlan-wg` peers (the agent's data plane with a static configuration),
//! - two `cvlan-agent`s joined through a `cvlan-api` in a third namespace,
//!
//! and prints Gb/s per row with ratios against wireguard-go, boringtun-cli and raw veth.
//! Every tunnel runs on the same two hosts, one after the other, so they share the same
//! underlay and CPU budget.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use cvlan_lab::cvlan::{Agent, Binaries, ControlPlane, find_binary};
use cvlan_lab::{Host, Lab, Proc, wait_until};
use serde::Serialize;
use serde_json::Value;

/// Arguments of `cvlan-bench wg`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Smoke run: 2 s per measurement, one stream.
    #[arg(long)]
    quick: bool,
    /// Seconds per iperf3 measurement [default: 10, or 2 with --quick].
    #[arg(long)]
    seconds: Option<u32>,
    /// Parallel TCP streams to measure, e.g. 1,4 [default: 1].
    #[arg(long, value_delimiter = ',')]
    streams: Vec<u32>,
    /// Only these rows (raw, wireguard-go, boringtun, cvlan-wg, cvlan-agents), comma-separated.
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Impl>,
    /// boringtun-cli binary (install it outside the project:
    /// `cargo install boringtun-cli --root /opt/boringtun-cli`).
    #[arg(
        long,
        env = "CVLAN_BENCH_BORINGTUN",
        default_value = "/opt/boringtun-cli/bin/boringtun-cli"
    )]
    boringtun: PathBuf,
    /// wireguard-go binary.
    #[arg(long, env = "CVLAN_BENCH_WIREGUARD_GO", default_value = "wireguard-go")]
    wireguard_go: PathBuf,
    /// Directory with cvlan-api, cvlanctl, cvlan-agent, cvlan and cvlan-wg [default: next to
    /// this binary].
    #[arg(long, env = "CVLAN_BENCH_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Exit unsuccessfully when a row that could run failed (skipped rows never count).
    #[arg(long)]
    strict: bool,
    /// Write the rows as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One way of carrying TCP between the two hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Impl {
    /// No tunnel: the hosts' underlay addresses over veth + bridge.
    Raw,
    /// Debian's wireguard-go.
    WireguardGo,
    /// boringtun-cli.
    Boringtun,
    /// cvlan-wg: the agent's data plane with a static configuration.
    CvlanWg,
    /// Two cvlan-agents joined through cvlan-api.
    CvlanAgents,
}

impl Impl {
    const ALL: [Impl; 5] = [
        Impl::Raw,
        Impl::WireguardGo,
        Impl::Boringtun,
        Impl::CvlanWg,
        Impl::CvlanAgents,
    ];

    fn label(self) -> &'static str {
        match self {
            Impl::Raw => "raw veth",
            Impl::WireguardGo => "wireguard-go",
            Impl::Boringtun => "boringtun-cli",
            Impl::CvlanWg => "cvlan-wg (data plane)",
            Impl::CvlanAgents => "cvlan agents",
        }
    }
}

/// What one row measured.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
enum Outcome {
    Measured { gbps: f64, retransmits: u64 },
    Skipped { reason: String },
    Failed { reason: String },
}

#[derive(Clone, Debug, Serialize)]
struct Row {
    implementation: Impl,
    streams: u32,
    seconds: u32,
    #[serde(flatten)]
    outcome: Outcome,
}

#[derive(Serialize)]
struct Report<'a> {
    rows: &'a [Row],
}

/// Overlay addresses of the static tunnels.
const OVERLAY_A: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const OVERLAY_B: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const WG_PORT: u16 = 51820;
const IPERF_PORT: u16 = 5201;

/// A tunnel that is up: its processes (killed on drop) and the address to send to.
struct Tunnel {
    _procs: Vec<Proc>,
    _agents: Vec<Agent>,
    _control: Option<ControlPlane>,
    dst: IpAddr,
}

enum Setup {
    Up(Box<Tunnel>),
    Skipped(String),
}

/// Runs the benchmark.
///
/// # Errors
/// When the lab cannot be built or iperf3/wg are missing; failures of single rows are
/// reported in the table instead (and make the exit unsuccessful with `--strict`).
pub fn run(args: Args) -> Result<()> {
    let seconds = args.seconds.unwrap_or(if args.quick { 2 } else { 10 });
    let streams = if args.streams.is_empty() {
        vec![1]
    } else {
        args.streams.clone()
    };
    for tool in ["iperf3", "wg", "ping", "ip"] {
        if !on_path(tool) {
            bail!(
                "{tool} is not installed: apt-get install -y wireguard-go wireguard-tools iperf3 iputils-ping iproute2"
            );
        }
    }
    let impls: Vec<Impl> = if args.only.is_empty() {
        Impl::ALL.to_vec()
    } else {
        args.only.clone()
    };

    let lab = Lab::new().context("building the lab (root and iproute2 are needed)")?;
    let a = lab.add_host("a")?;
    let b = lab.add_host("b")?;
    let mut rows = Vec::new();
    for &imp in &impls {
        eprintln!("== {}", imp.label());
        let setup = match imp {
            Impl::Raw => Ok(Setup::Up(Box::new(Tunnel {
                _procs: Vec::new(),
                _agents: Vec::new(),
                _control: None,
                dst: IpAddr::V4(b.ipv4()),
            }))),
            Impl::WireguardGo => uapi_pair(&lab, &a, &b, Uapi::WireguardGo(&args.wireguard_go)),
            Impl::Boringtun => uapi_pair(&lab, &a, &b, Uapi::Boringtun(&args.boringtun)),
            Impl::CvlanWg => cvlan_wg_pair(&a, &b, args.bin_dir.as_deref()),
            Impl::CvlanAgents => agents_pair(&lab, &a, &b, args.bin_dir.as_deref()),
        };
        let mut push = |streams: u32, outcome: Outcome| {
            rows.push(Row {
                implementation: imp,
                streams,
                seconds,
                outcome,
            });
        };
        match setup {
            Ok(Setup::Skipped(reason)) => {
                eprintln!("   skipped: {reason}");
                for &n in &streams {
                    push(
                        n,
                        Outcome::Skipped {
                            reason: reason.clone(),
                        },
                    );
                }
            }
            Err(e) => {
                eprintln!("   failed: {e:#}");
                for &n in &streams {
                    push(
                        n,
                        Outcome::Failed {
                            reason: format!("{e:#}"),
                        },
                    );
                }
            }
            Ok(Setup::Up(t)) => {
                for &n in &streams {
                    let outcome = match iperf(&a, &b, t.dst, seconds, n) {
                        Ok((bps, retransmits)) => {
                            eprintln!("   {n} stream(s): {:.3} Gb/s", bps / 1e9);
                            Outcome::Measured {
                                gbps: bps / 1e9,
                                retransmits,
                            }
                        }
                        Err(e) => {
                            eprintln!("   {n} stream(s) failed: {e:#}");
                            Outcome::Failed {
                                reason: format!("{e:#}"),
                            }
                        }
                    };
                    push(n, outcome);
                }
                drop(t);
            }
        }
    }
    drop(lab);

    let bins = cvlan_lab::cvlan::search_dirs(args.bin_dir.as_deref());
    print_table(&rows, &streams, seconds, &bins);
    if let Some(p) = &args.json {
        let json = serde_json::to_string_pretty(&Report { rows: &rows })?;
        std::fs::write(p, json).with_context(|| format!("writing {}", p.display()))?;
    }
    let failed = rows
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed { .. }))
        .count();
    if args.strict && failed > 0 {
        bail!("{failed} row(s) failed");
    }
    Ok(())
}

fn print_table(rows: &[Row], streams: &[u32], seconds: u32, bins: &[PathBuf]) {
    let gbps = |imp: Impl, n: u32| {
        rows.iter().find_map(|r| match r.outcome {
            Outcome::Measured { gbps, .. } if r.implementation == imp && r.streams == n => {
                Some(gbps)
            }
            _ => None,
        })
    };
    let ratio = |x: f64, base: Option<f64>| match base {
        Some(b) if b > 0.0 => format!("{:.2}×", x / b),
        _ => "–".to_string(),
    };
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "path",
        "streams",
        "Gb/s",
        "vs wireguard-go",
        "vs boringtun-cli",
        "vs raw veth",
        "TCP retransmits",
    ]);
    for &n in streams {
        let (wg, bt, raw) = (
            gbps(Impl::WireguardGo, n),
            gbps(Impl::Boringtun, n),
            gbps(Impl::Raw, n),
        );
        for r in rows.iter().filter(|r| r.streams == n) {
            let mut cells = vec![r.implementation.label().to_string(), n.to_string()];
            match &r.outcome {
                Outcome::Measured { gbps, retransmits } => {
                    cells.push(format!("{gbps:.3}"));
                    cells.push(ratio(*gbps, wg));
                    cells.push(ratio(*gbps, bt));
                    cells.push(match raw {
                        Some(x) if x > 0.0 => format!("{:.1} %", 100.0 * gbps / x),
                        _ => "–".into(),
                    });
                    cells.push(retransmits.to_string());
                }
                Outcome::Skipped { reason } => cells.push(format!("skipped: {reason}")),
                Outcome::Failed { reason } => cells.push(format!("failed: {}", short(reason))),
            }
            table.add_row(cells);
        }
    }
    let mut note = format!("iperf3 TCP, {seconds} s per row, between two lab namespaces");
    let _ = write!(note, " ({} cores); cvlan binaries from ", cores());
    // A debug build of the data plane is several times slower: say which one was measured.
    let _ = write!(
        note,
        "{}",
        bins.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    );
    #[allow(clippy::print_stdout)]
    {
        println!("{table}");
        println!("{note}");
    }
}

fn short(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > 120 {
        let mut t: String = line.chars().take(117).collect();
        t.push('…');
        t
    } else {
        line.to_string()
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZero::get)
        .unwrap_or(1)
}

pub(crate) fn on_path(tool: &str) -> bool {
    let p = Path::new(tool);
    if p.components().count() > 1 {
        return p.is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Runs iperf3 from `client` to `dst` (served in `server`); returns (received bits/s,
/// retransmits).
pub(crate) fn iperf(
    client: &Host,
    server: &Host,
    dst: IpAddr,
    seconds: u32,
    streams: u32,
) -> Result<(f64, u64)> {
    // The tunnel must carry packets (and have finished its handshake) before timing starts.
    wait_until(Duration::from_secs(15), "ping over the tunnel", || {
        let out = client.run(["ping", "-c1", "-W1", &dst.to_string()]).ok()?;
        out.status.success().then_some(())
    })?;
    let port = IPERF_PORT.to_string();
    let _srv = server.spawn(["iperf3", "-s", "-1", "-B", &dst.to_string(), "-p", &port])?;
    wait_until(Duration::from_secs(10), "iperf3 server to listen", || {
        let out = server
            .run(["ss", "-ltnH", &format!("sport = :{port}")])
            .ok()?;
        (!out.stdout.is_empty()).then_some(())
    })?;
    let limit = (seconds + 20).to_string();
    let out = client.run([
        "timeout",
        &limit,
        "iperf3",
        "-c",
        &dst.to_string(),
        "-p",
        &port,
        "-t",
        &seconds.to_string(),
        "-P",
        &streams.to_string(),
        "--connect-timeout",
        "5000",
        "-J",
    ])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "iperf3 printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {err}");
    }
    let end = &v["end"];
    let bps = end["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("iperf3 JSON lacks end.sum_received.bits_per_second"))?;
    let retransmits = end["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    Ok((bps, retransmits))
}

/// A userspace WireGuard speaking the UAPI socket protocol that `wg` configures.
enum Uapi<'a> {
    WireguardGo(&'a Path),
    Boringtun(&'a Path),
}

static IFACES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// An interface name that no other process on the machine uses: the UAPI socket lives in
/// the shared /var/run/wireguard, whatever the namespace.
fn unique_ifname() -> String {
    let n = IFACES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("wgb{}x{n}", std::process::id())
}

/// Two peers of the same userspace implementation, one in each host, over the underlay.
fn uapi_pair(lab: &Lab, a: &Host, b: &Host, imp: Uapi<'_>) -> Result<Setup> {
    let bin = match imp {
        Uapi::WireguardGo(p) | Uapi::Boringtun(p) => p,
    };
    if !on_path(&bin.to_string_lossy()) {
        return Ok(Setup::Skipped(format!(
            "not installed ({} not found)",
            bin.display()
        )));
    }
    let (ka, kb) = (genkey()?, genkey()?);
    let (pa, pb) = (pubkey(&ka)?, pubkey(&kb)?);
    let mut procs = Vec::new();
    for (host, key, peer_pub, peer, overlay) in
        [(a, &ka, &pb, b, OVERLAY_A), (b, &kb, &pa, a, OVERLAY_B)]
    {
        let ifname = unique_ifname();
        let proc = match imp {
            Uapi::WireguardGo(p) => {
                let mut c = host.command(p);
                c.args(["-f", &ifname]).env("WG_PROCESS_FOREGROUND", "1");
                host.spawn_command(c, "wireguard-go")?
            }
            Uapi::Boringtun(p) => {
                let log = host.dir().join(format!("{ifname}-boringtun.log"));
                let mut c = host.command(p);
                c.args(["-f", "--disable-drop-privileges", "-l"])
                    .arg(&log)
                    .arg(&ifname);
                host.spawn_command(c, "boringtun-cli")?
            }
        };
        let sock = PathBuf::from(format!("/var/run/wireguard/{ifname}.sock"));
        let ready = wait_until(Duration::from_secs(10), "the UAPI socket", || {
            sock.exists().then_some(())
        });
        if let Err(e) = ready {
            bail!("{e}; log: {}", proc.log());
        }
        procs.push(proc);
        let keyfile = host.dir().join(format!("{ifname}.key"));
        write_secret(&keyfile, key)?;
        host.run_ok([
            "wg",
            "set",
            &ifname,
            "private-key",
            &keyfile.to_string_lossy(),
            "listen-port",
            &WG_PORT.to_string(),
            "peer",
            peer_pub,
            "allowed-ips",
            &format!(
                "{}/32",
                if overlay == OVERLAY_A {
                    OVERLAY_B
                } else {
                    OVERLAY_A
                }
            ),
            "endpoint",
            &format!("{}:{WG_PORT}", peer.ipv4()),
        ])?;
        host.run_ok([
            "ip",
            "addr",
            "add",
            &format!("{overlay}/24"),
            "dev",
            &ifname,
        ])?;
        host.run_ok(["ip", "link", "set", &ifname, "mtu", "1420", "up"])?;
    }
    let _ = lab;
    Ok(Setup::Up(Box::new(Tunnel {
        _procs: procs,
        _agents: Vec::new(),
        _control: None,
        dst: IpAddr::V4(OVERLAY_B),
    })))
}

/// The data plane's static binary, when the build has one.
fn cvlan_wg_pair(a: &Host, b: &Host, bin_dir: Option<&Path>) -> Result<Setup> {
    let Ok(bin) = find_binary("cvlan-wg", bin_dir) else {
        return Ok(Setup::Skipped("cvlan-wg not built".into()));
    };
    let (ka, kb) = (genkey()?, genkey()?);
    let (pa, pb) = (pubkey(&ka)?, pubkey(&kb)?);
    let mut procs = Vec::new();
    for (host, key, peer_pub, peer, overlay, peer_overlay) in [
        (a, &ka, &pb, b, OVERLAY_A, OVERLAY_B),
        (b, &kb, &pa, a, OVERLAY_B, OVERLAY_A),
    ] {
        let keyfile = host.dir().join("cvlan-wg.key");
        write_secret(&keyfile, key)?;
        let mut c = host.command(&bin);
        c.args(["--tun", "cvwg0"])
            .arg(format!("--private-key=@{}", keyfile.display()))
            .args(["--listen-port", &WG_PORT.to_string()])
            .args(["--address", &format!("{overlay}/24")])
            .args([
                "--peer",
                &format!(
                    "{peer_pub},endpoint={}:{WG_PORT},allowed={peer_overlay}/32",
                    peer.ipv4()
                ),
            ]);
        let mut p = host.spawn_command(c, "cvlan-wg")?;
        let ready = wait_until(Duration::from_secs(10), "cvlan-wg's TUN", || {
            if let Ok(Some(st)) = p.try_wait() {
                return Some(Err(st));
            }
            host.run(["ip", "link", "show", "cvwg0"])
                .ok()
                .filter(|o| o.status.success())
                .map(|_| Ok(()))
        });
        match ready {
            Ok(Ok(())) => procs.push(p),
            Ok(Err(st)) => bail!("cvlan-wg exited ({st}): {}", p.log()),
            Err(e) => bail!("{e}: {}", p.log()),
        }
    }
    Ok(Setup::Up(Box::new(Tunnel {
        _procs: procs,
        _agents: Vec::new(),
        _control: None,
        dst: IpAddr::V4(OVERLAY_B),
    })))
}

/// Two agents joined through a control plane in a third host, with an allow-all policy.
fn agents_pair(lab: &Lab, a: &Host, b: &Host, bin_dir: Option<&Path>) -> Result<Setup> {
    let bins = match Binaries::find(bin_dir) {
        Ok(b) => b,
        Err(e) => return Ok(Setup::Skipped(format!("not built ({e})"))),
    };
    let ctrl = match lab.add_host("ctrl") {
        Ok(h) => h,
        Err(cvlan_lab::Error::DuplicateName(_)) => {
            bail!("the agents row can only run once per lab")
        }
        Err(e) => return Err(e.into()),
    };
    let cp = ControlPlane::start(&ctrl, &bins)?;
    cp.create_tenant("bench")?;
    cp.create_cvlan("bench", "bench", "10.77.0.0/24", Some("fd77::/64"))?;
    cp.ctl([
        "policy",
        "create",
        "--tenant",
        "bench",
        "allow-all",
        "--rule",
        "src=any dst=any action=allow",
    ])?;
    let (_, token) = cp.create_token("bench", "bench", &["--reusable", "--expires", "1h"])?;
    let mut agents = Vec::new();
    for h in [a, b] {
        let ag = Agent::start(h, &bins)?;
        ag.up(&cp.node_url(), &token)
            .with_context(|| format!("cvlan up in {}", h.name()))?;
        agents.push(ag);
    }
    let dst = agents[1].ipv4()?;
    let names = wait_until(Duration::from_secs(15), "a to see b as a peer", || {
        agents[0]
            .peer_names()
            .ok()
            .filter(|n| n.iter().any(|x| x == b.name()))
    });
    if let Err(e) = names {
        bail!("{e}; agent a log:\n{}", agents[0].log());
    }
    Ok(Setup::Up(Box::new(Tunnel {
        _procs: Vec::new(),
        _agents: agents,
        _control: Some(cp),
        dst: IpAddr::V4(dst),
    })))
}

fn genkey() -> Result<String> {
    let out = Command::new("wg").arg("genkey").output()?;
    if !out.status.success() {
        bail!("wg genkey failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn pubkey(private: &str) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(private.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("wg pubkey failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Writes a private key readable by root only.
fn write_secret(path: &Path, key: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{key}")?;
    Ok(())
}
