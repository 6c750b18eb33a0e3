//! The in-memory model of what the gateway must forward: tenants, peers (keys, allowed IPs,
//! endpoints), compiled ACLs and routes as the control plane (or a bootstrap file) describes
//! them, plus the session keypairs of every peer — and its translation into a
//! [`TableBuilder`] generation.
//!
//! A core module: no I/O, time passed in. Slots are stable: a tenant or peer keeps its slot
//! for as long as it exists (the fast path's per-peer counters and the keypairs' peer field
//! refer to slots), freed slots are reused, and slots found in the segment at start are
//! kept for the same ids.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use cvlan_proto::v1 as pb;
use cvlan_tables::layout::{FLAG_ACTIVE, NONE, Underlay};
use cvlan_tables::{
    AclRuleSpec, GenView, KeypairSpec, PeerSpec, Prefix, RouteTarget, TableBuilder, TenantSpec,
};

use crate::noise::{REJECT_AFTER_TIME, REKEY_AFTER_TIME, Session};

/// Why control-plane input was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// A peer's public key is not base64 of 32 bytes.
    #[error("peer {node}: invalid public key")]
    BadKey {
        /// The node id.
        node: String,
    },
}

/// A stable 64-bit id for a control-plane id string (tenant or node): the segment stores
/// only these, so a restarted sidecar maps its slots back through the same function.
#[must_use]
pub fn stable_id(s: &str) -> u64 {
    use blake2::{Blake2s256, Digest as _};
    let d = Blake2s256::digest(s.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    // 0 marks filler records.
    u64::from_le_bytes(b).max(1)
}

/// Smallest-free slot allocator.
#[derive(Clone, Debug, Default)]
struct Slots {
    free: BTreeSet<u32>,
    next: u32,
}

impl Slots {
    fn alloc(&mut self) -> u32 {
        if let Some(s) = self.free.pop_first() {
            return s;
        }
        self.next += 1;
        self.next - 1
    }

    /// Takes a specific slot (recovery).
    fn take(&mut self, slot: u32) {
        while self.next <= slot {
            self.free.insert(self.next);
            self.next += 1;
        }
        self.free.remove(&slot);
    }

    fn release(&mut self, slot: u32) {
        if slot < self.next {
            self.free.insert(slot);
        }
        // Trim the tail so that the tables shrink again.
        while self.next > 0 && self.free.remove(&(self.next - 1)) {
            self.next -= 1;
        }
    }

    fn len(&self) -> u32 {
        self.next
    }
}

/// A keypair installed in the tables.
#[derive(Clone)]
pub struct Installed {
    /// The table record.
    pub spec: KeypairSpec,
    /// When the handshake completed (or when it was recovered at start).
    pub created: Instant,
    /// Whether we initiated it (then we rekey it).
    pub initiator: bool,
    /// Highest keepalive counter the sidecar authenticated with it (roaming only on newer).
    pub last_keepalive: Option<u64>,
}

impl fmt::Debug for Installed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Installed")
            .field(
                "receiver_index",
                &format_args!("{:#010x}", self.spec.receiver_index),
            )
            .field(
                "remote_index",
                &format_args!("{:#010x}", self.spec.remote_index),
            )
            .field("install_id", &self.spec.install_id)
            .field("initiator", &self.initiator)
            .finish_non_exhaustive()
    }
}

/// A peer's keypairs.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    /// Used for sending (and receiving).
    pub current: Option<Installed>,
    /// The one before (still received on).
    pub previous: Option<Installed>,
    /// Responder side, not confirmed yet (received on; promoted on first receipt).
    pub next: Option<Installed>,
}

impl Keys {
    /// Every installed keypair.
    pub fn all(&self) -> impl Iterator<Item = &Installed> {
        [&self.current, &self.previous, &self.next]
            .into_iter()
            .flatten()
    }

    fn take_all(&mut self) -> Vec<u32> {
        [self.current.take(), self.previous.take(), self.next.take()]
            .into_iter()
            .flatten()
            .map(|k| k.spec.receiver_index)
            .collect()
    }
}

/// next → current → previous; returns the retired previous keypair's index.
fn promote_next(k: &mut Keys) -> Option<u32> {
    let retired = k.previous.take().map(|o| o.spec.receiver_index);
    k.previous = k.current.take();
    k.current = k.next.take();
    retired
}

/// A tenant.
#[derive(Clone, Debug)]
pub struct Tenant {
    /// Control-plane id.
    pub name: String,
    /// Table slot.
    pub slot: u32,
    /// Default action permit.
    pub default_permit: bool,
}

/// A peer (a node of an assigned CVLAN).
#[derive(Clone, Debug)]
pub struct Peer {
    /// Control-plane node id.
    pub node_id: String,
    /// Tenant (control-plane id).
    pub tenant: String,
    /// Table slot.
    pub slot: u32,
    /// WireGuard public key.
    pub public_key: [u8; 32],
    /// Allowed IPs.
    pub allowed_ips: Vec<Prefix>,
    /// Endpoints the node reported, in its order.
    pub endpoints: Vec<SocketAddr>,
    /// Endpoint learned from an authenticated handshake or keepalive (wins).
    pub learned: Option<SocketAddr>,
    /// Session keypairs.
    pub keys: Keys,
}

impl Peer {
    /// The endpoint the tables use.
    #[must_use]
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.learned.or_else(|| self.endpoints.first().copied())
    }

    /// Candidate endpoints for an initiation (learned first, no duplicates).
    #[must_use]
    pub fn candidates(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.learned.into_iter().collect();
        for e in &self.endpoints {
            if !v.contains(e) {
                v.push(*e);
            }
        }
        v
    }
}

/// What the segment held at start (see [`Recovered::from_view`]).
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// Tenant id → slot.
    pub tenants: HashMap<u64, u32>,
    /// Peer id → (slot, public key, endpoint, keys).
    pub peers: HashMap<u64, (u32, [u8; 32], Option<SocketAddr>, Keys)>,
}

impl Recovered {
    /// Reads slots and installed keypairs out of the active generation, so that a restarted
    /// sidecar keeps the sessions the workers are using.
    #[must_use]
    pub fn from_view(v: &GenView<'_>, now: Instant) -> Self {
        let mut r = Recovered::default();
        for (slot, t) in v.tenants.iter().enumerate() {
            if t.id != 0 && t.flags & FLAG_ACTIVE != 0 {
                r.tenants.insert(t.id, slot as u32);
            }
        }
        let kp = |s: u32| -> Option<Installed> {
            if s == NONE {
                return None;
            }
            let k = v.keypairs.get(s as usize)?;
            (k.flags & FLAG_ACTIVE != 0).then_some(Installed {
                spec: KeypairSpec {
                    receiver_index: k.receiver_index,
                    remote_index: k.remote_index,
                    send_key: k.send_key,
                    recv_key: k.recv_key,
                    install_id: k.install_id,
                },
                created: now,
                initiator: false,
                last_keepalive: None,
            })
        };
        for (slot, p) in v.peers.iter().enumerate() {
            if p.id == 0 || p.flags & FLAG_ACTIVE == 0 {
                continue;
            }
            let endpoint = match p.endpoint_family {
                4 => {
                    let a: [u8; 4] = p.endpoint_addr[..4].try_into().unwrap_or_default();
                    Some(SocketAddr::new(IpAddr::from(a), p.endpoint_port))
                }
                6 => Some(SocketAddr::new(
                    IpAddr::from(p.endpoint_addr),
                    p.endpoint_port,
                )),
                _ => None,
            };
            let keys = Keys {
                current: kp(p.current),
                previous: kp(p.previous),
                next: kp(p.next),
            };
            let pk = v
                .peer_keys
                .get(slot)
                .map(|k| k.public_key)
                .unwrap_or_default();
            r.peers.insert(p.id, (slot as u32, pk, endpoint, keys));
        }
        r
    }
}

/// What an update changed for the handshake engine.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Peers removed (or whose key changed): their ids.
    pub removed_peers: Vec<u64>,
    /// Receiver indices of keypairs dropped with them (free their slots).
    pub released: Vec<u32>,
}

/// Timer work found by [`Model::tick`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// Receiver indices of keypairs dropped (older than REJECT_AFTER_TIME).
    pub released: Vec<u32>,
}

/// The model.
#[derive(Debug, Default)]
pub struct Model {
    /// Outer source address/port.
    pub underlay: Underlay,
    tenants: BTreeMap<u64, Tenant>,
    peers: BTreeMap<u64, Peer>,
    acls: BTreeMap<u64, Vec<pb::AclEntry>>,
    routes: BTreeMap<u64, Vec<pb::RouteEntry>>,
    tenant_slots: Slots,
    peer_slots: Slots,
    /// Recovered state not yet matched by an update.
    recovered: Option<Recovered>,
    /// Control-plane version of the last update.
    pub version: u64,
    /// Whether a snapshot (or bootstrap file) has been applied.
    pub ready: bool,
}

fn parse_prefix(s: &str) -> Option<Prefix> {
    let s = s.trim();
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        return Some(Prefix::new(n.addr(), n.prefix_len()));
    }
    let a: IpAddr = s.parse().ok()?;
    Some(Prefix::new(a, if a.is_ipv4() { 32 } else { 128 }))
}

fn parse_key(s: &str) -> Option<[u8; 32]> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()?
        .try_into()
        .ok()
}

/// Expands a gateway ACL entry into rules: source CIDRs × destination CIDRs (same family;
/// an empty list matches any address of either family) × destination port ranges × source
/// port ranges, in that order.
#[must_use]
pub fn expand_acl(e: &pb::AclEntry) -> Vec<AclRuleSpec> {
    let permit = e.action == pb::Action::Allow as i32;
    let proto = match pb::Protocol::try_from(e.protocol).unwrap_or(pb::Protocol::Any) {
        pb::Protocol::Any => None,
        p => Some(p as i32 as u8),
    };
    let ports_apply = matches!(proto, Some(6 | 17));
    let ranges = |r: &[pb::PortRange]| -> Vec<(u16, u16)> {
        if !ports_apply || r.is_empty() {
            return vec![(0, u16::MAX)];
        }
        r.iter()
            .map(|p| {
                let a = p.first.min(65535) as u16;
                let b = if p.last == 0 {
                    a
                } else {
                    p.last.min(65535) as u16
                };
                (a.min(b), a.max(b))
            })
            .collect()
    };
    let dports = ranges(&e.ports);
    let sports = ranges(&e.source_ports);
    let side = |v: &[String]| -> Vec<Option<Prefix>> {
        if v.is_empty() {
            vec![None]
        } else {
            // An unparsable CIDR is skipped (never widened to "any").
            v.iter().filter_map(|s| parse_prefix(s)).map(Some).collect()
        }
    };
    let srcs = side(&e.source_cidrs);
    let dsts = side(&e.destination_cidrs);
    let mut out = Vec::new();
    for s in &srcs {
        for d in &dsts {
            let fams: Vec<bool> = match (s, d) {
                (Some(a), Some(b)) if a.addr.is_ipv4() != b.addr.is_ipv4() => continue,
                (Some(a), _) => vec![a.addr.is_ipv6()],
                (None, Some(b)) => vec![b.addr.is_ipv6()],
                (None, None) => vec![false, true],
            };
            for v6 in fams {
                // ICMP is IPv4's, ICMPv6 IPv6's.
                if (proto == Some(1) && v6) || (proto == Some(58) && !v6) {
                    continue;
                }
                for &dport in &dports {
                    for &sport in &sports {
                        out.push(AclRuleSpec {
                            v6,
                            src: s.map_or(0, |p| p.key()),
                            src_len: s.map_or(0, |p| p.len),
                            dst: d.map_or(0, |p| p.key()),
                            dst_len: d.map_or(0, |p| p.len),
                            proto,
                            sport,
                            dport,
                            permit,
                            established: e.established,
                        });
                    }
                }
            }
        }
    }
    out
}

impl Model {
    /// An empty model seeded with what the segment held at start.
    #[must_use]
    pub fn new(underlay: Underlay, recovered: Option<Recovered>) -> Self {
        let mut m = Model {
            underlay,
            ..Model::default()
        };
        if let Some(r) = &recovered {
            // Reserve every recovered slot until the first update says which ids still exist.
            for &s in r.tenants.values() {
                m.tenant_slots.take(s);
            }
            for (s, ..) in r.peers.values() {
                m.peer_slots.take(*s);
            }
        }
        m.recovered = recovered;
        m
    }

    /// Tenants by id.
    #[must_use]
    pub fn tenants(&self) -> &BTreeMap<u64, Tenant> {
        &self.tenants
    }

    /// Peers by id.
    #[must_use]
    pub fn peers(&self) -> &BTreeMap<u64, Peer> {
        &self.peers
    }

    /// A peer.
    #[must_use]
    pub fn peer(&self, id: u64) -> Option<&Peer> {
        self.peers.get(&id)
    }

    /// Recovered keypairs (receiver indices) — to reserve in the index allocator at start.
    #[must_use]
    pub fn recovered_indices(&self) -> Vec<u32> {
        self.recovered
            .iter()
            .flat_map(|r| r.peers.values())
            .flat_map(|(_, _, _, k)| k.all().map(|i| i.spec.receiver_index).collect::<Vec<_>>())
            .collect()
    }

    /// Largest install id recovered (new ones must be larger).
    #[must_use]
    pub fn max_install_id(&self) -> u64 {
        self.recovered
            .iter()
            .flat_map(|r| r.peers.values())
            .flat_map(|(_, _, _, k)| k.all().map(|i| i.spec.install_id).collect::<Vec<_>>())
            .chain(
                self.peers
                    .values()
                    .flat_map(|p| p.keys.all().map(|i| i.spec.install_id)),
            )
            .max()
            .unwrap_or(0)
    }

    /// Replaces everything with a snapshot.
    ///
    /// # Errors
    /// [`ModelError`] for invalid input; the model is then unchanged.
    pub fn apply_snapshot(&mut self, t: &pb::GatewayTables) -> Result<Applied, ModelError> {
        let peers = Self::parse_peers(&t.peers)?;
        let mut applied = Applied::default();
        let want_tenants: BTreeMap<u64, &pb::GatewayTenant> = t
            .tenants
            .iter()
            .map(|x| (stable_id(&x.tenant_id), x))
            .collect();
        for id in self.tenants.keys().copied().collect::<Vec<_>>() {
            if !want_tenants.contains_key(&id) {
                self.remove_tenant(id);
            }
        }
        for (id, x) in want_tenants {
            self.upsert_tenant(id, x);
        }
        let want_peers: BTreeMap<u64, _> = peers.into_iter().collect();
        for id in self.peers.keys().copied().collect::<Vec<_>>() {
            if !want_peers.contains_key(&id) {
                self.remove_peer(id, &mut applied);
            }
        }
        for (id, p) in want_peers {
            self.upsert_peer(id, p, &mut applied);
        }
        self.acls.clear();
        for a in &t.acls {
            self.acls
                .entry(stable_id(&a.tenant_id))
                .or_default()
                .push(a.clone());
        }
        self.routes.clear();
        for r in &t.routes {
            self.routes
                .entry(stable_id(&r.tenant_id))
                .or_default()
                .push(r.clone());
        }
        self.version = t.version;
        self.finish_recovery(&mut applied);
        self.ready = true;
        Ok(applied)
    }

    /// Applies a delta.
    ///
    /// # Errors
    /// [`ModelError`] for invalid input; the model is then unchanged.
    pub fn apply_delta(&mut self, d: &pb::GatewayDelta) -> Result<Applied, ModelError> {
        let peers = Self::parse_peers(&d.peers_upserted)?;
        let mut applied = Applied::default();
        for t in &d.tenants_upserted {
            self.upsert_tenant(stable_id(&t.tenant_id), t);
        }
        for t in &d.tenants_removed {
            self.remove_tenant(stable_id(t));
        }
        for n in &d.peers_removed {
            self.remove_peer(stable_id(n), &mut applied);
        }
        for (id, p) in peers {
            self.upsert_peer(id, p, &mut applied);
        }
        for t in &d.tenants_replaced {
            let id = stable_id(t);
            self.acls.remove(&id);
            self.routes.remove(&id);
        }
        for a in &d.acls {
            self.acls
                .entry(stable_id(&a.tenant_id))
                .or_default()
                .push(a.clone());
        }
        for r in &d.routes {
            self.routes
                .entry(stable_id(&r.tenant_id))
                .or_default()
                .push(r.clone());
        }
        self.version = d.version;
        Ok(applied)
    }

    fn parse_peers(v: &[pb::GatewayPeer]) -> Result<Vec<(u64, Peer)>, ModelError> {
        let mut out: BTreeMap<u64, Peer> = BTreeMap::new();
        for p in v {
            let public_key = parse_key(&p.wg_public_key).ok_or_else(|| ModelError::BadKey {
                node: p.node_id.clone(),
            })?;
            let mut endpoints: Vec<SocketAddr> =
                p.endpoints.iter().filter_map(|e| e.parse().ok()).collect();
            if let Ok(e) = p.endpoint.parse::<SocketAddr>()
                && !endpoints.contains(&e)
            {
                endpoints.insert(0, e);
            }
            let allowed: Vec<Prefix> = p
                .allowed_ips
                .iter()
                .filter_map(|s| parse_prefix(s))
                .collect();
            let id = stable_id(&p.node_id);
            // A node listed once per CVLAN: one peer, allowed IPs merged.
            let e = out.entry(id).or_insert_with(|| Peer {
                node_id: p.node_id.clone(),
                tenant: p.tenant_id.clone(),
                slot: 0,
                public_key,
                allowed_ips: Vec::new(),
                endpoints: Vec::new(),
                learned: None,
                keys: Keys::default(),
            });
            for a in allowed {
                if !e.allowed_ips.contains(&a) {
                    e.allowed_ips.push(a);
                }
            }
            for ep in endpoints {
                if !e.endpoints.contains(&ep) {
                    e.endpoints.push(ep);
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    fn upsert_tenant(&mut self, id: u64, t: &pb::GatewayTenant) {
        let default_permit = t.default_action == pb::Action::Allow as i32;
        if let Some(e) = self.tenants.get_mut(&id) {
            e.default_permit = default_permit;
            return;
        }
        let slot = match self.recovered.as_mut().and_then(|r| r.tenants.remove(&id)) {
            Some(s) => s,
            None => self.tenant_slots.alloc(),
        };
        self.tenants.insert(
            id,
            Tenant {
                name: t.tenant_id.clone(),
                slot,
                default_permit,
            },
        );
    }

    fn remove_tenant(&mut self, id: u64) {
        if let Some(t) = self.tenants.remove(&id) {
            self.tenant_slots.release(t.slot);
        }
        self.acls.remove(&id);
        self.routes.remove(&id);
    }

    fn remove_peer(&mut self, id: u64, applied: &mut Applied) {
        if let Some(mut p) = self.peers.remove(&id) {
            self.peer_slots.release(p.slot);
            applied.released.extend(p.keys.take_all());
            applied.removed_peers.push(id);
        }
    }

    fn upsert_peer(&mut self, id: u64, mut p: Peer, applied: &mut Applied) {
        if let Some(old) = self.peers.get_mut(&id) {
            if old.public_key != p.public_key {
                // A new key is a new peer for WireGuard: its sessions are void.
                applied.released.extend(old.keys.take_all());
                applied.removed_peers.push(id);
                old.learned = None;
            }
            old.public_key = p.public_key;
            old.tenant = p.tenant;
            old.allowed_ips = p.allowed_ips;
            old.endpoints = p.endpoints;
            return;
        }
        match self.recovered.as_mut().and_then(|r| r.peers.remove(&id)) {
            Some((slot, pk, ep, keys)) => {
                p.slot = slot;
                if pk == p.public_key {
                    p.keys = keys;
                    // The endpoint in use before the restart, even when it is one of the
                    // configured ones: the first configured one may not be reachable.
                    p.learned = ep;
                } else {
                    let mut keys = keys;
                    applied.released.extend(keys.take_all());
                }
            }
            None => p.slot = self.peer_slots.alloc(),
        }
        self.peers.insert(id, p);
    }

    /// After the first update: recovered ids it did not mention are gone.
    fn finish_recovery(&mut self, applied: &mut Applied) {
        if let Some(r) = self.recovered.take() {
            for (_, s) in r.tenants {
                self.tenant_slots.release(s);
            }
            for (id, (s, _, _, mut keys)) in r.peers {
                self.peer_slots.release(s);
                applied.released.extend(keys.take_all());
                applied.removed_peers.push(id);
            }
        }
    }

    /// Installs a session: as `next` when the peer initiated (we may not send with it until
    /// the peer proves it has it), as `current` when we did. Returns released indices.
    pub fn install(&mut self, s: &Session, install_id: u64, now: Instant) -> Vec<u32> {
        let mut released = Vec::new();
        let Some(p) = self.peers.get_mut(&s.peer) else {
            released.push(s.local_index);
            return released;
        };
        let k = Installed {
            spec: s.keypair_spec(install_id),
            created: now,
            initiator: s.initiator,
            last_keepalive: None,
        };
        if s.initiator {
            // An unconfirmed `next` from a simultaneous handshake the peer started stays: the
            // peer may send on it (it is promoted when it does).
            if let Some(old) = p.keys.previous.take() {
                released.push(old.spec.receiver_index);
            }
            p.keys.previous = p.keys.current.take();
            p.keys.current = Some(k);
        } else if let Some(old) = p.keys.next.replace(k) {
            released.push(old.spec.receiver_index);
        }
        released
    }

    /// Promotes `next` keypairs the workers have received on (`seen(slot)`). Returns
    /// (changed, released indices).
    pub fn promote(&mut self, seen: impl Fn(u32) -> bool, mask: u32) -> (bool, Vec<u32>) {
        let mut changed = false;
        let mut released = Vec::new();
        for p in self.peers.values_mut() {
            let Some(n) = &p.keys.next else { continue };
            if !seen(n.spec.receiver_index & mask) {
                continue;
            }
            changed = true;
            released.extend(promote_next(&mut p.keys));
        }
        (changed, released)
    }

    /// Confirms a `next` keypair by an authenticated keepalive on it (the fast path punts
    /// keepalives unopened, so the workers never flag them). `Some(released)` when promoted.
    pub fn confirm(&mut self, peer: u64, receiver_index: u32) -> Option<Vec<u32>> {
        let p = self.peers.get_mut(&peer)?;
        if p.keys
            .next
            .as_ref()
            .is_some_and(|n| n.spec.receiver_index == receiver_index)
        {
            return Some(promote_next(&mut p.keys).into_iter().collect());
        }
        None
    }

    /// Finds the peer and keypair of a receiver index.
    pub fn keypair_by_index(&mut self, receiver_index: u32) -> Option<(u64, &mut Installed)> {
        for (id, p) in &mut self.peers {
            for k in [&mut p.keys.current, &mut p.keys.previous, &mut p.keys.next]
                .into_iter()
                .flatten()
            {
                if k.spec.receiver_index == receiver_index {
                    return Some((*id, k));
                }
            }
        }
        None
    }

    /// Records an endpoint learned from an authenticated message. True when it changed.
    pub fn learn_endpoint(&mut self, peer: u64, ep: SocketAddr) -> bool {
        match self.peers.get_mut(&peer) {
            Some(p) if p.endpoint() != Some(ep) => {
                p.learned = Some(ep);
                true
            }
            _ => false,
        }
    }

    /// Drops keypairs older than REJECT_AFTER_TIME.
    pub fn expire(&mut self, now: Instant) -> Expired {
        let mut out = Expired::default();
        let old = |k: &Option<Installed>| {
            k.as_ref()
                .is_some_and(|k| now.saturating_duration_since(k.created) >= REJECT_AFTER_TIME)
        };
        for p in self.peers.values_mut() {
            for slot in [&mut p.keys.current, &mut p.keys.previous, &mut p.keys.next] {
                if old(slot)
                    && let Some(k) = slot.take()
                {
                    out.released.push(k.spec.receiver_index);
                }
            }
        }
        out
    }

    /// Peers that need an initiation from us: endpoints known and no usable current keypair,
    /// or a current keypair we initiated that is due for rekeying.
    #[must_use]
    pub fn wants_handshake(&self, now: Instant) -> Vec<u64> {
        self.peers
            .iter()
            .filter(|(_, p)| !p.candidates().is_empty())
            .filter(|(_, p)| match &p.keys.current {
                None => p.keys.next.is_none(),
                Some(c) => {
                    c.initiator && now.saturating_duration_since(c.created) >= REKEY_AFTER_TIME
                }
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Compiles the tables of the model.
    #[must_use]
    pub fn build(&self) -> TableBuilder {
        let n_tenants = self.tenant_slots.len() as usize;
        let mut tenants = vec![TenantSpec::default(); n_tenants];
        let slot_of_tenant: HashMap<&str, u32> = self
            .tenants
            .values()
            .map(|t| (t.name.as_str(), t.slot))
            .collect();
        let slot_of_node: HashMap<&str, u32> = self
            .peers
            .values()
            .map(|p| (p.node_id.as_str(), p.slot))
            .collect();
        for (id, t) in &self.tenants {
            let spec = &mut tenants[t.slot as usize];
            spec.id = *id;
            spec.default_permit = t.default_permit;
            spec.local_iface = t.slot;
            spec.acl = self
                .acls
                .get(id)
                .into_iter()
                .flatten()
                .flat_map(expand_acl)
                .collect();
            spec.routes = self
                .routes
                .get(id)
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    let p = parse_prefix(&r.prefix)?;
                    let target = match slot_of_node.get(r.peer_node_id.as_str()) {
                        Some(s) => RouteTarget::Peer(*s),
                        None if r.peer_node_id.is_empty() => RouteTarget::Local,
                        None => return None,
                    };
                    Some((p, target))
                })
                .collect();
        }
        let mut peers = vec![PeerSpec::default(); self.peer_slots.len() as usize];
        for (id, p) in &self.peers {
            let Some(&tenant) = slot_of_tenant.get(p.tenant.as_str()) else {
                // A peer of an unknown tenant is not published (nothing could reach it).
                continue;
            };
            peers[p.slot as usize] = PeerSpec {
                id: *id,
                tenant,
                endpoint: p.endpoint(),
                public_key: p.public_key,
                allowed_ips: p.allowed_ips.clone(),
                current: p.keys.current.as_ref().map(|k| k.spec),
                previous: p.keys.previous.as_ref().map(|k| k.spec),
                next: p.keys.next.as_ref().map(|k| k.spec),
            };
        }
        if peers.iter().any(|p| p.id == 0) && tenants.is_empty() {
            // Filler peers need a tenant slot to refer to.
            tenants.push(TenantSpec::default());
        }
        TableBuilder {
            underlay: self.underlay,
            tenants,
            peers,
        }
    }

    /// The model as a tables message (cached in the state directory, so that a restart
    /// without the control plane republishes the same tables).
    #[must_use]
    pub fn to_tables(&self) -> pb::GatewayTables {
        use base64::Engine as _;
        pb::GatewayTables {
            version: self.version,
            tenants: self
                .tenants
                .values()
                .map(|t| pb::GatewayTenant {
                    tenant_id: t.name.clone(),
                    index: t.slot,
                    default_action: if t.default_permit {
                        pb::Action::Allow
                    } else {
                        pb::Action::Deny
                    } as i32,
                })
                .collect(),
            peers: self
                .peers
                .values()
                .map(|p| pb::GatewayPeer {
                    node_id: p.node_id.clone(),
                    tenant_id: p.tenant.clone(),
                    cvlan_id: String::new(),
                    wg_public_key: base64::engine::general_purpose::STANDARD.encode(p.public_key),
                    allowed_ips: p
                        .allowed_ips
                        .iter()
                        .map(|a| format!("{}/{}", a.addr, a.len))
                        .collect(),
                    endpoint: p
                        .endpoints
                        .first()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    endpoints: p.endpoints.iter().map(ToString::to_string).collect(),
                })
                .collect(),
            acls: self.acls.values().flatten().cloned().collect(),
            routes: self.routes.values().flatten().cloned().collect(),
        }
    }

    /// Age of a keypair.
    #[must_use]
    pub fn age(k: &Installed, now: Instant) -> Duration {
        now.saturating_duration_since(k.created)
    }
}

#[cfg(test)]
mod tests;
