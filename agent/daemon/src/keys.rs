//! The node's two keys: the WireGuard static key (x25519) and the machine key (ECDSA P-256)
//! whose CSR the control plane signs into the mTLS client certificate. Neither ever shows in
//! Debug output or logs.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Why a stored key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The stored WireGuard key is not base64 of 32 bytes.
    #[error("WireGuard private key is not base64 of 32 bytes")]
    BadWgKey,
    /// The machine key PEM could not be parsed or used.
    #[error("machine key: {0}")]
    Machine(#[source] rcgen::Error),
}

/// A WireGuard (x25519) static private key.
#[derive(Clone, PartialEq, Eq)]
pub struct WgKey([u8; 32]);

impl fmt::Debug for WgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgKey(public={})", self.public_base64())
    }
}

impl WgKey {
    /// A fresh random key (clamped by x25519 when used).
    pub fn generate() -> Self {
        WgKey(rand::random())
    }

    /// From raw bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        WgKey(b)
    }

    /// The raw private key (for the data plane).
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// Parses the stored form (base64, surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`KeyError::BadWgKey`].
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        let v = B64.decode(s.trim()).map_err(|_| KeyError::BadWgKey)?;
        let b: [u8; 32] = v.try_into().map_err(|_| KeyError::BadWgKey)?;
        Ok(WgKey(b))
    }

    /// The stored form.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// The x25519 public key.
    pub fn public(&self) -> [u8; 32] {
        let s = boringtun::x25519::StaticSecret::from(self.0);
        boringtun::x25519::PublicKey::from(&s).to_bytes()
    }

    /// The public key as the control plane wants it (base64 standard).
    pub fn public_base64(&self) -> String {
        B64.encode(self.public())
    }
}

/// The ECDSA P-256 machine key, kept as PKCS#8 PEM.
#[derive(Clone)]
pub struct MachineKey {
    pem: String,
}

impl fmt::Debug for MachineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MachineKey(..)")
    }
}

impl MachineKey {
    /// A fresh P-256 key.
    ///
    /// # Errors
    /// [`KeyError::Machine`] if the crypto provider fails.
    pub fn generate() -> Result<Self, KeyError> {
        let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(KeyError::Machine)?;
        Ok(MachineKey {
            pem: k.serialize_pem(),
        })
    }

    /// Parses a stored PEM.
    ///
    /// # Errors
    /// [`KeyError::Machine`] if it is not a P-256 PKCS#8 key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        rcgen::KeyPair::from_pem(pem).map_err(KeyError::Machine)?;
        Ok(MachineKey {
            pem: pem.to_string(),
        })
    }

    /// The PKCS#8 PEM (for storage and for the TLS client identity).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A PKCS#10 request for this key. The control plane sets subject and usages itself, so
    /// the request carries none.
    ///
    /// # Errors
    /// [`KeyError::Machine`].
    pub fn csr_pem(&self) -> Result<String, KeyError> {
        let k = rcgen::KeyPair::from_pem(&self.pem).map_err(KeyError::Machine)?;
        let p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(KeyError::Machine)?;
        p.serialize_request(&k)
            .and_then(|r| r.pem())
            .map_err(KeyError::Machine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wireguard_key_round_trips_through_base64_and_has_a_stable_public_key() {
        let k = WgKey::generate();
        let back = WgKey::from_base64(&format!("{}\n", k.to_base64())).expect("parse");
        assert_eq!(back, k);
        assert_eq!(back.public(), k.public());
        assert_ne!(k.public(), k.secret_bytes());
        assert!(WgKey::from_base64("c2hvcnQ=").is_err());
    }

    #[test]
    fn the_public_key_matches_the_x25519_base_point_multiplication() {
        // RFC 7748 section 6.1, Alice's key pair.
        let sk: [u8; 32] = [
            0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2,
            0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5,
            0x1d, 0xb9, 0x2c, 0x2a,
        ];
        let pk: [u8; 32] = [
            0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e,
            0xf7, 0x5a, 0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e,
            0xaa, 0x9b, 0x4e, 0x6a,
        ];
        assert_eq!(WgKey::from_bytes(sk).public(), pk);
    }

    #[test]
    fn debug_output_never_contains_private_material() {
        let k = WgKey::generate();
        let d = format!("{k:?}");
        assert!(!d.contains(&k.to_base64()));
        let m = MachineKey::generate().expect("machine key");
        assert!(!format!("{m:?}").contains("PRIVATE"));
    }

    #[test]
    fn the_machine_key_reloads_and_makes_a_csr() {
        let m = MachineKey::generate().expect("machine key");
        let again = MachineKey::from_pem(m.pem()).expect("reload");
        let csr = again.csr_pem().expect("csr");
        assert!(csr.contains("BEGIN CERTIFICATE REQUEST"));
        assert!(MachineKey::from_pem("not a key").is_err());
    }
}
