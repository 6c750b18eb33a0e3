//! Vrouter (gateway) lifecycle in the service layer: single-use join tokens issued by a
//! superadmin, enrolment (WireGuard key, underlay endpoint, client certificate) and certificate
//! renewal. The gRPC GatewayService (`gateway_grpc`), AdminService and REST only translate.
//!
//! Join tokens are the registration tokens' `cvt1` format (same signing key, same `ca` pin, so
//! vrouterd trusts the node listener exactly like an agent does) with a `vrouter` claim; the
//! database keeps only their SHA-256, expiry and when they were used.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use cvlan_proto::v1 as pb;
use cvlan_store::audit::{self, AuditRecord};
use cvlan_store::entity::{self, Scope};
use cvlan_store::time;
use serde_json::json;

use crate::ca::Identity;
use crate::error::{ApiError, ApiResult};
use crate::kinds::Kind;
use crate::nodes::{CERT_TTL, lock_row, micros_of, store_err, wg_key_ok};
use crate::rbac::{Resource, Verb};
use crate::secrets::token_hash;
use crate::service::{Principal, Service};
use crate::tokens::{self, TokenError};

/// Join token lifetime when none is asked for.
pub const JOIN_TTL_DEFAULT: Duration = Duration::from_secs(3600);
/// Longest join token lifetime.
pub const JOIN_TTL_MAX: Duration = Duration::from_secs(7 * 86_400);

/// What vrouterd is told when its join token is refused (the registration wording, for a join
/// token).
fn refused(e: &TokenError) -> ApiError {
    ApiError::TokenRefused(match e {
        TokenError::Malformed => "malformed join token".into(),
        TokenError::BadSignature => "join token signature is invalid".into(),
        TokenError::Expired => "join token has expired".into(),
        TokenError::Revoked => "join token has been revoked (or its vrouter deleted)".into(),
        TokenError::Used => "join token has already been used".into(),
    })
}

/// An "ip:port" underlay endpoint with a usable address and port.
fn check_underlay(s: &str) -> ApiResult<SocketAddr> {
    let a: SocketAddr = s
        .parse()
        .map_err(|_| ApiError::bad(format!("endpoint {s:?} is not ip:port")))?;
    if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
        return Err(ApiError::bad(format!("endpoint {a} is not usable")));
    }
    Ok(a)
}

impl Service {
    /// Creates a single-use join token for a vrouter (superadmin only); the token string is
    /// returned once and never stored.
    ///
    /// # Errors
    /// RBAC, not found, lifetime out of range.
    pub async fn create_vrouter_join_token(
        &self,
        p: &Principal,
        vrouter: &str,
        ttl_secs: u64,
    ) -> ApiResult<pb::VrouterJoinToken> {
        self.authorize(p, Resource::Vrouter, Verb::Write, None, "vrouter")?;
        let ttl = match ttl_secs {
            0 => JOIN_TTL_DEFAULT,
            s if s > JOIN_TTL_MAX.as_secs() => {
                return Err(ApiError::bad("join tokens live at most 7 days (604800 s)"));
            }
            s => Duration::from_secs(s),
        };
        let now = time::now_micros();
        let exp = now + i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 2);
        let mut w = self.store.begin_write().await?;
        let v: pb::Vrouter = entity::get(w.conn(), Scope::Global, vrouter).await?;
        let claims = tokens::Claims {
            id: entity::new_id(),
            tenant: String::new(),
            cvlan: String::new(),
            exp: exp / 1_000_000,
            reusable: false,
            ephemeral: false,
            tags: Vec::new(),
            ca: self.ca.pin().to_string(),
            vrouter: v.id.clone(),
        };
        let token = tokens::sign(&self.signing, &claims);
        sqlx::query(
            "INSERT INTO vrouter_join_tokens (id, vrouter_id, token_hash, expires_at, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&claims.id)
        .bind(&v.id)
        .bind(token_hash(&token))
        .bind(exp)
        .bind(&p.user.id)
        .bind(now)
        .execute(w.conn())
        .await
        .map_err(store_err)?;
        audit::insert(
            w.conn(),
            &p.audit("").event(
                "vrouter.join_token.create",
                "vrouter",
                &v.id,
                json!({"tokenId": claims.id, "name": v.name, "expiresAt": time::ts(exp)}),
            ),
        )
        .await?;
        w.commit().await?;
        Ok(pb::VrouterJoinToken {
            token,
            expires_at: Some(time::ts(exp)),
        })
    }

    /// Enrols a vrouter with its join token: checks the token (signature and expiry offline,
    /// then single use in the database), records the WireGuard key and underlay endpoint and
    /// issues its client certificate, all or nothing.
    ///
    /// # Errors
    /// [`ApiError::TokenRefused`] with the reason, [`ApiError::BadRequest`] for a malformed key,
    /// endpoint or CSR, [`ApiError::Conflict`] for a key another vrouter uses.
    pub async fn enrol_vrouter(
        &self,
        req: pb::EnrolRequest,
        source: &str,
    ) -> ApiResult<pb::EnrolResponse> {
        let now = time::now_micros();
        let claims = tokens::verify(
            &self.signing.verifying_key(),
            &req.join_token,
            now / 1_000_000,
        )
        .map_err(|e| refused(&e))?;
        if claims.vrouter.is_empty() {
            return Err(ApiError::TokenRefused(
                "this is a node registration token, not a vrouter join token".into(),
            ));
        }
        if !wg_key_ok(&req.wg_public_key) {
            return Err(ApiError::bad(
                "wgPublicKey must be a base64 32-byte WireGuard key",
            ));
        }
        let endpoint = check_underlay(&req.endpoint)?.to_string();
        let (cert_pem, cert_exp) = self.ca.issue_client(
            &req.csr_pem,
            &Identity::Vrouter(claims.vrouter.clone()),
            CERT_TTL,
        )?;
        let mut w = self.store.begin_write().await?;
        // Consumed under the write lock: two enrolments with one token cannot both pass.
        let used = sqlx::query(
            "UPDATE vrouter_join_tokens SET used_at = $1 \
             WHERE id = $2 AND vrouter_id = $3 AND token_hash = $4 AND used_at = 0 AND expires_at > $1",
        )
        .bind(now)
        .bind(&claims.id)
        .bind(&claims.vrouter)
        .bind(token_hash(&req.join_token))
        .execute(w.conn())
        .await
        .map_err(store_err)?;
        if used.rows_affected() == 0 {
            let used_at: Option<i64> =
                sqlx::query_scalar("SELECT used_at FROM vrouter_join_tokens WHERE id = $1")
                    .bind(&claims.id)
                    .fetch_optional(w.conn())
                    .await
                    .map_err(store_err)?;
            return Err(refused(&match used_at {
                Some(u) if u != 0 => TokenError::Used,
                Some(_) => TokenError::Expired,
                None => TokenError::Revoked,
            }));
        }
        // One enrolment ends every other outstanding token of this vrouter: a token issued
        // before (a leak, a second attempt) must not later re-point the vrouter elsewhere.
        sqlx::query(
            "UPDATE vrouter_join_tokens SET used_at = $1 WHERE vrouter_id = $2 AND used_at = 0",
        )
        .bind(now)
        .bind(&claims.vrouter)
        .execute(w.conn())
        .await
        .map_err(store_err)?;
        lock_row(&self.store, &mut w, "vrouters", &claims.vrouter).await?;
        let all: Vec<pb::Vrouter> = entity::list_all(w.conn(), Scope::Global).await?;
        if all
            .iter()
            .any(|o| o.id != claims.vrouter && o.wg_public_key == req.wg_public_key)
        {
            return Err(ApiError::Conflict(
                "this WireGuard key is already used by another vrouter".into(),
            ));
        }
        let mut v = all
            .into_iter()
            .find(|o| o.id == claims.vrouter)
            .ok_or_else(|| refused(&TokenError::Revoked))?;
        v.wg_public_key = req.wg_public_key.clone();
        v.endpoint = endpoint;
        v.check()?;
        entity::update(w.conn(), &v).await?;
        let actor = AuditRecord {
            actor_id: claims.id.clone(),
            actor: format!("vrouter join token {}", claims.id),
            tenant_id: String::new(),
            source_address: source.to_string(),
        };
        audit::insert(
            w.conn(),
            &actor.event(
                "vrouter.enrol",
                "vrouter",
                &v.id,
                json!({"name": v.name, "endpoint": v.endpoint, "wgPublicKey": v.wg_public_key}),
            ),
        )
        .await?;
        let out: pb::Vrouter = entity::get(w.conn(), Scope::Global, &v.id).await?;
        w.commit().await?;
        self.publish("", "vrouter", &out.id, "update");
        metrics::counter!("cvlan_vrouter_enrolments_total").increment(1);
        Ok(pb::EnrolResponse {
            vrouter: Some(out),
            certificate_pem: cert_pem,
            ca_pem: self.ca.pem().to_string(),
            certificate_expires_at: Some(time::ts(micros_of(cert_exp))),
        })
    }

    /// A vrouter by id (gateway-facing calls are authenticated by certificate).
    ///
    /// # Errors
    /// [`ApiError::NotFound`] when deleted.
    pub async fn vrouter_by_id(&self, id: &str) -> ApiResult<pb::Vrouter> {
        let mut c = self.conn().await?;
        let v: pb::Vrouter = entity::get(&mut c, Scope::Global, id).await?;
        // `get` also matches names; a certificate names the id.
        if v.id != id {
            return Err(ApiError::NotFound("vrouter"));
        }
        Ok(v)
    }

    /// Issues a fresh client certificate for an existing vrouter.
    ///
    /// # Errors
    /// Not found, malformed CSR.
    pub async fn renew_vrouter_certificate(
        &self,
        id: &str,
        csr_pem: &str,
    ) -> ApiResult<(String, SystemTime)> {
        let v = self.vrouter_by_id(id).await?;
        self.ca
            .issue_client(csr_pem, &Identity::Vrouter(v.id), CERT_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underlay_endpoints_must_be_usable_ip_and_port() {
        assert!(check_underlay("10.255.0.1:51820").is_ok());
        assert!(check_underlay("[fd00::1]:51820").is_ok());
        for bad in [
            "",
            "gw.example:51820",
            "10.0.0.1",
            "10.0.0.1:0",
            "0.0.0.0:51820",
            "224.0.0.1:5",
        ] {
            assert!(check_underlay(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn join_token_refusals_name_the_join_token() {
        for e in [
            TokenError::Malformed,
            TokenError::BadSignature,
            TokenError::Expired,
            TokenError::Revoked,
            TokenError::Used,
        ] {
            let m = refused(&e).to_string();
            assert!(m.contains("join token"), "{m}");
        }
    }
}
