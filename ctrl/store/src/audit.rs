//! The audit log: written inside the mutation's own transaction, listed with filters and keyset
//! paging, trimmed by the retention job.

use cvlan_proto::v1 as pb;
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use crate::{Result, entity, time};

/// Who did something, from where, in which tenant: the context every audit event carries.
#[derive(Debug, Clone, Default)]
pub struct AuditRecord {
    /// Acting user or API key id ("system" for jobs).
    pub actor_id: String,
    /// Readable actor (email or key name).
    pub actor: String,
    /// Tenant the change happened in; empty for global changes.
    pub tenant_id: String,
    /// Client address as seen by the server.
    pub source_address: String,
}

impl AuditRecord {
    /// Builds an event for `action` on a target; `summary` must never contain secrets.
    pub fn event(
        &self,
        action: &str,
        target_type: &str,
        target_id: &str,
        summary: serde_json::Value,
    ) -> pb::AuditEvent {
        pb::AuditEvent {
            id: entity::new_id(),
            time: Some(time::ts(time::now_micros())),
            actor_id: self.actor_id.clone(),
            actor: self.actor.clone(),
            tenant_id: self.tenant_id.clone(),
            action: action.to_string(),
            target_type: target_type.to_string(),
            target_id: target_id.to_string(),
            summary: summary.to_string(),
            source_address: self.source_address.clone(),
        }
    }
}

/// Writes one event (call inside the mutation's transaction).
///
/// # Errors
/// Database errors.
pub async fn insert(c: &mut AnyConnection, e: &pb::AuditEvent) -> Result<()> {
    insert_many(c, std::slice::from_ref(e)).await
}

/// Writes several events in one statement.
///
/// # Errors
/// Database errors.
pub async fn insert_many(c: &mut AnyConnection, events: &[pb::AuditEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut sql = String::from(
        "INSERT INTO audit_events (id, tenant_id, time, actor_id, action, target_type, target_id, body) VALUES ",
    );
    crate::push_value_rows(&mut sql, crate::placeholder(c), events.len(), 8, &[]);
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for e in events {
        q = q
            .bind(e.id.clone())
            .bind((!e.tenant_id.is_empty()).then(|| e.tenant_id.clone()))
            .bind(e.time.as_ref().map(time::micros).unwrap_or_default())
            .bind(e.actor_id.clone())
            .bind(e.action.clone())
            .bind(e.target_type.clone())
            .bind(e.target_id.clone())
            .bind(serde_json::to_string(e)?);
    }
    q.execute(c).await?;
    Ok(())
}

/// Filters for [`list`]; empty strings and `None` mean "any".
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Tenant id; `None` means every tenant (superadmin view).
    pub tenant_id: Option<String>,
    /// Exact actor id.
    pub actor_id: String,
    /// Action prefix.
    pub action: String,
    /// Exact target type.
    pub target_type: String,
    /// Exact target id.
    pub target_id: String,
    /// Inclusive lower bound, µs since epoch.
    pub since: Option<i64>,
    /// Exclusive upper bound, µs since epoch.
    pub until: Option<i64>,
}

/// Lists events newest first; `before` is the cursor (an event id) from the previous page.
///
/// # Errors
/// Database errors.
pub async fn list(
    c: &mut AnyConnection,
    f: &AuditFilter,
    before: &str,
    limit: u32,
) -> Result<entity::Page<pb::AuditEvent>> {
    let limit = if limit == 0 { 100 } else { limit.min(5000) };
    let mut sql = String::from("SELECT body FROM audit_events WHERE 1 = 1");
    let mut args: Vec<either::Arg> = Vec::new();
    let mut add = |sql: &mut String, cond: &str, a: either::Arg| {
        args.push(a);
        sql.push_str(&format!(" AND {cond} ${}", args.len()));
    };
    if let Some(t) = &f.tenant_id {
        add(&mut sql, "tenant_id =", either::Arg::S(t.clone()));
    }
    if !before.is_empty() {
        add(&mut sql, "id <", either::Arg::S(before.to_string()));
    }
    if !f.actor_id.is_empty() {
        add(&mut sql, "actor_id =", either::Arg::S(f.actor_id.clone()));
    }
    if !f.action.is_empty() {
        // Prefix match without LIKE wildcards: [action, action + U+10FFFF).
        add(&mut sql, "action >=", either::Arg::S(f.action.clone()));
        add(
            &mut sql,
            "action <",
            either::Arg::S(format!("{}\u{10FFFF}", f.action)),
        );
    }
    if !f.target_type.is_empty() {
        add(
            &mut sql,
            "target_type =",
            either::Arg::S(f.target_type.clone()),
        );
    }
    if !f.target_id.is_empty() {
        add(&mut sql, "target_id =", either::Arg::S(f.target_id.clone()));
    }
    if let Some(s) = f.since {
        add(&mut sql, "time >=", either::Arg::I(s));
    }
    if let Some(u) = f.until {
        add(&mut sql, "time <", either::Arg::I(u));
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", limit + 1));
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for a in args {
        q = match a {
            either::Arg::S(s) => q.bind(s),
            either::Arg::I(i) => q.bind(i),
        };
    }
    let rows = q.fetch_all(c).await?;
    let mut items: Vec<pb::AuditEvent> = Vec::with_capacity(rows.len());
    let mut next = String::new();
    for (i, r) in rows.iter().enumerate() {
        if i == limit as usize {
            next = items.last().map(|e| e.id.clone()).unwrap_or_default();
            break;
        }
        items.push(serde_json::from_str(r.try_get(0)?)?);
    }
    Ok(entity::Page { items, next })
}

/// Deletes events older than `cutoff` (µs since epoch); returns how many.
///
/// # Errors
/// Database errors.
pub async fn delete_older_than(c: &mut AnyConnection, cutoff: i64) -> Result<u64> {
    let r = sqlx::query("DELETE FROM audit_events WHERE time < $1")
        .bind(cutoff)
        .execute(c)
        .await?;
    Ok(r.rows_affected())
}

mod either {
    pub enum Arg {
        S(String),
        I(i64),
    }
}
