//! Persistence for the CloudVLAN control plane: one code path over SQLite (the embedded
//! default) and PostgreSQL through sqlx's `Any` driver, append-only migrations per backend,
//! generic entity rows, race-free IPAM with group commit, the audit log and the job lease table.
//!
//! This is an I/O crate (a shell around the database); authorisation and validation live in
//! cvlan-api's service layer, which calls in here inside one write transaction per mutation.

pub mod audit;
pub mod entity;
pub mod ipam;
pub mod jobs;
mod migrate;
pub mod time;

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Executor};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use migrate::{MIGRATIONS, Migration};

/// A transaction on either backend.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Which database engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file (WAL, synchronous=NORMAL): the one-box default.
    Sqlite,
    /// PostgreSQL: several replicas share it.
    Postgres,
}

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist in the scope asked for.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique name, key or address is already taken.
    #[error("{what} already exists")]
    Conflict {
        /// What collided, e.g. "cvlan name".
        what: &'static str,
    },
    /// The requested address is outside the CVLAN's prefix or not a usable host address.
    #[error("address {0} is not a usable host address of the CVLAN")]
    AddressOutOfRange(std::net::IpAddr),
    /// The requested address is already allocated.
    #[error("address {0} is already allocated")]
    AddressTaken(std::net::IpAddr),
    /// The CVLAN has no free address left.
    #[error("the CVLAN's address pool is exhausted")]
    Exhausted,
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Db(#[source] Arc<sqlx::Error>),
    /// A stored row could not be decoded (written by an incompatible version).
    #[error("corrupt stored row: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// A stored migration differs from the one this binary carries.
    #[error("migration {version} was changed after it was applied (checksum mismatch)")]
    MigrationChanged {
        /// Version number of the offending migration.
        version: i64,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(Arc::new(e))
    }
}

impl StoreError {
    /// Maps a unique-constraint violation to [`StoreError::Conflict`], anything else unchanged.
    pub fn conflict_as(e: sqlx::Error, what: &'static str) -> Self {
        if let sqlx::Error::Database(d) = &e
            && d.is_unique_violation()
        {
            return StoreError::Conflict { what };
        }
        e.into()
    }
}

/// Result alias of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Handle to the database: a pool, the backend kind, the in-process write gate (SQLite has
/// one writer; queuing in-process avoids busy-waiting in SQLite's lock) and the IPAM batcher.
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    write_gate: Option<Arc<Mutex<()>>>,
    /// Address allocator with group commit.
    pub ipam: ipam::Ipam,
}

/// A write transaction: on SQLite it also holds the in-process write gate.
pub struct WriteTx {
    /// The open transaction.
    pub tx: Tx,
    _gate: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// The connection to run statements on.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Commits; on error nothing of the transaction is kept.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// Opens (creating if needed) the database at `url` and runs pending migrations.
    ///
    /// `url` is `sqlite://PATH` or `postgres://…`.
    ///
    /// # Errors
    /// Connection failures, migration failures, or a changed migration.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url);
        let pool = connect(
            url,
            backend,
            if backend == Backend::Sqlite { 8 } else { 32 },
        )
        .await?;
        let store = Store {
            pool,
            backend,
            write_gate: (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(()))),
            ipam: ipam::Ipam::default(),
        };
        migrate::run(&store, None).await?;
        Ok(store)
    }

    /// Opens the database and applies migrations only up to `version` (for upgrade tests).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub async fn open_at_version(url: &str, version: i64) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url);
        let s = Store {
            pool: connect(url, backend, 2).await?,
            backend,
            write_gate: None,
            ipam: ipam::Ipam::default(),
        };
        migrate::run(&s, Some(version)).await?;
        Ok(s)
    }

    /// The backend this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a write transaction. On SQLite it waits for the in-process write gate first and
    /// takes the database write lock up front (`BEGIN IMMEDIATE`), so no transaction fails
    /// half-way on lock upgrade.
    ///
    /// # Errors
    /// Database errors.
    pub async fn begin_write(&self) -> Result<WriteTx> {
        match &self.write_gate {
            Some(gate) => {
                let guard = gate.clone().lock_owned().await;
                let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
                Ok(WriteTx {
                    tx,
                    _gate: Some(guard),
                })
            }
            None => Ok(WriteTx {
                tx: self.pool.begin().await?,
                _gate: None,
            }),
        }
    }

    /// Closes the pool (graceful shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Reads or creates a named secret shared by every replica (e.g. the token signing key).
    /// `make` runs only if none is stored; concurrent creators converge on the stored one.
    ///
    /// # Errors
    /// Database errors.
    pub async fn secret(&self, name: &str, make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>> {
        let q = "SELECT secret FROM signing_keys WHERE name = $1";
        if let Some(s) = sqlx::query_scalar::<_, Vec<u8>>(q)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(s);
        }
        let mut w = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO signing_keys (name, secret, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(make())
        .bind(time::now_micros())
        .execute(w.conn())
        .await?;
        let s = sqlx::query_scalar::<_, Vec<u8>>(q)
            .bind(name)
            .fetch_one(w.conn())
            .await?;
        w.commit().await?;
        Ok(s)
    }
}

fn backend_of(url: &str) -> Backend {
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

async fn connect(url: &str, backend: Backend, max: u32) -> Result<AnyPool> {
    Ok(match backend {
        Backend::Sqlite => {
            let url = if url.contains('?') {
                url.to_string()
            } else {
                format!("{url}?mode=rwc")
            };
            let opts: AnyConnectOptions = url.parse()?;
            AnyPoolOptions::new()
                .max_connections(max)
                .min_connections(1)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA journal_mode=WAL").await?;
                        conn.execute("PRAGMA synchronous=NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys=ON").await?;
                        conn.execute("PRAGMA busy_timeout=10000").await?;
                        Ok(())
                    })
                })
                .connect_with(opts)
                .await?
        }
        Backend::Postgres => {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?
        }
    })
}

/// The numbered-parameter sigil for this connection: `?` on SQLite, `$` on PostgreSQL.
///
/// SQLite treats `$N` as a *named* parameter and looks each one up by name while preparing
/// (quadratic in the parameter count: it dominated multi-row inserts); `?N` is positional.
pub fn placeholder(c: &sqlx::AnyConnection) -> char {
    if c.backend_name() == "SQLite" {
        '?'
    } else {
        '$'
    }
}

/// Appends `rows` value tuples of `cols` numbered parameters each, then, per row, the
/// parameters listed in `repeat` (1-based column numbers within the row) once more.
pub fn push_value_rows(sql: &mut String, p: char, rows: usize, cols: usize, repeat: &[usize]) {
    use std::fmt::Write;
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ",(" });
        let base = r * cols;
        for c in 1..=cols {
            let _ = write!(sql, "{}{p}{}", if c == 1 { "" } else { "," }, base + c);
        }
        for c in repeat {
            let _ = write!(sql, ",{p}{}", base + c);
        }
        sql.push(')');
    }
}

/// Whether `e` is a PostgreSQL serialization/deadlock failure worth retrying.
pub fn is_retryable(e: &StoreError) -> bool {
    if let StoreError::Db(e) = e
        && let sqlx::Error::Database(d) = e.as_ref()
    {
        return matches!(d.code().as_deref(), Some("40001" | "40P01"));
    }
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn value_rows_number_parameters_per_row_and_repeat_columns() {
        let mut s = String::new();
        super::push_value_rows(&mut s, '$', 2, 3, &[3]);
        assert_eq!(s, "($1,$2,$3,$3),($4,$5,$6,$6)");
        let mut s = String::new();
        super::push_value_rows(&mut s, '?', 1, 2, &[]);
        assert_eq!(s, "(?1,?2)");
    }
}
