//! Gateway tables: what a vrouter publishes into its data plane (tenants, peers, ACLs, routes),
//! computed from the same per-tenant worlds as the nodes' network maps. Plain functions; the
//! hub (`netmap`) decides when to call them and sends the result.
//!
//! ACLs are the nodes' own inbound filters, moved to the gateway: for every served node N and
//! every rule of N's compiled filter, an entry narrowed to N's addresses. Entries of different
//! nodes have disjoint destinations, so concatenating them keeps every node's first-match
//! order. The gateway holds no connection state, so each allow rule also gets a reflected entry
//! (sources and destinations swapped, the rule's ports as source ports) that lets the replies
//! back; those go first. A reflected entry is marked `established`: a TCP segment matches it
//! only with ACK or RST set, so a reply path never opens a connection (a deny rule still stops
//! the SYN). UDP and ICMP have no such mark: a reflected entry of an allow rule lets the
//! destination send the matching UDP/ICMP back unasked. The agents still track state and drop
//! what was never asked for.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use cvlan_policy as policy;
use cvlan_proto::v1 as pb;
use ipnet::IpNet;

use crate::netmap::{World, filter_to_pb, groups_of, node_info, rules_of};

/// Keepalive nodes use towards their gateway: keeps NAT bindings open for the hub's packets.
pub const GATEWAY_KEEPALIVE_SECS: u32 = 25;

/// Whether vrouter `v` serves CVLAN `cvlan` of `tenant` (an assignment without a CVLAN serves
/// every CVLAN of its tenant).
pub fn serves(v: &pb::Vrouter, tenant: &str, cvlan: &str) -> bool {
    v.assignments
        .iter()
        .any(|a| a.tenant_id == tenant && (a.cvlan_id.is_empty() || a.cvlan_id == cvlan))
}

/// Tenant ids a vrouter has assignments in.
pub fn tenants_of(v: &pb::Vrouter) -> BTreeSet<String> {
    v.assignments.iter().map(|a| a.tenant_id.clone()).collect()
}

/// The gateway a node of `cvlan` goes through: only in hub-and-spoke CVLANs, the enrolled
/// (key and endpoint known) vrouter with the lowest id among those serving it.
pub fn gateway_of<'a>(w: &'a World, cvlan: &str) -> Option<&'a pb::Vrouter> {
    let cv = w.cvlans.get(cvlan)?;
    if cv.mode != pb::CvlanMode::HubAndSpoke as i32 {
        return None;
    }
    w.vrouters
        .iter()
        .filter(|v| !v.wg_public_key.is_empty() && !v.endpoint.is_empty())
        .filter(|v| serves(v, &cv.tenant_id, cvlan))
        .min_by(|a, b| a.id.cmp(&b.id))
}

/// The single peer a node of a hub-and-spoke CVLAN gets: the gateway, carrying the whole CVLAN.
pub fn peer_of_vrouter(v: &pb::Vrouter, cv: &pb::Cvlan) -> pb::Peer {
    pb::Peer {
        node_id: v.id.clone(),
        name: v.name.clone(),
        wg_public_key: v.wg_public_key.clone(),
        allowed_ips: [&cv.ipv4_prefix, &cv.ipv6_prefix]
            .into_iter()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect(),
        endpoints: vec![pb::Endpoint {
            address: v.endpoint.clone(),
            kind: "gateway".into(),
        }],
        persistent_keepalive_seconds: GATEWAY_KEEPALIVE_SECS,
        gateway: true,
        external: false,
    }
}

fn host(a: IpAddr) -> IpNet {
    IpNet::from(a)
}

/// One tenant's gateway ACL over the given CVLANs: every reflected entry, then every forward
/// entry; default deny (carried by the tenant entry).
///
/// Per node the filters would repeat each rule's sources once per destination node (O(nodes²)
/// prefixes for a group-to-group rule), so entries that differ only in their destination node
/// are merged into one whose destinations are the union: a packet to node N can only match
/// entries naming N's addresses, so this is exact as long as the merged order keeps every
/// node's own order — a topological order of the nodes' sequences. Should the sequences
/// disagree (no such order), the per-node form is kept.
pub fn tenant_acls(w: &World, tenant: &str, cvlans: &[&str], now: i64) -> Vec<pb::AclEntry> {
    let (mut out, forward) = acl_parts(tenant, &node_filters(w, cvlans, now));
    out.extend(forward);
    out
}

/// Each served node's inbound filter, narrowed to its addresses, nodes by id.
fn node_filters(w: &World, cvlans: &[&str], now: i64) -> Vec<Vec<policy::FilterRule>> {
    let groups = groups_of(w);
    let rules = rules_of(w);
    let mut per_node: Vec<Vec<policy::FilterRule>> = Vec::new();
    for cv in cvlans {
        let mut live = w.visible(cv, now);
        live.sort_by(|a, b| a.id.cmp(&b.id));
        let nodes: Vec<policy::NodeInfo> = live.iter().map(|n| node_info(n)).collect();
        let c = policy::Compiler::new(&nodes, &groups, &rules);
        for n in &nodes {
            let mine: Vec<IpNet> = n.addresses.iter().copied().map(host).collect();
            let seq = c
                .inbound(&n.id)
                .rules
                .into_iter()
                .filter_map(|r| {
                    let destinations: Vec<IpNet> = mine
                        .iter()
                        .filter(|m| r.destinations.iter().any(|d| d.contains(*m)))
                        .copied()
                        .collect();
                    (!destinations.is_empty()).then_some(policy::FilterRule { destinations, ..r })
                })
                .collect();
            per_node.push(seq);
        }
    }
    per_node
}

/// The reflected (reply) entries and the forward entries of per-node filters.
fn acl_parts(
    tenant: &str,
    per_node: &[Vec<policy::FilterRule>],
) -> (Vec<pb::AclEntry>, Vec<pb::AclEntry>) {
    (
        reflected(per_node)
            .iter()
            .map(|r| entry(tenant, r, true))
            .collect(),
        forward(per_node)
            .iter()
            .map(|r| entry(tenant, r, false))
            .collect(),
    )
}

/// What a rule is apart from its destinations.
type Key = (
    Vec<IpNet>,
    policy::Proto,
    Vec<policy::PortRange>,
    policy::Action,
);

fn key(r: &policy::FilterRule) -> Key {
    (r.sources.clone(), r.proto, r.ports.clone(), r.action)
}

/// Rules with the same key merged into one (destinations: the union), in first-seen order.
fn merge<'a>(
    rules: impl Iterator<Item = &'a policy::FilterRule>,
) -> (Vec<policy::FilterRule>, HashMap<Key, usize>) {
    let mut at: HashMap<Key, usize> = HashMap::new();
    let mut out: Vec<policy::FilterRule> = Vec::new();
    for r in rules {
        match at.get(&key(r)) {
            Some(&i) => out[i].destinations.extend(r.destinations.iter().copied()),
            None => {
                at.insert(key(r), out.len());
                out.push(r.clone());
            }
        }
    }
    for r in &mut out {
        r.destinations = IpNet::aggregate(&r.destinations);
    }
    (out, at)
}

/// The allow rules, merged (in forward form: `entry` swaps the directions). Only allow
/// entries come first, so their order cannot matter.
fn reflected(per_node: &[Vec<policy::FilterRule>]) -> Vec<policy::FilterRule> {
    merge(
        per_node
            .iter()
            .flatten()
            .filter(|r| r.action == policy::Action::Allow),
    )
    .0
}

/// Every node's rules, merged in an order that keeps each node's own order.
fn forward(per_node: &[Vec<policy::FilterRule>]) -> Vec<policy::FilterRule> {
    let (merged, at) = merge(per_node.iter().flatten());
    // Edges between consecutive rules of each node; a key twice in one node cannot be placed.
    let mut edges: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); merged.len()];
    let mut indegree = vec![0usize; merged.len()];
    for seq in per_node {
        let ids: Vec<usize> = seq
            .iter()
            .filter_map(|r| at.get(&key(r)).copied())
            .collect();
        if ids.iter().collect::<BTreeSet<_>>().len() != ids.len() {
            return per_node.iter().flatten().cloned().collect();
        }
        for pair in ids.windows(2) {
            if edges[pair[0]].insert(pair[1]) {
                indegree[pair[1]] += 1;
            }
        }
    }
    // Kahn's algorithm, lowest first-seen index first (deterministic).
    let mut ready: BTreeSet<usize> = (0..merged.len()).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(merged.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &j in &edges[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.insert(j);
            }
        }
    }
    if order.len() != merged.len() {
        // The nodes' orders disagree: keep them apart.
        return per_node.iter().flatten().cloned().collect();
    }
    order.into_iter().map(|i| merged[i].clone()).collect()
}

/// The proto entry for a filter rule, or for its reply direction.
fn entry(tenant: &str, r: &policy::FilterRule, reflect: bool) -> pb::AclEntry {
    let pb::PacketFilter { mut rules } = filter_to_pb(&policy::Filter {
        rules: vec![r.clone()],
    });
    let f = rules.pop().unwrap_or_default();
    if reflect {
        pb::AclEntry {
            tenant_id: tenant.to_string(),
            source_cidrs: f.destination_cidrs,
            destination_cidrs: f.source_cidrs,
            protocol: f.protocol,
            ports: Vec::new(),
            action: f.action,
            source_ports: f.ports,
            established: true,
        }
    } else {
        pb::AclEntry {
            tenant_id: tenant.to_string(),
            source_cidrs: f.source_cidrs,
            destination_cidrs: f.destination_cidrs,
            protocol: f.protocol,
            ports: f.ports,
            action: f.action,
            source_ports: Vec::new(),
            established: false,
        }
    }
}

/// Gives each served tenant a small index, stable for as long as it stays served: tenants no
/// longer served free theirs, new ones take the lowest free.
pub fn assign_indexes(index: &mut BTreeMap<String, u32>, tenants: &BTreeSet<String>) {
    index.retain(|t, _| tenants.contains(t));
    for t in tenants {
        if !index.contains_key(t) {
            let used: BTreeSet<u32> = index.values().copied().collect();
            let free = (0..).find(|i| !used.contains(i)).unwrap_or(0);
            index.insert(t.clone(), free);
        }
    }
}

/// The full tables of vrouter `v` (version left 0). Tenants without a loaded world (deleted)
/// are left out. `index` is the stream's tenant index map, updated here.
pub fn tables(
    v: &pb::Vrouter,
    worlds: &HashMap<String, World>,
    index: &mut BTreeMap<String, u32>,
    now: i64,
) -> pb::GatewayTables {
    let tenants: BTreeSet<String> = tenants_of(v)
        .into_iter()
        .filter(|t| worlds.contains_key(t))
        .collect();
    assign_indexes(index, &tenants);
    let mut out = pb::GatewayTables::default();
    let mut order: Vec<(&String, u32)> = index.iter().map(|(t, i)| (t, *i)).collect();
    order.sort_by_key(|(_, i)| *i);
    for (t, i) in order {
        let Some(w) = worlds.get(t) else { continue };
        out.tenants.push(pb::GatewayTenant {
            tenant_id: t.clone(),
            index: i,
            default_action: pb::Action::Deny as i32,
        });
        let mut cvlans: Vec<&str> = w
            .cvlans
            .keys()
            .filter(|c| serves(v, t, c))
            .map(String::as_str)
            .collect();
        cvlans.sort_unstable();
        for cv in &cvlans {
            let mut live = w.visible(cv, now);
            live.sort_by(|a, b| a.id.cmp(&b.id));
            for n in live {
                let p = crate::netmap::peer_of_node(n);
                for prefix in &p.allowed_ips {
                    out.routes.push(pb::RouteEntry {
                        tenant_id: t.clone(),
                        prefix: prefix.clone(),
                        peer_node_id: n.id.clone(),
                    });
                }
                let endpoints: Vec<String> =
                    n.endpoints.iter().map(|e| e.address.clone()).collect();
                out.peers.push(pb::GatewayPeer {
                    node_id: n.id.clone(),
                    tenant_id: t.clone(),
                    cvlan_id: n.cvlan_id.clone(),
                    wg_public_key: n.wg_public_key.clone(),
                    allowed_ips: p.allowed_ips,
                    endpoint: endpoints.first().cloned().unwrap_or_default(),
                    endpoints,
                });
            }
        }
        out.acls.extend(tenant_acls(w, t, &cvlans, now));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cvlan_store::time;

    fn node(id: &str, t: &str, cv: &str, v4: &str, tags: &[&str]) -> pb::Node {
        pb::Node {
            id: id.into(),
            tenant_id: t.into(),
            cvlan_id: cv.into(),
            name: format!("n-{id}"),
            wg_public_key: format!("key-{id}"),
            ipv4: v4.into(),
            ipv6: format!("fd00::{}", v4.rsplit('.').next().unwrap()),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            endpoints: vec![
                pb::Endpoint {
                    address: format!("192.0.2.{}:41641", v4.rsplit('.').next().unwrap()),
                    kind: "local".into(),
                },
                pb::Endpoint {
                    address: "198.51.100.1:41641".into(),
                    kind: "observed".into(),
                },
            ],
            ..Default::default()
        }
    }

    fn sel(s: pb::selector::Selector) -> pb::Selector {
        pb::Selector { selector: Some(s) }
    }

    fn rule(
        src: pb::selector::Selector,
        dst: pb::selector::Selector,
        proto: pb::Protocol,
        ports: &[(u32, u32)],
        allow: bool,
    ) -> pb::Rule {
        pb::Rule {
            sources: vec![sel(src)],
            destinations: vec![sel(dst)],
            protocol: proto as i32,
            ports: ports
                .iter()
                .map(|&(first, last)| pb::PortRange { first, last })
                .collect(),
            action: if allow {
                pb::Action::Allow
            } else {
                pb::Action::Deny
            } as i32,
        }
    }

    /// web may reach db on 5432.
    fn web_to_db() -> pb::Rule {
        rule(
            S::Tag("web".into()),
            S::Tag("db".into()),
            pb::Protocol::Tcp,
            &[(5432, 5432)],
            true,
        )
    }

    fn world(t: &str, cv: &str, nodes: Vec<pb::Node>, rules: Vec<pb::Rule>) -> World {
        let mut w = World::default();
        w.cvlans.insert(
            cv.into(),
            pb::Cvlan {
                id: cv.into(),
                tenant_id: t.into(),
                name: cv.into(),
                ipv4_prefix: "10.20.0.0/24".into(),
                ipv6_prefix: "fd00::/64".into(),
                mode: pb::CvlanMode::HubAndSpoke as i32,
                ..Default::default()
            },
        );
        for n in nodes {
            let id = n.id.clone();
            w.put_node(Some(n), &id);
        }
        w.policies.insert(
            "p".into(),
            pb::Policy {
                id: "p".into(),
                name: "p".into(),
                rules,
                ..Default::default()
            },
        );
        w
    }

    use pb::selector::Selector as S;

    fn lab() -> World {
        world(
            "t1",
            "cv1",
            vec![
                node("a", "t1", "cv1", "10.20.0.1", &["web"]),
                node("b", "t1", "cv1", "10.20.0.2", &["db"]),
                node("c", "t1", "cv1", "10.20.0.3", &[]),
            ],
            vec![
                // nobody reaches c on 22; everyone pings everyone.
                web_to_db(),
                rule(
                    S::Any(true),
                    S::Node("c".into()),
                    pb::Protocol::Tcp,
                    &[(22, 22)],
                    false,
                ),
                rule(S::Any(true), S::Any(true), pb::Protocol::Icmp, &[], true),
                rule(
                    S::Any(true),
                    S::Node("c".into()),
                    pb::Protocol::Udp,
                    &[(53, 53)],
                    true,
                ),
            ],
        )
    }

    fn vrouter(assign: &[(&str, &str)]) -> pb::Vrouter {
        pb::Vrouter {
            id: "v1".into(),
            name: "gw".into(),
            wg_public_key: "vkey".into(),
            endpoint: "10.255.0.1:51820".into(),
            assignments: assign
                .iter()
                .map(|(t, c)| pb::VrouterAssignment {
                    tenant_id: t.to_string(),
                    cvlan_id: c.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// `decides(.., OPENING)`: a packet that opens a flow (a TCP SYN).
    const OPENING: bool = true;
    /// `decides(.., REPLY)`: a reply within a connection (TCP with ACK).
    const REPLY: bool = false;

    /// What the gateway decides: first matching entry of the tenant, default deny.
    /// `syn`: a TCP segment that opens a connection (entries marked `established` skip it).
    fn decides(
        acls: &[pb::AclEntry],
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        sport: u16,
        dport: u16,
        syn: bool,
    ) -> bool {
        let inside = |cidrs: &[String], a: IpAddr| {
            cidrs
                .iter()
                .any(|c| c.parse::<IpNet>().unwrap().contains(&a))
        };
        let ports_ok = |ps: &[pb::PortRange], p: u16| {
            ps.is_empty()
                || ps
                    .iter()
                    .any(|r| (r.first..=r.last).contains(&u32::from(p)))
        };
        for e in acls {
            let ep = e.protocol;
            if (ep != 0 && ep != i32::from(proto)) || (e.established && proto == 6 && syn) {
                continue;
            }
            let uses_ports = proto == 6 || proto == 17;
            if inside(&e.source_cidrs, src)
                && inside(&e.destination_cidrs, dst)
                && (!uses_ports || (ports_ok(&e.ports, dport) && ports_ok(&e.source_ports, sport)))
            {
                return e.action == pb::Action::Allow as i32;
            }
        }
        false
    }

    fn addr(w: &World, id: &str) -> IpAddr {
        w.nodes[id].ipv4.parse().unwrap()
    }

    #[test]
    fn forward_decisions_match_the_reference_and_every_allowed_flow_gets_its_replies() {
        let w = lab();
        let now = time::now_micros();
        let acls = tenant_acls(&w, "t1", &["cv1"], now);
        let infos: Vec<policy::NodeInfo> =
            w.visible("cv1", now).into_iter().map(node_info).collect();
        let groups = groups_of(&w);
        let rules = rules_of(&w);
        let ids = ["a", "b", "c"];
        for src in ids {
            for dst in ids {
                if src == dst {
                    continue;
                }
                for (proto, dport) in [
                    (6u8, 5432u16),
                    (6, 22),
                    (6, 80),
                    (17, 53),
                    (17, 5432),
                    (1, 0),
                ] {
                    let (s, d) = (addr(&w, src), addr(&w, dst));
                    let p = policy::Packet {
                        src: s,
                        dst: d,
                        proto,
                        dst_port: dport,
                    };
                    let want = policy::reference::decide(&infos, &groups, &rules, s, dst, &p)
                        == policy::Action::Allow;
                    // An ephemeral source port no rule names: the reflected entries cannot
                    // decide, so the gateway must agree with the reference exactly (ICMP has
                    // no ports: its replies are the same packets backwards).
                    let got = decides(&acls, s, d, proto, 40000, dport, OPENING);
                    if proto != 1 {
                        assert_eq!(got, want, "{src}->{dst} proto {proto} port {dport}");
                    } else {
                        assert!(got || !want, "{src}->{dst} icmp");
                    }
                    if want {
                        assert!(
                            decides(&acls, d, s, proto, dport, 40000, REPLY),
                            "reply of {src}->{dst} proto {proto} port {dport}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn reflected_entries_come_first_carry_the_rule_ports_as_source_ports_and_cover_every_allow() {
        let w = lab();
        let now = time::now_micros();
        let (reflected, forward) = acl_parts("t1", &node_filters(&w, &["cv1"], now));
        let mut all = reflected.clone();
        all.extend(forward.clone());
        assert_eq!(tenant_acls(&w, "t1", &["cv1"], now), all);
        let allow = pb::Action::Allow as i32;
        assert!(
            reflected
                .iter()
                .all(|e| e.action == allow && e.ports.is_empty())
        );
        assert!(forward.iter().all(|e| e.source_ports.is_empty()));
        let nets = |v: &[String]| -> Vec<IpNet> { v.iter().map(|c| c.parse().unwrap()).collect() };
        // Every forward allow has a reflection covering all its destinations.
        for f in forward.iter().filter(|e| e.action == allow) {
            let r = reflected
                .iter()
                .find(|r| {
                    r.destination_cidrs == f.source_cidrs
                        && r.source_ports == f.ports
                        && r.protocol == f.protocol
                })
                .unwrap_or_else(|| panic!("no reflection of {f:?}"));
            let covered = nets(&r.source_cidrs);
            for d in nets(&f.destination_cidrs) {
                assert!(covered.iter().any(|c| c.contains(&d)), "{d} in {r:?}");
            }
        }
        let pg = reflected
            .iter()
            .find(|e| e.source_ports.iter().any(|p| p.first == 5432))
            .expect("a reflected entry for web->db:5432");
        assert_eq!(
            pg.source_cidrs,
            vec!["10.20.0.2/32".to_string(), "fd00::2/128".to_string()]
        );
        assert_eq!(
            pg.destination_cidrs,
            vec!["10.20.0.1/32".to_string(), "fd00::1/128".to_string()]
        );
        // The deny rule is in the forward part, narrowed to c.
        assert!(forward.iter().any(|e| e.action == pb::Action::Deny as i32
            && e.destination_cidrs.contains(&"10.20.0.3/32".to_string())));
    }

    #[test]
    fn a_rule_for_many_nodes_is_one_entry_not_one_per_node() {
        let nodes: Vec<pb::Node> = (1..=40)
            .map(|i| {
                node(
                    &format!("n{i:02}"),
                    "t1",
                    "cv1",
                    &format!("10.20.0.{i}"),
                    if i % 2 == 0 { &["web"] } else { &["db"] },
                )
            })
            .collect();
        let w = world(
            "t1",
            "cv1",
            nodes,
            vec![
                web_to_db(),
                rule(S::Any(true), S::Any(true), pb::Protocol::Icmp, &[], true),
            ],
        );
        let acls = tenant_acls(&w, "t1", &["cv1"], time::now_micros());
        // Two rules: two reflections and two forward entries, whatever the node count.
        assert_eq!(acls.len(), 4, "{acls:#?}");
        let pg = acls
            .iter()
            .find(|e| e.ports.iter().any(|p| p.first == 5432))
            .unwrap();
        assert_eq!(
            pg.destination_cidrs.len(),
            40,
            "the 20 db nodes' v4 and v6 addresses"
        );
    }

    #[test]
    fn tables_hold_peers_routes_and_a_deny_default_per_tenant_even_with_overlapping_prefixes() {
        let now = time::now_micros();
        let mut worlds = HashMap::new();
        worlds.insert("t1".to_string(), lab());
        worlds.insert(
            "t2".to_string(),
            world(
                "t2",
                "cv2",
                vec![node("x", "t2", "cv2", "10.20.0.1", &[])],
                vec![],
            ),
        );
        let v = vrouter(&[("t2", ""), ("t1", "cv1"), ("gone", "")]);
        let mut index = BTreeMap::new();
        let t = tables(&v, &worlds, &mut index, now);
        assert_eq!(
            t.tenants
                .iter()
                .map(|t| (t.tenant_id.as_str(), t.index, t.default_action))
                .collect::<Vec<_>>(),
            vec![
                ("t1", 0, pb::Action::Deny as i32),
                ("t2", 1, pb::Action::Deny as i32)
            ]
        );
        assert_eq!(t.peers.len(), 4);
        let a = t.peers.iter().find(|p| p.node_id == "a").unwrap();
        assert_eq!(a.endpoint, "192.0.2.1:41641");
        assert_eq!(
            a.endpoints,
            vec![
                "192.0.2.1:41641".to_string(),
                "198.51.100.1:41641".to_string()
            ]
        );
        assert_eq!(
            a.allowed_ips,
            vec!["10.20.0.1/32".to_string(), "fd00::1/128".to_string()]
        );
        // The same prefix in both tenants, each routed to its own node.
        let same: Vec<(&str, &str)> = t
            .routes
            .iter()
            .filter(|r| r.prefix == "10.20.0.1/32")
            .map(|r| (r.tenant_id.as_str(), r.peer_node_id.as_str()))
            .collect();
        assert_eq!(same, vec![("t1", "a"), ("t2", "x")]);
        assert_eq!(t.routes.len(), 8);
        // No policy in t2: nothing allowed there.
        assert!(t.acls.iter().all(|e| e.tenant_id == "t1"));

        // Indexes are stable: dropping t1 keeps t2 at 1; a new tenant takes the free 0.
        worlds.insert("t3".to_string(), World::default());
        let v2 = vrouter(&[("t2", ""), ("t3", "")]);
        let t2 = tables(&v2, &worlds, &mut index, now);
        assert_eq!(
            t2.tenants
                .iter()
                .map(|t| (t.tenant_id.as_str(), t.index))
                .collect::<Vec<_>>(),
            vec![("t3", 0), ("t2", 1)]
        );
    }

    #[test]
    fn a_hub_and_spoke_cvlan_goes_through_the_lowest_enrolled_vrouter_and_mesh_does_not() {
        let mut w = lab();
        let mut v2 = vrouter(&[("t1", "")]);
        v2.id = "v2".into();
        let mut v0 = vrouter(&[("t1", "cv1")]);
        v0.id = "v0".into();
        v0.endpoint.clear(); // not enrolled yet
        w.vrouters = vec![v2.clone(), vrouter(&[("t1", "cv1")]), v0];
        let g = gateway_of(&w, "cv1").unwrap();
        assert_eq!(g.id, "v1");
        let p = peer_of_vrouter(g, &w.cvlans["cv1"]);
        assert!(p.gateway);
        assert_eq!(
            p.allowed_ips,
            vec!["10.20.0.0/24".to_string(), "fd00::/64".to_string()]
        );
        assert_eq!(p.endpoints[0].address, "10.255.0.1:51820");
        assert_eq!(p.persistent_keepalive_seconds, 25);
        if let Some(cv) = w.cvlans.get_mut("cv1") {
            cv.mode = pb::CvlanMode::Mesh as i32;
        }
        assert!(gateway_of(&w, "cv1").is_none());
    }

    fn arb_selector() -> impl proptest::strategy::Strategy<Value = pb::selector::Selector> {
        use proptest::prelude::*;
        prop_oneof![
            Just(S::Any(true)),
            Just(S::Tag("web".into())),
            Just(S::Tag("db".into())),
            (0..4usize).prop_map(|i| S::Node(["a", "b", "c", "d"][i].into())),
            Just(S::Cidr("10.20.0.0/31".into())),
        ]
    }

    fn arb_rule() -> impl proptest::strategy::Strategy<Value = pb::Rule> {
        use proptest::prelude::*;
        (
            arb_selector(),
            arb_selector(),
            prop_oneof![
                Just(pb::Protocol::Any),
                Just(pb::Protocol::Tcp),
                Just(pb::Protocol::Udp),
                Just(pb::Protocol::Icmp)
            ],
            prop_oneof![
                Just(vec![]),
                Just(vec![(22, 22)]),
                Just(vec![(80, 90), (443, 443)])
            ],
            any::<bool>(),
        )
            .prop_map(|(s, d, p, ports, allow)| {
                let ports = if matches!(p, pb::Protocol::Tcp | pb::Protocol::Udp) {
                    ports
                } else {
                    vec![]
                };
                rule(s, d, p, &ports, allow)
            })
    }

    proptest::proptest! {
        /// Against the reference: the forward entries decide exactly like the nodes' policy,
        /// the gateway never denies what it allows, the replies of every allowed flow pass
        /// (the reflected entries only ever add allows), and no TCP connection it denies opens.
        #[test]
        fn forward_entries_decide_like_the_reference_and_replies_of_allowed_flows_pass(
            rules in proptest::collection::vec(arb_rule(), 0..6),
        ) {
            let w = world(
                "t1",
                "cv1",
                vec![
                    node("a", "t1", "cv1", "10.20.0.1", &["web"]),
                    node("b", "t1", "cv1", "10.20.0.2", &["db"]),
                    node("c", "t1", "cv1", "10.20.0.3", &["web", "db"]),
                    node("d", "t1", "cv1", "10.20.0.4", &[]),
                ],
                rules,
            );
            let now = time::now_micros();
            let acls = tenant_acls(&w, "t1", &["cv1"], now);
            // The merged forward entries alone are exactly the nodes' filters.
            let (_, forward) = acl_parts("t1", &node_filters(&w, &["cv1"], now));
            let infos: Vec<policy::NodeInfo> =
                w.visible("cv1", now).into_iter().map(node_info).collect();
            let (groups, rules) = (groups_of(&w), rules_of(&w));
            for src in ["a", "b", "c", "d"] {
                for dst in ["a", "b", "c", "d"] {
                    if src == dst {
                        continue;
                    }
                    for (proto, dport) in [(6u8, 22u16), (6, 85), (6, 443), (17, 22), (17, 1000), (1, 0)] {
                        let (s, d) = (addr(&w, src), addr(&w, dst));
                        let p = policy::Packet { src: s, dst: d, proto, dst_port: dport };
                        let want = policy::reference::decide(&infos, &groups, &rules, s, dst, &p)
                            == policy::Action::Allow;
                        proptest::prop_assert_eq!(
                            decides(&forward, s, d, proto, 40000, dport, OPENING),
                            want
                        );
                        if want {
                            proptest::prop_assert!(decides(&acls, s, d, proto, 40000, dport, OPENING));
                            proptest::prop_assert!(decides(&acls, d, s, proto, dport, 40000, REPLY));
                        } else if proto == 6 {
                            // A connection the policy denies is never opened through the
                            // gateway, whatever the reflected entries allow back.
                            proptest::prop_assert!(!decides(&acls, s, d, proto, 40000, dport, OPENING));
                        }
                    }
                }
            }
        }
    }
}
