//! The agent against a scripted NodeService over real TLS on loopback: registration with the
//! token's CA pin, mTLS on Sync, snapshot + deltas into the data plane, endpoint reports,
//! reconnect with since_version after the stream breaks, an outage during a restart (tunnels
//! come back from the cached map), certificate renewal, and logout by the control plane.
//!
//! The server is scripted (not cvlan-api) so each behaviour the agent must survive can be
//! produced on demand; tests/e2e.rs runs the agent against the real control plane.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use base64::Engine;
use cvlan_agent::agent::{Agent, AgentConfig};
use cvlan_agent::ipc::{AgentState, ErrorCode, UpRequest};
use cvlan_agent::tunnel::MemoryFactory;
use cvlan_proto::pbjson_types::Timestamp;
use cvlan_proto::v1 as pb;
use cvlan_proto::v1::node_service_server::{NodeService, NodeServiceServer};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

// ---------------------------------------------------------------- scripted server

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    pem: String,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "test node CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        Ca {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    fn pin_hex(&self) -> String {
        Sha256::digest(self.der.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn token(&self) -> String {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = format!(
            r#"{{"id":"t1","exp":4000000000,"ca":"{}"}}"#,
            self.pin_hex()
        );
        format!("cvt1.{}.{}", b.encode(claims), b.encode([0u8; 64]))
    }

    fn sign_csr(&self, csr: &str, ttl: Duration) -> (String, SystemTime) {
        let mut req = rcgen::CertificateSigningRequestParams::from_pem(csr).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "node-1");
        let now = SystemTime::now();
        p.not_before = (now - Duration::from_secs(60)).into();
        p.not_after = (now + ttl).into();
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        req.params = p;
        (req.signed_by(&self.issuer).unwrap().pem(), now + ttl)
    }

    fn server_config(&self) -> rustls::ServerConfig {
        let key = KeyPair::generate().unwrap();
        let p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let leaf = p.signed_by(&key, &self.issuer).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .unwrap();
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(v)
            .with_single_cert(
                vec![leaf.der().clone(), self.der.clone()],
                PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        cfg
    }
}

/// What the server saw and what it will do next.
#[derive(Default)]
struct Script {
    registers: Vec<pb::RegisterRequest>,
    /// (since_version, client certificate presented)
    syncs: Vec<(u64, bool)>,
    reports: Vec<Vec<String>>,
    renewals: Vec<bool>,
    register_error: Option<Status>,
    sync_error: Option<Status>,
    stream: Option<mpsc::Sender<Result<pb::SyncResponse, Status>>>,
    cert_ttl: Option<Duration>,
    version: u64,
}

#[derive(Clone)]
struct Server {
    ca: Arc<Ca>,
    script: Arc<Mutex<Script>>,
}

#[derive(Clone)]
struct PeerCerts(bool);

/// A server-side TLS connection whose socket the test can cut (an outage).
struct Conn {
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    fd: i32,
    registry: Registry,
}

type Registry = Arc<Mutex<HashMap<i32, ()>>>;

impl Drop for Conn {
    fn drop(&mut self) {
        // Deregister before the socket closes, so a cut never hits a reused descriptor.
        self.registry.lock().unwrap().remove(&self.fd);
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerCerts;
    fn connect_info(&self) -> PeerCerts {
        PeerCerts(
            self.tls
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty()),
        )
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}

fn peer(id: &str, n: u8, ip: &str) -> pb::Peer {
    pb::Peer {
        node_id: id.into(),
        name: id.into(),
        wg_public_key: base64::engine::general_purpose::STANDARD.encode([n; 32]),
        allowed_ips: vec![format!("{ip}/32")],
        endpoints: vec![pb::Endpoint {
            address: format!("192.0.2.{n}:51820"),
            kind: "local".into(),
        }],
        ..Default::default()
    }
}

fn snapshot(version: u64) -> pb::SyncResponse {
    pb::SyncResponse {
        update: Some(pb::sync_response::Update::Snapshot(pb::NetworkMap {
            version,
            self_: Some(pb::Node {
                id: "node-1".into(),
                name: "a1".into(),
                ipv4: "10.20.0.2".into(),
                ipv6: "fd20::2".into(),
                ..Default::default()
            }),
            peers: vec![peer("a2", 2, "10.20.0.3")],
            filter: Some(pb::PacketFilter {
                rules: vec![pb::FilterRule {
                    source_cidrs: vec!["10.20.0.3/32".into()],
                    destination_cidrs: vec!["10.20.0.2/32".into()],
                    protocol: pb::Protocol::Icmp as i32,
                    ports: vec![],
                    action: pb::Action::Allow as i32,
                }],
            }),
            dns: None,
            cvlan_ipv4_prefix: "10.20.0.0/24".into(),
            cvlan_ipv6_prefix: "fd20::/64".into(),
        })),
    }
}

fn ts(t: SystemTime) -> Timestamp {
    Timestamp {
        seconds: t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64,
        nanos: 0,
    }
}

#[tonic::async_trait]
impl NodeService for Server {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = req.into_inner();
        let ttl = {
            let mut s = self.script.lock().unwrap();
            if let Some(e) = s.register_error.clone() {
                return Err(e);
            }
            s.registers.push(r.clone());
            s.cert_ttl.unwrap_or(Duration::from_secs(3600))
        };
        let (cert, exp) = self.ca.sign_csr(&r.csr_pem, ttl);
        Ok(Response::new(pb::RegisterResponse {
            node: Some(pb::Node {
                id: "node-1".into(),
                name: r.hostname,
                ipv4: "10.20.0.2".into(),
                ipv6: "fd20::2".into(),
                ..Default::default()
            }),
            certificate_pem: cert,
            ca_pem: self.ca.pem.clone(),
            certificate_expires_at: Some(ts(exp)),
        }))
    }

    async fn renew_certificate(
        &self,
        req: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::RenewCertificateResponse>, Status> {
        let has_cert = req.extensions().get::<PeerCerts>().is_some_and(|c| c.0);
        self.script.lock().unwrap().renewals.push(has_cert);
        let (cert, exp) = self
            .ca
            .sign_csr(&req.into_inner().csr_pem, Duration::from_secs(3600));
        Ok(Response::new(pb::RenewCertificateResponse {
            certificate_pem: cert,
            certificate_expires_at: Some(ts(exp)),
        }))
    }

    type SyncStream =
        Pin<Box<dyn futures::Stream<Item = Result<pb::SyncResponse, Status>> + Send + 'static>>;

    async fn sync(
        &self,
        req: Request<pb::SyncRequest>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let has_cert = req.extensions().get::<PeerCerts>().is_some_and(|c| c.0);
        let since = req.into_inner().since_version;
        let mut s = self.script.lock().unwrap();
        s.syncs.push((since, has_cert));
        if !has_cert {
            return Err(Status::unauthenticated("client certificate required"));
        }
        if let Some(e) = s.sync_error.clone() {
            return Err(e);
        }
        let (tx, rx) = mpsc::channel(16);
        if since == 0 || since > s.version {
            if s.version == 0 {
                s.version = 10;
            }
            tx.try_send(Ok(snapshot(s.version))).unwrap();
        }
        s.stream = Some(tx);
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report_endpoints(
        &self,
        req: Request<pb::ReportEndpointsRequest>,
    ) -> Result<Response<pb::ReportEndpointsResponse>, Status> {
        let eps = req
            .into_inner()
            .endpoints
            .into_iter()
            .map(|e| e.address)
            .collect();
        self.script.lock().unwrap().reports.push(eps);
        Ok(Response::new(pb::ReportEndpointsResponse {}))
    }
}

/// A running scripted server; dropping it cuts every connection (an outage).
struct Running {
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    registry: Registry,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for fd in self.registry.lock().unwrap().keys() {
            // SAFETY: registered descriptors are open (Conn deregisters before closing).
            unsafe { libc::shutdown(*fd, libc::SHUT_RDWR) };
        }
    }
}

async fn serve(srv: Server, addr: SocketAddr) -> Running {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(srv.ca.server_config()));
    let registry: Registry = Arc::default();
    let (tx, rx) = mpsc::channel::<Result<Conn, std::io::Error>>(16);
    let reg = registry.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let fd = tcp.as_raw_fd();
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let reg = reg.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    reg.lock().unwrap().insert(fd, ());
                    let _ = tx
                        .send(Ok(Conn {
                            tls,
                            fd,
                            registry: reg,
                        }))
                        .await;
                }
            });
        }
    });
    let incoming =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(NodeServiceServer::new(srv))
            .serve_with_incoming(incoming)
            .await;
    });
    Running {
        addr,
        tasks: vec![accept, server],
        registry,
    }
}

// ---------------------------------------------------------------- helpers

struct TempDir(std::path::PathBuf);

static N: AtomicU64 = AtomicU64::new(0);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "cvlan-agent-it-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn agent(dir: &TempDir, dp: &MemoryFactory) -> Arc<Agent> {
    let mut cfg = AgentConfig::new(&dir.0);
    cfg.first_map_timeout = Duration::from_secs(10);
    cfg.tick = Duration::from_millis(200);
    Agent::new(cfg, Arc::new(dp.clone())).unwrap()
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn up(addr: SocketAddr, token: String) -> UpRequest {
    UpRequest {
        server: Some(format!("https://{addr}")),
        auth_key: Some(token),
        hostname: Some("a1".into()),
        ca_pem: None,
    }
}

fn delta(s: &mut Script, version: u64, d: pb::MapDelta) {
    s.version = version;
    s.stream
        .as_ref()
        .expect("an open Sync stream")
        .try_send(Ok(pb::SyncResponse {
            update: Some(pb::sync_response::Update::Delta(pb::MapDelta {
                version,
                ..d
            })),
        }))
        .unwrap();
}

fn peer_names(dp: &MemoryFactory) -> Vec<String> {
    dp.recorded().peers.into_iter().map(|p| p.name).collect()
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_registers_syncs_resumes_after_a_broken_stream_and_is_logged_out_by_the_control_plane()
 {
    let srv = Server {
        ca: Arc::new(Ca::new()),
        script: Arc::default(),
    };
    let running = serve(srv.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = TempDir::new("flow");
    let dp = MemoryFactory::default();
    let a = agent(&dir, &dp);
    a.boot().await;
    assert_eq!(a.status().state, AgentState::NeedsLogin);

    let reply = a.up(up(running.addr, srv.ca.token())).await.expect("up");
    assert!(reply.message.unwrap().contains("registered as a1"));
    let st = a.status();
    assert_eq!(st.state, AgentState::Running, "{st:?}");
    assert!(st.control.connected);
    let me = st.self_node.unwrap();
    assert_eq!(me.addresses, vec!["10.20.0.2/24", "fd20::2/64"]);
    {
        let s = srv.script.lock().unwrap();
        assert_eq!(s.registers.len(), 1);
        assert_eq!(s.registers[0].wg_public_key, me.public_key);
        assert_eq!(s.registers[0].hostname, "a1");
        assert!(s.registers[0].csr_pem.contains("CERTIFICATE REQUEST"));
        assert_eq!(
            s.syncs,
            vec![(0, true)],
            "Sync presents the client certificate"
        );
    }
    let rec = dp.recorded();
    let cfg = rec.config.expect("data plane started");
    assert_eq!(cfg.addresses.len(), 2);
    assert_eq!(peer_names(&dp), vec!["a2"]);
    assert_eq!(rec.filter.rules.len(), 1);
    assert_eq!(st.peers[0].name, "a2");
    assert_eq!(st.peers[0].endpoint.as_deref(), Some("192.0.2.2:51820"));

    // Endpoints are reported with the data plane's port.
    let port = me.listen_port.unwrap();
    eventually("an endpoint report", || {
        srv.script
            .lock()
            .unwrap()
            .reports
            .iter()
            .any(|r| !r.is_empty() && r.iter().all(|e| e.ends_with(&format!(":{port}"))))
    })
    .await;

    // A delta adds a peer.
    delta(
        &mut srv.script.lock().unwrap(),
        11,
        pb::MapDelta {
            peers_upserted: vec![peer("a3", 3, "10.20.0.4")],
            ..Default::default()
        },
    );
    eventually("a3 to be added", || peer_names(&dp) == ["a2", "a3"]).await;

    // The stream breaks: the agent comes back asking for what follows version 11, and the
    // tunnels were not touched meanwhile.
    srv.script.lock().unwrap().stream = None;
    eventually("a resumed Sync", || {
        srv.script.lock().unwrap().syncs.len() == 2
    })
    .await;
    assert_eq!(srv.script.lock().unwrap().syncs[1], (11, true));
    eventually("reconnected", || a.status().control.connected).await;
    assert_eq!(dp.recorded().starts, 1);
    assert_eq!(peer_names(&dp), vec!["a2", "a3"]);
    delta(
        &mut srv.script.lock().unwrap(),
        12,
        pb::MapDelta {
            peers_removed: vec!["a2".into()],
            ..Default::default()
        },
    );
    eventually("a2 to be removed", || peer_names(&dp) == ["a3"]).await;
    assert_eq!(a.status().control.map_version, 12);

    // The node is deleted: the next Sync is refused with NotFound.
    {
        let mut s = srv.script.lock().unwrap();
        s.sync_error = Some(Status::not_found("node has been deleted"));
        s.stream = None;
    }
    eventually("logged out", || a.status().state == AgentState::LoggedOut).await;
    let st = a.status();
    assert!(
        st.message.contains("logged out by the control plane") && st.message.contains("deleted"),
        "{}",
        st.message
    );
    assert!(dp.recorded().config.is_none(), "tunnels torn down");
    assert_eq!(dp.recorded().shutdowns, 1);
    assert!(st.peers.is_empty());

    // It stays logged out across a restart, and stays quiet.
    a.shutdown().await;
    let syncs = srv.script.lock().unwrap().syncs.len();
    let b = agent(&dir, &dp);
    b.boot().await;
    assert_eq!(b.status().state, AgentState::LoggedOut);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(srv.script.lock().unwrap().syncs.len(), syncs);
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_an_outage_brings_the_tunnels_back_from_the_cache_and_keeps_the_identity()
{
    let srv = Server {
        ca: Arc::new(Ca::new()),
        script: Arc::default(),
    };
    let running = serve(srv.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = running.addr;
    let dir = TempDir::new("outage");
    let dp = MemoryFactory::default();
    let a = agent(&dir, &dp);
    a.up(up(addr, srv.ca.token())).await.expect("up");
    let first = a.status().self_node.unwrap();
    let port = first.listen_port.unwrap();

    // Outage: the control plane goes away; the agent notices but keeps its tunnels.
    drop(running);
    eventually("the outage to be noticed", || !a.status().control.connected).await;
    let st = a.status();
    assert_eq!(st.state, AgentState::Running);
    assert!(st.message.contains("tunnels kept"), "{}", st.message);
    assert_eq!(peer_names(&dp), vec!["a2"]);
    assert_eq!(dp.recorded().shutdowns, 0);

    // Restart while the control plane is still down: same identity, same port, tunnels up
    // from the cached map.
    a.shutdown().await;
    assert!(dp.recorded().config.is_none());
    let b = agent(&dir, &dp);
    b.boot().await;
    let st = b.status();
    assert_eq!(st.state, AgentState::Running, "{st:?}");
    assert!(!st.control.connected);
    let me = st.self_node.unwrap();
    assert_eq!(me.public_key, first.public_key);
    assert_eq!(me.addresses, first.addresses);
    assert_eq!(me.listen_port, Some(port));
    assert_eq!(peer_names(&dp), vec!["a2"]);

    // The control plane returns on the same address: the agent resumes from version 10
    // without registering again.
    let running = serve(srv.clone(), addr).await;
    eventually("a resumed Sync", || {
        srv.script.lock().unwrap().syncs.last() == Some(&(10, true))
    })
    .await;
    eventually("reconnected", || b.status().control.connected).await;
    assert_eq!(srv.script.lock().unwrap().registers.len(), 1);
    // `up` again is a no-op that says so.
    let r = b.up(up(addr, srv.ca.token())).await.expect("up again");
    assert!(r.message.unwrap().contains("already registered"));
    b.shutdown().await;
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_registrations_carry_the_control_planes_message() {
    let srv = Server {
        ca: Arc::new(Ca::new()),
        script: Arc::default(),
    };
    let running = serve(srv.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = TempDir::new("refused");
    let dp = MemoryFactory::default();
    let a = agent(&dir, &dp);

    srv.script.lock().unwrap().register_error = Some(Status::permission_denied(
        "registration token has been revoked",
    ));
    let e = a
        .up(up(running.addr, srv.ca.token()))
        .await
        .expect_err("revoked");
    assert_eq!(e.code, ErrorCode::PermissionDenied);
    assert!(
        e.message.contains("registration token has been revoked"),
        "{e}"
    );
    srv.script.lock().unwrap().register_error =
        Some(Status::unauthenticated("registration token has expired"));
    let e = a
        .up(up(running.addr, srv.ca.token()))
        .await
        .expect_err("expired");
    assert_eq!(e.code, ErrorCode::Unauthenticated);
    assert!(e.message.contains("registration token has expired"), "{e}");
    assert_eq!(a.status().state, AgentState::NeedsLogin);

    // A token pinning another CA: the TLS handshake itself is refused.
    srv.script.lock().unwrap().register_error = None;
    let other = Ca::new();
    let e = a
        .up(up(running.addr, other.token()))
        .await
        .expect_err("wrong pin");
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(e.message.contains("pinned"), "{e}");
    assert!(srv.script.lock().unwrap().registers.is_empty());

    // --ca-file instead of the pin works.
    let mut req = up(running.addr, "cvt1.e30.AA".into());
    req.ca_pem = Some(srv.ca.pem.clone());
    a.up(req).await.expect("up with --ca-file");
    assert_eq!(a.status().state, AgentState::Running);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_certificate_is_renewed_over_mtls_and_down_up_logout_work() {
    let srv = Server {
        ca: Arc::new(Ca::new()),
        script: Arc::default(),
    };
    srv.script.lock().unwrap().cert_ttl = Some(Duration::from_secs(4));
    let running = serve(srv.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = TempDir::new("renew");
    let dp = MemoryFactory::default();
    let a = agent(&dir, &dp);
    a.up(up(running.addr, srv.ca.token())).await.expect("up");
    let exp0 = a.status().self_node.unwrap().cert_expires_unix;
    eventually("a renewal", || {
        !srv.script.lock().unwrap().renewals.is_empty()
    })
    .await;
    assert!(srv.script.lock().unwrap().renewals[0], "renewal over mTLS");
    eventually("the new expiry", || {
        a.status().self_node.unwrap().cert_expires_unix > exp0 + 1000
    })
    .await;

    // down: tunnels gone, no reconnects, identity kept.
    a.down().await.expect("down");
    assert_eq!(a.status().state, AgentState::Stopped);
    assert!(dp.recorded().config.is_none());
    let syncs = srv.script.lock().unwrap().syncs.len();
    // up without a token brings it back, with the renewed certificate.
    let mut again = up(running.addr, String::new());
    again.auth_key = None;
    again.server = None;
    a.up(again).await.expect("up again");
    assert_eq!(a.status().state, AgentState::Running);
    eventually("a new Sync", || {
        srv.script.lock().unwrap().syncs.len() == syncs + 1
    })
    .await;
    assert_eq!(srv.script.lock().unwrap().registers.len(), 1);

    // logout: everything gone from the state directory.
    a.logout().await.expect("logout");
    assert_eq!(a.status().state, AgentState::NeedsLogin);
    assert!(dp.recorded().config.is_none());
    let left: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

struct NoTun;

impl cvlan_agent::tunnel::TunnelFactory for NoTun {
    fn start(
        &self,
        _: cvlan_agent::tunnel::TunnelConfig,
    ) -> Result<Box<dyn cvlan_agent::tunnel::Tunnels>, cvlan_agent::tunnel::TunnelError> {
        Err(cvlan_agent::tunnel::TunnelError(
            "TUN device: Operation not permitted".into(),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_fails_clearly_when_the_data_plane_cannot_start() {
    let srv = Server {
        ca: Arc::new(Ca::new()),
        script: Arc::default(),
    };
    let running = serve(srv.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = TempDir::new("notun");
    let mut cfg = AgentConfig::new(&dir.0);
    cfg.first_map_timeout = Duration::from_secs(10);
    let a = Agent::new(cfg, Arc::new(NoTun)).unwrap();
    let e = a
        .up(up(running.addr, srv.ca.token()))
        .await
        .expect_err("no data plane");
    assert!(
        e.message.contains("data plane failed to start") && e.message.contains("not permitted"),
        "{e}"
    );
    let st = a.status();
    assert_eq!(st.state, AgentState::Starting);
    assert!(
        st.message.contains("data plane failed to start"),
        "{}",
        st.message
    );
    a.shutdown().await;
}
