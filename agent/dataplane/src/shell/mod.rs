//! The I/O shell around [`crate::core::Core`]: TUN, UDP socket, netlink, worker threads.

mod netlink;
pub(crate) mod udp;

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use tun_rs::{DeviceBuilder, GROTable, IDEAL_BATCH_SIZE, SyncDevice, VIRTIO_NET_HDR_LEN};

use crate::core::{Core, MAX_BATCH, RxBatch, TunBatch, TxBatch};
use crate::{Config, Counters, Error, PeerConfig, PeerStats};
use netlink::Netlink;
use udp::{RECV_MSG_SIZE, RECV_VLEN, Receiver, Sender, Udp};

/// How often blocked threads look at the stop flag, and the timer period.
const TICK: Duration = Duration::from_millis(100);
/// Largest packet the TUN hands us in one read (a GSO super-packet) and per segment buffer.
const TUN_BUF: usize = 65_536;

/// Offloads turned off through `CVLAN_DP_DISABLE` (comma-separated: `tun-offload`,
/// `udp-gso`, `udp-gro`), for measuring what each one brings and for kernels that misbehave.
pub(crate) fn disabled(what: &str) -> bool {
    std::env::var("CVLAN_DP_DISABLE").is_ok_and(|v| v.split(',').any(|w| w.trim() == what))
}

enum Ctl {
    /// Make the TUN's extra routes exactly these; reply when done.
    Routes(Vec<IpNet>, mpsc::Sender<()>),
}

/// A running WireGuard data plane: TUN device, UDP socket and worker threads around a
/// [`Core`]. Dropping it (or [`Dataplane::shutdown`]) stops the threads and deletes the TUN.
pub struct Dataplane {
    core: Arc<Core>,
    listen_port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    ctl: mpsc::Sender<Ctl>,
    prefixes: Vec<IpNet>,
    tun_name: String,
}

struct Shared {
    core: Arc<Core>,
    udp: Udp,
    tun: SyncDevice,
    stop: Arc<AtomicBool>,
}

impl Dataplane {
    /// Creates the TUN (offloads on when the kernel allows), assigns the addresses, brings
    /// the link up, binds the UDP socket and starts the worker threads. Everything is created
    /// in the calling thread's network namespace.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an unusable config, else the failing step.
    pub fn start(cfg: Config) -> Result<Dataplane, Error> {
        if cfg.tun_name.is_empty() || cfg.tun_name.len() > 15 {
            return Err(Error::InvalidConfig("TUN name must be 1 to 15 bytes"));
        }
        if cfg.mtu < 576 || (cfg.mtu < 1280 && cfg.addresses.iter().any(|a| a.addr().is_ipv6())) {
            return Err(Error::InvalidConfig(
                "MTU too small (576 for IPv4, 1280 with IPv6)",
            ));
        }
        let now = Instant::now();
        let core = Arc::new(Core::new(cfg.private_key, now));

        let (tun, offload) = match DeviceBuilder::new()
            .name(&cfg.tun_name)
            .mtu(cfg.mtu)
            .offload(!disabled("tun-offload"))
            .build_sync()
        {
            Ok(t) => (t, !disabled("tun-offload")),
            Err(e) => {
                tracing::warn!(error = %e, "TUN with offloads failed; trying without");
                let t = DeviceBuilder::new()
                    .name(&cfg.tun_name)
                    .mtu(cfg.mtu)
                    .build_sync()
                    .map_err(Error::Tun)?;
                (t, false)
            }
        };
        let ifindex = tun.if_index().map_err(Error::Tun)?;
        let udp = Udp::bind(cfg.listen_port, TICK).map_err(Error::Udp)?;
        let listen_port = udp.local_port().map_err(Error::Udp)?;
        tracing::info!(
            tun = %cfg.tun_name,
            listen_port,
            offload,
            udp_gro = udp.gro(),
            udp_gso = udp.gso(),
            "data plane starting"
        );

        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            core: core.clone(),
            udp,
            tun,
            stop: stop.clone(),
        });

        // the control thread opens netlink in this namespace, sets addresses, then runs timers
        let (ctl_tx, ctl_rx) = mpsc::channel::<Ctl>();
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let addresses = cfg.addresses.clone();
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("cvlan-dp-ctl".into())
                .spawn(move || control_thread(&s, ifindex, &addresses, &ctl_rx, &ready_tx))
                .map_err(Error::Thread)?,
        );
        let stop_all = |threads: Vec<JoinHandle<()>>| {
            stop.store(true, Ordering::Relaxed);
            for t in threads {
                let _ = t.join();
            }
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stop_all(threads);
                return Err(Error::Netlink(e));
            }
            Err(_) => {
                stop_all(threads);
                return Err(Error::Netlink(io::Error::other("control thread died")));
            }
        }
        if let Err(e) = shared.tun.enabled(true) {
            stop_all(threads);
            return Err(Error::Tun(e));
        }
        for (name, f) in [
            ("cvlan-dp-tun", tun_to_udp as fn(&Shared)),
            ("cvlan-dp-udp", udp_to_tun as fn(&Shared)),
        ] {
            let s = shared.clone();
            match std::thread::Builder::new()
                .name(name.into())
                .spawn(move || f(&s))
            {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop_all(threads);
                    return Err(Error::Thread(e));
                }
            }
        }
        Ok(Dataplane {
            core,
            listen_port,
            stop,
            threads,
            ctl: ctl_tx,
            prefixes: cfg.addresses.iter().map(IpNet::trunc).collect(),
            tun_name: cfg.tun_name,
        })
    }

    /// The UDP port actually bound.
    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// Our WireGuard public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.core.public_key()
    }

    /// The TUN device's name.
    pub fn tun_name(&self) -> &str {
        &self.tun_name
    }

    /// Replaces the whole peer set. Sessions of unchanged keys survive; routes for allowed
    /// IPs outside the TUN's own prefixes are added/removed (default routes are not
    /// installed: they would capture the tunnel's own UDP traffic). Returns once the routes
    /// are in place.
    pub fn set_peers(&self, peers: Vec<PeerConfig>) {
        self.core.set_peers(&peers, Instant::now());
        let mut routes: Vec<IpNet> = peers
            .iter()
            .flat_map(|p| p.allowed_ips.iter().map(IpNet::trunc))
            .filter(|n| n.prefix_len() != 0 && !self.prefixes.iter().any(|p| p.contains(n)))
            .collect();
        routes.sort_unstable();
        routes.dedup();
        let (tx, rx) = mpsc::channel();
        if self.ctl.send(Ctl::Routes(routes, tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
    }

    /// Replaces the inbound filter.
    pub fn set_filter(&self, filter: cvlan_policy::Filter) {
        self.core.set_filter(&filter);
    }

    /// Per-peer status.
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        let wall = SystemTime::now();
        self.core
            .peer_stats()
            .into_iter()
            .map(|p| PeerStats {
                public_key: p.public_key,
                name: p.name,
                endpoint: p.endpoint,
                last_handshake: p.since_handshake.and_then(|d| wall.checked_sub(d)),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                rx_packets: p.rx_packets,
                tx_packets: p.tx_packets,
            })
            .collect()
    }

    /// Counter snapshot.
    pub fn counters(&self) -> Counters {
        self.core.counters()
    }

    /// Stops the threads and deletes the TUN.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        tracing::info!(tun = %self.tun_name, "data plane stopped");
    }
}

fn control_thread(
    s: &Shared,
    ifindex: u32,
    addresses: &[IpNet],
    ctl: &mpsc::Receiver<Ctl>,
    ready: &mpsc::Sender<io::Result<()>>,
) {
    let nl = match Netlink::new() {
        Ok(nl) => nl,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    for a in addresses {
        if let Err(e) = nl.add_address(ifindex, *a) {
            let _ = ready.send(Err(e));
            return;
        }
    }
    let _ = ready.send(Ok(()));
    let mut installed: Vec<IpNet> = Vec::new();
    let mut out = TxBatch::new(1 << 20);
    let mut sender = Sender::new();
    let mut next_tick = Instant::now();
    while !s.stop.load(Ordering::Relaxed) {
        let wait = next_tick.saturating_duration_since(Instant::now());
        match ctl.recv_timeout(wait) {
            Ok(Ctl::Routes(want, done)) => {
                for r in installed.iter().filter(|r| !want.contains(r)) {
                    if let Err(e) = nl.del_route(ifindex, *r) {
                        tracing::warn!(route = %r, error = %e, "removing route");
                    }
                }
                for r in want.iter().filter(|r| !installed.contains(r)) {
                    if let Err(e) = nl.add_route(ifindex, *r) {
                        tracing::warn!(route = %r, error = %e, "adding route");
                    }
                }
                installed = want;
                let _ = done.send(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // the Dataplane is gone; the stop flag follows
            Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(TICK),
        }
        let now = Instant::now();
        if now >= next_tick {
            next_tick = now + TICK;
            out.clear();
            s.core.update_timers(now, &mut out);
            if !out.is_empty() {
                let (sent, errors) = sender.send(&s.udp, &out);
                s.core.count_sent(sent);
                s.core.count_io_errors(errors);
            }
        }
    }
}

/// Waits until `fd` is readable or `TICK` passes.
fn wait_readable(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    let r = unsafe { libc::poll(&mut p, 1, TICK.as_millis() as libc::c_int) };
    r > 0
}

fn tun_to_udp(s: &Shared) {
    let mut original = vec![0u8; VIRTIO_NET_HDR_LEN + TUN_BUF];
    let mut bufs: Vec<Vec<u8>> = (0..IDEAL_BATCH_SIZE).map(|_| vec![0u8; TUN_BUF]).collect();
    let mut sizes = vec![0usize; IDEAL_BATCH_SIZE];
    let mut out = TxBatch::new(IDEAL_BATCH_SIZE * 2048 + TUN_BUF);
    let mut sender = Sender::new();
    let fd = s.tun.as_raw_fd();
    while !s.stop.load(Ordering::Relaxed) {
        if !wait_readable(fd) {
            continue;
        }
        let n = match s.tun.recv_multiple(&mut original, &mut bufs, &mut sizes, 0) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted {
                    tracing::debug!(error = %e, "TUN read");
                    s.core.count_io_errors(1);
                }
                continue;
            }
        };
        out.clear();
        s.core
            .handle_tun_packets(&bufs, &sizes, 0, n, &mut out, Instant::now());
        if !out.is_empty() {
            let (sent, errors) = sender.send(&s.udp, &out);
            s.core.count_sent(sent);
            s.core.count_io_errors(errors);
        }
    }
}

fn udp_to_tun(s: &Shared) {
    let mut rx = RxBatch {
        buf: vec![0u8; RECV_VLEN * RECV_MSG_SIZE],
        items: Vec::with_capacity(MAX_BATCH),
    };
    let mut receiver = Receiver::new();
    let mut tun = TunBatch::new(MAX_BATCH, VIRTIO_NET_HDR_LEN, VIRTIO_NET_HDR_LEN + TUN_BUF);
    // room for replies plus the packets boringtun queued during a handshake
    let mut net = TxBatch::new(1 << 20);
    let mut sender = Sender::new();
    let mut gro = GROTable::new();
    while !s.stop.load(Ordering::Relaxed) {
        let n = match receiver.recv(&s.udp, &mut rx) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive");
                s.core.count_io_errors(1);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        if n == 0 {
            continue;
        }
        rx.items.clear();
        for (index, len, seg, src) in receiver.messages() {
            let mut from = 0;
            while let Some(next) = udp::split(&mut rx.items, index, len, seg, src, from, MAX_BATCH)
            {
                process_rx(s, &rx, &mut tun, &mut net, &mut sender, &mut gro);
                rx.items.clear();
                from = next;
            }
        }
        if !rx.items.is_empty() {
            process_rx(s, &rx, &mut tun, &mut net, &mut sender, &mut gro);
            rx.items.clear();
        }
    }
}

fn process_rx(
    s: &Shared,
    rx: &RxBatch,
    tun: &mut TunBatch,
    net: &mut TxBatch,
    sender: &mut Sender,
    gro: &mut GROTable,
) {
    tun.clear();
    net.clear();
    s.core.handle_datagrams(rx, tun, net, Instant::now());
    if !tun.is_empty() {
        let offset = tun.offset();
        if let Err(e) = s.tun.send_multiple(gro, tun.filled_mut(), offset) {
            tracing::debug!(error = %e, "TUN write");
            s.core.count_io_errors(1);
        }
    }
    if !net.is_empty() {
        let (sent, errors) = sender.send(&s.udp, net);
        s.core.count_sent(sent);
        s.core.count_io_errors(errors);
    }
}
