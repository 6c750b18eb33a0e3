//! Node API end to end in-process over real TLS: Register with tokens (single use, revoked,
//! bad input), mTLS Sync snapshots and pushed deltas (joins, deletes, expiry, policy, external
//! peers, endpoints), resume from a version, certificate renewal. SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::databases;
use common::lab::*;
use cvlan_proto::v1 as pb;
use cvlan_proto::v1::node_service_client::NodeServiceClient;
use serde_json::json;
use tonic::Code;

async fn setup(l: &Lab) -> (String, String) {
    let h = &l.h;
    h.ok("POST", "/api/v1/tenants", Some(json!({"name": "acme"})))
        .await;
    let x = h
        .ok_id(
            "POST",
            "/api/v1/tenants/acme/cvlans",
            Some(json!({"name": "x", "ipv4Prefix": "10.20.0.0/24"})),
        )
        .await;
    let y = h
        .ok_id(
            "POST",
            "/api/v1/tenants/acme/cvlans",
            Some(json!({"name": "y", "ipv4Prefix": "10.21.0.0/24"})),
        )
        .await;
    (x, y)
}

#[tokio::test]
async fn registration_checks_tokens_and_input_and_hands_out_addresses_and_certificates() {
    for db in databases().await {
        let l = lab(&db).await;
        let (x, _) = setup(&l).await;
        let once = token(
            &l.h,
            "acme",
            &x,
            json!({"reusable": false, "tags": ["web"]}),
        )
        .await;
        let mut a = dev();
        let n = register(&l, &mut a, &once, "Alice.local").await.unwrap();
        assert_eq!(n.name, "alice");
        assert_eq!(n.cvlan_id, x);
        assert_eq!(n.tags, vec!["web".to_string()]);
        assert!(n.ipv4.starts_with("10.20.0."), "{}", n.ipv4);
        assert!(!n.ipv6.is_empty());

        // Replaying a single-use token is refused and registers nothing.
        let before = l.h.ok("GET", "/api/v1/tenants/acme/nodes", None).await["items"]
            .as_array()
            .unwrap()
            .len();
        let e = register(&l, &mut dev(), &once, "b").await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        assert!(e.message().contains("already been used"), "{}", e.message());
        let after = l.h.ok("GET", "/api/v1/tenants/acme/nodes", None).await["items"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(before, after);

        // Revoked, forged, and bad keys.
        let t = token(&l.h, "acme", &x, json!({})).await;
        let tid = l.h.ok("GET", "/api/v1/tenants/acme/tokens", None).await["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["reusable"] == json!(true))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        l.h.ok(
            "POST",
            &format!("/api/v1/tenants/acme/tokens/{tid}/revoke"),
            None,
        )
        .await;
        let e = register(&l, &mut dev(), &t, "c").await.unwrap_err();
        assert!(e.message().contains("revoked"), "{}", e.message());
        let e = register(&l, &mut dev(), "cvt1.garbage.sig", "c")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let t2 = token(&l.h, "acme", &x, json!({})).await;
        let mut bad = dev();
        bad.wg = "not-a-key".into();
        let e = register(&l, &mut bad, &t2, "c").await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        // The same WireGuard key twice.
        let mut dup = dev();
        dup.wg = a.wg.clone();
        let e = register(&l, &mut dup, &t2, "c").await.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        // A duplicate hostname gets a suffix.
        let n2 = register(&l, &mut dev(), &t2, "alice").await.unwrap();
        assert_eq!(n2.name, "alice-2");

        // Sync without a client certificate is refused; renewal works with one.
        let mut c = NodeServiceClient::new(channel(&l, None).await);
        let e = c
            .sync(pb::SyncRequest { since_version: 0 })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let mut c = NodeServiceClient::new(channel(&l, Some(&a)).await);
        let r = c
            .renew_certificate(pb::RenewCertificateRequest { csr_pem: a.csr() })
            .await
            .unwrap()
            .into_inner();
        assert!(r.certificate_pem.contains("BEGIN CERTIFICATE"));
    }
}

#[tokio::test]
async fn concurrent_registrations_with_one_single_use_token_let_exactly_one_through() {
    for db in databases().await {
        let l = Arc::new(lab(&db).await);
        let (x, _) = setup(&l).await;
        let once = token(&l.h, "acme", &x, json!({"reusable": false})).await;
        let mut tasks = Vec::new();
        for i in 0..8 {
            let l = l.clone();
            let t = once.clone();
            tasks.push(tokio::spawn(async move {
                register(&l, &mut dev(), &t, &format!("n{i}")).await.is_ok()
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap());
        }
        assert_eq!(ok, 1, "[{}]", db.name);
        let used =
            l.h.ok("GET", "/api/v1/tenants/acme/cvlans/x", None).await["addressesUsed"].clone();
        assert_eq!(
            used,
            json!("1"),
            "[{}] addresses of refused registrations are given back",
            db.name
        );
    }
}

#[tokio::test]
async fn maps_are_pushed_within_a_second_and_stay_inside_the_cvlan() {
    for db in databases().await {
        let l = lab(&db).await;
        let (x, y) = setup(&l).await;
        let tx = token(&l.h, "acme", &x, json!({})).await;
        let ty = token(&l.h, "acme", &y, json!({})).await;
        let (mut a, mut b, mut c) = (dev(), dev(), dev());
        let na = register(&l, &mut a, &tx, "a").await.unwrap();
        let nb = register(&l, &mut b, &tx, "b").await.unwrap();
        register(&l, &mut c, &ty, "c").await.unwrap();

        let mut sa = sync(&l, &a, 0).await.unwrap();
        let m = snapshot(next(&mut sa).await);
        assert_eq!(m.self_.as_ref().unwrap().id, na.id);
        assert_eq!(m.cvlan_ipv4_prefix, "10.20.0.0/24");
        let peers: Vec<_> = m.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(peers, vec!["b"], "only the same CVLAN's nodes");
        assert_eq!(m.peers[0].allowed_ips[0], format!("{}/32", nb.ipv4));
        // No policy yet: default deny (no allow rule).
        assert!(m.filter.unwrap().rules.is_empty());
        let mut version = m.version;

        // A node joining the CVLAN reaches a's stream as one upsert.
        let mut d = dev();
        let nd = register(&l, &mut d, &tx, "d").await.unwrap();
        let u = delta(next(&mut sa).await);
        assert!(u.version > version);
        version = u.version;
        assert_eq!(u.peers_upserted.len(), 1);
        assert_eq!(u.peers_upserted[0].node_id, nd.id);
        assert!(u.peers_removed.is_empty());

        // A policy: a's filter changes.
        l.h.ok(
            "POST",
            "/api/v1/tenants/acme/policies",
            Some(json!({"name": "web", "rules": [{
                "sources": [{"any": true}], "destinations": [{"any": true}],
                "protocol": "PROTOCOL_TCP", "ports": [{"first": 5001, "last": 5001}],
                "action": "ACTION_ALLOW"}]})),
        )
        .await;
        let u = delta(next(&mut sa).await);
        let f = u.filter.unwrap();
        assert_eq!(f.rules.len(), 1);
        assert_eq!(f.rules[0].ports[0].first, 5001);
        assert!(u.version > version);

        // Endpoints reported by b reach a.
        let mut cb = NodeServiceClient::new(channel(&l, Some(&b)).await);
        cb.report_endpoints(pb::ReportEndpointsRequest {
            endpoints: vec![pb::Endpoint {
                address: "10.250.0.12:51820".into(),
                kind: String::new(),
            }],
        })
        .await
        .unwrap();
        let u = delta(next(&mut sa).await);
        assert_eq!(
            u.peers_upserted[0].endpoints[0].address,
            "10.250.0.12:51820"
        );
        let e = cb
            .report_endpoints(pb::ReportEndpointsRequest {
                endpoints: vec![pb::Endpoint {
                    address: "nonsense".into(),
                    kind: String::new(),
                }],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);

        // An external peer for this CVLAN.
        l.h.ok(
            "POST",
            "/api/v1/tenants/acme/cvlans/x/external-peers",
            Some(json!({"name": "site", "wgPublicKey": dev().wg,
                        "endpoint": "10.250.0.99:51820", "allowedIps": ["192.168.50.0/24"]})),
        )
        .await;
        let u = delta(next(&mut sa).await);
        assert!(u.peers_upserted[0].external);
        assert_eq!(
            u.peers_upserted[0].allowed_ips,
            vec!["192.168.50.0/24".to_string()]
        );

        // b's stream, then b deleted: a loses the peer, b's stream ends with NotFound.
        let mut sb = sync(&l, &b, 0).await.unwrap();
        snapshot(next(&mut sb).await);
        l.h.ok(
            "DELETE",
            &format!("/api/v1/tenants/acme/nodes/{}", nb.id),
            None,
        )
        .await;
        let u = delta(next(&mut sa).await);
        assert_eq!(u.peers_removed, vec![nb.id.clone()], "{u:?}");
        let end = tokio::time::timeout(Duration::from_secs(1), sb.message())
            .await
            .unwrap();
        assert_eq!(end.unwrap_err().code(), Code::NotFound);
        let e = sync(&l, &b, 0).await.err().or(None);
        // A deleted node cannot open a new stream either.
        match e {
            Some(e) => assert_eq!(e.code(), Code::NotFound),
            None => {
                let mut s = sync(&l, &b, 0).await.unwrap();
                assert_eq!(s.message().await.unwrap_err().code(), Code::NotFound);
            }
        }

        // Expiring d: a loses it.
        l.h.ok(
            "POST",
            &format!("/api/v1/tenants/acme/nodes/{}/expire", nd.id),
            None,
        )
        .await;
        let u = delta(next(&mut sa).await);
        assert_eq!(u.peers_removed, vec![nd.id.clone()]);
        let mut sd = NodeServiceClient::new(channel(&l, Some(&d)).await);
        let e = match sd.sync(pb::SyncRequest { since_version: 0 }).await {
            Err(e) => e,
            Ok(s) => s.into_inner().message().await.unwrap_err(),
        };
        assert_eq!(e.code(), Code::PermissionDenied);
    }
}

#[tokio::test]
async fn a_reconnect_resumes_from_the_last_version_with_only_what_changed() {
    for db in databases().await {
        let l = lab(&db).await;
        let (x, _) = setup(&l).await;
        let tx = token(&l.h, "acme", &x, json!({})).await;
        let (mut a, mut b) = (dev(), dev());
        register(&l, &mut a, &tx, "a").await.unwrap();
        register(&l, &mut b, &tx, "b").await.unwrap();
        let mut sa = sync(&l, &a, 0).await.unwrap();
        let m = snapshot(next(&mut sa).await);
        drop(sa);
        // Let the hub see the disconnect, then change something while a is away.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut c = dev();
        let nc = register(&l, &mut c, &tx, "c").await.unwrap();
        let mut sa = sync(&l, &a, m.version).await.unwrap();
        let u = delta(next(&mut sa).await);
        assert!(u.version > m.version);
        let ids: Vec<_> = u.peers_upserted.iter().map(|p| p.node_id.clone()).collect();
        assert_eq!(ids, vec![nc.id]);
        // An unknown version gets a snapshot.
        drop(sa);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut sa = sync(&l, &a, 12345).await.unwrap();
        assert_eq!(snapshot(next(&mut sa).await).peers.len(), 2);
    }
}

#[tokio::test]
async fn ephemeral_nodes_that_went_away_are_removed_and_their_addresses_freed() {
    for db in databases().await {
        let l = lab(&db).await;
        let (x, _) = setup(&l).await;
        let eph = token(&l.h, "acme", &x, json!({"ephemeral": true})).await;
        let keep = token(&l.h, "acme", &x, json!({})).await;
        let ne = register(&l, &mut dev(), &eph, "ci-runner").await.unwrap();
        assert!(ne.ephemeral);
        register(&l, &mut dev(), &keep, "server").await.unwrap();
        // Seen just now: a long inactivity window keeps it.
        assert_eq!(
            l.h.app
                .svc
                .gc_ephemeral(Duration::from_secs(600))
                .await
                .unwrap(),
            0
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            l.h.app
                .svc
                .gc_ephemeral(Duration::from_millis(10))
                .await
                .unwrap(),
            1
        );
        let names: Vec<String> = l.h.ok("GET", "/api/v1/tenants/acme/nodes", None).await["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, vec!["server".to_string()], "[{}]", db.name);
        let used =
            l.h.ok("GET", "/api/v1/tenants/acme/cvlans/x", None).await["addressesUsed"].clone();
        assert_eq!(used, json!("1"));
    }
}
