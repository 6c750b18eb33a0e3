//! `cvlan-bench policy`: the policy compiler and the per-packet filter.
//!
//! One synthetic tenant per size (nodes with sequential IPv4+IPv6 addresses as the IPAM hands
//! them out, users, tags, groups over ids/tags/users, rules over every selector kind with
//! allow and deny): first the time to compile every node's inbound filter, then, on a sample
//! of nodes, `Matcher::decide` against the linear `Filter::evaluate` baseline on the same
//! packets in the same run (decisions are cross-checked).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::bail;
use comfy_table::Table;
use cvlan_policy::{
    Action, Compiler, Filter, Group, IpNet, Matcher, NodeInfo, Packet, PortRange, Proto, Rule,
    Selector,
};
use serde_json::json;

/// Flags of `cvlan-bench policy`.
#[derive(clap::Args)]
pub struct Args {
    /// Tenant sizes (nodes) to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000usize, 10_000])]
    nodes: Vec<usize>,
    /// Policy rules per tenant.
    #[arg(long, default_value_t = 100)]
    rules: usize,
    /// Groups per tenant.
    #[arg(long, default_value_t = 50)]
    groups: usize,
    /// Nodes whose filters are measured per packet.
    #[arg(long, default_value_t = 50)]
    sample: usize,
    /// Packets per sampled node.
    #[arg(long, default_value_t = 20_000)]
    packets: usize,
    /// Seed of the synthetic tenant.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Smoke run (1,000 nodes, a few sampled nodes; about a second).
    #[arg(long)]
    quick: bool,
    /// Write results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(serde::Serialize)]
struct Row {
    nodes: usize,
    rules: usize,
    groups: usize,
    compile_all_ms: f64,
    compile_per_node_us: f64,
    avg_filter_rules: f64,
    avg_filter_prefixes: f64,
    matcher_build_us: f64,
    decide_ns: f64,
    evaluate_ns: f64,
    speedup: f64,
    allowed_pct: f64,
}

/// splitmix64: a small deterministic generator so runs are reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

fn v4(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x6440_0001u32 + i as u32)) // 100.64.0.1 + i
}

fn v6(i: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from((0xfd7a_115c_a1e0u128 << 80) + 1 + i as u128))
}

const TAGS: usize = 20;

fn world(
    n: usize,
    n_groups: usize,
    n_rules: usize,
    seed: u64,
) -> (Vec<NodeInfo>, Vec<Group>, Vec<Rule>) {
    let mut r = Rng(seed);
    let users = (n / 5).max(1);
    let nodes: Vec<NodeInfo> = (0..n)
        .map(|i| NodeInfo {
            id: format!("node-{i}"),
            addresses: vec![v4(i), v6(i)],
            tags: (0..r.below(3))
                .map(|_| format!("tag-{}", r.below(TAGS)))
                .collect(),
            user: r.chance(80).then(|| format!("user-{}", r.below(users))),
        })
        .collect();
    let groups: Vec<Group> = (0..n_groups)
        .map(|g| Group {
            id: format!("group-{g}"),
            nodes: (0..r.below(20))
                .map(|_| format!("node-{}", r.below(n)))
                .collect(),
            tags: (0..r.below(2))
                .map(|_| format!("tag-{}", r.below(TAGS)))
                .collect(),
            users: (0..r.below(10))
                .map(|_| format!("user-{}", r.below(users)))
                .collect(),
        })
        .collect();
    let selector = |r: &mut Rng, as_source: bool| match r.below(20) {
        0 => Selector::Any,
        1..=9 => Selector::Group(format!("group-{}", r.below(n_groups))),
        10..=13 => Selector::Tag(format!("tag-{}", r.below(TAGS))),
        14..=17 => Selector::Node(format!("node-{}", r.below(n))),
        _ => {
            // A block of the tenant's range (as a source: sometimes outside addresses too).
            let len = 24 + r.below(5) as u8;
            let base = if as_source && r.chance(30) {
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0))
            } else {
                v4(r.below(n))
            };
            Selector::Cidr(IpNet::new(base, len).map(|x| x.trunc()).unwrap_or_default())
        }
    };
    let rules: Vec<Rule> = (0..n_rules)
        .map(|_| {
            let proto = match r.below(10) {
                0..=4 => Proto::Tcp,
                5..=6 => Proto::Udp,
                7 => Proto::Icmp,
                _ => Proto::Any,
            };
            let ports = if matches!(proto, Proto::Tcp | Proto::Udp) && r.chance(70) {
                (0..1 + r.below(3))
                    .map(|_| {
                        let p = [22u16, 53, 80, 443, 5432, 8000, 9000][r.below(7)];
                        PortRange {
                            first: p,
                            last: if r.chance(20) { p + 99 } else { p },
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            };
            Rule {
                sources: (0..1 + r.below(2))
                    .map(|_| selector(&mut r, true))
                    .collect(),
                destinations: (0..1 + r.below(2))
                    .map(|_| selector(&mut r, false))
                    .collect(),
                proto,
                ports,
                action: if r.chance(20) {
                    Action::Deny
                } else {
                    Action::Allow
                },
            }
        })
        .collect();
    (nodes, groups, rules)
}

/// Packets to node `i`: mostly from other nodes of the tenant, some from outside.
fn packets(r: &mut Rng, n: usize, i: usize, count: usize) -> Vec<Packet> {
    (0..count)
        .map(|_| {
            let six = r.chance(30);
            let j = r.below(n);
            let (src, dst) = match (six, r.chance(95)) {
                (false, true) => (v4(j), v4(i)),
                (false, false) => (
                    IpAddr::V4(Ipv4Addr::new(198, 51, 100, r.below(256) as u8)),
                    v4(i),
                ),
                (true, _) => (v6(j), v6(i)),
            };
            let (proto, dst_port) = match r.below(10) {
                0..=5 => (
                    6u8,
                    [22u16, 53, 80, 443, 5432, 8000, 8050, 9000, 12345][r.below(9)],
                ),
                6..=7 => (17, [53u16, 123, 5000, 9050][r.below(4)]),
                _ => (if six { 58 } else { 1 }, 0),
            };
            Packet {
                src,
                dst,
                proto,
                dst_port,
            }
        })
        .collect()
}

fn per_packet(d: Duration, n: usize) -> f64 {
    d.as_nanos() as f64 / n.max(1) as f64
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (sizes, sample, per) = if a.quick {
        (vec![1_000], a.sample.min(5), a.packets.min(5_000))
    } else {
        (a.nodes.clone(), a.sample, a.packets)
    };
    if sizes.iter().any(|&n| n == 0 || n > 1_000_000) || a.groups == 0 {
        bail!("--nodes must be 1..=1,000,000 and --groups at least 1");
    }
    let mut rows = Vec::new();
    for &n in &sizes {
        eprintln!("[policy] {n} nodes, {} rules, {} groups", a.rules, a.groups);
        let (nodes, groups, rules) = world(n, a.groups, a.rules, a.seed);

        // Compile every node's filter, as the control plane does on a full rebuild.
        let t0 = Instant::now();
        let c = Compiler::new(&nodes, &groups, &rules);
        let filters: Vec<Filter> = nodes.iter().map(|x| c.inbound(&x.id)).collect();
        let compile = t0.elapsed();
        let total_rules: usize = filters.iter().map(|f| f.rules.len()).sum();
        let total_prefixes: usize = filters
            .iter()
            .flat_map(|f| &f.rules)
            .map(|r| r.sources.len() + r.destinations.len())
            .sum();

        // Per packet, on a sample of nodes: the same packets through both evaluators.
        let mut r = Rng(a.seed ^ 0x5eed);
        let (mut build, mut fast, mut slow) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let (mut count, mut allowed) = (0usize, 0usize);
        for k in 0..sample.min(n) {
            let i = (k * n) / sample.min(n);
            let f = &filters[i];
            let t = Instant::now();
            let m = Matcher::new(f);
            build += t.elapsed();
            let ps = packets(&mut r, n, i, per);
            for p in &ps {
                let d = m.decide(p);
                if d != f.evaluate(p) {
                    bail!("matcher and linear scan disagree on {p:?} at node-{i}");
                }
                allowed += usize::from(d == Action::Allow);
            }
            let t = Instant::now();
            for p in &ps {
                black_box(m.decide(black_box(p)));
            }
            fast += t.elapsed();
            let t = Instant::now();
            for p in &ps {
                black_box(f.evaluate(black_box(p)));
            }
            slow += t.elapsed();
            count += ps.len();
        }
        let sampled = sample.min(n);
        let (decide_ns, evaluate_ns) = (per_packet(fast, count), per_packet(slow, count));
        rows.push(Row {
            nodes: n,
            rules: a.rules,
            groups: a.groups,
            compile_all_ms: compile.as_secs_f64() * 1e3,
            compile_per_node_us: compile.as_secs_f64() * 1e6 / n as f64,
            avg_filter_rules: total_rules as f64 / n as f64,
            avg_filter_prefixes: total_prefixes as f64 / n as f64,
            matcher_build_us: build.as_secs_f64() * 1e6 / sampled.max(1) as f64,
            decide_ns,
            evaluate_ns,
            speedup: evaluate_ns / decide_ns.max(f64::MIN_POSITIVE),
            allowed_pct: 100.0 * allowed as f64 / count.max(1) as f64,
        });
    }
    let mut t = Table::new();
    t.set_header([
        "nodes",
        "rules/groups",
        "compile all (ms)",
        "per node (µs)",
        "filter rules (avg)",
        "prefixes (avg)",
        "Matcher::new (µs)",
        "decide (ns/pkt)",
        "evaluate (ns/pkt)",
        "decide vs evaluate",
        "allowed",
    ]);
    for r in &rows {
        t.add_row([
            r.nodes.to_string(),
            format!("{}/{}", r.rules, r.groups),
            format!("{:.1}", r.compile_all_ms),
            format!("{:.1}", r.compile_per_node_us),
            format!("{:.1}", r.avg_filter_rules),
            format!("{:.0}", r.avg_filter_prefixes),
            format!("{:.0}", r.matcher_build_us),
            format!("{:.1}", r.decide_ns),
            format!("{:.1}", r.evaluate_ns),
            format!("{:.1}× faster", r.speedup),
            format!("{:.0}%", r.allowed_pct),
        ]);
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{t}");
    }
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_vec_pretty(&json!({ "rows": rows }))?)?;
    }
    Ok(())
}
