//! The persistent job scheduler: each job's next run is stored in the database and claimed with
//! a lease, so jobs survive restarts and run once even with several replicas.

use std::sync::Arc;
use std::time::Duration;

use cvlan_store::jobs::Claim;

use crate::service::Service;

/// Audit retention: once a day.
pub const AUDIT_RETENTION: &str = "audit-retention";
/// Expired session cleanup: hourly.
pub const SESSION_GC: &str = "session-gc";
/// Removal of ephemeral nodes that went away: every minute.
pub const EPHEMERAL_GC: &str = "ephemeral-gc";
const DAY: i64 = 86_400;

/// Runs every due job once; returns the names of the jobs this process ran.
///
/// # Errors
/// Database errors.
pub async fn run_due(svc: &Service, owner: &str) -> anyhow::Result<Vec<&'static str>> {
    let mut ran = Vec::new();
    if svc.store.claim_job(AUDIT_RETENTION, owner, 600).await? == Claim::Run {
        let status = match svc.trim_audit().await {
            Ok(n) => {
                tracing::info!(job = AUDIT_RETENTION, deleted = n, "job finished");
                format!("ok: deleted {n}")
            }
            Err(e) => {
                tracing::warn!(job = AUDIT_RETENTION, error = %e, "job failed");
                format!("error: {e}")
            }
        };
        svc.store
            .finish_job(AUDIT_RETENTION, owner, DAY, &status)
            .await?;
        ran.push(AUDIT_RETENTION);
    }
    if svc.store.claim_job(SESSION_GC, owner, 600).await? == Claim::Run {
        let status = match svc.purge_sessions().await {
            Ok(n) => format!("ok: deleted {n}"),
            Err(e) => format!("error: {e}"),
        };
        svc.store
            .finish_job(SESSION_GC, owner, 3600, &status)
            .await?;
        ran.push(SESSION_GC);
    }
    if svc.store.claim_job(EPHEMERAL_GC, owner, 600).await? == Claim::Run {
        let inactive = Duration::from_secs(svc.config.ephemeral_inactivity_secs);
        let status = match svc.gc_ephemeral(inactive).await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(job = EPHEMERAL_GC, deleted = n, "ephemeral nodes removed");
                }
                format!("ok: deleted {n}")
            }
            Err(e) => format!("error: {e}"),
        };
        svc.store
            .finish_job(EPHEMERAL_GC, owner, 60, &status)
            .await?;
        ran.push(EPHEMERAL_GC);
    }
    Ok(ran)
}

/// Polls for due jobs every `every` until the shutdown signal flips.
pub async fn scheduler(
    svc: Arc<Service>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let owner = format!("{}-{}", std::process::id(), cvlan_store::entity::new_id());
    loop {
        if let Err(e) = run_due(&svc, &owner).await {
            tracing::warn!(error = %e, "job scheduler pass failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}
