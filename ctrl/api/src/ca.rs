//! The control plane's built-in certificate authority for the node listener: it issues node
//! and vrouter client certificates (mTLS on Sync) from their own CSRs, and the node listener's
//! server certificate. Key and certificate are created once and shared by replicas through the
//! database; agents pin the CA by the SHA-256 of its certificate, carried in registration tokens.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};

/// Name of the shared secret row holding the CA key and certificate.
const SECRET: &str = "node-ca-p256";
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 86_400);

/// The CA: signing key, certificate and its pin.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
    pem: String,
    pin: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("node CA: {e}"))
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

/// Who a client certificate was issued to. A node certificate's subject is just `CN=<node id>`;
/// a vrouter certificate's is `CN=vrouter:<vrouter id>, OU=vrouter`. Each reader checks both
/// marks, so one kind can never pass for the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A registered node (cvlan-agent).
    Node(String),
    /// An enrolled gateway (vrouterd).
    Vrouter(String),
}

const VROUTER_CN_PREFIX: &str = "vrouter:";
const VROUTER_OU: &str = "vrouter";

/// Lowercase hex SHA-256 of a DER certificate: the pin agents compare against.
pub fn pin_of(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Serialised as `len(key) as u32 BE || PKCS#8 key || certificate DER`.
fn generate() -> ApiResult<Vec<u8>> {
    let key = KeyPair::generate().map_err(internal)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "CloudVLAN node CA");
    dn.push(DnType::OrganizationName, "CloudVLAN");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = SystemTime::now();
    p.not_before = to_offset(now - Duration::from_secs(3600));
    p.not_after = to_offset(now + CA_VALIDITY);
    p.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
    let cert = p.self_signed(&key).map_err(internal)?;
    let k = key.serialize_der();
    let mut out = (k.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&k);
    out.extend_from_slice(cert.der());
    Ok(out)
}

impl Ca {
    /// Loads the shared CA, creating it on first use.
    ///
    /// # Errors
    /// Database errors or a corrupt stored CA.
    pub async fn load(store: &cvlan_store::Store) -> ApiResult<Ca> {
        let fresh = generate()?;
        let blob = store.secret(SECRET, || fresh).await?;
        Ca::from_blob(&blob)
    }

    fn from_blob(blob: &[u8]) -> ApiResult<Ca> {
        let n = blob
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| internal("stored CA is truncated"))? as usize;
        let key_der = blob
            .get(4..4 + n)
            .ok_or_else(|| internal("stored CA is truncated"))?;
        let cert_der = blob
            .get(4 + n..)
            .ok_or_else(|| internal("stored CA is truncated"))?;
        let key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(key_der.to_vec()),
            &rcgen::PKCS_ECDSA_P256_SHA256,
        )
        .map_err(internal)?;
        let cert = CertificateDer::from(cert_der.to_vec());
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(internal)?;
        let pem = pem_encode(&cert);
        Ok(Ca {
            issuer,
            pin: pin_of(&cert),
            cert,
            pem,
        })
    }

    /// The pin: lowercase hex SHA-256 of the CA certificate (DER).
    pub fn pin(&self) -> &str {
        &self.pin
    }

    /// The CA certificate in PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Signs a CSR into a client certificate for `who`, valid for `ttl`. Only the CSR's public
    /// key is used: subject, names and usages are set here.
    ///
    /// # Errors
    /// [`ApiError::BadRequest`] for a malformed CSR or a bad CSR signature.
    pub fn issue_client(
        &self,
        csr_pem: &str,
        who: &Identity,
        ttl: Duration,
    ) -> ApiResult<(String, SystemTime)> {
        if csr_pem.len() > 16 * 1024 {
            return Err(ApiError::bad("csrPem is too large"));
        }
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| ApiError::bad(format!("csrPem is not a valid PKCS#10 request: {e}")))?;
        let now = SystemTime::now();
        let expires = now + ttl;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        match who {
            Identity::Node(id) => dn.push(DnType::CommonName, id.as_str()),
            Identity::Vrouter(id) => {
                dn.push(DnType::CommonName, format!("{VROUTER_CN_PREFIX}{id}"));
                dn.push(DnType::OrganizationalUnitName, VROUTER_OU);
            }
        }
        p.distinguished_name = dn;
        p.not_before = to_offset(now - Duration::from_secs(300));
        p.not_after = to_offset(expires);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        p.use_authority_key_identifier_extension = true;
        csr.params = p;
        let cert = csr.signed_by(&self.issuer).map_err(internal)?;
        Ok((cert.pem(), expires))
    }

    /// A rustls server config for the node listener: a fresh server certificate for `names`
    /// (DNS names or IP addresses) signed by this CA, sent with the CA certificate so agents
    /// can check their pin; client certificates are optional at the TLS layer (Register has
    /// none) but, when sent, must chain to this CA.
    ///
    /// # Errors
    /// Certificate generation or rustls configuration errors.
    pub fn server_config(&self, names: &[String]) -> anyhow::Result<rustls::ServerConfig> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "CloudVLAN node endpoint");
        p.distinguished_name = dn;
        let now = SystemTime::now();
        p.not_before = to_offset(now - Duration::from_secs(300));
        p.not_after = to_offset(now + Duration::from_secs(365 * 86_400));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        p.use_authority_key_identifier_extension = true;
        let leaf = p.signed_by(&key, &self.issuer)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone())?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![leaf.der().clone(), self.cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(cfg)
    }
}

/// Who a verified client certificate was issued to; None for anything not made by
/// [`Ca::issue_client`] (no or several common names, or only one of the vrouter marks).
pub fn identity_of(cert: &[u8]) -> Option<Identity> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    let subject = c.subject();
    let mut cns = subject.iter_common_name();
    let cn = cns.next()?.as_str().ok()?;
    if cns.next().is_some() {
        return None;
    }
    let ous: Vec<&str> = subject
        .iter_organizational_unit()
        .map(|o| o.as_str().unwrap_or_default())
        .collect();
    match (cn.strip_prefix(VROUTER_CN_PREFIX), ous.as_slice()) {
        (Some(id), [VROUTER_OU]) if !id.is_empty() => Some(Identity::Vrouter(id.to_string())),
        (None, []) if !cn.is_empty() && !cn.contains(':') => Some(Identity::Node(cn.to_string())),
        _ => None,
    }
}

/// The node id a verified client certificate was issued for; None for vrouter certificates.
pub fn node_id_of(cert: &[u8]) -> Option<String> {
    match identity_of(cert)? {
        Identity::Node(id) => Some(id),
        Identity::Vrouter(_) => None,
    }
}

/// The vrouter id a verified client certificate was issued for; None for node certificates.
pub fn vrouter_id_of(cert: &[u8]) -> Option<String> {
    match identity_of(cert)? {
        Identity::Vrouter(id) => Some(id),
        Identity::Node(_) => None,
    }
}

fn pem_encode(der: &[u8]) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    fn csr() -> (KeyPair, String) {
        let k = KeyPair::generate().unwrap();
        let p = CertificateParams::new(Vec::<String>::new()).unwrap();
        let pem = p.serialize_request(&k).unwrap().pem().unwrap();
        (k, pem)
    }

    #[test]
    fn a_stored_ca_reloads_with_the_same_pin_and_issues_client_certs_for_the_node() {
        let blob = generate().unwrap();
        let a = Ca::from_blob(&blob).unwrap();
        let b = Ca::from_blob(&blob).unwrap();
        assert_eq!(a.pin(), b.pin());
        assert_eq!(a.pin().len(), 64);
        let (_k, pem) = csr();
        let (cert, exp) = a
            .issue_client(
                &pem,
                &Identity::Node("node-123".into()),
                Duration::from_secs(3600),
            )
            .unwrap();
        assert!(exp > SystemTime::now());
        let der = rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert_eq!(node_id_of(&der).as_deref(), Some("node-123"));
    }

    #[test]
    fn node_and_vrouter_certificates_are_never_taken_for_each_other() {
        let ca = Ca::from_blob(&generate().unwrap()).unwrap();
        let (_k, pem) = csr();
        let der = |who: Identity| {
            let (c, _) = ca
                .issue_client(&pem, &who, Duration::from_secs(60))
                .unwrap();
            rustls::pki_types::CertificateDer::from_pem_slice(c.as_bytes()).unwrap()
        };
        // The same id in both kinds.
        let node = der(Identity::Node("0190-abc".into()));
        let vr = der(Identity::Vrouter("0190-abc".into()));
        assert_eq!(node_id_of(&node).as_deref(), Some("0190-abc"));
        assert_eq!(vrouter_id_of(&node), None);
        assert_eq!(vrouter_id_of(&vr).as_deref(), Some("0190-abc"));
        assert_eq!(node_id_of(&vr), None);
        // A node whose id looked like a vrouter's common name is neither.
        assert_eq!(identity_of(&der(Identity::Node("vrouter:x".into()))), None);
        assert_eq!(identity_of(b"not a certificate"), None);
    }

    #[test]
    fn a_certificate_with_only_one_of_the_vrouter_marks_is_refused() {
        let k = KeyPair::generate().unwrap();
        let cert = |cn: &str, ou: Option<&str>| {
            let mut p = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, cn);
            if let Some(ou) = ou {
                dn.push(DnType::OrganizationalUnitName, ou);
            }
            p.distinguished_name = dn;
            p.self_signed(&k).unwrap().der().clone()
        };
        assert_eq!(identity_of(&cert("vrouter:v1", None)), None);
        assert_eq!(identity_of(&cert("v1", Some("vrouter"))), None);
        assert_eq!(identity_of(&cert("vrouter:v1", Some("other"))), None);
        assert_eq!(
            identity_of(&cert("vrouter:v1", Some("vrouter"))),
            Some(Identity::Vrouter("v1".into()))
        );
    }

    #[test]
    fn garbage_or_tampered_csrs_are_refused() {
        let ca = Ca::from_blob(&generate().unwrap()).unwrap();
        let n = Identity::Node("n".into());
        assert!(
            ca.issue_client("nope", &n, Duration::from_secs(60))
                .is_err()
        );
        let (_k, pem) = csr();
        let tampered = pem.replacen('A', "B", 1);
        assert!(
            ca.issue_client(&tampered, &n, Duration::from_secs(60))
                .is_err()
        );
    }

    #[test]
    fn a_truncated_blob_is_an_error_not_a_panic() {
        assert!(Ca::from_blob(&[0, 0, 0, 200, 1, 2]).is_err());
        assert!(Ca::from_blob(&[]).is_err());
    }
}
