//! Test harness: a fresh database per test on every backend available (SQLite always;
//! PostgreSQL when CVLAN_TEST_POSTGRES_URL points at a server — required when CI is set),
//! and the real router driven in-process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod lab;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use cvlan_api::secrets::Secret;
use cvlan_api::{AppState, Mode};
use serde_json::Value;
use sqlx::Connection;
use tower::ServiceExt;

pub struct Db {
    pub name: &'static str,
    pub url: String,
}

pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A fresh database on each backend.
pub async fn databases() -> Vec<Db> {
    let dir = std::env::temp_dir().join(format!("cvlan-test-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut v = vec![Db {
        name: "sqlite",
        url: format!("sqlite://{}", dir.join("t.db").display()),
    }];
    match std::env::var("CVLAN_TEST_POSTGRES_URL") {
        Ok(admin) => {
            sqlx::any::install_default_drivers();
            let name = format!("cvlan_t_{}", &unique()[..20]);
            let mut c = sqlx::AnyConnection::connect(&admin)
                .await
                .expect("connect to PostgreSQL admin URL");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut c)
                .await
                .unwrap();
            let base = admin.rsplit_once('/').unwrap().0;
            v.push(Db {
                name: "postgres",
                url: format!("{base}/{name}"),
            });
        }
        Err(_) if std::env::var("CI").is_ok() => panic!("CI requires CVLAN_TEST_POSTGRES_URL"),
        Err(_) => eprintln!("note: CVLAN_TEST_POSTGRES_URL unset, PostgreSQL leg skipped"),
    }
    v
}

pub struct H {
    pub app: AppState,
    pub router: Router,
    pub root: String,
    pub db: &'static str,
}

pub const ROOT_EMAIL: &str = "root@cvlan.test";
pub const ROOT_PW: &str = "root-password-1";

impl H {
    pub async fn new(db: &Db) -> H {
        let store = Arc::new(cvlan_store::Store::open(&db.url).await.unwrap());
        let app = cvlan_api::build_app(store, Mode::All, Default::default())
            .await
            .unwrap();
        app.svc
            .bootstrap_superadmin(ROOT_EMAIL, Secret(ROOT_PW.into()))
            .await
            .unwrap();
        let router = cvlan_api::router(app.clone());
        let mut h = H {
            app,
            router,
            root: String::new(),
            db: db.name,
        };
        h.root = h.login(ROOT_EMAIL, ROOT_PW).await;
        h
    }

    pub async fn login(&self, email: &str, pw: &str) -> String {
        let (s, v) = self
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(serde_json::json!({"email": email, "password": pw})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "login {email}: {v}");
        v["token"].as_str().unwrap().to_string()
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.raw(method, path, token, body.map(|b| b.to_string()))
            .await
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(s) => b
                .header("content-type", "application/json")
                .body(Body::from(s))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 64 << 20)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    /// Root call that must succeed; returns the body.
    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, Some(&self.root), body).await;
        assert!(s.is_success(), "[{}] {method} {path} → {s}: {v}", self.db);
        v
    }

    /// Root call that must succeed; returns the `id` of the object it made.
    pub async fn ok_id(&self, method: &str, path: &str, body: Option<Value>) -> String {
        self.ok(method, path, body).await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn audit_count(&self) -> i64 {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_events")
            .fetch_one(self.app.svc.store.pool())
            .await
            .unwrap()
    }

    /// Creates a tenant, a CVLAN "lab" and one user per tenant role; returns their tokens
    /// as (admin, operator, viewer).
    pub async fn tenant_with_users(&self, tenant: &str, v4: &str) -> (String, String, String) {
        self.ok(
            "POST",
            "/api/v1/tenants",
            Some(serde_json::json!({"name": tenant})),
        )
        .await;
        self.ok(
            "POST",
            &format!("/api/v1/tenants/{tenant}/cvlans"),
            Some(serde_json::json!({"name": "lab", "ipv4Prefix": v4})),
        )
        .await;
        let mut toks = Vec::new();
        for role in ["ROLE_TENANT_ADMIN", "ROLE_OPERATOR", "ROLE_VIEWER"] {
            let email = format!("{}@{tenant}.test", role.to_lowercase().replace("role_", ""));
            self.ok(
                "POST",
                &format!("/api/v1/tenants/{tenant}/users"),
                Some(serde_json::json!({"email": email, "password": "password-123", "role": role})),
            )
            .await;
            toks.push(self.login(&email, "password-123").await);
        }
        (toks[0].clone(), toks[1].clone(), toks[2].clone())
    }
}

/// The router served over real HTTP/2 on loopback, with an AdminService client connected.
pub struct Grpc {
    pub client:
        cvlan_proto::v1::admin_service_client::AdminServiceClient<tonic::transport::Channel>,
    stop: tokio::sync::watch::Sender<bool>,
    srv: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl H {
    pub async fn grpc(&self) -> Grpc {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let srv = tokio::spawn(cvlan_api::server::serve(
            listener,
            self.router.clone(),
            None,
            rx,
        ));
        let client = cvlan_proto::v1::admin_service_client::AdminServiceClient::connect(format!(
            "http://{addr}"
        ))
        .await
        .unwrap();
        Grpc { client, stop, srv }
    }
}

impl Grpc {
    /// Stops the server and waits for it to drain.
    pub async fn stop(self) {
        drop(self.client);
        self.stop.send(true).unwrap();
        self.srv.await.unwrap().unwrap();
    }
}

/// A request carrying a bearer token.
pub fn auth<M>(t: &str, m: M) -> tonic::Request<M> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {t}").parse().unwrap());
    r
}
