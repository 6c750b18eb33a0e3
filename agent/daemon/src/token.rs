//! Reading what the agent needs from a registration token without being able to verify it:
//! the CA pin. The control plane checks the signature; a forged pin only makes the agent
//! trust a server the forger controls, which holding the token already allows.
//!
//! Format: `cvt1.<base64url(claims JSON)>.<base64url(signature)>`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;

/// Why a token's CA pin could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the `cvt1.<claims>.<signature>` shape, or the claims do not decode.
    #[error("malformed registration token")]
    Malformed,
    /// The claims carry no CA pin (a token from an older control plane).
    #[error("the registration token carries no CA pin; pass --ca-file")]
    NoPin,
}

/// The SHA-256 pin of the control plane CA carried in `token`.
///
/// # Errors
/// [`TokenError`].
pub fn ca_pin(token: &str) -> Result<[u8; 32], TokenError> {
    let token = token.trim();
    let rest = token.strip_prefix("cvt1.").ok_or(TokenError::Malformed)?;
    let (claims, _sig) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    let json = B64URL.decode(claims).map_err(|_| TokenError::Malformed)?;
    let v: serde_json::Value = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    let hex = match v.get("ca") {
        None => return Err(TokenError::NoPin),
        Some(serde_json::Value::String(s)) if s.is_empty() => return Err(TokenError::NoPin),
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(_) => return Err(TokenError::Malformed),
    };
    parse_hex32(hex).ok_or(TokenError::Malformed)
}

/// Parses 64 hex digits.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = (b[2 * i] as char).to_digit(16)?;
        let lo = (b[2 * i + 1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: &str) -> String {
        format!(
            "cvt1.{}.{}",
            B64URL.encode(claims),
            B64URL.encode([7u8; 64])
        )
    }

    #[test]
    fn the_pin_is_read_from_the_claims() {
        let pin = "00ff".repeat(16);
        let t = token(&format!(r#"{{"id":"x","exp":1,"ca":"{pin}"}}"#));
        let got = ca_pin(&t).expect("pin");
        assert_eq!(got[0], 0x00);
        assert_eq!(got[1], 0xff);
        assert_eq!(got[31], 0xff);
    }

    #[test]
    fn tokens_without_a_pin_or_of_the_wrong_shape_are_refused() {
        assert_eq!(ca_pin(&token(r#"{"id":"x"}"#)), Err(TokenError::NoPin));
        assert_eq!(ca_pin(&token(r#"{"ca":""}"#)), Err(TokenError::NoPin));
        assert_eq!(
            ca_pin(&token(r#"{"ca":"abc"}"#)),
            Err(TokenError::Malformed)
        );
        assert_eq!(ca_pin("cvt2.abc.def"), Err(TokenError::Malformed));
        assert_eq!(ca_pin("cvt1.!!!.def"), Err(TokenError::Malformed));
        assert_eq!(ca_pin("cvt1.nodot"), Err(TokenError::Malformed));
    }
}
