//! `cvlan-bench netmap`: what one change costs the control plane when N nodes of one CVLAN
//! hold a Sync stream.
//!
//! Registers N nodes (real Register path: token, IPAM, client certificate), attaches each to
//! the network-map hub as a connected session, then measures, from the API call to the last
//! session's delta:
//! - `join`: one more node registers: every session gets one delta (the new peer entry plus
//!   its filter, recompiled once for the CVLAN under an allow-all policy).
//!
//! (Endpoint and policy changes are not measured yet.)
//!
//! Baseline in the same run: rebuilding every node's full map from scratch (what an
//! all-nodes × all-peers design does on each change), timed with the same world.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use comfy_table::Table;
use cvlan_api::netmap::{Hub, State, World};
use cvlan_api::secrets::Secret;
use cvlan_proto::v1 as pb;
use cvlan_store::{Store, entity, time};
use tokio::sync::{mpsc, watch};

/// Flags of `cvlan-bench netmap`.
#[derive(clap::Args)]
pub struct Args {
    /// Connected nodes in the CVLAN (comma-separated list of sizes).
    #[arg(long, value_delimiter = ',', default_value = "250,1000,2000")]
    nodes: Vec<usize>,
    /// Small run (seconds), for CI.
    #[arg(long)]
    quick: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(a))
}

type Rx = mpsc::Receiver<Result<pb::SyncResponse, tonic::Status>>;

fn wg_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

fn csr() -> anyhow::Result<String> {
    let k = rcgen::KeyPair::generate()?;
    Ok(rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&k)?
        .pem()?)
}

/// Waits until every receiver has one more message; returns the time since `t0`.
async fn all_receive(rxs: &mut [Rx], t0: Instant) -> anyhow::Result<Duration> {
    for rx in rxs.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(Ok(_))) => {}
            other => anyhow::bail!("a session got no update: {other:?}"),
        }
    }
    Ok(t0.elapsed())
}

async fn run_async(a: Args) -> anyhow::Result<()> {
    let sizes = if a.quick { vec![50] } else { a.nodes.clone() };
    let mut t = Table::new();
    t.set_header([
        "nodes",
        "join → all sessions",
        "full rebuild (baseline)",
        "join vs baseline",
    ]);
    for n in sizes {
        let r = one(n).await.with_context(|| format!("{n} nodes"))?;
        t.add_row([
            n.to_string(),
            format!("{:.1} ms", r.join.as_secs_f64() * 1e3),
            format!("{:.1} ms", r.rebuild.as_secs_f64() * 1e3),
            format!("{:.1}×", r.rebuild.as_secs_f64() / r.join.as_secs_f64()),
        ]);
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{t}");
    }
    Ok(())
}

struct Res {
    join: Duration,
    rebuild: Duration,
}

async fn one(n: usize) -> anyhow::Result<Res> {
    let dir = std::env::temp_dir().join(format!("cvlan-bench-netmap-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = Arc::new(Store::open(&format!("sqlite://{}", dir.join("b.db").display())).await?);
    let app = cvlan_api::build_app(store.clone(), cvlan_api::Mode::All, Default::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let svc = app.svc.clone();
    let e = |e: cvlan_api::ApiError| anyhow::anyhow!("{e}");
    svc.bootstrap_superadmin("bench@cvlan.local", Secret("bench-password".into()))
        .await
        .map_err(e)?;
    let (tok, _, _) = svc
        .login(
            "bench@cvlan.local",
            Secret("bench-password".into()),
            "bench",
        )
        .await
        .map_err(e)?;
    let p = svc.authenticate(&tok.0, "bench").await.map_err(e)?;
    let ten = svc
        .create::<pb::Tenant>(
            &p,
            None,
            pb::Tenant {
                name: "bench".into(),
                ..Default::default()
            },
        )
        .await
        .map_err(e)?;
    let cv = svc
        .create::<pb::Cvlan>(
            &p,
            Some(&ten.id),
            pb::Cvlan {
                name: "x".into(),
                ipv4_prefix: "10.64.0.0/16".into(),
                ..Default::default()
            },
        )
        .await
        .map_err(e)?;
    svc.create::<pb::Policy>(
        &p,
        Some(&ten.id),
        pb::Policy {
            name: "all".into(),
            rules: vec![pb::Rule {
                sources: vec![pb::Selector {
                    selector: Some(pb::selector::Selector::Any(true)),
                }],
                destinations: vec![pb::Selector {
                    selector: Some(pb::selector::Selector::Any(true)),
                }],
                action: pb::Action::Allow as i32,
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .await
    .map_err(e)?;
    let token = svc
        .create_token(
            &p,
            &ten.id,
            pb::RegistrationToken {
                cvlan_id: cv.id.clone(),
                reusable: true,
                ..Default::default()
            },
            3600,
        )
        .await
        .map_err(e)?
        .token;
    eprintln!("[{n}] registering {n} nodes");
    let mut set = tokio::task::JoinSet::new();
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let svc = svc.clone();
        let token = token.clone();
        let csr = csr()?;
        set.spawn(async move {
            svc.register_node(
                pb::RegisterRequest {
                    auth_key: token,
                    wg_public_key: wg_key(),
                    csr_pem: csr,
                    hostname: format!("n{i}"),
                    os: "linux".into(),
                },
                "bench",
            )
            .await
        });
        if set.len() >= 32
            && let Some(r) = set.join_next().await
        {
            nodes.push(r?.map_err(e)?.node.unwrap_or_default());
        }
    }
    while let Some(r) = set.join_next().await {
        nodes.push(r?.map_err(e)?.node.unwrap_or_default());
    }
    eprintln!("[{n}] attaching {n} sessions");
    let (_stop_tx, stop) = watch::channel(false);
    let hub = Hub::start(svc.clone(), stop);
    let mut rxs: Vec<Rx> = Vec::with_capacity(n);
    for node in &nodes {
        let (tx, mut rx) = mpsc::channel(64);
        hub.connect(node.clone(), 0, tx);
        // The snapshot.
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(Ok(_))) => {}
            other => anyhow::bail!("no snapshot: {other:?}"),
        }
        rxs.push(rx);
    }

    eprintln!("[{n}] measuring");
    // join
    let t0 = Instant::now();
    svc.register_node(
        pb::RegisterRequest {
            auth_key: token.clone(),
            wg_public_key: wg_key(),
            csr_pem: csr()?,
            hostname: "late".into(),
            os: "linux".into(),
        },
        "bench",
    )
    .await
    .map_err(e)?;
    let join = all_receive(&mut rxs, t0).await?;

    // Baseline: every node's full map rebuilt, with the same world.
    let mut c = store.pool().acquire().await?;
    let mut w = World::default();
    for node in entity::list_all::<pb::Node>(&mut c, entity::Scope::Tenant(&ten.id)).await? {
        w.members
            .entry(node.cvlan_id.clone())
            .or_default()
            .insert(node.id.clone());
        w.nodes.insert(node.id.clone(), node);
    }
    for pol in entity::list_all::<pb::Policy>(&mut c, entity::Scope::Tenant(&ten.id)).await? {
        w.policies.insert(pol.id.clone(), pol);
    }
    w.cvlans.insert(cv.id.clone(), cv);
    let now = time::now_micros();
    let t0 = Instant::now();
    let mut peers = 0;
    for node in w.nodes.values() {
        peers += State::build(&w, node, now).peers.len();
    }
    let rebuild = t0.elapsed();
    anyhow::ensure!(peers == (n + 1) * n, "baseline built {peers} peer entries");
    drop(hub);
    drop(c);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Res { join, rebuild })
}
