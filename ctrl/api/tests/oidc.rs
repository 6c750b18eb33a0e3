//! Single sign-on configuration and the sign-in endpoints' refusals, on SQLite and PostgreSQL.
//! The whole flow through a real OpenID provider runs in the browser test (ui/e2e).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{H, databases};
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &str = "client-secret-value-0123456789";

/// A GET without following redirects: status, Location and Set-Cookie headers.
async fn get_raw(h: &H, path: &str, cookie: Option<&str>) -> (StatusCode, String, Vec<String>) {
    let mut b = Request::builder().method("GET").uri(path);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    let res = h
        .router
        .clone()
        .oneshot(b.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let loc = res
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let cookies = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    (res.status(), loc, cookies)
}

fn login_error(loc: &str) -> String {
    assert!(
        loc.starts_with("/login?error="),
        "not a sign-in page redirect: {loc}"
    );
    let q = loc.trim_start_matches("/login?");
    url_decode(q.trim_start_matches("error="))
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

async fn provider_body(h: &H, tenant: &str) -> Value {
    let g = h
        .ok(
            "POST",
            &format!("/api/v1/tenants/{tenant}/groups"),
            Some(json!({"name": "engineers"})),
        )
        .await;
    json!({
        "name": "corp",
        "displayName": "Corp SSO",
        "issuer": "https://idp.example.com",
        "clientId": "cvlan",
        "clientSecret": SECRET,
        "allowedDomains": ["example.com"],
        "groupMappings": [{"claimValue": "eng", "group": g["id"]}],
        "defaultRole": "ROLE_OPERATOR",
        "enabled": true
    })
}

#[tokio::test]
async fn sso_providers_are_managed_by_tenant_admins_and_never_reveal_the_client_secret() {
    for db in databases().await {
        let h = H::new(&db).await;
        let (admin, op, viewer) = h.tenant_with_users("alpha", "10.1.0.0/16").await;
        let (beta_admin, _, _) = h.tenant_with_users("beta", "10.2.0.0/16").await;
        let base = "/api/v1/tenants/alpha/oidc-providers";
        let body = provider_body(&h, "alpha").await;

        // Roles: operators and viewers cannot configure sign-in; other tenants see nothing.
        let (s, _) = h.call("POST", base, Some(&op), Some(body.clone())).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = h
            .call("POST", base, Some(&viewer), Some(body.clone()))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, p) = h.call("POST", base, Some(&admin), Some(body.clone())).await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        let id = p["id"].as_str().unwrap().to_string();
        assert_eq!(p["clientSecretSet"], true);
        assert!(p.get("clientSecret").is_none(), "secret returned: {p}");
        let (s, _) = h
            .call("GET", &format!("{base}/{id}"), Some(&beta_admin), None)
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, got) = h
            .call("GET", &format!("{base}/corp"), Some(&viewer), None)
            .await;
        assert_eq!(s, StatusCode::OK);
        assert!(!got.to_string().contains(SECRET));

        // The secret lives only in its column: not in the body, the list, or the audit log.
        let (body_col, secret_col): (String, String) =
            sqlx::query_as("SELECT body, client_secret FROM oidc_providers WHERE id = $1")
                .bind(&id)
                .fetch_one(h.app.svc.store.pool())
                .await
                .unwrap();
        assert!(!body_col.contains(SECRET));
        assert_eq!(secret_col, SECRET);
        let list = h.ok("GET", base, None).await;
        assert!(!list.to_string().contains(SECRET));
        let audit = h.ok("GET", "/api/v1/tenants/alpha/audit", None).await;
        assert!(audit.to_string().contains("identity provider.create"));
        assert!(!audit.to_string().contains(SECRET));

        // Updates keep the secret unless a new one is given; the flag cannot be forged.
        let (s, p) = h
            .call(
                "PATCH",
                &format!("{base}/{id}"),
                Some(&admin),
                Some(json!({"displayName": "Corp"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{p}");
        assert_eq!(p["clientSecretSet"], true);
        let (s, _) = h
            .call(
                "PATCH",
                &format!("{base}/{id}"),
                Some(&admin),
                Some(json!({"clientSecretSet": false})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        h.ok(
            "PATCH",
            &format!("{base}/{id}"),
            Some(json!({"clientSecret": "rotated-secret-987654321"})),
        )
        .await;
        let (secret_col,): (String,) =
            sqlx::query_as("SELECT client_secret FROM oidc_providers WHERE id = $1")
                .bind(&id)
                .fetch_one(h.app.svc.store.pool())
                .await
                .unwrap();
        assert_eq!(secret_col, "rotated-secret-987654321");
        // Pointing the provider elsewhere without a new secret forgets the old one.
        let (s, p) = h
            .call(
                "PATCH",
                &format!("{base}/{id}"),
                Some(&admin),
                Some(json!({"issuer": "https://other-idp.example.com"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{p}");
        assert_ne!(p["clientSecretSet"], true, "{p}");
        let (secret_col,): (String,) =
            sqlx::query_as("SELECT client_secret FROM oidc_providers WHERE id = $1")
                .bind(&id)
                .fetch_one(h.app.svc.store.pool())
                .await
                .unwrap();
        assert_eq!(secret_col, "");

        // Bad input: a clear 400 and nothing written.
        let before = h.audit_count().await;
        let g = body["groupMappings"][0]["group"].clone();
        for (patch, words) in [
            (
                json!({"name": "other", "issuer": "http://idp.example.com"}),
                "https",
            ),
            (json!({"name": "other", "issuer": "not a url"}), "not a URL"),
            (
                json!({"name": "other", "issuer": "https://idp.example.com/?x=1"}),
                "query",
            ),
            (
                json!({"name": "other", "defaultRole": "ROLE_SUPERADMIN"}),
                "superadmin",
            ),
            (
                json!({"name": "other", "allowedDomains": ["Example.COM"]}),
                "allowedDomains",
            ),
            (json!({"name": "other", "clientId": ""}), "clientId"),
            (
                json!({"name": "other", "groupMappings": [{"claimValue": "eng", "group": "engineers"}]}),
                "by its id",
            ),
            (
                json!({"name": "other", "groupMappings": [{"claimValue": "", "group": g}]}),
                "claimValue",
            ),
            (json!({"name": "other", "scopes": ["bad scope"]}), "scope"),
            (json!({"name": "corp"}), "exists"),
        ] {
            let mut b = body.clone();
            for (k, v) in patch.as_object().unwrap() {
                b[k] = v.clone();
            }
            let (s, v) = h.call("POST", base, Some(&admin), Some(b)).await;
            assert!(
                s == StatusCode::BAD_REQUEST || s == StatusCode::CONFLICT,
                "{patch}: {s} {v}"
            );
            let msg = v["error"]["message"].as_str().unwrap().to_lowercase();
            assert!(msg.contains(&words.to_lowercase()), "{patch}: {msg}");
        }
        assert_eq!(h.audit_count().await, before);

        // A mapped group cannot disappear under the provider.
        let (s, v) = h
            .call(
                "DELETE",
                &format!("/api/v1/tenants/alpha/groups/{}", g.as_str().unwrap()),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("single sign-on")
        );

        // The sign-in page learns names and labels only, of enabled providers.
        let (s, pubv) = h
            .call(
                "GET",
                "/api/v1/auth/oidc/providers?tenant=alpha",
                None,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            pubv,
            json!({"items": [{"name": "corp", "displayName": "Corp"}]})
        );
        h.ok(
            "PATCH",
            &format!("{base}/{id}"),
            Some(json!({"enabled": false})),
        )
        .await;
        let (_, pubv) = h
            .call(
                "GET",
                "/api/v1/auth/oidc/providers?tenant=alpha",
                None,
                None,
            )
            .await;
        assert_eq!(pubv, json!({"items": []}));
        let (_, pubv) = h
            .call("GET", "/api/v1/auth/oidc/providers?tenant=nope", None, None)
            .await;
        assert_eq!(pubv, json!({"items": []}));

        // Deleting the tenant's provider works for its admin only.
        let (s, _) = h
            .call("DELETE", &format!("{base}/{id}"), Some(&op), None)
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = h
            .call("DELETE", &format!("{base}/{id}"), Some(&admin), None)
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
}

#[tokio::test]
async fn sign_in_endpoints_refuse_unknown_providers_stale_states_and_foreign_browsers() {
    for db in databases().await {
        let h = H::new(&db).await;
        let (admin, _, _) = h.tenant_with_users("alpha", "10.1.0.0/16").await;
        let mut body = provider_body(&h, "alpha").await;
        body["issuer"] = json!("http://127.0.0.1:1");
        let (s, p) = h
            .call(
                "POST",
                "/api/v1/tenants/alpha/oidc-providers",
                Some(&admin),
                Some(body),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        let pid = p["id"].as_str().unwrap().to_string();
        let start = "/api/v1/auth/oidc/start";

        let (s, loc, _) = get_raw(&h, &format!("{start}?tenant=alpha&provider=nope"), None).await;
        assert_eq!(s, StatusCode::FOUND);
        assert!(
            login_error(&loc).contains("no single sign-on named"),
            "{loc}"
        );
        let (_, loc, _) = get_raw(&h, &format!("{start}?tenant=beta&provider=corp"), None).await;
        assert!(
            login_error(&loc).contains("no single sign-on named"),
            "{loc}"
        );
        // Providers on loopback are refused unless the operator allows them (development):
        // the control plane is not a way to reach its own host's services.
        let (_, loc, cookies) =
            get_raw(&h, &format!("{start}?tenant=alpha&provider=corp"), None).await;
        assert!(login_error(&loc).contains("--oidc-allow-loopback"), "{loc}");
        assert!(cookies.is_empty());
        // Only this site's own pages (or a typed URL) may start a sign-in (login CSRF).
        let req = Request::builder()
            .uri(format!("{start}?tenant=alpha&provider=corp"))
            .header("sec-fetch-site", "cross-site")
            .body(Body::empty())
            .unwrap();
        let res = h.router.clone().oneshot(req).await.unwrap();
        let loc = res.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            login_error(&loc).contains("this site's sign-in page"),
            "{loc}"
        );

        // Callbacks: missing or unknown state.
        let cb = format!("/api/v1/auth/oidc/callback/{pid}");
        let (_, loc, _) = get_raw(&h, &format!("{cb}?code=x"), None).await;
        assert!(login_error(&loc).contains("incomplete"), "{loc}");
        let (_, loc, _) = get_raw(&h, &format!("{cb}?code=x&state=unknown"), None).await;
        assert!(login_error(&loc).contains("expired"), "{loc}");

        // A pending sign-in is bound to the browser that started it and used once.
        let hash = cvlan_api::secrets::token_hash;
        let far = cvlan_store::time::now_micros() + 600_000_000;
        for (state, exp) in [
            ("state-1", far),
            ("state-old", 1),
            ("state-mixup", far),
            ("state-iss", far),
            ("state-2", far),
        ] {
            sqlx::query("INSERT INTO oidc_logins (state_hash, provider_id, binding_hash, nonce, pkce_verifier, return_to, expires_at) VALUES ($1, $2, $3, 'n', 'v', '/', $4)")
                .bind(hash(state))
                .bind(&pid)
                .bind(hash("browser-a"))
                .bind(exp)
                .execute(h.app.svc.store.pool())
                .await
                .unwrap();
        }
        let a = Some("cvlan_sso=browser-a");
        let (_, loc, cookies) = get_raw(
            &h,
            &format!("{cb}?code=x&state=state-1"),
            Some("cvlan_sso=browser-b"),
        )
        .await;
        assert!(login_error(&loc).contains("another browser"), "{loc}");
        assert!(cookies.iter().all(|c| !c.starts_with("cvlan_session=")));
        let (_, loc, _) = get_raw(&h, &format!("{cb}?code=x&state=state-1"), a).await;
        assert!(login_error(&loc).contains("already used"), "{loc}");
        let (_, loc, _) = get_raw(&h, &format!("{cb}?code=x&state=state-old"), a).await;
        assert!(login_error(&loc).contains("expired"), "{loc}");
        // An answer arriving at another provider's redirect URI is never exchanged (mix-up).
        let (_, loc, _) = get_raw(
            &h,
            "/api/v1/auth/oidc/callback/some-other-provider?code=x&state=state-mixup",
            a,
        )
        .await;
        assert!(login_error(&loc).contains("another provider"), "{loc}");
        // RFC 9207: an answer naming another issuer is refused before any exchange.
        let (_, loc, _) = get_raw(
            &h,
            &format!("{cb}?code=x&state=state-iss&iss=https%3A%2F%2Fevil.example"),
            a,
        )
        .await;
        assert!(
            login_error(&loc).contains("another identity provider"),
            "{loc}"
        );

        // The provider's own refusal is passed on (its code only, never free text) and audited.
        let (_, loc, _) = get_raw(
            &h,
            &format!(
                "{cb}?error=access_denied%3Cb%3E&error_description=Call+0800+now&state=state-2"
            ),
            a,
        )
        .await;
        let shown = login_error(&loc);
        assert!(shown.contains("(access_denied)"), "{shown}");
        assert!(
            !shown.contains("0800") && !shown.contains('<'),
            "free text shown: {shown}"
        );
        let audit = h
            .ok(
                "GET",
                "/api/v1/tenants/alpha/audit?action=auth.sso_refused",
                None,
            )
            .await;
        // The mix-up refusal has no trusted provider to file it under; the other two are.
        assert_eq!(audit["items"].as_array().unwrap().len(), 2, "{audit}");
        assert!(!audit.to_string().contains("0800"));
    }
}

#[tokio::test]
async fn grpc_manages_sso_providers_with_the_same_rules_and_no_secret_in_answers() {
    use common::auth;
    use cvlan_proto::v1 as pb;
    for db in databases().await {
        let h = H::new(&db).await;
        let (admin, _, viewer) = h.tenant_with_users("acme", "10.7.0.0/24").await;
        let mut g = h.grpc().await;
        let c = &mut g.client;
        let body = pb::OidcProvider {
            name: "corp".into(),
            issuer: "https://idp.example.com".into(),
            client_id: "cvlan".into(),
            client_secret: SECRET.into(),
            enabled: true,
            ..Default::default()
        };
        let req = |b: pb::OidcProvider| pb::CreateOidcProviderRequest {
            tenant: "acme".into(),
            body: Some(b),
        };
        let e = c
            .create_oidc_provider(auth(&viewer, req(body.clone())))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let bad = pb::OidcProvider {
            issuer: "ftp://idp.example.com".into(),
            ..body.clone()
        };
        let e = c
            .create_oidc_provider(auth(&admin, req(bad)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        let created = c
            .create_oidc_provider(auth(&admin, req(body)))
            .await
            .unwrap()
            .into_inner();
        assert!(created.client_secret.is_empty() && created.client_secret_set);
        let got = c
            .get_oidc_provider(auth(
                &viewer,
                pb::ObjectRef {
                    tenant: "acme".into(),
                    id: "corp".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.id, created.id);
        assert!(got.client_secret.is_empty() && got.client_secret_set);
        let listed = c
            .list_oidc_providers(auth(
                &admin,
                pb::ListRequest {
                    tenant: "acme".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.items.len(), 1);
        c.delete_oidc_provider(auth(
            &admin,
            pb::ObjectRef {
                tenant: "acme".into(),
                id: created.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
        g.stop().await;
    }
}
