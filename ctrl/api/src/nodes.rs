//! Node lifecycle in the service layer: registration with a token (address, client
//! certificate), certificate renewal, endpoint reports, presence, expiry, ephemeral clean-up and
//! static external peers. The gRPC NodeService (`node_grpc`) and REST only translate.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use cvlan_proto::v1 as pb;
use cvlan_store::audit::{self, AuditRecord};
use cvlan_store::entity::{self, Scope};
use cvlan_store::ipam::AllocRequest;
use cvlan_store::time;
use serde_json::json;

use crate::error::{ApiError, ApiResult};
use crate::kinds::{Kind, check_text};
use crate::rbac::{Resource, Verb};
use crate::service::{Principal, Service};
use crate::tokens;

/// How long node client certificates are valid; agents renew after two thirds.
pub const CERT_TTL: Duration = Duration::from_secs(30 * 86_400);

pub(crate) fn store_err(e: sqlx::Error) -> ApiError {
    cvlan_store::StoreError::from(e).into()
}

/// A DNS-label node name from a hostname: lowercase, other characters to '-', at most 56
/// characters (room for a "-NN" suffix).
pub fn node_name(hostname: &str) -> String {
    let mut s: String = hostname
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(56)
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "node".into()
    } else if crate::kinds::check_name("name", &s).is_err() {
        format!("node-{}", &s[..s.len().min(50)])
            .trim_matches('-')
            .to_string()
    } else {
        s
    }
}

pub(crate) fn wg_key_ok(s: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .is_ok_and(|b| b.len() == 32)
}

/// Read-modify-write of a body (nodes, vrouters): on PostgreSQL the row is locked first so
/// concurrent writers (presence, endpoints, expiry, enrolment, admin edits) cannot overwrite
/// each other's fields; SQLite's single writer already serialises them.
pub(crate) async fn lock_row(
    store: &cvlan_store::Store,
    w: &mut cvlan_store::WriteTx,
    table: &'static str,
    id: &str,
) -> ApiResult<()> {
    if store.backend() == cvlan_store::Backend::Postgres {
        let q = format!("SELECT id FROM {table} WHERE id = $1 FOR UPDATE");
        sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(id)
            .execute(w.conn())
            .await
            .map_err(store_err)?;
    }
    Ok(())
}

/// Whether a node has been expired (by an admin or by its key expiry).
pub fn expired(n: &pb::Node, now_micros: i64) -> bool {
    n.expires_at
        .as_ref()
        .is_some_and(|t| time::micros(t) <= now_micros)
}

impl Service {
    /// Registers a node with a registration token: checks the token (signature and expiry
    /// offline, then revocation and single use), allocates its addresses, issues its client
    /// certificate and records it, all or nothing.
    ///
    /// # Errors
    /// [`ApiError::TokenRefused`] with the reason, [`ApiError::BadRequest`] for malformed keys
    /// or CSR, [`ApiError::Conflict`] for a WireGuard key already registered,
    /// [`ApiError::Exhausted`] when the CVLAN is full.
    pub async fn register_node(
        &self,
        req: pb::RegisterRequest,
        source: &str,
    ) -> ApiResult<pb::RegisterResponse> {
        if !wg_key_ok(&req.wg_public_key) {
            return Err(ApiError::bad(
                "wgPublicKey must be a base64 32-byte WireGuard key",
            ));
        }
        check_text("hostname", &req.hostname, 253)?;
        check_text("os", &req.os, 64)?;
        let claims = self
            .verify_token(&req.auth_key)
            .await
            .map_err(|e| match e {
                ApiError::BadRequest(m) => ApiError::TokenRefused(m),
                e => e,
            })?;
        let node_id = entity::new_id();
        // Fails on a malformed CSR before anything is written.
        let (cert_pem, cert_exp) = self.ca.issue_client(
            &req.csr_pem,
            &crate::ca::Identity::Node(node_id.clone()),
            CERT_TTL,
        )?;
        let actor = AuditRecord {
            actor_id: claims.id.clone(),
            actor: format!("registration token {}", claims.id),
            tenant_id: claims.tenant.clone(),
            source_address: source.to_string(),
        };
        let addr = self
            .store
            .allocate(AllocRequest {
                tenant_id: claims.tenant.clone(),
                cvlan_id: claims.cvlan.clone(),
                requested: None,
                node_id: node_id.clone(),
                description: format!("node {}", node_name(&req.hostname)),
                audit: actor.clone(),
            })
            .await?;
        match self
            .insert_registered(&req, &claims, &node_id, &addr, &actor)
            .await
        {
            Ok(node) => {
                metrics::counter!("cvlan_node_registrations_total").increment(1);
                self.publish(&node.tenant_id, "node", &node.id, "create");
                Ok(pb::RegisterResponse {
                    node: Some(node),
                    certificate_pem: cert_pem,
                    ca_pem: self.ca.pem().to_string(),
                    certificate_expires_at: Some(time::ts(micros_of(cert_exp))),
                })
            }
            Err(e) => {
                // Give the address back; the node row was never committed.
                if let Ok(mut w) = self.store.begin_write().await
                    && self
                        .store
                        .release(&mut w, &claims.tenant, &claims.cvlan, &addr.id)
                        .await
                        .is_ok()
                {
                    let _ = w.commit().await;
                }
                Err(e)
            }
        }
    }

    async fn insert_registered(
        &self,
        req: &pb::RegisterRequest,
        claims: &tokens::Claims,
        node_id: &str,
        addr: &pb::AddressReservation,
        actor: &AuditRecord,
    ) -> ApiResult<pb::Node> {
        let mut w = self.store.begin_write().await?;
        // Consume the token under the write lock: concurrent registrations with one
        // single-use token cannot both pass.
        let used = sqlx::query(
            "UPDATE reg_tokens SET uses = uses + 1 \
             WHERE id = $1 AND tenant_id = $2 AND revoked = 0 AND (uses = 0 OR $3 = 1)",
        )
        .bind(&claims.id)
        .bind(&claims.tenant)
        .bind(i64::from(claims.reusable))
        .execute(w.conn())
        .await
        .map_err(store_err)?;
        if used.rows_affected() == 0 {
            let revoked: Option<i64> =
                sqlx::query_scalar("SELECT revoked FROM reg_tokens WHERE id = $1")
                    .bind(&claims.id)
                    .fetch_optional(w.conn())
                    .await
                    .map_err(store_err)?;
            return Err(ApiError::TokenRefused(
                match revoked {
                    Some(0) => tokens::TokenError::Used,
                    _ => tokens::TokenError::Revoked,
                }
                .to_string(),
            ));
        }
        let externals: Vec<pb::ExternalPeer> =
            entity::list_all(w.conn(), Scope::Tenant(&claims.tenant)).await?;
        if externals
            .iter()
            .any(|e| e.wg_public_key == req.wg_public_key)
        {
            return Err(ApiError::Conflict(
                "this WireGuard key is already registered".into(),
            ));
        }
        let base = node_name(&req.hostname);
        let mut name = base.clone();
        for i in 2..1000 {
            if entity::find::<pb::Node>(w.conn(), Scope::Tenant(&claims.tenant), &name)
                .await?
                .is_none()
            {
                break;
            }
            name = format!("{base}-{i}");
        }
        let node = pb::Node {
            id: node_id.to_string(),
            tenant_id: claims.tenant.clone(),
            cvlan_id: claims.cvlan.clone(),
            name,
            os: req.os.clone(),
            wg_public_key: req.wg_public_key.clone(),
            ipv4: addr.address.clone(),
            ipv6: addr.address_v6.clone(),
            tags: claims.tags.clone(),
            ephemeral: claims.ephemeral,
            last_seen: Some(time::ts(time::now_micros())),
            ..Default::default()
        };
        entity::insert_with(w.conn(), &node, &node.extra())
            .await
            .map_err(|e| match ApiError::from(e) {
                ApiError::Conflict(_) => {
                    ApiError::Conflict("this WireGuard key is already registered".into())
                }
                e => e,
            })?;
        audit::insert(
            w.conn(),
            &actor.event(
                "node.register",
                "node",
                &node.id,
                json!({"name": node.name, "cvlanId": node.cvlan_id, "ipv4": node.ipv4,
                       "ipv6": node.ipv6, "tags": node.tags, "ephemeral": node.ephemeral}),
            ),
        )
        .await?;
        let out =
            entity::get::<pb::Node>(w.conn(), Scope::Tenant(&claims.tenant), &node.id).await?;
        w.commit().await?;
        Ok(out)
    }

    /// A node by id, in any tenant (node-facing calls are authenticated by certificate).
    ///
    /// # Errors
    /// [`ApiError::NotFound`] when deleted.
    pub async fn node_by_id(&self, node_id: &str) -> ApiResult<pb::Node> {
        let tid: Option<String> = sqlx::query_scalar("SELECT tenant_id FROM nodes WHERE id = $1")
            .bind(node_id)
            .fetch_optional(self.store.pool())
            .await
            .map_err(store_err)?;
        let tid = tid.ok_or(ApiError::NotFound("node"))?;
        let mut c = self.store.pool().acquire().await.map_err(store_err)?;
        Ok(entity::get::<pb::Node>(&mut c, Scope::Tenant(&tid), node_id).await?)
    }

    /// A node allowed to use the node API: exists and is not expired.
    ///
    /// # Errors
    /// [`ApiError::NotFound`] when deleted, [`ApiError::Forbidden`] when expired.
    pub async fn active_node(&self, node_id: &str) -> ApiResult<pb::Node> {
        let n = self.node_by_id(node_id).await?;
        if expired(&n, time::now_micros()) {
            return Err(ApiError::Forbidden);
        }
        Ok(n)
    }

    /// Issues a fresh client certificate for an active node.
    ///
    /// # Errors
    /// Not found / expired node, malformed CSR.
    pub async fn renew_certificate(
        &self,
        node_id: &str,
        csr_pem: &str,
    ) -> ApiResult<(String, SystemTime)> {
        let n = self.active_node(node_id).await?;
        let out = self
            .ca
            .issue_client(csr_pem, &crate::ca::Identity::Node(n.id), CERT_TTL)?;
        metrics::counter!("cvlan_node_cert_renewals_total").increment(1);
        Ok(out)
    }

    async fn modify_node(
        &self,
        node_id: &str,
        f: impl FnOnce(&mut pb::Node) -> bool,
    ) -> ApiResult<Option<pb::Node>> {
        let mut w = self.store.begin_write().await?;
        let tid: Option<String> = sqlx::query_scalar("SELECT tenant_id FROM nodes WHERE id = $1")
            .bind(node_id)
            .fetch_optional(w.conn())
            .await
            .map_err(store_err)?;
        let tid = tid.ok_or(ApiError::NotFound("node"))?;
        lock_row(&self.store, &mut w, "nodes", node_id).await?;
        let mut n: pb::Node = entity::get(w.conn(), Scope::Tenant(&tid), node_id).await?;
        if !f(&mut n) {
            return Ok(None);
        }
        entity::update(w.conn(), &n).await?;
        w.commit().await?;
        Ok(Some(n))
    }

    /// Records the endpoints a node reports (plus the address its connection came from, as
    /// "observed") and pushes them to its peers.
    ///
    /// # Errors
    /// Not found, too many or malformed endpoints.
    pub async fn report_endpoints(
        &self,
        node_id: &str,
        reported: Vec<pb::Endpoint>,
        observed: Option<SocketAddr>,
    ) -> ApiResult<()> {
        if reported.len() > 32 {
            return Err(ApiError::bad("at most 32 endpoints"));
        }
        self.active_node(node_id).await?;
        let mut eps: Vec<pb::Endpoint> = Vec::new();
        for e in reported {
            let a: SocketAddr = e
                .address
                .parse()
                .map_err(|_| ApiError::bad(format!("endpoint {:?} is not ip:port", e.address)))?;
            if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
                return Err(ApiError::bad(format!("endpoint {a} is not usable")));
            }
            check_text("kind", &e.kind, 32)?;
            let kind = if e.kind.is_empty() {
                "local".to_string()
            } else {
                e.kind
            };
            if !eps.iter().any(|x| x.address == a.to_string()) {
                eps.push(pb::Endpoint {
                    address: a.to_string(),
                    kind,
                });
            }
        }
        // The connection's source address with the reported WireGuard port: what a peer on
        // the control plane's side of any NAT would reach.
        if let (Some(o), Some(port)) = (
            observed,
            eps.first()
                .and_then(|e| e.address.parse::<SocketAddr>().ok())
                .map(|a| a.port()),
        ) {
            let a = SocketAddr::new(o.ip().to_canonical(), port).to_string();
            if !o.ip().is_loopback() && !eps.iter().any(|x| x.address == a) {
                eps.push(pb::Endpoint {
                    address: a,
                    kind: "observed".into(),
                });
            }
        }
        if let Some(n) = self
            .modify_node(node_id, |n| {
                if n.endpoints == eps {
                    return false;
                }
                n.endpoints = eps;
                true
            })
            .await?
        {
            self.publish(&n.tenant_id, "node", &n.id, "update");
        }
        Ok(())
    }

    /// Marks a node online/offline and refreshes its last-seen time (no change event: peers'
    /// maps do not depend on presence).
    ///
    /// # Errors
    /// Not found.
    pub async fn touch_node(&self, node_id: &str, online: bool) -> ApiResult<()> {
        self.modify_node(node_id, |n| {
            n.online = online;
            n.last_seen = Some(time::ts(time::now_micros()));
            true
        })
        .await?;
        Ok(())
    }

    /// Expires a node now: it drops out of every peer's map and its stream is closed.
    ///
    /// # Errors
    /// RBAC and not-found errors.
    pub async fn expire_node(&self, p: &Principal, tenant: &str, key: &str) -> ApiResult<pb::Node> {
        let mut w = self.store.begin_write().await?;
        let ten = self
            .tenant(w.conn(), p, tenant, Resource::Node, Verb::Write)
            .await?;
        let found: pb::Node = entity::get(w.conn(), Scope::Tenant(&ten.id), key).await?;
        lock_row(&self.store, &mut w, "nodes", &found.id).await?;
        let mut n: pb::Node = entity::get(w.conn(), Scope::Tenant(&ten.id), &found.id).await?;
        n.expires_at = Some(time::ts(time::now_micros()));
        n.online = false;
        entity::update(w.conn(), &n).await?;
        audit::insert(
            w.conn(),
            &p.audit(&ten.id)
                .event("node.expire", "node", &n.id, json!({"name": n.name})),
        )
        .await?;
        let out: pb::Node = entity::get(w.conn(), Scope::Tenant(&ten.id), &n.id).await?;
        w.commit().await?;
        self.publish(&ten.id, "node", &n.id, "update");
        Ok(out)
    }

    /// Adds a static external WireGuard peer to a CVLAN (by name or id).
    ///
    /// # Errors
    /// RBAC, validation and conflict errors.
    pub async fn create_external_peer(
        &self,
        p: &Principal,
        tenant: &str,
        cvlan: &str,
        mut body: pb::ExternalPeer,
    ) -> ApiResult<pb::ExternalPeer> {
        let cv = self.get::<pb::Cvlan>(p, Some(tenant), cvlan).await?;
        body.cvlan_id = cv.id;
        self.create::<pb::ExternalPeer>(p, Some(tenant), body).await
    }

    /// Deletes ephemeral nodes not seen for `inactive` (they re-register when they return).
    ///
    /// # Errors
    /// Database errors.
    pub async fn gc_ephemeral(&self, inactive: Duration) -> ApiResult<u64> {
        let cutoff = time::now_micros() - i64::try_from(inactive.as_micros()).unwrap_or(i64::MAX);
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT tenant_id, body FROM nodes")
            .fetch_all(self.store.pool())
            .await
            .map_err(store_err)?;
        let mut n = 0;
        for (tid, body) in rows {
            let Ok(node) = serde_json::from_str::<pb::Node>(&body) else {
                continue;
            };
            let seen = node.last_seen.as_ref().map_or(0, time::micros);
            if node.ephemeral && seen < cutoff {
                let sys = AuditRecord {
                    actor_id: "system".into(),
                    actor: "ephemeral node clean-up".into(),
                    tenant_id: tid.clone(),
                    source_address: String::new(),
                };
                match self.remove_node(&tid, &node.id, &sys, "node.gc").await {
                    Ok(()) => n += 1,
                    Err(ApiError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(n)
    }

    /// Deletes a node row and its addresses with an audit event, then publishes the change.
    pub(crate) async fn remove_node(
        &self,
        tenant_id: &str,
        node_id: &str,
        who: &AuditRecord,
        action: &str,
    ) -> ApiResult<()> {
        let mut w = self.store.begin_write().await?;
        let n: pb::Node = entity::get(w.conn(), Scope::Tenant(tenant_id), node_id).await?;
        entity::delete::<pb::Node>(w.conn(), &n.id).await?;
        sqlx::query("DELETE FROM addresses WHERE tenant_id = $1 AND node_id = $2")
            .bind(tenant_id)
            .bind(&n.id)
            .execute(w.conn())
            .await
            .map_err(store_err)?;
        sqlx::query("UPDATE cvlans SET alloc_version = alloc_version + 1 WHERE id = $1")
            .bind(&n.cvlan_id)
            .execute(w.conn())
            .await
            .map_err(store_err)?;
        audit::insert(
            w.conn(),
            &who.event(action, "node", &n.id, json!({"name": n.name})),
        )
        .await?;
        w.commit().await?;
        self.store.ipam.invalidate(&n.cvlan_id);
        self.publish(tenant_id, "node", &n.id, "delete");
        Ok(())
    }
}

pub(crate) fn micros_of(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_become_dns_label_node_names() {
        assert_eq!(node_name("Alice-Laptop.local"), "alice-laptop");
        assert_eq!(node_name("web_01"), "web-01");
        assert_eq!(node_name("--"), "node");
        assert_eq!(node_name(""), "node");
        assert_eq!(node_name("a!!b"), "a-b");
        assert!(node_name(&"x".repeat(300)).len() <= 56);
    }
}
