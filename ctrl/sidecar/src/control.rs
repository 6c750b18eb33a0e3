//! The control-plane client (shell): enrolment with a vrouter join token (once; identity
//! kept in the state directory), then the GatewayService Sync stream with reconnects and
//! backoff. Updates go to the coordinator over a channel; it alone touches the model.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cvlan_agent::backoff::Backoff;
use cvlan_agent::state::StateDir;
use cvlan_agent::tls::{self, ClientIdentity, ServerUrl, Trust, error_chain};
use cvlan_agent::token;
use cvlan_proto::v1 as pb;
use cvlan_proto::v1::gateway_service_client::GatewayServiceClient;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

/// Largest gateway Sync message accepted (a segment slot is 64 MiB by default).
const MAX_TABLES_MESSAGE: usize = 128 << 20;

/// File names in the state directory (besides the agent's `wg.key`, `machine.key`,
/// `client.crt`, `ca.pem`).
pub mod files {
    /// Enrolment record.
    pub const VROUTER: &str = "vrouter.json";
    /// Last applied tables (proto3 JSON), for a restart without the control plane.
    pub const TABLES: &str = "tables.json";
}

/// What enrolment stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Enrolment {
    /// Control plane URL.
    pub server: String,
    /// Vrouter id.
    pub vrouter_id: String,
    /// Vrouter name.
    pub name: String,
    /// Client certificate issued (Unix seconds; 0 = unknown, renew at once).
    #[serde(default)]
    pub cert_issued_at: u64,
    /// Client certificate expiry (Unix seconds).
    #[serde(default)]
    pub cert_expires_at: u64,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn save(store: &StateDir, e: &Enrolment) -> Result<(), String> {
    let mut j = serde_json::to_vec_pretty(e).map_err(|e| e.to_string())?;
    j.push(b'\n');
    store.write(files::VROUTER, &j).map_err(|e| e.to_string())
}

/// An update from the control plane.
#[derive(Debug)]
pub enum Update {
    /// A full snapshot.
    Snapshot(pb::GatewayTables),
    /// A delta.
    Delta(pb::GatewayDelta),
}

/// Connection state shown by `vrouterctl status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ControlStatus {
    /// Server URL.
    pub server: Option<String>,
    /// Vrouter id once enrolled.
    pub vrouter_id: Option<String>,
    /// Whether the Sync stream is up.
    pub connected: bool,
    /// Last error.
    pub last_error: Option<String>,
    /// Snapshots and deltas received.
    pub updates: u64,
}

/// A vrouter join token: a credential, so its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken(pub String);

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinToken(<redacted>)")
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Node listener URL.
    pub server: ServerUrl,
    /// Join token (only needed before enrolment).
    pub join_token: Option<JoinToken>,
    /// Trust this CA instead of the token's pin.
    pub ca_pem: Option<String>,
    /// Our underlay endpoint "ip:port" (reported at enrolment).
    pub endpoint: String,
}

fn status_err(status: &Arc<Mutex<ControlStatus>>, e: String) {
    if let Ok(mut s) = status.lock() {
        s.connected = false;
        s.last_error = Some(e);
    }
}

/// Enrols unless already enrolled with this server.
///
/// # Errors
/// A message for the log (token missing/malformed, control plane refused or unreachable).
pub async fn enrol(cfg: &ClientConfig, store: &StateDir) -> Result<Enrolment, String> {
    let existing: Option<Enrolment> = store
        .read(files::VROUTER)
        .map_err(|e| e.to_string())?
        .and_then(|v| serde_json::from_slice(&v).ok());
    if let Some(e) = existing
        && store
            .read(cvlan_agent::state::files::CLIENT_CERT)
            .ok()
            .flatten()
            .is_some()
    {
        if e.server != cfg.server.to_string() {
            tracing::warn!(enrolled = %e.server, given = %cfg.server, "enrolled with another server; keeping the enrolment");
        }
        return Ok(e);
    }
    let token = cfg
        .join_token
        .as_ref()
        .map(|t| t.0.trim())
        .filter(|t| !t.is_empty())
        .ok_or(
            "not enrolled yet: a join token is needed (--join-token-file or VROUTERD_JOIN_TOKEN)",
        )?;
    let pin = token::ca_pin(token);
    let trust = match &cfg.ca_pem {
        Some(pem) => Trust::from_ca_pem(pem).map_err(|e| e.to_string())?,
        None => Trust::Pin(pin.clone().map_err(|e| e.to_string())?),
    };
    let wg = store.wg_key().map_err(|e| e.to_string())?;
    let machine = store.machine_key().map_err(|e| e.to_string())?;
    let csr = machine.csr_pem().map_err(|e| e.to_string())?;
    let tls_cfg = tls::client_config(&trust, None).map_err(|e| e.to_string())?;
    tracing::info!(server = %cfg.server, "enrolling");
    let call = async {
        let ch = tls::channel(&cfg.server, Arc::new(tls_cfg))
            .await
            .map_err(|e| format!("cannot reach {}: {}", cfg.server, error_chain(&e)))?;
        GatewayServiceClient::new(ch)
            .enrol(pb::EnrolRequest {
                join_token: token.to_string(),
                wg_public_key: wg.public_base64(),
                csr_pem: csr,
                endpoint: cfg.endpoint.clone(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("enrolment refused: {:?}: {}", s.code(), s.message()))
    };
    let resp = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .map_err(|_| "enrolment timed out".to_string())??;
    let Trust::Roots(cas) =
        Trust::from_ca_pem(&resp.ca_pem).map_err(|_| "the enrolment answer has no CA")?
    else {
        return Err("the enrolment answer has no CA".into());
    };
    // From now on only this CA is trusted: it must be the one the token vouched for.
    if cfg.ca_pem.is_none()
        && let Ok(pin) = pin
        && !cas.iter().any(|c| {
            use sha2::Digest as _;
            <[u8; 32]>::from(sha2::Sha256::digest(c.as_ref())) == pin
        })
    {
        return Err("the control plane's CA does not match the token's pin".into());
    }
    ClientIdentity::from_pem(&resp.certificate_pem, machine.pem())
        .map_err(|_| "the enrolment answer has no usable certificate")?;
    let v = resp.vrouter.unwrap_or_default();
    let now = now_unix();
    let e = Enrolment {
        server: cfg.server.to_string(),
        vrouter_id: v.id,
        name: v.name,
        cert_issued_at: now,
        cert_expires_at: resp
            .certificate_expires_at
            .map_or(now + 30 * 86_400, |t| u64::try_from(t.seconds).unwrap_or(0)),
    };
    store
        .write(
            cvlan_agent::state::files::CLIENT_CERT,
            resp.certificate_pem.as_bytes(),
        )
        .map_err(|e| e.to_string())?;
    store
        .write(cvlan_agent::state::files::CA, resp.ca_pem.as_bytes())
        .map_err(|e| e.to_string())?;
    save(store, &e)?;
    tracing::info!(vrouter_id = %e.vrouter_id, "enrolled");
    Ok(e)
}

fn mtls(cfg: &ClientConfig, store: &StateDir) -> Result<Arc<rustls::ClientConfig>, String> {
    let read = |name: &str| {
        store
            .read_string(name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{name} is missing from the state directory"))
    };
    let ca = match &cfg.ca_pem {
        Some(p) => p.clone(),
        None => read(cvlan_agent::state::files::CA)?,
    };
    let cert = read(cvlan_agent::state::files::CLIENT_CERT)?;
    let key = store.machine_key().map_err(|e| e.to_string())?;
    let trust = Trust::from_ca_pem(&ca).map_err(|e| e.to_string())?;
    let id = ClientIdentity::from_pem(&cert, key.pem()).map_err(|e| e.to_string())?;
    tls::client_config(&trust, Some(id))
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Enrols (retrying with backoff) and then holds the Sync stream until `cancel`.
pub async fn run(
    cfg: ClientConfig,
    store: StateDir,
    tx: mpsc::Sender<Update>,
    status: Arc<Mutex<ControlStatus>>,
    mut cancel: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    if let Ok(mut s) = status.lock() {
        s.server = Some(cfg.server.to_string());
    }
    let enrolment = loop {
        match enrol(&cfg, &store).await {
            Ok(e) => break e,
            Err(e) => {
                tracing::warn!(error = %e, "enrolment failed");
                status_err(&status, e);
            }
        }
        if sleep_or_cancel(backoff.next_delay(rand::random()), &mut cancel).await {
            return;
        }
    };
    backoff.reset();
    if let Ok(mut s) = status.lock() {
        s.vrouter_id = Some(enrolment.vrouter_id.clone());
    }
    loop {
        let r = session(&cfg, &store, &tx, &status, &mut backoff, &mut cancel).await;
        if let Ok(mut s) = status.lock() {
            s.connected = false;
        }
        metrics::gauge!("vrouterd_control_connected").set(0.0);
        match r {
            None => return,
            Some(e) => {
                tracing::warn!(error = %e, attempt = backoff.attempts(), "control plane stream ended");
                status_err(&status, e);
            }
        }
        if sleep_or_cancel(backoff.next_delay(rand::random()), &mut cancel).await {
            return;
        }
    }
}

async fn sleep_or_cancel(d: Duration, cancel: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = cancel.wait_for(|c| *c) => true,
    }
}

/// Renews the client certificate when less than a third of its validity remains
/// (the agent's rule); the next connection uses the new one.
async fn renew_if_due(
    client: &mut GatewayServiceClient<tonic::transport::Channel>,
    store: &StateDir,
) -> Result<(), String> {
    let Some(mut e) = store
        .read(files::VROUTER)
        .map_err(|e| e.to_string())?
        .and_then(|v| serde_json::from_slice::<Enrolment>(&v).ok())
    else {
        return Ok(());
    };
    if !cvlan_agent::agent::renewal_due(e.cert_issued_at, e.cert_expires_at, now_unix()) {
        return Ok(());
    }
    let csr = store
        .machine_key()
        .and_then(|k| {
            k.csr_pem()
                .map_err(|source| cvlan_agent::state::StateError::Key {
                    path: store.path().join(cvlan_agent::state::files::MACHINE_KEY),
                    source,
                })
        })
        .map_err(|e| e.to_string())?;
    let r = client
        .renew_certificate(pb::RenewCertificateRequest { csr_pem: csr })
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    store
        .write(
            cvlan_agent::state::files::CLIENT_CERT,
            r.certificate_pem.as_bytes(),
        )
        .map_err(|e| e.to_string())?;
    let now = now_unix();
    e.cert_issued_at = now;
    e.cert_expires_at = r
        .certificate_expires_at
        .map_or(now + 30 * 86_400, |t| u64::try_from(t.seconds).unwrap_or(0));
    save(store, &e)?;
    tracing::info!(expires_at = e.cert_expires_at, "client certificate renewed");
    Ok(())
}

/// One connection; `None` when cancelled, else why it ended.
async fn session(
    cfg: &ClientConfig,
    store: &StateDir,
    tx: &mpsc::Sender<Update>,
    status: &Arc<Mutex<ControlStatus>>,
    backoff: &mut Backoff,
    cancel: &mut watch::Receiver<bool>,
) -> Option<String> {
    let tls_cfg = match mtls(cfg, store) {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    let ch = tokio::select! {
        r = tls::channel(&cfg.server, tls_cfg) => match r {
            Ok(c) => c,
            Err(e) => return Some(format!("cannot reach {}: {}", cfg.server, error_chain(&e))),
        },
        _ = cancel.wait_for(|c| *c) => return None,
    };
    // One snapshot carries every served tenant's tables: tonic's default 4 MiB decode limit
    // would leave the gateway on stale tables (for every tenant) once a large tenant passed it.
    let mut client = GatewayServiceClient::new(ch).max_decoding_message_size(MAX_TABLES_MESSAGE);
    if let Err(e) = renew_if_due(&mut client, store).await {
        // The current certificate still works until it expires: keep going.
        tracing::warn!(error = %e, "certificate renewal failed");
    }
    let mut stream = match client
        .sync(pb::GatewaySyncRequest { since_version: 0 })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) => return Some(format!("sync refused: {:?}: {}", s.code(), s.message())),
    };
    tracing::info!(server = %cfg.server, "control plane stream open");
    // A stream can stay up for longer than a certificate lives: check hourly.
    let mut renew = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(3600),
        Duration::from_secs(3600),
    );
    loop {
        let msg = tokio::select! {
            m = stream.message() => Some(m),
            _ = cancel.wait_for(|c| *c) => return None,
            _ = renew.tick() => None,
        };
        let Some(msg) = msg else {
            if let Err(e) = renew_if_due(&mut client, store).await {
                tracing::warn!(error = %e, "certificate renewal failed");
            }
            continue;
        };
        match msg {
            Ok(Some(m)) => {
                let u = match m.update {
                    Some(pb::gateway_sync_response::Update::Snapshot(t)) => Update::Snapshot(t),
                    Some(pb::gateway_sync_response::Update::Delta(d)) => Update::Delta(d),
                    None => continue,
                };
                backoff.reset();
                if let Ok(mut s) = status.lock() {
                    s.connected = true;
                    s.last_error = None;
                    s.updates += 1;
                }
                metrics::gauge!("vrouterd_control_connected").set(1.0);
                if tx.send(u).await.is_err() {
                    return None;
                }
            }
            Ok(None) => return Some("the control plane closed the stream".into()),
            Err(s) => return Some(format!("stream error: {:?}: {}", s.code(), s.message())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_token_never_shows_in_debug_output() {
        let cfg = ClientConfig {
            server: ServerUrl::parse("https://10.0.0.1:8443").expect("url"),
            join_token: Some(JoinToken("cvt1.claims.secret-signature".into())),
            ca_pem: None,
            endpoint: "10.255.0.1:51820".into(),
        };
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("secret-signature") && !shown.contains("cvt1"),
            "{shown}"
        );
        assert!(shown.contains("redacted"), "{shown}");
    }
}
