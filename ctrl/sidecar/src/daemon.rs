//! The vrouterd shell: one coordinator task owns the segment (the one writer), the
//! [`SlowPath`] and the sockets, and serialises everything that changes the tables — punted
//! packets, timers, control-plane updates, control-socket requests — so a generation is
//! never published half-done and shutdown happens between events.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use cvlan_agent::state::StateDir;
use cvlan_agent::tls::ServerUrl;
use cvlan_proto::v1 as pb;
use cvlan_tables::layout::Underlay;
use cvlan_tables::view::unpack_active;
use cvlan_tables::{Segment, SegmentError, SegmentParams};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixDatagram, UnixListener};
use tokio::sync::{mpsc, oneshot, watch};

use crate::control::{self, ControlStatus, Update};
use crate::ctl::{COMMANDS, Request, Response};
use crate::model::{Model, Recovered};
use crate::noise::{Handshakes, Identity, seal_keepalive};
use crate::punt::{Header, Kind, PORT_ROUTE};
use crate::slowpath::SlowPath;

/// Everything `vrouterd run` needs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Control plane node listener (absent with `bootstrap`).
    pub server: Option<String>,
    /// Join token (first start only).
    pub join_token: Option<crate::control::JoinToken>,
    /// CA certificate to trust instead of the token's pin.
    pub ca_file: Option<PathBuf>,
    /// State directory (keys, certificate, cached tables).
    pub state_dir: PathBuf,
    /// Underlay address:port (the tables' outer source, the endpoint reported).
    pub listen: SocketAddr,
    /// Segment file.
    pub segment: PathBuf,
    /// Segment parameters when it has to be created.
    pub params: SegmentParams,
    /// Our punt socket (bound).
    pub punt_socket: PathBuf,
    /// vrouter-dpdk's socket.
    pub dpdk_socket: PathBuf,
    /// Control socket for vrouterctl.
    pub control_socket: PathBuf,
    /// Prometheus listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Tables from a file instead of the control plane.
    pub bootstrap: Option<PathBuf>,
    /// Handshake messages per second above which cookies are required.
    pub cookie_threshold: u32,
}

/// Opens the segment if it exists and is valid (never truncating it) and recovers what
/// its active generation holds; creates it otherwise.
///
/// # Errors
/// I/O errors creating it.
pub fn open_segment(
    path: &Path,
    params: SegmentParams,
    now: Instant,
) -> Result<(Segment, Option<Recovered>), SegmentError> {
    if path.exists() {
        match Segment::open(path).and_then(|seg| private(&seg).map(|()| seg)) {
            Ok(seg) => {
                let rec = {
                    let r = seg.reader()?;
                    let (generation, slot) =
                        unpack_active(r.header().active.load(Ordering::SeqCst));
                    if generation == 0 {
                        None
                    } else {
                        match r.slot_view(slot) {
                            Ok(v) => Some(Recovered::from_view(&v, now)),
                            Err(e) => {
                                tracing::warn!(error = %e, "active generation unreadable; starting empty");
                                None
                            }
                        }
                    }
                };
                tracing::info!(
                    path = %path.display(),
                    recovered_peers = rec.as_ref().map_or(0, |r| r.peers.len()),
                    "reopened the table segment"
                );
                return Ok((seg, rec));
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = ?e, "existing segment refused; creating a new one");
            }
        }
    }
    tracing::info!(path = %path.display(), "creating the table segment");
    Ok((Segment::create_file(path, params)?, None))
}

/// A segment to reuse must be ours and private: it holds every tenant's session keys, and one
/// planted by another local user could carry keypairs of their choosing.
fn private(seg: &Segment) -> Result<(), SegmentError> {
    use std::os::unix::fs::MetadataExt;
    let md = seg.file().metadata()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if md.uid() != me || md.mode() & 0o077 != 0 {
        return Err(SegmentError::Io(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "owned by uid {} with mode {:o} (must be ours, mode 0600)",
                md.uid(),
                md.mode() & 0o777
            ),
        )));
    }
    Ok(())
}

fn underlay_of(a: SocketAddr) -> Underlay {
    let mut u = Underlay {
        port: a.port(),
        ..Underlay::default()
    };
    match a.ip() {
        IpAddr::V4(v4) => u.addr4 = v4.octets(),
        IpAddr::V6(v6) => u.addr6 = v6.octets(),
    }
    u
}

fn wall() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn reason_name(r: u16) -> String {
    cvlan_fastpath::abi::Reason::ALL
        .get(usize::from(r))
        .map_or_else(|| format!("reason_{r}"), |x| x.name().to_string())
}

/// Binds a Unix socket path, replacing a stale socket file (never another kind of file).
fn prepare_path(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt as _;
    if let Some(dir) = p.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
        }
        Ok(_) => bail!("{} exists and is not a socket", p.display()),
        Err(_) => {}
    }
    Ok(())
}

struct StatsWaiter {
    reply: oneshot::Sender<Response>,
    deadline: Instant,
    local: Value,
}

#[derive(Default)]
struct PuntStats {
    received: u64,
    bad: BTreeMap<String, u64>,
    tx_sent: u64,
    tx_dropped: u64,
    burst_max: usize,
    stats_replies: u64,
}

struct Daemon {
    settings: Settings,
    seg: Segment,
    sp: SlowPath,
    cap: u32,
    punt: UnixDatagram,
    generation: u64,
    publishes: u64,
    publish_failures: u64,
    last_publish: Option<Duration>,
    started: Instant,
    control: Arc<Mutex<ControlStatus>>,
    store: StateDir,
    waiters: Vec<StatsWaiter>,
    punt_stats: PuntStats,
}

type CtlMsg = (Request, oneshot::Sender<Response>);

/// Runs vrouterd until `cancel` turns true.
///
/// # Errors
/// Start-up failures (state directory, segment, sockets, bootstrap file).
pub async fn run(settings: Settings, mut cancel: watch::Receiver<bool>) -> anyhow::Result<()> {
    let store = StateDir::open(&settings.state_dir)
        .with_context(|| format!("state directory {}", settings.state_dir.display()))?;
    let wg = store.wg_key().context("WireGuard key")?;
    let now = Instant::now();
    let (seg, recovered) = open_segment(&settings.segment, settings.params, now)
        .with_context(|| format!("segment {}", settings.segment.display()))?;
    let cap = seg.reader().context("segment")?.header().keypair_capacity;
    let generation = seg.reader().context("segment")?.active_generation();
    let model = Model::new(underlay_of(settings.listen), recovered);
    let install_base = u64::try_from(wall().as_nanos()).unwrap_or(u64::MAX / 2);
    let mut sp = SlowPath::new(
        model,
        Handshakes::new(Identity::new(wg.secret_bytes()), cap),
        settings.listen,
        cap,
        install_base,
        settings.cookie_threshold,
    );
    tracing::info!(public_key = %wg.public_base64(), listen = %settings.listen, "vrouterd starting");

    if let Some(b) = &settings.bootstrap {
        let text =
            std::fs::read_to_string(b).with_context(|| format!("reading {}", b.display()))?;
        let t = crate::bootstrap::parse(&text)?;
        sp.apply_snapshot(&t).context("bootstrap tables")?;
        tracing::info!(file = %b.display(), peers = sp.model.peers().len(), "bootstrap tables loaded");
    } else if let Some(cached) = store
        .read(control::files::TABLES)
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_slice::<pb::GatewayTables>(&v).ok())
    {
        match sp.apply_snapshot(&cached) {
            Ok(()) => tracing::info!(
                version = cached.version,
                "cached tables loaded until the control plane answers"
            ),
            Err(e) => tracing::warn!(error = %e, "cached tables unusable"),
        }
    }

    prepare_path(&settings.punt_socket)?;
    let punt = UnixDatagram::bind(&settings.punt_socket)
        .with_context(|| format!("binding {}", settings.punt_socket.display()))?;
    prepare_path(&settings.control_socket)?;
    let ctl_listener = UnixListener::bind(&settings.control_socket)
        .with_context(|| format!("binding {}", settings.control_socket.display()))?;
    // Punts are trusted as coming from the data plane, and the control socket shows every
    // tenant's peers: owner only.
    for p in [&settings.punt_socket, &settings.control_socket] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .with_context(|| format!("restricting {}", p.display()))?;
    }

    if let Some(addr) = settings.metrics_listen {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .context("metrics recorder")?;
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics listener {addr}"))?;
        tokio::spawn(cvlan_agent::metrics_http::serve(l, handle, Arc::new(|| {})));
    }

    let (ctl_tx, ctl_rx) = mpsc::channel::<CtlMsg>(64);
    let ctl_task = tokio::spawn(serve_control(ctl_listener, ctl_tx));

    let control = Arc::new(Mutex::new(ControlStatus::default()));
    let (upd_tx, upd_rx) = mpsc::channel::<Update>(16);
    let mut cp_task = None;
    if settings.bootstrap.is_none() {
        let Some(server) = &settings.server else {
            bail!("either --server or --bootstrap is required");
        };
        let cfg = control::ClientConfig {
            server: ServerUrl::parse(server)?,
            join_token: settings.join_token.clone(),
            ca_pem: match &settings.ca_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?,
                ),
                None => None,
            },
            endpoint: settings.listen.to_string(),
        };
        cp_task = Some(tokio::spawn(control::run(
            cfg,
            store.clone(),
            upd_tx,
            control.clone(),
            cancel.clone(),
        )));
    } else {
        drop(upd_tx);
    }

    let mut d = Daemon {
        settings: settings.clone(),
        seg,
        sp,
        cap,
        punt,
        generation,
        publishes: 0,
        publish_failures: 0,
        last_publish: None,
        started: now,
        control,
        store,
        waiters: Vec::new(),
        punt_stats: PuntStats::default(),
    };
    if d.sp.model.ready {
        d.sp.mark_dirty();
    }
    d.flush();
    d.main_loop(&mut cancel, upd_rx, ctl_rx).await;

    ctl_task.abort();
    if let Some(t) = cp_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    for p in [&settings.punt_socket, &settings.control_socket] {
        let _ = std::fs::remove_file(p);
    }
    tracing::info!(generation = d.generation, "vrouterd stopped");
    Ok(())
}

impl Daemon {
    async fn main_loop(
        &mut self,
        cancel: &mut watch::Receiver<bool>,
        mut updates: mpsc::Receiver<Update>,
        mut ctl: mpsc::Receiver<CtlMsg>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; 65536];
        let mut updates_open = true;
        loop {
            tokio::select! {
                _ = cancel.wait_for(|c| *c) => break,
                r = self.punt.recv(&mut buf) => {
                    match r {
                        Ok(n) => {
                            let data = buf[..n].to_vec();
                            self.datagram(&data);
                            // Drain what else is queued before publishing once.
                            let mut burst = 1;
                            while burst < 256 {
                                match self.punt.try_recv(&mut buf) {
                                    Ok(n) => {
                                        let data = buf[..n].to_vec();
                                        self.datagram(&data);
                                        burst += 1;
                                    }
                                    Err(_) => break,
                                }
                            }
                            self.punt_stats.burst_max = self.punt_stats.burst_max.max(burst);
                        }
                        Err(e) => tracing::warn!(error = %e, "punt socket"),
                    }
                }
                u = updates.recv(), if updates_open => match u {
                    Some(u) => self.update(u),
                    None => updates_open = false,
                },
                Some((req, reply)) = ctl.recv() => self.request(req, reply),
                _ = tick.tick() => self.tick(),
            }
            self.flush();
        }
        // Leave a consistent state: whatever is pending is published, then we stop.
        self.flush();
    }

    fn datagram(&mut self, d: &[u8]) {
        let now = Instant::now();
        match Header::parse(d) {
            Err(e) => {
                *self.punt_stats.bad.entry(e.name().into()).or_default() += 1;
                metrics::counter!("vrouterd_punt_bad_total", "reason" => e.name()).increment(1);
            }
            Ok((h, payload)) => match h.kind {
                Kind::Punt => {
                    self.punt_stats.received += 1;
                    let r = reason_name(h.reason);
                    metrics::counter!("vrouterd_punts_total", "reason" => r.clone()).increment(1);
                    self.sp.handle_punt(&r, payload, now);
                }
                Kind::StatsRep => {
                    self.punt_stats.stats_replies += 1;
                    let v: Value = serde_json::from_slice(payload)
                        .unwrap_or_else(|_| json!({"error": "unparsable STATS_REP"}));
                    for w in self.waiters.drain(..) {
                        let mut local = w.local;
                        local["dataplane"] = v.clone();
                        let _ = w.reply.send(Response::ok(local));
                    }
                }
                Kind::Tx | Kind::StatsReq => {
                    *self
                        .punt_stats
                        .bad
                        .entry("unexpected_kind".into())
                        .or_default() += 1;
                }
            },
        }
    }

    fn update(&mut self, u: Update) {
        let t = Instant::now();
        let (kind, r) = match &u {
            Update::Snapshot(s) => ("snapshot", self.sp.apply_snapshot(s)),
            Update::Delta(d) => ("delta", self.sp.apply_delta(d)),
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, kind, "control plane update refused");
            return;
        }
        let applied = t.elapsed();
        self.flush();
        tracing::info!(
            kind,
            version = self.sp.model.version,
            peers = self.sp.model.peers().len(),
            tenants = self.sp.model.tenants().len(),
            generation = self.generation,
            apply_us = applied.as_micros() as u64,
            total_ms = format!("{:.2}", t.elapsed().as_secs_f64() * 1e3),
            "tables updated"
        );
        match serde_json::to_vec(&self.sp.model.to_tables()) {
            Ok(v) => {
                if let Err(e) = self.store.write(control::files::TABLES, &v) {
                    tracing::warn!(error = %e, "could not cache the tables");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not serialise the tables"),
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        if self.sp.model.ready {
            let seg = &self.seg;
            self.sp.tick(now, wall(), |slot| seg.keypair_seen(slot));
        }
        let (late, keep): (Vec<_>, Vec<_>) =
            self.waiters.drain(..).partition(|w| now >= w.deadline);
        self.waiters = keep;
        for w in late {
            let mut local = w.local;
            local["dataplane"] = json!("data plane not reachable");
            let _ = w.reply.send(Response::ok(local));
        }
        let c = self.sp.counters();
        metrics::counter!("vrouterd_handshakes_responded_total").absolute(c.handshakes_responded);
        metrics::counter!("vrouterd_handshakes_completed_total").absolute(c.handshakes_completed);
        metrics::counter!("vrouterd_initiations_sent_total").absolute(c.initiations_sent);
        metrics::counter!("vrouterd_cookie_replies_sent_total").absolute(c.cookie_replies_sent);
        metrics::counter!("vrouterd_cookies_received_total").absolute(c.cookies_received);
        metrics::counter!("vrouterd_keepalives_total").absolute(c.keepalives);
        metrics::gauge!("vrouterd_peers").set(self.sp.model.peers().len() as f64);
        metrics::gauge!("vrouterd_keypairs").set(self.keypair_count() as f64);
        metrics::gauge!("vrouterd_generation").set(self.generation as f64);
        for (reason, n) in &c.drops {
            metrics::counter!("vrouterd_handshake_drops_total", "reason" => reason.clone())
                .absolute(*n);
        }
    }

    fn keypair_count(&self) -> usize {
        self.sp
            .model
            .peers()
            .values()
            .map(|p| p.keys.all().count())
            .sum()
    }

    /// Publishes if the tables changed, sends keepalives due after it, flushes TX.
    fn flush(&mut self) {
        if self.sp.model.ready && self.sp.take_dirty() {
            let t = Instant::now();
            let res = self
                .sp
                .model
                .build()
                .build(self.cap)
                .map_err(|e| e.to_string())
                .and_then(|img| {
                    self.seg
                        .publish_retry(&img, 20_000)
                        .map_err(|e| e.to_string())
                });
            match res {
                Ok(g) => {
                    let took = t.elapsed();
                    self.generation = g;
                    self.publishes += 1;
                    self.last_publish = Some(took);
                    metrics::counter!("vrouterd_publishes_total").increment(1);
                    metrics::histogram!("vrouterd_publish_seconds").record(took.as_secs_f64());
                    tracing::debug!(generation = g, us = took.as_micros() as u64, "published");
                }
                Err(e) => {
                    self.publish_failures += 1;
                    metrics::counter!("vrouterd_publish_failures_total").increment(1);
                    tracing::error!(error = %e, "publishing the tables failed; retrying");
                    self.sp.mark_dirty();
                }
            }
            for k in self.sp.take_keepalives() {
                let Some((ep, remote, key)) = self.sp.keepalive_material(&k) else {
                    continue;
                };
                let slot = k.receiver_index & (self.cap - 1);
                let Some(counter) = self.seg.reader().ok().and_then(|r| {
                    r.keypair_state(slot)
                        .map(|s| s.send_counter.fetch_add(1, Ordering::SeqCst))
                }) else {
                    continue;
                };
                let ka = seal_keepalive(&key, remote, counter);
                self.sp.send(ep, &ka);
            }
        }
        while let Some((_, pkt)) = self.sp.poll_transmit() {
            let h = Header {
                kind: Kind::Tx,
                port: PORT_ROUTE,
                reason: 0,
                worker: 0,
            };
            let d = [&h.encode()[..], &pkt].concat();
            match self.punt.try_send_to(&d, &self.settings.dpdk_socket) {
                Ok(_) => self.punt_stats.tx_sent += 1,
                Err(e) => {
                    self.punt_stats.tx_dropped += 1;
                    metrics::counter!("vrouterd_tx_dropped_total").increment(1);
                    tracing::debug!(error = %e, "TX to the data plane dropped");
                }
            }
        }
    }

    fn request(&mut self, req: Request, reply: oneshot::Sender<Response>) {
        let now = Instant::now();
        let data = match req.cmd.as_str() {
            "status" => self.status(now),
            "tables" => self.tables(),
            "peers" => self.peers(now),
            "keypairs" => self.keypairs(now),
            "punt" => self.punt_info(),
            "counters" => {
                let local = json!({ "slowpath": self.sp.counters(), "punt": self.punt_info() });
                let req = Header {
                    kind: Kind::StatsReq,
                    port: 0,
                    reason: 0,
                    worker: 0,
                }
                .encode();
                if self
                    .punt
                    .try_send_to(&req, &self.settings.dpdk_socket)
                    .is_ok()
                {
                    self.waiters.push(StatsWaiter {
                        reply,
                        deadline: now + Duration::from_millis(500),
                        local,
                    });
                    return;
                }
                let mut local = local;
                local["dataplane"] = json!("data plane not reachable");
                local
            }
            other => {
                let _ = reply.send(Response::err(format!(
                    "unknown command {other:?} (one of {})",
                    COMMANDS.join(", ")
                )));
                return;
            }
        };
        let _ = reply.send(Response::ok(data));
    }

    fn status(&self, now: Instant) -> Value {
        use base64::Engine as _;
        let control = self.control.lock().map(|c| c.clone()).unwrap_or_default();
        json!({
            "generation": self.generation,
            "ready": self.sp.model.ready,
            "version": self.sp.model.version,
            "mode": if self.settings.bootstrap.is_some() { "bootstrap" } else { "control-plane" },
            "public_key": base64::engine::general_purpose::STANDARD.encode(self.sp.public_key()),
            "listen": self.settings.listen.to_string(),
            "segment": self.settings.segment.display().to_string(),
            "keypair_capacity": self.cap,
            "tenants": self.sp.model.tenants().len(),
            "peers": self.sp.model.peers().len(),
            "keypairs": self.keypair_count(),
            "receiver_indices_in_use": self.sp.indices_in_use(),
            "initiating": self.sp.initiating(),
            "publishes": self.publishes,
            "publish_failures": self.publish_failures,
            "last_publish_ms": self.last_publish.map(|d| d.as_secs_f64() * 1e3),
            "uptime_s": now.saturating_duration_since(self.started).as_secs(),
            "control": control,
        })
    }

    fn tables(&self) -> Value {
        let b = self.sp.model.build();
        let tenants: Vec<Value> = self
            .sp
            .model
            .tenants()
            .values()
            .map(|t| {
                let spec = b.tenants.get(t.slot as usize);
                json!({
                    "slot": t.slot,
                    "tenant_id": t.name,
                    "default_action": if t.default_permit { "allow" } else { "deny" },
                    "acl_rules": spec.map_or(0, |s| s.acl.len()),
                    "routes": spec.map_or(0, |s| s.routes.len()),
                    "peers": self.sp.model.peers().values().filter(|p| p.tenant == t.name).count(),
                })
            })
            .collect();
        json!({
            "generation": self.generation,
            "version": self.sp.model.version,
            "underlay": self.settings.listen.to_string(),
            "tenants": tenants,
            "peer_slots": b.peers.len(),
        })
    }

    fn peers(&self, now: Instant) -> Value {
        use base64::Engine as _;
        let age =
            |k: &Option<crate::model::Installed>| k.as_ref().map(|k| Model::age(k, now).as_secs());
        let peers: Vec<Value> = self
            .sp
            .model
            .peers()
            .iter()
            .map(|(&p_id, p)| {
                json!({
                    "slot": p.slot,
                    "node_id": p.node_id,
                    "tenant": p.tenant,
                    "public_key": base64::engine::general_purpose::STANDARD.encode(p.public_key),
                    "allowed_ips": p.allowed_ips.iter().map(|a| format!("{}/{}", a.addr, a.len)).collect::<Vec<_>>(),
                    "endpoint": p.endpoint().map(|e| e.to_string()),
                    "endpoints": p.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "learned_endpoint": p.learned.map(|e| e.to_string()),
                    "current_age_s": age(&p.keys.current),
                    "previous_age_s": age(&p.keys.previous),
                    "next": p.keys.next.is_some(),
                    "initiating": self.sp.is_initiating(p_id),
                })
            })
            .collect();
        json!({ "generation": self.generation, "peers": peers })
    }

    fn keypairs(&self, now: Instant) -> Value {
        let mut out = Vec::new();
        for p in self.sp.model.peers().values() {
            for (role, k) in [
                ("current", &p.keys.current),
                ("previous", &p.keys.previous),
                ("next", &p.keys.next),
            ] {
                if let Some(k) = k {
                    out.push(json!({
                        "node_id": p.node_id,
                        "peer_slot": p.slot,
                        "role": role,
                        "receiver_index": format!("{:#010x}", k.spec.receiver_index),
                        "remote_index": format!("{:#010x}", k.spec.remote_index),
                        "keypair_slot": k.spec.receiver_index & (self.cap - 1),
                        "age_s": Model::age(k, now).as_secs(),
                        "initiator": k.initiator,
                        "install_id": k.spec.install_id,
                    }));
                }
            }
        }
        json!({ "generation": self.generation, "keypairs": out })
    }

    fn punt_info(&self) -> Value {
        let c = self.sp.counters();
        json!({
            "socket": self.settings.punt_socket.display().to_string(),
            "dpdk_socket": self.settings.dpdk_socket.display().to_string(),
            "received": self.punt_stats.received,
            "by_reason": c.punts,
            "bad_datagrams": self.punt_stats.bad,
            "tx_sent": self.punt_stats.tx_sent,
            "tx_dropped": self.punt_stats.tx_dropped,
            "burst_max": self.punt_stats.burst_max,
            "stats_replies": self.punt_stats.stats_replies,
            "pending_stats_requests": self.waiters.len(),
        })
    }
}

/// Accepts control connections: one JSON request line → one JSON response line.
async fn serve_control(l: UnixListener, tx: mpsc::Sender<CtlMsg>) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let (r, mut w) = s.into_split();
            let mut line = String::new();
            let mut r = BufReader::new(r.take(4096));
            let read = tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line)).await;
            let resp = match read {
                Ok(Ok(n)) if n > 0 => match serde_json::from_str::<Request>(line.trim()) {
                    Ok(req) => {
                        let (otx, orx) = oneshot::channel();
                        if tx.send((req, otx)).await.is_err() {
                            Response::err("vrouterd is stopping")
                        } else {
                            orx.await.unwrap_or_else(|_| Response::err("no answer"))
                        }
                    }
                    Err(e) => Response::err(format!("bad request: {e}")),
                },
                _ => return,
            };
            let mut out = serde_json::to_vec(&resp).unwrap_or_default();
            out.push(b'\n');
            let _ = w.write_all(&out).await;
            let _ = w.shutdown().await;
        });
    }
}
