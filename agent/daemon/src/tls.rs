//! TLS to the control plane's node listener: rustls (ring) under tonic through our own
//! connector, so the agent decides what it trusts.
//!
//! Before registration the agent knows only the CA pin from the token: [`PinnedCaVerifier`]
//! accepts a server only if its presented chain contains a certificate whose SHA-256 (DER) is
//! the pin, *and* the leaf verifies for the URL's host with that certificate as the sole root
//! (so sending a copy of the real CA next to a leaf signed by someone else does not pass).
//! After registration the stored CA PEM is the only root ([`Trust::Roots`]), and the client
//! certificate is the mTLS identity.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint};

use crate::DEFAULT_SERVER_PORT;

/// Why a TLS setting could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The server URL is not `https://host[:port]`.
    #[error("invalid server URL {url:?}: {why}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A PEM certificate or key does not parse.
    #[error("{what} is not valid PEM")]
    BadPem {
        /// Which input.
        what: &'static str,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The root store could not be built.
    #[error("CA certificate: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// A parsed control plane URL.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl {
    host: String,
    port: u16,
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "https://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "https://{}:{}", self.host, self.port)
        }
    }
}

impl ServerUrl {
    /// Parses `https://host[:port][/]` (port defaults to 8443).
    ///
    /// # Errors
    /// [`TlsError::BadUrl`].
    pub fn parse(s: &str) -> Result<Self, TlsError> {
        let bad = |why| TlsError::BadUrl {
            url: s.to_string(),
            why,
        };
        let uri: http::Uri = s.trim().parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("the scheme must be https"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("no path is expected"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        ServerName::try_from(host.to_string())
            .map_err(|_| bad("the host is not a DNS name or IP address"))?;
        Ok(ServerUrl {
            host: host.to_string(),
            port: uri.port_u16().unwrap_or(DEFAULT_SERVER_PORT),
        })
    }

    /// Host name or IP address (no brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The name the server certificate must carry.
    pub fn server_name(&self) -> ServerName<'static> {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            // Checked in parse.
            Err(_) => ServerName::try_from(self.host.clone())
                .unwrap_or(ServerName::IpAddress(IpAddr::from([0, 0, 0, 0]).into())),
        }
    }
}

/// Lowercase hex SHA-256 of a DER certificate.
pub fn pin_hex(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the agent trusts for the node listener.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Only a chain containing the CA with this SHA-256 (before registration).
    Pin([u8; 32]),
    /// Only these CA certificates (`--ca-file`, and the stored CA after registration).
    Roots(Vec<CertificateDer<'static>>),
}

impl Trust {
    /// Trust the CA certificates in `pem`.
    ///
    /// # Errors
    /// [`TlsError::BadPem`] when there is no certificate in it.
    pub fn from_ca_pem(pem: &str) -> Result<Self, TlsError> {
        let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|_| TlsError::BadPem { what: "CA file" })?;
        if certs.is_empty() {
            return Err(TlsError::BadPem { what: "CA file" });
        }
        Ok(Trust::Roots(certs))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts a server whose chain contains the pinned CA and whose leaf verifies against it.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl PinnedCaVerifier {
    /// A verifier for `pin` (SHA-256 of the CA certificate's DER).
    pub fn new(pin: [u8; 32]) -> Self {
        PinnedCaVerifier {
            pin,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| <[u8; 32]>::from(Sha256::digest(c.as_ref())) == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the server's certificate chain does not contain the CA pinned by the registration token"
                        .into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The mTLS client identity: certificate chain and machine key, both PEM.
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// From the client certificate PEM and the machine key PEM.
    ///
    /// # Errors
    /// [`TlsError::BadPem`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let chain: Vec<_> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|_| TlsError::BadPem {
                what: "client certificate",
            })?;
        if chain.is_empty() {
            return Err(TlsError::BadPem {
                what: "client certificate",
            });
        }
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| TlsError::BadPem {
                what: "machine key",
            })?;
        Ok(ClientIdentity { chain, key })
    }
}

/// A client configuration for the node listener (TLS 1.2/1.3, ALPN h2).
///
/// # Errors
/// [`TlsError`].
pub fn client_config(
    trust: &Trust,
    identity: Option<ClientIdentity>,
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match trust {
        Trust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier::new(*pin))),
        Trust::Roots(certs) => {
            let mut roots = RootCertStore::empty();
            for c in certs {
                roots.add(c.clone())?;
            }
            builder.with_webpki_verifier(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()?,
            )
        }
    };
    let mut cfg = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain, id.key)?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// Opens a gRPC channel to `url` over TLS with `cfg`. HTTP/2 keepalives make a dead control
/// plane show up as a stream error within a minute, which is what triggers the reconnect.
///
/// # Errors
/// Connection, TLS handshake or HTTP/2 errors.
pub async fn channel(
    url: &ServerUrl,
    cfg: Arc<ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let host = url.host.clone();
    let port = url.port;
    let name = url.server_name();
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let host = host.clone();
        let name = name.clone();
        let cfg = cfg.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    // The connector does TLS itself; tonic sees a plain-HTTP URI so it never tries its own
    // (a tonic built with a TLS feature refuses https URIs on custom connectors).
    let plain = url.to_string().replacen("https://", "http://", 1);
    Endpoint::from_shared(plain)?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect_with_connector(connector)
        .await
}

/// An error with its whole source chain, for messages shown to the user (tonic's transport
/// errors say only "transport error" at the top).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};

    /// A test CA that can issue server and client certificates.
    pub struct TestCa {
        pub issuer: Issuer<'static, KeyPair>,
        pub der: CertificateDer<'static>,
        pub pem: String,
    }

    impl TestCa {
        pub fn new(name: &str) -> Self {
            let key = KeyPair::generate().expect("key");
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
            p.distinguished_name
                .push(rcgen::DnType::CommonName, name.to_string());
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = p.self_signed(&key).expect("self sign");
            TestCa {
                der: cert.der().clone(),
                pem: cert.pem(),
                issuer: Issuer::new(p, key),
            }
        }

        pub fn pin(&self) -> [u8; 32] {
            Sha256::digest(self.der.as_ref()).into()
        }

        /// A server leaf for `names` and its key.
        pub fn server(&self, names: &[&str]) -> (CertificateDer<'static>, KeyPair) {
            let key = KeyPair::generate().expect("key");
            let p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
            let c = p.signed_by(&key, &self.issuer).expect("sign");
            (c.der().clone(), key)
        }
    }

    fn ip(s: &str) -> ServerName<'static> {
        ServerName::IpAddress(s.parse::<IpAddr>().expect("ip").into())
    }

    #[test]
    fn a_chain_with_the_pinned_ca_and_a_leaf_for_the_host_is_accepted() {
        let ca = TestCa::new("real");
        let (leaf, _) = ca.server(&["127.0.0.1"]);
        let v = PinnedCaVerifier::new(ca.pin());
        v.verify_server_cert(
            &leaf,
            std::slice::from_ref(&ca.der),
            &ip("127.0.0.1"),
            &[],
            UnixTime::now(),
        )
        .expect("accepted");
    }

    #[test]
    fn a_chain_from_another_ca_is_refused() {
        let real = TestCa::new("real");
        let other = TestCa::new("other");
        let (leaf, _) = other.server(&["127.0.0.1"]);
        let v = PinnedCaVerifier::new(real.pin());
        let e = v
            .verify_server_cert(
                &leaf,
                std::slice::from_ref(&other.der),
                &ip("127.0.0.1"),
                &[],
                UnixTime::now(),
            )
            .expect_err("refused");
        assert!(e.to_string().contains("pinned"), "{e}");
    }

    #[test]
    fn a_copy_of_the_pinned_ca_next_to_a_foreign_leaf_is_refused() {
        let real = TestCa::new("real");
        let other = TestCa::new("other");
        let (leaf, _) = other.server(&["127.0.0.1"]);
        let v = PinnedCaVerifier::new(real.pin());
        assert!(
            v.verify_server_cert(
                &leaf,
                &[real.der.clone(), other.der.clone()],
                &ip("127.0.0.1"),
                &[],
                UnixTime::now()
            )
            .is_err()
        );
    }

    #[test]
    fn a_leaf_for_another_host_is_refused() {
        let ca = TestCa::new("real");
        let (leaf, _) = ca.server(&["127.0.0.2", "cp.example"]);
        let v = PinnedCaVerifier::new(ca.pin());
        assert!(
            v.verify_server_cert(
                &leaf,
                std::slice::from_ref(&ca.der),
                &ip("127.0.0.1"),
                &[],
                UnixTime::now()
            )
            .is_err()
        );
        let dns = ServerName::try_from("other.example").expect("name");
        assert!(
            v.verify_server_cert(
                &leaf,
                std::slice::from_ref(&ca.der),
                &dns,
                &[],
                UnixTime::now()
            )
            .is_err()
        );
        let ok = ServerName::try_from("cp.example").expect("name");
        v.verify_server_cert(
            &leaf,
            std::slice::from_ref(&ca.der),
            &ok,
            &[],
            UnixTime::now(),
        )
        .expect("the right DNS name passes");
    }

    #[test]
    fn the_stored_ca_pem_trusts_its_ca_only() {
        let ca = TestCa::new("real");
        match Trust::from_ca_pem(&ca.pem).expect("pem") {
            Trust::Roots(r) => assert_eq!(r, vec![ca.der.clone()]),
            Trust::Pin(_) => panic!("roots expected"),
        }
        assert!(Trust::from_ca_pem("no certificate here").is_err());
        client_config(&Trust::from_ca_pem(&ca.pem).expect("pem"), None).expect("config");
    }

    #[test]
    fn server_urls_parse_with_a_default_port_and_refuse_plain_http() {
        let u = ServerUrl::parse("https://10.0.0.1").expect("url");
        assert_eq!((u.host(), u.port()), ("10.0.0.1", 8443));
        assert_eq!(u.to_string(), "https://10.0.0.1:8443");
        let u = ServerUrl::parse("https://[fd00::1]:9443/").expect("v6");
        assert_eq!((u.host(), u.port()), ("fd00::1", 9443));
        assert_eq!(u.to_string(), "https://[fd00::1]:9443");
        assert!(matches!(u.server_name(), ServerName::IpAddress(_)));
        let u = ServerUrl::parse("https://cp.example:1").expect("dns");
        assert!(matches!(u.server_name(), ServerName::DnsName(_)));
        assert!(ServerUrl::parse("http://10.0.0.1:8443").is_err());
        assert!(ServerUrl::parse("https://10.0.0.1:8443/api").is_err());
        assert!(ServerUrl::parse("nonsense").is_err());
    }

    /// A full handshake over loopback: pinned trust, ALPN h2 and the client certificate.
    #[tokio::test]
    async fn a_handshake_with_the_pinned_ca_negotiates_h2_and_presents_the_client_certificate() {
        let ca = TestCa::new("real");
        let (leaf, leaf_key) = ca.server(&["127.0.0.1"]);
        let mut roots = RootCertStore::empty();
        roots.add(ca.der.clone()).expect("root");
        let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .expect("client verifier");
        let mut scfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(
                vec![leaf, ca.der.clone()],
                PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes()).expect("key"),
            )
            .expect("server config");
        scfg.alpn_protocols = vec![b"h2".to_vec()];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(scfg));
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let tls = acceptor.accept(tcp).await.expect("server handshake");
            let (_, conn) = tls.get_ref();
            (
                conn.alpn_protocol().map(<[u8]>::to_vec),
                conn.peer_certificates().map(<[CertificateDer<'_>]>::len),
            )
        });

        let machine = crate::keys::MachineKey::generate().expect("machine key");
        let csr =
            rcgen::CertificateSigningRequestParams::from_pem(&machine.csr_pem().expect("csr"))
                .expect("parse csr");
        let client_cert = csr.signed_by(&ca.issuer).expect("sign client");
        let id = ClientIdentity::from_pem(&client_cert.pem(), machine.pem()).expect("identity");
        let cfg = client_config(&Trust::Pin(ca.pin()), Some(id)).expect("client config");
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ip("127.0.0.1"), tcp)
            .await
            .expect("client handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        drop(tls);
        let (alpn, peer_certs) = server.await.expect("server task");
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(peer_certs, Some(1));
    }
}
