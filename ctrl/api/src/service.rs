//! The one service layer every mutation goes through: authorise (RBAC, tenant scope) →
//! validate → write row + audit event in one transaction → publish a change event.
//! REST and gRPC are thin adapters over these methods.

use std::sync::Arc;

use cvlan_proto::v1::{self as pb, Role};
use cvlan_store::audit::{self, AuditFilter, AuditRecord};
use cvlan_store::entity::{self, Col, Page, Scope};
use cvlan_store::ipam::AllocRequest;
use cvlan_store::{Store, time};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use sqlx::AnyConnection;
use tokio::sync::broadcast;

use crate::error::{ApiError, ApiResult};
use crate::kinds::{Kind, check_name, check_text};
use crate::rbac::{Decision, Resource, Target, Verb, decide, may_grant};
use crate::secrets::{self, Secret};
use crate::throttle::Throttle;
use crate::tokens;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user (password field always empty).
    pub user: pb::User,
    /// Effective role (an API key's role may be lower than its user's).
    pub role: Role,
    /// Set when authenticated with an API key.
    pub api_key_id: Option<String>,
    /// Set when authenticated with a session token (for logout).
    pub session_hash: Option<String>,
    /// Client address.
    pub source: String,
}

impl Principal {
    pub(crate) fn audit(&self, tenant_id: &str) -> AuditRecord {
        AuditRecord {
            actor_id: self
                .api_key_id
                .clone()
                .unwrap_or_else(|| self.user.id.clone()),
            actor: self.user.email.clone(),
            tenant_id: tenant_id.to_string(),
            source_address: self.source.clone(),
        }
    }

    fn target(&self, tenant_id: Option<&str>) -> Target {
        match tenant_id {
            None => Target::Global,
            Some(t) if !self.user.tenant_id.is_empty() && self.user.tenant_id == t => {
                Target::OwnTenant
            }
            Some(_) => Target::OtherTenant,
        }
    }
}

/// What changed, for stream fan-out (node and gateway Sync) and caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Tenant id; empty for global objects.
    pub tenant_id: String,
    /// Entity kind ("cvlan", "policy", …).
    pub kind: &'static str,
    /// Object id.
    pub id: String,
    /// "create", "update" or "delete".
    pub op: &'static str,
}

/// Tunables of the service layer.
#[derive(Debug, Clone)]
pub struct Config {
    /// Session lifetime in seconds.
    pub session_ttl_secs: i64,
    /// Audit events older than this many days are deleted by the retention job.
    pub audit_retention_days: i64,
    /// Ephemeral nodes not seen for this many seconds are removed.
    pub ephemeral_inactivity_secs: u64,
    /// Let single sign-on talk to identity providers on loopback over http (development and
    /// tests only).
    pub oidc_allow_loopback: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            session_ttl_secs: 12 * 3600,
            audit_retention_days: 90,
            ephemeral_inactivity_secs: 600,
            oidc_allow_loopback: false,
        }
    }
}

/// The service layer.
pub struct Service {
    /// Database.
    pub store: Arc<Store>,
    pub(crate) signing: SigningKey,
    /// Change events, published after each commit.
    pub changes: broadcast::Sender<Change>,
    throttle: Throttle,
    dummy_hash: String,
    /// Tunables.
    pub config: Config,
    /// The node CA (client certificates for Sync, the node listener's server certificate).
    pub ca: crate::ca::Ca,
    /// OpenID Connect client state (HTTP client, discovery cache).
    pub(crate) sso: crate::oidc::Sso,
}

/// Where a scoped operation happens: a tenant (by name or id) or the global space.
pub type TenantRef<'a> = Option<&'a str>;

impl Service {
    /// Builds the service, loading (or creating) the shared token signing key.
    ///
    /// # Errors
    /// Database errors.
    pub async fn new(store: Arc<Store>, config: Config) -> ApiResult<Self> {
        let seed = store
            .secret("registration-token-ed25519", || {
                rand::random::<[u8; 32]>().to_vec()
            })
            .await?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| {
            ApiError::Internal(anyhow::anyhow!("stored signing key has wrong length"))
        })?;
        let dummy = secrets::random_token("");
        let ca = crate::ca::Ca::load(&store).await?;
        Ok(Service {
            ca,
            store,
            signing: SigningKey::from_bytes(&seed),
            changes: broadcast::channel(4096).0,
            throttle: Throttle::default(),
            dummy_hash: secrets::hash_password(dummy).await?,
            sso: crate::oidc::Sso::new(config.oidc_allow_loopback)?,
            config,
        })
    }

    /// A pooled connection for reads (writes go through `store.begin_write`).
    pub(crate) async fn conn(&self) -> ApiResult<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self
            .store
            .pool()
            .acquire()
            .await
            .map_err(cvlan_store::StoreError::from)?)
    }

    pub(crate) fn publish(&self, tenant_id: &str, kind: &'static str, id: &str, op: &'static str) {
        metrics::counter!("cvlan_changes_total", "kind" => kind, "op" => op).increment(1);
        let _ = self.changes.send(Change {
            tenant_id: tenant_id.to_string(),
            kind,
            id: id.to_string(),
            op,
        });
    }

    pub(crate) fn authorize(
        &self,
        p: &Principal,
        res: Resource,
        verb: Verb,
        tenant_id: Option<&str>,
        what: &'static str,
    ) -> ApiResult<()> {
        match decide(p.role, res, verb, p.target(tenant_id)) {
            Decision::Allow => Ok(()),
            Decision::Forbidden => Err(ApiError::Forbidden),
            Decision::NotFound => Err(ApiError::NotFound(what)),
        }
    }

    /// Resolves a tenant by name or id and checks that `p` may `verb` `res` in it. Another
    /// tenant's name and an unknown name give the same 404.
    pub(crate) async fn tenant(
        &self,
        c: &mut AnyConnection,
        p: &Principal,
        key: &str,
        res: Resource,
        verb: Verb,
    ) -> ApiResult<pb::Tenant> {
        let t = entity::find::<pb::Tenant>(c, Scope::Global, key)
            .await?
            .ok_or(ApiError::NotFound("tenant"))?;
        self.authorize(p, res, verb, Some(&t.id), "tenant")?;
        Ok(t)
    }

    async fn scope_of<K: Kind>(
        &self,
        c: &mut AnyConnection,
        p: &Principal,
        tenant: TenantRef<'_>,
        verb: Verb,
    ) -> ApiResult<Option<pb::Tenant>> {
        match (K::GLOBAL, tenant) {
            (true, _) => {
                self.authorize(p, K::RES, verb, None, K::KIND)?;
                Ok(None)
            }
            (false, Some(t)) => Ok(Some(self.tenant(c, p, t, K::RES, verb).await?)),
            (false, None) => Err(ApiError::bad("a tenant is required")),
        }
    }

    // ---------- generic operations ----------

    /// Lists objects of a kind in a tenant (or globally).
    ///
    /// # Errors
    /// RBAC and database errors.
    pub async fn list<K: Kind>(
        &self,
        p: &Principal,
        tenant: TenantRef<'_>,
        filter: entity::Filter<'_>,
        page_token: &str,
        page_size: u32,
    ) -> ApiResult<Page<K>> {
        let mut c = self.conn().await?;
        let t = self.scope_of::<K>(&mut c, p, tenant, Verb::Read).await?;
        let scope = t.as_ref().map_or(Scope::Global, |t| Scope::Tenant(&t.id));
        let mut pg = entity::list::<K>(&mut c, scope, filter, page_token, page_size).await?;
        K::enrich(&self.store, &mut pg.items).await?;
        Ok(pg)
    }

    /// Gets one object by id or name.
    ///
    /// # Errors
    /// RBAC and not-found errors.
    pub async fn get<K: Kind>(
        &self,
        p: &Principal,
        tenant: TenantRef<'_>,
        key: &str,
    ) -> ApiResult<K> {
        let mut c = self.conn().await?;
        let t = self.scope_of::<K>(&mut c, p, tenant, Verb::Read).await?;
        let scope = t.as_ref().map_or(Scope::Global, |t| Scope::Tenant(&t.id));
        let mut e = entity::get::<K>(&mut c, scope, key).await?;
        K::enrich(&self.store, std::slice::from_mut(&mut e)).await?;
        Ok(e)
    }

    /// Creates an object.
    ///
    /// # Errors
    /// RBAC, validation, conflict and database errors; nothing is written on error.
    pub async fn create<K: Kind>(
        &self,
        p: &Principal,
        tenant: TenantRef<'_>,
        mut e: K,
    ) -> ApiResult<K> {
        let mut w = self.store.begin_write().await?;
        let t = self.scope_of::<K>(w.conn(), p, tenant, Verb::Write).await?;
        let tid = t.as_ref().map(|t| t.id.clone()).unwrap_or_default();
        e.on_create(entity::new_id(), &tid);
        e.check()?;
        e.refs(w.conn()).await?;
        let mut cols = e.extra();
        cols.extend(e.secret_columns());
        entity::insert_with(w.conn(), &e, &cols).await?;
        // A new tenant's creation belongs in that tenant's own audit log.
        let audit_tenant = if K::RES == Resource::Tenant {
            e.id().to_string()
        } else {
            tid.clone()
        };
        let ev = p.audit(&audit_tenant).event(
            &format!("{}.create", K::KIND),
            K::KIND,
            e.id(),
            e.summary(),
        );
        audit::insert(w.conn(), &ev).await?;
        let mut out = entity::get::<K>(w.conn(), scope(&tid), e.id()).await?;
        w.commit().await?;
        K::enrich(&self.store, std::slice::from_mut(&mut out)).await?;
        self.publish(&tid, K::KIND, out.id(), "create");
        Ok(out)
    }

    /// Updates the fields named in `mask` (camelCase or snake_case) from `patch`.
    ///
    /// # Errors
    /// RBAC, validation (including immutable fields), conflict and database errors.
    pub async fn update<K: Kind>(
        &self,
        p: &Principal,
        tenant: TenantRef<'_>,
        key: &str,
        patch: K,
        mask: &[String],
    ) -> ApiResult<K> {
        let mut w = self.store.begin_write().await?;
        let t = self.scope_of::<K>(w.conn(), p, tenant, Verb::Write).await?;
        let tid = t.as_ref().map(|t| t.id.clone()).unwrap_or_default();
        let cur = entity::get::<K>(w.conn(), scope(&tid), key).await?;
        let mut next: K = apply_mask(&cur, &patch, mask, K::IMMUTABLE)?;
        next.check()?;
        next.refs(w.conn()).await?;
        for (col, v) in next.secret_columns_on_update(&cur) {
            let q = format!("UPDATE {} SET {col} = $1 WHERE id = $2", K::TABLE);
            let q = match v {
                Col::Text(t) => sqlx::query(sqlx::AssertSqlSafe(q)).bind(t),
                Col::Int(i) => sqlx::query(sqlx::AssertSqlSafe(q)).bind(i),
            };
            q.bind(cur.id().to_string())
                .execute(w.conn())
                .await
                .map_err(cvlan_store::StoreError::from)?;
        }
        entity::update(w.conn(), &next).await?;
        let ev = p.audit(&tid).event(
            &format!("{}.update", K::KIND),
            K::KIND,
            cur.id(),
            json!({"fields": mask_fields(mask), "after": next.summary()}),
        );
        audit::insert(w.conn(), &ev).await?;
        let mut out = entity::get::<K>(w.conn(), scope(&tid), cur.id()).await?;
        w.commit().await?;
        K::enrich(&self.store, std::slice::from_mut(&mut out)).await?;
        self.publish(&tid, K::KIND, out.id(), "update");
        Ok(out)
    }

    /// Deletes an object.
    ///
    /// # Errors
    /// RBAC, not-found, still-referenced and database errors.
    pub async fn delete<K: Kind>(
        &self,
        p: &Principal,
        tenant: TenantRef<'_>,
        key: &str,
    ) -> ApiResult<()> {
        let mut w = self.store.begin_write().await?;
        let t = self.scope_of::<K>(w.conn(), p, tenant, Verb::Write).await?;
        let tid = t.as_ref().map(|t| t.id.clone()).unwrap_or_default();
        let cur = entity::get::<K>(w.conn(), scope(&tid), key).await?;
        cur.before_delete(w.conn()).await?;
        entity::delete::<K>(w.conn(), cur.id()).await?;
        let ev = p.audit(&tid).event(
            &format!("{}.delete", K::KIND),
            K::KIND,
            cur.id(),
            cur.summary(),
        );
        audit::insert(w.conn(), &ev).await?;
        w.commit().await?;
        self.store.ipam.invalidate(cur.id());
        self.publish(&tid, K::KIND, cur.id(), "delete");
        Ok(())
    }

    // ---------- tenants ----------

    /// Lists tenants: all for superadmins, the caller's own for everyone else.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_tenants(
        &self,
        p: &Principal,
        page_token: &str,
        page_size: u32,
    ) -> ApiResult<Page<pb::Tenant>> {
        let mut c = self.conn().await?;
        if p.role == Role::Superadmin {
            return Ok(entity::list(&mut c, Scope::Global, None, page_token, page_size).await?);
        }
        let own = self
            .tenant(&mut c, p, &p.user.tenant_id, Resource::Tenant, Verb::Read)
            .await?;
        Ok(Page {
            items: if page_token.is_empty() {
                vec![own]
            } else {
                vec![]
            },
            next: String::new(),
        })
    }

    /// Gets a tenant the caller may see.
    ///
    /// # Errors
    /// 404 for unknown or other tenants.
    pub async fn get_tenant(&self, p: &Principal, key: &str) -> ApiResult<pb::Tenant> {
        let mut c = self.conn().await?;
        self.tenant(&mut c, p, key, Resource::Tenant, Verb::Read)
            .await
    }

    /// Updates a tenant (superadmin, or the tenant's own admin).
    ///
    /// # Errors
    /// RBAC and validation errors.
    pub async fn update_tenant(
        &self,
        p: &Principal,
        key: &str,
        patch: pb::Tenant,
        mask: &[String],
    ) -> ApiResult<pb::Tenant> {
        {
            let mut c = self.conn().await?;
            self.tenant(&mut c, p, key, Resource::Tenant, Verb::Write)
                .await?;
        }
        // Tenants are global rows; the RBAC check above is the tenant-scoped one.
        let sp = Principal {
            role: Role::Superadmin,
            ..p.clone()
        };
        self.update::<pb::Tenant>(&sp, None, key, patch, mask).await
    }

    // ---------- cvlans ----------

    async fn cvlan_in(
        &self,
        c: &mut AnyConnection,
        tenant_id: &str,
        key: &str,
    ) -> ApiResult<pb::Cvlan> {
        Ok(entity::get::<pb::Cvlan>(c, Scope::Tenant(tenant_id), key).await?)
    }

    // ---------- users ----------

    /// Lists users of a tenant, or superadmins when `tenant` is `None`.
    ///
    /// # Errors
    /// RBAC and database errors.
    pub async fn list_users(
        &self,
        p: &Principal,
        tenant: TenantRef<'_>,
        page_token: &str,
        page_size: u32,
    ) -> ApiResult<Page<pb::User>> {
        let mut c = self.conn().await?;
        let scope_tid = self.user_scope(&mut c, p, tenant, Verb::Read).await?;
        Ok(entity::list(&mut c, scope(&scope_tid), None, page_token, page_size).await?)
    }

    async fn user_scope(
        &self,
        c: &mut AnyConnection,
        p: &Principal,
        tenant: TenantRef<'_>,
        verb: Verb,
    ) -> ApiResult<String> {
        match tenant {
            Some(t) => Ok(self.tenant(c, p, t, Resource::User, verb).await?.id),
            None => {
                self.authorize(p, Resource::User, verb, None, "user")?;
                Ok(String::new())
            }
        }
    }

    /// Gets a user.
    ///
    /// # Errors
    /// RBAC and not-found errors.
    pub async fn get_user(
        &self,
        p: &Principal,
        tenant: TenantRef<'_>,
        key: &str,
    ) -> ApiResult<pb::User> {
        let mut c = self.conn().await?;
        let tid = self.user_scope(&mut c, p, tenant, Verb::Read).await?;
        Ok(entity::get(&mut c, scope(&tid), &key.to_lowercase()).await?)
    }

    fn check_user(u: &pb::User) -> ApiResult<()> {
        let e = &u.email;
        let ok = e.len() <= 254
            && e.split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
            && !e.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return Err(ApiError::bad(format!(
                "email {:?} is not a valid address",
                e.chars().take(80).collect::<String>()
            )));
        }
        check_text("displayName", &u.display_name, 200)?;
        if Role::try_from(u.role).is_err() || u.role == Role::Unspecified as i32 {
            return Err(ApiError::bad(
                "role must be one of ROLE_TENANT_ADMIN, ROLE_OPERATOR, ROLE_VIEWER (or ROLE_SUPERADMIN without a tenant)",
            ));
        }
        Ok(())
    }

    fn check_password(pw: &str) -> ApiResult<()> {
        if pw.chars().count() < 8 || pw.len() > 1024 {
            return Err(ApiError::bad("password must be 8 to 1024 characters"));
        }
        Ok(())
    }

    /// Creates a user with a password (hashed with argon2id off the async runtime).
    ///
    /// # Errors
    /// RBAC (including granting a role above one's own), validation, duplicate email.
    pub async fn create_user(
        &self,
        p: &Principal,
        tenant: TenantRef<'_>,
        mut u: pb::User,
    ) -> ApiResult<pb::User> {
        u.email = u.email.trim().to_lowercase();
        Self::check_user(&u)?;
        Self::check_password(&u.password)?;
        let role = Role::try_from(u.role).unwrap_or(Role::Unspecified);
        if !may_grant(p.role, role) {
            return Err(ApiError::Forbidden);
        }
        if (role == Role::Superadmin) != tenant.is_none() {
            return Err(ApiError::bad(
                "superadmins have no tenant; every other role needs one",
            ));
        }
        let hash = secrets::hash_password(Secret(std::mem::take(&mut u.password))).await?;
        let mut w = self.store.begin_write().await?;
        let tid = self.user_scope(w.conn(), p, tenant, Verb::Write).await?;
        u.id = entity::new_id();
        u.tenant_id = tid.clone();
        entity::insert_with(
            w.conn(),
            &u,
            &[
                ("password_hash", Col::Text(hash)),
                ("role", Col::Int(i64::from(u.role))),
            ],
        )
        .await?;
        let ev = p
            .audit(&tid)
            .event("user.create", "user", &u.id, user_summary(&u));
        audit::insert(w.conn(), &ev).await?;
        let out: pb::User = entity::get(w.conn(), scope(&tid), &u.id).await?;
        w.commit().await?;
        self.publish(&tid, "user", &u.id, "create");
        Ok(out)
    }

    /// Updates a user: display name, role (within the caller's power), password (rehashed;
    /// ends the user's sessions).
    ///
    /// # Errors
    /// RBAC, validation.
    pub async fn update_user(
        &self,
        p: &Principal,
        tenant: TenantRef<'_>,
        key: &str,
        patch: pb::User,
        mask: &[String],
    ) -> ApiResult<pb::User> {
        let fields = mask_fields(mask);
        let new_pw = if fields.iter().any(|f| f == "password") {
            Self::check_password(&patch.password)?;
            Some(secrets::hash_password(Secret(patch.password.clone())).await?)
        } else {
            None
        };
        let mut w = self.store.begin_write().await?;
        let tid = self.user_scope(w.conn(), p, tenant, Verb::Write).await?;
        let cur: pb::User = entity::get(w.conn(), scope(&tid), &key.to_lowercase()).await?;
        let mut clean = patch.clone();
        clean.password.clear();
        let mask_np: Vec<String> = fields
            .iter()
            .filter(|f| *f != "password")
            .cloned()
            .collect();
        let next: pb::User = apply_mask(&cur, &clean, &mask_np, &["email"])?;
        Self::check_user(&next)?;
        let new_role = Role::try_from(next.role).unwrap_or(Role::Unspecified);
        if next.role != cur.role {
            if cur.id == p.user.id {
                return Err(ApiError::bad("you cannot change your own role"));
            }
            let old = Role::try_from(cur.role).unwrap_or(Role::Unspecified);
            if !may_grant(p.role, new_role) || !may_grant(p.role, old) {
                return Err(ApiError::Forbidden);
            }
            if (new_role == Role::Superadmin) != tid.is_empty() {
                return Err(ApiError::bad(
                    "superadmins have no tenant; every other role needs one",
                ));
            }
        }
        entity::update(w.conn(), &next).await?;
        sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(i64::from(next.role))
            .bind(&cur.id)
            .execute(w.conn())
            .await
            .map_err(cvlan_store::StoreError::from)?;
        if let Some(h) = new_pw {
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                .bind(h)
                .bind(&cur.id)
                .execute(w.conn())
                .await
                .map_err(cvlan_store::StoreError::from)?;
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(&cur.id)
                .execute(w.conn())
                .await
                .map_err(cvlan_store::StoreError::from)?;
        }
        let ev = p.audit(&tid).event(
            "user.update",
            "user",
            &cur.id,
            json!({"fields": fields, "after": user_summary(&next)}),
        );
        audit::insert(w.conn(), &ev).await?;
        let out: pb::User = entity::get(w.conn(), scope(&tid), &cur.id).await?;
        w.commit().await?;
        self.publish(&tid, "user", &cur.id, "update");
        Ok(out)
    }

    /// Deletes a user (not oneself; not someone above one's role).
    ///
    /// # Errors
    /// RBAC and not-found errors.
    pub async fn delete_user(
        &self,
        p: &Principal,
        tenant: TenantRef<'_>,
        key: &str,
    ) -> ApiResult<()> {
        let mut w = self.store.begin_write().await?;
        let tid = self.user_scope(w.conn(), p, tenant, Verb::Write).await?;
        let cur: pb::User = entity::get(w.conn(), scope(&tid), &key.to_lowercase()).await?;
        if cur.id == p.user.id {
            return Err(ApiError::bad("you cannot delete yourself"));
        }
        if !may_grant(
            p.role,
            Role::try_from(cur.role).unwrap_or(Role::Unspecified),
        ) {
            return Err(ApiError::Forbidden);
        }
        entity::delete::<pb::User>(w.conn(), &cur.id).await?;
        let ev = p
            .audit(&tid)
            .event("user.delete", "user", &cur.id, user_summary(&cur));
        audit::insert(w.conn(), &ev).await?;
        w.commit().await?;
        self.publish(&tid, "user", &cur.id, "delete");
        Ok(())
    }

    /// Creates a superadmin offline (first-run bootstrap); idempotent on email.
    ///
    /// # Errors
    /// Validation and database errors.
    pub async fn bootstrap_superadmin(&self, email: &str, password: Secret) -> ApiResult<pb::User> {
        Self::check_password(&password.0)?;
        let u = pb::User {
            id: entity::new_id(),
            email: email.trim().to_lowercase(),
            role: Role::Superadmin as i32,
            display_name: "Superadmin".into(),
            ..Default::default()
        };
        Self::check_user(&u)?;
        let hash = secrets::hash_password(password).await?;
        let mut w = self.store.begin_write().await?;
        if let Some(existing) = entity::find::<pb::User>(w.conn(), Scope::Global, &u.email).await? {
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                .bind(hash)
                .bind(&existing.id)
                .execute(w.conn())
                .await
                .map_err(cvlan_store::StoreError::from)?;
            let ev = system_audit().event(
                "user.password_reset",
                "user",
                &existing.id,
                json!({"email": existing.email}),
            );
            audit::insert(w.conn(), &ev).await?;
            w.commit().await?;
            return Ok(existing);
        }
        entity::insert_with(
            w.conn(),
            &u,
            &[
                ("password_hash", Col::Text(hash)),
                ("role", Col::Int(i64::from(u.role))),
            ],
        )
        .await?;
        let ev = system_audit().event("user.create", "user", &u.id, user_summary(&u));
        audit::insert(w.conn(), &ev).await?;
        w.commit().await?;
        Ok(u)
    }

    // ---------- authentication ----------

    /// Password login: throttled per account and per source; returns a session token.
    ///
    /// # Errors
    /// [`ApiError::Unauthenticated`] (same message for unknown user and wrong password),
    /// [`ApiError::TooManyRequests`].
    pub async fn login(
        &self,
        email: &str,
        password: Secret,
        source: &str,
    ) -> ApiResult<(Secret, i64, pb::User)> {
        let email = email.trim().to_lowercase();
        if email.is_empty() || email.len() > 254 || password.0.len() > 1024 {
            return Err(ApiError::BadCredentials);
        }
        self.throttle.check(&email, source)?;
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT id, password_hash FROM users WHERE name = $1")
                .bind(&email)
                .fetch_optional(self.store.pool())
                .await
                .map_err(cvlan_store::StoreError::from)?;
        let (id, hash) = row.unwrap_or_else(|| (String::new(), self.dummy_hash.clone()));
        // Single sign-on users have no password: same work as a wrong one, never a match.
        let sso_only = hash.is_empty();
        let hash = if sso_only {
            self.dummy_hash.clone()
        } else {
            hash
        };
        let ok = secrets::verify_password(password, hash).await && !id.is_empty() && !sso_only;
        if !ok {
            self.throttle.failed(&email, source);
            metrics::counter!("cvlan_logins_total", "result" => "failure").increment(1);
            tracing::info!(source, "login failed");
            return Err(ApiError::BadCredentials);
        }
        self.throttle.succeeded(&email);
        let mut w = self.store.begin_write().await?;
        let user = self.user_by_id(w.conn(), &id).await?;
        let (token, exp) = self
            .open_session(w.conn(), &user, source, json!({"method": "password"}))
            .await?;
        w.commit().await?;
        metrics::counter!("cvlan_logins_total", "result" => "success").increment(1);
        Ok((token, exp, user))
    }

    /// Starts a session for `user` inside the caller's write transaction, with its audit event.
    pub(crate) async fn open_session(
        &self,
        c: &mut AnyConnection,
        user: &pb::User,
        source: &str,
        how: Value,
    ) -> ApiResult<(Secret, i64)> {
        let token = secrets::random_token("cvs_");
        let exp = time::now_micros() + self.config.session_ttl_secs * 1_000_000;
        sqlx::query("INSERT INTO sessions (token_hash, user_id, expires_at, created_at) VALUES ($1, $2, $3, $4)")
            .bind(secrets::token_hash(&token.0))
            .bind(&user.id)
            .bind(exp)
            .bind(time::now_micros())
            .execute(&mut *c)
            .await
            .map_err(cvlan_store::StoreError::from)?;
        let rec = AuditRecord {
            actor_id: user.id.clone(),
            actor: user.email.clone(),
            tenant_id: user.tenant_id.clone(),
            source_address: source.to_string(),
        };
        audit::insert(c, &rec.event("auth.login", "user", &user.id, how)).await?;
        Ok((token, exp))
    }

    async fn user_by_id(&self, c: &mut AnyConnection, id: &str) -> ApiResult<pb::User> {
        let (tid,): (Option<String>,) = sqlx::query_as("SELECT tenant_id FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *c)
            .await
            .map_err(cvlan_store::StoreError::from)?
            .ok_or(ApiError::Unauthenticated)?;
        let tid = tid.unwrap_or_default();
        Ok(entity::get(c, scope(&tid), id).await?)
    }

    /// Ends the caller's session.
    ///
    /// # Errors
    /// Database errors.
    pub async fn logout(&self, p: &Principal) -> ApiResult<()> {
        if let Some(h) = &p.session_hash {
            let mut w = self.store.begin_write().await?;
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                .bind(h)
                .execute(w.conn())
                .await
                .map_err(cvlan_store::StoreError::from)?;
            audit::insert(
                w.conn(),
                &p.audit(&p.user.tenant_id)
                    .event("auth.logout", "user", &p.user.id, json!({})),
            )
            .await?;
            w.commit().await?;
        }
        Ok(())
    }

    /// Resolves a bearer credential (session token `cvs_…` or API key `cvk_…`).
    ///
    /// # Errors
    /// [`ApiError::Unauthenticated`] when unknown or expired.
    pub async fn authenticate(&self, credential: &str, source: &str) -> ApiResult<Principal> {
        let h = secrets::token_hash(credential.trim());
        let now = time::now_micros();
        let mut c = self.conn().await?;
        if credential.starts_with("cvk_") {
            let row: Option<(String, String, String)> =
                sqlx::query_as("SELECT id, user_id, body FROM api_keys WHERE key_hash = $1")
                    .bind(&h)
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(cvlan_store::StoreError::from)?;
            let (kid, uid, body) = row.ok_or(ApiError::Unauthenticated)?;
            let key: pb::ApiKey =
                serde_json::from_str(&body).map_err(|e| ApiError::Internal(e.into()))?;
            if key
                .expires_at
                .as_ref()
                .is_some_and(|t| time::micros(t) <= now)
            {
                return Err(ApiError::Unauthenticated);
            }
            let user = self.user_by_id(&mut c, &uid).await?;
            // A key never outranks its owner as the owner is now (roles can be lowered later).
            let key_role = Role::try_from(key.role).unwrap_or(Role::Viewer);
            let user_role = Role::try_from(user.role).unwrap_or(Role::Unspecified);
            let role = if may_grant(user_role, key_role) {
                key_role
            } else {
                user_role
            };
            return Ok(Principal {
                role,
                user,
                api_key_id: Some(kid),
                session_hash: None,
                source: source.to_string(),
            });
        }
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT user_id, expires_at FROM sessions WHERE token_hash = $1")
                .bind(&h)
                .fetch_optional(&mut *c)
                .await
                .map_err(cvlan_store::StoreError::from)?;
        let (uid, exp) = row.ok_or(ApiError::Unauthenticated)?;
        if exp <= now {
            return Err(ApiError::Unauthenticated);
        }
        let user = self.user_by_id(&mut c, &uid).await?;
        Ok(Principal {
            role: Role::try_from(user.role).unwrap_or(Role::Unspecified),
            user,
            api_key_id: None,
            session_hash: Some(h),
            source: source.to_string(),
        })
    }

    // ---------- API keys ----------

    /// Lists the caller's API keys.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_api_keys(&self, p: &Principal) -> ApiResult<Vec<pb::ApiKey>> {
        self.authorize(p, Resource::ApiKey, Verb::Read, None, "api key")?;
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT body, created_at FROM api_keys WHERE user_id = $1 ORDER BY id")
                .bind(&p.user.id)
                .fetch_all(self.store.pool())
                .await
                .map_err(cvlan_store::StoreError::from)?;
        rows.into_iter()
            .map(|(b, c)| {
                let mut k: pb::ApiKey =
                    serde_json::from_str(&b).map_err(|e| ApiError::Internal(e.into()))?;
                k.created_at = Some(time::ts(c));
                Ok(k)
            })
            .collect()
    }

    /// Creates an API key for the caller with a role no higher than the caller's. The key is
    /// returned once.
    ///
    /// # Errors
    /// RBAC and validation errors.
    pub async fn create_api_key(
        &self,
        p: &Principal,
        mut k: pb::ApiKey,
        ttl_secs: u64,
    ) -> ApiResult<pb::ApiKey> {
        self.authorize(p, Resource::ApiKey, Verb::Write, None, "api key")?;
        if p.api_key_id.is_some() {
            return Err(ApiError::bad(
                "API keys cannot create API keys; sign in with a password",
            ));
        }
        check_name("name", &k.name)?;
        let role = if k.role == 0 {
            p.role
        } else {
            Role::try_from(k.role).map_err(|_| ApiError::bad("unknown role"))?
        };
        if !may_grant(p.role, role) {
            return Err(ApiError::Forbidden);
        }
        let secret = secrets::random_token("cvk_");
        k.id = entity::new_id();
        k.user_id = p.user.id.clone();
        k.tenant_id = p.user.tenant_id.clone();
        k.role = role as i32;
        k.key.clear();
        if ttl_secs > 0 {
            let ttl = i64::try_from(ttl_secs.min(10 * 365 * 86400)).unwrap_or(0);
            k.expires_at = Some(time::ts(time::now_micros() + ttl * 1_000_000));
        }
        let mut w = self.store.begin_write().await?;
        entity::insert_with(
            w.conn(),
            &k,
            &[
                ("user_id", Col::Text(k.user_id.clone())),
                ("key_hash", Col::Text(secrets::token_hash(&secret.0))),
            ],
        )
        .await?;
        audit::insert(
            w.conn(),
            &p.audit(&k.tenant_id).event(
                "apikey.create",
                "apikey",
                &k.id,
                serde_json::to_value(&k).unwrap_or_default(),
            ),
        )
        .await?;
        w.commit().await?;
        k.created_at = Some(time::ts(time::now_micros()));
        k.key = secret.0;
        Ok(k)
    }

    /// Deletes one of the caller's API keys (superadmins: anyone's).
    ///
    /// # Errors
    /// Not found.
    pub async fn delete_api_key(&self, p: &Principal, id: &str) -> ApiResult<()> {
        let mut w = self.store.begin_write().await?;
        let r = if p.role == Role::Superadmin {
            sqlx::query("DELETE FROM api_keys WHERE id = $1")
                .bind(id)
                .execute(w.conn())
                .await
        } else {
            sqlx::query("DELETE FROM api_keys WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(&p.user.id)
                .execute(w.conn())
                .await
        }
        .map_err(cvlan_store::StoreError::from)?;
        if r.rows_affected() == 0 {
            return Err(ApiError::NotFound("api key"));
        }
        audit::insert(
            w.conn(),
            &p.audit(&p.user.tenant_id)
                .event("apikey.delete", "apikey", id, json!({})),
        )
        .await?;
        w.commit().await?;
        Ok(())
    }

    // ---------- registration tokens ----------

    /// Creates a signed registration token for a CVLAN; the token string is returned once.
    ///
    /// # Errors
    /// RBAC and validation errors.
    pub async fn create_token(
        &self,
        p: &Principal,
        tenant: &str,
        mut t: pb::RegistrationToken,
        ttl_secs: u64,
    ) -> ApiResult<pb::RegistrationToken> {
        check_text("description", &t.description, 1024)?;
        for tag in &t.tags {
            check_name("tag", tag)?;
        }
        let now = time::now_micros();
        let exp = match &t.expires_at {
            Some(e) => time::micros(e),
            None => {
                now + i64::try_from(if ttl_secs == 0 { 86400 } else { ttl_secs })
                    .unwrap_or(i64::MAX / 2)
                    .saturating_mul(1_000_000)
            }
        };
        if exp <= now {
            return Err(ApiError::bad("expiry must be in the future"));
        }
        if exp > now + 366 * 86400 * 1_000_000 {
            return Err(ApiError::bad("tokens live at most 366 days"));
        }
        if t.cvlan_id.is_empty() {
            return Err(ApiError::bad("cvlanId is required"));
        }
        let mut w = self.store.begin_write().await?;
        let ten = self
            .tenant(w.conn(), p, tenant, Resource::Token, Verb::Write)
            .await?;
        let cv = self
            .cvlan_in(w.conn(), &ten.id, &t.cvlan_id)
            .await
            .map_err(|_| ApiError::bad(format!("cvlan {:?} does not exist", t.cvlan_id)))?;
        t.id = entity::new_id();
        t.tenant_id = ten.id.clone();
        t.cvlan_id = cv.id.clone();
        t.expires_at = Some(time::ts(exp));
        t.revoked = false;
        t.uses = 0;
        t.token.clear();
        entity::insert_with(
            w.conn(),
            &t,
            &[
                ("cvlan_id", Col::Text(cv.id.clone())),
                ("expires_at", Col::Int(exp)),
            ],
        )
        .await?;
        audit::insert(
            w.conn(),
            &p.audit(&ten.id).event(
                "token.create",
                "token",
                &t.id,
                serde_json::to_value(&t).unwrap_or_default(),
            ),
        )
        .await?;
        w.commit().await?;
        self.publish(&ten.id, "token", &t.id, "create");
        let claims = tokens::Claims {
            id: t.id.clone(),
            tenant: ten.id.clone(),
            cvlan: cv.id.clone(),
            exp: exp / 1_000_000,
            reusable: t.reusable,
            ephemeral: t.ephemeral,
            tags: t.tags.clone(),
            ca: self.ca.pin().to_string(),
            vrouter: String::new(),
        };
        t.created_at = Some(time::ts(now));
        t.token = tokens::sign(&self.signing, &claims);
        Ok(t)
    }

    /// Revokes a token (it stays listed, marked revoked).
    ///
    /// # Errors
    /// RBAC and not-found errors.
    pub async fn revoke_token(
        &self,
        p: &Principal,
        tenant: &str,
        key: &str,
    ) -> ApiResult<pb::RegistrationToken> {
        let mut w = self.store.begin_write().await?;
        let ten = self
            .tenant(w.conn(), p, tenant, Resource::Token, Verb::Write)
            .await?;
        let mut t: pb::RegistrationToken =
            entity::get(w.conn(), Scope::Tenant(&ten.id), key).await?;
        t.revoked = true;
        entity::update(w.conn(), &t).await?;
        sqlx::query("UPDATE reg_tokens SET revoked = 1 WHERE id = $1")
            .bind(&t.id)
            .execute(w.conn())
            .await
            .map_err(cvlan_store::StoreError::from)?;
        audit::insert(
            w.conn(),
            &p.audit(&ten.id)
                .event("token.revoke", "token", &t.id, json!({})),
        )
        .await?;
        w.commit().await?;
        self.publish(&ten.id, "token", &t.id, "update");
        Ok(t)
    }

    /// Verifies a registration token: signature and expiry offline first, then revocation and
    /// single use in the database. Used by the registration tier.
    ///
    /// # Errors
    /// [`ApiError::Unauthenticated`] with the reason.
    pub async fn verify_token(&self, token: &str) -> ApiResult<tokens::Claims> {
        let claims = tokens::verify(
            &self.signing.verifying_key(),
            token,
            time::now_micros() / 1_000_000,
        )
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if !claims.vrouter.is_empty() {
            return Err(ApiError::bad(
                "this is a vrouter join token, not a registration token",
            ));
        }
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT revoked, uses FROM reg_tokens WHERE id = $1 AND tenant_id = $2")
                .bind(&claims.id)
                .bind(&claims.tenant)
                .fetch_optional(self.store.pool())
                .await
                .map_err(cvlan_store::StoreError::from)?;
        match row {
            None => Err(ApiError::BadRequest(
                tokens::TokenError::Revoked.to_string(),
            )),
            Some((r, _)) if r != 0 => Err(ApiError::BadRequest(
                tokens::TokenError::Revoked.to_string(),
            )),
            Some((_, u)) if u > 0 && !claims.reusable => {
                Err(ApiError::BadRequest(tokens::TokenError::Used.to_string()))
            }
            Some(_) => Ok(claims),
        }
    }

    // ---------- addresses ----------

    /// Reserves an address in a CVLAN (the requested one, or the lowest free).
    ///
    /// # Errors
    /// RBAC, out of range, taken (409), exhausted (409).
    pub async fn create_address(
        self: &Arc<Self>,
        p: &Principal,
        tenant: &str,
        cvlan: &str,
        body: pb::AddressReservation,
    ) -> ApiResult<pb::AddressReservation> {
        check_text("description", &body.description, 1024)?;
        let requested = match (body.address.is_empty(), body.address_v6.is_empty()) {
            (true, true) => None,
            (false, _) => Some(body.address.parse().map_err(|_| {
                ApiError::bad(format!("address {:?} is not an IP address", body.address))
            })?),
            (true, false) => Some(body.address_v6.parse().map_err(|_| {
                ApiError::bad(format!(
                    "addressV6 {:?} is not an IP address",
                    body.address_v6
                ))
            })?),
        };
        let (ten, cv) = {
            let mut c = self.conn().await?;
            let ten = self
                .tenant(&mut c, p, tenant, Resource::Address, Verb::Write)
                .await?;
            let cv = self.cvlan_in(&mut c, &ten.id, cvlan).await?;
            (ten, cv)
        };
        if !body.node_id.is_empty() {
            return Err(ApiError::bad(
                "nodeId is set by registration, not by reservations",
            ));
        }
        let r = self
            .store
            .allocate(AllocRequest {
                tenant_id: ten.id.clone(),
                cvlan_id: cv.id.clone(),
                requested,
                node_id: String::new(),
                description: body.description,
                audit: p.audit(&ten.id),
            })
            .await?;
        self.publish(&ten.id, "address", &r.id, "create");
        Ok(r)
    }

    /// Lists a CVLAN's reservations.
    ///
    /// # Errors
    /// RBAC errors.
    pub async fn list_addresses(
        &self,
        p: &Principal,
        tenant: &str,
        cvlan: &str,
        page_token: &str,
        page_size: u32,
    ) -> ApiResult<Page<pb::AddressReservation>> {
        let mut c = self.conn().await?;
        let ten = self
            .tenant(&mut c, p, tenant, Resource::Address, Verb::Read)
            .await?;
        let cv = self.cvlan_in(&mut c, &ten.id, cvlan).await?;
        Ok(entity::list(
            &mut c,
            Scope::Tenant(&ten.id),
            Some(("cvlan_id", &cv.id)),
            page_token,
            page_size,
        )
        .await?)
    }

    /// Gets one reservation by id or address.
    ///
    /// # Errors
    /// RBAC and not-found errors.
    pub async fn get_address(
        &self,
        p: &Principal,
        tenant: &str,
        cvlan: &str,
        key: &str,
    ) -> ApiResult<pb::AddressReservation> {
        let mut c = self.conn().await?;
        let ten = self
            .tenant(&mut c, p, tenant, Resource::Address, Verb::Read)
            .await?;
        let cv = self.cvlan_in(&mut c, &ten.id, cvlan).await?;
        let a: pb::AddressReservation = entity::get(&mut c, Scope::Tenant(&ten.id), key).await?;
        if a.cvlan_id != cv.id {
            return Err(ApiError::NotFound("address"));
        }
        Ok(a)
    }

    /// Releases a reservation.
    ///
    /// # Errors
    /// RBAC and not-found errors.
    pub async fn delete_address(
        &self,
        p: &Principal,
        tenant: &str,
        cvlan: &str,
        key: &str,
    ) -> ApiResult<()> {
        let mut w = self.store.begin_write().await?;
        let ten = self
            .tenant(w.conn(), p, tenant, Resource::Address, Verb::Write)
            .await?;
        let cv = self.cvlan_in(w.conn(), &ten.id, cvlan).await?;
        let r = self.store.release(&mut w, &ten.id, &cv.id, key).await?;
        if !r.node_id.is_empty() {
            return Err(ApiError::Conflict(
                "the address belongs to a node; delete the node instead".into(),
            ));
        }
        audit::insert(
            w.conn(),
            &p.audit(&ten.id).event(
                "address.delete",
                "address",
                &r.id,
                json!({"address": r.address}),
            ),
        )
        .await?;
        w.commit().await?;
        self.publish(&ten.id, "address", &r.id, "delete");
        Ok(())
    }

    // ---------- nodes ----------

    /// Deletes a node and releases its addresses.
    ///
    /// # Errors
    /// RBAC and not-found errors.
    pub async fn delete_node(&self, p: &Principal, tenant: &str, key: &str) -> ApiResult<()> {
        let mut c = self.conn().await?;
        let ten = self
            .tenant(&mut c, p, tenant, Resource::Node, Verb::Write)
            .await?;
        let n: pb::Node = entity::get(&mut c, Scope::Tenant(&ten.id), key).await?;
        drop(c);
        self.remove_node(&ten.id, &n.id, &p.audit(&ten.id), "node.delete")
            .await
    }

    // ---------- audit ----------

    /// Lists audit events of a tenant (or all, for superadmins with `tenant = None`).
    ///
    /// # Errors
    /// RBAC errors.
    pub async fn list_audit(
        &self,
        p: &Principal,
        tenant: TenantRef<'_>,
        mut f: AuditFilter,
        page_token: &str,
        page_size: u32,
    ) -> ApiResult<Page<pb::AuditEvent>> {
        let mut c = self.conn().await?;
        f.tenant_id = match tenant {
            Some(t) => Some(
                self.tenant(&mut c, p, t, Resource::Audit, Verb::Read)
                    .await?
                    .id,
            ),
            None => {
                self.authorize(p, Resource::Audit, Verb::Read, None, "audit")?;
                None
            }
        };
        Ok(audit::list(&mut c, &f, page_token, page_size).await?)
    }

    /// Deletes expired sessions; returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn purge_sessions(&self) -> ApiResult<u64> {
        let mut w = self.store.begin_write().await?;
        let r = sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(time::now_micros())
            .execute(w.conn())
            .await
            .map_err(cvlan_store::StoreError::from)?;
        w.commit().await?;
        Ok(r.rows_affected())
    }

    /// Deletes audit events past retention; returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn trim_audit(&self) -> ApiResult<u64> {
        let cutoff = time::now_micros() - self.config.audit_retention_days * 86400 * 1_000_000;
        let mut w = self.store.begin_write().await?;
        let n = audit::delete_older_than(w.conn(), cutoff).await?;
        if n > 0 {
            audit::insert(
                w.conn(),
                &system_audit().event(
                    "audit.retention",
                    "audit",
                    "",
                    json!({"deleted": n, "retentionDays": self.config.audit_retention_days}),
                ),
            )
            .await?;
        }
        w.commit().await?;
        Ok(n)
    }
}

fn system_audit() -> AuditRecord {
    AuditRecord {
        actor_id: "system".into(),
        actor: "system".into(),
        tenant_id: String::new(),
        source_address: String::new(),
    }
}

fn user_summary(u: &pb::User) -> Value {
    let mut u = u.clone();
    u.password.clear();
    serde_json::to_value(&u).unwrap_or_default()
}

fn scope(tenant_id: &str) -> Scope<'_> {
    if tenant_id.is_empty() {
        Scope::Global
    } else {
        Scope::Tenant(tenant_id)
    }
}

/// snake_case → camelCase, as proto3 JSON names fields.
fn camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut up = false;
    for ch in s.chars() {
        if ch == '_' {
            up = true;
        } else if up {
            out.extend(ch.to_uppercase());
            up = false;
        } else {
            out.push(ch);
        }
    }
    out
}

fn mask_fields(mask: &[String]) -> Vec<String> {
    mask.iter()
        .flat_map(|m| m.split(','))
        .map(|s| camel(s.trim()))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Copies the masked top-level fields of `patch` onto `cur` at the JSON level; a field absent
/// from `patch` (a proto default) resets it.
fn apply_mask<K: serde::Serialize + serde::de::DeserializeOwned>(
    cur: &K,
    patch: &K,
    mask: &[String],
    immutable: &[&str],
) -> ApiResult<K> {
    let known = crate::kinds::json_fields::<K>();
    let fields = mask_fields(mask);
    if fields.is_empty() {
        return Err(ApiError::bad("nothing to update: give at least one field"));
    }
    let mut v = serde_json::to_value(cur).map_err(|e| ApiError::Internal(e.into()))?;
    let pv = serde_json::to_value(patch).map_err(|e| ApiError::Internal(e.into()))?;
    let (Some(obj), Some(pobj)) = (v.as_object_mut(), pv.as_object()) else {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "entity is not a JSON object"
        )));
    };
    for f in &fields {
        if !known.contains(f.as_str()) {
            return Err(ApiError::bad(format!("unknown field {f}")));
        }
        if ["id", "tenantId", "createdAt", "updatedAt"].contains(&f.as_str())
            || immutable.contains(&f.as_str())
        {
            return Err(ApiError::bad(format!("field {f} cannot be changed")));
        }
        match pobj.get(f) {
            Some(x) => {
                obj.insert(f.clone(), x.clone());
            }
            None => {
                obj.remove(f);
            }
        }
    }
    serde_json::from_value(v).map_err(|e| ApiError::bad(format!("invalid update: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_applies_named_fields_and_resets_absent_ones() {
        let cur = pb::Group {
            id: "i".into(),
            name: "a".into(),
            description: "d".into(),
            ..Default::default()
        };
        let patch = pb::Group {
            name: "b".into(),
            ..Default::default()
        };
        let out: pb::Group =
            apply_mask(&cur, &patch, &["name".into(), "description".into()], &[]).unwrap();
        assert_eq!(
            (out.id.as_str(), out.name.as_str(), out.description.as_str()),
            ("i", "b", "")
        );
        assert!(apply_mask(&cur, &patch, &["id".into()], &[]).is_err());
        assert!(apply_mask(&cur, &patch, &[], &[]).is_err());
        assert!(apply_mask(&cur, &patch, &["bogus_field".into()], &[]).is_err());
        let out: pb::Group = apply_mask(&cur, &patch, &["name,description".into()], &[]).unwrap();
        assert_eq!(out.name, "b");
    }
}
