//! End-to-end tests of the `cvlanctl` binary against a real cvlan-api served in-process on
//! 127.0.0.1:0 over a fresh SQLite database per test.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use cvlan_api::secrets::Secret;
use serde_json::Value;

const ADMIN: &str = "admin@cvlan.test";
const ADMIN_PW: &str = "admin-password-1";

/// A unique scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "cvlanctl-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// cvlan-api on its own runtime thread; stopped (gracefully) on drop.
struct Server {
    url: String,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(dir: &Path) -> Self {
        Self::start_on(dir, false)
    }

    /// Starts on SQLite, or on a fresh PostgreSQL database when `postgres` (the server named by
    /// CVLAN_TEST_POSTGRES_URL).
    fn start_on(dir: &Path, postgres: bool) -> Self {
        let sqlite = format!("sqlite://{}", dir.join("cvlan.db").display());
        let (tx, rx) = std::sync::mpsc::channel::<(SocketAddr, tokio::sync::watch::Sender<bool>)>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let db = if postgres {
                    use sqlx::Connection;
                    sqlx::any::install_default_drivers();
                    let admin = std::env::var("CVLAN_TEST_POSTGRES_URL").unwrap();
                    let name = format!("cvlan_cli_{}_{}", std::process::id(), dir_tag());
                    let mut c = sqlx::AnyConnection::connect(&admin).await.unwrap();
                    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                        .execute(&mut c)
                        .await
                        .unwrap();
                    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
                } else {
                    sqlite
                };
                let store = Arc::new(cvlan_store::Store::open(&db).await.unwrap());
                let app = cvlan_api::build_app(
                    store.clone(),
                    cvlan_api::Mode::All,
                    cvlan_api::service::Config::default(),
                )
                .await
                .unwrap();
                app.svc
                    .bootstrap_superadmin(ADMIN, Secret(ADMIN_PW.into()))
                    .await
                    .unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                tx.send((listener.local_addr().unwrap(), stop_tx)).unwrap();
                cvlan_api::server::serve(listener, cvlan_api::router(app), None, stop_rx)
                    .await
                    .unwrap();
                store.close().await;
            });
        });
        let (addr, stop) = rx.recv().expect("server failed to start");
        Server {
            url: format!("http://{addr}"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One CLI user: its own config file.
struct Cli {
    config: PathBuf,
    home: PathBuf,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

impl Cli {
    fn new(dir: &Path, name: &str) -> Self {
        Cli {
            config: dir.join(name).join("cli.json"),
            home: dir.join(name),
        }
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cvlanctl"));
        c.env("CVLANCTL_CONFIG", &self.config)
            .env("HOME", &self.home)
            .env_remove("CVLANCTL_TOKEN")
            .env_remove("CVLANCTL_SERVER")
            .env_remove("CVLANCTL_PASSWORD")
            .args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let Output {
            status,
            stdout,
            stderr,
        } = c.output().unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8(stdout).unwrap(),
            stderr: String::from_utf8(stderr).unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// Runs and insists on success.
    fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "cvlanctl {args:?} failed:\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        r
    }

    /// Runs and insists on exit status 1 with `error: …msg…` on stderr and nothing on stdout.
    fn fails(&self, args: &[&str], msg: &str) -> Run {
        let r = self.run(args);
        assert_eq!(
            r.code, 1,
            "cvlanctl {args:?} should fail:\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        assert!(r.stderr.starts_with("error: "), "stderr: {}", r.stderr);
        assert!(r.stderr.contains(msg), "stderr lacks {msg:?}: {}", r.stderr);
        // The server's message itself, not its JSON envelope.
        assert!(
            !r.stderr.contains("\"code\"") && !r.stderr.contains("HTTP "),
            "stderr: {}",
            r.stderr
        );
        assert_eq!(r.stderr.lines().count(), 1, "stderr: {}", r.stderr);
        assert!(r.stdout.is_empty(), "stdout: {}", r.stdout);
        r
    }
}

fn items(v: &Value) -> &Vec<Value> {
    v["items"].as_array().expect("a list response")
}

fn dir_tag() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn an_admin_manages_a_tenant_end_to_end_through_the_cli() {
    admin_end_to_end(false);
}

#[test]
fn an_admin_manages_a_tenant_end_to_end_through_the_cli_on_postgres() {
    if std::env::var("CVLAN_TEST_POSTGRES_URL").is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "CI requires CVLAN_TEST_POSTGRES_URL"
        );
        eprintln!("note: CVLAN_TEST_POSTGRES_URL unset, PostgreSQL leg skipped");
        return;
    }
    admin_end_to_end(true);
}

fn admin_end_to_end(postgres: bool) {
    let dir = TempDir::new(if postgres { "e2e-pg" } else { "e2e" });
    let srv = Server::start_on(&dir.0, postgres);
    let admin = Cli::new(&dir.0, "admin");

    // Login keeps server and token in a private config file and never prints the token.
    let r = admin.ok(&[
        "--server",
        &srv.url,
        "login",
        "--email",
        ADMIN,
        "--password",
        ADMIN_PW,
    ]);
    assert!(r.stdout.contains("Logged in"), "{}", r.stdout);
    let mode = std::fs::metadata(&admin.config)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&admin.config).unwrap()).unwrap();
    let session = cfg["token"].as_str().unwrap().to_string();
    assert!(session.starts_with("cvs_"));
    assert_eq!(cfg["server"], srv.url.as_str());
    assert!(!r.stdout.contains(&session) && !r.stderr.contains(&session));
    assert!(!r.stdout.contains(ADMIN_PW));

    // Every later command finds the server in the config file.
    let r = admin.ok(&["whoami"]);
    assert!(
        r.stdout.contains(ADMIN) && r.stdout.contains("superadmin"),
        "{}",
        r.stdout
    );

    let r = admin.ok(&["tenant", "create", "acme", "--display-name", "Acme Corp"]);
    assert!(
        r.stdout.contains("acme") && r.stdout.contains("Acme Corp"),
        "{}",
        r.stdout
    );
    let r = admin.ok(&["tenant", "list", "--output", "json"]);
    let acme = items(&r.json())
        .iter()
        .find(|t| t["name"] == "acme")
        .expect("acme listed")
        .clone();
    let acme_id = acme["id"].as_str().unwrap().to_string();
    let r = admin.ok(&[
        "tenant",
        "update",
        "acme",
        "--display-name",
        "ACME",
        "-o",
        "json",
    ]);
    assert_eq!(r.json()["displayName"], "ACME");

    let r = admin.ok(&[
        "cvlan",
        "create",
        "--tenant",
        "acme",
        "lab",
        "--ipv4",
        "10.20.0.0/24",
        "--ipv6",
        "fd20::/64",
        "--mode",
        "mesh",
        "--description",
        "the lab",
        "--output",
        "json",
    ]);
    let lab = r.json();
    assert_eq!(lab["ipv4Prefix"], "10.20.0.0/24");
    assert_eq!(lab["ipv6Prefix"], "fd20::/64");
    assert_eq!(lab["mode"], "CVLAN_MODE_MESH");
    let lab_id = lab["id"].as_str().unwrap().to_string();

    // Bad input: the server's message, a non-zero exit, nothing created.
    admin.fails(
        &[
            "cvlan",
            "create",
            "--tenant",
            "acme",
            "bad",
            "--ipv4",
            "10.20.0.0/33",
        ],
        "is not an IPv4 CIDR prefix",
    );
    admin.fails(
        &[
            "cvlan",
            "create",
            "--tenant",
            "acme",
            "bad",
            "--ipv4",
            "10.20.0.1/24",
        ],
        "has host bits set",
    );
    admin.fails(
        &[
            "cvlan",
            "create",
            "--tenant",
            "acme",
            "dup",
            "--ipv4",
            "10.20.0.0/25",
        ],
        "overlaps",
    );
    let r = admin.ok(&["cvlan", "list", "--tenant", "acme", "-o", "json"]);
    assert_eq!(items(&r.json()).len(), 1);

    // Update sends only the given field; the tenant's id works as well as its name.
    let r = admin.ok(&[
        "cvlan",
        "update",
        "--tenant",
        &acme_id,
        "lab",
        "--description",
        "x",
        "-o",
        "json",
    ]);
    assert_eq!(r.json()["description"], "x");
    assert_eq!(r.json()["mode"], "CVLAN_MODE_MESH");
    let r = admin.ok(&["cvlan", "get", "--tenant", "acme", &lab_id]);
    assert!(
        r.stdout.contains("10.20.0.0/24") && r.stdout.contains("mesh"),
        "{}",
        r.stdout
    );

    let r = admin.ok(&[
        "user",
        "create",
        "--tenant",
        "acme",
        "--email",
        "v@acme.test",
        "--password",
        "viewer-pass-1",
        "--role",
        "viewer",
        "-o",
        "json",
    ]);
    let viewer = r.json();
    assert_eq!(viewer["role"], "ROLE_VIEWER");
    assert!(!r.stdout.contains("viewer-pass-1"));
    let viewer_id = viewer["id"].as_str().unwrap().to_string();
    let r = admin.ok(&[
        "user",
        "update",
        "--tenant",
        "acme",
        "v@acme.test",
        "--display-name",
        "Vic",
        "-o",
        "json",
    ]);
    assert_eq!(r.json()["displayName"], "Vic");
    assert_eq!(r.json()["role"], "ROLE_VIEWER");

    // Addresses: the lowest free one, a requested one, and a duplicate refused by the server.
    let r = admin.ok(&[
        "address", "create", "--tenant", "acme", "--cvlan", "lab", "-o", "json",
    ]);
    let auto = r.json()["address"].as_str().unwrap().to_string();
    assert!(auto.starts_with("10.20.0."), "{auto}");
    let r = admin.ok(&[
        "address",
        "create",
        "--tenant",
        "acme",
        "--cvlan",
        "lab",
        "--ip",
        "10.20.0.7",
    ]);
    assert!(r.stdout.contains("10.20.0.7"), "{}", r.stdout);
    admin.fails(
        &[
            "address",
            "create",
            "--tenant",
            "acme",
            "--cvlan",
            "lab",
            "--ip",
            "10.20.0.7",
        ],
        "address 10.20.0.7 is already allocated",
    );
    let r = admin.ok(&[
        "address", "list", "--tenant", "acme", "--cvlan", "lab", "-o", "json",
    ]);
    let listed = r.json();
    let addrs: Vec<&str> = items(&listed)
        .iter()
        .filter_map(|a| a["address"].as_str())
        .collect();
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    assert!(
        addrs.contains(&"10.20.0.7") && addrs.contains(&auto.as_str()),
        "{addrs:?}"
    );
    let r = admin.ok(&[
        "address",
        "get",
        "--tenant",
        "acme",
        "--cvlan",
        "lab",
        "10.20.0.7",
        "-o",
        "json",
    ]);
    assert_eq!(r.json()["cvlanId"], lab_id.as_str());
    let r = admin.ok(&[
        "address", "delete", "--tenant", "acme", "--cvlan", "lab", &auto,
    ]);
    assert!(r.stdout.contains("Deleted"), "{}", r.stdout);
    admin.fails(
        &[
            "address", "get", "--tenant", "acme", "--cvlan", "lab", &auto,
        ],
        "not found",
    );

    // Registration tokens: the secret is printed once, prominently; revocation sticks.
    let r = admin.ok(&[
        "token",
        "create",
        "--tenant",
        "acme",
        "--cvlan",
        "lab",
        "--reusable",
        "--expires",
        "2h",
        "--tag",
        "ci",
        "--tag",
        "dev",
    ]);
    assert!(r.stdout.contains("shown only once"), "{}", r.stdout);
    let secret = r
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cvt1."))
        .expect("token line")
        .to_string();
    assert!(secret.len() > 40, "{secret}");
    let r = admin.ok(&["token", "list", "--tenant", "acme", "-o", "json"]);
    let toks = items(&r.json()).clone();
    assert_eq!(toks.len(), 1);
    assert!(!r.stdout.contains(&secret), "token listed");
    let tok = &toks[0];
    assert_eq!(tok["reusable"], true);
    assert_eq!(tok["tags"], serde_json::json!(["ci", "dev"]));
    let tok_id = tok["id"].as_str().unwrap().to_string();
    let r = admin.ok(&["token", "revoke", "--tenant", "acme", &tok_id]);
    assert!(r.stdout.contains("Revoked"), "{}", r.stdout);
    let r = admin.ok(&["token", "get", "--tenant", "acme", &tok_id, "-o", "json"]);
    assert_eq!(r.json()["revoked"], true);
    admin.fails(
        &["token", "create", "--tenant", "acme", "--cvlan", "nope"],
        "does not exist",
    );

    // Groups and policies, rules parsed into proto JSON.
    let member = format!("user:{viewer_id}");
    let r = admin.ok(&[
        "group", "create", "--tenant", "acme", "eng", "--member", &member, "--member", "tag:dev",
        "-o", "json",
    ]);
    assert_eq!(
        r.json()["members"],
        serde_json::json!([{"userId": viewer_id}, {"tag": "dev"}])
    );
    let rule = "src=group:eng dst=tag:db proto=tcp ports=5432,8000-8100 action=allow";
    let r = admin.ok(&[
        "policy",
        "create",
        "--tenant",
        "acme",
        "db-access",
        "--rule",
        rule,
        "--rule",
        "src=any dst=any action=deny",
        "--priority",
        "10",
        "-o",
        "json",
    ]);
    let p = r.json();
    assert_eq!(p["priority"], 10);
    assert_eq!(
        p["rules"][0],
        serde_json::json!({
            "sources": [{"group": "eng"}], "destinations": [{"tag": "db"}], "protocol": "PROTOCOL_TCP",
            "ports": [{"first": 5432, "last": 5432}, {"first": 8000, "last": 8100}], "action": "ACTION_ALLOW",
        })
    );
    let r = admin.ok(&["policy", "get", "--tenant", "acme", "db-access"]);
    assert!(r.stdout.contains(rule), "{}", r.stdout);
    admin.fails(
        &[
            "policy",
            "create",
            "--tenant",
            "acme",
            "ghost",
            "--rule",
            "src=group:ghosts dst=any action=allow",
        ],
        "does not exist",
    );
    admin.fails(
        &["group", "delete", "--tenant", "acme", "eng"],
        "is used by policy",
    );

    // Global objects; vrouter assignments by name are sent as ids.
    let r = admin.ok(&[
        "region",
        "create",
        "eu",
        "--description",
        "Europe",
        "-o",
        "json",
    ]);
    let eu_id = r.json()["id"].as_str().unwrap().to_string();
    let r = admin.ok(&[
        "relay",
        "create",
        "r1",
        "--region",
        "eu",
        "--endpoint",
        "relay.example.test:3478",
        "-o",
        "json",
    ]);
    assert_eq!(r.json()["endpoint"], "relay.example.test:3478");
    assert_eq!(r.json()["regionId"], eu_id.as_str());
    let r = admin.ok(&[
        "vrouter",
        "create",
        "vr1",
        "--region",
        "eu",
        "--endpoint",
        "192.0.2.1:51820",
        "--assign",
        "acme/lab",
        "-o",
        "json",
    ]);
    assert_eq!(
        r.json()["assignments"],
        serde_json::json!([{"tenantId": acme_id, "cvlanId": lab_id}])
    );
    let r = admin.ok(&["vrouter", "update", "vr1", "--no-assignments", "-o", "json"]);
    assert!(
        r.json()
            .get("assignments")
            .is_none_or(|a| a.as_array().is_some_and(Vec::is_empty)),
        "{}",
        r.stdout
    );
    admin.fails(&["region", "delete", "eu"], "still has");
    let r = admin.ok(&["vrouter", "list"]);
    assert!(
        r.stdout.contains("vr1") && r.stdout.contains("192.0.2.1:51820"),
        "{}",
        r.stdout
    );
    // A join token: only the token on stdout (scriptable), the expiry on stderr.
    let r = admin.ok(&["vrouter", "join-token", "vr1", "--ttl", "2h"]);
    let tok = r.stdout.trim();
    assert!(
        tok.starts_with("cvt1.") && !tok.contains('\n'),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("expires"), "{}", r.stderr);
    assert!(!r.stderr.contains(tok));
    let r = admin.ok(&["vrouter", "join-token", "vr1", "-o", "json"]);
    assert!(r.json()["token"].as_str().unwrap().starts_with("cvt1."));
    assert!(r.json()["expiresAt"].is_string());
    admin.fails(&["vrouter", "join-token", "vr1", "--ttl", "8d"], "7 days");
    admin.fails(&["vrouter", "join-token", "nope"], "not found");

    // Static external WireGuard peers of a CVLAN.
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let r = admin.ok(&[
        "external-peer",
        "create",
        "--tenant",
        "acme",
        "--cvlan",
        "lab",
        "site-a",
        "--public-key",
        key,
        "--allowed-ip",
        "192.168.50.0/24",
        "--endpoint",
        "192.0.2.9:51820",
        "-o",
        "json",
    ]);
    assert_eq!(
        r.json()["allowedIps"],
        serde_json::json!(["192.168.50.0/24"])
    );
    admin.fails(
        &[
            "external-peer",
            "create",
            "--tenant",
            "acme",
            "--cvlan",
            "lab",
            "site-b",
            "--public-key",
            key,
            "--allowed-ip",
            "192.168.50.7/24",
        ],
        "host bits",
    );
    admin.ok(&[
        "external-peer",
        "update",
        "--tenant",
        "acme",
        "site-a",
        "--allowed-ip",
        "192.168.51.0/24",
    ]);
    let r = admin.ok(&["external-peer", "list", "--tenant", "acme"]);
    assert!(
        r.stdout.contains("site-a") && r.stdout.contains("192.168.51.0/24"),
        "{}",
        r.stdout
    );
    admin.ok(&["external-peer", "delete", "--tenant", "acme", "site-a"]);

    // Single sign-on providers: the client secret comes from the environment and never back.
    let secret = "sso-client-secret-4711-abcdef";
    let r = admin.run_env(
        &[
            "sso",
            "create",
            "--tenant",
            "acme",
            "corp",
            "--issuer",
            "https://idp.example.com",
            "--client-id",
            "cvlan",
            "--client-secret-from-env",
            "--allowed-domain",
            "example.com",
            "--default-role",
            "operator",
            "-o",
            "json",
        ],
        &[("CVLAN_SSO_CLIENT_SECRET", secret)],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["clientSecretSet"], true);
    assert_eq!(r.json()["defaultRole"], "ROLE_OPERATOR");
    assert!(!r.stdout.contains(secret));
    admin.fails(
        &[
            "sso",
            "create",
            "--tenant",
            "acme",
            "plain",
            "--issuer",
            "http://idp.example.com",
            "--client-id",
            "x",
        ],
        "https",
    );
    // Usage errors exit 2 before any request.
    for (args, msg) in [
        (
            &[
                "sso",
                "create",
                "--tenant",
                "acme",
                "other",
                "--issuer",
                "https://idp.example.com",
                "--client-id",
                "x",
                "--client-secret-from-env",
            ][..],
            "CVLAN_SSO_CLIENT_SECRET",
        ),
        (
            &["sso", "update", "--tenant", "acme", "corp"][..],
            "nothing to update",
        ),
    ] {
        let r = admin.run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(msg), "{}", r.stderr);
    }
    admin.ok(&[
        "sso",
        "update",
        "--tenant",
        "acme",
        "corp",
        "--disable",
        "--display-name",
        "Corp",
    ]);
    let r = admin.ok(&["sso", "list", "--tenant", "acme"]);
    assert!(
        r.stdout.contains("corp") && r.stdout.contains("set") && r.stdout.contains("no"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains(secret));
    admin.ok(&["sso", "delete", "--tenant", "acme", "corp"]);
    admin.fails(
        &["node", "expire", "--tenant", "acme", "no-such-node"],
        "not found",
    );

    // The audit log shows what was done, filtered, paged and exported.
    let r = admin.ok(&["audit", "list", "--tenant", "acme", "--output", "json"]);
    let actions: Vec<String> = items(&r.json())
        .iter()
        .filter_map(|e| e["action"].as_str().map(String::from))
        .collect();
    for want in [
        "cvlan.create",
        "cvlan.update",
        "user.create",
        "address.create",
        "address.delete",
        "token.create",
        "token.revoke",
        "group.create",
        "policy.create",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} missing from {actions:?}"
        );
    }
    let r = admin.ok(&[
        "audit",
        "list",
        "--tenant",
        "acme",
        "--action",
        "cvlan.create",
        "--since",
        "1h",
        "-o",
        "json",
    ]);
    let evs = items(&r.json()).clone();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["targetId"], lab_id.as_str());
    let r = admin.ok(&["audit", "list", "--page-size", "3", "--all", "-o", "json"]);
    assert!(
        items(&r.json()).len() > actions.len(),
        "the global log holds more than acme's"
    );
    let r = admin.ok(&["audit", "list", "--tenant", "acme", "--page-size", "2"]);
    assert!(r.stderr.contains("--page-token"), "{}", r.stderr);
    let r = admin.ok(&["audit", "export", "--tenant", "acme", "--format", "csv"]);
    let mut lines = r.stdout.lines();
    assert_eq!(
        lines.next(),
        Some(
            "id,time,actor_id,actor,tenant_id,action,target_type,target_id,source_address,summary"
        )
    );
    assert!(
        lines.clone().any(|l| l.contains(",cvlan.create,")),
        "{}",
        r.stdout
    );
    assert_eq!(lines.count(), actions.len());
    let file = dir.0.join("audit.jsonl");
    admin.ok(&[
        "audit",
        "export",
        "--tenant",
        "acme",
        "--file",
        file.to_str().unwrap(),
    ]);
    let exported = std::fs::read_to_string(&file).unwrap();
    assert_eq!(exported.lines().count(), actions.len());
    for l in exported.lines() {
        let e: Value = serde_json::from_str(l).unwrap();
        assert!(e["action"].is_string());
    }

    // A viewer can read but not write, and sees the server's refusal.
    let viewer = Cli::new(&dir.0, "viewer");
    viewer.ok(&[
        "--server",
        &srv.url,
        "login",
        "--email",
        "v@acme.test",
        "--password",
        "viewer-pass-1",
    ]);
    let r = viewer.ok(&["cvlan", "list", "--tenant", "acme"]);
    assert!(r.stdout.contains("lab"), "{}", r.stdout);
    viewer.fails(
        &[
            "cvlan",
            "create",
            "--tenant",
            "acme",
            "lab2",
            "--ipv4",
            "10.30.0.0/24",
        ],
        "permission denied",
    );
    viewer.fails(
        &["address", "create", "--tenant", "acme", "--cvlan", "lab"],
        "permission denied",
    );
    viewer.fails(&["tenant", "create", "evil"], "permission denied");
    viewer.fails(
        &[
            "--server",
            &srv.url,
            "login",
            "--email",
            "v@acme.test",
            "--password",
            "wrong-password",
        ],
        "invalid email or password",
    );

    // A token from the environment or --token works without any saved session.
    let anon = Cli::new(&dir.0, "anon");
    anon.fails(&["--server", &srv.url, "whoami"], "authentication required");
    let r = anon.run_env(
        &["--server", &srv.url, "whoami", "-o", "json"],
        &[("CVLANCTL_TOKEN", &session)],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["user"]["email"], ADMIN);
    let r = anon.ok(&["--server", &srv.url, "--token", &session, "region", "list"]);
    assert!(r.stdout.contains("eu"), "{}", r.stdout);

    // Deletes, then logout forgets the session (and the server ends it).
    admin.ok(&["policy", "delete", "--tenant", "acme", "db-access"]);
    admin.ok(&["group", "delete", "--tenant", "acme", "eng"]);
    admin.ok(&["user", "delete", "--tenant", "acme", &viewer_id]);
    admin.fails(
        &["user", "get", "--tenant", "acme", &viewer_id],
        "not found",
    );
    let r = admin.ok(&["logout"]);
    assert!(r.stdout.contains("Logged out"), "{}", r.stdout);
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&admin.config).unwrap()).unwrap();
    assert!(cfg.get("token").is_none(), "{cfg}");
    admin.fails(&["whoami"], "authentication required");
    anon.fails(
        &["--server", &srv.url, "--token", &session, "whoami"],
        "authentication required",
    );
}

#[test]
fn superadmins_are_created_without_a_tenant_and_roles_are_checked_locally() {
    let dir = TempDir::new("roles");
    let srv = Server::start(&dir.0);
    let cli = Cli::new(&dir.0, "a");
    cli.ok(&[
        "--server",
        &srv.url,
        "login",
        "--email",
        ADMIN,
        "--password",
        ADMIN_PW,
    ]);
    let r = cli.ok(&[
        "user",
        "create",
        "--email",
        "root2@cvlan.test",
        "--password",
        "another-pass-1",
        "--role",
        "superadmin",
        "-o",
        "json",
    ]);
    assert_eq!(r.json()["role"], "ROLE_SUPERADMIN");
    let r = cli.ok(&["user", "list", "-o", "json"]);
    assert_eq!(items(&r.json()).len(), 2);
    cli.ok(&["tenant", "create", "acme"]);
    let r = cli.run(&[
        "user",
        "create",
        "--tenant",
        "acme",
        "--email",
        "x@acme.test",
        "--password",
        "another-pass-1",
        "--role",
        "superadmin",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("drop --tenant"), "{}", r.stderr);
    let r = cli.run(&[
        "user",
        "create",
        "--email",
        "x@acme.test",
        "--password",
        "another-pass-1",
        "--role",
        "admin",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = cli.ok(&[
        "user",
        "create",
        "--tenant",
        "acme",
        "--email",
        "op@acme.test",
        "--password",
        "another-pass-1",
        "--role",
        "operator",
        "-o",
        "json",
    ]);
    assert_eq!(r.json()["role"], "ROLE_OPERATOR");
    let r = cli.ok(&[
        "user",
        "update",
        "--tenant",
        "acme",
        "op@acme.test",
        "--role",
        "admin",
        "-o",
        "json",
    ]);
    assert_eq!(r.json()["role"], "ROLE_TENANT_ADMIN");
    cli.fails(
        &[
            "user",
            "create",
            "--tenant",
            "acme",
            "--email",
            "y@acme.test",
            "--password",
            "short",
            "--role",
            "viewer",
        ],
        "password",
    );
}

#[test]
fn usage_errors_exit_2_before_any_request() {
    let dir = TempDir::new("usage");
    let cli = Cli::new(&dir.0, "u");
    // No server runs here: these must fail in argument parsing.
    for args in [
        &[
            "policy",
            "create",
            "--tenant",
            "a",
            "p",
            "--rule",
            "src=any dst=any",
        ][..],
        &[
            "token",
            "create",
            "--tenant",
            "a",
            "--cvlan",
            "b",
            "--expires",
            "soon",
        ],
        &[
            "user",
            "create",
            "--tenant",
            "a",
            "--email",
            "e",
            "--password",
            "p",
            "--role",
            "root",
        ],
        &[
            "group", "create", "--tenant", "a", "g", "--member", "team:x",
        ],
        &["cvlan", "update", "--tenant", "a", "lab"],
        &["cvlan", "frobnicate"],
        &["--output", "yaml", "tenant", "list"],
    ] {
        let r = cli.run(
            &["--server", "http://127.0.0.1:9", args[0]]
                .into_iter()
                .chain(args[1..].iter().copied())
                .collect::<Vec<_>>(),
        );
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(
            !r.stderr.contains("cannot reach"),
            "{args:?} reached for the network: {}",
            r.stderr
        );
    }
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let dir = TempDir::new("down");
    let cli = Cli::new(&dir.0, "d");
    let r = cli.fails(
        &["--server", "http://127.0.0.1:9", "tenant", "list"],
        "cannot reach http://127.0.0.1:9",
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    cli.fails(&["--server", "not a url", "tenant", "list"], "is not a URL");
}
