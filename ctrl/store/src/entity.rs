//! Generic rows: every entity is stored as its proto3 JSON body plus the columns that are
//! indexed or constrained (id, tenant, name). The proto message stays the one definition of
//! the entity; tables only add what queries and constraints need.

use cvlan_proto::v1 as pb;
use pbjson_types::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use crate::{Result, StoreError, time};

/// A stored entity kind.
pub trait Entity: Serialize + DeserializeOwned + Clone + Send + Sync + Unpin + 'static {
    /// Table name.
    const TABLE: &'static str;
    /// Human name used in errors and audit ("cvlan").
    const KIND: &'static str;
    /// The row id.
    fn id(&self) -> &str;
    /// Unique name within its scope (stored in the `name` column).
    fn name(&self) -> &str;
    /// Owning tenant id; empty for global objects.
    fn tenant_id(&self) -> &str;
    /// Sets creation and update times.
    fn set_times(&mut self, created: Option<Timestamp>, updated: Option<Timestamp>);
}

macro_rules! entity {
    ($t:ty, $table:literal, $kind:literal, name: $name:ident, tenant: $tenant:tt, created: $c:ident, updated: $u:tt) => {
        impl Entity for $t {
            const TABLE: &'static str = $table;
            const KIND: &'static str = $kind;
            fn id(&self) -> &str {
                &self.id
            }
            fn name(&self) -> &str {
                &self.$name
            }
            fn tenant_id(&self) -> &str {
                entity!(@tenant self, $tenant)
            }
            fn set_times(&mut self, created: Option<Timestamp>, updated: Option<Timestamp>) {
                self.$c = created;
                entity!(@updated self, updated, $u);
            }
        }
    };
    (@tenant $s:ident, none) => { "" };
    (@tenant $s:ident, $f:ident) => { &$s.$f };
    (@updated $s:ident, $v:ident, none) => { let _ = $v; };
    (@updated $s:ident, $v:ident, $f:ident) => { $s.$f = $v; };
}

entity!(pb::Tenant, "tenants", "tenant", name: name, tenant: none, created: created_at, updated: updated_at);
entity!(pb::Cvlan, "cvlans", "cvlan", name: name, tenant: tenant_id, created: created_at, updated: updated_at);
entity!(pb::User, "users", "user", name: email, tenant: tenant_id, created: created_at, updated: updated_at);
entity!(pb::Group, "cvlan_groups", "group", name: name, tenant: tenant_id, created: created_at, updated: updated_at);
entity!(pb::Policy, "policies", "policy", name: name, tenant: tenant_id, created: created_at, updated: updated_at);
entity!(pb::Node, "nodes", "node", name: name, tenant: tenant_id, created: created_at, updated: updated_at);
entity!(pb::RegistrationToken, "reg_tokens", "token", name: id, tenant: tenant_id, created: created_at, updated: none);
entity!(pb::AddressReservation, "addresses", "address", name: address, tenant: tenant_id, created: created_at, updated: none);
entity!(pb::Vrouter, "vrouters", "vrouter", name: name, tenant: none, created: created_at, updated: updated_at);
entity!(pb::Region, "regions", "region", name: name, tenant: none, created: created_at, updated: updated_at);
entity!(pb::Relay, "relays", "relay", name: name, tenant: none, created: created_at, updated: updated_at);
entity!(pb::ExternalPeer, "external_peers", "external peer", name: name, tenant: tenant_id, created: created_at, updated: updated_at);
entity!(pb::OidcProvider, "oidc_providers", "identity provider", name: name, tenant: tenant_id, created: created_at, updated: updated_at);
entity!(pb::ApiKey, "api_keys", "api key", name: name, tenant: tenant_id, created: created_at, updated: none);

/// Which rows a query may see: one tenant, or global objects.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Objects of this tenant id.
    Tenant(&'a str),
    /// Global objects (tenants, vrouters, regions, relays).
    Global,
}

impl Scope<'_> {
    fn clause(&self, n: usize) -> String {
        match self {
            Scope::Tenant(_) => format!("tenant_id = ${n}"),
            Scope::Global => "tenant_id IS NULL".into(),
        }
    }
}

fn tenant_col(e: &impl Entity) -> Option<String> {
    (!e.tenant_id().is_empty()).then(|| e.tenant_id().to_string())
}

fn decode<E: Entity>(body: &str, created: i64, updated: i64) -> Result<E> {
    let mut e: E = serde_json::from_str(body)?;
    e.set_times(Some(time::ts(created)), Some(time::ts(updated)));
    Ok(e)
}

/// Inserts a new row. `extra` columns (name, value) are set in the same statement.
///
/// # Errors
/// [`StoreError::Conflict`] on a duplicate id or name; database errors.
pub async fn insert<E: Entity>(c: &mut AnyConnection, e: &E) -> Result<()> {
    insert_with(c, e, &[]).await
}

/// A column value for [`insert_with`].
#[derive(Debug, Clone)]
pub enum Col {
    /// Text.
    Text(String),
    /// 64-bit integer.
    Int(i64),
}

/// Like [`insert`], with extra typed columns.
///
/// # Errors
/// As [`insert`].
pub async fn insert_with<E: Entity>(
    c: &mut AnyConnection,
    e: &E,
    extra: &[(&'static str, Col)],
) -> Result<()> {
    let now = time::now_micros();
    let mut cols = String::from("id, tenant_id, name, body, created_at, updated_at");
    let mut vals = String::from("$1, $2, $3, $4, $5, $5");
    for (i, (name, _)) in extra.iter().enumerate() {
        cols.push_str(", ");
        cols.push_str(name);
        vals.push_str(&format!(", ${}", i + 6));
    }
    let sql = format!("INSERT INTO {} ({cols}) VALUES ({vals})", E::TABLE);
    let mut q = sqlx::query(AssertSqlSafe(sql))
        .bind(e.id().to_string())
        .bind(tenant_col(e))
        .bind(e.name().to_string())
        .bind(serde_json::to_string(e)?)
        .bind(now);
    for (_, v) in extra {
        q = match v {
            Col::Text(s) => q.bind(s.clone()),
            Col::Int(i) => q.bind(*i),
        };
    }
    q.execute(c)
        .await
        .map_err(|err| StoreError::conflict_as(err, conflict_what::<E>()))?;
    Ok(())
}

fn conflict_what<E: Entity>() -> &'static str {
    match E::KIND {
        "user" => "user email",
        "tenant" => "tenant name",
        "cvlan" => "cvlan name",
        "group" => "group name",
        "policy" => "policy name",
        "node" => "node name",
        "vrouter" => "vrouter name",
        "region" => "region name",
        "relay" => "relay name",
        "address" => "address",
        _ => "object",
    }
}

/// Fetches one object by id or unique name within `scope`.
///
/// # Errors
/// [`StoreError::NotFound`] if absent in that scope.
pub async fn get<E: Entity>(c: &mut AnyConnection, scope: Scope<'_>, key: &str) -> Result<E> {
    find(c, scope, key)
        .await?
        .ok_or(StoreError::NotFound(E::KIND))
}

/// Like [`get`], returning `None` when absent.
///
/// # Errors
/// Database errors.
pub async fn find<E: Entity>(
    c: &mut AnyConnection,
    scope: Scope<'_>,
    key: &str,
) -> Result<Option<E>> {
    let sql = format!(
        "SELECT body, created_at, updated_at FROM {} WHERE (id = $1 OR name = $1) AND {} \
         ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1",
        E::TABLE,
        scope.clause(2)
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(key.to_string());
    if let Scope::Tenant(t) = scope {
        q = q.bind(t.to_string());
    }
    let Some(row) = q.fetch_optional(c).await? else {
        return Ok(None);
    };
    Ok(Some(decode(
        row.try_get("body")?,
        row.try_get("created_at")?,
        row.try_get("updated_at")?,
    )?))
}

/// One page of a keyset-paginated list ordered by id (ids are time-ordered UUIDv7s).
#[derive(Debug, Clone)]
pub struct Page<E> {
    /// Objects of this page.
    pub items: Vec<E>,
    /// Cursor for the next page; empty when this is the last page.
    pub next: String,
}

/// Optional equality filter on an indexed column.
pub type Filter<'a> = Option<(&'static str, &'a str)>;

/// Lists objects in `scope`, `limit` at a time, after the cursor `after`.
///
/// # Errors
/// Database errors.
pub async fn list<E: Entity>(
    c: &mut AnyConnection,
    scope: Scope<'_>,
    filter: Filter<'_>,
    after: &str,
    limit: u32,
) -> Result<Page<E>> {
    // 0 (proto default) means the default page size.
    let limit = if limit == 0 { 100 } else { limit.min(1000) };
    let mut sql = format!(
        "SELECT id, body, created_at, updated_at FROM {} WHERE id > $1",
        E::TABLE
    );
    let mut n = 2;
    sql.push_str(&format!(" AND {}", scope.clause(n)));
    if let Scope::Tenant(_) = scope {
        n += 1;
    }
    if let Some((col, _)) = filter {
        sql.push_str(&format!(" AND {col} = ${n}"));
    }
    sql.push_str(&format!(" ORDER BY id LIMIT {}", limit + 1));
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(after.to_string());
    if let Scope::Tenant(t) = scope {
        q = q.bind(t.to_string());
    }
    if let Some((_, v)) = filter {
        q = q.bind(v.to_string());
    }
    let rows = q.fetch_all(c).await?;
    let mut items = Vec::with_capacity(rows.len());
    let mut next = String::new();
    for (i, row) in rows.iter().enumerate() {
        if i == limit as usize {
            next = items
                .last()
                .map(|e: &E| e.id().to_string())
                .unwrap_or_default();
            break;
        }
        items.push(decode(
            row.try_get("body")?,
            row.try_get("created_at")?,
            row.try_get("updated_at")?,
        )?);
    }
    Ok(Page { items, next })
}

/// Lists every object in `scope` (for compilers and validation; not for API pages).
///
/// # Errors
/// Database errors.
pub async fn list_all<E: Entity>(c: &mut AnyConnection, scope: Scope<'_>) -> Result<Vec<E>> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let p = list::<E>(c, scope, None, &after, 1000).await?;
        out.extend(p.items);
        if p.next.is_empty() {
            return Ok(out);
        }
        after = p.next;
    }
}

/// Replaces the stored body (and name) of an existing object.
///
/// # Errors
/// [`StoreError::NotFound`], [`StoreError::Conflict`] on a duplicate name.
pub async fn update<E: Entity>(c: &mut AnyConnection, e: &E) -> Result<()> {
    let sql = format!(
        "UPDATE {} SET name = $1, body = $2, updated_at = $3 WHERE id = $4",
        E::TABLE
    );
    let r = sqlx::query(AssertSqlSafe(sql))
        .bind(e.name().to_string())
        .bind(serde_json::to_string(e)?)
        .bind(time::now_micros())
        .bind(e.id().to_string())
        .execute(c)
        .await
        .map_err(|err| StoreError::conflict_as(err, conflict_what::<E>()))?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound(E::KIND));
    }
    Ok(())
}

/// Deletes by id.
///
/// # Errors
/// [`StoreError::NotFound`] if no such row.
pub async fn delete<E: Entity>(c: &mut AnyConnection, id: &str) -> Result<()> {
    let sql = format!("DELETE FROM {} WHERE id = $1", E::TABLE);
    let r = sqlx::query(AssertSqlSafe(sql))
        .bind(id.to_string())
        .execute(c)
        .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound(E::KIND));
    }
    Ok(())
}

/// Counts rows of a table matching one column.
///
/// # Errors
/// Database errors.
pub async fn count_where(
    c: &mut AnyConnection,
    table: &'static str,
    col: &'static str,
    val: &str,
) -> Result<i64> {
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE {col} = $1");
    Ok(sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
        .bind(val.to_string())
        .fetch_one(c)
        .await?)
}

/// A fresh, time-ordered object id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
