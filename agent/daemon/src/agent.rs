//! The agent: registration, the Sync loop, the data plane's lifecycle and the answers to the
//! CLI. A shell around [`crate::netmap`] (what to configure) and [`crate::backoff`] (when to
//! retry).
//!
//! Concurrency: one `std::sync::Mutex` guards the state and is never held across an await;
//! lifecycle commands (`up`, `down`, `logout`, shutdown) are serialised by an async lock; the
//! control loop runs as one task that is stopped cooperatively, and everything it does to the
//! data plane happens outside the cancellable waits, so stopping it never leaves a half-started
//! data plane behind.
//!
//! Outages: the data plane is only touched by applied map updates, never by control-plane
//! errors, so tunnels keep working while the control plane is away; the loop reconnects with
//! capped exponential backoff and resumes from the last applied version. The map is cached on
//! disk, so even a restart during an outage brings the tunnels back.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use cvlan_proto::v1 as pb;
use cvlan_proto::v1::node_service_client::NodeServiceClient;
use ipnet::IpNet;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::backoff::Backoff;
use crate::endpoints;
use crate::ipc::{
    AgentState, ControlStatus, ErrorCode, IpcError, PeerStatus, Reply, Request, SelfStatus, Status,
    UpRequest,
};
use crate::netmap::{MapError, MapState};
use crate::state::{Registration, StateDir, StateError, files};
use crate::tls::{self, ClientIdentity, ServerUrl, Trust, error_chain};
use crate::token;
use crate::tunnel::{TunnelConfig, TunnelFactory, Tunnels};

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// State directory.
    pub state_dir: PathBuf,
    /// TUN device name.
    pub tun_name: String,
    /// UDP port; 0 reuses the last one (or lets the kernel pick the first time).
    pub listen_port: u16,
    /// TUN MTU.
    pub mtu: u16,
    /// How long `cvlan up` waits for the first network map before answering.
    pub first_map_timeout: Duration,
    /// How often local addresses are checked for changes (and certificate renewal is due).
    pub tick: Duration,
}

impl AgentConfig {
    /// Defaults for `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        AgentConfig {
            state_dir: state_dir.into(),
            tun_name: crate::DEFAULT_TUN.into(),
            listen_port: 0,
            mtu: 1420,
            first_map_timeout: Duration::from_secs(20),
            tick: Duration::from_secs(10),
        }
    }
}

/// Whether a client certificate issued at `issued` and expiring at `expires` (Unix seconds)
/// should be renewed at `now`: when less than a third of its validity remains.
pub fn renewal_due(issued: u64, expires: u64, now: u64) -> bool {
    let validity = expires.saturating_sub(issued);
    validity == 0 || now.saturating_add(validity / 3) >= expires
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn now_unix() -> u64 {
    unix(SystemTime::now())
}

/// The codes with which the control plane says this node is gone (deleted or expired).
fn is_logged_out(code: tonic::Code) -> bool {
    matches!(code, tonic::Code::NotFound | tonic::Code::PermissionDenied)
}

fn internal(e: impl std::fmt::Display) -> IpcError {
    IpcError::new(ErrorCode::Internal, e.to_string())
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node".into())
}

struct ControlTask {
    cancel: watch::Sender<bool>,
    join: JoinHandle<()>,
}

#[derive(Default)]
struct Inner {
    reg: Option<Registration>,
    map: MapState,
    dp: Option<Box<dyn Tunnels>>,
    control: Option<ControlTask>,
    connected: bool,
    last_error: Option<String>,
    /// Why the data plane did not start (kept apart from control errors, which a successful
    /// connection clears).
    dp_error: Option<String>,
    last_update: Option<SystemTime>,
    public_key: Option<String>,
}

/// Why one control session ended.
enum SessionEnd {
    Cancelled,
    LoggedOut(String),
    Failed(String),
}

/// The agent. Create with [`Agent::new`], start with [`Agent::boot`], feed CLI requests to
/// [`Agent::handle`], stop with [`Agent::shutdown`].
pub struct Agent {
    cfg: AgentConfig,
    store: StateDir,
    factory: Arc<dyn TunnelFactory>,
    inner: Mutex<Inner>,
    lifecycle: tokio::sync::Mutex<()>,
    changed: watch::Sender<u64>,
}

impl Agent {
    /// Opens the state directory and loads the registration.
    ///
    /// # Errors
    /// [`StateError`] when the directory is unusable or `node.json` is corrupt.
    pub fn new(cfg: AgentConfig, factory: Arc<dyn TunnelFactory>) -> Result<Arc<Self>, StateError> {
        let store = StateDir::open(&cfg.state_dir)?;
        let reg = store.registration()?;
        let public_key = if reg.is_some() {
            Some(store.wg_key()?.public_base64())
        } else {
            None
        };
        Ok(Arc::new(Agent {
            cfg,
            store,
            factory,
            inner: Mutex::new(Inner {
                reg,
                public_key,
                ..Default::default()
            }),
            lifecycle: tokio::sync::Mutex::new(()),
            changed: watch::channel(0).0,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Subscribes to state changes (each applied update, connection change, lifecycle step).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Starts what the stored state asks for: with a registration that wants to run, the
    /// cached map's tunnels and the control loop.
    pub async fn boot(self: &Arc<Self>) {
        let _g = self.lifecycle.lock().await;
        let (wants, name) = {
            let i = self.lock();
            match &i.reg {
                Some(r) => (r.want_running && r.logged_out.is_none(), r.name.clone()),
                None => (false, String::new()),
            }
        };
        if wants {
            tracing::info!("resuming the stored registration");
            tracing::debug!(node = %name, "stored node");
            self.start_running().await;
        }
    }

    /// Restores the cached map into the data plane and starts the control loop.
    async fn start_running(self: &Arc<Self>) {
        let cached = {
            let i = self.lock();
            (!i.map.has_snapshot()).then_some(())
        }
        .and_then(|()| self.store.cached_map());
        if let Some(m) = cached {
            let version = m.version;
            self.lock().map = MapState::from_snapshot(m);
            tracing::info!(version, "restored the cached network map");
        }
        if self.lock().map.has_snapshot() && self.lock().dp.is_none() {
            self.start_dataplane().await;
        }
        self.spawn_control();
    }

    fn spawn_control(self: &Arc<Self>) {
        let (tx, rx) = watch::channel(false);
        let me = self.clone();
        let join = tokio::spawn(async move { me.control_loop(rx).await });
        let old = self
            .lock()
            .control
            .replace(ControlTask { cancel: tx, join });
        if let Some(old) = old {
            // Not expected (callers stop first), but never leave two loops running.
            let _ = old.cancel.send(true);
            old.join.abort();
        }
    }

    async fn stop_control(&self) {
        let task = self.lock().control.take();
        if let Some(t) = task {
            let _ = t.cancel.send(true);
            let _ = t.join.await;
        }
        let mut i = self.lock();
        i.connected = false;
    }

    async fn teardown_dataplane(&self) {
        let dp = {
            let mut i = self.lock();
            i.dp_error = None;
            i.dp.take()
        };
        if let Some(dp) = dp {
            let _ = tokio::task::spawn_blocking(move || dp.shutdown()).await;
            tracing::info!("tunnels down");
        }
    }

    /// (Re)starts the data plane with the current map's addresses, then pushes peers and
    /// filter. A failure is recorded for `status` and retried with the next update.
    async fn start_dataplane(&self) {
        let key = match self.store.wg_key() {
            Ok(k) => k,
            Err(e) => {
                self.record_error(format!("data plane: {e}"));
                return;
            }
        };
        let (old, cfg) = {
            let mut i = self.lock();
            let stored = i.reg.as_ref().map_or(0, |r| r.listen_port);
            let port = if self.cfg.listen_port != 0 {
                self.cfg.listen_port
            } else {
                stored
            };
            let cfg = TunnelConfig {
                tun_name: self.cfg.tun_name.clone(),
                private_key: key.secret_bytes(),
                listen_port: port,
                addresses: i.map.addresses(),
                mtu: self.cfg.mtu,
            };
            (i.dp.take(), cfg)
        };
        let factory = self.factory.clone();
        let fixed = self.cfg.listen_port != 0;
        let started = tokio::task::spawn_blocking(move || {
            if let Some(old) = old {
                old.shutdown();
            }
            match factory.start(cfg.clone()) {
                // The remembered port may have been taken meanwhile: any port beats none.
                Err(e) if !fixed && cfg.listen_port != 0 => {
                    tracing::warn!(port = cfg.listen_port, error = %e, "retrying the data plane on a fresh port");
                    factory.start(TunnelConfig {
                        listen_port: 0,
                        ..cfg
                    })
                }
                r => r,
            }
        })
        .await;
        let dp = match started {
            Ok(Ok(dp)) => dp,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "data plane failed to start");
                self.lock().dp_error = Some(format!("data plane failed to start: {e}"));
                self.bump();
                return;
            }
            Err(e) => {
                self.lock().dp_error = Some(format!("data plane failed to start: {e}"));
                self.bump();
                return;
            }
        };
        let port = dp.listen_port();
        let reg = {
            let mut i = self.lock();
            dp.set_peers(i.map.peer_configs());
            dp.set_filter(i.map.filter());
            i.dp = Some(dp);
            i.dp_error = None;
            match i.reg.as_mut() {
                Some(r) if r.listen_port != port => {
                    r.listen_port = port;
                    Some(r.clone())
                }
                _ => None,
            }
        };
        tracing::info!(tun = %self.cfg.tun_name, port, "tunnels up");
        if let Some(r) = reg
            && let Err(e) = self.store.save_registration(&r)
        {
            tracing::warn!(error = %e, "could not remember the listen port");
        }
        self.bump();
    }

    fn record_error(&self, msg: String) {
        self.lock().last_error = Some(msg);
        metrics::counter!("cvlan_agent_control_errors_total").increment(1);
        self.bump();
    }

    /// Applies one Sync update: state, data plane, cache.
    async fn apply(&self, update: Option<pb::sync_response::Update>) -> Result<(), MapError> {
        let (changes, restart, snapshot, version) = {
            let mut i = self.lock();
            let c = i.map.apply(update)?;
            i.last_update = Some(SystemTime::now());
            let restart = i.dp.is_none() || c.addresses;
            if !restart && let Some(dp) = &i.dp {
                if c.peers {
                    dp.set_peers(i.map.peer_configs());
                }
                if c.filter {
                    dp.set_filter(i.map.filter());
                }
            }
            (c, restart, i.map.to_snapshot(), i.map.version())
        };
        tracing::debug!(version, ?changes, "applied a map update");
        metrics::counter!("cvlan_agent_map_updates_total").increment(1);
        metrics::gauge!("cvlan_agent_map_version").set(version as f64);
        metrics::gauge!("cvlan_agent_peers").set(snapshot.peers.len() as f64);
        if restart {
            self.start_dataplane().await;
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.save_map(&snapshot)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not cache the network map"),
            Err(e) => tracing::warn!(error = %e, "could not cache the network map"),
        }
        self.bump();
        Ok(())
    }

    /// The control plane says this node is gone: tunnels down, remembered across restarts.
    async fn logged_out(&self, why: String) {
        let msg = format!("logged out by the control plane: {why}");
        tracing::warn!(%msg);
        self.teardown_dataplane().await;
        let reg = {
            let mut i = self.lock();
            i.map = MapState::default();
            i.connected = false;
            i.last_error = None;
            i.reg.as_mut().map(|r| {
                r.logged_out = Some(msg.clone());
                r.clone()
            })
        };
        if let Some(r) = reg
            && let Err(e) = self.store.save_registration(&r)
        {
            tracing::warn!(error = %e, "could not persist the logged-out state");
        }
        let _ = self.store.remove(files::MAP);
        self.bump();
    }

    fn mtls_config(&self) -> Result<(ServerUrl, Arc<rustls::ClientConfig>), String> {
        let reg = self.lock().reg.clone().ok_or("not registered")?;
        let url = ServerUrl::parse(&reg.server).map_err(|e| e.to_string())?;
        let read = |name| {
            self.store
                .read_string(name)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{name} is missing from the state directory"))
        };
        let ca = read(files::CA)?;
        let cert = read(files::CLIENT_CERT)?;
        let key = self.store.machine_key().map_err(|e| e.to_string())?;
        let trust = Trust::from_ca_pem(&ca).map_err(|e| e.to_string())?;
        let id = ClientIdentity::from_pem(&cert, key.pem()).map_err(|e| e.to_string())?;
        let cfg = tls::client_config(&trust, Some(id)).map_err(|e| e.to_string())?;
        Ok((url, Arc::new(cfg)))
    }

    async fn control_loop(self: Arc<Self>, mut cancel: watch::Receiver<bool>) {
        let mut backoff = Backoff::default();
        loop {
            let end = self.session(&mut cancel, &mut backoff).await;
            {
                let mut i = self.lock();
                i.connected = false;
            }
            metrics::gauge!("cvlan_agent_control_connected").set(0.0);
            match end {
                SessionEnd::Cancelled => return,
                SessionEnd::LoggedOut(why) => {
                    self.logged_out(why).await;
                    return;
                }
                SessionEnd::Failed(msg) => {
                    tracing::warn!(error = %msg, attempt = backoff.attempts(), "control plane connection failed");
                    self.record_error(msg);
                }
            }
            let d = backoff.next_delay(rand::random());
            tracing::debug!(
                delay_ms = d.as_millis() as u64,
                "reconnecting after backoff"
            );
            tokio::select! {
                _ = cancelled(&mut cancel) => return,
                _ = tokio::time::sleep(d) => {}
            }
        }
    }

    /// One connection: Sync stream plus endpoint reports and certificate renewal on a tick.
    async fn session(
        &self,
        cancel: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> SessionEnd {
        let (url, cfg) = match self.mtls_config() {
            Ok(x) => x,
            Err(e) => return SessionEnd::Failed(e),
        };
        let since = {
            let i = self.lock();
            if i.map.has_snapshot() {
                i.map.version()
            } else {
                0
            }
        };
        let connect = async {
            let ch = tls::channel(&url, cfg).await.map_err(|e| {
                SessionEnd::Failed(format!(
                    "cannot reach the control plane at {url}: {}",
                    error_chain(&e)
                ))
            })?;
            let mut client = NodeServiceClient::new(ch);
            let stream = client
                .sync(pb::SyncRequest {
                    since_version: since,
                })
                .await
                .map_err(|s| {
                    if is_logged_out(s.code()) {
                        SessionEnd::LoggedOut(s.message().to_string())
                    } else {
                        SessionEnd::Failed(format!(
                            "sync refused ({:?}): {}",
                            s.code(),
                            s.message()
                        ))
                    }
                })?
                .into_inner();
            Ok::<_, SessionEnd>((client, stream))
        };
        let (mut client, mut stream) = tokio::select! {
            _ = cancelled(cancel) => return SessionEnd::Cancelled,
            r = connect => match r {
                Ok(x) => x,
                Err(end) => return end,
            },
        };
        tracing::info!(server = %url, since, "connected to the control plane");
        {
            let mut i = self.lock();
            i.connected = true;
            i.last_error = None;
        }
        metrics::gauge!("cvlan_agent_control_connected").set(1.0);
        self.bump();

        let mut reported: Option<Vec<std::net::SocketAddr>> = None;
        let mut got_any = false;
        let mut tick = tokio::time::interval(self.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            enum Ev {
                Msg(Box<Result<Option<pb::SyncResponse>, tonic::Status>>),
                Tick,
            }
            let ev = tokio::select! {
                _ = cancelled(cancel) => return SessionEnd::Cancelled,
                m = stream.message() => Ev::Msg(Box::new(m)),
                _ = tick.tick() => Ev::Tick,
            };
            match ev {
                Ev::Msg(m) => match *m {
                    Ok(Some(resp)) => match self.apply(resp.update).await {
                        Ok(()) => {
                            if !got_any {
                                got_any = true;
                                backoff.reset();
                            }
                        }
                        Err(e @ MapError::NoSnapshot { .. }) => {
                            return SessionEnd::Failed(format!("protocol error: {e}"));
                        }
                        Err(e) => tracing::debug!(error = %e, "ignored a map update"),
                    },
                    Ok(None) => {
                        return SessionEnd::Failed(
                            "the control plane closed the Sync stream".into(),
                        );
                    }
                    Err(s) if is_logged_out(s.code()) => {
                        return SessionEnd::LoggedOut(s.message().to_string());
                    }
                    Err(s) => {
                        return SessionEnd::Failed(format!(
                            "Sync stream ended ({:?}): {}",
                            s.code(),
                            if s.message().is_empty() {
                                error_chain(&s)
                            } else {
                                s.message().to_string()
                            }
                        ));
                    }
                },
                Ev::Tick => {
                    if self.cert_renewal_due() {
                        tokio::select! {
                            _ = cancelled(cancel) => return SessionEnd::Cancelled,
                            () = self.renew(&mut client) => {}
                        }
                    }
                }
            }
            tokio::select! {
                _ = cancelled(cancel) => return SessionEnd::Cancelled,
                () = self.report_endpoints(&mut client, &mut reported) => {}
            }
        }
    }

    fn cert_renewal_due(&self) -> bool {
        let i = self.lock();
        i.reg
            .as_ref()
            .is_some_and(|r| renewal_due(r.cert_issued_at, r.cert_expires_at, now_unix()))
    }

    async fn renew(&self, client: &mut NodeServiceClient<Channel>) {
        let csr = match self.store.machine_key().map(|k| k.csr_pem()) {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return tracing::warn!(error = %e, "certificate renewal: CSR"),
            Err(e) => return tracing::warn!(error = %e, "certificate renewal: machine key"),
        };
        let req = pb::RenewCertificateRequest { csr_pem: csr };
        let resp = match tokio::time::timeout(
            Duration::from_secs(30),
            client.renew_certificate(req),
        )
        .await
        {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) => {
                return tracing::warn!(code = ?s.code(), message = s.message(), "certificate renewal refused");
            }
            Err(_) => return tracing::warn!("certificate renewal timed out"),
        };
        let Ok(key) = self.store.machine_key() else {
            return;
        };
        if ClientIdentity::from_pem(&resp.certificate_pem, key.pem()).is_err() {
            return tracing::warn!("certificate renewal returned no usable certificate");
        }
        if let Err(e) = self
            .store
            .write(files::CLIENT_CERT, resp.certificate_pem.as_bytes())
        {
            return tracing::warn!(error = %e, "could not store the renewed certificate");
        }
        let now = now_unix();
        let expires = resp
            .certificate_expires_at
            .map_or(now + 30 * 86_400, |t| u64::try_from(t.seconds).unwrap_or(0));
        let reg = {
            let mut i = self.lock();
            i.reg.as_mut().map(|r| {
                r.cert_issued_at = now;
                r.cert_expires_at = expires;
                r.clone()
            })
        };
        if let Some(r) = reg
            && let Err(e) = self.store.save_registration(&r)
        {
            tracing::warn!(error = %e, "could not store the renewed certificate's expiry");
        }
        tracing::info!(expires, "client certificate renewed");
    }

    /// Reports the local endpoints if the data plane runs and they changed since the last
    /// successful report of this session.
    async fn report_endpoints(
        &self,
        client: &mut NodeServiceClient<Channel>,
        reported: &mut Option<Vec<std::net::SocketAddr>>,
    ) {
        let (port, overlay) = {
            let i = self.lock();
            let Some(dp) = &i.dp else { return };
            let overlay: Vec<IpAddr> = i.map.addresses().iter().map(IpNet::addr).collect();
            (dp.listen_port(), overlay)
        };
        let local = match endpoints::local_addresses() {
            Ok(l) => l,
            Err(e) => return tracing::warn!(error = %e, "cannot list local addresses"),
        };
        let eps = endpoints::endpoints(&local, &self.cfg.tun_name, &overlay, port);
        if reported.as_ref() == Some(&eps) {
            return;
        }
        let req = pb::ReportEndpointsRequest {
            endpoints: eps
                .iter()
                .map(|e| pb::Endpoint {
                    address: e.to_string(),
                    kind: "local".into(),
                })
                .collect(),
        };
        match tokio::time::timeout(Duration::from_secs(10), client.report_endpoints(req)).await {
            Ok(Ok(_)) => {
                tracing::info!(count = eps.len(), "reported endpoints");
                *reported = Some(eps);
            }
            Ok(Err(s)) => {
                tracing::warn!(code = ?s.code(), message = s.message(), "endpoint report refused")
            }
            Err(_) => tracing::warn!("endpoint report timed out"),
        }
    }

    /// Answers one CLI request.
    pub async fn handle(self: &Arc<Self>, req: Request) -> Result<Reply, IpcError> {
        match req {
            Request::Status => Ok(Reply {
                message: None,
                status: Some(self.status()),
            }),
            Request::Up(u) => self.up(u).await,
            Request::Down => self.down().await,
            Request::Logout => self.logout().await,
        }
    }

    /// `cvlan up`.
    ///
    /// # Errors
    /// [`IpcError`] with the control plane's message when registration is refused.
    pub async fn up(self: &Arc<Self>, req: UpRequest) -> Result<Reply, IpcError> {
        let _g = self.lifecycle.lock().await;
        let reg = self.lock().reg.clone();
        let message = match reg {
            Some(mut r) if r.logged_out.is_none() => {
                if let Some(s) = &req.server {
                    let want = ServerUrl::parse(s)
                        .map_err(|e| IpcError::new(ErrorCode::InvalidArgument, e.to_string()))?;
                    let have = ServerUrl::parse(&r.server).map_err(internal)?;
                    if want != have {
                        return Err(IpcError::new(
                            ErrorCode::FailedPrecondition,
                            format!(
                                "already registered with {have} as {}; run `cvlan logout` first to join another control plane",
                                r.name
                            ),
                        ));
                    }
                }
                if !r.want_running {
                    r.want_running = true;
                    self.store.save_registration(&r).map_err(internal)?;
                    self.lock().reg = Some(r.clone());
                }
                if self.lock().control.is_none() {
                    self.start_running().await;
                }
                if req.auth_key.is_some() {
                    format!(
                        "already registered as {}; the auth key was not used",
                        r.name
                    )
                } else {
                    format!("up as {}", r.name)
                }
            }
            _ => {
                let r = self.register(req).await?;
                self.lock().map = MapState::default();
                self.start_running().await;
                format!("registered as {} ({})", r.name, r.node_id)
            }
        };
        let note = self.wait_first_map().await?;
        let message = match note {
            Some(n) => format!("{message}; {n}"),
            None => message,
        };
        Ok(Reply {
            message: Some(message),
            status: Some(self.status()),
        })
    }

    /// Waits until a map is applied, the node is logged out, or the timeout passes (then a
    /// note for the user, not an error: the loop keeps trying).
    async fn wait_first_map(&self) -> Result<Option<String>, IpcError> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + self.cfg.first_map_timeout;
        loop {
            {
                let i = self.lock();
                if let Some(m) = i.reg.as_ref().and_then(|r| r.logged_out.clone()) {
                    return Err(IpcError::new(ErrorCode::PermissionDenied, m));
                }
                if i.map.has_snapshot() && i.dp.is_some() {
                    return Ok(None);
                }
                if let Some(e) = &i.dp_error {
                    return Err(IpcError::new(ErrorCode::Internal, e.clone()));
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                let i = self.lock();
                let why = i
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "no network map yet".into());
                return Ok(Some(format!("still connecting in the background ({why})")));
            }
        }
    }

    async fn register(&self, req: UpRequest) -> Result<Registration, IpcError> {
        let bad = |m: String| IpcError::new(ErrorCode::InvalidArgument, m);
        let (Some(server), Some(auth_key)) = (req.server.as_deref(), req.auth_key.as_deref())
        else {
            return Err(bad(
                "not registered yet: `cvlan up` needs --server URL and --auth-key TOKEN".into(),
            ));
        };
        let url = ServerUrl::parse(server).map_err(|e| bad(e.to_string()))?;
        let pin = token::ca_pin(auth_key);
        let trust = match &req.ca_pem {
            Some(pem) => Trust::from_ca_pem(pem).map_err(|e| bad(e.to_string()))?,
            None => Trust::Pin(pin.clone().map_err(|e| bad(e.to_string()))?),
        };
        // A node the control plane dropped comes back as a new node with fresh keys.
        if self.lock().reg.is_some() {
            self.store.remove_all().map_err(internal)?;
            self.lock().reg = None;
        }
        let wg = self.store.wg_key().map_err(internal)?;
        let machine = self.store.machine_key().map_err(internal)?;
        let csr = machine.csr_pem().map_err(internal)?;
        let cfg = tls::client_config(&trust, None).map_err(internal)?;
        let hostname = req
            .hostname
            .clone()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(system_hostname);
        tracing::info!(server = %url, "registering");
        tracing::debug!(%hostname, "registering as");
        let call = async {
            let ch = tls::channel(&url, Arc::new(cfg)).await.map_err(|e| {
                IpcError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "cannot reach the control plane at {url}: {}",
                        error_chain(&e)
                    ),
                )
            })?;
            NodeServiceClient::new(ch)
                .register(pb::RegisterRequest {
                    auth_key: auth_key.trim().to_string(),
                    wg_public_key: wg.public_base64(),
                    csr_pem: csr,
                    hostname: hostname.clone(),
                    os: std::env::consts::OS.into(),
                })
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| {
                    let code = match s.code() {
                        tonic::Code::InvalidArgument => ErrorCode::InvalidArgument,
                        tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
                        tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
                        tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => {
                            ErrorCode::FailedPrecondition
                        }
                        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                            ErrorCode::Unavailable
                        }
                        _ => ErrorCode::Internal,
                    };
                    let m = if s.message().is_empty() {
                        error_chain(&s)
                    } else {
                        s.message().to_string()
                    };
                    IpcError::new(
                        code,
                        format!("registration refused by the control plane: {m}"),
                    )
                })
        };
        let resp = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .map_err(|_| {
                IpcError::new(
                    ErrorCode::Unavailable,
                    format!("registration with {url} timed out"),
                )
            })??;
        let proto_err = |m: &str| {
            IpcError::new(
                ErrorCode::Internal,
                format!("the control plane's registration answer is unusable: {m}"),
            )
        };
        let node = resp.node.ok_or_else(|| proto_err("no node"))?;
        let Trust::Roots(cas) = Trust::from_ca_pem(&resp.ca_pem).map_err(|_| proto_err("no CA"))?
        else {
            return Err(proto_err("no CA"));
        };
        // From now on only this CA is trusted; it must be the one the token vouched for.
        if req.ca_pem.is_none()
            && let Ok(pin) = pin
            && !cas.iter().any(|c| {
                use sha2::Digest;
                <[u8; 32]>::from(sha2::Sha256::digest(c.as_ref())) == pin
            })
        {
            return Err(proto_err("its CA does not match the token's pin"));
        }
        ClientIdentity::from_pem(&resp.certificate_pem, machine.pem())
            .map_err(|_| proto_err("no client certificate"))?;
        let now = now_unix();
        let reg = Registration {
            server: url.to_string(),
            node_id: node.id.clone(),
            name: if node.name.is_empty() {
                hostname
            } else {
                node.name.clone()
            },
            tenant_id: node.tenant_id.clone(),
            cvlan_id: node.cvlan_id.clone(),
            ipv4: node.ipv4.clone(),
            ipv6: node.ipv6.clone(),
            cert_issued_at: now,
            cert_expires_at: resp
                .certificate_expires_at
                .map_or(now + 30 * 86_400, |t| u64::try_from(t.seconds).unwrap_or(0)),
            listen_port: 0,
            want_running: true,
            logged_out: None,
        };
        self.store
            .write(files::CLIENT_CERT, resp.certificate_pem.as_bytes())
            .map_err(internal)?;
        self.store
            .write(files::CA, resp.ca_pem.as_bytes())
            .map_err(internal)?;
        self.store.remove(files::MAP).map_err(internal)?;
        self.store.save_registration(&reg).map_err(internal)?;
        {
            let mut i = self.lock();
            i.reg = Some(reg.clone());
            i.public_key = Some(wg.public_base64());
            i.last_error = None;
        }
        tracing::info!(node_id = %reg.node_id, "registered");
        self.bump();
        Ok(reg)
    }

    /// `cvlan down`.
    ///
    /// # Errors
    /// [`ErrorCode::FailedPrecondition`] when not registered.
    pub async fn down(self: &Arc<Self>) -> Result<Reply, IpcError> {
        let _g = self.lifecycle.lock().await;
        if self.lock().reg.is_none() {
            return Err(IpcError::new(
                ErrorCode::FailedPrecondition,
                "not logged in",
            ));
        }
        self.stop_control().await;
        self.teardown_dataplane().await;
        let reg = {
            let mut i = self.lock();
            i.reg.as_mut().map(|r| {
                r.want_running = false;
                r.clone()
            })
        };
        if let Some(r) = reg {
            self.store.save_registration(&r).map_err(internal)?;
        }
        self.bump();
        Ok(Reply {
            message: Some("tunnels down; `cvlan up` brings them back".into()),
            status: Some(self.status()),
        })
    }

    /// `cvlan logout`: everything down, identity removed. There is no deregistration call in
    /// the node protocol, so the control plane keeps the node until an admin deletes it (or,
    /// if ephemeral, it expires).
    ///
    /// # Errors
    /// [`ErrorCode::Internal`] when the state cannot be removed.
    pub async fn logout(self: &Arc<Self>) -> Result<Reply, IpcError> {
        let _g = self.lifecycle.lock().await;
        let was = self.lock().reg.clone();
        self.stop_control().await;
        self.teardown_dataplane().await;
        self.store.remove_all().map_err(internal)?;
        {
            let mut i = self.lock();
            *i = Inner::default();
        }
        self.bump();
        let message = match was {
            Some(r) if r.logged_out.is_none() => format!(
                "logged out: tunnels down and identity removed from {}; the control plane keeps node {} until an admin deletes it (ephemeral nodes expire)",
                self.store.path().display(),
                r.name
            ),
            Some(_) => "logged out: local state removed".into(),
            None => "not logged in".into(),
        };
        Ok(Reply {
            message: Some(message),
            status: Some(self.status()),
        })
    }

    /// Stops the control loop and the tunnels (process exit); the stored state stays.
    pub async fn shutdown(&self) {
        let _g = self.lifecycle.lock().await;
        self.stop_control().await;
        self.teardown_dataplane().await;
    }

    /// The current state.
    pub fn status(&self) -> Status {
        let i = self.lock();
        let stats = i.dp.as_ref().map(|d| d.peer_stats()).unwrap_or_default();
        let state = match &i.reg {
            None => AgentState::NeedsLogin,
            Some(r) if r.logged_out.is_some() => AgentState::LoggedOut,
            Some(r) if !r.want_running => AgentState::Stopped,
            Some(_) if i.map.has_snapshot() && i.dp.is_some() => AgentState::Running,
            Some(_) => AgentState::Starting,
        };
        let err = i.last_error.clone();
        let message = match state {
            AgentState::NeedsLogin => {
                "not logged in: run `cvlan up --server URL --auth-key TOKEN`".to_string()
            }
            AgentState::Stopped => "stopped: run `cvlan up` to reconnect".into(),
            AgentState::LoggedOut => i
                .reg
                .as_ref()
                .and_then(|r| r.logged_out.clone())
                .unwrap_or_default(),
            AgentState::Starting => match i.dp_error.as_ref().or(err.as_ref()) {
                Some(e) => format!("connecting: {e}"),
                None => "connecting to the control plane".into(),
            },
            AgentState::Running if i.connected => "connected".into(),
            AgentState::Running => format!(
                "control plane unreachable, tunnels kept as they are: {}",
                err.clone().unwrap_or_else(|| "reconnecting".into())
            ),
        };
        let self_node = i.reg.as_ref().map(|r| {
            let n = i.map.self_node();
            let mut addresses: Vec<String> =
                i.map.addresses().iter().map(ToString::to_string).collect();
            if addresses.is_empty() {
                addresses = [&r.ipv4, &r.ipv6]
                    .into_iter()
                    .filter(|a| !a.is_empty())
                    .cloned()
                    .collect();
            }
            SelfStatus {
                id: r.node_id.clone(),
                name: n
                    .map(|n| n.name.clone())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| r.name.clone()),
                addresses,
                public_key: i.public_key.clone().unwrap_or_default(),
                listen_port: i.dp.as_ref().map(|d| d.listen_port()),
                tun: i.dp.as_ref().map(|_| self.cfg.tun_name.clone()),
                cert_expires_unix: r.cert_expires_at,
            }
        });
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut peers: Vec<PeerStatus> = if i.dp.is_some() {
            i.map
                .peers()
                .map(|p| {
                    let key: Option<[u8; 32]> = b64
                        .decode(p.wg_public_key.trim())
                        .ok()
                        .and_then(|k| k.try_into().ok());
                    let st = key.and_then(|k| stats.iter().find(|s| s.public_key == k));
                    PeerStatus {
                        node_id: p.node_id.clone(),
                        name: if p.name.is_empty() {
                            p.node_id.clone()
                        } else {
                            p.name.clone()
                        },
                        public_key: p.wg_public_key.clone(),
                        addresses: p.allowed_ips.clone(),
                        endpoint: st
                            .and_then(|s| s.endpoint)
                            .or_else(|| crate::netmap::peer_config(p).and_then(|c| c.endpoint))
                            .map(|e| e.to_string()),
                        last_handshake_unix: st.and_then(|s| s.last_handshake).map(unix),
                        rx_bytes: st.map_or(0, |s| s.rx_bytes),
                        tx_bytes: st.map_or(0, |s| s.tx_bytes),
                        external: p.external,
                        gateway: p.gateway,
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        peers.sort_by(|a, b| a.name.cmp(&b.name).then(a.node_id.cmp(&b.node_id)));
        Status {
            state,
            message,
            server: i.reg.as_ref().map(|r| r.server.clone()),
            control: ControlStatus {
                connected: i.connected,
                map_version: i.map.version(),
                last_error: if i.connected { None } else { err },
                last_update_unix: i.last_update.map(unix),
            },
            self_node,
            peers,
        }
    }

    /// Updates the gauges read on scrape (per-peer bytes, data-plane counters).
    pub fn refresh_metrics(&self) {
        let i = self.lock();
        let Some(dp) = &i.dp else { return };
        for s in dp.peer_stats() {
            metrics::gauge!("cvlan_agent_peer_rx_bytes", "peer" => s.name.clone())
                .set(s.rx_bytes as f64);
            metrics::gauge!("cvlan_agent_peer_tx_bytes", "peer" => s.name.clone())
                .set(s.tx_bytes as f64);
        }
        for (name, v) in dp.counters() {
            metrics::gauge!("cvlan_agent_dataplane", "counter" => name).set(v as f64);
        }
    }
}

/// Resolves once cancellation is requested (or the requester is gone).
async fn cancelled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_when_less_than_a_third_of_the_validity_remains() {
        // 30 days from t=0: renew from day 20 on.
        let d = 86_400;
        assert!(!renewal_due(0, 30 * d, 0));
        assert!(!renewal_due(0, 30 * d, 20 * d - 1));
        assert!(renewal_due(0, 30 * d, 20 * d));
        assert!(renewal_due(0, 30 * d, 31 * d));
        // A certificate without validity is always due.
        assert!(renewal_due(100, 100, 0));
    }
}
