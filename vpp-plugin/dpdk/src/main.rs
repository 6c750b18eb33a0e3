//! vrouter-dpdk: the DPDK host of the CloudVLAN gateway fast path (a shell: DPDK ports,
//! Ethernet/ARP and sockets around the cvlan-fastpath core). See README.md.

mod config;
mod dpdk;
mod eal;
mod neigh;
mod net;
mod punt;
mod report;
mod stats;
mod worker;

use std::ffi::c_void;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::config::Config;
use crate::net::{PortAddr, Routes};
use crate::worker::{PortInfo, STOP, Shared};

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn sockaddr(path: &Path) -> Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: all-zero sockaddr_un is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let b = path.as_os_str().as_bytes();
    if b.is_empty() || b.len() >= a.sun_path.len() {
        bail!("socket path {} is empty or too long", path.display());
    }
    for (d, s) in a.sun_path.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + b.len() + 1;
    Ok((a, len as libc::socklen_t))
}

fn bind_socket(path: &Path) -> Result<OwnedFd> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A stale socket file from a previous run would make bind fail.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    let s = UnixDatagram::bind(path).with_context(|| format!("binding {}", path.display()))?;
    // Whoever can write to this socket can make the gateway transmit: owner only.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    s.set_nonblocking(true)?;
    Ok(OwnedFd::from(s))
}

fn run(cfg: Config) -> Result<()> {
    let sock = bind_socket(&cfg.socket)?;
    let sidecar = sockaddr(&cfg.sidecar_socket)?;
    let argv = eal::eal_argv(&cfg)?;
    tracing::info!(args = ?argv, "starting EAL");
    eal::init(&argv)?;
    // SAFETY: the EAL is initialised.
    let lcores = unsafe { dpdk::rte_lcore_count() };
    if lcores < u32::from(cfg.workers) {
        // SAFETY: initialised EAL, no worker launched.
        unsafe { dpdk::rte_eal_cleanup() };
        bail!(
            "--workers {} needs {} lcores but the EAL has only {lcores}",
            cfg.workers,
            cfg.workers
        );
    }
    let pool = eal::create_pool(cfg.ports.len(), cfg.workers)?;
    let mut ports = Vec::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        let (id, mac) = eal::setup_port(i, &p.iface, cfg.workers, &pool)?;
        tracing::info!(port = i, iface = %p.iface, dpdk_port = id,
            mac = %mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
            "port started");
        ports.push(PortInfo {
            id,
            iface: p.iface.clone(),
            mac,
            addr: PortAddr {
                addr: u32::from(p.addr),
                len: p.len,
            },
            addr6: p.addr6.map(|(a, len)| net::PortAddr6 {
                addr: u128::from(a),
                len,
            }),
        });
    }
    let addrs: Vec<PortAddr> = ports.iter().map(|p| p.addr).collect();
    let statics: Vec<(u32, u8, u32)> = cfg
        .routes
        .iter()
        .map(|r| (u32::from(r.net), r.len, u32::from(r.via)))
        .collect();
    let routes = Routes::new(&addrs, &statics)?;
    let sh = Arc::new(Shared {
        ports,
        routes,
        underlay: u32::from(cfg.underlay),
        underlay6: cfg.underlay6.map(u128::from),
        neigh: neigh::Neighbours::default(),
        published: (0..cfg.workers)
            .map(|_| stats::Published::default())
            .collect(),
        segment: cfg.segment.clone(),
        seg: worker::SegmentStatus::default(),
        sock,
        sidecar,
        pool,
        idle_sleep_us: cfg.idle_sleep_us,
        // SAFETY: initialised EAL.
        tsc_hz: unsafe { dpdk::rte_get_tsc_hz() }.max(1),
    });
    if let Some(addr) = cfg.metrics_listen {
        report::serve_metrics(addr, sh.clone())
            .with_context(|| format!("metrics listener {addr}"))?;
    }
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let mut launched = Vec::new();
    let mut lcore = u32::MAX;
    for id in 1..cfg.workers {
        // SAFETY: initialised EAL; iterates worker lcores only.
        lcore = unsafe { dpdk::rte_get_next_lcore(lcore, 1, 0) };
        let arg = Box::into_raw(Box::new((sh.clone(), id))).cast::<c_void>();
        // SAFETY: lcore_main reclaims `arg` exactly once; the lcore is idle.
        let r = unsafe { dpdk::rte_eal_remote_launch(Some(worker::lcore_main), arg, lcore) };
        if r != 0 {
            STOP.store(true, Ordering::Relaxed);
            // SAFETY: not launched, so reclaim it here.
            drop(unsafe { Box::from_raw(arg.cast::<(Arc<Shared>, u16)>()) });
            tracing::error!(worker = id, lcore, "launching worker failed");
            break;
        }
        launched.push(lcore);
    }
    tracing::info!(
        workers = cfg.workers,
        underlay = %cfg.underlay,
        socket = %cfg.socket.display(),
        sidecar = %cfg.sidecar_socket.display(),
        "forwarding"
    );
    let r0 = worker::run_worker(&sh, 0);
    STOP.store(true, Ordering::Relaxed);
    for l in launched {
        // SAFETY: waits for a worker we launched.
        unsafe { dpdk::rte_eal_wait_lcore(l) };
    }
    tracing::info!("stopping ports");
    for p in &sh.ports {
        eal::close_port(p.id);
    }
    let _ = std::fs::remove_file(&cfg.socket);
    // SAFETY: all lcores are idle, ports closed.
    unsafe { dpdk::rte_eal_cleanup() };
    tracing::info!("stopped");
    if r0 != 0 {
        bail!("worker 0 failed");
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = config::Cli::parse();
    let json = cli.log_json;
    let cfg = match cli.resolve() {
        Ok(c) => c,
        Err(e) => {
            init_logging(json);
            tracing::error!("invalid configuration: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(cfg.log_json);
    match run(cfg) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
