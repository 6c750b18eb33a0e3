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
/// Largest answer read from an identity provider (discovery, keys, tokens, userinfo).
const MAX_RESPONSE: usize = 1 << 20;
/// Sign-ins in progress per provider (each is a row until used or expired).
const MAX_PENDING_PER_PROVIDER: i64 = 10_000;
/// Providers whose discovery is cached at once.
const MAX_DISCOVERED: usize = 256;
/// What the person sees when the provider misbehaves; the details go to the log only (they
/// would otherwise make the sign-in page a port scanner for whoever configures providers).
const UNREACHABLE: &str = "the identity provider could not be reached or gave an unusable answer; ask your administrator (details are in the control plane's log)";

/// Why a request to an identity provider was not made or failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is not allowed (scheme or address).
    #[error("{0}")]
    Refused(String),
    /// Transport error.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The answer was larger than [`MAX_RESPONSE`].
    #[error("answer larger than {MAX_RESPONSE} bytes")]
    TooLarge,
    /// The answer could not be turned into an HTTP response value.
    #[error("bad answer: {0}")]
    Bad(String),
}

/// Addresses an identity provider may never resolve to: loopback (unless allowed for
/// development), link-local (cloud metadata services live there), unspecified, multicast.
/// Private ranges stay allowed: on-premises providers live there.
fn forbidden(ip: std::net::IpAddr, allow_loopback: bool) -> bool {
    use std::net::IpAddr;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(a) => {
            (a.is_loopback() && !allow_loopback)
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_broadcast()
        }
        IpAddr::V6(a) => {
            (a.is_loopback() && !allow_loopback)
                || a.is_unspecified()
                || a.is_multicast()
                || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// DNS resolution that drops forbidden addresses, so a provider's name cannot point the
/// control plane at its own loopback or a metadata service (checked on the addresses
/// actually connected to, not on an earlier lookup).
struct GuardedResolver {
    allow_loopback: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_loopback;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !forbidden(a.ip(), allow))
                .collect();
            if addrs.is_empty() {
                return Err(
                    format!("{host} resolves to no address an identity provider may use").into(),
                );
            }
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

/// Client-side state shared by all sign-ins of a process.
pub struct Sso {
    http: reqwest::Client,
    allow_loopback: bool,
    discovered: Mutex<HashMap<String, (Instant, CoreProviderMetadata)>>,
}

impl Sso {
    /// An HTTP client that never follows redirects (the openidconnect crate's advice against
    /// SSRF through a provider's responses), gives up after 10 s and only talks to https
    /// providers on allowed addresses; `allow_loopback` admits http on loopback (development
    /// and tests).
    ///
    /// # Errors
    /// The TLS backend could not be initialised.
    pub fn new(allow_loopback: bool) -> ApiResult<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .dns_resolver(std::sync::Arc::new(GuardedResolver { allow_loopback }))
            .build()
            .map_err(|e| ApiError::Internal(e.into()))?;
        Ok(Sso {
            http,
            allow_loopback,
            discovered: Mutex::new(HashMap::new()),
        })
    }

    /// Checks a URL against the policy before any request: https (http only on an allowed
    /// loopback), and an IP literal host must be allowed (names are checked by the resolver).
    fn allowed(&self, u: &reqwest::Url) -> Result<(), FetchError> {
        let host = u.host_str().unwrap_or("");
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .ok();
        let loopback = host == "localhost" || literal.is_some_and(|a| a.is_loopback());
        if let Some(a) = literal
            && forbidden(a, self.allow_loopback)
        {
            return Err(FetchError::Refused(format!(
                "identity providers may not be at {a}{}",
                if a.is_loopback() {
                    " (loopback needs --oidc-allow-loopback, for development only)"
                } else {
                    ""
                }
            )));
        }
        if host == "localhost" && !self.allow_loopback {
            return Err(FetchError::Refused(
                "identity providers may not be at localhost (loopback needs --oidc-allow-loopback, for development only)".into(),
            ));
        }
        match u.scheme() {
            "https" => Ok(()),
            "http" if loopback && self.allow_loopback => Ok(()),
            s => Err(FetchError::Refused(format!(
                "identity provider URLs must be https (got {s}://{host})"
            ))),
        }
    }

    /// One request to a provider, under the policy above, reading at most [`MAX_RESPONSE`].
    async fn fetch(
        &self,
        req: openidconnect::HttpRequest,
    ) -> Result<openidconnect::HttpResponse, FetchError> {
        let (parts, body) = req.into_parts();
        let url = reqwest::Url::parse(&parts.uri.to_string())
            .map_err(|e| FetchError::Bad(e.to_string()))?;
        self.allowed(&url)?;
        let mut r = self
            .http
            .request(parts.method, url)
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
        let mut out = Vec::new();
        while let Some(chunk) = r.chunk().await? {
            if out.len() + chunk.len() > MAX_RESPONSE {
                return Err(FetchError::TooLarge);
            }
            out.extend_from_slice(&chunk);
        }
        let mut b = http::Response::builder().status(r.status());
        for (k, v) in r.headers() {
            b = b.header(k, v);
        }
        b.body(out).map_err(|e| FetchError::Bad(e.to_string()))
    }

    async fn metadata(&self, issuer: &str) -> Result<CoreProviderMetadata, Refused> {
        if let Ok(m) = self.discovered.lock()
            && let Some((at, md)) = m.get(issuer)
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(md.clone());
        }
        let url = IssuerUrl::new(issuer.to_string())
            .map_err(|e| Refused(format!("the provider's issuer URL is invalid: {e}")))?;
        if let Ok(u) = reqwest::Url::parse(issuer)
            && let Err(FetchError::Refused(why)) = self.allowed(&u)
        {
            return Err(Refused(why));
        }
        let md = CoreProviderMetadata::discover_async(url, self)
            .await
            .map_err(|e| unreachable_provider("discovery", issuer, &e))?;
        if let Ok(mut m) = self.discovered.lock() {
            if m.len() >= MAX_DISCOVERED {
                m.retain(|_, (at, _)| at.elapsed() < DISCOVERY_TTL);
                if m.len() >= MAX_DISCOVERED {
                    m.clear();
                }
            }
            m.insert(issuer.to_string(), (Instant::now(), md.clone()));
        }
        Ok(md)
    }
}

/// The openidconnect crate's requests (discovery, keys, token exchange) go through the same
/// guarded [`Sso::fetch`].
impl<'c> openidconnect::AsyncHttpClient<'c> for Sso {
    type Error = FetchError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, FetchError>>
                + Send
                + Sync
                + 'c,
        >,
    >;
    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(self.fetch(request))
    }
}

/// Logs what went wrong with a provider and gives the person the generic message.
fn unreachable_provider(step: &str, issuer: &str, e: &dyn std::fmt::Display) -> Refused {
    tracing::warn!(step, issuer, error = %e, "identity provider request failed");
    Refused(UNREACHABLE.into())
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

/// What the provider's redirect brought back, and where it arrived.
pub struct Callback<'a> {
    /// The provider id in the redirect path.
    pub provider_id: &'a str,
    /// `state` parameter.
    pub state: &'a str,
    /// `code` parameter.
    pub code: &'a str,
    /// RFC 9207 `iss` parameter, when the provider sends it.
    pub iss: Option<&'a str>,
    /// `error` parameter.
    pub idp_error: Option<&'a str>,
    /// The browser-binding cookie.
    pub binding: Option<&'a str>,
    /// Base of the redirect URIs (`<public URL>/api/v1/auth/oidc/callback`).
    pub redirect_base: &'a str,
    /// Client address.
    pub source: &'a str,
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

/// Keeps only local UI paths, so a sign-in can never send the browser elsewhere (nor chain
/// into another API call or back to the sign-in page).
pub fn local_path(p: &str) -> String {
    let ok = p.starts_with('/')
        && !p.starts_with("//")
        && !p.starts_with("/api/")
        && !p.starts_with("/login")
        && !p.contains('\\')
        && !p.chars().any(char::is_control)
        && p.len() <= 1024;
    if ok { p.to_string() } else { "/".into() }
}

/// Where a provider sends the browser back: one URI per provider, so an answer meant for one
/// provider can never be exchanged at another (the "mix-up" attack).
pub fn redirect_uri(base: &str, provider_id: &str) -> String {
    format!("{base}/{provider_id}")
}

/// An email an IdP asserted, in the one form accounts are matched on: ASCII only (no Unicode
/// case folding that could make two spellings meet), lowercase, one `@`, sane length.
fn normal_email(e: &str) -> Option<String> {
    let e = e.trim();
    let (local, domain) = e.split_once('@')?;
    let ok = e.is_ascii()
        && e.len() <= 254
        && !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !e.chars().any(|c| c.is_ascii_control() || c == ' ');
    ok.then(|| e.to_ascii_lowercase())
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
        let mut c = self.conn().await?;
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
        redirect_base: &str,
    ) -> Result<(String, Secret), Refused> {
        let p = {
            let mut c = self.conn().await?;
            self.sso_tenant_provider(&mut c, tenant, provider).await?.1
        };
        let md = self.sso.metadata(&p.issuer).await?;
        // The browser is sent there: the same scheme rules as for our own requests.
        let auth = md.authorization_endpoint().url().clone();
        if let Err(e) = self.sso.allowed(&auth) {
            return Err(unreachable_provider(
                "authorization endpoint",
                &p.issuer,
                &e,
            ));
        }
        let client = Self::sso_client(&p, String::new(), md, &redirect_uri(redirect_base, &p.id))?;
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
        // Abandoned sign-ins go away with the next one (indexed by expiry).
        sqlx::query("DELETE FROM oidc_logins WHERE expires_at < $1")
            .bind(now)
            .execute(w.conn())
            .await?;
        let (pending,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM oidc_logins WHERE provider_id = $1")
                .bind(&p.id)
                .fetch_one(w.conn())
                .await?;
        if pending >= MAX_PENDING_PER_PROVIDER {
            return Err(Refused(
                "too many sign-ins are in progress for this provider; try again in a few minutes"
                    .into(),
            ));
        }
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
    /// binding, that the answer came back to the provider the sign-in started with (and, when
    /// the provider names itself, that it is that provider), exchanges the code (with the PKCE
    /// verifier), verifies the ID token (signature, issuer, audience, expiry, nonce), applies the
    /// provider's rules and opens a session.
    ///
    /// # Errors
    /// [`Refused`] with a message for the person; refusals after the state checks are audited
    /// in the tenant's log.
    pub async fn sso_callback(&self, cb: Callback<'_>) -> Result<SignedIn, Refused> {
        let expired =
            || Refused("this sign-in link has expired or was already used; start again".into());
        // Unknown states are answered without taking the write lock.
        let known: Option<(String,)> =
            sqlx::query_as("SELECT provider_id FROM oidc_logins WHERE state_hash = $1")
                .bind(sha(cb.state))
                .fetch_optional(self.store.pool())
                .await?;
        if known.is_none() {
            return Err(expired());
        }
        // Consumed atomically: of two concurrent callbacks with one state, one gets the row.
        let mut w = self.store.begin_write().await?;
        let row: Option<(String, String, String, String, String, i64)> = sqlx::query_as(
            "DELETE FROM oidc_logins WHERE state_hash = $1 \
             RETURNING provider_id, binding_hash, nonce, pkce_verifier, return_to, expires_at",
        )
        .bind(sha(cb.state))
        .fetch_optional(w.conn())
        .await?;
        w.commit().await?;
        let (provider_id, binding_hash, nonce, verifier, return_to, expires_at) =
            row.ok_or_else(expired)?;
        if expires_at < time::now_micros() {
            return Err(expired());
        }
        if cb.binding.map(sha).as_deref() != Some(binding_hash.as_str()) {
            return Err(Refused(
                "this sign-in was started in another browser; start again here".into(),
            ));
        }
        if cb.provider_id != provider_id {
            return Err(Refused(
                "this sign-in answer came back for another provider than it was started with; start again"
                    .into(),
            ));
        }
        let (p, secret) = {
            let mut c = self.conn().await?;
            let Some((tid, secret)): Option<(String, String)> =
                sqlx::query_as("SELECT tenant_id, client_secret FROM oidc_providers WHERE id = $1")
                    .bind(&provider_id)
                    .fetch_optional(&mut *c)
                    .await?
            else {
                return Err(expired());
            };
            let p =
                entity::get::<pb::OidcProvider>(&mut c, Scope::Tenant(&tid), &provider_id).await?;
            (p, secret)
        };
        let finished = if !p.enabled {
            Err(Refused(
                "this single sign-on provider has been disabled".into(),
            ))
        } else if cb.iss.is_some_and(|i| i != p.issuer) {
            // RFC 9207: the provider says who answered; it must be the one we asked.
            Err(Refused(
                "the answer came from another identity provider; start again".into(),
            ))
        } else {
            self.sso_finish(&p, secret, &cb, &nonce, verifier).await
        };
        match finished {
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
                    source_address: cb.source.to_string(),
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

    async fn sso_finish(
        &self,
        p: &pb::OidcProvider,
        secret: String,
        cb: &Callback<'_>,
        nonce: &str,
        verifier: String,
    ) -> Result<(Secret, i64), Refused> {
        if let Some(e) = cb.idp_error {
            // Only the error code: the description is free text anyone can put in a link.
            let code: String = e
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(40)
                .collect();
            return Err(Refused(format!(
                "the identity provider did not sign you in ({code})"
            )));
        }
        let source = cb.source;
        let md = self.sso.metadata(&p.issuer).await?;
        let userinfo = md.userinfo_endpoint().map(|u| u.url().clone());
        let client = Self::sso_client(p, secret, md, &redirect_uri(cb.redirect_base, &p.id))?;
        let tok = client
            .exchange_code(AuthorizationCode::new(cb.code.to_string()))
            .map_err(|e| unreachable_provider("token endpoint", &p.issuer, &e))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request_async(&self.sso)
            .await
            .map_err(|e| unreachable_provider("code exchange", &p.issuer, &e))?;
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
        // The email and whether it is verified always come from one source.
        let mut email = claims
            .email()
            .map(|e| (e.as_str().to_string(), claims.email_verified()));
        let mut name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_string());
        if (email.is_none() || (want_groups && raw.get(groups_claim).is_none()))
            && let Some(u) = userinfo
        {
            let req = http::Request::builder()
                .uri(u.as_str())
                .header(
                    http::header::AUTHORIZATION,
                    format!("Bearer {}", tok.access_token().secret()),
                )
                .header(http::header::ACCEPT, "application/json")
                .body(Vec::new())
                .map_err(|e| unreachable_provider("userinfo", &p.issuer, &e))?;
            let res = self
                .sso
                .fetch(req)
                .await
                .map_err(|e| unreachable_provider("userinfo", &p.issuer, &e))?;
            if !res.status().is_success() {
                return Err(unreachable_provider("userinfo", &p.issuer, &res.status()));
            }
            let info: serde_json::Map<String, Value> = serde_json::from_slice(res.body())
                .map_err(|e| unreachable_provider("userinfo", &p.issuer, &e))?;
            // OpenID Connect Core 5.3.2: userinfo is only about the ID token's subject.
            if info.get("sub").and_then(Value::as_str) != Some(subject.as_str()) {
                return Err(Refused(
                    "the provider's userinfo is about someone else".into(),
                ));
            }
            email = email.or_else(|| {
                info.get("email").and_then(Value::as_str).map(|e| {
                    (
                        e.to_string(),
                        info.get("email_verified").and_then(Value::as_bool),
                    )
                })
            });
            name = name.or_else(|| info.get("name").and_then(Value::as_str).map(String::from));
            for (k, v) in info {
                raw.entry(k).or_insert(v);
            }
        }
        let (email, verified) = email.ok_or_else(|| {
            Refused("the provider did not say who you are (no email claim)".into())
        })?;
        let email = normal_email(&email).ok_or_else(|| {
            Refused("the provider's email claim is not a plain ASCII address".into())
        })?;
        // Accounts are matched and domains allowed on the email, so it must be one the IdP
        // vouches for (some IdPs let users type any address and send no email_verified).
        if verified != Some(true) {
            return Err(Refused(format!(
                "{email}: the identity provider does not say this address is verified"
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
                let other: Option<(String,)> = sqlx::query_as(
                    "SELECT subject FROM oidc_identities WHERE provider_id = $1 AND user_id = $2",
                )
                .bind(&p.id)
                .bind(&id)
                .fetch_optional(&mut *c)
                .await?;
                if other.is_some() {
                    return Err(Refused(format!(
                        "{email} is already linked to another account at this identity provider"
                    )));
                }
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
            if self.store.backend() == cvlan_store::Backend::Postgres {
                // Read-modify-write of the member list: no lost update against an admin's
                // edit or another sign-in.
                sqlx::query("SELECT id FROM cvlan_groups WHERE id = $1 FOR UPDATE")
                    .bind(gid)
                    .execute(&mut *c)
                    .await?;
            }
            let Some(mut g) = entity::find::<pb::Group>(c, scope, gid).await? else {
                continue;
            };
            let is_member = |m: &pb::GroupMember| matches!(&m.member, Some(pb::group_member::Member::UserId(u)) if *u == user.id);
            let has = g.members.iter().any(is_member);
            if has == on {
                continue;
            }
            if on && g.members.len() >= 10_000 {
                tracing::warn!(group = %g.id, "group is full; single sign-on membership not added");
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
            "/api/v1/auth/oidc/start?tenant=evil&provider=x",
            "/login?error=call+us",
        ] {
            assert_eq!(local_path(evil), "/", "{evil:?}");
        }
    }

    #[test]
    fn emails_are_matched_in_one_ascii_form_only() {
        assert_eq!(
            normal_email(" Kim@Corp.COM ").as_deref(),
            Some("kim@corp.com")
        );
        // U+212A KELVIN SIGN lowercases to 'k' in Unicode: refused, never folded.
        for bad in [
            "\u{212A}im@corp.com",
            "a@evil@corp.com",
            "@corp.com",
            "kim@",
            "k m@corp.com",
            "kim",
        ] {
            assert_eq!(normal_email(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn providers_may_not_live_on_loopback_link_local_or_unspecified_addresses() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        for a in [
            "127.0.0.1",
            "::1",
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "224.0.0.1",
        ] {
            assert!(forbidden(ip(a), false), "{a}");
        }
        assert!(!forbidden(ip("127.0.0.1"), true));
        assert!(forbidden(ip("169.254.169.254"), true));
        // On-premises providers on private addresses stay possible.
        for a in ["10.1.2.3", "192.168.1.10", "fd00::5", "203.0.113.7"] {
            assert!(!forbidden(ip(a), false), "{a}");
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
