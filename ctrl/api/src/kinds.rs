//! Per-entity rules for the generic service operations: validation, cross-references checked
//! inside the write transaction, immutable fields, extra columns and redacted audit summaries.

use std::collections::HashSet;

use cvlan_proto::v1 as pb;
use cvlan_store::Store;
use cvlan_store::entity::{self, Col, Entity, Scope};
use futures::future::BoxFuture;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::Value;
use sqlx::AnyConnection;

use crate::error::{ApiError, ApiResult};
use crate::rbac::Resource;

/// An entity handled by the generic create/get/list/update/delete operations.
pub trait Kind: Entity + Default {
    /// RBAC resource.
    const RES: Resource;
    /// Not tenant-scoped.
    const GLOBAL: bool;
    /// JSON (camelCase) fields that cannot change after creation.
    const IMMUTABLE: &'static [&'static str] = &[];
    /// Sets generated fields on create.
    fn on_create(&mut self, id: String, tenant_id: &str);
    /// Checks the object on its own.
    ///
    /// # Errors
    /// [`ApiError::BadRequest`] naming the offending field.
    fn check(&self) -> ApiResult<()>;
    /// Checks references against the database, inside the write transaction.
    fn refs<'a>(&'a self, _c: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async { Ok(()) })
    }
    /// Refuses a delete that would leave dangling references.
    fn before_delete<'a>(&'a self, _c: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async { Ok(()) })
    }
    /// Extra indexed columns to write on insert.
    fn extra(&self) -> Vec<(&'static str, Col)> {
        Vec::new()
    }
    /// Takes write-only secrets out of the object (so the stored body never holds them) and
    /// returns the columns they are kept in; called before every insert and update.
    fn secret_columns(&mut self) -> Vec<(&'static str, Col)> {
        Vec::new()
    }
    /// Like [`Kind::secret_columns`], on update, knowing the stored object.
    fn secret_columns_on_update(&mut self, _before: &Self) -> Vec<(&'static str, Col)> {
        self.secret_columns()
    }
    /// What the audit log records of this object (never secrets).
    fn summary(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
    /// Fills read-only, computed fields before objects are returned.
    fn enrich<'a>(_store: &'a Store, _items: &'a mut [Self]) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// The proto3 JSON field names of a message type, from the generated schemas (keyed by the
/// Rust type's last path segment, which is the proto message name).
pub fn json_fields<T>() -> HashSet<&'static str> {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static SCHEMAS: OnceLock<HashMap<String, HashSet<&'static str>>> = OnceLock::new();
    let all = SCHEMAS.get_or_init(|| {
        let v: &'static Value = Box::leak(Box::new(
            serde_json::from_str(cvlan_proto::SCHEMAS_JSON).unwrap_or(Value::Null),
        ));
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, s)| {
                        let props = s["properties"]
                            .as_object()
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        (k.clone(), props)
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    let name = std::any::type_name::<T>()
        .rsplit("::")
        .next()
        .unwrap_or_default();
    all.get(name).cloned().unwrap_or_default()
}

/// DNS-label style names: 1–63 of `a-z 0-9 -`, not starting or ending with `-`.
pub fn check_name(field: &str, s: &str) -> ApiResult<()> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok && uuid_like(s) {
        return Err(ApiError::bad(format!("{field} must not look like an id")));
    }
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "{field} must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-' (got {:?})",
            truncate(s)
        )))
    }
}

/// Bounded free text.
pub fn check_text(field: &str, s: &str, max: usize) -> ApiResult<()> {
    if s.chars().count() > max {
        return Err(ApiError::bad(format!(
            "{field} is longer than {max} characters"
        )));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::bad(format!(
            "{field} contains control characters"
        )));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.bytes().filter(|b| *b == b'-').count() == 4
}

fn check_tags(tags: &[String]) -> ApiResult<()> {
    if tags.len() > 64 {
        return Err(ApiError::bad("at most 64 tags"));
    }
    for t in tags {
        check_name("tag", t)?;
    }
    Ok(())
}

fn check_cidr(field: &str, s: &str) -> ApiResult<IpNet> {
    let n: IpNet = s.parse().map_err(|_| {
        ApiError::bad(format!(
            "{field}: {:?} is not a valid CIDR prefix",
            truncate(s)
        ))
    })?;
    if n.trunc() != n {
        return Err(ApiError::bad(format!(
            "{field}: {s} has host bits set (did you mean {}?)",
            n.trunc()
        )));
    }
    Ok(n)
}

fn check_endpoint(field: &str, s: &str) -> ApiResult<()> {
    if s.is_empty() {
        return Ok(());
    }
    let ok = s.parse::<std::net::SocketAddr>().is_ok()
        || s.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty()
                && h.len() <= 253
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                && p.parse::<u16>().is_ok_and(|p| p > 0)
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "{field} must be host:port (got {:?})",
            truncate(s)
        )))
    }
}

fn check_wg_key(field: &str, s: &str) -> ApiResult<()> {
    use base64::Engine;
    if s.is_empty() {
        return Ok(());
    }
    match base64::engine::general_purpose::STANDARD.decode(s) {
        Ok(b) if b.len() == 32 => Ok(()),
        _ => Err(ApiError::bad(format!(
            "{field} must be a base64 32-byte WireGuard key"
        ))),
    }
}

async fn exists<E: Entity>(c: &mut AnyConnection, scope: Scope<'_>, key: &str) -> ApiResult<E> {
    entity::find::<E>(c, scope, key)
        .await?
        .ok_or_else(|| ApiError::bad(format!("{} {:?} does not exist", E::KIND, truncate(key))))
}

/// Fills a missing IPv6 ULA prefix with a random fdXX:…::/64 (RFC 4193 global id).
fn random_ula() -> String {
    let r: [u8; 7] = rand::random();
    let g = u128::from_be_bytes([
        0xfd, r[0], r[1], r[2], r[3], r[4], r[5], r[6], 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    format!("{}/64", std::net::Ipv6Addr::from(g))
}

impl Kind for pb::Tenant {
    const RES: Resource = Resource::Tenant;
    const GLOBAL: bool = true;
    const IMMUTABLE: &'static [&'static str] = &["name"];
    fn on_create(&mut self, id: String, _t: &str) {
        self.id = id;
    }
    fn check(&self) -> ApiResult<()> {
        check_name("name", &self.name)?;
        check_text("displayName", &self.display_name, 200)
    }
    fn before_delete<'a>(&'a self, c: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<()>> {
        // Everything in the tenant goes by cascade; vrouters only lose their assignment.
        Box::pin(unassign(c, move |a| a.tenant_id == self.id))
    }
}

/// Drops the vrouter assignments `gone` matches (their tenant or CVLAN is being deleted), so
/// no vrouter is left naming something that no longer exists.
async fn unassign(
    c: &mut AnyConnection,
    gone: impl Fn(&pb::VrouterAssignment) -> bool,
) -> ApiResult<()> {
    for mut v in entity::list_all::<pb::Vrouter>(c, Scope::Global).await? {
        if v.assignments.iter().any(&gone) {
            v.assignments.retain(|a| !gone(a));
            entity::update(c, &v).await?;
        }
    }
    Ok(())
}

impl Kind for pb::Cvlan {
    const RES: Resource = Resource::Cvlan;
    const GLOBAL: bool = false;
    // Renumbering a CVLAN would strand every allocated address.
    const IMMUTABLE: &'static [&'static str] = &[
        "ipv4Prefix",
        "ipv6Prefix",
        "addressesUsed",
        "addressesTotal",
    ];
    fn on_create(&mut self, id: String, t: &str) {
        self.id = id;
        self.tenant_id = t.to_string();
        if self.ipv6_prefix.is_empty() {
            self.ipv6_prefix = random_ula();
        }
        if self.mode == pb::CvlanMode::Unspecified as i32 {
            self.mode = pb::CvlanMode::Mesh as i32;
        }
        self.addresses_used = 0;
        self.addresses_total = 0;
    }
    fn check(&self) -> ApiResult<()> {
        check_name("name", &self.name)?;
        check_text("description", &self.description, 1024)?;
        let v4: Ipv4Net = self.ipv4_prefix.parse().map_err(|_| {
            ApiError::bad(format!(
                "ipv4Prefix: {:?} is not an IPv4 CIDR prefix like 10.20.0.0/24",
                truncate(&self.ipv4_prefix)
            ))
        })?;
        check_cidr("ipv4Prefix", &self.ipv4_prefix)?;
        if !(8..=30).contains(&v4.prefix_len()) {
            return Err(ApiError::bad(
                "ipv4Prefix length must be between /8 and /30",
            ));
        }
        let v6: Ipv6Net = self.ipv6_prefix.parse().map_err(|_| {
            ApiError::bad(format!(
                "ipv6Prefix: {:?} is not an IPv6 CIDR prefix like fd20::/64",
                truncate(&self.ipv6_prefix)
            ))
        })?;
        check_cidr("ipv6Prefix", &self.ipv6_prefix)?;
        if v6.network().segments()[0] & 0xfe00 != 0xfc00 {
            return Err(ApiError::bad(
                "ipv6Prefix must be a unique local (fc00::/7) prefix",
            ));
        }
        if v6.prefix_len() > 128 - (32 - u32::from(v4.prefix_len())) as u8 {
            return Err(ApiError::bad(
                "ipv6Prefix is too small to hold one address per IPv4 host address",
            ));
        }
        if pb::CvlanMode::try_from(self.mode).is_err() {
            return Err(ApiError::bad("mode is not a known CVLAN mode"));
        }
        Ok(())
    }
    fn refs<'a>(&'a self, c: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let others = entity::list_all::<pb::Cvlan>(c, Scope::Tenant(&self.tenant_id)).await?;
            let v4: IpNet = check_cidr("ipv4Prefix", &self.ipv4_prefix)?;
            let v6: IpNet = check_cidr("ipv6Prefix", &self.ipv6_prefix)?;
            for o in others.iter().filter(|o| o.id != self.id) {
                for (mine, theirs) in [(v4, &o.ipv4_prefix), (v6, &o.ipv6_prefix)] {
                    if let Ok(t) = theirs.parse::<IpNet>()
                        && (mine.contains(&t) || t.contains(&mine))
                    {
                        return Err(ApiError::Conflict(format!(
                            "{mine} overlaps {t} of cvlan {:?} in this tenant",
                            o.name
                        )));
                    }
                }
            }
            Ok(())
        })
    }
    fn before_delete<'a>(&'a self, c: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let n = entity::count_where(c, "nodes", "cvlan_id", &self.id).await?;
            if n > 0 {
                return Err(ApiError::Conflict(format!(
                    "cvlan {:?} still has {n} node(s); delete them first",
                    self.name
                )));
            }
            unassign(c, |a| a.cvlan_id == self.id).await
        })
    }
    fn enrich<'a>(store: &'a Store, items: &'a mut [Self]) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            for cv in items {
                cv.addresses_used = store.addresses_used(&cv.id).await?;
                if let Ok(v4) = cv.ipv4_prefix.parse::<Ipv4Net>() {
                    let (lo, hi) = cvlan_store::ipam::host_range(&v4);
                    cv.addresses_total = hi - lo;
                }
            }
            Ok(())
        })
    }
    fn extra(&self) -> Vec<(&'static str, Col)> {
        vec![
            ("ipv4_prefix", Col::Text(self.ipv4_prefix.clone())),
            ("ipv6_prefix", Col::Text(self.ipv6_prefix.clone())),
        ]
    }
}

impl Kind for pb::Group {
    const RES: Resource = Resource::Group;
    const GLOBAL: bool = false;
    fn on_create(&mut self, id: String, t: &str) {
        self.id = id;
        self.tenant_id = t.to_string();
    }
    fn check(&self) -> ApiResult<()> {
        check_name("name", &self.name)?;
        check_text("description", &self.description, 1024)?;
        if self.members.len() > 10_000 {
            return Err(ApiError::bad("at most 10000 members"));
        }
        for m in &self.members {
            match &m.member {
                None => return Err(ApiError::bad("each member needs userId, nodeId or tag")),
                Some(pb::group_member::Member::Tag(t)) => check_name("tag", t)?,
                Some(_) => {}
            }
        }
        Ok(())
    }
    fn refs<'a>(&'a self, c: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let scope = Scope::Tenant(&self.tenant_id);
            for m in &self.members {
                match &m.member {
                    Some(pb::group_member::Member::UserId(u)) => {
                        exists::<pb::User>(c, scope, u).await?;
                    }
                    Some(pb::group_member::Member::NodeId(n)) => {
                        exists::<pb::Node>(c, scope, n).await?;
                    }
                    _ => {}
                }
            }
            Ok(())
        })
    }
    fn before_delete<'a>(&'a self, c: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let policies =
                entity::list_all::<pb::Policy>(c, Scope::Tenant(&self.tenant_id)).await?;
            for p in policies {
                let uses = p.rules.iter().flat_map(|r| r.sources.iter().chain(&r.destinations)).any(
                    |s| matches!(&s.selector, Some(pb::selector::Selector::Group(g)) if *g == self.id || *g == self.name),
                );
                if uses {
                    return Err(ApiError::Conflict(format!(
                        "group {:?} is used by policy {:?}",
                        self.name, p.name
                    )));
                }
            }
            let idps =
                entity::list_all::<pb::OidcProvider>(c, Scope::Tenant(&self.tenant_id)).await?;
            if let Some(p) = idps
                .iter()
                .find(|p| p.group_mappings.iter().any(|m| m.group == self.id))
            {
                return Err(ApiError::Conflict(format!(
                    "group {:?} is mapped by single sign-on provider {:?}",
                    self.name, p.name
                )));
            }
            Ok(())
        })
    }
}

impl Kind for pb::Policy {
    const RES: Resource = Resource::Policy;
    const GLOBAL: bool = false;
    fn on_create(&mut self, id: String, t: &str) {
        self.id = id;
        self.tenant_id = t.to_string();
    }
    fn check(&self) -> ApiResult<()> {
        check_name("name", &self.name)?;
        check_text("description", &self.description, 1024)?;
        if self.rules.len() > 10_000 {
            return Err(ApiError::bad("at most 10000 rules per policy"));
        }
        for (i, r) in self.rules.iter().enumerate() {
            let at = |m: &str| ApiError::bad(format!("rules[{i}]: {m}"));
            if r.sources.is_empty() || r.destinations.is_empty() {
                return Err(at(
                    "sources and destinations must not be empty (use {\"any\": true})",
                ));
            }
            for s in r.sources.iter().chain(&r.destinations) {
                match &s.selector {
                    None => return Err(at("a selector needs one of any, group, tag, node, cidr")),
                    Some(pb::selector::Selector::Any(false)) => {
                        return Err(at("selector \"any\" must be true"));
                    }
                    Some(pb::selector::Selector::Cidr(c)) => {
                        check_cidr(&format!("rules[{i}] cidr"), c)?;
                    }
                    Some(pb::selector::Selector::Tag(t)) => check_name("tag", t)?,
                    Some(_) => {}
                }
            }
            let proto = pb::Protocol::try_from(r.protocol)
                .map_err(|_| at("protocol is not one of ANY, ICMP, TCP, UDP, ICMPV6"))?;
            if !r.ports.is_empty() && !matches!(proto, pb::Protocol::Tcp | pb::Protocol::Udp) {
                return Err(at("ports need protocol TCP or UDP"));
            }
            for p in &r.ports {
                if p.first == 0 || p.first > p.last || p.last > 65535 {
                    return Err(at("port ranges need 1 <= first <= last <= 65535"));
                }
            }
            if !matches!(
                pb::Action::try_from(r.action),
                Ok(pb::Action::Allow | pb::Action::Deny)
            ) {
                return Err(at("action must be ACTION_ALLOW or ACTION_DENY"));
            }
        }
        Ok(())
    }
    fn refs<'a>(&'a self, c: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let scope = Scope::Tenant(&self.tenant_id);
            let mut seen = HashSet::new();
            let mut refs: Vec<(bool, String)> = Vec::new();
            for r in &self.rules {
                for s in r.sources.iter().chain(r.destinations.iter()) {
                    match &s.selector {
                        Some(pb::selector::Selector::Group(g)) if seen.insert(("g", g.clone())) => {
                            refs.push((true, g.clone()));
                        }
                        Some(pb::selector::Selector::Node(n)) if seen.insert(("n", n.clone())) => {
                            refs.push((false, n.clone()));
                        }
                        _ => {}
                    }
                }
            }
            for (is_group, key) in refs {
                if is_group {
                    exists::<pb::Group>(c, scope, &key).await?;
                } else {
                    exists::<pb::Node>(c, scope, &key).await?;
                }
            }
            Ok(())
        })
    }
}

impl Kind for pb::Node {
    const RES: Resource = Resource::Node;
    const GLOBAL: bool = false;
    const IMMUTABLE: &'static [&'static str] = &[
        "cvlanId",
        "wgPublicKey",
        "ipv4",
        "ipv6",
        "ephemeral",
        "online",
        "lastSeen",
        "endpoints",
        "os",
    ];
    fn on_create(&mut self, id: String, t: &str) {
        self.id = id;
        self.tenant_id = t.to_string();
    }
    fn check(&self) -> ApiResult<()> {
        check_name("name", &self.name)?;
        check_tags(&self.tags)?;
        check_wg_key("wgPublicKey", &self.wg_public_key)
    }
    fn extra(&self) -> Vec<(&'static str, Col)> {
        vec![
            ("cvlan_id", Col::Text(self.cvlan_id.clone())),
            ("wg_key", Col::Text(self.wg_public_key.clone())),
        ]
    }
}

impl Kind for pb::RegistrationToken {
    const RES: Resource = Resource::Token;
    const GLOBAL: bool = false;
    // Tokens are signed claims: nothing about them changes except revocation.
    const IMMUTABLE: &'static [&'static str] = &[
        "cvlanId",
        "reusable",
        "ephemeral",
        "tags",
        "expiresAt",
        "revoked",
        "uses",
        "token",
        "description",
    ];
    fn on_create(&mut self, id: String, t: &str) {
        self.id = id;
        self.tenant_id = t.to_string();
    }
    fn check(&self) -> ApiResult<()> {
        check_text("description", &self.description, 1024)?;
        check_tags(&self.tags)
    }
    fn summary(&self) -> Value {
        let mut s = self.clone();
        s.token.clear();
        serde_json::to_value(&s).unwrap_or(Value::Null)
    }
}

impl Kind for pb::Region {
    const RES: Resource = Resource::Region;
    const GLOBAL: bool = true;
    fn on_create(&mut self, id: String, _t: &str) {
        self.id = id;
    }
    fn check(&self) -> ApiResult<()> {
        check_name("name", &self.name)?;
        check_text("description", &self.description, 1024)
    }
    fn before_delete<'a>(&'a self, c: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let v = entity::list_all::<pb::Vrouter>(c, Scope::Global).await?;
            let r = entity::list_all::<pb::Relay>(c, Scope::Global).await?;
            let users = v.iter().filter(|v| v.region_id == self.id).count()
                + r.iter().filter(|r| r.region_id == self.id).count();
            if users > 0 {
                return Err(ApiError::Conflict(format!(
                    "region {:?} still has {users} vrouter(s)/relay(s)",
                    self.name
                )));
            }
            Ok(())
        })
    }
}

/// A region reference must be an existing region's id (names would dangle after a rename and
/// escape the region's in-use check).
async fn region_id(c: &mut AnyConnection, key: &str) -> ApiResult<String> {
    if key.is_empty() {
        return Ok(String::new());
    }
    let r = exists::<pb::Region>(c, Scope::Global, key).await?;
    if r.id != key {
        return Err(ApiError::bad(format!(
            "regionId must be a region id (region {:?} has id {})",
            r.name, r.id
        )));
    }
    Ok(r.id)
}

impl Kind for pb::Relay {
    const RES: Resource = Resource::Relay;
    const GLOBAL: bool = true;
    fn on_create(&mut self, id: String, _t: &str) {
        self.id = id;
    }
    fn check(&self) -> ApiResult<()> {
        check_name("name", &self.name)?;
        if self.endpoint.is_empty() {
            return Err(ApiError::bad("endpoint is required (host:port)"));
        }
        check_endpoint("endpoint", &self.endpoint)
    }
    fn refs<'a>(&'a self, c: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            region_id(c, &self.region_id).await?;
            Ok(())
        })
    }
}

/// External peers are governed like nodes (same RBAC resource).
impl Kind for pb::ExternalPeer {
    const RES: Resource = Resource::Node;
    const GLOBAL: bool = false;
    const IMMUTABLE: &'static [&'static str] = &["cvlanId"];
    fn on_create(&mut self, id: String, t: &str) {
        self.id = id;
        self.tenant_id = t.to_string();
    }
    fn check(&self) -> ApiResult<()> {
        check_name("name", &self.name)?;
        check_text("description", &self.description, 1024)?;
        if self.wg_public_key.is_empty() {
            return Err(ApiError::bad("wgPublicKey is required"));
        }
        check_wg_key("wgPublicKey", &self.wg_public_key)?;
        if !self.endpoint.is_empty() && self.endpoint.parse::<std::net::SocketAddr>().is_err() {
            return Err(ApiError::bad(format!(
                "endpoint must be ip:port (got {:?})",
                truncate(&self.endpoint)
            )));
        }
        if self.allowed_ips.is_empty() || self.allowed_ips.len() > 256 {
            return Err(ApiError::bad("allowedIps needs 1 to 256 prefixes"));
        }
        for a in &self.allowed_ips {
            check_cidr("allowedIps", a)?;
        }
        if self.persistent_keepalive_seconds > 3600 {
            return Err(ApiError::bad(
                "persistentKeepaliveSeconds must be at most 3600",
            ));
        }
        if self.node_ids.len() > 1024 {
            return Err(ApiError::bad("at most 1024 nodeIds"));
        }
        Ok(())
    }
    fn refs<'a>(&'a self, c: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let scope = Scope::Tenant(&self.tenant_id);
            let cv = exists::<pb::Cvlan>(c, scope, &self.cvlan_id).await?;
            if cv.id != self.cvlan_id {
                return Err(ApiError::bad("cvlanId must name the cvlan by id"));
            }
            let nodes: Vec<pb::Node> = entity::list_all::<pb::Node>(c, scope)
                .await?
                .into_iter()
                .filter(|n| n.cvlan_id == cv.id)
                .collect();
            for id in &self.node_ids {
                if !nodes.iter().any(|n| &n.id == id) {
                    return Err(ApiError::bad(format!(
                        "nodeIds: node {:?} is not in this cvlan",
                        truncate(id)
                    )));
                }
            }
            let prefixes: Vec<IpNet> = self
                .allowed_ips
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect();
            for n in &nodes {
                if n.wg_public_key == self.wg_public_key {
                    return Err(ApiError::Conflict(format!(
                        "wgPublicKey is already used by node {:?}",
                        n.name
                    )));
                }
                for a in [&n.ipv4, &n.ipv6] {
                    if let Ok(ip) = a.parse::<std::net::IpAddr>()
                        && let Some(p) = prefixes.iter().find(|p| p.contains(&ip))
                    {
                        return Err(ApiError::Conflict(format!(
                            "allowedIps {p} covers the address of node {:?}",
                            n.name
                        )));
                    }
                }
            }
            Ok(())
        })
    }
    fn extra(&self) -> Vec<(&'static str, Col)> {
        vec![("cvlan_id", Col::Text(self.cvlan_id.clone()))]
    }
}

impl Kind for pb::Vrouter {
    const RES: Resource = Resource::Vrouter;
    const GLOBAL: bool = true;
    fn on_create(&mut self, id: String, _t: &str) {
        self.id = id;
    }
    fn check(&self) -> ApiResult<()> {
        check_name("name", &self.name)?;
        check_endpoint("endpoint", &self.endpoint)?;
        check_wg_key("wgPublicKey", &self.wg_public_key)?;
        for a in &self.assignments {
            if a.tenant_id.is_empty() {
                return Err(ApiError::bad("each assignment needs a tenantId"));
            }
        }
        Ok(())
    }
    fn refs<'a>(&'a self, c: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            region_id(c, &self.region_id).await?;
            for a in &self.assignments {
                let t = exists::<pb::Tenant>(c, Scope::Global, &a.tenant_id).await?;
                if t.id != a.tenant_id {
                    return Err(ApiError::bad("assignments must name tenants by id"));
                }
                if !a.cvlan_id.is_empty() {
                    let cv = exists::<pb::Cvlan>(c, Scope::Tenant(&t.id), &a.cvlan_id).await?;
                    if cv.id != a.cvlan_id {
                        return Err(ApiError::bad("assignments must name cvlans by id"));
                    }
                }
            }
            Ok(())
        })
    }
}

impl Kind for pb::OidcProvider {
    // Who may sign people in is user management: tenant admins write, everyone reads.
    const RES: Resource = Resource::User;
    const GLOBAL: bool = false;
    const IMMUTABLE: &'static [&'static str] = &["clientSecretSet"];
    fn on_create(&mut self, id: String, t: &str) {
        self.id = id;
        self.tenant_id = t.to_string();
        self.client_secret_set = false;
    }
    fn check(&self) -> ApiResult<()> {
        check_name("name", &self.name)?;
        check_text("displayName", &self.display_name, 200)?;
        check_issuer(&self.issuer)?;
        if self.client_id.is_empty() {
            return Err(ApiError::bad("clientId is required"));
        }
        check_text("clientId", &self.client_id, 512)?;
        check_text("clientSecret", &self.client_secret, 1024)?;
        if self.allowed_domains.len() > 100 {
            return Err(ApiError::bad("at most 100 allowedDomains"));
        }
        for d in &self.allowed_domains {
            let ok = !d.is_empty()
                && d.len() <= 253
                && *d == d.to_lowercase()
                && d.split('.')
                    .all(|l| check_name("allowedDomains", l).is_ok());
            if !ok {
                return Err(ApiError::bad(format!(
                    "allowedDomains: {:?} is not a lowercase domain name like example.com",
                    truncate(d)
                )));
            }
        }
        check_text("groupsClaim", &self.groups_claim, 128)?;
        if self.group_mappings.len() > 1000 {
            return Err(ApiError::bad("at most 1000 groupMappings"));
        }
        for m in &self.group_mappings {
            if m.claim_value.is_empty() || m.group.is_empty() {
                return Err(ApiError::bad(
                    "each groupMapping needs a claimValue and a group",
                ));
            }
            check_text("groupMappings.claimValue", &m.claim_value, 256)?;
        }
        match pb::Role::try_from(self.default_role) {
            Ok(pb::Role::Superadmin) => {
                return Err(ApiError::bad(
                    "defaultRole cannot be ROLE_SUPERADMIN: single sign-on creates tenant users",
                ));
            }
            Ok(_) => {}
            Err(_) => return Err(ApiError::bad("defaultRole is not a known role")),
        }
        if self.scopes.len() > 20 {
            return Err(ApiError::bad("at most 20 scopes"));
        }
        for s in &self.scopes {
            if s.is_empty()
                || s.len() > 128
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            {
                return Err(ApiError::bad(format!(
                    "scopes: {:?} is not a valid scope",
                    truncate(s)
                )));
            }
        }
        Ok(())
    }
    fn refs<'a>(&'a self, c: &'a mut AnyConnection) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let scope = Scope::Tenant(&self.tenant_id);
            for m in &self.group_mappings {
                let g = exists::<pb::Group>(c, scope, &m.group).await?;
                if g.id != m.group {
                    return Err(ApiError::bad(format!(
                        "groupMappings: name the group {:?} by its id ({})",
                        g.name, g.id
                    )));
                }
            }
            Ok(())
        })
    }
    fn secret_columns(&mut self) -> Vec<(&'static str, Col)> {
        if self.client_secret.is_empty() {
            return Vec::new();
        }
        self.client_secret_set = true;
        vec![(
            "client_secret",
            Col::Text(std::mem::take(&mut self.client_secret)),
        )]
    }
    fn secret_columns_on_update(&mut self, before: &Self) -> Vec<(&'static str, Col)> {
        let cols = self.secret_columns();
        // A secret is for one client at one provider: pointing the provider elsewhere without
        // a new secret forgets it, instead of sending it to the new token endpoint.
        if cols.is_empty()
            && (self.issuer != before.issuer || self.client_id != before.client_id)
            && before.client_secret_set
        {
            self.client_secret_set = false;
            return vec![("client_secret", Col::Text(String::new()))];
        }
        cols
    }
    fn summary(&self) -> Value {
        let mut c = self.clone();
        c.client_secret.clear();
        serde_json::to_value(c).unwrap_or(Value::Null)
    }
}

/// An issuer must be an absolute https URL (http only on loopback, for development and tests)
/// without query or fragment, as OpenID Connect Discovery requires.
fn check_issuer(s: &str) -> ApiResult<()> {
    let bad = |why: &str| Err(ApiError::bad(format!("issuer {:?} {why}", truncate(s))));
    let Ok(u) = reqwest::Url::parse(s) else {
        return bad("is not a URL");
    };
    if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
        return bad("must not have a query, fragment or user info");
    }
    let Some(host) = u.host_str() else {
        return bad("has no host");
    };
    let h = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback());
    match u.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => bad("must be an https URL (http only on loopback)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_label_rules() {
        for ok in ["a", "acme", "lab-1", "x0"] {
            check_name("name", ok).unwrap();
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            &"x".repeat(64),
            "0190a0b1-2c3d-7e4f-8a9b-0c1d2e3f4a5b",
        ] {
            assert!(check_name("name", bad).is_err(), "{bad}");
        }
    }

    fn cv(v4: &str, v6: &str) -> pb::Cvlan {
        let mut c = pb::Cvlan {
            name: "lab".into(),
            ipv4_prefix: v4.into(),
            ipv6_prefix: v6.into(),
            ..Default::default()
        };
        c.on_create("id".into(), "t");
        c
    }

    #[test]
    fn cvlan_prefixes_are_validated_with_clear_messages() {
        cv("10.20.0.0/24", "fd20::/64").check().unwrap();
        let e = cv("10.20.0.1/24", "").check().unwrap_err().to_string();
        assert!(e.contains("host bits"), "{e}");
        assert!(cv("10.20.0.0/33", "").check().is_err());
        assert!(cv("nonsense", "").check().is_err());
        assert!(cv("10.0.0.0/4", "").check().is_err());
        let e = cv("10.20.0.0/24", "2001:db8::/64")
            .check()
            .unwrap_err()
            .to_string();
        assert!(e.contains("unique local"), "{e}");
        let generated = cv("10.20.0.0/24", "");
        assert!(
            generated.ipv6_prefix.starts_with("fd"),
            "{}",
            generated.ipv6_prefix
        );
        generated.check().unwrap();
    }

    #[test]
    fn policy_rules_reject_ports_without_tcp_or_udp_and_bad_ranges() {
        let rule = |proto: pb::Protocol, first: u32, last: u32| pb::Policy {
            name: "p".into(),
            rules: vec![pb::Rule {
                sources: vec![pb::Selector {
                    selector: Some(pb::selector::Selector::Any(true)),
                }],
                destinations: vec![pb::Selector {
                    selector: Some(pb::selector::Selector::Cidr("10.0.0.0/8".into())),
                }],
                protocol: proto as i32,
                ports: vec![pb::PortRange { first, last }],
                action: pb::Action::Allow as i32,
            }],
            ..Default::default()
        };
        rule(pb::Protocol::Tcp, 22, 22).check().unwrap();
        assert!(rule(pb::Protocol::Icmp, 22, 22).check().is_err());
        assert!(rule(pb::Protocol::Tcp, 30, 20).check().is_err());
        assert!(rule(pb::Protocol::Udp, 1, 70000).check().is_err());
    }
}
