//! vrouterd against the real control plane: cvlan-api in-process on a fresh SQLite database,
//! its node listener on 127.0.0.1 over TLS, admin actions through its REST router, a node
//! joined by the agent library (in-memory data plane). vrouterd enrols with a join token,
//! follows the Sync stream and publishes the tables into a real segment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use cvlan_agent::agent::{Agent, AgentConfig};
use cvlan_agent::ipc::UpRequest;
use cvlan_agent::tunnel::MemoryFactory;
use cvlan_sidecar::ctl::{Request as CtlRequest, Response};
use cvlan_sidecar::daemon::{self, Settings};
use cvlan_tables::view::unpack_active;
use cvlan_tables::{Segment, SegmentParams};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::watch;
use tower::ServiceExt;

struct TempDir(PathBuf);

static N: AtomicU64 = AtomicU64::new(0);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "vrouterd-cp-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Cp {
    router: axum::Router,
    root: String,
    node_addr: SocketAddr,
    _stop: watch::Sender<bool>,
    _dir: TempDir,
}

impl Cp {
    async fn start() -> Cp {
        let dir = TempDir::new("db");
        let url = format!("sqlite://{}", dir.0.join("cp.db").display());
        let store = Arc::new(cvlan_store::Store::open(&url).await.unwrap());
        let app = cvlan_api::build_app(store, cvlan_api::Mode::All, Default::default())
            .await
            .unwrap();
        app.svc
            .bootstrap_superadmin(
                "root@cvlan.test",
                cvlan_api::secrets::Secret("root-password-1".into()),
            )
            .await
            .unwrap();
        let router = cvlan_api::router(app.clone());
        let (stop, rx) = watch::channel(false);
        let tls = app
            .svc
            .ca
            .server_config(&["127.0.0.1".to_string()])
            .unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node_addr = l.local_addr().unwrap();
        let r = cvlan_api::node_router(app.svc.clone(), rx.clone());
        tokio::spawn(cvlan_api::server::serve(l, r, Some(tls), rx));
        let mut cp = Cp {
            router,
            root: String::new(),
            node_addr,
            _stop: stop,
            _dir: dir,
        };
        let v = cp
            .ok(
                "POST",
                "/api/v1/auth/login",
                Some(json!({"email": "root@cvlan.test", "password": "root-password-1"})),
            )
            .await;
        cp.root = v["token"].as_str().unwrap().to_string();
        cp
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut b = Request::builder().method(method).uri(path);
        if !self.root.is_empty() {
            b = b.header("authorization", format!("Bearer {}", self.root));
        }
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let bytes = axum::body::to_bytes(res.into_body(), 16 << 20)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert!(
            (200..300).contains(&status),
            "{method} {path} → {status}: {v}"
        );
        v
    }

    fn url(&self) -> String {
        format!("https://{}", self.node_addr)
    }
}

async fn ctl(sock: &Path, cmd: &str) -> Option<Value> {
    let s = tokio::net::UnixStream::connect(sock).await.ok()?;
    let (r, mut w) = s.into_split();
    let mut line = serde_json::to_vec(&CtlRequest { cmd: cmd.into() }).unwrap();
    line.push(b'\n');
    w.write_all(&line).await.ok()?;
    let mut resp = String::new();
    BufReader::new(r).read_line(&mut resp).await.ok()?;
    let r: Response = serde_json::from_str(&resp).ok()?;
    r.data
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn settings(dir: &Path, server: &str, token: Option<String>) -> Settings {
    Settings {
        server: Some(server.into()),
        join_token: token.map(cvlan_sidecar::control::JoinToken),
        ca_file: None,
        state_dir: dir.join("state"),
        listen: "10.255.0.1:51820".parse().unwrap(),
        segment: dir.join("segment"),
        params: SegmentParams {
            keypair_capacity: 1024,
            slot_size: 1 << 20,
            max_workers: 2,
        },
        punt_socket: dir.join("punt.sock"),
        dpdk_socket: dir.join("dpdk.sock"),
        control_socket: dir.join("ctl.sock"),
        metrics_listen: None,
        bootstrap: None,
        cookie_threshold: 1000,
    }
}

/// The public keys of the peers in the segment's active generation.
fn segment_peer_keys(path: &Path) -> Vec<String> {
    use base64::Engine as _;
    let seg = Segment::open(path).unwrap();
    let r = seg.reader().unwrap();
    let (g, slot) = unpack_active(r.header().active.load(Ordering::SeqCst));
    if g == 0 {
        return Vec::new();
    }
    let v = r.slot_view(slot).unwrap();
    v.peers
        .iter()
        .zip(v.peer_keys)
        .filter(|(p, _)| p.id != 0)
        .map(|(_, k)| base64::engine::general_purpose::STANDARD.encode(k.public_key))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vrouterd_enrols_follows_the_sync_stream_and_publishes_the_nodes_of_its_cvlans() {
    let cp = Cp::start().await;
    let tid = cp
        .ok("POST", "/api/v1/tenants", Some(json!({"name": "acme"})))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cvlan = cp
        .ok(
            "POST",
            "/api/v1/tenants/acme/cvlans",
            Some(json!({"name": "x", "ipv4Prefix": "10.20.0.0/24"})),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let vr = cp
        .ok(
            "POST",
            "/api/v1/vrouters",
            Some(json!({"name": "gw1", "assignments": [{"tenantId": tid, "cvlanId": cvlan}]})),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let join = cp
        .ok(
            "POST",
            &format!("/api/v1/vrouters/{vr}/join-tokens"),
            Some(json!({})),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();

    // A node in the assigned CVLAN.
    let node_tok = cp
        .ok(
            "POST",
            "/api/v1/tenants/acme/tokens",
            Some(json!({"cvlanId": cvlan, "reusable": true})),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let adir = TempDir::new("agent");
    let mut acfg = AgentConfig::new(adir.0.join("state"));
    acfg.first_map_timeout = Duration::from_secs(10);
    let agent = Agent::new(acfg, Arc::new(MemoryFactory::default())).unwrap();
    agent
        .up(UpRequest {
            server: Some(cp.url()),
            auth_key: Some(node_tok),
            hostname: Some("a1".into()),
            ca_pem: None,
        })
        .await
        .expect("agent up");
    let a1 = agent.status().self_node.unwrap();

    let dir = TempDir::new("gw");
    let s = settings(&dir.0, &cp.url(), Some(join));
    let (stop, rx) = watch::channel(false);
    let d = tokio::spawn(daemon::run(s.clone(), rx));
    let sock = s.control_socket.clone();
    let st = eventually("vrouterd connected with a1 as its peer", async || {
        let st = ctl(&sock, "status").await?;
        (st["control"]["connected"] == true && st["peers"] == 1).then_some(st)
    })
    .await;
    assert_eq!(st["control"]["vrouter_id"], vr.as_str(), "{st}");
    assert!(st["generation"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["last_publish_ms"].as_f64().is_some(), "{st}");
    let peers = ctl(&sock, "peers").await.unwrap();
    assert_eq!(peers["peers"][0]["node_id"], a1.id.as_str(), "{peers}");
    assert_eq!(segment_peer_keys(&s.segment), vec![a1.public_key.clone()]);
    // The vrouter's key and endpoint reached the control plane.
    let v = cp.ok("GET", &format!("/api/v1/vrouters/{vr}"), None).await;
    assert_eq!(v["wgPublicKey"], st["public_key"], "{v}");
    assert_eq!(v["endpoint"], "10.255.0.1:51820", "{v}");
    // The identity is kept owner-only.
    use std::os::unix::fs::PermissionsExt as _;
    for f in ["wg.key", "machine.key", "client.crt", "vrouter.json"] {
        let m = std::fs::metadata(dir.0.join("state").join(f)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600, "{f}");
    }

    // Restart without a token: the stored identity reconnects; a node deletion follows.
    stop.send(true).unwrap();
    d.await.unwrap().unwrap();
    let s2 = settings(&dir.0, &cp.url(), None);
    let (stop, rx) = watch::channel(false);
    let d = tokio::spawn(daemon::run(s2, rx));
    eventually("vrouterd reconnected", async || {
        let st = ctl(&sock, "status").await?;
        (st["control"]["connected"] == true).then_some(())
    })
    .await;
    cp.ok(
        "DELETE",
        &format!("/api/v1/tenants/acme/nodes/{}", a1.id),
        None,
    )
    .await;
    eventually("a1 to leave the gateway's tables", async || {
        let st = ctl(&sock, "status").await?;
        (st["peers"] == 0 && segment_peer_keys(&s.segment).is_empty()).then_some(())
    })
    .await;
    stop.send(true).unwrap();
    d.await.unwrap().unwrap();
    agent.shutdown().await;
}
