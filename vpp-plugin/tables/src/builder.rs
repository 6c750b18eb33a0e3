//! The writer side (std): describe tenants, peers, keypairs, routes and ACL rules, and compile
//! them into one generation image. Compilation (hash tables per prefix length, ACL tuple
//! partitioning) happens here, off the fast path.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::vec::Vec;

use zerocopy::{Immutable, IntoBytes};

use crate::layout::{
    ACL_FLAG_ESTABLISHED, ACTION_DENY, ACTION_PERMIT, AclBucket, AclRef, AclRule, AclTuple,
    FLAG_ACTIVE, FLAG_NEXT, GEN_MAGIC, GenHeader, Keypair, LpmEntry, LpmLevel, LpmRef, NONE, Peer,
    PeerKey, ROUTE_LOCAL, Section, Tenant, Underlay,
};
use crate::view::{hash_key, hash_pair, prefix_mask, split};

/// Errors found while building a generation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    /// A prefix length exceeds the address width.
    #[error("prefix length {0} too long")]
    BadPrefix(u8),
    /// A peer refers to a tenant slot that does not exist.
    #[error("peer {peer} refers to missing tenant {tenant}")]
    MissingTenant {
        /// Peer slot.
        peer: u32,
        /// Tenant slot.
        tenant: u32,
    },
    /// Two keypairs share a keypair slot (receiver index low bits).
    #[error("receiver index {0:#x} collides with another keypair slot")]
    KeypairCollision(u32),
    /// The image does not fit into a slot.
    #[error("generation needs {need} bytes, slot has {have}")]
    TooLarge {
        /// Bytes needed.
        need: usize,
        /// Slot size.
        have: usize,
    },
    /// A route or port range is inconsistent.
    #[error("invalid port range {0}..={1}")]
    BadPortRange(u16, u16),
}

/// An IP prefix (address bits beyond the length are ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// Address.
    pub addr: IpAddr,
    /// Length in bits.
    pub len: u8,
}

impl Prefix {
    /// New prefix.
    #[must_use]
    pub fn new(addr: IpAddr, len: u8) -> Self {
        Self { addr, len }
    }

    /// Address width in bits.
    #[must_use]
    pub fn bits(&self) -> u32 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// Address as `u128` (IPv4 in the low 32 bits).
    #[must_use]
    pub fn addr_u128(&self) -> u128 {
        ip_u128(self.addr)
    }

    /// Masked key.
    #[must_use]
    pub fn key(&self) -> u128 {
        self.addr_u128() & prefix_mask(u32::from(self.len), self.bits())
    }

    /// Whether `addr` (same family) lies inside.
    #[must_use]
    pub fn contains(&self, addr: u128) -> bool {
        addr & prefix_mask(u32::from(self.len), self.bits()) == self.key()
    }
}

/// An IP address as `u128` (IPv4 in the low 32 bits).
#[must_use]
pub fn ip_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Where a route sends packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteTarget {
    /// Encrypt to this peer slot.
    Peer(u32),
    /// Deliver to the tenant's local interface.
    Local,
}

/// An ACL rule as written by the policy compiler (first match wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AclRuleSpec {
    /// IPv6 rule (else IPv4).
    pub v6: bool,
    /// Source address (family per `v6`) as `u128`.
    pub src: u128,
    /// Source prefix length.
    pub src_len: u8,
    /// Destination address.
    pub dst: u128,
    /// Destination prefix length.
    pub dst_len: u8,
    /// Protocol, `None` = any.
    pub proto: Option<u8>,
    /// Source port range, inclusive.
    pub sport: (u16, u16),
    /// Destination port range, inclusive.
    pub dport: (u16, u16),
    /// Permit (else deny).
    pub permit: bool,
    /// TCP segments match only with ACK or RST set (replies within a connection).
    pub established: bool,
}

impl AclRuleSpec {
    /// Linear-scan semantics of one rule (the reference the compiled form is tested against).
    #[must_use]
    pub fn matches(&self, t: &crate::view::FiveTuple, v6: bool) -> bool {
        let bits = if self.v6 { 128 } else { 32 };
        self.v6 == v6
            && t.src & prefix_mask(u32::from(self.src_len), bits)
                == self.src & prefix_mask(u32::from(self.src_len), bits)
            && t.dst & prefix_mask(u32::from(self.dst_len), bits)
                == self.dst & prefix_mask(u32::from(self.dst_len), bits)
            && self.proto.is_none_or(|p| p == t.proto)
            && (self.sport.0..=self.sport.1).contains(&t.sport)
            && (self.dport.0..=self.dport.1).contains(&t.dport)
            // Written out here rather than calling the fast path's helper: this is the reference.
            && (!self.established || t.proto != 6 || t.tcp_flags & (0x10 | 0x04) != 0)
    }
}

/// A tenant.
#[derive(Clone, Debug, Default)]
pub struct TenantSpec {
    /// External id.
    pub id: u64,
    /// Default action when no rule matches.
    pub default_permit: bool,
    /// Local interface for `RouteTarget::Local`.
    pub local_iface: u32,
    /// Extra routes (peer allowed IPs are added automatically).
    pub routes: Vec<(Prefix, RouteTarget)>,
    /// ACL rules in priority order.
    pub acl: Vec<AclRuleSpec>,
}

/// A session keypair to install.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeypairSpec {
    /// Our receiver index (its low bits choose the keypair slot).
    pub receiver_index: u32,
    /// The peer's index.
    pub remote_index: u32,
    /// Sending key.
    pub send_key: [u8; 32],
    /// Receiving key.
    pub recv_key: [u8; 32],
    /// Unique per installed keypair (non-zero).
    pub install_id: u64,
}

/// A peer; its slot is its position in [`TableBuilder::peers`].
#[derive(Clone, Debug, Default)]
pub struct PeerSpec {
    /// External id.
    pub id: u64,
    /// Tenant slot.
    pub tenant: u32,
    /// Endpoint, if known.
    pub endpoint: Option<SocketAddr>,
    /// Static public key.
    pub public_key: [u8; 32],
    /// Allowed IPs (cryptokey routing: also the routes to this peer).
    pub allowed_ips: Vec<Prefix>,
    /// Sending keypair.
    pub current: Option<KeypairSpec>,
    /// Previous keypair.
    pub previous: Option<KeypairSpec>,
    /// Next (unconfirmed) keypair.
    pub next: Option<KeypairSpec>,
}

/// Everything one generation holds.
#[derive(Clone, Debug, Default)]
pub struct TableBuilder {
    /// Outer source address/port.
    pub underlay: Underlay,
    /// Tenants by slot.
    pub tenants: Vec<TenantSpec>,
    /// Peers by slot.
    pub peers: Vec<PeerSpec>,
}

struct Image {
    buf: Vec<u8>,
}

impl Image {
    fn push<T: IntoBytes + Immutable>(&mut self, items: &[T]) -> Section {
        while !self.buf.len().is_multiple_of(64) {
            self.buf.push(0);
        }
        let offset = self.buf.len() as u64;
        self.buf.extend_from_slice(items.as_bytes());
        Section {
            offset,
            count: items.len() as u64,
        }
    }
}

fn table_size(n: usize) -> usize {
    (n * 2).next_power_of_two().max(2)
}

fn build_lpm(
    routes: &BTreeMap<(u8, u128), u32>,
    bits: u32,
    levels: &mut Vec<LpmLevel>,
    entries: &mut Vec<LpmEntry>,
) -> LpmRef {
    let mut by_len: BTreeMap<u8, Vec<(u128, u32)>> = BTreeMap::new();
    for (&(len, key), &v) in routes {
        by_len.entry(len).or_default().push((key, v));
    }
    let r = LpmRef {
        first_level: levels.len() as u32,
        n_levels: by_len.len() as u32,
    };
    for (len, keys) in by_len.iter().rev() {
        let size = table_size(keys.len());
        let mask = (size - 1) as u32;
        let base = entries.len();
        entries.resize(base + size, LpmEntry::default());
        for &(key, value) in keys {
            let mut i = (hash_key(key) as u32) & mask;
            while entries[base + i as usize].used != 0 {
                i = (i + 1) & mask;
            }
            entries[base + i as usize] = LpmEntry {
                key: split(key),
                value,
                used: 1,
            };
        }
        levels.push(LpmLevel {
            prefix_len: u32::from(*len),
            mask,
            first_entry: base as u64,
            key_mask: split(prefix_mask(u32::from(*len), bits)),
        });
    }
    r
}

fn build_acl(
    rules: &[(u32, &AclRuleSpec)],
    bits: u32,
    tuples: &mut Vec<AclTuple>,
    buckets: &mut Vec<AclBucket>,
    out_rules: &mut Vec<AclRule>,
    filters: &mut Vec<u64>,
) -> AclRef {
    // (src_len, dst_len) -> (masked src, masked dst) -> rules in index order
    type Groups = BTreeMap<(u128, u128), Vec<AclRule>>;
    let mut by_tuple: BTreeMap<(u8, u8), Groups> = BTreeMap::new();
    for &(index, r) in rules {
        let src = r.src & prefix_mask(u32::from(r.src_len), bits);
        let dst = r.dst & prefix_mask(u32::from(r.dst_len), bits);
        by_tuple
            .entry((r.src_len, r.dst_len))
            .or_default()
            .entry((src, dst))
            .or_default()
            .push(AclRule {
                index,
                sport_lo: r.sport.0,
                sport_hi: r.sport.1,
                dport_lo: r.dport.0,
                dport_hi: r.dport.1,
                proto: r.proto.unwrap_or(0),
                proto_any: u8::from(r.proto.is_none()),
                action: if r.permit { ACTION_PERMIT } else { ACTION_DENY },
                flags: if r.established {
                    ACL_FLAG_ESTABLISHED
                } else {
                    0
                },
            });
    }
    let mut compiled: Vec<AclTuple> = Vec::with_capacity(by_tuple.len());
    for ((src_len, dst_len), groups) in by_tuple {
        let size = table_size(groups.len());
        let mask = (size - 1) as u32;
        let base = buckets.len();
        buckets.resize(base + size, AclBucket::default());
        let mut min_index = u32::MAX;
        // ~32 filter bits per key: ~3 % of misses still probe the buckets.
        let filter_bits = (groups.len() * 32).next_power_of_two().clamp(512, 1 << 20);
        let filter_first = filters.len();
        filters.resize(filter_first + filter_bits / 64, 0);
        for ((src, dst), group) in groups {
            let h = hash_pair(src, dst);
            let fb = (h >> 32) as usize & (filter_bits - 1);
            filters[filter_first + fb / 64] |= 1 << (fb % 64);
            let mut i = (h as u32) & mask;
            while buckets[base + i as usize].n_rules != 0 {
                i = (i + 1) & mask;
            }
            min_index = min_index.min(group.first().map_or(u32::MAX, |r| r.index));
            buckets[base + i as usize] = AclBucket {
                src: split(src),
                dst: split(dst),
                first_rule: out_rules.len() as u32,
                n_rules: group.len() as u32,
            };
            out_rules.extend(group);
        }
        compiled.push(AclTuple {
            src_len,
            dst_len,
            _pad: [0; 2],
            min_index,
            mask,
            _pad2: 0,
            first_bucket: base as u64,
            src_mask: split(prefix_mask(u32::from(src_len), bits)),
            dst_mask: split(prefix_mask(u32::from(dst_len), bits)),
            filter_first: filter_first as u64,
            filter_mask: (filter_bits - 1) as u32,
            _pad3: 0,
        });
    }
    compiled.sort_by_key(|t| t.min_index);
    let r = AclRef {
        first_tuple: tuples.len() as u32,
        n_tuples: compiled.len() as u32,
    };
    tuples.extend(compiled);
    r
}

impl TableBuilder {
    /// Compiles the tables into a generation image with `keypair_capacity` keypair records
    /// (a power of two). The generation number is filled in at publication.
    ///
    /// # Errors
    /// [`BuildError`] for inconsistent input.
    pub fn build(&self, keypair_capacity: u32) -> Result<Vec<u8>, BuildError> {
        let mut tenants: Vec<Tenant> = Vec::with_capacity(self.tenants.len());
        let mut levels = Vec::new();
        let mut entries = Vec::new();
        let mut tuples = Vec::new();
        let mut buckets = Vec::new();
        let mut rules = Vec::new();
        let mut filters: Vec<u64> = Vec::new();
        let mut keypairs = vec![Keypair::default(); keypair_capacity as usize];
        let kmask = keypair_capacity - 1;

        // Routes per tenant: (len, key) -> value. Explicit routes first, then allowed IPs.
        let mut routes4: Vec<BTreeMap<(u8, u128), u32>> = vec![BTreeMap::new(); self.tenants.len()];
        let mut routes6: Vec<BTreeMap<(u8, u128), u32>> = vec![BTreeMap::new(); self.tenants.len()];
        let mut add_route = |t: usize, p: &Prefix, v: u32| -> Result<(), BuildError> {
            if u32::from(p.len) > p.bits() {
                return Err(BuildError::BadPrefix(p.len));
            }
            let map = if p.addr.is_ipv4() {
                &mut routes4[t]
            } else {
                &mut routes6[t]
            };
            map.insert((p.len, p.key()), v);
            Ok(())
        };
        for (ti, t) in self.tenants.iter().enumerate() {
            for (p, target) in &t.routes {
                let v = match target {
                    RouteTarget::Peer(s) => *s,
                    RouteTarget::Local => ROUTE_LOCAL | (t.local_iface & !ROUTE_LOCAL),
                };
                add_route(ti, p, v)?;
            }
        }
        let mut peers = Vec::with_capacity(self.peers.len());
        let mut peer_keys = Vec::with_capacity(self.peers.len());
        for (pi, p) in self.peers.iter().enumerate() {
            let pslot = pi as u32;
            if p.tenant as usize >= self.tenants.len() {
                return Err(BuildError::MissingTenant {
                    peer: pslot,
                    tenant: p.tenant,
                });
            }
            for a in &p.allowed_ips {
                add_route(p.tenant as usize, a, pslot)?;
            }
            let mut slot_of =
                |k: &Option<KeypairSpec>, extra_flags: u32| -> Result<u32, BuildError> {
                    let Some(k) = k else { return Ok(NONE) };
                    let s = k.receiver_index & kmask;
                    let e = &mut keypairs[s as usize];
                    if e.flags & FLAG_ACTIVE != 0 {
                        return Err(BuildError::KeypairCollision(k.receiver_index));
                    }
                    *e = Keypair {
                        receiver_index: k.receiver_index,
                        peer: pslot,
                        flags: FLAG_ACTIVE | extra_flags,
                        tenant: p.tenant,
                        install_id: k.install_id,
                        recv_key: k.recv_key,
                        remote_index: k.remote_index,
                        send_key: k.send_key,
                        ..Keypair::default()
                    };
                    Ok(s)
                };
            let current = slot_of(&p.current, 0)?;
            let previous = slot_of(&p.previous, 0)?;
            let next = slot_of(&p.next, FLAG_NEXT)?;
            let (family, addr, port) = match p.endpoint {
                None => (0, [0; 16], 0),
                Some(SocketAddr::V4(a)) => {
                    let mut b = [0; 16];
                    b[..4].copy_from_slice(&a.ip().octets());
                    (4, b, a.port())
                }
                Some(SocketAddr::V6(a)) => (6, a.ip().octets(), a.port()),
            };
            peers.push(Peer {
                id: p.id,
                tenant: p.tenant,
                flags: FLAG_ACTIVE,
                current,
                previous,
                next,
                endpoint_port: port,
                endpoint_family: family,
                _pad: 0,
                endpoint_addr: addr,
                reserved: [0; 16],
            });
            peer_keys.push(PeerKey {
                public_key: p.public_key,
            });
        }
        for (ti, t) in self.tenants.iter().enumerate() {
            let mut r4 = Vec::new();
            let mut r6 = Vec::new();
            for (i, r) in t.acl.iter().enumerate() {
                let bits = if r.v6 { 128 } else { 32 };
                if u32::from(r.src_len) > bits || u32::from(r.dst_len) > bits {
                    return Err(BuildError::BadPrefix(r.src_len.max(r.dst_len)));
                }
                if r.sport.0 > r.sport.1 {
                    return Err(BuildError::BadPortRange(r.sport.0, r.sport.1));
                }
                if r.dport.0 > r.dport.1 {
                    return Err(BuildError::BadPortRange(r.dport.0, r.dport.1));
                }
                if r.v6 {
                    r6.push((i as u32, r))
                } else {
                    r4.push((i as u32, r))
                }
            }
            tenants.push(Tenant {
                id: t.id,
                flags: FLAG_ACTIVE,
                default_action: u32::from(if t.default_permit {
                    ACTION_PERMIT
                } else {
                    ACTION_DENY
                }),
                local_iface: t.local_iface,
                _pad: 0,
                route4: build_lpm(&routes4[ti], 32, &mut levels, &mut entries),
                route6: build_lpm(&routes6[ti], 128, &mut levels, &mut entries),
                acl4: build_acl(&r4, 32, &mut tuples, &mut buckets, &mut rules, &mut filters),
                acl6: build_acl(
                    &r6,
                    128,
                    &mut tuples,
                    &mut buckets,
                    &mut rules,
                    &mut filters,
                ),
            });
        }

        let mut img = Image {
            buf: vec![0; core::mem::size_of::<GenHeader>()],
        };
        let mut h = GenHeader {
            magic: GEN_MAGIC,
            generation: 0,
            total_len: 0,
            keypair_capacity,
            _pad: 0,
            underlay: self.underlay,
            tenants: img.push(&tenants),
            peers: img.push(&peers),
            keypairs: img.push(&keypairs),
            lpm_levels: img.push(&levels),
            lpm_entries: img.push(&entries),
            acl_tuples: img.push(&tuples),
            acl_buckets: img.push(&buckets),
            acl_rules: img.push(&rules),
            esp_sas: img.push::<crate::layout::EspSa>(&[]),
            acl_filters: img.push(&filters),
            peer_keys: img.push(&peer_keys),
            reserved: [0; 28],
        };
        h.total_len = img.buf.len() as u64;
        img.buf[..core::mem::size_of::<GenHeader>()].copy_from_slice(h.as_bytes());
        Ok(img.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{FiveTuple, GenView};
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(a: u32, len: u8) -> Prefix {
        Prefix::new(IpAddr::V4(Ipv4Addr::from(a)), len)
    }

    fn one_tenant(routes: Vec<(Prefix, RouteTarget)>, acl: Vec<AclRuleSpec>) -> Vec<u8> {
        let b = TableBuilder {
            tenants: vec![TenantSpec {
                id: 7,
                routes,
                acl,
                ..Default::default()
            }],
            ..Default::default()
        };
        b.build(16).unwrap()
    }

    #[test]
    fn longest_prefix_wins_over_shorter_ones() {
        let img = one_tenant(
            vec![
                (v4(0x0a00_0000, 8), RouteTarget::Peer(1)),
                (v4(0x0a01_0000, 16), RouteTarget::Peer(2)),
                (v4(0x0a01_0200, 24), RouteTarget::Local),
            ],
            vec![],
        );
        let v = GenView::parse(&img, 16).unwrap();
        let t = v.tenants[0];
        assert_eq!(v.route(&t, 0x0a01_0203, false), Some(ROUTE_LOCAL));
        assert_eq!(v.route(&t, 0x0a01_0303, false), Some(2));
        assert_eq!(v.route(&t, 0x0a02_0303, false), Some(1));
        assert_eq!(v.route(&t, 0x0b00_0000, false), None);
        assert_eq!(v.route(&t, 0x0a01_0203, true), None);
    }

    #[test]
    fn an_established_rule_lets_tcp_replies_through_but_never_an_opening_syn() {
        let any = AclRuleSpec {
            v6: false,
            src: 0,
            src_len: 0,
            dst: 0,
            dst_len: 0,
            proto: None,
            sport: (0, u16::MAX),
            dport: (0, u16::MAX),
            permit: true,
            established: true,
        };
        let deny = AclRuleSpec {
            permit: false,
            established: false,
            ..any
        };
        let img = one_tenant(vec![], vec![any, deny]);
        let v = GenView::parse(&img, 16).unwrap();
        let t = v.tenants[0];
        let pkt = |proto, tcp_flags| FiveTuple {
            src: 0x0a00_0001,
            dst: 0x0a00_0002,
            proto,
            sport: 22,
            dport: 40000,
            tcp_flags,
        };
        let action = |p: FiveTuple| v.acl_classify(&t, &p, false).map(|(_, a)| a);
        assert_eq!(action(pkt(6, 0x02)), Some(ACTION_DENY), "SYN");
        assert_eq!(action(pkt(6, 0x12)), Some(ACTION_PERMIT), "SYN+ACK");
        assert_eq!(action(pkt(6, 0x10)), Some(ACTION_PERMIT), "ACK");
        assert_eq!(action(pkt(6, 0x04)), Some(ACTION_PERMIT), "RST");
        assert_eq!(action(pkt(6, 0x01)), Some(ACTION_DENY), "bare FIN");
        assert_eq!(action(pkt(17, 0)), Some(ACTION_PERMIT), "UDP is unaffected");
    }

    #[test]
    fn colliding_receiver_indices_are_rejected() {
        let kp = |r| KeypairSpec {
            receiver_index: r,
            remote_index: 1,
            send_key: [0; 32],
            recv_key: [0; 32],
            install_id: 1,
        };
        let b = TableBuilder {
            tenants: vec![TenantSpec::default()],
            peers: vec![
                PeerSpec {
                    current: Some(kp(0x11)),
                    ..Default::default()
                },
                PeerSpec {
                    current: Some(kp(0x21)),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(b.build(16), Err(BuildError::KeypairCollision(0x21)));
    }

    #[test]
    fn a_corrupt_probe_mask_cannot_hang_a_lookup() {
        use zerocopy::FromBytes;
        let mut img = one_tenant(vec![(v4(0x0a00_0000, 8), RouteTarget::Peer(1))], vec![]);
        let h = *GenHeader::ref_from_prefix(&img).unwrap().0;
        // A mask that is not 2^k - 1 makes linear probing cycle among a few buckets.
        let off = h.lpm_levels.offset as usize + core::mem::offset_of!(LpmLevel, mask);
        img[off..off + 4].copy_from_slice(&0x8000_0001u32.to_le_bytes());
        let off = h.lpm_entries.offset as usize;
        for e in 0..h.lpm_entries.count as usize {
            let used =
                off + e * core::mem::size_of::<LpmEntry>() + core::mem::offset_of!(LpmEntry, used);
            img[used] = 1; // every bucket occupied, none matching the probe
        }
        let v = GenView::parse(&img, 16).unwrap();
        assert_eq!(v.route(&v.tenants[0], 0x0b00_0000, false), None);
    }

    fn naive_lpm(routes: &[(u128, u8, u32)], addr: u128, bits: u32) -> Option<u32> {
        // Later duplicates overwrite earlier ones, as in the builder's map.
        let mut best: Option<(u8, u32)> = None;
        for &(a, len, v) in routes {
            let m = prefix_mask(u32::from(len), bits);
            if addr & m == a & m && best.is_none_or(|(bl, _)| len >= bl) {
                best = Some((len, v));
            }
        }
        best.map(|(_, v)| v)
    }

    fn arb_v4_routes() -> impl Strategy<Value = Vec<(u128, u8, u32)>> {
        // Small address space so that prefixes overlap and probes hit.
        prop::collection::vec((0u32..64, 0u8..=32, 0u32..1000), 0..60).prop_map(|v| {
            v.into_iter()
                .map(|(a, l, val)| (u128::from(a.rotate_right(6)), l, val))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn lpm_agrees_with_a_naive_scan(routes in arb_v4_routes(), probes in prop::collection::vec(0u32..64, 1..40)) {
            let specs: Vec<(Prefix, RouteTarget)> = routes
                .iter()
                .map(|&(a, l, v)| (v4(a as u32, l), RouteTarget::Peer(v)))
                .collect();
            let img = one_tenant(specs, vec![]);
            let view = GenView::parse(&img, 16).unwrap();
            let t = view.tenants[0];
            for p in probes {
                let addr = u128::from(p.rotate_right(6));
                prop_assert_eq!(view.route(&t, addr, false), naive_lpm(&routes, addr, 32));
            }
        }

        #[test]
        fn lpm_v6_agrees_with_a_naive_scan(
            routes in prop::collection::vec((0u8..16, 0u8..=128, 0u32..1000), 0..40),
            probes in prop::collection::vec(0u8..16, 1..30),
        ) {
            let addr_of = |x: u8| u128::from(x).rotate_right(4) | 0x2001_0db8 << 96;
            let r: Vec<(u128, u8, u32)> = routes.iter().map(|&(a, l, v)| (addr_of(a), l, v)).collect();
            let specs = r
                .iter()
                .map(|&(a, l, v)| (Prefix::new(IpAddr::V6(Ipv6Addr::from(a)), l), RouteTarget::Peer(v)))
                .collect();
            let img = one_tenant(specs, vec![]);
            let view = GenView::parse(&img, 16).unwrap();
            let t = view.tenants[0];
            for p in probes {
                prop_assert_eq!(view.route(&t, addr_of(p), true), naive_lpm(&r, addr_of(p), 128));
            }
        }

        #[test]
        fn compiled_acl_agrees_with_a_linear_scan(
            rules in prop::collection::vec(arb_rule(), 0..80),
            packets in prop::collection::vec(arb_packet(), 1..60),
            default_permit: bool,
        ) {
            let b = TableBuilder {
                tenants: vec![TenantSpec { id: 1, default_permit, acl: rules.clone(), ..Default::default() }],
                ..Default::default()
            };
            let img = b.build(16).unwrap();
            let view = GenView::parse(&img, 16).unwrap();
            let t = view.tenants[0];
            for &(pkt, v6) in &packets {
                let linear = rules
                    .iter()
                    .enumerate()
                    .find(|(_, r)| r.matches(&pkt, v6))
                    .map(|(i, r)| (i as u32, if r.permit { ACTION_PERMIT } else { ACTION_DENY }));
                prop_assert_eq!(view.acl_classify(&t, &pkt, v6), linear);
            }
            // The batch form (what the fast path runs) against the same linear scan.
            for family in [false, true] {
                let batch: Vec<FiveTuple> =
                    packets.iter().filter(|(_, v6)| *v6 == family).map(|(p, _)| *p).collect();
                let mut out = vec![Some((u32::MAX, 9)); batch.len()];
                view.acl_classify_many(&t, family, &batch, &mut out);
                for (pkt, got) in batch.iter().zip(&out) {
                    let linear = rules
                        .iter()
                        .enumerate()
                        .find(|(_, r)| r.matches(pkt, family))
                        .map(|(i, r)| (i as u32, if r.permit { ACTION_PERMIT } else { ACTION_DENY }));
                    prop_assert_eq!(*got, linear);
                }
            }
        }
    }

    fn small_addr(v6: bool) -> impl Strategy<Value = u128> {
        (0u32..16).prop_map(move |x| {
            if v6 {
                (u128::from(x) << 120) | 0xfd00
            } else {
                u128::from(x) << 28 | 5
            }
        })
    }

    fn arb_ports() -> impl Strategy<Value = (u16, u16)> {
        prop_oneof![
            Just((0, u16::MAX)),
            (0u16..8).prop_map(|p| (p, p)),
            (0u16..8, 0u16..8).prop_map(|(a, b)| (a.min(b), a.max(b))),
        ]
    }

    fn arb_rule() -> impl Strategy<Value = AclRuleSpec> {
        any::<bool>().prop_flat_map(|v6| {
            let bits = if v6 { 128u8 } else { 32 };
            (
                small_addr(v6),
                prop_oneof![Just(0u8), Just(1), Just(2), Just(4), Just(bits)],
                small_addr(v6),
                prop_oneof![Just(0u8), Just(1), Just(3), Just(4), Just(bits)],
                prop::option::of(prop_oneof![Just(6u8), Just(17)]),
                arb_ports(),
                arb_ports(),
                (any::<bool>(), any::<bool>()),
            )
                .prop_map(
                    move |(
                        src,
                        src_len,
                        dst,
                        dst_len,
                        proto,
                        sport,
                        dport,
                        (permit, established),
                    )| AclRuleSpec {
                        v6,
                        src,
                        src_len,
                        dst,
                        dst_len,
                        proto,
                        sport,
                        dport,
                        permit,
                        established,
                    },
                )
        })
    }

    fn arb_packet() -> impl Strategy<Value = (FiveTuple, bool)> {
        any::<bool>().prop_flat_map(|v6| {
            (
                small_addr(v6),
                small_addr(v6),
                prop_oneof![Just(6u8), Just(17), Just(1)],
                0u16..9,
                0u16..9,
                prop_oneof![Just(0u8), Just(0x02), Just(0x12), Just(0x10), Just(0x04)],
            )
                .prop_map(move |(src, dst, proto, sport, dport, tcp_flags)| {
                    (
                        FiveTuple {
                            src,
                            dst,
                            proto,
                            sport,
                            dport,
                            tcp_flags: if proto == 6 { tcp_flags } else { 0 },
                        },
                        v6,
                    )
                })
        })
    }
}
