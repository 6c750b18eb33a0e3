//! Agents against the real control plane: cvlan-api in-process on a fresh SQLite database,
//! its node listener on 127.0.0.1 over TLS, admin actions through its REST router. The data
//! plane is the in-memory one (no TUN), so this runs without network namespaces; the
//! namespace end-to-end tests run the same binaries with real tunnels.
//!
//! Two parts: the library's `Agent` (join, peers appear, policy reaches the filter, delete,
//! restart) and the shipped binaries (`cvlan-agent --no-tun` + `cvlan`), whose messages and
//! exit codes the lab scripts rely on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use cvlan_agent::agent::{Agent, AgentConfig};
use cvlan_agent::ipc::{AgentState, ErrorCode, UpRequest};
use cvlan_agent::tunnel::MemoryFactory;
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceExt;

struct TempDir(PathBuf);

static N: AtomicU64 = AtomicU64::new(0);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "cvlan-agent-cp-{tag}-{}-{}",
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

/// cvlan-api in-process: REST router + node listener.
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
        let (_, v) = cp
            .call(
                "POST",
                "/api/v1/auth/login",
                Some(json!({"email": "root@cvlan.test", "password": "root-password-1"})),
            )
            .await;
        cp.root = v["token"].as_str().unwrap().to_string();
        cp
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
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
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert!((200..300).contains(&s), "{method} {path} → {s}: {v}");
        v
    }

    /// Tenant "acme" with CVLAN "x" (10.20.0.0/24); returns the CVLAN id.
    async fn tenant(&self) -> String {
        self.ok("POST", "/api/v1/tenants", Some(json!({"name": "acme"})))
            .await;
        self.ok(
            "POST",
            "/api/v1/tenants/acme/cvlans",
            Some(json!({"name": "x", "ipv4Prefix": "10.20.0.0/24"})),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn token(&self, cvlan: &str, reusable: bool) -> String {
        self.ok(
            "POST",
            "/api/v1/tenants/acme/tokens",
            Some(json!({"cvlanId": cvlan, "reusable": reusable})),
        )
        .await["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn url(&self) -> String {
        format!("https://{}", self.node_addr)
    }
}

fn agent(dir: &TempDir, dp: &MemoryFactory) -> Arc<Agent> {
    let mut cfg = AgentConfig::new(dir.0.join("state"));
    cfg.first_map_timeout = Duration::from_secs(10);
    cfg.tick = Duration::from_millis(200);
    Agent::new(cfg, Arc::new(dp.clone())).unwrap()
}

fn up(cp: &Cp, token: &str, host: &str) -> UpRequest {
    UpRequest {
        server: Some(cp.url()),
        auth_key: Some(token.into()),
        hostname: Some(host.into()),
        ca_pem: None,
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn peer_names(dp: &MemoryFactory) -> Vec<String> {
    dp.recorded().peers.into_iter().map(|p| p.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_join_see_each_other_get_policy_and_a_deleted_one_is_logged_out() {
    let cp = Cp::start().await;
    let x = cp.tenant().await;
    let tok = cp.token(&x, true).await;

    let (d1, d2) = (TempDir::new("a1"), TempDir::new("a2"));
    let (dp1, dp2) = (MemoryFactory::default(), MemoryFactory::default());
    let a1 = agent(&d1, &dp1);
    let a2 = agent(&d2, &dp2);
    a1.up(up(&cp, &tok, "a1")).await.expect("a1 up");
    let s1 = a1.status();
    assert_eq!(s1.state, AgentState::Running, "{s1:?}");
    assert!(s1.control.connected);
    let me1 = s1.self_node.unwrap();
    assert_eq!(me1.name, "a1");
    assert!(me1.addresses[0].starts_with("10.20.0.") && me1.addresses[0].ends_with("/24"));
    assert!(
        me1.addresses.iter().any(|a| a.contains(':')),
        "an IPv6 address too"
    );

    a2.up(up(&cp, &tok, "a2")).await.expect("a2 up");
    let me2 = a2.status().self_node.unwrap();
    let a2_ip = me2.addresses[0].split('/').next().unwrap().to_string();

    // a2 appears in a1's data plane by push, with its address and (after its report) its
    // endpoint on a2's real UDP port.
    eventually("a2 in a1's peers", || peer_names(&dp1) == ["a2"]).await;
    let port2 = me2.listen_port.unwrap();
    eventually("a2's endpoint at a1", || {
        dp1.recorded()
            .peers
            .first()
            .and_then(|p| p.endpoint)
            .is_some_and(|e| e.port() == port2)
    })
    .await;
    let p = &dp1.recorded().peers[0];
    assert!(
        p.allowed_ips.iter().any(|n| n.addr().to_string() == a2_ip),
        "{p:?}"
    );
    let st = a1.status();
    assert_eq!(st.peers.len(), 1);
    assert_eq!(st.peers[0].name, "a2");
    assert_eq!(st.peers[0].public_key, me2.public_key);
    assert_eq!(peer_names(&dp2), vec!["a1"]);

    // A policy reaches the filter of both without restarting anything.
    let before = dp1.recorded().filter.rules.len();
    cp.ok(
        "POST",
        "/api/v1/tenants/acme/policies",
        Some(json!({"name": "icmp", "rules": [{
            "sources": [{"any": true}], "destinations": [{"any": true}],
            "protocol": "PROTOCOL_ICMP", "action": "ACTION_ALLOW"}]})),
    )
    .await;
    eventually("the policy at a1", || {
        let f = dp1.recorded().filter;
        f.rules.len() > before
            && f.rules.iter().any(|r| {
                r.proto == cvlan_policy::Proto::Icmp && r.action == cvlan_policy::Action::Allow
            })
    })
    .await;
    assert_eq!(
        dp1.recorded().starts,
        1,
        "no data plane restart for a policy change"
    );

    // Deleting a2: gone from a1's map; a2 is told and tears its tunnels down.
    cp.ok(
        "DELETE",
        &format!("/api/v1/tenants/acme/nodes/{}", me2.id),
        None,
    )
    .await;
    eventually("a2 gone from a1", || peer_names(&dp1).is_empty()).await;
    eventually("a2 logged out", || {
        a2.status().state == AgentState::LoggedOut
    })
    .await;
    let m = a2.status().message;
    assert!(m.starts_with("logged out by the control plane"), "{m}");
    assert!(dp2.recorded().config.is_none());

    // Restarting a1 keeps its identity and address and reconnects by itself.
    a1.shutdown().await;
    let a1b = agent(&d1, &dp1);
    a1b.boot().await;
    eventually("a1 reconnected", || a1b.status().control.connected).await;
    let again = a1b.status().self_node.unwrap();
    assert_eq!(
        (again.id, again.addresses),
        (me1.id.clone(), me1.addresses.clone())
    );
    let nodes = cp.ok("GET", "/api/v1/tenants/acme/nodes", None).await;
    assert_eq!(nodes["items"].as_array().unwrap().len(), 1, "{nodes}");
    a1b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_and_revoked_tokens_are_refused_with_the_control_planes_message() {
    let cp = Cp::start().await;
    let x = cp.tenant().await;
    let once = cp.token(&x, false).await;
    let d = TempDir::new("tok");
    let dp = MemoryFactory::default();
    agent(&d, &dp)
        .up(up(&cp, &once, "b1"))
        .await
        .expect("first use");

    let d2 = TempDir::new("tok2");
    let b2 = agent(&d2, &dp);
    let e = b2.up(up(&cp, &once, "b2")).await.expect_err("replayed");
    assert!(e.message.contains("has already been used"), "{e}");
    assert_ne!(e.code, ErrorCode::Internal);

    let t = cp.token(&x, true).await;
    let items = cp.ok("GET", "/api/v1/tenants/acme/tokens", None).await;
    let id = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["reusable"] == json!(true))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    cp.ok(
        "POST",
        &format!("/api/v1/tenants/acme/tokens/{id}/revoke"),
        None,
    )
    .await;
    let e = b2.up(up(&cp, &t, "b2")).await.expect_err("revoked");
    assert!(e.message.contains("has been revoked"), "{e}");
    assert_eq!(b2.status().state, AgentState::NeedsLogin);
}

// ---------------------------------------------------------------- the binaries

struct Daemon {
    child: std::process::Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let socket = dir.join("run").join("cvlan.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_cvlan-agent"))
            .args(["--no-tun", "--log", "warn", "--state-dir"])
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Daemon { child, socket };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !d.socket.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "cvlan-agent did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// SIGTERM and wait: the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = self.child.wait().unwrap();
        std::mem::forget(self);
        st
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cvlan --socket S args…` off the runtime: (exit code, stdout, stderr).
async fn cvlan(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cvlan"));
    c.arg("--socket").arg(socket).args(args);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_the_daemon_with_clear_messages_and_exit_codes() {
    let cp = Cp::start().await;
    let x = cp.tenant().await;
    let once = cp.token(&x, false).await;
    let (d1, d2) = (TempDir::new("bin1"), TempDir::new("bin2"));
    let ag1 = Daemon::start(&d1.0);
    let ag2 = Daemon::start(&d2.0);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&ag1.socket).unwrap().permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600);

    let (code, out, _) = cvlan(&ag1.socket, &["status"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("needs-login"), "{out}");

    let url = cp.url();
    let (code, out, err) = cvlan(
        &ag1.socket,
        &[
            "up",
            "--server",
            &url,
            "--auth-key",
            &once,
            "--hostname",
            "c1",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("registered as c1"), "{out}");

    // The same single-use token again, from another device: the server's message, exit 1.
    let (code, out, err) = cvlan(
        &ag2.socket,
        &[
            "up",
            "--server",
            &url,
            "--auth-key",
            &once,
            "--hostname",
            "c2",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("registration token has already been used"),
        "{err}"
    );
    let (code, _, err) = cvlan(
        &ag2.socket,
        &["up", "--server", &url, "--auth-key", "garbage"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("malformed registration token"), "{err}");

    let (code, out, _) = cvlan(&ag1.socket, &["ip", "-4"]).await;
    assert_eq!(code, 0);
    let ip: std::net::IpAddr = out.trim().parse().expect("one IPv4 address");
    assert!(ip.to_string().starts_with("10.20.0."));
    let (code, out, _) = cvlan(&ag1.socket, &["ip", "-6"]).await;
    assert_eq!(code, 0);
    assert!(out.trim().parse::<std::net::Ipv6Addr>().is_ok(), "{out}");

    let (code, out, _) = cvlan(&ag1.socket, &["status", "--json"]).await;
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "running");
    assert_eq!(v["self"]["name"], "c1");
    assert_eq!(v["control"]["connected"], true);

    let (code, _, err) = cvlan(&ag1.socket, &["ping", "-c", "1", "nobody"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no peer named \"nobody\""), "{err}");

    // Restart: same node, reconnects without `up`.
    assert!(ag1.stop().success(), "SIGTERM is a clean exit");
    assert!(
        !d1.0.join("run").join("cvlan.sock").exists(),
        "socket removed"
    );
    let ag1 = Daemon::start(&d1.0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, out, _) = cvlan(&ag1.socket, &["status", "--json"]).await;
        let v: Value = serde_json::from_str(&out).unwrap();
        if v["control"]["connected"] == true {
            assert_eq!(
                v["self"]["addresses"][0]
                    .as_str()
                    .unwrap()
                    .split('/')
                    .next(),
                Some(ip.to_string().as_str())
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no reconnect: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (code, out, _) = cvlan(&ag1.socket, &["down"]).await;
    assert_eq!(code, 0, "{out}");
    let (_, out, _) = cvlan(&ag1.socket, &["status"]).await;
    assert!(out.contains("stopped"), "{out}");
    let (code, out, _) = cvlan(&ag1.socket, &["logout"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("logged out"), "{out}");
    let (_, out, _) = cvlan(&ag1.socket, &["status"]).await;
    assert!(out.contains("needs-login"), "{out}");
    drop(ag2);
    assert!(ag1.stop().success());

    // No daemon: a clear hint, exit 1.
    let (code, _, err) = cvlan(&d1.0.join("nothing.sock"), &["status"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("is cvlan-agent running"), "{err}");
}
