//! OpenID Connect single sign-on: a tenant's providers (stored as `OidcProvider` objects), the
//! authorization code flow with PKCE, ID token verification (the `openidconnect` crate), the
//! user created at the first sign-in, and IdP groups mapped onto tenant groups.
//!
//! A sign-in is a row in `oidc_logins` (hash of the `state`, PKCE verifier, nonce, where to go
//! afterwards), bound to the browser that started it by a cookie whose hash is stored beside it,
//! used once and only for ten minutes. Replicas share it through the database.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use cvlan_proto::v1::{self as pb, Role};
use cvlan_store::audit::{self, AuditRecord};
use cvlan_store::entity::{self, Col, Scope};
use cvlan_store::time;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope as OidcScope, TokenResponse,
};
use serde_json::{Value, json};
use sqlx::AnyConnection;

use crate::error::{ApiError, ApiResult};
use crate::secrets::{self, Secret};
use crate::service::Service;

/// How long a started sign-in may take.
const LOGIN_TTL_SECS: i64 = 600;
/// How long discovered provider metadata (endpoints, keys) is reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);

/// Client-side state shared by all sign-ins of a process.
pub struct Sso {
    http: reqwest::Client,
    discovered: Mutex<HashMap<String, (Instant, CoreProviderMetadata)>>,
}

impl Sso {
    /// An HTTP client that never follows redirects (the openidconnect crate's advice against
    /// SSRF through a provider's responses) and gives up after 10 s.
    ///
    /// # Errors
    /// The TLS backend could not be initialised.
    pub fn new() -> ApiResult<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ApiError::Internal(e.into()))?;
        Ok(Sso {
            http,
            discovered: Mutex::new(HashMap::new()),
        })
    }

    async fn metadata(&self, issuer: &str) -> Result<CoreProviderMetadata, String> {
        if let Ok(m) = self.discovered.lock()
            && let Some((at, md)) = m.get(issuer)
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(md.clone());
        }
        let url = IssuerUrl::new(issuer.to_string()).map_err(|e| format!("issuer URL: {e}"))?;
        let md = CoreProviderMetadata::discover_async(url, &self.http)
            .await
            .map_err(|e| format!("could not read the provider's discovery document: {e}"))?;
        if let Ok(mut m) = self.discovered.lock() {
            m.insert(issuer.to_string(), (Instant::now(), md.clone()));
        }
        Ok(md)
    }
}

/// A refusal shown to the person signing in (and recorded in the tenant's audit log).
#[derive(Debug)]
pub struct Refused(pub String);

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Refused(e.to_string())
    }
}

impl From<cvlan_store::StoreError> for Refused {
    fn from(e: cvlan_store::StoreError) -> Self {
        Refused::from(ApiError::from(e))
    }
}

impl From<sqlx::Error> for Refused {
    fn from(e: sqlx::Error) -> Self {
        Refused::from(cvlan_store::StoreError::from(e))
    }
}

/// A provider offered on the sign-in page.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Offered {
    /// Provider name (used in the start link).
    pub name: String,
    /// Button label.
    pub display_name: String,
}

/// A finished sign-in.
pub struct SignedIn {
    /// Session token (goes into the cookie).
    pub token: Secret,
    /// Session expiry, microseconds.
    pub expires: i64,
    /// Where the browser goes next (a local path).
    pub return_to: String,
}

/// Keeps only local paths, so a sign-in can never send the browser elsewhere.
pub fn local_path(p: &str) -> String {
    let ok = p.starts_with('/')
        && !p.starts_with("//")
        && !p.contains('\\')
        && !p.chars().any(char::is_control)
        && p.len() <= 1024;
    if ok { p.to_string() } else { "/".into() }
}

fn sha(s: &str) -> String {
    secrets::token_hash(s)
}

impl Service {
    async fn sso_tenant_provider(
        &self,
        c: &mut AnyConnection,
        tenant: &str,
        provider: &str,
    ) -> Result<(pb::Tenant, pb::OidcProvider), Refused> {
        let unknown = || {
            Refused(format!(
                "no single sign-on named {provider:?} for {tenant:?}"
            ))
        };
        let t = entity::find::<pb::Tenant>(c, Scope::Global, tenant)
            .await?
            .ok_or_else(unknown)?;
        let p = entity::find::<pb::OidcProvider>(c, Scope::Tenant(&t.id), provider)
            .await?
            .filter(|p| p.enabled)
            .ok_or_else(unknown)?;
        Ok((t, p))
    }

    /// The enabled providers of a tenant (by name or id); none for an unknown tenant.
    ///
    /// # Errors
    /// Database errors.
    pub async fn sso_offered(&self, tenant: &str) -> ApiResult<Vec<Offered>> {
        let mut c = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(cvlan_store::StoreError::from)?;
        let Some(t) = entity::find::<pb::Tenant>(&mut c, Scope::Global, tenant).await? else {
            return Ok(Vec::new());
        };
        Ok(
            entity::list_all::<pb::OidcProvider>(&mut c, Scope::Tenant(&t.id))
                .await?
                .into_iter()
                .filter(|p| p.enabled)
                .map(|p| Offered {
                    display_name: if p.display_name.is_empty() {
                        p.name.clone()
                    } else {
                        p.display_name
                    },
                    name: p.name,
                })
                .collect(),
        )
    }

    fn sso_client(
        p: &pb::OidcProvider,
        secret: String,
        md: CoreProviderMetadata,
        redirect_uri: &str,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        Refused,
    > {
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|e| Refused(format!("redirect URI {redirect_uri:?}: {e}")))?;
        Ok(CoreClient::from_provider_metadata(
            md,
            ClientId::new(p.client_id.clone()),
            (!secret.is_empty()).then(|| ClientSecret::new(secret)),
        )
        .set_redirect_uri(redirect))
    }

    /// Starts a sign-in: returns the provider's authorization URL and the browser-binding
    /// secret (to be set as a cookie).
    ///
    /// # Errors
    /// [`Refused`] with a message for the person (unknown provider, provider unreachable).
    pub async fn sso_start(
        &self,
        tenant: &str,
        provider: &str,
        return_to: &str,
        redirect_uri: &str,
    ) -> Result<(String, Secret), Refused> {
        let p = {
            let mut c = self
                .store
                .pool()
                .acquire()
                .await
                .map_err(cvlan_store::StoreError::from)?;
            self.sso_tenant_provider(&mut c, tenant, provider).await?.1
        };
        let md = self.sso.metadata(&p.issuer).await.map_err(Refused)?;
        let client = Self::sso_client(&p, String::new(), md, redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(OidcScope::new("email".into()))
            .add_scope(OidcScope::new("profile".into()))
            .set_pkce_challenge(challenge);
        for s in &p.scopes {
            req = req.add_scope(OidcScope::new(s.clone()));
        }
        let (url, state, nonce) = req.url();
        let binding = secrets::random_token("");
        let now = time::now_micros();
        let mut w = self.store.begin_write().await?;
        // Abandoned sign-ins go away with the next one.
        sqlx::query("DELETE FROM oidc_logins WHERE expires_at < $1")
            .bind(now)
            .execute(w.conn())
            .await?;
        sqlx::query(
            "INSERT INTO oidc_logins (state_hash, provider_id, binding_hash, nonce, pkce_verifier, return_to, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(sha(state.secret()))
        .bind(&p.id)
        .bind(sha(&binding.0))
        .bind(nonce.secret().clone())
        .bind(verifier.secret().clone())
        .bind(local_path(return_to))
        .bind(now + LOGIN_TTL_SECS * 1_000_000)
        .execute(w.conn())
        .await?;
        w.commit().await?;
        Ok((url.to_string(), binding))
    }

    /// Finishes a sign-in from the provider's redirect: checks the state and its browser
    /// binding, exchanges the code (with the PKCE verifier), verifies the ID token (signature,
    /// issuer, audience, expiry, nonce), applies the provider's rules and opens a session.
    ///
    /// # Errors
    /// [`Refused`] with a message for the person; refusals after the state checks are audited
    /// in the tenant's log.
    pub async fn sso_callback(
        &self,
        state: &str,
        code: &str,
        idp_error: Option<&str>,
        binding: Option<&str>,
        redirect_uri: &str,
        source: &str,
    ) -> Result<SignedIn, Refused> {
        let expired =
            || Refused("this sign-in link has expired or was already used; start again".into());
        let mut w = self.store.begin_write().await?;
        let row: Option<(String, String, String, String, String, i64)> = sqlx::query_as(
            "SELECT provider_id, binding_hash, nonce, pkce_verifier, return_to, expires_at \
             FROM oidc_logins WHERE state_hash = $1",
        )
        .bind(sha(state))
        .fetch_optional(w.conn())
        .await?;
        sqlx::query("DELETE FROM oidc_logins WHERE state_hash = $1")
            .bind(sha(state))
            .execute(w.conn())
            .await?;
        w.commit().await?;
        let (provider_id, binding_hash, nonce, verifier, return_to, expires_at) =
            row.ok_or_else(expired)?;
        if expires_at < time::now_micros() {
            return Err(expired());
        }
        if binding.map(sha).as_deref() != Some(binding_hash.as_str()) {
            return Err(Refused(
                "this sign-in was started in another browser; start again here".into(),
            ));
        }
        let (p, secret) = {
            let mut c = self
                .store
                .pool()
                .acquire()
                .await
                .map_err(cvlan_store::StoreError::from)?;
            let Some((tid,)): Option<(String,)> =
                sqlx::query_as("SELECT tenant_id FROM oidc_providers WHERE id = $1")
                    .bind(&provider_id)
                    .fetch_optional(&mut *c)
                    .await?
            else {
                return Err(expired());
            };
            let p =
                entity::get::<pb::OidcProvider>(&mut c, Scope::Tenant(&tid), &provider_id).await?;
            let (secret,): (String,) =
                sqlx::query_as("SELECT client_secret FROM oidc_providers WHERE id = $1")
                    .bind(&provider_id)
                    .fetch_one(&mut *c)
                    .await?;
            (p, secret)
        };
        match self
            .sso_finish(
                &p,
                secret,
                code,
                idp_error,
                &nonce,
                verifier,
                redirect_uri,
                source,
            )
            .await
        {
            Ok((token, expires)) => Ok(SignedIn {
                token,
                expires,
                return_to,
            }),
            Err(Refused(why)) => {
                metrics::counter!("cvlan_logins_total", "result" => "sso_refused").increment(1);
                tracing::info!(provider = %p.name, tenant = %p.tenant_id, reason = %why, "single sign-on refused");
                let rec = AuditRecord {
                    actor_id: String::new(),
                    actor: String::new(),
                    tenant_id: p.tenant_id.clone(),
                    source_address: source.to_string(),
                };
                if let Ok(mut w) = self.store.begin_write().await {
                    let ev = rec.event(
                        "auth.sso_refused",
                        "identity provider",
                        &p.id,
                        json!({"provider": p.name, "reason": why}),
                    );
                    if audit::insert(w.conn(), &ev).await.is_ok() {
                        let _ = w.commit().await;
                    }
                }
                Err(Refused(why))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn sso_finish(
        &self,
        p: &pb::OidcProvider,
        secret: String,
        code: &str,
        idp_error: Option<&str>,
        nonce: &str,
        verifier: String,
        redirect_uri: &str,
        source: &str,
    ) -> Result<(Secret, i64), Refused> {
        if let Some(e) = idp_error {
            return Err(Refused(format!(
                "the identity provider did not sign you in ({})",
                e.chars().take(200).collect::<String>()
            )));
        }
        let md = self.sso.metadata(&p.issuer).await.map_err(Refused)?;
        let userinfo = md.userinfo_endpoint().map(|u| u.url().clone());
        let client = Self::sso_client(p, secret, md, redirect_uri)?;
        let tok = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| Refused(format!("the provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request_async(&self.sso.http)
            .await
            .map_err(|e| Refused(format!("the provider refused the sign-in code: {e}")))?;
        let id_token = tok
            .id_token()
            .ok_or_else(|| Refused("the provider returned no ID token".into()))?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &Nonce::new(nonce.to_string()))
            .map_err(|e| Refused(format!("the provider's ID token is not valid: {e}")))?;
        let subject = claims.subject().to_string();
        // The signature covers the whole payload; read the claims the standard set lacks
        // (groups) from the same, now verified, token.
        let mut raw = jwt_payload(&id_token.to_string()).unwrap_or_default();
        let want_groups = !p.group_mappings.is_empty();
        let groups_claim = if p.groups_claim.is_empty() {
            "groups"
        } else {
            p.groups_claim.as_str()
        };
        let mut email = claims.email().map(|e| e.as_str().to_string());
        let mut verified = claims.email_verified();
        let mut name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_string());
        if (email.is_none() || (want_groups && raw.get(groups_claim).is_none()))
            && let Some(u) = userinfo
        {
            let info: serde_json::Map<String, Value> = self
                .sso
                .http
                .get(u)
                .bearer_auth(tok.access_token().secret())
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| Refused(format!("could not read the provider's userinfo: {e}")))?
                .json()
                .await
                .map_err(|e| Refused(format!("the provider's userinfo is not JSON: {e}")))?;
            // OpenID Connect Core 5.3.2: userinfo is only about the ID token's subject.
            if info.get("sub").and_then(Value::as_str) != Some(subject.as_str()) {
                return Err(Refused(
                    "the provider's userinfo is about someone else".into(),
                ));
            }
            email = email.or_else(|| info.get("email").and_then(Value::as_str).map(String::from));
            verified = verified.or_else(|| info.get("email_verified").and_then(Value::as_bool));
            name = name.or_else(|| info.get("name").and_then(Value::as_str).map(String::from));
            for (k, v) in info {
                raw.entry(k).or_insert(v);
            }
        }
        let email = email
            .map(|e| e.trim().to_lowercase())
            .filter(|e| !e.is_empty())
            .ok_or_else(|| {
                Refused("the provider did not say who you are (no email claim)".into())
            })?;
        if verified == Some(false) {
            return Err(Refused(format!(
                "{email}: the identity provider has not verified this address"
            )));
        }
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if !p.allowed_domains.is_empty() && !p.allowed_domains.iter().any(|d| d == domain) {
            return Err(Refused(format!(
                "{email}: accounts of {domain:?} may not sign in here"
            )));
        }
        let idp_groups: Vec<String> = match raw.get(groups_claim) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };

        let mut w = self.store.begin_write().await?;
        let user = self
            .sso_user(w.conn(), p, &subject, &email, name, source)
            .await?;
        self.sso_sync_groups(w.conn(), p, &user, &idp_groups, source)
            .await?;
        let session = self
            .open_session(
                w.conn(),
                &user,
                source,
                json!({"method": "sso", "provider": p.name, "groups": idp_groups.len()}),
            )
            .await?;
        w.commit().await?;
        metrics::counter!("cvlan_logins_total", "result" => "success").increment(1);
        Ok(session)
    }

    /// The user an IdP subject signs in as: the one linked before, else the tenant's user with
    /// this email (linked now), else a new user with the provider's default role.
    async fn sso_user(
        &self,
        c: &mut AnyConnection,
        p: &pb::OidcProvider,
        subject: &str,
        email: &str,
        name: Option<String>,
        source: &str,
    ) -> Result<pb::User, Refused> {
        let scope = Scope::Tenant(&p.tenant_id);
        let linked: Option<(String,)> = sqlx::query_as(
            "SELECT user_id FROM oidc_identities WHERE provider_id = $1 AND subject = $2",
        )
        .bind(&p.id)
        .bind(subject)
        .fetch_optional(&mut *c)
        .await?;
        if let Some((uid,)) = linked {
            return Ok(entity::get::<pb::User>(c, scope, &uid).await?);
        }
        let by_email: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT id, tenant_id FROM users WHERE name = $1")
                .bind(email)
                .fetch_optional(&mut *c)
                .await?;
        let rec = AuditRecord {
            actor_id: String::new(),
            actor: email.to_string(),
            tenant_id: p.tenant_id.clone(),
            source_address: source.to_string(),
        };
        let user = match by_email {
            Some((id, Some(t))) if t == p.tenant_id => {
                entity::get::<pb::User>(c, scope, &id).await?
            }
            Some(_) => {
                return Err(Refused(format!(
                    "{email} already belongs to an account outside this tenant"
                )));
            }
            None => {
                let role = match Role::try_from(p.default_role) {
                    Ok(Role::Unspecified | Role::Superadmin) | Err(_) => Role::Viewer,
                    Ok(r) => r,
                };
                let mut u = pb::User {
                    id: entity::new_id(),
                    tenant_id: p.tenant_id.clone(),
                    email: email.to_string(),
                    display_name: name.unwrap_or_default().chars().take(200).collect(),
                    role: role as i32,
                    ..Default::default()
                };
                u.password.clear();
                entity::insert_with(c, &u, &[("role", Col::Int(i64::from(u.role)))]).await?;
                audit::insert(
                    c,
                    &AuditRecord {
                        actor_id: u.id.clone(),
                        ..rec.clone()
                    }
                    .event(
                        "user.create",
                        "user",
                        &u.id,
                        json!({"email": u.email, "role": role.as_str_name(), "via": "sso", "provider": p.name}),
                    ),
                )
                .await?;
                self.publish(&p.tenant_id, "user", &u.id, "create");
                entity::get::<pb::User>(c, scope, &u.id).await?
            }
        };
        sqlx::query(
            "INSERT INTO oidc_identities (provider_id, subject, user_id, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&p.id)
        .bind(subject)
        .bind(&user.id)
        .bind(time::now_micros())
        .execute(&mut *c)
        .await?;
        Ok(user)
    }

    /// Makes the user a member of exactly the mapped groups whose claim values the IdP sent
    /// (groups nobody mapped are left alone).
    async fn sso_sync_groups(
        &self,
        c: &mut AnyConnection,
        p: &pb::OidcProvider,
        user: &pb::User,
        idp_groups: &[String],
        source: &str,
    ) -> Result<(), Refused> {
        let mut want: BTreeMap<&str, bool> = BTreeMap::new();
        for m in &p.group_mappings {
            let on = idp_groups.contains(&m.claim_value);
            *want.entry(m.group.as_str()).or_default() |= on;
        }
        let scope = Scope::Tenant(&p.tenant_id);
        for (gid, on) in want {
            let Some(mut g) = entity::find::<pb::Group>(c, scope, gid).await? else {
                continue;
            };
            let is_member = |m: &pb::GroupMember| matches!(&m.member, Some(pb::group_member::Member::UserId(u)) if *u == user.id);
            let has = g.members.iter().any(is_member);
            if has == on {
                continue;
            }
            if on {
                g.members.push(pb::GroupMember {
                    member: Some(pb::group_member::Member::UserId(user.id.clone())),
                });
            } else {
                g.members.retain(|m| !is_member(m));
            }
            entity::update(c, &g).await?;
            let ev = AuditRecord {
                actor_id: user.id.clone(),
                actor: user.email.clone(),
                tenant_id: p.tenant_id.clone(),
                source_address: source.to_string(),
            }
            .event(
                "group.update",
                "group",
                &g.id,
                json!({"fields": ["members"], "via": "sso", "provider": p.name, "user": user.id, "member": on}),
            );
            audit::insert(c, &ev).await?;
            self.publish(&p.tenant_id, "group", &g.id, "update");
        }
        Ok(())
    }
}

/// The JSON payload of a compact JWS (already verified by the caller).
fn jwt_payload(jwt: &str) -> Option<serde_json::Map<String, Value>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths_stay_on_this_site() {
        assert_eq!(
            local_path("/tenants/acme/nodes?x=1"),
            "/tenants/acme/nodes?x=1"
        );
        for evil in [
            "https://evil.example/",
            "//evil.example/x",
            "/\\evil.example",
            "",
            "javascript:alert(1)",
            "/a\r\nSet-Cookie: x=1",
        ] {
            assert_eq!(local_path(evil), "/", "{evil:?}");
        }
    }

    #[test]
    fn jwt_payload_reads_the_middle_part() {
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"a","groups":["eng"]}"#);
        let m = jwt_payload(&format!("h.{p}.s")).expect("payload");
        assert_eq!(m["groups"][0], "eng");
        assert!(jwt_payload("only-one-part").is_none());
        assert!(jwt_payload("a.!!!.c").is_none());
    }
}
