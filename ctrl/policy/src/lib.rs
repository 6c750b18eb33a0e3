//! Policy compiler: tenant rules over groups, tags, nodes and CIDRs to per-node inbound
//! packet filters.
//!
//! This crate is a **pure core**: no I/O, no clock, no locks, no async. The control plane
//! resolves names to ids and calls [`Compiler`]; the data plane turns each [`Filter`] it
//! receives into a [`Matcher`] once and asks it about every packet.
//!
//! Three evaluators that must agree (the property tests check it on random worlds):
//! - [`Filter::evaluate`]: a linear scan of a compiled filter — the readable baseline;
//! - [`Matcher::decide`]: the same decision from interval tables and rule bitsets, for the
//!   per-packet path (no allocation, no locking, `O(log n + rules/64)`);
//! - [`reference::decide`]: walks the *uncompiled* rules and evaluates selectors directly
//!   against the node list, written without any of the compiler's machinery.
//!
//! # Semantics
//! A rule applies to node N's inbound filter when one of its destination selectors matches
//! N: [`Selector::Any`] matches every node; [`Selector::Group`] matches when N's id is a
//! member, N carries one of the group's tags, or N's user is a member; [`Selector::Tag`]
//! when N carries the tag; [`Selector::Node`] when the id is N's; [`Selector::Cidr`] when it
//! contains one of N's addresses, and the destinations are then narrowed to those addresses.
//! Sources become prefixes: `Any` → every node's addresses, `Group`/`Tag`/`Node` → the
//! matching nodes' addresses, `Cidr` → the CIDR. Unknown group or node ids match nothing.
//! The first matching rule decides; no match means [`Action::Deny`].
//!
//! Ports (see [`FilterRule::ports`]) are only looked at for TCP and UDP packets: an empty
//! list means every port; a non-empty list on a TCP, UDP or any-protocol rule matches only
//! TCP/UDP packets whose destination port is in one of the ranges (other protocols carry
//! no port, so "any protocol on port 22" does not match ICMP); on an ICMP/ICMPv6 rule the
//! list means nothing and is ignored.

use std::net::IpAddr;

pub use ipnet::IpNet;

mod compile;
mod matcher;
pub mod reference;

pub use compile::Compiler;
pub use matcher::{Matcher, MatcherStats};

/// IP protocol a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    /// Every IP protocol.
    Any,
    /// ICMP (IP protocol 1).
    Icmp,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMPv6 (58).
    Icmpv6,
}

impl Proto {
    /// The IP protocol number, `None` for [`Proto::Any`].
    pub fn number(self) -> Option<u8> {
        match self {
            Proto::Any => None,
            Proto::Icmp => Some(1),
            Proto::Tcp => Some(6),
            Proto::Udp => Some(17),
            Proto::Icmpv6 => Some(58),
        }
    }

    /// The protocol with this IP protocol number, `None` when it is not one of ours.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            1 => Some(Proto::Icmp),
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            58 => Some(Proto::Icmpv6),
            _ => None,
        }
    }

    /// Whether a packet of IP protocol `n` is of this protocol.
    pub fn matches(self, n: u8) -> bool {
        match self.number() {
            None => true,
            Some(x) => x == n,
        }
    }

    /// Whether this rule protocol gives its port list a meaning (TCP, UDP, or any protocol,
    /// where the list restricts the rule to TCP/UDP). ICMP rules ignore ports.
    pub fn uses_ports(self) -> bool {
        matches!(self, Proto::Any | Proto::Tcp | Proto::Udp)
    }
}

/// IP protocol numbers that carry a destination port.
pub(crate) const TCP: u8 = 6;
pub(crate) const UDP: u8 = 17;

/// What a matching rule does with the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Deliver the packet.
    Allow,
    /// Drop the packet.
    Deny,
}

/// An inclusive range of destination ports. A range with `first > last` contains no port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port of the range.
    pub first: u16,
    /// Last port of the range (inclusive).
    pub last: u16,
}

impl PortRange {
    /// One port.
    pub fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }

    /// Whether `port` lies in the range.
    pub fn contains(self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// A compiled per-node INBOUND filter: first matching rule wins, no match = Deny.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Rules in evaluation order.
    pub rules: Vec<FilterRule>,
}

/// One rule of a compiled [`Filter`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterRule {
    /// The packet's source address must be in one of these prefixes.
    pub sources: Vec<IpNet>,
    /// The packet's destination address must be in one of these prefixes.
    pub destinations: Vec<IpNet>,
    /// The packet's IP protocol must be this one.
    pub proto: Proto,
    /// Empty = all ports; only meaningful for TCP/UDP. Non-empty on a TCP, UDP or
    /// any-protocol rule: only TCP/UDP packets whose destination port is in one of the ranges
    /// match. Ignored on ICMP/ICMPv6 rules.
    pub ports: Vec<PortRange>,
    /// What happens to a matching packet.
    pub action: Action,
}

impl FilterRule {
    /// Whether this rule matches `p` (sources, destinations, protocol and ports).
    pub fn matches(&self, p: &Packet) -> bool {
        self.proto.matches(p.proto)
            && ports_match(self.proto, &self.ports, p)
            && self.sources.iter().any(|n| n.contains(&p.src))
            && self.destinations.iter().any(|n| n.contains(&p.dst))
    }
}

/// The port condition of a rule, shared by [`FilterRule::matches`] (the reference evaluator
/// has its own copy on purpose).
fn ports_match(proto: Proto, ports: &[PortRange], p: &Packet) -> bool {
    if ports.is_empty() || !proto.uses_ports() {
        return true;
    }
    (p.proto == TCP || p.proto == UDP) && ports.iter().any(|r| r.contains(p.dst_port))
}

/// What a filter looks at. dst_port is 0 when the protocol has no ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Source address (the remote node).
    pub src: IpAddr,
    /// Destination address (one of this node's).
    pub dst: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, …).
    pub proto: u8,
    /// TCP/UDP destination port, 0 for other protocols.
    pub dst_port: u16,
}

impl Filter {
    /// Decides `p` by scanning the rules in order: the first match's action, else Deny.
    /// Linear in the filter's size; the data plane uses [`Matcher`] instead.
    pub fn evaluate(&self, p: &Packet) -> Action {
        self.rules
            .iter()
            .find(|r| r.matches(p))
            .map_or(Action::Deny, |r| r.action)
    }
}

/// Picks out the nodes (as destinations) or addresses (as sources) a rule is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Selector {
    /// Every node of the tenant.
    Any,
    /// A group by id: its member nodes, nodes carrying its tags, and its users' nodes.
    Group(String),
    /// Nodes carrying this tag.
    Tag(String),
    /// One node by id.
    Node(String),
    /// Addresses in this prefix (as a destination: the node's addresses inside it).
    Cidr(IpNet),
}

/// A policy rule, compiler input. Rules are given in evaluation order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Who may send (any selector matching the source is enough).
    pub sources: Vec<Selector>,
    /// Who receives (any selector matching the destination node is enough).
    pub destinations: Vec<Selector>,
    /// IP protocol.
    pub proto: Proto,
    /// Destination ports; see [`FilterRule::ports`].
    pub ports: Vec<PortRange>,
    /// Allow or deny.
    pub action: Action,
}

/// A group of nodes: listed by id, by tag, and by owning user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Group {
    /// Group id (what [`Selector::Group`] names).
    pub id: String,
    /// Member node ids.
    pub nodes: Vec<String>,
    /// Nodes carrying any of these tags are members.
    pub tags: Vec<String>,
    /// Nodes owned by any of these users are members.
    pub users: Vec<String>,
}

/// A node as the compiler sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id (what [`Selector::Node`] names and [`Compiler::inbound`] takes).
    pub id: String,
    /// The node's overlay addresses (IPv4 and IPv6).
    pub addresses: Vec<IpAddr>,
    /// Tags the node carries.
    pub tags: Vec<String>,
    /// The owning user, if any (tagged/service nodes may have none).
    pub user: Option<String>,
}

#[cfg(test)]
mod tests;
