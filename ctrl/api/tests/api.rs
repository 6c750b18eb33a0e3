//! In-process API tests over the real router, on SQLite and (when available) PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use axum::http::StatusCode;
use common::{H, databases};
use cvlan_api::rbac::{Decision, Resource, Target, Verb, decide};
use cvlan_proto::v1::Role;
use serde_json::{Value, json};

#[tokio::test]
async fn admin_flows_work_through_rest_on_every_backend() {
    for db in databases().await {
        let h = H::new(&db).await;
        let t = h
            .ok(
                "POST",
                "/api/v1/tenants",
                Some(json!({"name": "acme", "displayName": "Acme"})),
            )
            .await;
        assert_eq!(t["name"], "acme");
        // By name and by id.
        let tid = t["id"].as_str().unwrap();
        assert_eq!(
            h.ok("GET", &format!("/api/v1/tenants/{tid}"), None).await["name"],
            "acme"
        );
        let cv = h
            .ok(
                "POST",
                "/api/v1/tenants/acme/cvlans",
                Some(
                    json!({"name": "lab", "ipv4Prefix": "10.20.0.0/24", "ipv6Prefix": "fd20::/64"}),
                ),
            )
            .await;
        assert_eq!(cv["mode"], "CVLAN_MODE_MESH");
        assert_eq!(cv["addressesTotal"], "254");
        let a = h
            .ok(
                "POST",
                "/api/v1/tenants/acme/cvlans/lab/addresses",
                Some(json!({})),
            )
            .await;
        assert_eq!(
            (a["address"].as_str(), a["addressV6"].as_str()),
            (Some("10.20.0.1"), Some("fd20::1"))
        );
        let b = h
            .ok(
                "POST",
                "/api/v1/tenants/acme/cvlans/lab/addresses",
                Some(json!({"address": "10.20.0.9"})),
            )
            .await;
        assert_eq!(b["addressV6"], "fd20::9");
        let (s, e) = h
            .call(
                "POST",
                "/api/v1/tenants/acme/cvlans/lab/addresses",
                Some(&h.root),
                Some(json!({"addressV6": "fd20::9"})),
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("already allocated")
        );
        h.ok(
            "DELETE",
            "/api/v1/tenants/acme/cvlans/lab/addresses/10.20.0.9",
            None,
        )
        .await;
        let again = h
            .ok(
                "POST",
                "/api/v1/tenants/acme/cvlans/lab/addresses",
                Some(json!({"address": "10.20.0.9"})),
            )
            .await;
        assert_eq!(
            again["address"], "10.20.0.9",
            "released address is reusable"
        );
        let list = h
            .ok("GET", "/api/v1/tenants/acme/cvlans/lab/addresses", None)
            .await;
        assert_eq!(list["items"].as_array().unwrap().len(), 2);

        // Users, groups, policies.
        let u = h
            .ok("POST", "/api/v1/tenants/acme/users", Some(json!({"email": "Eng@Acme.test", "password": "password-123", "role": "ROLE_OPERATOR"})))
            .await;
        assert_eq!(u["email"], "eng@acme.test");
        assert!(u.get("password").is_none(), "password never returned: {u}");
        let g = h
            .ok(
                "POST",
                "/api/v1/tenants/acme/groups",
                Some(json!({"name": "eng", "members": [{"userId": u["id"]}, {"tag": "web"}]})),
            )
            .await;
        let p = h
            .ok(
                "POST",
                "/api/v1/tenants/acme/policies",
                Some(json!({"name": "db", "rules": [{"sources": [{"group": "eng"}], "destinations": [{"tag": "db"}], "protocol": "PROTOCOL_TCP", "ports": [{"first": 5432, "last": 5432}], "action": "ACTION_ALLOW"}]})),
            )
            .await;
        assert_eq!(p["rules"][0]["protocol"], "PROTOCOL_TCP");
        let (s, e) = h
            .call(
                "DELETE",
                &format!("/api/v1/tenants/acme/groups/{}", g["id"].as_str().unwrap()),
                Some(&h.root),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "group in use by a policy: {e}");
        let upd = h
            .ok(
                "PATCH",
                "/api/v1/tenants/acme/policies/db",
                Some(json!({"priority": 5})),
            )
            .await;
        assert_eq!(
            (
                upd["priority"].as_i64(),
                upd["rules"].as_array().map(Vec::len)
            ),
            (Some(5), Some(1))
        );

        // Tokens: shown once, verifiable, revocable.
        let tok = h
            .ok("POST", "/api/v1/tenants/acme/tokens", Some(json!({"cvlanId": "lab", "reusable": true, "tags": ["web"], "ttlSeconds": 3600})))
            .await;
        let secret = tok["token"].as_str().unwrap().to_string();
        assert!(secret.starts_with("cvt1."));
        let listed = h.ok("GET", "/api/v1/tenants/acme/tokens", None).await;
        assert!(
            !listed.to_string().contains(&secret),
            "token string only in the create response"
        );
        let got = h
            .ok(
                "GET",
                &format!(
                    "/api/v1/tenants/acme/tokens/{}",
                    tok["id"].as_str().unwrap()
                ),
                None,
            )
            .await;
        assert!(got.get("token").is_none());
        let (s, v) = h
            .call(
                "POST",
                "/api/v1/tokens/verify",
                None,
                Some(json!({"token": secret})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["cvlanId"], cv["id"]);
        h.ok(
            "POST",
            &format!(
                "/api/v1/tenants/acme/tokens/{}/revoke",
                tok["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
        let (s, v) = h
            .call(
                "POST",
                "/api/v1/tokens/verify",
                None,
                Some(json!({"token": secret})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(
            v["error"]["message"].as_str().unwrap().contains("revoked"),
            "{v}"
        );

        // Global objects.
        let r = h
            .ok("POST", "/api/v1/regions", Some(json!({"name": "eu-west"})))
            .await;
        h.ok("POST", "/api/v1/relays", Some(json!({"name": "relay1", "regionId": r["id"], "endpoint": "relay1.example.net:3478"}))).await;
        h.ok(
            "POST",
            "/api/v1/vrouters",
            Some(json!({"name": "gw1", "regionId": r["id"], "endpoint": "192.0.2.1:51820", "assignments": [{"tenantId": tid, "cvlanId": cv["id"]}]})),
        )
        .await;
        let (s, _) = h
            .call(
                "DELETE",
                &format!("/api/v1/regions/{}", r["id"].as_str().unwrap()),
                Some(&h.root),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "region still used");

        // Audit: listed, filtered, exported; never secrets.
        let au = h
            .ok("GET", "/api/v1/tenants/acme/audit?pageSize=500", None)
            .await;
        let actions: Vec<&str> = au["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        for want in [
            "tenant.create",
            "cvlan.create",
            "address.create",
            "address.delete",
            "user.create",
            "group.create",
            "policy.create",
            "policy.update",
            "token.create",
            "token.revoke",
        ] {
            assert!(actions.contains(&want), "{want} missing from {actions:?}");
        }
        let only = h
            .ok("GET", "/api/v1/tenants/acme/audit?action=address.", None)
            .await;
        assert!(
            only["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["action"].as_str().unwrap().starts_with("address."))
        );
        let page1 = h
            .ok("GET", "/api/v1/tenants/acme/audit?pageSize=2", None)
            .await;
        let next = page1["nextPageToken"].as_str().unwrap();
        assert!(!next.is_empty());
        let page2 = h
            .ok(
                "GET",
                &format!("/api/v1/tenants/acme/audit?pageSize=2&pageToken={next}"),
                None,
            )
            .await;
        assert_ne!(page1["items"][0]["id"], page2["items"][0]["id"]);
        let (s, csv) = h
            .raw(
                "GET",
                "/api/v1/tenants/acme/audit/export?format=csv",
                Some(&h.root),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        let csv = csv.as_str().unwrap().to_string();
        assert!(csv.starts_with("id,time,actor_id"));
        assert_eq!(csv.lines().count(), actions.len() + 1);
        let (_, jl) = h
            .raw(
                "GET",
                "/api/v1/tenants/acme/audit/export",
                Some(&h.root),
                None,
            )
            .await;
        let jl = jl
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| jl.to_string());
        for sec in ["password-123", &secret, &h.root] {
            assert!(
                !jl.contains(sec) && !csv.contains(sec),
                "secret leaked into audit"
            );
        }

        // System endpoints.
        let doc = h.ok("GET", "/api/v1/openapi.json", None).await;
        assert!(doc["paths"]["/api/v1/tenants/{tenant}/cvlans"]["post"].is_object());
        assert!(doc["components"]["schemas"]["Cvlan"]["properties"]["ipv4Prefix"].is_object());
        // Typed clients are generated from it: every path parameter is declared, list
        // responses carry the page envelope, and every $ref resolves.
        let paths = doc["paths"].as_object().unwrap();
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                let declared: Vec<&str> = op["parameters"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter(|p| p["in"] == "path")
                            .map(|p| p["name"].as_str().unwrap())
                            .collect()
                    })
                    .unwrap_or_default();
                let wanted: Vec<&str> = path
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                    .collect();
                assert_eq!(declared, wanted, "{method} {path}");
            }
        }
        let list = &doc["paths"]["/api/v1/tenants/{tenant}/nodes"]["get"];
        assert_eq!(
            list["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["items"]
                ["items"]["$ref"],
            "#/components/schemas/Node"
        );
        assert!(
            list["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "pageToken")
        );
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &r[..r.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "dangling $ref {name}"
            );
        }
        let (s, _) = h.raw("GET", "/readyz", None, None).await;
        assert_eq!(s, StatusCode::OK);
    }
}

/// Maps the pure decision to what the HTTP layer must answer.
fn expect_status(d: Decision, ok: StatusCode) -> StatusCode {
    match d {
        Decision::Allow => ok,
        Decision::Forbidden => StatusCode::FORBIDDEN,
        Decision::NotFound => StatusCode::NOT_FOUND,
    }
}

#[tokio::test]
async fn every_endpoint_family_enforces_the_rbac_matrix_for_every_role_and_tenant() {
    for db in databases().await {
        let h = H::new(&db).await;
        let (a_admin, a_op, a_view) = h.tenant_with_users("alpha", "10.1.0.0/16").await;
        h.tenant_with_users("beta", "10.1.0.0/16").await;
        let roles = [
            (Role::TenantAdmin, a_admin),
            (Role::Operator, a_op),
            (Role::Viewer, a_view),
        ];
        let mut n = 0;
        for (role, tok) in &roles {
            for (tenant, target) in [("alpha", Target::OwnTenant), ("beta", Target::OtherTenant)] {
                let u = common::unique();
                let base = format!("/api/v1/tenants/{tenant}");
                // (resource, read path, write method, write path, write body)
                let cases: Vec<(Resource, String, &str, String, Value)> = vec![
                    (
                        Resource::Tenant,
                        base.clone(),
                        "PATCH",
                        base.clone(),
                        json!({"displayName": u}),
                    ),
                    (
                        Resource::Cvlan,
                        format!("{base}/cvlans"),
                        "POST",
                        format!("{base}/cvlans"),
                        json!({"name": format!("c{}", &u[..8]), "ipv4Prefix": format!("10.{}.{}.0/24", 100 + n % 100, n / 100)}),
                    ),
                    (
                        Resource::User,
                        format!("{base}/users"),
                        "POST",
                        format!("{base}/users"),
                        json!({"email": format!("{u}@x.test"), "password": "password-123", "role": "ROLE_VIEWER"}),
                    ),
                    (
                        Resource::Group,
                        format!("{base}/groups"),
                        "POST",
                        format!("{base}/groups"),
                        json!({"name": format!("g{}", &u[..8])}),
                    ),
                    (
                        Resource::Policy,
                        format!("{base}/policies"),
                        "POST",
                        format!("{base}/policies"),
                        json!({"name": format!("p{}", &u[..8])}),
                    ),
                    (
                        Resource::Node,
                        format!("{base}/nodes"),
                        "DELETE",
                        format!("{base}/nodes/none"),
                        Value::Null,
                    ),
                    (
                        Resource::Token,
                        format!("{base}/tokens"),
                        "POST",
                        format!("{base}/tokens"),
                        json!({"cvlanId": "lab"}),
                    ),
                    (
                        Resource::Address,
                        format!("{base}/cvlans/lab/addresses"),
                        "POST",
                        format!("{base}/cvlans/lab/addresses"),
                        json!({}),
                    ),
                    (
                        Resource::Audit,
                        format!("{base}/audit"),
                        "GET",
                        format!("{base}/audit/export"),
                        Value::Null,
                    ),
                ];
                for (res, read, wm, wp, body) in cases {
                    let (s, v) = h.call("GET", &read, Some(tok), None).await;
                    assert_eq!(
                        s,
                        expect_status(decide(*role, res, Verb::Read, target), StatusCode::OK),
                        "[{}] {role:?} GET {read}: {v}",
                        h.db
                    );
                    if res == Resource::Audit {
                        continue;
                    }
                    let body = (!body.is_null()).then_some(body);
                    let (s, v) = h.call(wm, &wp, Some(tok), body).await;
                    let want_ok = match (res, wm) {
                        (Resource::Node, _) => StatusCode::NOT_FOUND,
                        (_, "POST") => StatusCode::CREATED,
                        _ => StatusCode::OK,
                    };
                    assert_eq!(
                        s,
                        expect_status(decide(*role, res, Verb::Write, target), want_ok),
                        "[{}] {role:?} {wm} {wp}: {v}",
                        h.db
                    );
                    n += 1;
                }
            }
            // Global families.
            for (res, path, body) in [
                (
                    Resource::Tenant,
                    "/api/v1/tenants",
                    json!({"name": format!("t{}", &common::unique()[..8])}),
                ),
                (
                    Resource::Vrouter,
                    "/api/v1/vrouters",
                    json!({"name": format!("v{}", &common::unique()[..8])}),
                ),
                (
                    Resource::Region,
                    "/api/v1/regions",
                    json!({"name": format!("r{}", &common::unique()[..8])}),
                ),
                (
                    Resource::Relay,
                    "/api/v1/relays",
                    json!({"name": format!("r{}", &common::unique()[..8]), "endpoint": "relay.example.net:3478"}),
                ),
            ] {
                let (s, v) = h.call("POST", path, Some(tok), Some(body)).await;
                assert_eq!(
                    s,
                    expect_status(
                        decide(*role, res, Verb::Write, Target::Global),
                        StatusCode::CREATED
                    ),
                    "{role:?} POST {path}: {v}"
                );
                if res != Resource::Tenant {
                    let (s, v) = h.call("GET", path, Some(tok), None).await;
                    assert_eq!(
                        s,
                        expect_status(
                            decide(*role, res, Verb::Read, Target::Global),
                            StatusCode::OK
                        ),
                        "{role:?} GET {path}: {v}"
                    );
                }
            }
            let (s, _) = h.call("GET", "/api/v1/audit", Some(tok), None).await;
            assert_eq!(s, StatusCode::FORBIDDEN);
            // The tenant list only ever shows the caller's own tenant.
            let (_, v) = h.call("GET", "/api/v1/tenants", Some(tok), None).await;
            let names: Vec<&str> = v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, ["alpha"]);
        }
        assert_eq!(n, 3 * 2 * 8);
        // No credentials → 401; garbage credentials → 401.
        assert_eq!(
            h.call("GET", "/api/v1/tenants", None, None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            h.call("GET", "/api/v1/tenants", Some("cvs_nope"), None)
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn nobody_escalates_a_role_and_api_keys_carry_at_most_their_owners_role() {
    for db in databases().await {
        let h = H::new(&db).await;
        let (admin, op, _) = h.tenant_with_users("acme", "10.9.0.0/24").await;
        let (s, _) = h.call("POST", "/api/v1/tenants/acme/users", Some(&admin), Some(json!({"email": "x@acme.test", "password": "password-123", "role": "ROLE_SUPERADMIN"}))).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = h.call("POST", "/api/v1/users", Some(&admin), Some(json!({"email": "y@acme.test", "password": "password-123", "role": "ROLE_SUPERADMIN"}))).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, k) = h
            .call(
                "POST",
                "/api/v1/apikeys",
                Some(&op),
                Some(json!({"name": "ci", "role": "ROLE_TENANT_ADMIN"})),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{k}");
        let (s, k) = h
            .call(
                "POST",
                "/api/v1/apikeys",
                Some(&op),
                Some(json!({"name": "ci"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{k}");
        let key = k["key"].as_str().unwrap().to_string();
        assert!(key.starts_with("cvk_"));
        let (_, listed) = h.call("GET", "/api/v1/apikeys", Some(&op), None).await;
        assert!(!listed.to_string().contains(&key));
        // The key works like its owner (operator): may create CVLANs, not users.
        let (s, _) = h
            .call(
                "POST",
                "/api/v1/tenants/acme/cvlans",
                Some(&key),
                Some(json!({"name": "k", "ipv4Prefix": "10.10.0.0/24"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, _) = h.call("POST", "/api/v1/tenants/acme/users", Some(&key), Some(json!({"email": "z@acme.test", "password": "password-123", "role": "ROLE_VIEWER"}))).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        // Lowering the owner's role lowers the key with it.
        h.ok(
            "PATCH",
            "/api/v1/tenants/acme/users/operator@acme.test",
            Some(json!({"role": "ROLE_VIEWER"})),
        )
        .await;
        let (s, _) = h
            .call(
                "POST",
                "/api/v1/tenants/acme/cvlans",
                Some(&key),
                Some(json!({"name": "k2", "ipv4Prefix": "10.11.0.0/24"})),
            )
            .await;
        assert_eq!(
            s,
            StatusCode::FORBIDDEN,
            "a key outranked its demoted owner"
        );
        h.ok(
            "DELETE",
            &format!("/api/v1/apikeys/{}", k["id"].as_str().unwrap()),
            None,
        )
        .await;
        assert_eq!(
            h.call("GET", "/api/v1/tenants", Some(&key), None).await.0,
            StatusCode::UNAUTHORIZED
        );
        // Logout ends the session.
        h.call("POST", "/api/v1/auth/logout", Some(&op), None).await;
        assert_eq!(
            h.call("GET", "/api/v1/auth/whoami", Some(&op), None)
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    for db in databases().await {
        let h = H::new(&db).await;
        h.ok("POST", "/api/v1/tenants", Some(json!({"name": "acme"})))
            .await;
        h.ok(
            "POST",
            "/api/v1/tenants/acme/cvlans",
            Some(json!({"name": "lab", "ipv4Prefix": "10.20.0.0/24"})),
        )
        .await;
        let before = h.audit_count().await;
        let cases: Vec<(&str, String, StatusCode, &str)> = vec![
            (
                "malformed",
                "{\"name\": ".into(),
                StatusCode::BAD_REQUEST,
                "malformed JSON",
            ),
            (
                "wrong type",
                json!({"name": 5, "ipv4Prefix": "10.0.0.0/24"}).to_string(),
                StatusCode::BAD_REQUEST,
                "invalid body",
            ),
            (
                "unknown field",
                json!({"name": "x", "ipv4Prefix": "10.0.0.0/24", "colour": "red"}).to_string(),
                StatusCode::BAD_REQUEST,
                "unknown field",
            ),
            (
                "overlong name",
                json!({"name": "x".repeat(64), "ipv4Prefix": "10.0.0.0/24"}).to_string(),
                StatusCode::BAD_REQUEST,
                "1-63",
            ),
            (
                "bad cidr",
                json!({"name": "x", "ipv4Prefix": "10.0.0.0/33"}).to_string(),
                StatusCode::BAD_REQUEST,
                "ipv4Prefix",
            ),
            (
                "host bits",
                json!({"name": "x", "ipv4Prefix": "10.0.0.1/24"}).to_string(),
                StatusCode::BAD_REQUEST,
                "host bits",
            ),
            (
                "not ula",
                json!({"name": "x", "ipv4Prefix": "10.0.0.0/24", "ipv6Prefix": "2001:db8::/64"})
                    .to_string(),
                StatusCode::BAD_REQUEST,
                "unique local",
            ),
            (
                "overlap",
                json!({"name": "x", "ipv4Prefix": "10.20.0.0/16"}).to_string(),
                StatusCode::CONFLICT,
                "overlaps",
            ),
            (
                "duplicate",
                json!({"name": "lab", "ipv4Prefix": "10.30.0.0/24"}).to_string(),
                StatusCode::CONFLICT,
                "already exists",
            ),
            (
                "not an object",
                "[1,2]".into(),
                StatusCode::BAD_REQUEST,
                "JSON object",
            ),
            (
                "bad enum",
                json!({"name": "x", "ipv4Prefix": "10.0.0.0/24", "mode": "CVLAN_MODE_STAR"})
                    .to_string(),
                StatusCode::BAD_REQUEST,
                "invalid body",
            ),
        ];
        for (what, body, want, msg) in cases {
            let (s, v) = h
                .raw(
                    "POST",
                    "/api/v1/tenants/acme/cvlans",
                    Some(&h.root),
                    Some(body),
                )
                .await;
            assert_eq!(s, want, "[{}] {what}: {v}", h.db);
            let m = v["error"]["message"].as_str().unwrap_or_default();
            assert!(
                m.contains(msg),
                "[{}] {what}: message {m:?} lacks {msg:?}",
                h.db
            );
        }
        let (s, v) = h
            .call(
                "PATCH",
                "/api/v1/tenants/acme/cvlans/lab",
                Some(&h.root),
                Some(json!({"ipv4Prefix": "10.99.0.0/24"})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "prefixes are immutable: {v}");
        let (s, _) = h
            .call(
                "POST",
                "/api/v1/tenants/acme/cvlans/lab/addresses",
                Some(&h.root),
                Some(json!({"address": "10.99.0.1"})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "address outside the prefix");
        let (s, _) = h.call("POST", "/api/v1/tenants/acme/policies", Some(&h.root), Some(json!({"name": "p", "rules": [{"sources": [{"any": true}], "destinations": [{"group": "ghost"}], "action": "ACTION_ALLOW"}]}))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "reference to a missing group");
        let list = h.ok("GET", "/api/v1/tenants/acme/cvlans", None).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert_eq!(
            h.audit_count().await,
            before,
            "[{}] failed requests wrote audit rows",
            h.db
        );
    }
}

#[tokio::test]
async fn ipam_hands_out_2000_distinct_addresses_to_200_concurrent_clients_then_reports_exhaustion()
{
    for db in databases().await {
        let h = Arc::new(H::new(&db).await);
        h.ok("POST", "/api/v1/tenants", Some(json!({"name": "acme"})))
            .await;
        // A /21 holds 2046 host addresses.
        h.ok(
            "POST",
            "/api/v1/tenants/acme/cvlans",
            Some(json!({"name": "big", "ipv4Prefix": "10.64.0.0/21"})),
        )
        .await;
        let mut tasks = Vec::new();
        for c in 0..200 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..10 {
                    let (s, v) = h
                        .call(
                            "POST",
                            "/api/v1/tenants/acme/cvlans/big/addresses",
                            Some(&h.root),
                            Some(json!({"description": format!("client {c}")})),
                        )
                        .await;
                    assert_eq!(s, StatusCode::CREATED, "{v}");
                    got.push(v["address"].as_str().unwrap().to_string());
                }
                got
            }));
        }
        let mut all = HashSet::new();
        for t in tasks {
            for a in t.await.unwrap() {
                assert!(all.insert(a.clone()), "[{}] duplicate address {a}", h.db);
            }
        }
        assert_eq!(all.len(), 2000);
        let mut extra = 0;
        loop {
            let (s, v) = h
                .call(
                    "POST",
                    "/api/v1/tenants/acme/cvlans/big/addresses",
                    Some(&h.root),
                    Some(json!({})),
                )
                .await;
            if s == StatusCode::CONFLICT {
                assert_eq!(v["error"]["code"], "exhausted", "{v}");
                break;
            }
            assert_eq!(s, StatusCode::CREATED);
            assert!(all.insert(v["address"].as_str().unwrap().to_string()));
            extra += 1;
        }
        assert_eq!(extra, 46);
        let n: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT host_offset) FROM addresses")
            .fetch_one(h.app.svc.store.pool())
            .await
            .unwrap();
        assert_eq!(n, 2046);
        let audits: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE action = 'address.create'")
                .fetch_one(h.app.svc.store.pool())
                .await
                .unwrap();
        assert_eq!(
            audits, 2046,
            "one audit event per allocation, in the same transaction"
        );
    }
}

#[tokio::test]
async fn a_second_replica_on_the_same_database_never_duplicates_an_address() {
    for db in databases().await {
        let h1 = Arc::new(H::new(&db).await);
        h1.ok("POST", "/api/v1/tenants", Some(json!({"name": "acme"})))
            .await;
        h1.ok(
            "POST",
            "/api/v1/tenants/acme/cvlans",
            Some(json!({"name": "lab", "ipv4Prefix": "10.5.0.0/24"})),
        )
        .await;
        // Another process-like instance: its own pool and its own IPAM cache.
        let h2 = Arc::new(H::new(&db).await);
        let mut tasks = Vec::new();
        for i in 0..100 {
            let h = if i % 2 == 0 { h1.clone() } else { h2.clone() };
            tasks.push(tokio::spawn(async move {
                let (s, v) = h
                    .call(
                        "POST",
                        "/api/v1/tenants/acme/cvlans/lab/addresses",
                        Some(&h.root),
                        Some(json!({})),
                    )
                    .await;
                assert_eq!(s, StatusCode::CREATED, "{v}");
                v["address"].as_str().unwrap().to_string()
            }));
        }
        let mut seen = HashSet::new();
        for t in tasks {
            assert!(seen.insert(t.await.unwrap()));
        }
        assert_eq!(seen.len(), 100);
    }
}

#[tokio::test]
async fn audit_rows_exist_exactly_when_the_mutation_committed() {
    for db in databases().await {
        let h = H::new(&db).await;
        h.ok("POST", "/api/v1/tenants", Some(json!({"name": "acme"})))
            .await;
        let n0 = h.audit_count().await;
        h.ok(
            "POST",
            "/api/v1/tenants/acme/groups",
            Some(json!({"name": "eng"})),
        )
        .await;
        assert_eq!(h.audit_count().await, n0 + 1);
        // Fails after reading inside the transaction (duplicate name at insert).
        let (s, _) = h
            .call(
                "POST",
                "/api/v1/tenants/acme/groups",
                Some(&h.root),
                Some(json!({"name": "eng"})),
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT);
        assert_eq!(h.audit_count().await, n0 + 1);
        // Fails in the delete hook, after the row was read in the same transaction.
        h.ok("POST", "/api/v1/tenants/acme/policies", Some(json!({"name": "p", "rules": [{"sources": [{"group": "eng"}], "destinations": [{"any": true}], "action": "ACTION_ALLOW"}]}))).await;
        let n1 = h.audit_count().await;
        let (s, _) = h
            .call(
                "DELETE",
                "/api/v1/tenants/acme/groups/eng",
                Some(&h.root),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT);
        assert_eq!(h.audit_count().await, n1);
        let g = h.ok("GET", "/api/v1/tenants/acme/groups/eng", None).await;
        assert_eq!(g["name"], "eng", "the group survived");
        // A transaction dropped after writing both row and audit leaves neither.
        {
            let mut w = h.app.svc.store.begin_write().await.unwrap();
            let grp = cvlan_proto::v1::Group {
                id: cvlan_store::entity::new_id(),
                tenant_id: g["tenantId"].as_str().unwrap().into(),
                name: "ghost".into(),
                ..Default::default()
            };
            cvlan_store::entity::insert(w.conn(), &grp).await.unwrap();
            let ev = cvlan_store::audit::AuditRecord::default().event(
                "group.create",
                "group",
                &grp.id,
                json!({}),
            );
            cvlan_store::audit::insert(w.conn(), &ev).await.unwrap();
        }
        assert_eq!(h.audit_count().await, n1);
        let (s, _) = h
            .call(
                "GET",
                "/api/v1/tenants/acme/groups/ghost",
                Some(&h.root),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn login_is_throttled_per_account_and_never_says_which_part_was_wrong() {
    for db in databases().await {
        let h = H::new(&db).await;
        let (s1, v1) = h
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"email": common::ROOT_EMAIL, "password": "wrong-password"})),
            )
            .await;
        let (s2, v2) = h
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"email": "nobody@x.test", "password": "wrong-password"})),
            )
            .await;
        assert_eq!(
            (s1, s2),
            (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
        );
        assert_eq!(v1, v2);
        for _ in 0..12 {
            h.call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"email": common::ROOT_EMAIL, "password": "wrong-password"})),
            )
            .await;
        }
        let (s, _) = h
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"email": common::ROOT_EMAIL, "password": common::ROOT_PW})),
            )
            .await;
        assert_eq!(
            s,
            StatusCode::TOO_MANY_REQUESTS,
            "even the right password waits out the lock"
        );
    }
}

#[tokio::test]
async fn the_retention_job_runs_once_across_replicas_and_deletes_only_old_events() {
    for db in databases().await {
        let h1 = H::new(&db).await;
        let h2 = H::new(&db).await;
        let old = cvlan_store::audit::AuditRecord::default().event("x.old", "x", "1", json!({}));
        let mut old = old;
        old.time = Some(cvlan_store::time::ts(
            cvlan_store::time::now_micros() - 100 * 86400 * 1_000_000,
        ));
        {
            let mut w = h1.app.svc.store.begin_write().await.unwrap();
            cvlan_store::audit::insert(w.conn(), &old).await.unwrap();
            w.commit().await.unwrap();
        }
        let before = h1.audit_count().await;
        let (r1, r2) = tokio::join!(
            cvlan_api::jobs::run_due(&h1.app.svc, "replica-1"),
            cvlan_api::jobs::run_due(&h2.app.svc, "replica-2")
        );
        let mut ran = r1.unwrap();
        ran.extend(r2.unwrap());
        ran.sort_unstable();
        assert_eq!(
            ran,
            [
                cvlan_api::jobs::AUDIT_RETENTION,
                cvlan_api::jobs::EPHEMERAL_GC,
                cvlan_api::jobs::SESSION_GC
            ],
            "[{}] each job ran on exactly one replica",
            h1.db
        );
        // The old event is gone, a retention event was added, recent ones stay.
        assert_eq!(h1.audit_count().await, before);
        let (_, _, status) = h1
            .app
            .svc
            .store
            .job_state(cvlan_api::jobs::AUDIT_RETENTION)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, "ok: deleted 1");
        // Not due again until tomorrow, even after a "restart" (a new handle).
        let h3 = H::new(&db).await;
        assert!(
            cvlan_api::jobs::run_due(&h3.app.svc, "replica-3")
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn a_database_made_by_the_first_schema_migrates_and_keeps_its_data() {
    for db in databases().await {
        let first = cvlan_store::Store::open_at_version(&db.url, 1)
            .await
            .unwrap();
        let t = cvlan_proto::v1::Tenant {
            id: cvlan_store::entity::new_id(),
            name: "old".into(),
            ..Default::default()
        };
        {
            let mut c = first.pool().acquire().await.unwrap();
            cvlan_store::entity::insert(&mut c, &t).await.unwrap();
            let tables: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
                .fetch_one(&mut *c)
                .await
                .unwrap();
            assert_eq!(tables, 1);
        }
        first.close().await;
        let h = H::new(&db).await;
        let got = h.ok("GET", "/api/v1/tenants/old", None).await;
        assert_eq!(got["id"], t.id.as_str());
        let v: i64 = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(h.app.svc.store.pool())
            .await
            .unwrap();
        assert_eq!(v, cvlan_store::MIGRATIONS.len() as i64);
    }
}

#[tokio::test]
async fn grpc_admin_service_shares_auth_and_rbac_with_rest() {
    use common::auth;
    use cvlan_proto::v1 as pb;
    for db in databases().await {
        let h = H::new(&db).await;
        let (_, _, viewer) = h.tenant_with_users("acme", "10.7.0.0/24").await;
        let mut g = h.grpc().await;
        let c = &mut g.client;
        let login = c
            .login(pb::LoginRequest {
                email: common::ROOT_EMAIL.into(),
                password: common::ROOT_PW.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let cv = c
            .create_cvlan(auth(
                &login.token,
                pb::CreateCvlanRequest {
                    tenant: "acme".into(),
                    body: Some(pb::Cvlan {
                        name: "grpc".into(),
                        ipv4_prefix: "10.8.0.0/24".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(cv.name, "grpc");
        let list = c
            .list_cvlans(auth(
                &viewer,
                pb::ListRequest {
                    tenant: "acme".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.items.len(), 2);
        let denied = c
            .create_cvlan(auth(
                &viewer,
                pb::CreateCvlanRequest {
                    tenant: "acme".into(),
                    body: Some(pb::Cvlan {
                        name: "no".into(),
                        ipv4_prefix: "10.9.0.0/24".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let unauth = c
            .list_tenants(pb::ListRequest::default())
            .await
            .unwrap_err();
        assert_eq!(unauth.code(), tonic::Code::Unauthenticated);
        let bad = c
            .create_cvlan(auth(
                &login.token,
                pb::CreateCvlanRequest {
                    tenant: "acme".into(),
                    body: Some(pb::Cvlan {
                        name: "bad".into(),
                        ipv4_prefix: "nope".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        g.stop().await;
    }
}

#[tokio::test]
async fn each_tier_serves_only_its_own_endpoints() {
    for db in databases().await {
        let h = H::new(&db).await;
        h.ok("POST", "/api/v1/tenants", Some(json!({"name": "acme"})))
            .await;
        h.ok(
            "POST",
            "/api/v1/tenants/acme/cvlans",
            Some(json!({"name": "lab", "ipv4Prefix": "10.3.0.0/24"})),
        )
        .await;
        let tok = h
            .ok(
                "POST",
                "/api/v1/tenants/acme/tokens",
                Some(json!({"cvlanId": "lab"})),
            )
            .await;
        let token = tok["token"].as_str().unwrap().to_string();
        for (mode, admin_ok, verify_ok) in [
            (cvlan_api::Mode::Discovery, false, false),
            (cvlan_api::Mode::Registration, false, true),
            (cvlan_api::Mode::Session, true, false),
        ] {
            let app = cvlan_api::build_app(h.app.svc.store.clone(), mode, Default::default())
                .await
                .unwrap();
            let tier = H {
                app: app.clone(),
                router: cvlan_api::router(app),
                root: h.root.clone(),
                db: h.db,
            };
            let (s, v) = tier.call("GET", "/api/v1/discovery", None, None).await;
            assert_eq!(s, StatusCode::OK, "{mode:?} discovery: {v}");
            let (s, _) = tier
                .call("GET", "/api/v1/tenants", Some(&h.root), None)
                .await;
            assert_eq!(s == StatusCode::OK, admin_ok, "{mode:?} admin API");
            let (s, _) = tier
                .call(
                    "POST",
                    "/api/v1/tokens/verify",
                    None,
                    Some(json!({"token": token})),
                )
                .await;
            assert_eq!(
                s == StatusCode::OK,
                verify_ok,
                "{mode:?} token verification"
            );
            assert_eq!(
                tier.call("GET", "/healthz", None, None).await.0,
                StatusCode::OK
            );
        }
        // Discovery is rate-limited per source: the burst passes, then 429.
        let mut limited = false;
        for _ in 0..400 {
            if h.call("GET", "/api/v1/discovery", None, None).await.0
                == StatusCode::TOO_MANY_REQUESTS
            {
                limited = true;
                break;
            }
        }
        assert!(limited, "discovery was never rate-limited");
    }
}
