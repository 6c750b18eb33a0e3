//! Property tests: on random small worlds, the compiled filter, its matcher and the
//! independent reference evaluator decide every packet the same way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cvlan_policy::*;
use proptest::prelude::*;

/// Addresses come from a small pool so that sources, destinations and CIDRs collide often
/// and adjacent addresses give the aggregation something to do.
fn pool_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..16).prop_map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))),
        (0u16..16).prop_map(|i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i))),
    ]
}

/// Packet sources: the pool plus addresses no node has.
fn any_src() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        4 => pool_addr(),
        1 => Just(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1))),
        1 => Just(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
    ]
}

fn cidr() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (0u8..16, 26u8..=32)
            .prop_map(|(i, l)| IpNet::new(Ipv4Addr::new(10, 0, 0, i).into(), l).unwrap()),
        (0u16..16, 122u8..=128).prop_map(|(i, l)| IpNet::new(
            Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i).into(),
            l
        )
        .unwrap()),
        Just("0.0.0.0/0".parse().unwrap()),
        Just("192.168.0.0/16".parse().unwrap()),
        Just("::/0".parse().unwrap()),
    ]
}

fn name(prefix: &'static str, n: u8) -> impl Strategy<Value = String> {
    (0..n).prop_map(move |i| format!("{prefix}{i}"))
}

fn selector() -> impl Strategy<Value = Selector> {
    prop_oneof![
        1 => Just(Selector::Any),
        // g4 and n8/n9 never exist: unknown ids must match nothing.
        3 => name("g", 5).prop_map(Selector::Group),
        2 => name("t", 4).prop_map(Selector::Tag),
        2 => name("n", 10).prop_map(Selector::Node),
        2 => cidr().prop_map(Selector::Cidr),
    ]
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(0u16),
        Just(1),
        Just(22),
        Just(53),
        Just(80),
        Just(443),
        Just(65535),
        any::<u16>()
    ]
}

fn proto() -> impl Strategy<Value = Proto> {
    prop_oneof![
        Just(Proto::Any),
        Just(Proto::Icmp),
        Just(Proto::Tcp),
        Just(Proto::Udp),
        Just(Proto::Icmpv6)
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![Just(Action::Allow), Just(Action::Deny)]
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        prop::collection::vec(selector(), 0..3),
        prop::collection::vec(selector(), 0..3),
        proto(),
        // Inverted ranges (first > last) included on purpose: they contain no port.
        prop::collection::vec(
            (port(), port()).prop_map(|(first, last)| PortRange { first, last }),
            0..3,
        ),
        action(),
    )
        .prop_map(|(sources, destinations, proto, ports, action)| Rule {
            sources,
            destinations,
            proto,
            ports,
            action,
        })
}

fn world() -> impl Strategy<Value = (Vec<NodeInfo>, Vec<Group>, Vec<Rule>)> {
    let node = (
        prop::collection::vec(pool_addr(), 0..4),
        prop::collection::vec(name("t", 4), 0..3),
        prop::option::of(name("u", 3)),
    );
    let group = (
        name("g", 4),
        prop::collection::vec(name("n", 10), 0..3),
        prop::collection::vec(name("t", 4), 0..2),
        prop::collection::vec(name("u", 4), 0..2),
    )
        .prop_map(|(id, nodes, tags, users)| Group {
            id,
            nodes,
            tags,
            users,
        });
    (
        prop::collection::vec(node, 1..8),
        prop::collection::vec(group, 0..5),
        prop::collection::vec(rule(), 0..10),
    )
        .prop_map(|(nodes, groups, rules)| {
            let nodes = nodes
                .into_iter()
                .enumerate()
                .map(|(i, (addresses, tags, user))| NodeInfo {
                    id: format!("n{i}"),
                    addresses,
                    tags,
                    user,
                })
                .collect();
            (nodes, groups, rules)
        })
}

fn packet() -> impl Strategy<Value = (String, Packet)> {
    (
        name("n", 9),
        any_src(),
        pool_addr(),
        prop_oneof![Just(1u8), Just(6), Just(17), Just(58), Just(47)],
        port(),
    )
        .prop_map(|(dst_node, src, dst, proto, port)| {
            let dst_port = if proto == 6 || proto == 17 { port } else { 0 };
            (
                dst_node,
                Packet {
                    src,
                    dst,
                    proto,
                    dst_port,
                },
            )
        })
}

/// Whether every address of `d` is one of `own` (small prefixes only).
fn only_own_addresses(d: &IpNet, own: &[IpAddr]) -> bool {
    let host_bits = d.max_prefix_len() - d.prefix_len();
    if host_bits > 8 {
        return false;
    }
    (0u32..1 << host_bits).all(|k| {
        let a = match d.network() {
            IpAddr::V4(n) => IpAddr::V4((u32::from(n) + k).into()),
            IpAddr::V6(n) => IpAddr::V6((u128::from(n) + u128::from(k)).into()),
        };
        own.contains(&a)
    })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        // Integration tests have no lib.rs beside them for the default persistence to find.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("proptest-regressions/agree.txt"),
        )),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn compiled_filter_matcher_and_reference_agree(
        (nodes, groups, rules) in world(),
        packets in prop::collection::vec((packet(), (any::<u8>(), any::<usize>())), 1..48),
    ) {
        let c = Compiler::new(&nodes, &groups, &rules);
        for ((dst_node, p), (aim, k)) in &packets {
            // Most of the time send from some node's address to one of the destination
            // node's own addresses, which is where rules can actually match.
            let mut p = *p;
            let own = |i: usize| nodes[i % nodes.len()].addresses.get(*k % 4).copied();
            if aim & 1 != 0
                && let Some(a) = own(usize::from(*aim >> 2))
            {
                p.src = a;
            }
            if aim & 2 != 0
                && let Some(n) = nodes.iter().find(|n| n.id == *dst_node)
                && let Some(a) = n.addresses.get(*k % n.addresses.len().max(1))
            {
                p.dst = *a;
            }
            let f = c.inbound(dst_node);
            let want = reference::decide(&nodes, &groups, &rules, p.src, dst_node, &p);
            prop_assert_eq!(f.evaluate(&p), want, "evaluate; packet {:?} to {}; filter {:#?}", p, dst_node, f);
            prop_assert_eq!(Matcher::new(&f).decide(&p), want, "matcher; packet {:?} to {}; filter {:#?}", p, dst_node, f);
        }
    }

    #[test]
    fn compiled_filters_are_compact(
        (nodes, groups, rules) in world(),
    ) {
        let c = Compiler::new(&nodes, &groups, &rules);
        for n in &nodes {
            let f = c.inbound(&n.id);
            prop_assert!(f.rules.last().is_none_or(|r| r.action == Action::Allow), "trailing deny in {:#?}", f);
            for r in &f.rules {
                prop_assert!(!r.sources.is_empty() && !r.destinations.is_empty());
                prop_assert_eq!(&IpNet::aggregate(&r.sources), &r.sources, "sources not aggregated");
                prop_assert_eq!(&IpNet::aggregate(&r.destinations), &r.destinations);
                // Destinations never reach beyond the node's own addresses.
                for d in &r.destinations {
                    prop_assert!(only_own_addresses(d, &n.addresses), "{} outside {:?}", d, n.addresses);
                }
            }
            prop_assert!(f.rules.len() <= rules.len());
        }
    }

    /// The matcher also agrees with the linear scan on hand-written filters the compiler
    /// would never produce: overlapping prefixes, host bits set, ICMP rules with ports,
    /// empty port ranges, trailing denies.
    #[test]
    fn matcher_agrees_with_linear_scan_on_arbitrary_filters(
        rules in prop::collection::vec(
            (
                prop::collection::vec(cidr(), 0..4),
                prop::collection::vec(cidr(), 0..4),
                proto(),
                prop::collection::vec((port(), port()).prop_map(|(first, last)| PortRange { first, last }), 0..3),
                action(),
            ),
            0..80,
        ),
        packets in prop::collection::vec(packet(), 1..64),
    ) {
        let f = Filter {
            rules: rules
                .into_iter()
                .map(|(sources, destinations, proto, ports, action)| FilterRule { sources, destinations, proto, ports, action })
                .collect(),
        };
        let m = Matcher::new(&f);
        for (_, p) in &packets {
            prop_assert_eq!(m.decide(p), f.evaluate(p), "packet {:?}", p);
        }
    }
}
