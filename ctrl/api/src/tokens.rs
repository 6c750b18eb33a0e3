//! Registration tokens (nodes) and vrouter join tokens: Ed25519-signed claims verifiable
//! offline. The signature and expiry are
//! checked before any database work; revocation and single use are checked after.
//!
//! Format: `cvt1.<base64url(claims JSON)>.<base64url(signature over "cvt1." + claims part)>`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// What a registration token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Token id (row in `reg_tokens`, used for revocation and use counting).
    pub id: String,
    /// Tenant id.
    pub tenant: String,
    /// CVLAN id.
    pub cvlan: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// May register more than one node.
    pub reusable: bool,
    /// Nodes registered with it are removed when they go away.
    pub ephemeral: bool,
    /// Tags given to nodes registered with it.
    pub tags: Vec<String>,
    /// Lowercase hex SHA-256 of the control plane's CA certificate (DER). Agents pin it when
    /// they first connect, so a token is all a device needs to trust the node endpoint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca: String,
    /// Set on vrouter join tokens only (tenant and CVLAN are then empty): the vrouter id it
    /// enrols. Registration refuses tokens that carry it, enrolment tokens that do not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vrouter: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the `cvt1.….…` shape or not decodable.
    #[error("malformed registration token")]
    Malformed,
    /// Signature does not verify with this control plane's key.
    #[error("registration token signature is invalid")]
    BadSignature,
    /// Past its expiry.
    #[error("registration token has expired")]
    Expired,
    /// Revoked by an admin.
    #[error("registration token has been revoked")]
    Revoked,
    /// Single-use token already used.
    #[error("registration token has already been used")]
    Used,
}

const PREFIX: &str = "cvt1.";

/// Signs claims into a token string.
pub fn sign(key: &SigningKey, claims: &Claims) -> String {
    let body = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signed = format!("{PREFIX}{body}");
    let sig = key.sign(signed.as_bytes());
    format!("{signed}.{}", B64.encode(sig.to_bytes()))
}

/// Verifies signature and expiry (`now` in seconds) without touching any database.
///
/// # Errors
/// [`TokenError::Malformed`], [`TokenError::BadSignature`], [`TokenError::Expired`].
pub fn verify(key: &VerifyingKey, token: &str, now: i64) -> Result<Claims, TokenError> {
    let token = token.trim();
    if token.len() > 4096 || !token.starts_with(PREFIX) {
        return Err(TokenError::Malformed);
    }
    let (signed, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let sig: [u8; 64] = B64
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?
        .try_into()
        .map_err(|_| TokenError::Malformed)?;
    key.verify(signed.as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| TokenError::BadSignature)?;
    let body = B64
        .decode(&signed[PREFIX.len()..])
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&body).map_err(|_| TokenError::Malformed)?;
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn claims(exp: i64) -> Claims {
        Claims {
            id: "t1".into(),
            tenant: "ten".into(),
            cvlan: "cv".into(),
            exp,
            reusable: false,
            ephemeral: true,
            tags: vec!["web".into()],
            ca: String::new(),
            vrouter: String::new(),
        }
    }

    #[test]
    fn a_signed_token_verifies_and_round_trips_its_claims() {
        let k = key(1);
        let t = sign(&k, &claims(2000));
        assert_eq!(verify(&k.verifying_key(), &t, 1000), Ok(claims(2000)));
    }

    #[test]
    fn expired_token_is_rejected_before_db_lookup() {
        let k = key(1);
        let t = sign(&k, &claims(1000));
        assert_eq!(
            verify(&k.verifying_key(), &t, 1000),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn token_from_another_control_plane_or_tampered_is_rejected() {
        let t = sign(&key(1), &claims(2000));
        assert_eq!(
            verify(&key(2).verifying_key(), &t, 0),
            Err(TokenError::BadSignature)
        );
        let forged = format!(
            "{PREFIX}{}.{}",
            B64.encode(
                serde_json::to_vec(&Claims {
                    reusable: true,
                    ..claims(9999)
                })
                .unwrap()
            ),
            t.rsplit_once('.').unwrap().1
        );
        assert_eq!(
            verify(&key(1).verifying_key(), &forged, 0),
            Err(TokenError::BadSignature)
        );
        for junk in ["", "cvt1.", "cvt1.a.b", "abc", "cvt1.!!!.###"] {
            assert!(verify(&key(1).verifying_key(), junk, 0).is_err(), "{junk}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_strings_never_verify(s in ".{0,300}") {
            proptest::prop_assert!(verify(&key(1).verifying_key(), &s, 0).is_err());
        }
    }
}
