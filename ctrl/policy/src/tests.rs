//! Unit tests: each scenario is decided by all three evaluators, which must agree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use crate::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn node(id: &str, addrs: &[&str], tags: &[&str], user: Option<&str>) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        addresses: addrs.iter().map(|a| ip(a)).collect(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        user: user.map(Into::into),
    }
}

fn rule(
    src: Vec<Selector>,
    dst: Vec<Selector>,
    proto: Proto,
    ports: &[(u16, u16)],
    action: Action,
) -> Rule {
    Rule {
        sources: src,
        destinations: dst,
        proto,
        ports: ports
            .iter()
            .map(|&(first, last)| PortRange { first, last })
            .collect(),
        action,
    }
}

fn allow(src: Vec<Selector>, dst: Vec<Selector>) -> Rule {
    rule(src, dst, Proto::Any, &[], Action::Allow)
}

struct World {
    nodes: Vec<NodeInfo>,
    groups: Vec<Group>,
    rules: Vec<Rule>,
}

impl World {
    /// Decides with the compiled filter, its matcher and the reference; panics if they differ.
    fn decide(&self, src: &str, dst_node: &str, dst: &str, proto: u8, port: u16) -> Action {
        let p = Packet {
            src: ip(src),
            dst: ip(dst),
            proto,
            dst_port: port,
        };
        let f = Compiler::new(&self.nodes, &self.groups, &self.rules).inbound(dst_node);
        let compiled = f.evaluate(&p);
        let fast = Matcher::new(&f).decide(&p);
        let reference =
            reference::decide(&self.nodes, &self.groups, &self.rules, p.src, dst_node, &p);
        assert_eq!(
            compiled, reference,
            "compiled vs reference for {p:?}, filter {f:#?}"
        );
        assert_eq!(
            fast, reference,
            "matcher vs reference for {p:?}, filter {f:#?}"
        );
        reference
    }

    fn tcp(&self, src: &str, dst_node: &str, dst: &str, port: u16) -> Action {
        self.decide(src, dst_node, dst, 6, port)
    }

    fn filter(&self, n: &str) -> Filter {
        Compiler::new(&self.nodes, &self.groups, &self.rules).inbound(n)
    }
}

/// a (alice, tag web), b (bob, tag db), c (carol, no tags); each with v4 + v6.
fn three_nodes() -> Vec<NodeInfo> {
    vec![
        node("a", &["100.64.0.1", "fd00::1"], &["web"], Some("alice")),
        node("b", &["100.64.0.2", "fd00::2"], &["db"], Some("bob")),
        node("c", &["100.64.0.3", "fd00::3"], &[], Some("carol")),
    ]
}

fn group(id: &str, nodes: &[&str], tags: &[&str], users: &[&str]) -> Group {
    Group {
        id: id.into(),
        nodes: nodes.iter().map(|s| s.to_string()).collect(),
        tags: tags.iter().map(|s| s.to_string()).collect(),
        users: users.iter().map(|s| s.to_string()).collect(),
    }
}

use Action::{Allow, Deny};

#[test]
fn group_by_tag_member_selects_nodes_carrying_the_tag() {
    let w = World {
        nodes: three_nodes(),
        groups: vec![group("webs", &[], &["web"], &[])],
        rules: vec![allow(
            vec![Selector::Group("webs".into())],
            vec![Selector::Node("b".into())],
        )],
    };
    assert_eq!(w.tcp("100.64.0.1", "b", "100.64.0.2", 5432), Allow);
    assert_eq!(w.tcp("100.64.0.3", "b", "100.64.0.2", 5432), Deny);
    // As a destination too.
    let w = World {
        rules: vec![allow(
            vec![Selector::Any],
            vec![Selector::Group("webs".into())],
        )],
        ..w
    };
    assert_eq!(w.tcp("100.64.0.3", "a", "100.64.0.1", 443), Allow);
    assert_eq!(w.tcp("100.64.0.3", "b", "100.64.0.2", 443), Deny);
}

#[test]
fn group_by_user_selects_the_users_nodes() {
    let mut nodes = three_nodes();
    nodes.push(node("b2", &["100.64.0.4"], &[], Some("bob")));
    let w = World {
        nodes,
        groups: vec![group("bobs", &[], &[], &["bob"])],
        rules: vec![allow(
            vec![Selector::Group("bobs".into())],
            vec![Selector::Node("c".into())],
        )],
    };
    assert_eq!(w.tcp("100.64.0.2", "c", "100.64.0.3", 22), Allow);
    assert_eq!(w.tcp("100.64.0.4", "c", "100.64.0.3", 22), Allow);
    assert_eq!(w.tcp("100.64.0.1", "c", "100.64.0.3", 22), Deny);
    // Both of bob's addresses end up as sources, aggregated where exact.
    let f = w.filter("c");
    assert_eq!(f.rules.len(), 1);
    assert_eq!(
        f.rules[0].sources,
        vec![
            net("100.64.0.2/32"),
            net("100.64.0.4/32"),
            net("fd00::2/128")
        ]
    );
}

#[test]
fn group_by_node_id_member_selects_that_node() {
    let w = World {
        nodes: three_nodes(),
        groups: vec![group("g", &["c", "no-such-node"], &[], &[])],
        rules: vec![allow(
            vec![Selector::Any],
            vec![Selector::Group("g".into())],
        )],
    };
    assert_eq!(w.tcp("100.64.0.1", "c", "100.64.0.3", 80), Allow);
    assert_eq!(w.tcp("100.64.0.1", "b", "100.64.0.2", 80), Deny);
}

#[test]
fn node_by_id_selects_exactly_that_node() {
    let w = World {
        nodes: three_nodes(),
        groups: vec![],
        rules: vec![allow(
            vec![Selector::Node("a".into())],
            vec![Selector::Node("b".into())],
        )],
    };
    assert_eq!(w.tcp("100.64.0.1", "b", "100.64.0.2", 1), Allow);
    assert_eq!(w.tcp("fd00::1", "b", "fd00::2", 1), Allow);
    assert_eq!(w.tcp("100.64.0.3", "b", "100.64.0.2", 1), Deny);
    assert_eq!(w.tcp("100.64.0.2", "a", "100.64.0.1", 1), Deny);
    assert!(w.filter("a").rules.is_empty());
    assert!(w.filter("unknown").rules.is_empty());
}

#[test]
fn cidr_destination_narrows_to_the_nodes_addresses_inside_it() {
    let w = World {
        nodes: three_nodes(),
        groups: vec![],
        rules: vec![allow(
            vec![Selector::Any],
            vec![Selector::Cidr(net("100.64.0.0/30"))],
        )],
    };
    // a's v4 is inside, its v6 is not.
    assert_eq!(w.tcp("100.64.0.2", "a", "100.64.0.1", 80), Allow);
    assert_eq!(w.tcp("fd00::2", "a", "fd00::1", 80), Deny);
    // c (100.64.0.3) is inside too; nothing else of the /30 leaks into its filter.
    let f = w.filter("c");
    assert_eq!(f.rules[0].destinations, vec![net("100.64.0.3/32")]);
    // A CIDR source is taken as is, even for addresses no node has.
    let w = World {
        rules: vec![allow(
            vec![Selector::Cidr(net("10.9.0.0/16"))],
            vec![Selector::Any],
        )],
        ..w
    };
    assert_eq!(w.tcp("10.9.200.7", "b", "100.64.0.2", 80), Allow);
    assert_eq!(w.tcp("10.8.0.1", "b", "100.64.0.2", 80), Deny);
}

#[test]
fn ports_apply_only_to_tcp_and_udp() {
    let w = World {
        nodes: three_nodes(),
        groups: vec![],
        rules: vec![
            rule(
                vec![Selector::Any],
                vec![Selector::Node("b".into())],
                Proto::Tcp,
                &[(22, 22), (8000, 8080)],
                Allow,
            ),
            rule(
                vec![Selector::Any],
                vec![Selector::Node("b".into())],
                Proto::Icmp,
                &[(9, 9)],
                Allow,
            ),
            rule(
                vec![Selector::Node("c".into())],
                vec![Selector::Node("b".into())],
                Proto::Any,
                &[(53, 53)],
                Allow,
            ),
        ],
    };
    assert_eq!(w.tcp("100.64.0.1", "b", "100.64.0.2", 22), Allow);
    assert_eq!(w.tcp("100.64.0.1", "b", "100.64.0.2", 8080), Allow);
    assert_eq!(w.tcp("100.64.0.1", "b", "100.64.0.2", 8081), Deny);
    assert_eq!(w.decide("100.64.0.1", "b", "100.64.0.2", 17, 22), Deny);
    // Ports on an ICMP rule mean nothing.
    assert_eq!(w.decide("100.64.0.1", "b", "100.64.0.2", 1, 0), Allow);
    // "Any protocol on port 53" is TCP or UDP to 53, not ICMP and not GRE.
    assert_eq!(w.decide("100.64.0.3", "b", "100.64.0.2", 17, 53), Allow);
    assert_eq!(w.decide("100.64.0.3", "b", "100.64.0.2", 6, 53), Allow);
    assert_eq!(w.decide("fd00::3", "b", "fd00::2", 58, 0), Deny);
    assert_eq!(w.decide("100.64.0.3", "b", "100.64.0.2", 47, 0), Deny);
    // The compiled ICMP rule has no ports left.
    assert!(w.filter("b").rules[1].ports.is_empty());
}

#[test]
fn deny_before_allow_wins_and_allow_before_deny_wins() {
    let deny = rule(
        vec![Selector::Node("a".into())],
        vec![Selector::Any],
        Proto::Tcp,
        &[(22, 22)],
        Deny,
    );
    let open = allow(vec![Selector::Any], vec![Selector::Any]);
    let w = World {
        nodes: three_nodes(),
        groups: vec![],
        rules: vec![deny.clone(), open.clone()],
    };
    assert_eq!(w.tcp("100.64.0.1", "b", "100.64.0.2", 22), Deny);
    assert_eq!(w.tcp("100.64.0.1", "b", "100.64.0.2", 23), Allow);
    assert_eq!(w.tcp("100.64.0.3", "b", "100.64.0.2", 22), Allow);
    let w = World {
        rules: vec![open, deny],
        ..w
    };
    assert_eq!(w.tcp("100.64.0.1", "b", "100.64.0.2", 22), Allow);
    // The trailing deny is redundant with the default and is not emitted.
    assert_eq!(w.filter("b").rules.len(), 1);
}

#[test]
fn nothing_matches_means_deny() {
    let w = World {
        nodes: three_nodes(),
        groups: vec![],
        rules: vec![],
    };
    assert_eq!(w.tcp("100.64.0.1", "b", "100.64.0.2", 80), Deny);
    assert_eq!(w.decide("fd00::1", "b", "fd00::2", 58, 0), Deny);
    assert_eq!(
        Filter::default().evaluate(&Packet {
            src: ip("1.2.3.4"),
            dst: ip("1.2.3.5"),
            proto: 6,
            dst_port: 1
        }),
        Deny
    );
}

#[test]
fn unknown_group_matches_nothing() {
    let w = World {
        nodes: three_nodes(),
        groups: vec![group("real", &["a"], &[], &[])],
        rules: vec![
            allow(vec![Selector::Group("ghost".into())], vec![Selector::Any]),
            allow(vec![Selector::Any], vec![Selector::Group("ghost".into())]),
            allow(
                vec![Selector::Tag("no-such-tag".into())],
                vec![Selector::Any],
            ),
            allow(
                vec![Selector::Node("no-such-node".into())],
                vec![Selector::Any],
            ),
        ],
    };
    for n in ["a", "b", "c"] {
        assert!(w.filter(n).rules.is_empty(), "{n}");
    }
    assert_eq!(w.tcp("100.64.0.1", "b", "100.64.0.2", 80), Deny);
}

#[test]
fn ipv6_sources_and_destinations_are_matched_like_ipv4() {
    let w = World {
        nodes: three_nodes(),
        groups: vec![],
        rules: vec![
            rule(
                vec![Selector::Cidr(net("fd00::/127"))],
                vec![Selector::Node("c".into())],
                Proto::Icmpv6,
                &[],
                Allow,
            ),
            rule(
                vec![Selector::Tag("db".into())],
                vec![Selector::Cidr(net("fd00::/64"))],
                Proto::Udp,
                &[(53, 53)],
                Allow,
            ),
        ],
    };
    assert_eq!(w.decide("fd00::1", "c", "fd00::3", 58, 0), Allow);
    assert_eq!(w.decide("fd00::2", "c", "fd00::3", 58, 0), Deny);
    assert_eq!(w.decide("100.64.0.1", "c", "100.64.0.3", 58, 0), Deny);
    assert_eq!(w.decide("fd00::2", "a", "fd00::1", 17, 53), Allow);
    assert_eq!(w.decide("100.64.0.2", "a", "100.64.0.1", 17, 53), Deny);
}

#[test]
fn adjacent_sources_are_aggregated_only_when_every_address_is_covered() {
    let nodes: Vec<NodeInfo> = (0..6)
        .map(|i| node(&format!("n{i}"), &[&format!("10.0.0.{i}")], &["t"], None))
        .collect();
    let w = World {
        nodes,
        groups: vec![],
        rules: vec![allow(
            vec![Selector::Tag("t".into())],
            vec![Selector::Node("n0".into())],
        )],
    };
    // 10.0.0.0-5: a /30 and a /31, never a /29 (that would admit .6 and .7).
    assert_eq!(
        w.filter("n0").rules[0].sources,
        vec![net("10.0.0.0/30"), net("10.0.0.4/31")]
    );
    assert_eq!(w.tcp("10.0.0.6", "n0", "10.0.0.0", 1), Deny);
    assert_eq!(w.tcp("10.0.0.5", "n0", "10.0.0.0", 1), Allow);
}

#[test]
fn consecutive_rules_with_one_action_are_merged_but_never_across_actions() {
    let to_c = |s: &str, action| {
        rule(
            vec![Selector::Node(s.into())],
            vec![Selector::Node("c".into())],
            Proto::Tcp,
            &[(22, 22)],
            action,
        )
    };
    let w = World {
        nodes: three_nodes(),
        groups: vec![],
        rules: vec![
            to_c("a", Allow),
            to_c("b", Allow),
            to_c("a", Deny), // shadowed: identical match set to an earlier rule
            rule(
                vec![Selector::Any],
                vec![Selector::Any],
                Proto::Tcp,
                &[],
                Deny,
            ),
            allow(vec![Selector::Any], vec![Selector::Any]),
            rule(
                vec![Selector::Node("ghost".into())],
                vec![Selector::Any],
                Proto::Any,
                &[],
                Deny,
            ),
            allow(vec![Selector::Node("c".into())], vec![Selector::Any]),
        ],
    };
    let f = w.filter("c");
    let actions: Vec<Action> = f.rules.iter().map(|r| r.action).collect();
    assert_eq!(actions, vec![Allow, Deny, Allow], "{f:#?}");
    // a's and b's addresses; .1 and .2 do not make a /31.
    assert_eq!(f.rules[0].sources.len(), 4);
    assert_eq!(w.tcp("100.64.0.2", "c", "100.64.0.3", 22), Allow);
    assert_eq!(w.tcp("100.64.0.2", "c", "100.64.0.3", 23), Deny);
    assert_eq!(w.decide("100.64.0.2", "c", "100.64.0.3", 17, 23), Allow);
}

#[test]
fn empty_port_ranges_make_a_rule_that_never_matches() {
    let w = World {
        nodes: three_nodes(),
        groups: vec![],
        rules: vec![
            rule(
                vec![Selector::Any],
                vec![Selector::Any],
                Proto::Tcp,
                &[(90, 80)],
                Allow,
            ),
            rule(
                vec![Selector::Any],
                vec![Selector::Any],
                Proto::Udp,
                &[(0, 65535)],
                Allow,
            ),
        ],
    };
    let f = w.filter("a");
    assert_eq!(f.rules.len(), 1);
    assert!(f.rules[0].ports.is_empty());
    assert_eq!(w.tcp("100.64.0.2", "a", "100.64.0.1", 85), Deny);
    assert_eq!(w.decide("100.64.0.2", "a", "100.64.0.1", 17, 0), Allow);
}

#[test]
fn proto_numbers_round_trip() {
    for p in [Proto::Icmp, Proto::Tcp, Proto::Udp, Proto::Icmpv6] {
        assert_eq!(Proto::from_number(p.number().unwrap()), Some(p));
    }
    assert_eq!(Proto::Any.number(), None);
    assert_eq!(Proto::from_number(47), None);
}

/// Found by the property tests: a node with no addresses selected by `Any`.
#[test]
fn node_without_addresses_gets_an_empty_filter() {
    let mut nodes = three_nodes();
    nodes.push(node("bare", &[], &[], Some("alice")));
    let w = World {
        nodes,
        groups: vec![],
        rules: vec![allow(vec![Selector::Any], vec![Selector::Any])],
    };
    assert_eq!(w.filter("bare"), Filter::default());
    assert_eq!(w.tcp("100.64.0.1", "bare", "100.64.0.2", 1), Deny);
}
