//! The compiler: rules over selectors → one inbound [`Filter`] per node.
//!
//! Everything that does not depend on the destination node is done once in
//! [`Compiler::new`]: selectors are resolved to node bitsets through tag/user/group indexes,
//! each rule's sources become an aggregated prefix list, port lists are normalised, and
//! rules that can never match are dropped. [`Compiler::inbound`] then only tests one bit
//! (or a few CIDRs) per rule and compacts the result.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::{Action, Filter, FilterRule, Group, NodeInfo, PortRange, Proto, Rule, Selector};

/// Compiles rules (already in evaluation order: policies by priority, then rule order) into
/// per-node inbound filters. Build it once per change of nodes/groups/rules and call
/// [`Compiler::inbound`] for every node whose filter is needed.
#[derive(Debug)]
pub struct Compiler<'a> {
    nodes: &'a [NodeInfo],
    index: HashMap<&'a str, usize>,
    rules: Vec<Prepared>,
}

/// A rule with everything independent of the destination node resolved.
#[derive(Debug)]
struct Prepared {
    /// Nodes matched by the non-CIDR destination selectors.
    dst_nodes: NodeSet,
    /// CIDR destination selectors (they narrow to the node's addresses inside them).
    dst_cidrs: Vec<IpNet>,
    /// Aggregated source prefixes (never empty: such rules are dropped).
    sources: Vec<IpNet>,
    proto: Proto,
    /// Normalised: sorted, merged, empty when it would not restrict anything.
    ports: Vec<PortRange>,
    action: Action,
}

/// A set of node indices.
#[derive(Clone, Debug)]
struct NodeSet(Vec<u64>);

impl NodeSet {
    fn empty(n: usize) -> Self {
        NodeSet(vec![0; n.div_ceil(64)])
    }
    fn full(n: usize) -> Self {
        let mut s = Self::empty(n);
        for i in 0..n {
            s.insert(i);
        }
        s
    }
    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn union_with(&mut self, o: &NodeSet) {
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            *a |= *b;
        }
    }
    fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }
}

/// Selector → node set resolution through precomputed indexes.
struct Resolver<'a> {
    n: usize,
    index: &'a HashMap<&'a str, usize>,
    tags: HashMap<&'a str, NodeSet>,
    groups: HashMap<&'a str, NodeSet>,
}

impl<'a> Resolver<'a> {
    fn new(nodes: &'a [NodeInfo], groups: &'a [Group], index: &'a HashMap<&'a str, usize>) -> Self {
        let n = nodes.len();
        let mut tags: HashMap<&str, NodeSet> = HashMap::new();
        let mut users: HashMap<&str, NodeSet> = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            for t in &node.tags {
                tags.entry(t.as_str())
                    .or_insert_with(|| NodeSet::empty(n))
                    .insert(i);
            }
            if let Some(u) = &node.user {
                users
                    .entry(u.as_str())
                    .or_insert_with(|| NodeSet::empty(n))
                    .insert(i);
            }
        }
        let mut gsets: HashMap<&str, NodeSet> = HashMap::new();
        for g in groups {
            // Several groups with one id are one group: their members add up.
            let set = gsets
                .entry(g.id.as_str())
                .or_insert_with(|| NodeSet::empty(n));
            for id in &g.nodes {
                if let Some(&i) = index.get(id.as_str()) {
                    set.insert(i);
                }
            }
            for t in &g.tags {
                if let Some(s) = tags.get(t.as_str()) {
                    set.union_with(s);
                }
            }
            for u in &g.users {
                if let Some(s) = users.get(u.as_str()) {
                    set.union_with(s);
                }
            }
        }
        Resolver {
            n,
            index,
            tags,
            groups: gsets,
        }
    }

    /// Adds the nodes `s` selects to `set`; CIDRs select no nodes.
    fn add(&self, s: &Selector, set: &mut NodeSet) {
        match s {
            Selector::Any => *set = NodeSet::full(self.n),
            Selector::Group(g) => {
                if let Some(gs) = self.groups.get(g.as_str()) {
                    set.union_with(gs);
                }
            }
            Selector::Tag(t) => {
                if let Some(ts) = self.tags.get(t.as_str()) {
                    set.union_with(ts);
                }
            }
            Selector::Node(id) => {
                if let Some(&i) = self.index.get(id.as_str()) {
                    set.insert(i);
                }
            }
            Selector::Cidr(_) => {}
        }
    }
}

fn host(a: IpAddr) -> IpNet {
    IpNet::from(a)
}

/// Sorted, merged port ranges; `None` when the rule can never match because every range is
/// empty. Ranges are dropped where they mean nothing (ICMP rules) and where they cover every
/// port of a TCP/UDP rule; on an any-protocol rule even a full range still restricts the rule
/// to TCP/UDP, so it stays.
fn normalize_ports(proto: Proto, ports: &[PortRange]) -> Option<Vec<PortRange>> {
    if ports.is_empty() || !proto.uses_ports() {
        return Some(Vec::new());
    }
    let mut v: Vec<PortRange> = ports
        .iter()
        .copied()
        .filter(|r| r.first <= r.last)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let mut out: Vec<PortRange> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(l) if u32::from(r.first) <= u32::from(l.last) + 1 => l.last = l.last.max(r.last),
            _ => out.push(r),
        }
    }
    if proto != Proto::Any
        && out
            == [PortRange {
                first: 0,
                last: u16::MAX,
            }]
    {
        out.clear();
    }
    Some(out)
}

/// What rules are merged by: one prefix list, protocol and ports.
type RuleKey<'k> = (&'k [IpNet], Proto, &'k [PortRange]);

/// A rule as staged for one node before compaction.
struct Staged<'r> {
    sources: std::borrow::Cow<'r, [IpNet]>,
    dests: Vec<IpNet>,
    proto: Proto,
    ports: &'r [PortRange],
    action: Action,
}

impl<'a> Compiler<'a> {
    /// Indexes `nodes` and `groups` and resolves every rule's selectors. Rules must be in
    /// evaluation order. Node ids are expected to be unique (the first one wins).
    pub fn new(nodes: &'a [NodeInfo], groups: &'a [Group], rules: &'a [Rule]) -> Self {
        let n = nodes.len();
        let mut index = HashMap::with_capacity(n);
        for (i, node) in nodes.iter().enumerate() {
            index.entry(node.id.as_str()).or_insert(i);
        }
        let resolver = Resolver::new(nodes, groups, &index);
        let mut prepared = Vec::with_capacity(rules.len());
        for r in rules {
            let Some(ports) = normalize_ports(r.proto, &r.ports) else {
                continue;
            };
            let mut dst_nodes = NodeSet::empty(n);
            let mut dst_cidrs = Vec::new();
            for s in &r.destinations {
                match s {
                    Selector::Cidr(c) => dst_cidrs.push(*c),
                    _ => resolver.add(s, &mut dst_nodes),
                }
            }
            if dst_cidrs.is_empty() && dst_nodes.is_empty() {
                continue;
            }
            let mut src_nodes = NodeSet::empty(n);
            let mut prefixes = Vec::new();
            for s in &r.sources {
                match s {
                    Selector::Cidr(c) => prefixes.push(*c),
                    _ => resolver.add(s, &mut src_nodes),
                }
            }
            for i in src_nodes.iter() {
                prefixes.extend(nodes[i].addresses.iter().copied().map(host));
            }
            if prefixes.is_empty() {
                continue;
            }
            prepared.push(Prepared {
                dst_nodes,
                dst_cidrs,
                sources: IpNet::aggregate(&prefixes),
                proto: r.proto,
                ports,
                action: r.action,
            });
        }
        drop(resolver);
        Compiler {
            nodes,
            index,
            rules: prepared,
        }
    }

    /// The filter node `node_id` applies to packets arriving at it. An unknown node gets the
    /// empty filter (deny everything).
    ///
    /// The output is compacted without changing any decision: source and destination
    /// prefixes are aggregated exactly; within a run of consecutive rules with the same action
    /// (whose order cannot matter) rules that differ only in sources, or only in
    /// destinations, are merged; a rule whose packets an earlier rule all matches is dropped
    /// (it can never decide anything), and so are deny rules at the end (the default is deny).
    pub fn inbound(&self, node_id: &str) -> Filter {
        let Some(&i) = self.index.get(node_id) else {
            return Filter::default();
        };
        let node = &self.nodes[i];
        if node.addresses.is_empty() {
            // Nothing can be addressed to it.
            return Filter::default();
        }
        let all: Vec<IpNet> = IpNet::aggregate(&node.addresses.iter().copied().map(host).collect());
        let mut staged: Vec<Staged<'_>> = Vec::new();
        for r in &self.rules {
            let dests = if r.dst_nodes.contains(i) {
                all.clone()
            } else {
                let inside: Vec<IpNet> = node
                    .addresses
                    .iter()
                    .filter(|a| r.dst_cidrs.iter().any(|c| c.contains(*a)))
                    .copied()
                    .map(host)
                    .collect();
                if inside.is_empty() {
                    continue;
                }
                IpNet::aggregate(&inside)
            };
            staged.push(Staged {
                sources: std::borrow::Cow::Borrowed(&r.sources),
                dests,
                proto: r.proto,
                ports: &r.ports,
                action: r.action,
            });
        }
        // Merging can make a rule redundant and dropping one can join two runs: repeat until
        // neither changes anything (each round that continues drops at least one rule).
        let mut rules = staged;
        loop {
            let mut merged: Vec<Staged<'_>> = Vec::with_capacity(rules.len());
            let mut rest = rules;
            while !rest.is_empty() {
                let action = rest[0].action;
                let len = rest.iter().take_while(|s| s.action == action).count();
                let tail = rest.split_off(len);
                merged.extend(merge_run(rest));
                rest = tail;
            }
            let before = merged.len();
            rules = drop_shadowed(merged);
            while rules.last().is_some_and(|r| r.action == Action::Deny) {
                rules.pop();
            }
            if rules.len() == before {
                break;
            }
        }
        let rules = rules
            .into_iter()
            .map(|s| FilterRule {
                sources: s.sources.into_owned(),
                destinations: s.dests,
                proto: s.proto,
                ports: s.ports.to_vec(),
                action: s.action,
            })
            .collect();
        Filter { rules }
    }
}

/// Drops every rule whose packets are all matched by an earlier rule (whatever the actions:
/// the earlier rule decides them all). Compares only with rules kept, which is enough since
/// "covers" is transitive.
fn drop_shadowed(rules: Vec<Staged<'_>>) -> Vec<Staged<'_>> {
    let mut kept: Vec<Staged<'_>> = Vec::with_capacity(rules.len());
    for r in rules {
        if !kept.iter().any(|e| covers(e, &r)) {
            kept.push(r);
        }
    }
    kept
}

/// Whether every packet `r` matches is matched by `e`. Structural and conservative: it may
/// say no for some covered rules, never yes for an uncovered one.
fn covers(e: &Staged<'_>, r: &Staged<'_>) -> bool {
    proto_ports_cover(e, r) && nets_cover(&e.dests, &r.dests) && nets_cover(&e.sources, &r.sources)
}

fn proto_ports_cover(e: &Staged<'_>, r: &Staged<'_>) -> bool {
    if e.proto != Proto::Any && e.proto != r.proto {
        return false;
    }
    if e.ports.is_empty() {
        return true;
    }
    // `e` only matches TCP/UDP on its ports (normalised lists: sorted, merged, non-empty
    // ranges), so `r` must be limited to TCP/UDP ports inside them.
    const ALL: &[PortRange] = &[PortRange {
        first: 0,
        last: u16::MAX,
    }];
    let r_ports = match (r.proto, r.ports.is_empty()) {
        (_, false) => r.ports,
        (Proto::Tcp | Proto::Udp, true) => ALL,
        _ => return false,
    };
    r_ports.iter().all(|x| {
        let i = e.ports.partition_point(|p| p.first <= x.first);
        i > 0 && e.ports[i - 1].last >= x.last
    })
}

/// Whether the prefixes `r` are all inside `e`. Both come from [`IpNet::aggregate`]: sorted
/// and disjoint, so the only candidate for a prefix is the last one of `e` not after it.
fn nets_cover(e: &[IpNet], r: &[IpNet]) -> bool {
    r.iter().all(|x| {
        let i = e.partition_point(|p| p <= x);
        i > 0 && e[i - 1].contains(x)
    })
}

/// Compacts a run of rules with one action: their order cannot change any decision, so rules
/// with equal (destinations, protocol, ports) become one with the union of their sources, then
/// rules with equal (sources, protocol, ports) one with the union of their destinations.
/// Output keeps the order of first appearance.
fn merge_run(run: Vec<Staged<'_>>) -> Vec<Staged<'_>> {
    if run.len() < 2 {
        return run;
    }
    // Keys borrow from the rules, so first work out who joins whom, then move.
    let by_dests = first_with_same(&run, |s| (&s.dests[..], s.proto, s.ports));
    let run = fold(
        run,
        &by_dests,
        |s| s.sources.to_vec(),
        |s, v| s.sources = std::borrow::Cow::Owned(v),
    );
    let by_sources = first_with_same(&run, |s| (&s.sources[..], s.proto, s.ports));
    fold(run, &by_sources, |s| s.dests.clone(), |s, v| s.dests = v)
}

/// For each rule, the index of the first rule with the same key (itself if none before).
fn first_with_same<'s, 'r: 's>(
    run: &'s [Staged<'r>],
    key: impl Fn(&'s Staged<'r>) -> RuleKey<'s>,
) -> Vec<usize> {
    let mut at: HashMap<RuleKey<'s>, usize> = HashMap::with_capacity(run.len());
    run.iter()
        .enumerate()
        .map(|(k, s)| *at.entry(key(s)).or_insert(k))
        .collect()
}

/// Merges every rule into the first with its key: the prefixes `take` gives are unioned,
/// aggregated once per merged rule, and stored with `set`.
fn fold<'r>(
    run: Vec<Staged<'r>>,
    first: &[usize],
    take: impl Fn(&Staged<'r>) -> Vec<IpNet>,
    set: impl Fn(&mut Staged<'r>, Vec<IpNet>),
) -> Vec<Staged<'r>> {
    if first.iter().enumerate().all(|(k, f)| k == *f) {
        return run;
    }
    let mut extra: HashMap<usize, Vec<IpNet>> = HashMap::new();
    for (k, s) in run.iter().enumerate() {
        if first[k] != k {
            let v = extra.entry(first[k]).or_default();
            v.extend(take(s));
        }
    }
    let mut out = Vec::with_capacity(run.len() - extra.len());
    for (k, mut s) in run.into_iter().enumerate() {
        if first[k] != k {
            continue;
        }
        if let Some(mut v) = extra.remove(&k) {
            v.extend(take(&s));
            set(&mut s, IpNet::aggregate(&v));
        }
        out.push(s);
    }
    out
}
