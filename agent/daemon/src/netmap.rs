//! The network map as the control plane streams it, and what the data plane is told.
//!
//! A pure core: [`MapState::apply`] folds one Sync update (a snapshot, or a delta on top of
//! the last version) into the state and says what changed; [`MapState::peer_configs`],
//! [`MapState::filter`] and [`MapState::addresses`] translate it for the data plane. No I/O,
//! no clock, no logging.
//!
//! Conversion is forgiving where forgiving is safe and strict where it is not: an unusable
//! allowed IP or endpoint is skipped (less reachability, never more); a peer with a bad key is
//! left out; an unreadable prefix or protocol in a *deny* rule widens the rule to everything
//! (fail closed), in an *allow* rule it narrows it to nothing.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cvlan_policy::{Action, Filter, FilterRule, PortRange, Proto};
use cvlan_proto::v1 as pb;
use cvlan_proto::v1::sync_response::Update;
use ipnet::IpNet;

use crate::tunnel::PeerConfig;

/// Why an update was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// A delta arrived before any snapshot: the agent must resync from version 0.
    #[error("map delta {got} arrived before any snapshot")]
    NoSnapshot {
        /// The delta's version.
        got: u64,
    },
    /// A delta not newer than what is applied (a duplicate); ignored.
    #[error("stale map delta {got} (applied: {have})")]
    Stale {
        /// The delta's version.
        got: u64,
        /// The applied version.
        have: u64,
    },
    /// A SyncResponse with neither a snapshot nor a delta.
    #[error("empty sync response")]
    Empty,
}

/// What an update changed, so the shell only pushes what it must.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The data plane's peer set.
    pub peers: bool,
    /// The inbound filter.
    pub filter: bool,
    /// This node's CVLAN addresses (the TUN must be reconfigured).
    pub addresses: bool,
    /// DNS settings.
    pub dns: bool,
}

impl Changes {
    /// Whether anything changed.
    pub fn any(self) -> bool {
        self.peers || self.filter || self.addresses || self.dns
    }
}

/// The applied network map.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MapState {
    version: u64,
    has_snapshot: bool,
    self_node: Option<pb::Node>,
    /// Keyed by node id (or `key:<public key>` for a peer without one).
    peers: BTreeMap<String, pb::Peer>,
    filter: pb::PacketFilter,
    dns: Option<pb::DnsConfig>,
    ipv4_prefix: String,
    ipv6_prefix: String,
}

fn peer_key(p: &pb::Peer) -> String {
    if p.node_id.is_empty() {
        format!("key:{}", p.wg_public_key)
    } else {
        p.node_id.clone()
    }
}

impl MapState {
    /// A state restored from a cached snapshot (see [`MapState::to_snapshot`]).
    pub fn from_snapshot(m: pb::NetworkMap) -> Self {
        let mut s = MapState::default();
        s.replace(m);
        s
    }

    /// The applied version (0 before the first snapshot).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether a snapshot has been applied.
    pub fn has_snapshot(&self) -> bool {
        self.has_snapshot
    }

    /// This node as the control plane last described it.
    pub fn self_node(&self) -> Option<&pb::Node> {
        self.self_node.as_ref()
    }

    /// The peers as received.
    pub fn peers(&self) -> impl Iterator<Item = &pb::Peer> {
        self.peers.values()
    }

    /// DNS settings, if any were sent.
    pub fn dns(&self) -> Option<&pb::DnsConfig> {
        self.dns.as_ref()
    }

    fn replace(&mut self, m: pb::NetworkMap) {
        self.version = m.version;
        self.has_snapshot = true;
        self.self_node = m.self_;
        self.peers = m.peers.into_iter().map(|p| (peer_key(&p), p)).collect();
        self.filter = m.filter.unwrap_or_default();
        self.dns = m.dns;
        self.ipv4_prefix = m.cvlan_ipv4_prefix;
        self.ipv6_prefix = m.cvlan_ipv6_prefix;
    }

    /// Folds one Sync update into the state. Deltas remove `peers_removed` first, then upsert
    /// `peers_upserted`; `filter`, `dns` and `self` replace the old value when present.
    ///
    /// # Errors
    /// [`MapError`]; the state is unchanged then.
    pub fn apply(&mut self, update: Option<Update>) -> Result<Changes, MapError> {
        let before = (
            self.peer_configs(),
            self.filter(),
            self.addresses(),
            self.dns.clone(),
        );
        match update {
            None => return Err(MapError::Empty),
            Some(Update::Snapshot(m)) => self.replace(m),
            Some(Update::Delta(d)) => {
                if !self.has_snapshot {
                    return Err(MapError::NoSnapshot { got: d.version });
                }
                if d.version <= self.version {
                    return Err(MapError::Stale {
                        got: d.version,
                        have: self.version,
                    });
                }
                self.version = d.version;
                for id in &d.peers_removed {
                    if self.peers.remove(id).is_none() {
                        self.peers.remove(&format!("key:{id}"));
                    }
                }
                for p in d.peers_upserted {
                    self.peers.insert(peer_key(&p), p);
                }
                if let Some(f) = d.filter {
                    self.filter = f;
                }
                if let Some(dns) = d.dns {
                    self.dns = Some(dns);
                }
                if let Some(n) = d.self_ {
                    self.self_node = Some(n);
                }
            }
        }
        Ok(Changes {
            peers: before.0 != self.peer_configs(),
            filter: before.1 != self.filter(),
            addresses: before.2 != self.addresses(),
            dns: before.3 != self.dns,
        })
    }

    /// The data plane's peer set: one entry per distinct public key, sorted by node id.
    pub fn peer_configs(&self) -> Vec<PeerConfig> {
        let mut seen = HashSet::new();
        self.peers
            .values()
            .filter_map(peer_config)
            .filter(|p| seen.insert(p.public_key))
            .collect()
    }

    /// The inbound filter (empty — deny everything — until the control plane sends one).
    pub fn filter(&self) -> Filter {
        filter(&self.filter)
    }

    /// This node's CVLAN addresses with the CVLAN's prefix lengths (a /32 or /128 when the
    /// prefix is unknown, which still lets the node send to peers through their routes).
    pub fn addresses(&self) -> Vec<IpNet> {
        let Some(n) = &self.self_node else {
            return Vec::new();
        };
        [(&n.ipv4, &self.ipv4_prefix), (&n.ipv6, &self.ipv6_prefix)]
            .into_iter()
            .filter_map(|(addr, prefix)| with_prefix(addr, prefix))
            .collect()
    }

    /// The state as a snapshot (what the agent caches to disk).
    pub fn to_snapshot(&self) -> pb::NetworkMap {
        pb::NetworkMap {
            version: self.version,
            self_: self.self_node.clone(),
            peers: self.peers.values().cloned().collect(),
            filter: Some(self.filter.clone()),
            dns: self.dns.clone(),
            cvlan_ipv4_prefix: self.ipv4_prefix.clone(),
            cvlan_ipv6_prefix: self.ipv6_prefix.clone(),
        }
    }
}

/// An address string (plain or with a length) placed in the CVLAN prefix's length.
fn with_prefix(addr: &str, prefix: &str) -> Option<IpNet> {
    let addr = addr.trim();
    if addr.is_empty() {
        return None;
    }
    let ip: IpAddr = match addr.parse::<IpNet>() {
        Ok(n) => n.addr(),
        Err(_) => addr.parse().ok()?,
    };
    let len = prefix
        .parse::<IpNet>()
        .ok()
        .filter(|p| p.contains(&ip))
        .map_or(if ip.is_ipv4() { 32 } else { 128 }, |p| p.prefix_len());
    IpNet::new(ip, len).ok()
}

/// Parses a CIDR, or a plain address as a host prefix.
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// One proto peer as the data plane's peer, `None` when its key is unusable. The first
/// endpoint that parses as a usable `ip:port` is taken, in the control plane's order.
pub fn peer_config(p: &pb::Peer) -> Option<PeerConfig> {
    let key: [u8; 32] = B64.decode(p.wg_public_key.trim()).ok()?.try_into().ok()?;
    let endpoint = p.endpoints.iter().find_map(|e| {
        let a: SocketAddr = e.address.trim().parse().ok()?;
        (!a.ip().is_unspecified() && a.port() != 0).then_some(a)
    });
    Some(PeerConfig {
        public_key: key,
        name: if p.name.is_empty() {
            p.node_id.clone()
        } else {
            p.name.clone()
        },
        endpoint,
        allowed_ips: p.allowed_ips.iter().filter_map(|s| parse_net(s)).collect(),
        persistent_keepalive: match p.persistent_keepalive_seconds {
            0 => None,
            s => Some(u16::try_from(s).unwrap_or(u16::MAX)),
        },
    })
}

/// The proto packet filter as the policy crate's filter.
pub fn filter(f: &pb::PacketFilter) -> Filter {
    Filter {
        rules: f.rules.iter().map(filter_rule).collect(),
    }
}

fn everything() -> Vec<IpNet> {
    vec![
        IpNet::V4(ipnet::Ipv4Net::default()),
        IpNet::V6(ipnet::Ipv6Net::default()),
    ]
}

/// One proto filter rule as the policy crate's rule (see the module docs for how unreadable
/// parts are handled).
pub fn filter_rule(r: &pb::FilterRule) -> FilterRule {
    let deny = r.action != pb::Action::Allow as i32;
    let nets = |v: &[String]| -> Vec<IpNet> {
        let mut out = Vec::with_capacity(v.len());
        let mut bad = false;
        for s in v {
            match parse_net(s) {
                Some(n) => out.push(n),
                None => bad = true,
            }
        }
        if bad && deny { everything() } else { out }
    };
    let proto = match r.protocol {
        0 => Some(Proto::Any),
        n => u8::try_from(n).ok().and_then(Proto::from_number),
    };
    let (proto, sources) = match proto {
        Some(p) => (p, nets(&r.source_cidrs)),
        None if deny => (Proto::Any, nets(&r.source_cidrs)),
        // An allow rule for a protocol this agent cannot express matches nothing.
        None => (Proto::Any, Vec::new()),
    };
    let ports = r
        .ports
        .iter()
        .map(|p| PortRange {
            first: u16::try_from(p.first).unwrap_or(u16::MAX),
            last: u16::try_from(p.last).unwrap_or(u16::MAX),
        })
        .collect();
    FilterRule {
        sources,
        destinations: nets(&r.destination_cidrs),
        proto,
        ports,
        action: if deny { Action::Deny } else { Action::Allow },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cvlan_policy::Packet;
    use proptest::prelude::*;

    fn key(n: u8) -> String {
        B64.encode([n; 32])
    }

    fn peer(id: &str, n: u8, ip: &str, ep: &str) -> pb::Peer {
        pb::Peer {
            node_id: id.into(),
            name: format!("name-{id}"),
            wg_public_key: key(n),
            allowed_ips: vec![format!("{ip}/32")],
            endpoints: if ep.is_empty() {
                vec![]
            } else {
                vec![pb::Endpoint {
                    address: ep.into(),
                    kind: "local".into(),
                }]
            },
            ..Default::default()
        }
    }

    fn allow(src: &str, proto: pb::Protocol, port: Option<u32>) -> pb::FilterRule {
        pb::FilterRule {
            source_cidrs: vec![src.into()],
            destination_cidrs: vec!["10.20.0.2/32".into()],
            protocol: proto as i32,
            ports: port
                .map(|p| vec![pb::PortRange { first: p, last: p }])
                .unwrap_or_default(),
            action: pb::Action::Allow as i32,
        }
    }

    fn snapshot(version: u64, peers: Vec<pb::Peer>, rules: Vec<pb::FilterRule>) -> Option<Update> {
        Some(Update::Snapshot(pb::NetworkMap {
            version,
            self_: Some(pb::Node {
                id: "self".into(),
                ipv4: "10.20.0.2".into(),
                ipv6: "fd20::2".into(),
                ..Default::default()
            }),
            peers,
            filter: Some(pb::PacketFilter { rules }),
            dns: None,
            cvlan_ipv4_prefix: "10.20.0.0/24".into(),
            cvlan_ipv6_prefix: "fd20::/64".into(),
        }))
    }

    fn delta(version: u64, up: Vec<pb::Peer>, removed: &[&str]) -> Option<Update> {
        Some(Update::Delta(pb::MapDelta {
            version,
            peers_upserted: up,
            peers_removed: removed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }))
    }

    fn names(s: &MapState) -> Vec<String> {
        s.peer_configs().into_iter().map(|p| p.name).collect()
    }

    fn pkt(src: &str, proto: u8, port: u16) -> Packet {
        Packet {
            src: src.parse().expect("ip"),
            dst: "10.20.0.2".parse().expect("ip"),
            proto,
            dst_port: port,
        }
    }

    #[test]
    fn a_snapshot_then_deltas_give_the_expected_peers_filter_and_addresses() {
        let mut s = MapState::default();
        let c = s
            .apply(snapshot(
                5,
                vec![
                    peer("a", 1, "10.20.0.3", "192.0.2.1:51820"),
                    peer("b", 2, "10.20.0.4", ""),
                ],
                vec![allow("10.20.0.3/32", pb::Protocol::Icmp, None)],
            ))
            .expect("snapshot");
        assert!(c.peers && c.filter && c.addresses);
        assert_eq!(names(&s), vec!["name-a", "name-b"]);
        assert_eq!(
            s.addresses(),
            vec![
                "10.20.0.2/24".parse::<IpNet>().expect("net"),
                "fd20::2/64".parse().expect("net")
            ]
        );
        let a = &s.peer_configs()[0];
        assert_eq!(a.public_key, [1; 32]);
        assert_eq!(a.endpoint, Some("192.0.2.1:51820".parse().expect("ep")));
        assert_eq!(
            a.allowed_ips,
            vec!["10.20.0.3/32".parse::<IpNet>().expect("net")]
        );
        assert_eq!(s.peer_configs()[1].endpoint, None);

        // b leaves, c joins, a moves: one delta.
        let c = s
            .apply(delta(
                6,
                vec![
                    peer("a", 1, "10.20.0.3", "192.0.2.9:4000"),
                    peer("c", 3, "10.20.0.5", ""),
                ],
                &["b"],
            ))
            .expect("delta");
        assert!(c.peers && !c.filter && !c.addresses);
        assert_eq!(names(&s), vec!["name-a", "name-c"]);
        assert_eq!(
            s.peer_configs()[0].endpoint,
            Some("192.0.2.9:4000".parse().expect("ep"))
        );
        assert_eq!(s.version(), 6);

        // A filter-only delta.
        let c = s
            .apply(Some(Update::Delta(pb::MapDelta {
                version: 9,
                filter: Some(pb::PacketFilter {
                    rules: vec![allow("10.20.0.5/32", pb::Protocol::Tcp, Some(22))],
                }),
                ..Default::default()
            })))
            .expect("filter delta");
        assert_eq!(
            c,
            Changes {
                filter: true,
                ..Default::default()
            }
        );
        let f = s.filter();
        assert_eq!(f.evaluate(&pkt("10.20.0.5", 6, 22)), Action::Allow);
        assert_eq!(f.evaluate(&pkt("10.20.0.5", 6, 23)), Action::Deny);
        assert_eq!(f.evaluate(&pkt("10.20.0.3", 1, 0)), Action::Deny);

        // Readdressing this node.
        let c = s
            .apply(Some(Update::Delta(pb::MapDelta {
                version: 10,
                self_: Some(pb::Node {
                    id: "self".into(),
                    ipv4: "10.20.0.77".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })))
            .expect("self delta");
        assert!(c.addresses && !c.peers);
        assert_eq!(
            s.addresses(),
            vec!["10.20.0.77/24".parse::<IpNet>().expect("net")]
        );
    }

    #[test]
    fn a_delta_before_any_snapshot_asks_for_a_resync_and_changes_nothing() {
        let mut s = MapState::default();
        assert_eq!(
            s.apply(delta(3, vec![peer("a", 1, "10.20.0.3", "")], &[])),
            Err(MapError::NoSnapshot { got: 3 })
        );
        assert_eq!(s, MapState::default());
        assert_eq!(s.apply(None), Err(MapError::Empty));
    }

    #[test]
    fn duplicate_or_older_deltas_are_ignored() {
        let mut s = MapState::default();
        s.apply(snapshot(5, vec![peer("a", 1, "10.20.0.3", "")], vec![]))
            .expect("snapshot");
        let before = s.clone();
        assert_eq!(
            s.apply(delta(5, vec![], &["a"])),
            Err(MapError::Stale { got: 5, have: 5 })
        );
        assert_eq!(s, before);
    }

    #[test]
    fn a_new_snapshot_replaces_everything_even_at_a_lower_version() {
        let mut s = MapState::default();
        s.apply(snapshot(50, vec![peer("a", 1, "10.20.0.3", "")], vec![]))
            .expect("first");
        s.apply(snapshot(2, vec![peer("z", 9, "10.20.0.9", "")], vec![]))
            .expect("second");
        assert_eq!(names(&s), vec!["name-z"]);
        assert_eq!(s.version(), 2);
    }

    #[test]
    fn peers_with_bad_keys_are_left_out_and_bad_addresses_skipped() {
        let mut bad = peer("x", 1, "10.20.0.3", "");
        bad.wg_public_key = "not base64!".into();
        let mut short = peer("y", 1, "10.20.0.3", "");
        short.wg_public_key = B64.encode([1u8; 16]);
        let mut messy = peer("z", 3, "10.20.0.5", "nonsense");
        messy.allowed_ips.push("garbage".into());
        messy.allowed_ips.push("192.168.7.0/24".into());
        messy.endpoints.push(pb::Endpoint {
            address: "0.0.0.0:1".into(),
            kind: String::new(),
        });
        messy.endpoints.push(pb::Endpoint {
            address: "[2001:db8::1]:51820".into(),
            kind: String::new(),
        });
        messy.persistent_keepalive_seconds = 25;
        let s = MapState::from_snapshot(match snapshot(1, vec![bad, short, messy], vec![]) {
            Some(Update::Snapshot(m)) => m,
            _ => unreachable!(),
        });
        let p = s.peer_configs();
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].allowed_ips,
            vec![
                "10.20.0.5/32".parse::<IpNet>().expect("net"),
                "192.168.7.0/24".parse().expect("net")
            ]
        );
        assert_eq!(
            p[0].endpoint,
            Some("[2001:db8::1]:51820".parse().expect("ep"))
        );
        assert_eq!(p[0].persistent_keepalive, Some(25));
    }

    #[test]
    fn two_peers_with_the_same_key_give_one_data_plane_peer() {
        let s = MapState::from_snapshot(pb::NetworkMap {
            peers: vec![peer("a", 1, "10.20.0.3", ""), peer("b", 1, "10.20.0.4", "")],
            ..Default::default()
        });
        assert_eq!(names(&s), vec!["name-a"]);
    }

    #[test]
    fn no_filter_means_deny_everything() {
        let s = MapState::default();
        assert_eq!(s.filter().evaluate(&pkt("10.20.0.3", 1, 0)), Action::Deny);
    }

    #[test]
    fn unreadable_parts_widen_deny_rules_and_void_allow_rules() {
        let deny = pb::FilterRule {
            source_cidrs: vec!["10.20.0.3/32".into(), "bogus".into()],
            destination_cidrs: vec!["10.20.0.2/32".into()],
            protocol: 0,
            ports: vec![],
            action: pb::Action::Deny as i32,
        };
        let r = filter_rule(&deny);
        assert_eq!(r.action, Action::Deny);
        assert!(r.sources.iter().any(|n| n.prefix_len() == 0));

        let mut gre = allow("10.20.0.3/32", pb::Protocol::Any, None);
        gre.protocol = 47;
        let r = filter_rule(&gre);
        assert!(
            r.sources.is_empty(),
            "an inexpressible allow matches nothing"
        );

        let mut bad_allow = allow("bogus", pb::Protocol::Tcp, Some(80));
        bad_allow.source_cidrs.push("10.20.0.4".into());
        let r = filter_rule(&bad_allow);
        assert_eq!(
            r.sources,
            vec!["10.20.0.4/32".parse::<IpNet>().expect("net")]
        );
        assert_eq!(r.proto, Proto::Tcp);
        assert_eq!(r.ports, vec![PortRange::single(80)]);

        // An unspecified action is a deny.
        let mut unspecified = allow("10.20.0.3/32", pb::Protocol::Any, None);
        unspecified.action = 0;
        assert_eq!(filter_rule(&unspecified).action, Action::Deny);
    }

    #[test]
    fn the_cached_snapshot_restores_the_same_state() {
        let mut s = MapState::default();
        s.apply(snapshot(
            3,
            vec![peer("a", 1, "10.20.0.3", "192.0.2.1:1")],
            vec![allow("10.20.0.3/32", pb::Protocol::Icmp, None)],
        ))
        .expect("snapshot");
        s.apply(delta(4, vec![peer("b", 2, "10.20.0.4", "")], &[]))
            .expect("delta");
        let back = MapState::from_snapshot(s.to_snapshot());
        assert_eq!(back.version(), 4);
        assert_eq!(back.peer_configs(), s.peer_configs());
        assert_eq!(back.filter(), s.filter());
        assert_eq!(back.addresses(), s.addresses());
    }

    /// A random op on the peer set: upsert (id, key byte, last address octet) or remove id.
    #[derive(Clone, Debug)]
    enum Op {
        Upsert(u8, u8, u8),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..8, 1u8..255, 1u8..255).prop_map(|(i, k, a)| Op::Upsert(i, k, a)),
            (0u8..8).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Deltas on top of a snapshot end where a snapshot of the final set starts.
        #[test]
        fn deltas_agree_with_a_snapshot_of_the_final_peer_set(
            batches in proptest::collection::vec(proptest::collection::vec(op(), 0..6), 0..12)
        ) {
            let mut s = MapState::default();
            s.apply(snapshot(1, vec![], vec![])).expect("snapshot");
            let mut model: BTreeMap<u8, (u8, u8)> = BTreeMap::new();
            for (i, batch) in batches.iter().enumerate() {
                let mut up = BTreeMap::new();
                let mut removed = Vec::new();
                for op in batch {
                    match *op {
                        Op::Upsert(id, k, a) => {
                            removed.retain(|r: &String| r != &id.to_string());
                            up.insert(id, (k, a));
                        }
                        Op::Remove(id) => {
                            up.remove(&id);
                            removed.push(id.to_string());
                        }
                    }
                }
                for r in &removed {
                    model.remove(&r.parse::<u8>().expect("id"));
                }
                for (id, v) in &up {
                    model.insert(*id, *v);
                }
                let peers = up
                    .iter()
                    .map(|(id, (k, a))| peer(&id.to_string(), *k, &format!("10.20.0.{a}"), ""))
                    .collect();
                let removed: Vec<&str> = removed.iter().map(String::as_str).collect();
                s.apply(delta(2 + i as u64, peers, &removed)).expect("delta");
            }
            let fresh = MapState::from_snapshot(pb::NetworkMap {
                version: 999,
                peers: model
                    .iter()
                    .map(|(id, (k, a))| peer(&id.to_string(), *k, &format!("10.20.0.{a}"), ""))
                    .collect(),
                ..Default::default()
            });
            prop_assert_eq!(s.peer_configs(), fresh.peer_configs());
        }
    }
}
