//! HTTP shell: the axum router (REST under /api/v1, gRPC on the same listener), extractors for
//! the caller and bodies, health, metrics, and the OpenAPI document built from the same route
//! table that builds the router.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{
    ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Path, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post};
use axum::{Json, Router};
use cvlan_proto::v1 as pb;
use cvlan_store::audit::AuditFilter;
use cvlan_store::time;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::kinds::Kind;
use crate::secrets::Secret;
use crate::service::{Principal, Service};
use crate::throttle::RateLimit;

/// Which tier(s) this process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Everything in one process.
    All,
    /// Only "where do I register": cheap, cacheable.
    Discovery,
    /// Token checks and registration (CPU-bound).
    Registration,
    /// Admin API and long-lived node/gateway streams.
    Session,
}

/// Shared state of the HTTP shell.
pub struct App {
    /// Service layer.
    pub svc: Arc<Service>,
    /// Served tier.
    pub mode: Mode,
    /// Prometheus renderer.
    pub metrics: Option<PrometheusHandle>,
    /// Mark cookies `Secure` (TLS or behind a TLS proxy).
    pub secure_cookies: bool,
    /// Take the client address from `X-Forwarded-For` (behind a trusted proxy only).
    pub trust_forwarded: bool,
    /// URLs handed out by discovery: registration tier, session tier.
    pub advertise: Advertise,
    /// Per-source limit on discovery.
    pub discovery_limit: RateLimit,
    /// Per-source limit on registration.
    pub registration_limit: RateLimit,
    /// Built management UI served at `/` (SPA: unknown non-API paths get index.html).
    pub ui_dir: Option<std::path::PathBuf>,
    /// Base URL browsers use to reach this server (SSO redirect URIs are built from it).
    pub public_url: String,
}

/// What discovery tells clients.
#[derive(Debug, Clone, Default)]
pub struct Advertise {
    /// Registration tier URLs.
    pub registration: Vec<String>,
    /// Session tier URLs.
    pub session: Vec<String>,
}

/// Router state.
pub type AppState = Arc<App>;

const SESSION_COOKIE: &str = "cvlan_session";
const CSRF_COOKIE: &str = "cvlan_csrf";
const CSRF_HEADER: &str = "x-csrf-token";

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The client's address, as the audit log and rate limits see it.
pub struct Source(pub String);

fn source_of(parts: &Parts, app: &App) -> String {
    if app.trust_forwarded
        && let Some(f) = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        && let Some(first) = f.split(',').next()
    {
        return first.trim().to_string();
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "local".into())
}

impl FromRequestParts<AppState> for Source {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        Ok(Source(source_of(parts, app)))
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let source = source_of(parts, app);
        if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
            let v = v.to_str().map_err(|_| ApiError::Unauthenticated)?;
            let tok = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .ok_or(ApiError::Unauthenticated)?;
            return app.svc.authenticate(tok, &source).await;
        }
        if let Some(tok) = cookie(&parts.headers, SESSION_COOKIE) {
            // Cookie-authenticated mutations need the double-submit CSRF header.
            if !matches!(parts.method, Method::GET | Method::HEAD) {
                let want = cookie(&parts.headers, CSRF_COOKIE);
                let got = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
                if want.is_none() || want != got {
                    return Err(ApiError::Forbidden);
                }
            }
            return app.svc.authenticate(tok, &source).await;
        }
        Err(ApiError::Unauthenticated)
    }
}

/// Path parameters by name (none on global routes).
pub struct Params(HashMap<String, String>);

impl Params {
    fn get(&self, k: &str) -> ApiResult<&str> {
        self.0
            .get(k)
            .map(String::as_str)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("route lacks {{{k}}}")))
    }
    fn tenant(&self) -> Option<&str> {
        self.0.get("tenant").map(String::as_str)
    }
}

impl FromRequestParts<AppState> for Params {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        match Path::<HashMap<String, String>>::from_request_parts(parts, app).await {
            Ok(Path(m)) => Ok(Params(m)),
            Err(_) => Ok(Params(HashMap::new())),
        }
    }
}

/// A proto3-JSON body, plus the top-level field names it carried (the update mask of a PATCH).
pub struct Body<T>(pub T, pub Vec<String>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE)
            && !ct.to_str().unwrap_or("").starts_with("application/json")
        {
            return Err(ApiError::bad("Content-Type must be application/json"));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad(format!("could not read body: {e}")))?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad(format!("malformed JSON body: {e}")))?;
        let keys = match &v {
            Value::Object(m) => m.keys().cloned().collect(),
            _ => return Err(ApiError::bad("the body must be a JSON object")),
        };
        let t =
            serde_json::from_value(v).map_err(|e| ApiError::bad(format!("invalid body: {e}")))?;
        Ok(Body(t, keys))
    }
}

/// Paging and audit filters from the query string.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    page_size: Option<u32>,
    #[serde(default)]
    page_token: String,
    #[serde(default)]
    actor_id: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target_type: String,
    #[serde(default)]
    target_id: String,
    since: Option<String>,
    until: Option<String>,
    format: Option<String>,
}

impl ListQuery {
    fn size(&self) -> u32 {
        self.page_size.unwrap_or(100).clamp(1, 1000)
    }
    fn audit_filter(&self) -> ApiResult<AuditFilter> {
        let t = |s: &Option<String>, name: &str| -> ApiResult<Option<i64>> {
            s.as_deref()
                .map(|s| {
                    serde_json::from_value::<pbjson_types::Timestamp>(Value::String(s.to_string()))
                        .map(|t| time::micros(&t))
                        .map_err(|_| ApiError::bad(format!("{name} must be an RFC 3339 time")))
                })
                .transpose()
        };
        Ok(AuditFilter {
            tenant_id: None,
            actor_id: self.actor_id.clone(),
            action: self.action.clone(),
            target_type: self.target_type.clone(),
            target_id: self.target_id.clone(),
            since: t(&self.since, "since")?,
            until: t(&self.until, "until")?,
        })
    }
}

fn page<T: serde::Serialize>(items: Vec<T>, next: String) -> Json<Value> {
    Json(json!({"items": items, "nextPageToken": next}))
}

type Q = Query<ListQuery>;
type S = State<AppState>;

// ---------- generic handlers ----------

async fn h_list<K: Kind>(
    State(a): S,
    p: Principal,
    ps: Params,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    let pg = a
        .svc
        .list::<K>(&p, ps.tenant(), None, &q.page_token, q.size())
        .await?;
    Ok(page(pg.items, pg.next))
}
async fn h_get<K: Kind>(State(a): S, p: Principal, ps: Params) -> ApiResult<Json<K>> {
    Ok(Json(a.svc.get::<K>(&p, ps.tenant(), ps.get("id")?).await?))
}
async fn h_create<K: Kind>(
    State(a): S,
    p: Principal,
    ps: Params,
    Body(b, _): Body<K>,
) -> ApiResult<(StatusCode, Json<K>)> {
    Ok((
        StatusCode::CREATED,
        Json(a.svc.create::<K>(&p, ps.tenant(), b).await?),
    ))
}
async fn h_update<K: Kind>(
    State(a): S,
    p: Principal,
    ps: Params,
    Body(b, keys): Body<K>,
) -> ApiResult<Json<K>> {
    Ok(Json(
        a.svc
            .update::<K>(&p, ps.tenant(), ps.get("id")?, b, &keys)
            .await?,
    ))
}
async fn h_delete<K: Kind>(State(a): S, p: Principal, ps: Params) -> ApiResult<StatusCode> {
    a.svc.delete::<K>(&p, ps.tenant(), ps.get("id")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------- specific handlers ----------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

impl std::fmt::Debug for LoginBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginBody")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

async fn h_login(
    State(a): S,
    Source(src): Source,
    Body(b, _): Body<LoginBody>,
) -> ApiResult<Response> {
    let (tok, exp, user) = a.svc.login(&b.email, Secret(b.password), &src).await?;
    let mut r = Json(pb::LoginResponse {
        token: tok.0.clone(),
        expires_at: Some(time::ts(exp)),
        user: Some(user),
    })
    .into_response();
    set_session_cookies(&mut r, &tok, exp, a.secure_cookies)?;
    Ok(r)
}

/// The session cookie (HttpOnly) and the double-submit CSRF cookie the UI echoes in a header.
fn set_session_cookies(r: &mut Response, tok: &Secret, exp: i64, secure: bool) -> ApiResult<()> {
    let max_age = (exp - time::now_micros()) / 1_000_000;
    let secure = if secure { "; Secure" } else { "" };
    let csrf = crate::secrets::random_token("");
    let h = r.headers_mut();
    for c in [
        format!(
            "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
            tok.0
        ),
        format!(
            "{CSRF_COOKIE}={}; Path=/; SameSite=Strict; Max-Age={max_age}{secure}",
            csrf.0
        ),
    ] {
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_str(&c).map_err(|e| ApiError::Internal(e.into()))?,
        );
    }
    Ok(())
}

async fn h_logout(State(a): S, p: Principal) -> ApiResult<Response> {
    a.svc.logout(&p).await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    for c in [SESSION_COOKIE, CSRF_COOKIE] {
        r.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_str(&format!("{c}=; Path=/; Max-Age=0"))
                .map_err(|e| ApiError::Internal(e.into()))?,
        );
    }
    Ok(r)
}

/// Cookie that binds a started single sign-on to the browser that started it. `Lax`, because
/// the provider's redirect back is a cross-site top-level navigation.
const SSO_COOKIE: &str = "cvlan_sso";
const SSO_PATH: &str = "/api/v1/auth/oidc";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SsoQuery {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    return_to: String,
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Back to the sign-in page with a message for the person.
fn to_login_page(why: &str) -> Response {
    let mut u = reqwest::Url::parse("http://local/login").unwrap_or_else(|_| unreachable!());
    u.query_pairs_mut().append_pair("error", why);
    redirect(&format!("{}?{}", u.path(), u.query().unwrap_or_default()))
}

/// Base of the per-provider redirect URIs (`…/callback/{provider id}`).
fn sso_redirect_base(a: &App) -> String {
    format!("{}{SSO_PATH}/callback", a.public_url)
}

async fn h_sso_providers(State(a): S, Query(q): Query<SsoQuery>) -> ApiResult<Json<Value>> {
    if q.tenant.is_empty() {
        return Err(ApiError::bad("tenant is required"));
    }
    let items = a.svc.sso_offered(&q.tenant).await?;
    Ok(Json(json!({ "items": items })))
}

async fn h_sso_start(
    State(a): S,
    Source(src): Source,
    headers: HeaderMap,
    Query(q): Query<SsoQuery>,
) -> Response {
    if let Err(e) = a.registration_limit.take(&src) {
        return to_login_page(&e.to_string());
    }
    // Only our own sign-in page (or a typed URL) starts a sign-in: a link on another site
    // must not sign a visitor into a tenant of the link author's choosing (login CSRF).
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return to_login_page("start single sign-on from this site's sign-in page");
    }
    if q.tenant.is_empty() || q.provider.is_empty() {
        return to_login_page("choose an organisation and its sign-in provider");
    }
    match a
        .svc
        .sso_start(&q.tenant, &q.provider, &q.return_to, &sso_redirect_base(&a))
        .await
    {
        Ok((url, binding)) => {
            let mut r = redirect(&url);
            let secure = if a.secure_cookies { "; Secure" } else { "" };
            let c = format!(
                "{SSO_COOKIE}={}; Path={SSO_PATH}; HttpOnly; SameSite=Lax; Max-Age=600{secure}",
                binding.0
            );
            if let Ok(v) = HeaderValue::from_str(&c) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        Err(crate::oidc::Refused(why)) => to_login_page(&why),
    }
}

#[derive(Debug, Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    code: String,
    error: Option<String>,
    /// Free text from the provider: accepted, never shown or stored.
    #[serde(rename = "error_description")]
    _error_description: Option<String>,
    iss: Option<String>,
}

async fn h_sso_callback(
    State(a): S,
    Source(src): Source,
    Path(provider): Path<String>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    if let Err(e) = a.registration_limit.take(&src) {
        return to_login_page(&e.to_string());
    }
    if q.state.is_empty() {
        return to_login_page("the sign-in response is incomplete; start again");
    }
    let base = sso_redirect_base(&a);
    let done = a
        .svc
        .sso_callback(crate::oidc::Callback {
            provider_id: &provider,
            state: &q.state,
            code: &q.code,
            iss: q.iss.as_deref(),
            idp_error: q.error.as_deref(),
            binding: cookie(&headers, SSO_COOKIE),
            redirect_base: &base,
            source: &src,
        })
        .await;
    let mut r = match done {
        Ok(s) => {
            let mut r = redirect(&crate::oidc::local_path(&s.return_to));
            if let Err(e) = set_session_cookies(&mut r, &s.token, s.expires, a.secure_cookies) {
                return e.into_response();
            }
            r
        }
        Err(crate::oidc::Refused(why)) => to_login_page(&why),
    };
    if let Ok(v) = HeaderValue::from_str(&format!("{SSO_COOKIE}=; Path={SSO_PATH}; Max-Age=0")) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

async fn h_whoami(p: Principal) -> Json<pb::WhoAmIResponse> {
    Json(pb::WhoAmIResponse {
        user: Some(p.user),
        api_key_id: p.api_key_id.unwrap_or_default(),
    })
}

async fn h_apikeys_list(State(a): S, p: Principal) -> ApiResult<Json<Value>> {
    Ok(page(a.svc.list_api_keys(&p).await?, String::new()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApiKeyBody {
    name: String,
    #[serde(default)]
    role: Option<Value>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

fn role_from(v: &Option<Value>) -> ApiResult<i32> {
    match v {
        None => Ok(0),
        Some(Value::String(s)) => pb::Role::from_str_name(s)
            .map(|r| r as i32)
            .ok_or_else(|| ApiError::bad(format!("unknown role {s:?}"))),
        Some(_) => Err(ApiError::bad("role must be a role name")),
    }
}

async fn h_apikeys_create(
    State(a): S,
    p: Principal,
    Body(b, _): Body<ApiKeyBody>,
) -> ApiResult<(StatusCode, Json<pb::ApiKey>)> {
    let k = pb::ApiKey {
        name: b.name,
        role: role_from(&b.role)?,
        ..Default::default()
    };
    Ok((
        StatusCode::CREATED,
        Json(
            a.svc
                .create_api_key(&p, k, b.ttl_seconds.unwrap_or(0))
                .await?,
        ),
    ))
}

async fn h_apikeys_delete(State(a): S, p: Principal, ps: Params) -> ApiResult<StatusCode> {
    a.svc.delete_api_key(&p, ps.get("id")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn h_tenants_list(State(a): S, p: Principal, Query(q): Q) -> ApiResult<Json<Value>> {
    let pg = a.svc.list_tenants(&p, &q.page_token, q.size()).await?;
    Ok(page(pg.items, pg.next))
}
async fn h_tenant_get(State(a): S, p: Principal, ps: Params) -> ApiResult<Json<pb::Tenant>> {
    Ok(Json(a.svc.get_tenant(&p, ps.get("tenant")?).await?))
}
async fn h_tenant_update(
    State(a): S,
    p: Principal,
    ps: Params,
    Body(b, keys): Body<pb::Tenant>,
) -> ApiResult<Json<pb::Tenant>> {
    Ok(Json(
        a.svc.update_tenant(&p, ps.get("tenant")?, b, &keys).await?,
    ))
}
async fn h_tenant_delete(State(a): S, p: Principal, ps: Params) -> ApiResult<StatusCode> {
    a.svc
        .delete::<pb::Tenant>(&p, None, ps.get("tenant")?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn h_users_list(
    State(a): S,
    p: Principal,
    ps: Params,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    let pg = a
        .svc
        .list_users(&p, ps.tenant(), &q.page_token, q.size())
        .await?;
    Ok(page(pg.items, pg.next))
}
async fn h_user_get(State(a): S, p: Principal, ps: Params) -> ApiResult<Json<pb::User>> {
    Ok(Json(a.svc.get_user(&p, ps.tenant(), ps.get("id")?).await?))
}
async fn h_user_create(
    State(a): S,
    p: Principal,
    ps: Params,
    Body(b, _): Body<pb::User>,
) -> ApiResult<(StatusCode, Json<pb::User>)> {
    Ok((
        StatusCode::CREATED,
        Json(a.svc.create_user(&p, ps.tenant(), b).await?),
    ))
}
async fn h_user_update(
    State(a): S,
    p: Principal,
    ps: Params,
    Body(b, keys): Body<pb::User>,
) -> ApiResult<Json<pb::User>> {
    Ok(Json(
        a.svc
            .update_user(&p, ps.tenant(), ps.get("id")?, b, &keys)
            .await?,
    ))
}
async fn h_user_delete(State(a): S, p: Principal, ps: Params) -> ApiResult<StatusCode> {
    a.svc.delete_user(&p, ps.tenant(), ps.get("id")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn h_token_create(
    State(a): S,
    p: Principal,
    ps: Params,
    Body(mut b, _): Body<Value>,
) -> ApiResult<(StatusCode, Json<pb::RegistrationToken>)> {
    // The body is a RegistrationToken plus an optional ttlSeconds.
    let ttl = match b.as_object_mut().and_then(|o| o.remove("ttlSeconds")) {
        None => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| ApiError::bad("ttlSeconds must be a positive integer"))?,
    };
    let t: pb::RegistrationToken =
        serde_json::from_value(b).map_err(|e| ApiError::bad(format!("invalid body: {e}")))?;
    Ok((
        StatusCode::CREATED,
        Json(a.svc.create_token(&p, ps.get("tenant")?, t, ttl).await?),
    ))
}
async fn h_vrouter_join_token(
    State(a): S,
    p: Principal,
    ps: Params,
    // proto3 JSON: ttlSeconds (uint64) may come as a number or a string.
    Body(r, _): Body<pb::CreateVrouterJoinTokenRequest>,
) -> ApiResult<(StatusCode, Json<pb::VrouterJoinToken>)> {
    Ok((
        StatusCode::CREATED,
        Json(
            a.svc
                .create_vrouter_join_token(&p, ps.get("id")?, r.ttl_seconds)
                .await?,
        ),
    ))
}
async fn h_token_revoke(
    State(a): S,
    p: Principal,
    ps: Params,
) -> ApiResult<Json<pb::RegistrationToken>> {
    Ok(Json(
        a.svc
            .revoke_token(&p, ps.get("tenant")?, ps.get("id")?)
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    token: String,
}

async fn h_token_verify(
    State(a): S,
    Source(src): Source,
    Body(b, _): Body<VerifyBody>,
) -> ApiResult<Json<Value>> {
    a.registration_limit.take(&src)?;
    let c = a.svc.verify_token(&b.token).await?;
    Ok(Json(json!({
        "valid": true, "tenantId": c.tenant, "cvlanId": c.cvlan, "reusable": c.reusable,
        "ephemeral": c.ephemeral, "tags": c.tags, "expiresAt": time::ts(c.exp * 1_000_000),
    })))
}

async fn h_addr_list(State(a): S, p: Principal, ps: Params, Query(q): Q) -> ApiResult<Json<Value>> {
    let pg = a
        .svc
        .list_addresses(
            &p,
            ps.get("tenant")?,
            ps.get("cvlan")?,
            &q.page_token,
            q.size(),
        )
        .await?;
    Ok(page(pg.items, pg.next))
}
async fn h_addr_get(
    State(a): S,
    p: Principal,
    ps: Params,
) -> ApiResult<Json<pb::AddressReservation>> {
    Ok(Json(
        a.svc
            .get_address(&p, ps.get("tenant")?, ps.get("cvlan")?, ps.get("id")?)
            .await?,
    ))
}
async fn h_addr_create(
    State(a): S,
    p: Principal,
    ps: Params,
    Body(b, _): Body<pb::AddressReservation>,
) -> ApiResult<(StatusCode, Json<pb::AddressReservation>)> {
    Ok((
        StatusCode::CREATED,
        Json(
            a.svc
                .create_address(&p, ps.get("tenant")?, ps.get("cvlan")?, b)
                .await?,
        ),
    ))
}
async fn h_ext_create(
    State(a): S,
    p: Principal,
    ps: Params,
    Body(b, _): Body<pb::ExternalPeer>,
) -> ApiResult<(StatusCode, Json<pb::ExternalPeer>)> {
    Ok((
        StatusCode::CREATED,
        Json(
            a.svc
                .create_external_peer(&p, ps.get("tenant")?, ps.get("cvlan")?, b)
                .await?,
        ),
    ))
}
async fn h_node_expire(State(a): S, p: Principal, ps: Params) -> ApiResult<Json<pb::Node>> {
    Ok(Json(
        a.svc
            .expire_node(&p, ps.get("tenant")?, ps.get("id")?)
            .await?,
    ))
}
async fn h_addr_delete(State(a): S, p: Principal, ps: Params) -> ApiResult<StatusCode> {
    a.svc
        .delete_address(&p, ps.get("tenant")?, ps.get("cvlan")?, ps.get("id")?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn h_node_delete(State(a): S, p: Principal, ps: Params) -> ApiResult<StatusCode> {
    a.svc
        .delete_node(&p, ps.get("tenant")?, ps.get("id")?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn h_audit_list(
    State(a): S,
    p: Principal,
    ps: Params,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    let pg = a
        .svc
        .list_audit(&p, ps.tenant(), q.audit_filter()?, &q.page_token, q.size())
        .await?;
    Ok(page(pg.items, pg.next))
}

/// Every matching event as JSON lines (`format=jsonl`, default) or CSV (`format=csv`).
async fn h_audit_export(State(a): S, p: Principal, ps: Params, Query(q): Q) -> ApiResult<Response> {
    let csv = match q.format.as_deref() {
        None | Some("jsonl") => false,
        Some("csv") => true,
        Some(f) => {
            return Err(ApiError::bad(format!(
                "format must be jsonl or csv, not {f:?}"
            )));
        }
    };
    let f = q.audit_filter()?;
    let mut out = String::new();
    if csv {
        out.push_str("id,time,actor_id,actor,tenant_id,action,target_type,target_id,source_address,summary\n");
    }
    let mut cursor = String::new();
    loop {
        let pg = a
            .svc
            .list_audit(&p, ps.tenant(), f.clone(), &cursor, 1000)
            .await?;
        for e in &pg.items {
            if csv {
                let time = serde_json::to_value(e.time)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                let cols = [
                    &e.id,
                    &time,
                    &e.actor_id,
                    &e.actor,
                    &e.tenant_id,
                    &e.action,
                    &e.target_type,
                    &e.target_id,
                    &e.source_address,
                    &e.summary,
                ];
                let line: Vec<String> = cols.iter().map(|c| csv_field(c)).collect();
                out.push_str(&line.join(","));
            } else {
                out.push_str(&serde_json::to_string(e).map_err(|e| ApiError::Internal(e.into()))?);
            }
            out.push('\n');
        }
        if pg.next.is_empty() {
            break;
        }
        cursor = pg.next;
    }
    let ct = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    Ok(([(header::CONTENT_TYPE, ct)], out).into_response())
}

/// RFC 4180 quoting, plus a leading quote for cells a spreadsheet would run as formulas.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

async fn h_discovery(State(a): S, Source(src): Source) -> ApiResult<Json<Value>> {
    a.discovery_limit.take(&src)?;
    Ok(Json(json!({
        "registration": a.advertise.registration,
        "session": a.advertise.session,
        "version": env!("CARGO_PKG_VERSION"),
    })))
}

async fn h_healthz() -> &'static str {
    "ok"
}

async fn h_readyz(State(a): S) -> Response {
    match sqlx::query("SELECT 1").execute(a.svc.store.pool()).await {
        Ok(_) => "ready".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "database not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

async fn h_metrics(State(a): S) -> Response {
    match &a.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics disabled").into_response(),
    }
}

async fn h_openapi() -> Json<Value> {
    Json(openapi())
}

// ---------- route table ----------

/// The shape of a response body, for the OpenAPI document.
#[derive(Clone, Copy)]
enum Out {
    One(&'static str),
    List(&'static str),
    None,
    Text,
}

/// One REST operation: documentation and handler come from the same entry.
struct Op {
    method: &'static str,
    path: String,
    summary: String,
    tag: &'static str,
    body: Option<&'static str>,
    out: Out,
    modes: &'static [Mode],
    handler: MethodRouter<AppState>,
}

const ADMIN: &[Mode] = &[Mode::All, Mode::Session];
const DISC: &[Mode] = &[
    Mode::All,
    Mode::Discovery,
    Mode::Registration,
    Mode::Session,
];
const REG: &[Mode] = &[Mode::All, Mode::Registration];

fn op(
    method: &'static str,
    path: impl Into<String>,
    summary: impl Into<String>,
    tag: &'static str,
    body: Option<&'static str>,
    out: Out,
    handler: MethodRouter<AppState>,
) -> Op {
    Op {
        method,
        path: path.into(),
        summary: summary.into(),
        tag,
        body,
        out,
        modes: ADMIN,
        handler,
    }
}

fn crud<K: Kind>(
    ops: &mut Vec<Op>,
    base: &str,
    schema: &'static str,
    tag: &'static str,
    writable: bool,
) {
    let k = K::KIND;
    let item = format!("{base}/{{id}}");
    ops.push(op(
        "GET",
        base,
        format!("List {k}s"),
        tag,
        None,
        Out::List(schema),
        get(h_list::<K>),
    ));
    ops.push(op(
        "GET",
        &item,
        format!("Get a {k} by id or name"),
        tag,
        None,
        Out::One(schema),
        get(h_get::<K>),
    ));
    if writable {
        ops.push(op(
            "POST",
            base,
            format!("Create a {k}"),
            tag,
            Some(schema),
            Out::One(schema),
            post(h_create::<K>),
        ));
        ops.push(op(
            "PATCH",
            &item,
            format!("Update the {k} fields present in the body"),
            tag,
            Some(schema),
            Out::One(schema),
            patch(h_update::<K>),
        ));
    }
    ops.push(op(
        "DELETE",
        &item,
        format!("Delete a {k}"),
        tag,
        None,
        Out::None,
        delete(h_delete::<K>),
    ));
}

fn table() -> Vec<Op> {
    let t = "/api/v1/tenants/{tenant}";
    let mut v = vec![
        Op {
            modes: DISC,
            ..op(
                "POST",
                "/api/v1/auth/login",
                "Password login: returns a session token and sets the session cookie",
                "auth",
                Some("LoginRequest"),
                Out::One("LoginResponse"),
                post(h_login),
            )
        },
        op(
            "POST",
            "/api/v1/auth/logout",
            "End the current session",
            "auth",
            None,
            Out::None,
            post(h_logout),
        ),
        op(
            "GET",
            "/api/v1/auth/whoami",
            "The caller",
            "auth",
            None,
            Out::One("WhoAmIResponse"),
            get(h_whoami),
        ),
        op(
            "GET",
            "/api/v1/auth/oidc/providers",
            "Single sign-on providers of a tenant (public: name and label only)",
            "auth",
            None,
            Out::Text,
            get(h_sso_providers),
        ),
        op(
            "GET",
            "/api/v1/auth/oidc/start",
            "Start a single sign-on (browser navigation; redirects to the identity provider)",
            "auth",
            None,
            Out::Text,
            get(h_sso_start),
        ),
        op(
            "GET",
            "/api/v1/auth/oidc/callback/{provider}",
            "Single sign-on redirect target, one per provider id (sets the session cookie, redirects into the UI)",
            "auth",
            None,
            Out::Text,
            get(h_sso_callback),
        ),
        op(
            "GET",
            "/api/v1/apikeys",
            "List your API keys",
            "auth",
            None,
            Out::List("ApiKey"),
            get(h_apikeys_list),
        ),
        op(
            "POST",
            "/api/v1/apikeys",
            "Create an API key (returned once); body: name, role, ttlSeconds",
            "auth",
            Some("ApiKey"),
            Out::One("ApiKey"),
            post(h_apikeys_create),
        ),
        op(
            "DELETE",
            "/api/v1/apikeys/{id}",
            "Delete an API key",
            "auth",
            None,
            Out::None,
            delete(h_apikeys_delete),
        ),
        op(
            "GET",
            "/api/v1/tenants",
            "List tenants (superadmin: all; others: their own)",
            "tenants",
            None,
            Out::List("Tenant"),
            get(h_tenants_list),
        ),
        op(
            "POST",
            "/api/v1/tenants",
            "Create a tenant (superadmin)",
            "tenants",
            Some("Tenant"),
            Out::One("Tenant"),
            post(h_create::<pb::Tenant>),
        ),
        op(
            "GET",
            t,
            "Get a tenant by name or id",
            "tenants",
            None,
            Out::One("Tenant"),
            get(h_tenant_get),
        ),
        op(
            "PATCH",
            t,
            "Update a tenant",
            "tenants",
            Some("Tenant"),
            Out::One("Tenant"),
            patch(h_tenant_update),
        ),
        op(
            "DELETE",
            t,
            "Delete a tenant and everything in it (superadmin)",
            "tenants",
            None,
            Out::None,
            delete(h_tenant_delete),
        ),
        op(
            "GET",
            "/api/v1/users",
            "List superadmins",
            "users",
            None,
            Out::List("User"),
            get(h_users_list),
        ),
        op(
            "POST",
            "/api/v1/users",
            "Create a superadmin",
            "users",
            Some("User"),
            Out::One("User"),
            post(h_user_create),
        ),
        op(
            "GET",
            "/api/v1/users/{id}",
            "Get a superadmin",
            "users",
            None,
            Out::One("User"),
            get(h_user_get),
        ),
        op(
            "PATCH",
            "/api/v1/users/{id}",
            "Update a superadmin",
            "users",
            Some("User"),
            Out::One("User"),
            patch(h_user_update),
        ),
        op(
            "DELETE",
            "/api/v1/users/{id}",
            "Delete a superadmin",
            "users",
            None,
            Out::None,
            delete(h_user_delete),
        ),
        op(
            "GET",
            format!("{t}/users"),
            "List users",
            "users",
            None,
            Out::List("User"),
            get(h_users_list),
        ),
        op(
            "POST",
            format!("{t}/users"),
            "Create a user (password is write-only)",
            "users",
            Some("User"),
            Out::One("User"),
            post(h_user_create),
        ),
        op(
            "GET",
            format!("{t}/users/{{id}}"),
            "Get a user by id or email",
            "users",
            None,
            Out::One("User"),
            get(h_user_get),
        ),
        op(
            "PATCH",
            format!("{t}/users/{{id}}"),
            "Update a user",
            "users",
            Some("User"),
            Out::One("User"),
            patch(h_user_update),
        ),
        op(
            "DELETE",
            format!("{t}/users/{{id}}"),
            "Delete a user",
            "users",
            None,
            Out::None,
            delete(h_user_delete),
        ),
        op(
            "GET",
            format!("{t}/nodes"),
            "List nodes",
            "nodes",
            None,
            Out::List("Node"),
            get(h_list::<pb::Node>),
        ),
        op(
            "GET",
            format!("{t}/nodes/{{id}}"),
            "Get a node",
            "nodes",
            None,
            Out::One("Node"),
            get(h_get::<pb::Node>),
        ),
        op(
            "PATCH",
            format!("{t}/nodes/{{id}}"),
            "Rename or retag a node",
            "nodes",
            Some("Node"),
            Out::One("Node"),
            patch(h_update::<pb::Node>),
        ),
        op(
            "DELETE",
            format!("{t}/nodes/{{id}}"),
            "Delete a node and release its addresses",
            "nodes",
            None,
            Out::None,
            delete(h_node_delete),
        ),
        op(
            "POST",
            format!("{t}/nodes/{{id}}/expire"),
            "Expire a node now: it leaves every peer's map and must register again",
            "nodes",
            None,
            Out::One("Node"),
            post(h_node_expire),
        ),
        op(
            "GET",
            format!("{t}/external-peers"),
            "List static external WireGuard peers",
            "external-peers",
            None,
            Out::List("ExternalPeer"),
            get(h_list::<pb::ExternalPeer>),
        ),
        op(
            "POST",
            format!("{t}/cvlans/{{cvlan}}/external-peers"),
            "Add a static external WireGuard peer to a CVLAN",
            "external-peers",
            Some("ExternalPeer"),
            Out::One("ExternalPeer"),
            post(h_ext_create),
        ),
        op(
            "GET",
            format!("{t}/external-peers/{{id}}"),
            "Get an external peer",
            "external-peers",
            None,
            Out::One("ExternalPeer"),
            get(h_get::<pb::ExternalPeer>),
        ),
        op(
            "PATCH",
            format!("{t}/external-peers/{{id}}"),
            "Update an external peer",
            "external-peers",
            Some("ExternalPeer"),
            Out::One("ExternalPeer"),
            patch(h_update::<pb::ExternalPeer>),
        ),
        op(
            "DELETE",
            format!("{t}/external-peers/{{id}}"),
            "Remove an external peer",
            "external-peers",
            None,
            Out::None,
            delete(h_delete::<pb::ExternalPeer>),
        ),
        op(
            "GET",
            format!("{t}/tokens"),
            "List registration tokens (never the token strings)",
            "tokens",
            None,
            Out::List("RegistrationToken"),
            get(h_list::<pb::RegistrationToken>),
        ),
        op(
            "POST",
            format!("{t}/tokens"),
            "Create a registration token (shown once); body also takes ttlSeconds",
            "tokens",
            Some("RegistrationToken"),
            Out::One("RegistrationToken"),
            post(h_token_create),
        ),
        op(
            "GET",
            format!("{t}/tokens/{{id}}"),
            "Get a registration token",
            "tokens",
            None,
            Out::One("RegistrationToken"),
            get(h_get::<pb::RegistrationToken>),
        ),
        op(
            "POST",
            format!("{t}/tokens/{{id}}/revoke"),
            "Revoke a registration token",
            "tokens",
            None,
            Out::One("RegistrationToken"),
            post(h_token_revoke),
        ),
        op(
            "DELETE",
            format!("{t}/tokens/{{id}}"),
            "Delete a registration token",
            "tokens",
            None,
            Out::None,
            delete(h_delete::<pb::RegistrationToken>),
        ),
        Op {
            modes: REG,
            ..op(
                "POST",
                "/api/v1/tokens/verify",
                "Check a registration token (signature and expiry offline, then revocation)",
                "tokens",
                None,
                Out::Text,
                post(h_token_verify),
            )
        },
        op(
            "GET",
            format!("{t}/cvlans/{{cvlan}}/addresses"),
            "List address reservations",
            "addresses",
            None,
            Out::List("AddressReservation"),
            get(h_addr_list),
        ),
        op(
            "POST",
            format!("{t}/cvlans/{{cvlan}}/addresses"),
            "Reserve an address (the requested one or the lowest free)",
            "addresses",
            Some("AddressReservation"),
            Out::One("AddressReservation"),
            post(h_addr_create),
        ),
        op(
            "GET",
            format!("{t}/cvlans/{{cvlan}}/addresses/{{id}}"),
            "Get a reservation by id or address",
            "addresses",
            None,
            Out::One("AddressReservation"),
            get(h_addr_get),
        ),
        op(
            "DELETE",
            format!("{t}/cvlans/{{cvlan}}/addresses/{{id}}"),
            "Release a reservation",
            "addresses",
            None,
            Out::None,
            delete(h_addr_delete),
        ),
        op(
            "GET",
            format!("{t}/audit"),
            "List the tenant's audit events, newest first",
            "audit",
            None,
            Out::List("AuditEvent"),
            get(h_audit_list),
        ),
        op(
            "GET",
            format!("{t}/audit/export"),
            "Export the tenant's audit events (format=jsonl|csv)",
            "audit",
            None,
            Out::Text,
            get(h_audit_export),
        ),
        op(
            "GET",
            "/api/v1/audit",
            "List every audit event (superadmin)",
            "audit",
            None,
            Out::List("AuditEvent"),
            get(h_audit_list),
        ),
        op(
            "GET",
            "/api/v1/audit/export",
            "Export every audit event (superadmin; format=jsonl|csv)",
            "audit",
            None,
            Out::Text,
            get(h_audit_export),
        ),
        Op {
            modes: DISC,
            ..op(
                "GET",
                "/api/v1/discovery",
                "Where to register and where to hold sessions",
                "system",
                None,
                Out::Text,
                get(h_discovery),
            )
        },
        Op {
            modes: DISC,
            ..op(
                "GET",
                "/api/v1/openapi.json",
                "This document",
                "system",
                None,
                Out::Text,
                get(h_openapi),
            )
        },
    ];
    crud::<pb::Cvlan>(&mut v, &format!("{t}/cvlans"), "Cvlan", "cvlans", true);
    crud::<pb::Group>(&mut v, &format!("{t}/groups"), "Group", "groups", true);
    crud::<pb::Policy>(&mut v, &format!("{t}/policies"), "Policy", "policies", true);
    crud::<pb::OidcProvider>(
        &mut v,
        &format!("{t}/oidc-providers"),
        "OidcProvider",
        "sso",
        true,
    );
    crud::<pb::Vrouter>(&mut v, "/api/v1/vrouters", "Vrouter", "vrouters", true);
    v.push(op(
        "POST",
        "/api/v1/vrouters/{id}/join-tokens",
        "Create a single-use join token for a vrouter (superadmin; shown once); body {ttlSeconds?}: default 3600, at most 604800",
        "vrouters",
        Some("CreateVrouterJoinTokenRequest"),
        Out::One("VrouterJoinToken"),
        post(h_vrouter_join_token),
    ));
    crud::<pb::Region>(&mut v, "/api/v1/regions", "Region", "regions", true);
    crud::<pb::Relay>(&mut v, "/api/v1/relays", "Relay", "relays", true);
    v
}

/// The OpenAPI 3.1 document: paths from the route table, schemas from the proto descriptors.
pub fn openapi() -> Value {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::{
        ContentBuilder, InfoBuilder, OpenApiBuilder, PathsBuilder, Ref, ResponseBuilder,
    };

    let mut paths = PathsBuilder::new();
    for o in table() {
        let method = match o.method {
            "GET" => HttpMethod::Get,
            "POST" => HttpMethod::Post,
            "PATCH" => HttpMethod::Patch,
            _ => HttpMethod::Delete,
        };
        let mut b = OperationBuilder::new()
            .summary(Some(o.summary.clone()))
            .tag(o.tag)
            .operation_id(Some(format!(
                "{}_{}",
                o.method.to_lowercase(),
                o.path
                    .trim_start_matches("/api/v1/")
                    .replace(['/', '{', '}'], "_")
            )));
        if let Some(s) = o.body {
            b = b.request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(s)))
                            .build(),
                    )
                    .build(),
            ));
        }
        let ok = if o.method == "POST" && !matches!(o.out, Out::Text) && o.body.is_some() {
            "201"
        } else {
            "200"
        };
        b = match o.out {
            Out::One(s) => b.response(
                ok,
                ResponseBuilder::new()
                    .description("OK")
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(s)))
                            .build(),
                    )
                    .build(),
            ),
            Out::List(s) => b.response(
                ok,
                ResponseBuilder::new()
                    .description(format!("A page of {s}: {{items, nextPageToken}}"))
                    .build(),
            ),
            Out::None => b.response("204", ResponseBuilder::new().description("Done").build()),
            Out::Text => b.response("200", ResponseBuilder::new().description("OK").build()),
        };
        for (code, d) in [
            ("400", "Invalid input"),
            ("401", "Not signed in"),
            ("403", "Role does not allow this"),
            ("404", "Not found (or another tenant's)"),
            ("409", "Conflict or exhausted"),
        ] {
            b = b.response(code, ResponseBuilder::new().description(d).build());
        }
        paths = paths.path(o.path.clone(), PathItem::new(method, b.build()));
    }
    let doc = OpenApiBuilder::new()
        .info(InfoBuilder::new().title("CloudVLAN API").version(env!("CARGO_PKG_VERSION")).description(Some("REST mapping of the cvlan.v1 protobuf services; bodies are proto3 canonical JSON.")).build())
        .paths(paths.build())
        .build();
    let mut v = serde_json::to_value(&doc).unwrap_or_default();
    let schemas: Value = serde_json::from_str(cvlan_proto::SCHEMAS_JSON).unwrap_or_default();
    // utoipa's builders do not carry what typed clients need; add it to the JSON: path
    // parameters, paging/filter query parameters and the page envelope of list responses.
    for o in table() {
        let m = o.method.to_lowercase();
        let Some(op) = v["paths"][&o.path][&m].as_object_mut() else {
            continue;
        };
        let mut params: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}, "description": "Id or name"}))
            .collect();
        let query = |name: &str, ty: &str, d: &str| json!({"name": name, "in": "query", "required": false, "schema": {"type": ty}, "description": d});
        let audit = o.path.ends_with("/audit") || o.path.ends_with("/audit/export");
        if matches!(o.out, Out::List(_)) {
            params.push(query(
                "pageSize",
                "integer",
                "Items per page (1..1000, default 100)",
            ));
            params.push(query(
                "pageToken",
                "string",
                "nextPageToken of the previous page",
            ));
        }
        if audit {
            for (n, d) in [
                ("actorId", "Only events by this user id"),
                ("action", "Only actions starting with this prefix"),
                ("targetType", "Only this target kind"),
                ("targetId", "Only this target id"),
                ("since", "RFC 3339 lower bound"),
                ("until", "RFC 3339 upper bound"),
            ] {
                params.push(query(n, "string", d));
            }
            if o.path.ends_with("/export") {
                params.push(query("format", "string", "jsonl (default) or csv"));
            }
        }
        let sso: &[(&str, &str)] = match o.path.as_str() {
            "/api/v1/auth/oidc/providers" => &[("tenant", "Tenant name or id (required)")],
            "/api/v1/auth/oidc/start" => &[
                ("tenant", "Tenant name or id (required)"),
                ("provider", "Provider name (required)"),
                ("returnTo", "Local path to open after signing in"),
            ],
            "/api/v1/auth/oidc/callback/{provider}" => &[
                ("state", "From the identity provider"),
                ("code", "From the identity provider"),
                ("error", "From the identity provider"),
                ("error_description", "From the identity provider"),
                ("iss", "From the identity provider (RFC 9207)"),
            ],
            _ => &[],
        };
        for (n, d) in sso {
            params.push(query(n, "string", d));
        }
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if o.path == "/api/v1/auth/oidc/providers" {
            op["responses"]["200"]["content"] = json!({"application/json": {"schema": {
                "type": "object",
                "required": ["items"],
                "properties": {"items": {"type": "array", "items": {
                    "type": "object",
                    "required": ["name", "displayName"],
                    "properties": {"name": {"type": "string"}, "displayName": {"type": "string"}}
                }}}
            }}});
        }
        // Creating a token or an API key also takes a lifetime next to the object.
        if o.method == "POST" && (o.path.ends_with("/tokens") || o.path == "/api/v1/apikeys") {
            let s = o.body.unwrap_or_default();
            op["requestBody"]["content"]["application/json"]["schema"] = json!({"allOf": [
                {"$ref": format!("#/components/schemas/{s}")},
                {"type": "object", "properties": {"ttlSeconds": {"type": "integer", "description": "Lifetime in seconds"}}}
            ]});
        }
        if let Out::List(s) = o.out {
            op["responses"]["200"]["content"] = json!({"application/json": {"schema": {
                "type": "object",
                "required": ["items", "nextPageToken"],
                "properties": {
                    "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{s}")}},
                    "nextPageToken": {"type": "string", "description": "Empty on the last page"}
                }
            }}});
        }
    }
    v["components"] = json!({"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}});
    v["security"] = json!([{"bearer": []}]);
    v
}

async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("cvlan_http_requests_total", "method" => method.to_string(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("cvlan_http_request_seconds", "route" => route)
        .record(start.elapsed().as_secs_f64());
    res
}

async fn not_served() -> ApiError {
    ApiError::WrongMode
}

/// Serves the UI's files for every path the API does not own; client-side routes get
/// `index.html`. API paths keep their JSON errors.
async fn ui_or_not_served(ui: Option<std::path::PathBuf>, req: Request) -> Response {
    use tower::ServiceExt;
    let path = req.uri().path();
    let Some(dir) = ui.filter(|_| !path.starts_with("/api/") && !path.starts_with("/cvlan."))
    else {
        return not_served().await.into_response();
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return not_served().await.into_response();
    }
    let asset = path.starts_with("/assets/");
    // Client-side routes get index.html; a missing asset is a 404 (never HTML cached as JS).
    let mut res = if asset {
        match tower_http::services::ServeDir::new(&dir).oneshot(req).await {
            Ok(r) => r.into_response(),
            Err(e) => match e {},
        }
    } else {
        let index = dir.join("index.html");
        let svc = tower_http::services::ServeDir::new(&dir)
            .fallback(tower_http::services::ServeFile::new(index));
        match svc.oneshot(req).await {
            Ok(r) => r.into_response(),
            Err(e) => match e {},
        }
    };
    let immutable = asset && res.status() == StatusCode::OK;
    let h = res.headers_mut();
    // Hashed asset names never change; index.html must be re-read after an upgrade.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; object-src 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    res
}

/// Builds the whole router for a mode: REST, gRPC (admin service) and system endpoints.
pub fn router(app: AppState) -> Router {
    let mode = app.mode;
    let ui = match (mode, &app.ui_dir) {
        (Mode::All | Mode::Session, Some(d)) => Some(d.clone()),
        _ => None,
    };
    let mut r: Router<AppState> = Router::new();
    for o in table() {
        if o.modes.contains(&mode) {
            r = r.route(&o.path, o.handler);
        }
    }
    let mut r: Router = r
        .route("/healthz", get(h_healthz))
        .route("/readyz", get(h_readyz))
        .route("/metrics", get(h_metrics))
        .with_state(app.clone());
    if matches!(mode, Mode::All | Mode::Session) {
        r = r.merge(crate::grpc::routes(app));
    }
    r.fallback(move |req: Request| ui_or_not_served(ui.clone(), req))
        .layer(middleware::from_fn(track))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(4 << 20))
}
