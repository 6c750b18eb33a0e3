//! Append-only, numbered migrations, one file per backend. A released migration is never edited:
//! each applied one is recorded with a checksum and a changed file refuses to start.

use sqlx::{AnyConnection, Connection};

use crate::{Backend, Result, Store, StoreError, time};

/// One schema step, in both dialects.
pub struct Migration {
    /// Strictly increasing version.
    pub version: i64,
    /// Short description.
    pub name: &'static str,
    /// SQLite dialect.
    pub sqlite: &'static str,
    /// PostgreSQL dialect.
    pub postgres: &'static str,
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sqlite: include_str!("../migrations/sqlite/0001_initial.sql"),
        postgres: include_str!("../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "jobs_keys",
        sqlite: include_str!("../migrations/sqlite/0002_jobs_keys.sql"),
        postgres: include_str!("../migrations/postgres/0002_jobs_keys.sql"),
    },
    Migration {
        version: 3,
        name: "nodes_external_peers",
        sqlite: include_str!("../migrations/sqlite/0003_nodes_external_peers.sql"),
        postgres: include_str!("../migrations/postgres/0003_nodes_external_peers.sql"),
    },
    Migration {
        version: 4,
        name: "oidc",
        sqlite: include_str!("../migrations/sqlite/0004_oidc.sql"),
        postgres: include_str!("../migrations/postgres/0004_oidc.sql"),
    },
    Migration {
        version: 5,
        name: "vrouter_join_tokens",
        sqlite: include_str!("../migrations/sqlite/0005_vrouter_join_tokens.sql"),
        postgres: include_str!("../migrations/postgres/0005_vrouter_join_tokens.sql"),
    },
];

/// FNV-1a 64: enough to notice an edited migration file.
fn checksum(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

pub(crate) async fn run(store: &Store, up_to: Option<i64>) -> Result<()> {
    let mut conn = store.pool().acquire().await?;
    let conn: &mut AnyConnection = &mut conn;
    if store.backend() == Backend::Postgres {
        // Replicas starting together: one migrates, the others wait.
        sqlx::query("SELECT pg_advisory_lock(7431001)")
            .execute(&mut *conn)
            .await?;
    }
    let res = apply(store.backend(), conn, up_to).await;
    if store.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_unlock(7431001)")
            .execute(&mut *conn)
            .await?;
    }
    res
}

async fn apply(backend: Backend, conn: &mut AnyConnection, up_to: Option<i64>) -> Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, \
         name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    for m in MIGRATIONS {
        if up_to.is_some_and(|v| m.version > v) {
            break;
        }
        let sql = match backend {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        let sum = checksum(sql);
        let mut tx = match backend {
            Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => conn.begin().await?,
        };
        let applied: Option<String> =
            sqlx::query_scalar("SELECT checksum FROM schema_migrations WHERE version = $1")
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await?;
        match applied {
            Some(s) if s == sum => continue,
            Some(_) => {
                return Err(StoreError::MigrationChanged { version: m.version });
            }
            None => {}
        }
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(&sum)
        .bind(time::now_micros())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_both_dialects_exist() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
            assert!(!m.sqlite.trim().is_empty() && !m.postgres.trim().is_empty());
        }
    }

    /// Append-only rule: released migrations keep their exact text. Add a new migration
    /// instead of editing one (and add its checksum here).
    #[test]
    fn released_migrations_are_never_edited() {
        let sums: Vec<(String, String)> = MIGRATIONS
            .iter()
            .map(|m| (checksum(m.sqlite), checksum(m.postgres)))
            .collect();
        let released = [
            ("fc8f3e940181f65c", "fc8f3e940181f65c"),
            ("5e5e871ed3715a29", "9c40b6f10dbdfcc1"),
            ("349cb3bde7ddcc3c", "349cb3bde7ddcc3c"),
            ("61fded8abe05459b", "61fded8abe05459b"),
        ];
        for (i, (s, p)) in released.iter().enumerate() {
            assert_eq!(&sums[i].0, s, "sqlite migration {} changed", i + 1);
            assert_eq!(&sums[i].1, p, "postgres migration {} changed", i + 1);
        }
    }
}
