//! Secrets: argon2id password hashes (computed off the async runtime), opaque session tokens
//! and API keys stored only as SHA-256 hashes.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};

/// A secret string that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Hashes a password with argon2id on the blocking pool.
///
/// # Errors
/// Internal errors only.
pub async fn hash_password(password: Secret) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        let salt: [u8; 16] = rand::random();
        Argon2::default()
            .hash_password_with_salt(password.0.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("argon2: {e}")))
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?
}

/// A hash that never verifies, used to spend the same time on unknown accounts.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Jd1l1nB0+QXq5oKq5G7cZbq7gW5mN4xWm0Q3yJ0xwqE";

/// Checks a password against a stored hash on the blocking pool.
pub async fn verify_password(password: Secret, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = hash.parse::<PasswordHash>() else {
            return false;
        };
        Argon2::default()
            .verify_password(password.0.as_bytes(), &parsed)
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

/// A fresh random token with a readable prefix, e.g. `cvs_…` (session) or `cvk_…` (API key).
pub fn random_token(prefix: &str) -> Secret {
    let bytes: [u8; 32] = rand::random();
    Secret(format!("{prefix}{}", B64.encode(bytes)))
}

/// SHA-256 of a token, hex: what the database stores.
pub fn token_hash(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn password_hash_verifies_only_the_right_password() {
        let h = hash_password(Secret("correct horse".into())).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(Secret("correct horse".into()), h.clone()).await);
        assert!(!verify_password(Secret("wrong".into()), h).await);
        assert!(!verify_password(Secret("x".into()), DUMMY_HASH.into()).await);
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let s = random_token("cvs_");
        assert!(!format!("{s:?}").contains(&s.0[4..]));
        assert_ne!(token_hash(&s.0), s.0);
    }
}
