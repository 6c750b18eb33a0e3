//! `cvlan-agent`: the CloudVLAN device daemon. Runs as root; see `cvlan-agent --help`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use cvlan_agent::agent::{Agent, AgentConfig};
use cvlan_agent::tunnel::{MemoryFactory, TunnelFactory};
use cvlan_agent::{DEFAULT_SOCKET, DEFAULT_STATE_DIR, DEFAULT_TUN, ipc, metrics_http};
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "cvlan-agent",
    version,
    about = "CloudVLAN device agent: WireGuard tunnels to the CVLAN's peers, kept in sync with the control plane",
    long_about = "CloudVLAN device agent: WireGuard tunnels to the CVLAN's peers, kept in sync with the control plane.\n\n\
        Runs as root. Join with `cvlan up --server https://HOST:8443 --auth-key TOKEN`; the identity (keys, \
        certificate, address) lives in --state-dir and survives restarts, after which the agent reconnects by \
        itself. SIGTERM/SIGINT take the tunnels down and remove the TUN device.\n\n\
        Settings come from flags, then CVLAN_AGENT_* environment variables, then the TOML --config file \
        (keys as the long flag names, e.g. state-dir = \"/var/lib/cvlan-agent\"), then defaults."
)]
struct Cli {
    /// TOML config file with the same settings as the flags (kebab-case keys).
    #[arg(long, env = "CVLAN_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// State directory: keys, certificate, node, cached network map [default: /var/lib/cvlan-agent].
    #[arg(long, env = "CVLAN_AGENT_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Control socket for the `cvlan` CLI [default: /run/cvlan/cvlan.sock].
    #[arg(long, env = "CVLAN_AGENT_SOCKET")]
    socket: Option<PathBuf>,
    /// TUN device name [default: cvlan0].
    #[arg(long, env = "CVLAN_AGENT_TUN")]
    tun: Option<String>,
    /// WireGuard UDP port; 0 keeps the last one (the kernel picks the first) [default: 0].
    #[arg(long, env = "CVLAN_AGENT_LISTEN_PORT")]
    listen_port: Option<u16>,
    /// TUN MTU [default: 1420].
    #[arg(long, env = "CVLAN_AGENT_MTU")]
    mtu: Option<u16>,
    /// Serve Prometheus metrics on this address (GET /metrics), e.g. 127.0.0.1:9586.
    #[arg(long, env = "CVLAN_AGENT_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Log format [default: text].
    #[arg(long, env = "CVLAN_AGENT_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "cvlan_agent=debug" [default: info].
    #[arg(long, env = "CVLAN_AGENT_LOG")]
    log: Option<String>,
    /// Run without a TUN or WireGuard: register and sync only (for testing the control plane).
    #[arg(long, env = "CVLAN_AGENT_NO_TUN")]
    no_tun: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    tun: Option<String>,
    listen_port: Option<u16>,
    mtu: Option<u16>,
    metrics_listen: Option<SocketAddr>,
    log_format: Option<String>,
    log: Option<String>,
    no_tun: Option<bool>,
}

/// The effective settings.
struct Settings {
    state_dir: PathBuf,
    socket: PathBuf,
    tun: String,
    listen_port: u16,
    mtu: u16,
    metrics_listen: Option<SocketAddr>,
    json_logs: bool,
    log: String,
    no_tun: bool,
}

fn settings(cli: Cli) -> anyhow::Result<Settings> {
    let file: FileConfig = match &cli.config {
        Some(p) => {
            let s = std::fs::read_to_string(p)
                .with_context(|| format!("reading config file {}", p.display()))?;
            toml::from_str(&s).with_context(|| format!("parsing config file {}", p.display()))?
        }
        None => FileConfig::default(),
    };
    let log_format = cli
        .log_format
        .or(file.log_format)
        .unwrap_or_else(|| "text".into());
    if !matches!(log_format.as_str(), "text" | "json") {
        bail!("log-format must be \"text\" or \"json\", not {log_format:?}");
    }
    Ok(Settings {
        state_dir: cli
            .state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
        socket: cli
            .socket
            .or(file.socket)
            .unwrap_or_else(|| DEFAULT_SOCKET.into()),
        tun: cli.tun.or(file.tun).unwrap_or_else(|| DEFAULT_TUN.into()),
        listen_port: cli.listen_port.or(file.listen_port).unwrap_or(0),
        mtu: cli.mtu.or(file.mtu).unwrap_or(1420),
        metrics_listen: cli.metrics_listen.or(file.metrics_listen),
        json_logs: log_format == "json",
        log: cli.log.or(file.log).unwrap_or_else(|| "info".into()),
        no_tun: cli.no_tun || file.no_tun.unwrap_or(false),
    })
}

fn init_logs(s: &Settings) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&s.log)
        .with_context(|| format!("invalid log filter {:?}", s.log))?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if s.json_logs {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
    Ok(())
}

fn factory(s: &Settings) -> anyhow::Result<Arc<dyn TunnelFactory>> {
    if s.no_tun {
        tracing::warn!(
            "--no-tun: no TUN device and no WireGuard; only the control connection runs"
        );
        return Ok(Arc::new(MemoryFactory::default()));
    }
    cvlan_agent::tunnel::kernel_factory()
        .ok_or_else(|| anyhow::anyhow!("this build has no data plane; run with --no-tun"))
}

fn remove_socket(p: &Path) {
    let _ = std::fs::remove_file(p);
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let s = match settings(Cli::parse()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cvlan-agent: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Err(e) = init_logs(&s) {
        eprintln!("cvlan-agent: {e:#}");
        return std::process::ExitCode::from(2);
    }
    match run(s).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("cvlan-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(s: Settings) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if !s.no_tun && unsafe { libc::geteuid() } != 0 {
        tracing::warn!("not running as root: creating the TUN device will fail");
    }
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut cfg = AgentConfig::new(&s.state_dir);
    cfg.tun_name = s.tun.clone();
    cfg.listen_port = s.listen_port;
    cfg.mtu = s.mtu;
    let agent = Agent::new(cfg, factory(&s)?)
        .with_context(|| format!("state directory {}", s.state_dir.display()))?;
    let listener = ipc::bind(&s.socket)
        .await
        .with_context(|| format!("control socket {}", s.socket.display()))?;
    tracing::info!(
        socket = %s.socket.display(),
        state_dir = %s.state_dir.display(),
        tun = %s.tun,
        "cvlan-agent started"
    );
    let a = agent.clone();
    let ipc_task = tokio::spawn(ipc::serve(listener, move |req| {
        let a = a.clone();
        async move { a.handle(req).await }
    }));
    let metrics_task = match s.metrics_listen {
        Some(addr) => {
            let rec = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = rec.handle();
            metrics::set_global_recorder(rec).context("metrics recorder")?;
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics listener {addr}"))?;
            tracing::info!(%addr, "serving metrics");
            let a = agent.clone();
            Some(tokio::spawn(metrics_http::serve(
                l,
                handle,
                Arc::new(move || a.refresh_metrics()),
            )))
        }
        None => None,
    };

    let booting = {
        let a = agent.clone();
        tokio::spawn(async move { a.boot().await })
    };
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
    }
    ipc_task.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    // Boot may be starting the data plane; let it finish so shutdown takes it down again.
    let _ = tokio::time::timeout(Duration::from_secs(10), booting).await;
    if tokio::time::timeout(Duration::from_secs(15), agent.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown took too long; exiting anyway");
    }
    remove_socket(&s.socket);
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("cvlan-agent").chain(args.iter().copied()))
            .expect("arguments")
    }

    #[test]
    fn the_shipped_config_file_parses_and_flags_override_it() {
        let dir = std::env::temp_dir().join(format!("cvlan-agent-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join("agent.toml");
        std::fs::write(&file, include_str!("../../dist/cvlan-agent.toml")).expect("write");
        let f = file.to_string_lossy().into_owned();
        let s = settings(parse(&["--config", &f, "--tun", "cv9"])).expect("settings");
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/cvlan-agent"));
        assert_eq!(s.tun, "cv9");
        assert!(s.json_logs);
        std::fs::write(&file, "state-dir = \"/x\"\nbogus = 1\n").expect("write");
        let e = settings(parse(&["--config", &f]))
            .err()
            .expect("unknown key refused");
        assert!(format!("{e:#}").contains("bogus"), "{e:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn defaults_apply_without_a_config_file() {
        let s = settings(parse(&[])).expect("settings");
        assert_eq!(s.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(s.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!((s.listen_port, s.mtu, s.no_tun), (0, 1420, false));
    }
}
