//! A straightforward evaluator of the *uncompiled* rules, kept deliberately simple and
//! independent of the compiler (no indexes, no prefixes, no merging) so that the property
//! tests compare two different derivations of the same semantics.

use std::net::IpAddr;

use crate::{Action, Group, NodeInfo, Packet, Proto, Rule, Selector};

/// Decides a packet from `src` arriving at node `dst_node` by walking `rules` in order and
/// evaluating every selector directly against `nodes` and `groups`.
///
/// `src` is the address the sources are checked against (normally `p.src`); the
/// destination address, protocol and port come from `p`. An unknown `dst_node`, or a
/// `p.dst` that is not one of its addresses, is denied like any unmatched packet.
pub fn decide(
    nodes: &[NodeInfo],
    groups: &[Group],
    rules: &[Rule],
    src: IpAddr,
    dst_node: &str,
    p: &Packet,
) -> Action {
    let Some(dst) = nodes.iter().find(|n| n.id == dst_node) else {
        return Action::Deny;
    };
    for rule in rules {
        let dst_ok = rule
            .destinations
            .iter()
            .any(|s| dst_selected(s, dst, p.dst, groups));
        let src_ok = rule
            .sources
            .iter()
            .any(|s| src_selected(s, src, nodes, groups));
        if dst_ok && src_ok && proto_ok(rule, p) {
            return rule.action;
        }
    }
    Action::Deny
}

fn node_selected(s: &Selector, n: &NodeInfo, groups: &[Group]) -> bool {
    match s {
        Selector::Any => true,
        Selector::Node(id) => n.id == *id,
        Selector::Tag(t) => n.tags.contains(t),
        Selector::Group(g) => groups.iter().filter(|gr| gr.id == *g).any(|gr| {
            gr.nodes.contains(&n.id)
                || n.tags.iter().any(|t| gr.tags.contains(t))
                || n.user.as_ref().is_some_and(|u| gr.users.contains(u))
        }),
        // A CIDR selects addresses, not nodes.
        Selector::Cidr(_) => false,
    }
}

fn dst_selected(s: &Selector, n: &NodeInfo, dst: IpAddr, groups: &[Group]) -> bool {
    if !n.addresses.contains(&dst) {
        return false;
    }
    match s {
        Selector::Cidr(c) => c.contains(&dst),
        _ => node_selected(s, n, groups),
    }
}

fn src_selected(s: &Selector, src: IpAddr, nodes: &[NodeInfo], groups: &[Group]) -> bool {
    match s {
        Selector::Cidr(c) => c.contains(&src),
        _ => nodes
            .iter()
            .any(|n| n.addresses.contains(&src) && node_selected(s, n, groups)),
    }
}

fn proto_ok(rule: &Rule, p: &Packet) -> bool {
    let proto_matches = match rule.proto {
        Proto::Any => true,
        Proto::Icmp => p.proto == 1,
        Proto::Tcp => p.proto == 6,
        Proto::Udp => p.proto == 17,
        Proto::Icmpv6 => p.proto == 58,
    };
    if !proto_matches {
        return false;
    }
    match rule.proto {
        Proto::Icmp | Proto::Icmpv6 => true,
        Proto::Any | Proto::Tcp | Proto::Udp => {
            rule.ports.is_empty()
                || ((p.proto == 6 || p.proto == 17)
                    && rule
                        .ports
                        .iter()
                        .any(|r| r.first <= p.dst_port && p.dst_port <= r.last))
        }
    }
}
