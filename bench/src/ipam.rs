//! `cvlan-bench ipam`: address allocations per second at N concurrent clients.
//!
//! Three ways, each on a fresh CVLAN in the same run and database:
//! - `group-commit`: `Store::allocate`, the production path (queued requests folded into one
//!   transaction with one multi-row insert of addresses and audit events);
//! - `txn-per-alloc`: the baseline — the same work (version bump, lowest free, insert, audit
//!   event) in one transaction per allocation;
//! - `rest`: `POST …/addresses` through the whole in-process router (auth, RBAC, JSON).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ValueEnum;
use comfy_table::Table;
use cvlan_store::audit::{self, AuditRecord};
use cvlan_store::ipam::AllocRequest;
use cvlan_store::{Store, entity, time};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::task::JoinSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
    Both,
}

/// Flags of `cvlan-bench ipam`.
#[derive(clap::Args)]
pub struct Args {
    /// Backend(s) to measure.
    #[arg(long, value_enum, default_value = "both")]
    backend: Backend,
    /// PostgreSQL server URL with rights to create a database (a fresh one is made per run).
    #[arg(
        long,
        env = "CVLAN_BENCH_POSTGRES_URL",
        default_value = "postgres://cvlan:cvlan@127.0.0.1/postgres"
    )]
    postgres_url: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Allocations per client for the group-commit path (the others do a tenth, they are slow).
    #[arg(long, default_value_t = 250)]
    per_client: usize,
    /// Smaller run (a few seconds).
    #[arg(long)]
    quick: bool,
    /// Write results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(serde::Serialize)]
struct Row {
    backend: &'static str,
    method: &'static str,
    clients: usize,
    allocations: usize,
    per_sec: f64,
    p50_us: u64,
    p99_us: u64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(a))
}

async fn run_async(a: Args) -> anyhow::Result<()> {
    let per = if a.quick {
        a.per_client.min(20)
    } else {
        a.per_client
    };
    let mut rows = Vec::new();
    let dir = std::env::temp_dir().join(format!("cvlan-bench-ipam-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut urls = Vec::new();
    if matches!(a.backend, Backend::Sqlite | Backend::Both) {
        urls.push((
            "sqlite",
            format!("sqlite://{}", dir.join("bench.db").display()),
        ));
    }
    if matches!(a.backend, Backend::Postgres | Backend::Both) {
        urls.push(("postgres", fresh_pg(&a.postgres_url).await?));
    }
    for (name, url) in urls {
        let store = Arc::new(
            Store::open(&url)
                .await
                .with_context(|| format!("opening {name}"))?,
        );
        let tenant = setup_tenant(&store).await?;
        // A /14 holds 262,142 addresses: room for every method.
        let n = a.clients * per;
        if n > 200_000 {
            bail!("at most 200,000 allocations per method");
        }
        eprintln!("[{name}] group-commit: {} clients × {per}", a.clients);
        let cv = setup_cvlan(&store, &tenant, "gc", "10.0.0.0/14").await?;
        rows.push(
            measure(name, "group-commit", a.clients, per, {
                let store = store.clone();
                let (t, c) = (tenant.clone(), cv.clone());
                move || {
                    let store = store.clone();
                    let (t, c) = (t.clone(), c.clone());
                    async move {
                        store
                            .allocate(req(&t, &c))
                            .await
                            .map(|_| ())
                            .map_err(anyhow::Error::from)
                    }
                }
            })
            .await?,
        );
        let base_per = (per / 10).max(2);
        eprintln!(
            "[{name}] txn-per-alloc baseline: {} clients × {base_per}",
            a.clients
        );
        let cv = setup_cvlan(&store, &tenant, "naive", "10.4.0.0/14").await?;
        rows.push(
            measure(name, "txn-per-alloc", a.clients, base_per, {
                let store = store.clone();
                let (t, c) = (tenant.clone(), cv.clone());
                move || {
                    let store = store.clone();
                    let (t, c) = (t.clone(), c.clone());
                    async move { naive_allocate(&store, &t, &c).await }
                }
            })
            .await?,
        );
        eprintln!(
            "[{name}] rest (in-process router): {} clients × {base_per}",
            a.clients
        );
        let app = cvlan_api::build_app(store.clone(), cvlan_api::Mode::All, Default::default())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let email = format!("bench-{}@cvlan.test", std::process::id());
        app.svc
            .bootstrap_superadmin(&email, cvlan_api::secrets::Secret("bench-password".into()))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (tok, _, _) = app
            .svc
            .login(
                &email,
                cvlan_api::secrets::Secret("bench-password".into()),
                "bench",
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let router = cvlan_api::router(app);
        let cv = setup_cvlan(&store, &tenant, "rest", "10.8.0.0/14").await?;
        let path = format!("/api/v1/tenants/{tenant}/cvlans/{cv}/addresses");
        rows.push(
            measure(name, "rest", a.clients, base_per, {
                move || {
                    let router = router.clone();
                    let path = path.clone();
                    let tok = tok.0.clone();
                    async move {
                        use tower::ServiceExt;
                        let req = axum::http::Request::post(path)
                            .header("authorization", format!("Bearer {tok}"))
                            .header("content-type", "application/json")
                            .body(axum::body::Body::from("{}"))?;
                        let res = router.oneshot(req).await?;
                        if res.status() != axum::http::StatusCode::CREATED {
                            bail!("REST allocation failed: {}", res.status());
                        }
                        Ok(())
                    }
                }
            })
            .await?,
        );
        store.close().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut t = Table::new();
    t.set_header([
        "backend",
        "method",
        "clients",
        "allocations",
        "alloc/s",
        "p50 µs",
        "p99 µs",
        "vs txn-per-alloc",
    ]);
    for r in &rows {
        let base = rows
            .iter()
            .find(|b| b.backend == r.backend && b.method == "txn-per-alloc")
            .map_or(1.0, |b| b.per_sec);
        t.add_row([
            r.backend.to_string(),
            r.method.to_string(),
            r.clients.to_string(),
            r.allocations.to_string(),
            format!("{:.0}", r.per_sec),
            r.p50_us.to_string(),
            r.p99_us.to_string(),
            format!("{:.1}×", r.per_sec / base),
        ]);
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{t}");
    }
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_vec_pretty(&json!({ "rows": rows }))?)?;
    }
    Ok(())
}

fn req(tenant: &str, cvlan: &str) -> AllocRequest {
    AllocRequest {
        tenant_id: tenant.to_string(),
        cvlan_id: cvlan.to_string(),
        requested: None,
        node_id: String::new(),
        description: String::new(),
        audit: AuditRecord {
            actor_id: "bench".into(),
            actor: "bench".into(),
            tenant_id: tenant.to_string(),
            source_address: "bench".into(),
        },
    }
}

/// Runs `clients` tasks doing `per` sequential calls each; returns throughput and latency.
async fn measure<F, Fut>(
    backend: &'static str,
    method: &'static str,
    clients: usize,
    per: usize,
    f: F,
) -> anyhow::Result<Row>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let f = Arc::new(f);
    let bar = indicatif::ProgressBar::new((clients * per) as u64);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..clients {
        let f = f.clone();
        let bar = bar.clone();
        set.spawn(async move {
            let mut h = Histogram::<u64>::new(3)?;
            for _ in 0..per {
                let t = Instant::now();
                f().await?;
                h.record(t.elapsed().as_micros() as u64)?;
                bar.inc(1);
            }
            anyhow::Ok(h)
        });
    }
    let mut all = Histogram::<u64>::new(3)?;
    while let Some(r) = set.join_next().await {
        all.add(r??)?;
    }
    let el = start.elapsed().max(Duration::from_micros(1));
    bar.finish_and_clear();
    Ok(Row {
        backend,
        method,
        clients,
        allocations: clients * per,
        per_sec: (clients * per) as f64 / el.as_secs_f64(),
        p50_us: all.value_at_quantile(0.5),
        p99_us: all.value_at_quantile(0.99),
    })
}

/// The baseline: one transaction per allocation, same rows written.
async fn naive_allocate(store: &Store, tenant: &str, cvlan: &str) -> anyhow::Result<()> {
    let mut w = store.begin_write().await?;
    sqlx::query("UPDATE cvlans SET alloc_version = alloc_version + 1 WHERE id = $1")
        .bind(cvlan)
        .execute(w.conn())
        .await?;
    let next: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(host_offset), 0) + 1 FROM addresses WHERE cvlan_id = $1",
    )
    .bind(cvlan)
    .fetch_one(w.conn())
    .await?;
    let id = entity::new_id();
    let now = time::now_micros();
    sqlx::query(
        "INSERT INTO addresses (id, tenant_id, cvlan_id, name, body, host_offset, node_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, '', $7, $7)",
    )
    .bind(&id)
    .bind(tenant)
    .bind(cvlan)
    .bind(format!("o{next}"))
    .bind("{}")
    .bind(next)
    .bind(now)
    .execute(w.conn())
    .await?;
    audit::insert(
        w.conn(),
        &req(tenant, cvlan)
            .audit
            .event("address.create", "address", &id, json!({})),
    )
    .await?;
    w.commit().await?;
    Ok(())
}

async fn setup_tenant(store: &Store) -> anyhow::Result<String> {
    let t = cvlan_proto::v1::Tenant {
        id: entity::new_id(),
        name: format!("bench-{}", &entity::new_id()[24..]),
        ..Default::default()
    };
    let mut w = store.begin_write().await?;
    entity::insert(w.conn(), &t).await?;
    w.commit().await?;
    Ok(t.id)
}

async fn setup_cvlan(store: &Store, tenant: &str, name: &str, v4: &str) -> anyhow::Result<String> {
    let c = cvlan_proto::v1::Cvlan {
        id: entity::new_id(),
        tenant_id: tenant.to_string(),
        name: name.to_string(),
        ipv4_prefix: v4.to_string(),
        ipv6_prefix: String::new(),
        ..Default::default()
    };
    let mut w = store.begin_write().await?;
    entity::insert_with(
        w.conn(),
        &c,
        &[("ipv4_prefix", entity::Col::Text(v4.to_string()))],
    )
    .await?;
    w.commit().await?;
    Ok(c.id)
}

async fn fresh_pg(admin: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let name = format!("cvlan_bench_{}", std::process::id());
    let mut c = sqlx::AnyConnection::connect(admin)
        .await
        .context("connecting to PostgreSQL (set --postgres-url)")?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&mut c)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await?;
    let base = admin.rsplit_once('/').map_or(admin, |x| x.0);
    Ok(format!("{base}/{name}"))
}
