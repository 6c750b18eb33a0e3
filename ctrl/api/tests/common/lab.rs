//! The node listener over real TLS on loopback (NodeService + GatewayService) and a device
//! (machine key, WireGuard key, client certificate) to talk to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use cvlan_proto::v1 as pb;
use cvlan_proto::v1::node_service_client::NodeServiceClient;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use super::H;

pub struct Lab {
    pub h: H,
    pub addr: SocketAddr,
    pub ca_pem: String,
    _stop: watch::Sender<bool>,
}

pub async fn lab(db: &super::Db) -> Lab {
    let h = H::new(db).await;
    let (stop, rx) = watch::channel(false);
    let tls = h
        .app
        .svc
        .ca
        .server_config(&["127.0.0.1".to_string()])
        .unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let r = cvlan_api::node_router(h.app.svc.clone(), rx.clone());
    tokio::spawn(cvlan_api::server::serve(l, r, Some(tls), rx));
    let ca_pem = h.app.svc.ca.pem().to_string();
    Lab {
        h,
        addr,
        ca_pem,
        _stop: stop,
    }
}

/// A device: machine key, WireGuard key, and (after Register) a client certificate.
pub struct Dev {
    pub key: rcgen::KeyPair,
    pub wg: String,
    pub cert: Option<String>,
}

pub fn dev() -> Dev {
    Dev {
        key: rcgen::KeyPair::generate().unwrap(),
        wg: base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>()),
        cert: None,
    }
}

impl Dev {
    pub fn csr(&self) -> String {
        rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&self.key)
            .unwrap()
            .pem()
            .unwrap()
    }
}

pub async fn channel(l: &Lab, d: Option<&Dev>) -> Channel {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(l.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = match d.and_then(|d| d.cert.as_ref().map(|c| (d, c))) {
        Some((d, c)) => b
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(d.key.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let addr = l.addr;
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let conn = conn.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let tls = conn
                    .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                    .await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .unwrap()
}

pub async fn register(
    l: &Lab,
    d: &mut Dev,
    token: &str,
    host: &str,
) -> Result<pb::Node, tonic::Status> {
    let mut c = NodeServiceClient::new(channel(l, None).await);
    let r = c
        .register(pb::RegisterRequest {
            auth_key: token.into(),
            wg_public_key: d.wg.clone(),
            csr_pem: d.csr(),
            hostname: host.into(),
            os: "linux".into(),
        })
        .await?
        .into_inner();
    assert_eq!(r.ca_pem, l.ca_pem);
    d.cert = Some(r.certificate_pem);
    Ok(r.node.unwrap())
}

pub async fn token(h: &H, tenant: &str, cvlan: &str, extra: serde_json::Value) -> String {
    let mut body = json!({"cvlanId": cvlan, "reusable": true});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    h.ok(
        "POST",
        &format!("/api/v1/tenants/{tenant}/tokens"),
        Some(body),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string()
}

pub type Stream = tonic::Streaming<pb::SyncResponse>;

pub async fn sync(l: &Lab, d: &Dev, since: u64) -> Result<Stream, tonic::Status> {
    let mut c = NodeServiceClient::new(channel(l, Some(d)).await);
    Ok(c.sync(pb::SyncRequest {
        since_version: since,
    })
    .await?
    .into_inner())
}

pub async fn next(s: &mut Stream) -> pb::sync_response::Update {
    tokio::time::timeout(Duration::from_secs(1), s.message())
        .await
        .expect("an update within 1 s")
        .unwrap()
        .unwrap()
        .update
        .unwrap()
}

pub fn snapshot(u: pb::sync_response::Update) -> pb::NetworkMap {
    match u {
        pb::sync_response::Update::Snapshot(m) => m,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

pub fn delta(u: pb::sync_response::Update) -> pb::MapDelta {
    match u {
        pb::sync_response::Update::Delta(d) => d,
        other => panic!("expected a delta, got {other:?}"),
    }
}
