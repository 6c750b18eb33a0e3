//! Gateways end to end in-process over real TLS: vrouter join tokens (superadmin only, single
//! use, expiry, never stored or audited), Enrol (key, endpoint, a vrouter certificate that is
//! never a node certificate), the GatewayService Sync stream (snapshot content for two tenants
//! with overlapping prefixes, updates after policy and node changes, end on delete) and node
//! maps of hub-and-spoke CVLANs. SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use common::lab::*;
use common::{H, auth, databases};
use cvlan_proto::v1 as pb;
use cvlan_proto::v1::gateway_service_client::GatewayServiceClient;
use cvlan_proto::v1::node_service_client::NodeServiceClient;
use serde_json::{Value, json};
use tonic::Code;

type GwStream = tonic::Streaming<pb::GatewaySyncResponse>;

async fn tenant(h: &H, name: &str, v4: &str) -> (String, String) {
    let t = h
        .ok_id("POST", "/api/v1/tenants", Some(json!({"name": name})))
        .await;
    let cv = h
        .ok_id(
            "POST",
            &format!("/api/v1/tenants/{name}/cvlans"),
            Some(json!({"name": "lab", "ipv4Prefix": v4})),
        )
        .await;
    (t, cv)
}

async fn vrouter(h: &H, name: &str, assignments: Value) -> String {
    h.ok_id(
        "POST",
        "/api/v1/vrouters",
        Some(json!({"name": name, "assignments": assignments})),
    )
    .await
}

async fn join_token(h: &H, vr: &str, body: Value) -> String {
    h.ok(
        "POST",
        &format!("/api/v1/vrouters/{vr}/join-tokens"),
        Some(body),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn enrol(
    l: &Lab,
    d: &mut Dev,
    token: &str,
    endpoint: &str,
) -> Result<pb::EnrolResponse, tonic::Status> {
    let mut c = GatewayServiceClient::new(channel(l, None).await);
    let r = c
        .enrol(pb::EnrolRequest {
            join_token: token.into(),
            wg_public_key: d.wg.clone(),
            csr_pem: d.csr(),
            endpoint: endpoint.into(),
        })
        .await?
        .into_inner();
    assert_eq!(r.ca_pem, l.ca_pem);
    d.cert = Some(r.certificate_pem.clone());
    Ok(r)
}

async fn gw_sync(l: &Lab, d: &Dev) -> Result<GwStream, tonic::Status> {
    let mut c = GatewayServiceClient::new(channel(l, Some(d)).await);
    Ok(c.sync(pb::GatewaySyncRequest { since_version: 0 })
        .await?
        .into_inner())
}

async fn tables(s: &mut GwStream) -> pb::GatewayTables {
    let m = tokio::time::timeout(Duration::from_millis(1500), s.message())
        .await
        .expect("gateway tables within 1.5 s")
        .unwrap()
        .unwrap();
    match m.update.unwrap() {
        pb::gateway_sync_response::Update::Snapshot(t) => t,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

/// Reads snapshots until one satisfies `f` (a change may come as more than one update); its
/// version must be above `version`, which is moved up to it.
async fn tables_after(
    s: &mut GwStream,
    version: &mut u64,
    f: impl Fn(&pb::GatewayTables) -> bool,
) -> pb::GatewayTables {
    for _ in 0..5 {
        let t = tables(s).await;
        assert!(t.version > *version, "versions increase");
        *version = t.version;
        if f(&t) {
            return t;
        }
    }
    panic!("no matching gateway tables");
}

async fn set_mode(h: &H, mode: &str) -> Value {
    h.ok(
        "PATCH",
        "/api/v1/tenants/acme/cvlans/lab",
        Some(json!({"mode": mode})),
    )
    .await
}

async fn node_token(h: &H, tenant: &str, cvlan: &str) -> String {
    h.ok(
        "POST",
        &format!("/api/v1/tenants/{tenant}/tokens"),
        Some(json!({"cvlanId": cvlan, "reusable": true})),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Everything the API logs on this thread (tests run on a current-thread runtime, so the
/// server's tasks log here too).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

#[tokio::test]
async fn join_tokens_are_superadmin_only_single_use_expiring_and_never_kept_in_clear() {
    let logs = Logs::default();
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_env_filter("cvlan_api=trace,cvlan_store=trace,tower_http=trace,info")
            .finish(),
    );
    for db in databases().await {
        let l = lab(&db).await;
        let h = &l.h;
        let (tid, cv) = tenant(h, "acme", "10.20.0.0/24").await;
        let (admin, _, _) = {
            // tenant_with_users creates its own tenant; use a second one for the admin.
            h.tenant_with_users("other", "10.30.0.0/24").await
        };
        let vr = vrouter(h, "gw1", json!([{"tenantId": tid}])).await;

        // Only superadmins: a tenant admin is refused over REST and gRPC.
        let (s, v) = h
            .call(
                "POST",
                &format!("/api/v1/vrouters/{vr}/join-tokens"),
                Some(&admin),
                Some(json!({})),
            )
            .await;
        assert!(
            s == StatusCode::FORBIDDEN || s == StatusCode::NOT_FOUND,
            "{s} {v}"
        );
        let g = h.grpc().await;
        let mut c = g.client.clone();
        let e = c
            .create_vrouter_join_token(auth(
                &admin,
                pb::CreateVrouterJoinTokenRequest {
                    vrouter: vr.clone(),
                    ttl_seconds: 0,
                },
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(e.code(), Code::PermissionDenied | Code::NotFound),
            "{e:?}"
        );
        let by_grpc = c
            .create_vrouter_join_token(auth(
                &h.root,
                pb::CreateVrouterJoinTokenRequest {
                    vrouter: "gw1".into(),
                    ttl_seconds: 600,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(by_grpc.token.starts_with("cvt1."));
        let left = cvlan_store::time::micros(by_grpc.expires_at.as_ref().unwrap())
            - cvlan_store::time::now_micros();
        assert!((590_000_000..=600_000_000).contains(&left), "{left}");
        g.stop().await;

        // Lifetime: default 1 h, at most 7 days.
        let v = h
            .ok(
                "POST",
                &format!("/api/v1/vrouters/{vr}/join-tokens"),
                Some(json!({})),
            )
            .await;
        let token = v["token"].as_str().unwrap().to_string();
        let exp = chrono_secs(&v["expiresAt"]);
        let now = cvlan_store::time::now_micros() / 1_000_000;
        assert!((3590..=3600).contains(&(exp - now)), "{v}");
        let (s, _) = h
            .call(
                "POST",
                &format!("/api/v1/vrouters/{vr}/join-tokens"),
                Some(&h.root),
                Some(json!({"ttlSeconds": 8 * 86400})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);

        // Bad input is refused without using the token up.
        let mut d = dev();
        let e = enrol(&l, &mut d, &token, "gw.example:51820")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let mut bad = dev();
        bad.wg = "nope".into();
        let e = enrol(&l, &mut bad, &token, "10.255.0.1:51820")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

        // Enrol stores key and endpoint and hands out a vrouter certificate.
        let r = enrol(&l, &mut d, &token, "10.255.0.1:51820").await.unwrap();
        let got = r.vrouter.unwrap();
        assert_eq!(got.id, vr);
        assert_eq!(got.wg_public_key, d.wg);
        assert_eq!(got.endpoint, "10.255.0.1:51820");
        let stored = h.ok("GET", &format!("/api/v1/vrouters/{vr}"), None).await;
        assert_eq!(stored["endpoint"], "10.255.0.1:51820");
        assert_eq!(stored["wgPublicKey"], d.wg.as_str());
        assert!(r.certificate_expires_at.is_some());

        // Single use.
        let e = enrol(&l, &mut dev(), &token, "10.255.0.2:51820")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert!(e.message().contains("already been used"), "{}", e.message());

        // Expiry, malformed, and the wrong kind of token either way.
        let short = join_token(h, &vr, json!({"ttlSeconds": 1})).await;
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let e = enrol(&l, &mut dev(), &short, "10.255.0.1:51820")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert!(e.message().contains("expired"), "{}", e.message());
        let e = enrol(&l, &mut dev(), "cvt1.garbage.sig", "10.255.0.1:51820")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert!(e.message().contains("malformed"), "{}", e.message());
        let reg = node_token(h, "acme", &cv).await;
        let e = enrol(&l, &mut dev(), &reg, "10.255.0.1:51820")
            .await
            .unwrap_err();
        assert!(
            e.message().contains("not a vrouter join token"),
            "{}",
            e.message()
        );
        let unused = join_token(h, &vr, json!({})).await;
        let e = register(&l, &mut dev(), &unused, "n").await.unwrap_err();
        assert!(
            e.message().contains("not a registration token"),
            "{}",
            e.message()
        );
        // A deleted vrouter's outstanding token is refused.
        let vr2 = vrouter(h, "gw2", json!([])).await;
        let t2 = join_token(h, &vr2, json!({})).await;
        h.ok("DELETE", &format!("/api/v1/vrouters/{vr2}"), None)
            .await;
        let e = enrol(&l, &mut dev(), &t2, "10.255.0.9:51820")
            .await
            .unwrap_err();
        assert!(e.message().contains("revoked"), "{}", e.message());
        // One enrolment ends the vrouter's other outstanding tokens.
        let vr3 = vrouter(h, "gw3", json!([])).await;
        let first = join_token(h, &vr3, json!({})).await;
        let second = join_token(h, &vr3, json!({})).await;
        enrol(&l, &mut dev(), &first, "10.255.0.10:51820")
            .await
            .unwrap();
        let e = enrol(&l, &mut dev(), &second, "10.255.0.11:51820")
            .await
            .unwrap_err();
        assert!(e.message().contains("already been used"), "{}", e.message());

        // Deleting a CVLAN drops the assignments naming it.
        let spare = h
            .ok_id(
                "POST",
                "/api/v1/tenants/acme/cvlans",
                Some(json!({"name": "spare", "ipv4Prefix": "10.21.0.0/24"})),
            )
            .await;
        h.ok(
            "PATCH",
            &format!("/api/v1/vrouters/{vr}"),
            Some(json!({"assignments": [{"tenantId": tid}, {"tenantId": tid, "cvlanId": spare}]})),
        )
        .await;
        h.ok("DELETE", "/api/v1/tenants/acme/cvlans/spare", None)
            .await;
        let v = h.ok("GET", &format!("/api/v1/vrouters/{vr}"), None).await;
        assert_eq!(v["assignments"], json!([{"tenantId": tid}]));

        // The token strings are nowhere: not in the audit log, not in the database, not in
        // the vrouter; creation and enrolment are audited.
        let audit = h
            .ok("GET", "/api/v1/audit?pageSize=1000", None)
            .await
            .to_string();
        for t in [&token, &by_grpc.token, &short, &unused, &first, &second] {
            let sig = t.rsplit_once('.').unwrap().1;
            assert!(!audit.contains(sig), "token in the audit log");
            assert!(!stored.to_string().contains(sig));
        }
        assert!(audit.contains("vrouter.join_token.create"));
        assert!(audit.contains("vrouter.enrol"));
        let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
        assert!(
            logged.contains("vrouter enrolment refused"),
            "the logs were captured"
        );
        for t in [&token, &by_grpc.token, &short, &unused] {
            assert!(
                !logged.contains(t.rsplit_once('.').unwrap().1),
                "token in the logs"
            );
        }
        let rows: Vec<(String,)> = sqlx::query_as("SELECT token_hash FROM vrouter_join_tokens")
            .fetch_all(h.app.svc.store.pool())
            .await
            .unwrap();
        // gw1's four and gw3's two; the deleted gw2's went with it.
        assert_eq!(rows.len(), 6, "the deleted vrouter's token went with it");
        for (hash,) in rows {
            assert_eq!(hash.len(), 64);
            assert!(!token.contains(&hash) && !hash.contains("cvt1"));
        }
    }
}

#[tokio::test]
async fn concurrent_enrolments_with_one_join_token_let_exactly_one_through() {
    for db in databases().await {
        let l = Arc::new(lab(&db).await);
        let vr = vrouter(&l.h, "gw1", json!([])).await;
        let token = join_token(&l.h, &vr, json!({})).await;
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (l, token) = (l.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                enrol(&l, &mut dev(), &token, &format!("10.255.0.{}:51820", i + 1))
                    .await
                    .is_ok()
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap());
        }
        assert_eq!(ok, 1, "[{}] exactly one enrolment", l.h.db);
    }
}

fn chrono_secs(v: &Value) -> i64 {
    let t: pbjson_types::Timestamp = serde_json::from_value(v.clone()).unwrap();
    t.seconds
}

#[tokio::test]
async fn node_and_vrouter_certificates_only_open_their_own_streams() {
    for db in databases().await {
        let l = lab(&db).await;
        let h = &l.h;
        let (tid, cv) = tenant(h, "acme", "10.20.0.0/24").await;
        let vr = vrouter(h, "gw1", json!([{"tenantId": tid}])).await;
        let mut g = dev();
        enrol(
            &l,
            &mut g,
            &join_token(h, &vr, json!({})).await,
            "10.255.0.1:51820",
        )
        .await
        .unwrap();
        let mut n = dev();
        register(&l, &mut n, &node_token(h, "acme", &cv).await, "n")
            .await
            .unwrap();

        // A node certificate cannot hold the gateway stream nor renew as a vrouter.
        let e = gw_sync(&l, &n).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        let mut c = GatewayServiceClient::new(channel(&l, Some(&n)).await);
        let e = c
            .renew_certificate(pb::RenewCertificateRequest { csr_pem: n.csr() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        // No certificate at all.
        let e = gw_sync(&l, &dev()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);

        // A vrouter certificate cannot use the node API.
        let mut c = NodeServiceClient::new(channel(&l, Some(&g)).await);
        let e = c
            .sync(pb::SyncRequest { since_version: 0 })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        let e = c
            .report_endpoints(pb::ReportEndpointsRequest { endpoints: vec![] })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);

        // Each works with its own; the vrouter renews its certificate.
        let mut s = gw_sync(&l, &g).await.unwrap();
        assert_eq!(tables(&mut s).await.tenants.len(), 1);
        let mut c = GatewayServiceClient::new(channel(&l, Some(&g)).await);
        let r = c
            .renew_certificate(pb::RenewCertificateRequest { csr_pem: g.csr() })
            .await
            .unwrap()
            .into_inner();
        assert!(r.certificate_pem.contains("BEGIN CERTIFICATE"));
        sync(&l, &n, 0).await.unwrap();
    }
}

fn routes_of<'a>(t: &'a pb::GatewayTables, tenant: &str) -> Vec<(&'a str, &'a str)> {
    let mut v: Vec<_> = t
        .routes
        .iter()
        .filter(|r| r.tenant_id == tenant)
        .map(|r| (r.prefix.as_str(), r.peer_node_id.as_str()))
        .collect();
    v.sort_unstable();
    v
}

#[tokio::test]
async fn gateway_tables_keep_tenants_apart_and_follow_policy_and_node_changes() {
    for db in databases().await {
        let l = lab(&db).await;
        let h = &l.h;
        // Two tenants with the same prefix.
        let (acme, acv) = tenant(h, "acme", "10.20.0.0/24").await;
        let (beta, bcv) = tenant(h, "beta", "10.20.0.0/24").await;
        let at = node_token(h, "acme", &acv).await;
        let bt = node_token(h, "beta", &bcv).await;
        let na = register(&l, &mut dev(), &at, "a").await.unwrap();
        let nb = register(&l, &mut dev(), &at, "b").await.unwrap();
        let nx = register(&l, &mut dev(), &bt, "x").await.unwrap();
        assert_eq!(na.ipv4, nx.ipv4, "overlapping addresses");
        h.ok(
            "PATCH",
            &format!("/api/v1/tenants/acme/nodes/{}", na.id),
            Some(json!({"tags": ["web"]})),
        )
        .await;
        h.ok(
            "PATCH",
            &format!("/api/v1/tenants/acme/nodes/{}", nb.id),
            Some(json!({"tags": ["db"]})),
        )
        .await;
        h.ok(
            "POST",
            "/api/v1/tenants/acme/policies",
            Some(json!({"name": "pg", "rules": [{
                "sources": [{"tag": "web"}], "destinations": [{"tag": "db"}],
                "protocol": "PROTOCOL_TCP", "ports": [{"first": 5432, "last": 5432}],
                "action": "ACTION_ALLOW"}]})),
        )
        .await;
        let vr = vrouter(
            h,
            "gw1",
            json!([{"tenantId": acme}, {"tenantId": beta, "cvlanId": bcv}]),
        )
        .await;
        let mut g = dev();
        enrol(
            &l,
            &mut g,
            &join_token(h, &vr, json!({})).await,
            "10.255.0.1:51820",
        )
        .await
        .unwrap();
        let mut s = gw_sync(&l, &g).await.unwrap();
        let t = tables(&mut s).await;

        let mut ten: Vec<_> = t
            .tenants
            .iter()
            .map(|x| (x.tenant_id.clone(), x.default_action))
            .collect();
        ten.sort();
        let mut want = vec![
            (acme.clone(), pb::Action::Deny as i32),
            (beta.clone(), pb::Action::Deny as i32),
        ];
        want.sort();
        assert_eq!(ten, want);
        let mut idx: Vec<u32> = t.tenants.iter().map(|x| x.index).collect();
        idx.sort_unstable();
        assert_eq!(idx, vec![0, 1]);
        assert_eq!(t.peers.len(), 3);
        let pa = t.peers.iter().find(|p| p.node_id == na.id).unwrap();
        assert_eq!(pa.tenant_id, acme);
        assert_eq!(pa.cvlan_id, acv);
        assert_eq!(
            pa.allowed_ips,
            vec![format!("{}/32", na.ipv4), format!("{}/128", na.ipv6)]
        );
        // The same /32 routes to a different node in each tenant.
        let a32 = format!("{}/32", na.ipv4);
        assert!(routes_of(&t, &acme).contains(&(a32.as_str(), na.id.as_str())));
        assert!(routes_of(&t, &beta).contains(&(a32.as_str(), nx.id.as_str())));
        assert_eq!(t.routes.len(), 6);
        // acme: the reply entry (db:5432 -> web) first, then web -> db:5432; beta: nothing
        // allowed.
        let acls: Vec<&pb::AclEntry> = t.acls.iter().filter(|e| e.tenant_id == acme).collect();
        assert_eq!(acls.len(), 2, "{acls:?}");
        assert_eq!(acls[0].source_ports[0].first, 5432);
        assert_eq!(acls[0].source_cidrs[0], format!("{}/32", nb.ipv4));
        assert_eq!(acls[0].destination_cidrs[0], format!("{}/32", na.ipv4));
        assert!(acls[0].ports.is_empty());
        assert_eq!(acls[1].ports[0].first, 5432);
        assert_eq!(acls[1].source_cidrs[0], format!("{}/32", na.ipv4));
        assert_eq!(acls[1].destination_cidrs[0], format!("{}/32", nb.ipv4));
        assert_eq!(acls[1].protocol, pb::Protocol::Tcp as i32);
        assert!(t.acls.iter().all(|e| e.tenant_id != beta));
        let mut version = t.version;

        // A policy change.
        h.ok(
            "POST",
            "/api/v1/tenants/beta/policies",
            Some(json!({"name": "ping", "rules": [{
                "sources": [{"any": true}], "destinations": [{"any": true}],
                "protocol": "PROTOCOL_ICMP", "action": "ACTION_ALLOW"}]})),
        )
        .await;
        tables_after(&mut s, &mut version, |t| {
            t.acls.iter().any(|e| e.tenant_id == beta)
        })
        .await;

        // A node joins, then leaves.
        let nc = register(&l, &mut dev(), &at, "c").await.unwrap();
        let t = tables_after(&mut s, &mut version, |t| {
            t.peers.iter().any(|p| p.node_id == nc.id)
        })
        .await;
        assert!(
            routes_of(&t, &acme).contains(&(format!("{}/32", nc.ipv4).as_str(), nc.id.as_str()))
        );
        h.ok(
            "DELETE",
            &format!("/api/v1/tenants/acme/nodes/{}", nc.id),
            None,
        )
        .await;
        tables_after(&mut s, &mut version, |t| {
            t.peers.iter().all(|p| p.node_id != nc.id)
        })
        .await;

        // Expiring a node drops it too.
        h.ok(
            "POST",
            &format!("/api/v1/tenants/acme/nodes/{}/expire", nb.id),
            None,
        )
        .await;
        tables_after(&mut s, &mut version, |t| {
            t.peers.iter().all(|p| p.node_id != nb.id)
        })
        .await;

        // Deleting tenant beta drops it; so does unassigning acme; deleting the vrouter ends
        // the stream.
        h.ok("DELETE", "/api/v1/tenants/beta", None).await;
        let t = tables_after(&mut s, &mut version, |t| t.tenants.len() == 1).await;
        // The vrouter no longer names the deleted tenant (and can still be edited).
        let v = h
            .ok(
                "PATCH",
                &format!("/api/v1/vrouters/{vr}"),
                Some(json!({"name": "gw1b"})),
            )
            .await;
        assert_eq!(v["assignments"], json!([{"tenantId": acme}]));
        assert_eq!(t.tenants[0].tenant_id, acme);
        assert!(t.peers.iter().all(|p| p.tenant_id == acme));
        assert!(t.routes.iter().all(|r| r.tenant_id == acme));
        h.ok(
            "PATCH",
            &format!("/api/v1/vrouters/{vr}"),
            Some(json!({"assignments": []})),
        )
        .await;
        let t = tables_after(&mut s, &mut version, |t| t.tenants.is_empty()).await;
        assert!(t.peers.is_empty() && t.acls.is_empty() && t.routes.is_empty());
        h.ok("DELETE", &format!("/api/v1/vrouters/{vr}"), None)
            .await;
        let e = tokio::time::timeout(Duration::from_secs(2), s.message())
            .await
            .expect("the stream ends")
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
    }
}

#[tokio::test]
async fn nodes_of_a_hub_and_spoke_cvlan_see_only_the_gateway_and_mesh_nodes_see_each_other() {
    for db in databases().await {
        let l = lab(&db).await;
        let h = &l.h;
        let (acme, acv) = tenant(h, "acme", "10.20.0.0/24").await;
        let at = node_token(h, "acme", &acv).await;
        let mut a = dev();
        let na = register(&l, &mut a, &at, "a").await.unwrap();
        let nb = register(&l, &mut dev(), &at, "b").await.unwrap();
        let mut sa = sync(&l, &a, 0).await.unwrap();
        let m = snapshot(next(&mut sa).await);
        assert_eq!(
            m.peers
                .iter()
                .map(|p| p.node_id.as_str())
                .collect::<Vec<_>>(),
            vec![nb.id.as_str()]
        );

        // A vrouter serving the CVLAN changes nothing while the CVLAN is a mesh.
        let vr = vrouter(h, "gw1", json!([{"tenantId": acme, "cvlanId": acv}])).await;
        let mut g = dev();
        enrol(
            &l,
            &mut g,
            &join_token(h, &vr, json!({})).await,
            "10.255.0.1:51820",
        )
        .await
        .unwrap();
        // Hub and spoke: a's only peer becomes the gateway, carrying the CVLAN's prefixes.
        let cvl = set_mode(h, "CVLAN_MODE_HUB_AND_SPOKE").await;
        let u = delta(next(&mut sa).await);
        assert_eq!(u.peers_removed, vec![nb.id.clone()]);
        assert_eq!(u.peers_upserted.len(), 1, "{u:?}");
        let gw = &u.peers_upserted[0];
        assert!(gw.gateway);
        assert_eq!(gw.node_id, vr);
        assert_eq!(gw.wg_public_key, g.wg);
        assert_eq!(gw.endpoints[0].address, "10.255.0.1:51820");
        assert_eq!(gw.persistent_keepalive_seconds, 25);
        assert_eq!(
            gw.allowed_ips,
            vec![
                "10.20.0.0/24".to_string(),
                cvl["ipv6Prefix"].as_str().unwrap().to_string()
            ]
        );
        // A new node does not show up as a direct peer; a fresh map has only the gateway.
        let nc = register(&l, &mut dev(), &at, "c").await.unwrap();
        drop(sa);
        let mut sa = sync(&l, &a, 0).await.unwrap();
        let m = snapshot(next(&mut sa).await);
        assert_eq!(
            m.peers
                .iter()
                .map(|p| p.node_id.as_str())
                .collect::<Vec<_>>(),
            vec![vr.as_str()]
        );
        assert_eq!(m.self_.unwrap().id, na.id);

        // The gateway re-enrolling at a new endpoint reaches the nodes.
        let mut g2 = dev();
        enrol(
            &l,
            &mut g2,
            &join_token(h, &vr, json!({})).await,
            "10.255.0.7:51820",
        )
        .await
        .unwrap();
        let u = delta(next(&mut sa).await);
        assert_eq!(u.peers_upserted[0].endpoints[0].address, "10.255.0.7:51820");
        assert_eq!(u.peers_upserted[0].wg_public_key, g2.wg);

        // Back to mesh: the nodes return, the gateway goes.
        set_mode(h, "CVLAN_MODE_MESH").await;
        let u = delta(next(&mut sa).await);
        assert_eq!(u.peers_removed, vec![vr.clone()]);
        let mut back: Vec<&str> = u
            .peers_upserted
            .iter()
            .map(|p| p.node_id.as_str())
            .collect();
        back.sort_unstable();
        let mut want = vec![nb.id.as_str(), nc.id.as_str()];
        want.sort_unstable();
        assert_eq!(back, want);

        // Hub and spoke again, then the vrouter deleted: direct peers again.
        set_mode(h, "CVLAN_MODE_HUB_AND_SPOKE").await;
        let u = delta(next(&mut sa).await);
        assert_eq!(u.peers_upserted[0].node_id, vr);
        h.ok("DELETE", &format!("/api/v1/vrouters/{vr}"), None)
            .await;
        let u = delta(next(&mut sa).await);
        assert_eq!(u.peers_removed, vec![vr.clone()]);
        assert_eq!(u.peers_upserted.len(), 2);
    }
}
