//! Persistent job leases: a job's next run time lives in the database, and a conditional
//! update hands each due run to exactly one claimant, across restarts and replicas.

use crate::{Result, Store, time};

/// Outcome of [`Store::claim_job`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This caller holds the lease and must run the job, then call [`Store::finish_job`].
    Run,
    /// Not due yet, or another process holds the lease.
    Skip,
}

impl Store {
    /// Claims `name` for `owner` if it is due and not leased; the lease lasts `lease_secs`
    /// (a crashed runner's lease expires and the job runs again).
    ///
    /// # Errors
    /// Database errors.
    pub async fn claim_job(&self, name: &str, owner: &str, lease_secs: i64) -> Result<Claim> {
        let now = time::now_micros();
        let mut w = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO jobs (name, next_run) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .execute(w.conn())
        .await?;
        let r = sqlx::query(
            "UPDATE jobs SET lease_owner = $2, lease_until = $3 \
             WHERE name = $1 AND next_run <= $4 AND lease_until < $4",
        )
        .bind(name)
        .bind(owner)
        .bind(now + lease_secs * 1_000_000)
        .bind(now)
        .execute(w.conn())
        .await?;
        w.commit().await?;
        Ok(if r.rows_affected() == 1 {
            Claim::Run
        } else {
            Claim::Skip
        })
    }

    /// Records a finished run and schedules the next one `every_secs` later.
    ///
    /// # Errors
    /// Database errors.
    pub async fn finish_job(
        &self,
        name: &str,
        owner: &str,
        every_secs: i64,
        status: &str,
    ) -> Result<()> {
        let now = time::now_micros();
        let mut w = self.begin_write().await?;
        sqlx::query(
            "UPDATE jobs SET lease_owner = '', lease_until = 0, last_run = $3, next_run = $4, \
             last_status = $5 WHERE name = $1 AND lease_owner = $2",
        )
        .bind(name)
        .bind(owner)
        .bind(now)
        .bind(now + every_secs * 1_000_000)
        .bind(status)
        .execute(w.conn())
        .await?;
        w.commit().await
    }

    /// `(last_run, next_run, last_status)` of a job, if it ever ran.
    ///
    /// # Errors
    /// Database errors.
    pub async fn job_state(&self, name: &str) -> Result<Option<(i64, i64, String)>> {
        Ok(sqlx::query_as::<_, (i64, i64, String)>(
            "SELECT last_run, next_run, last_status FROM jobs WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?)
    }
}
