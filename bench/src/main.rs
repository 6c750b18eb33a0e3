//! cvlan-bench: reproducible benchmarks for CloudVLAN — each subcommand measures one part
//! against a baseline run in the same process and prints ratios.

use clap::{Parser, Subcommand};

mod fastpath;
mod gateway;
mod ipam;
mod netmap;
mod policy;
mod wg;

#[derive(Parser)]
#[command(
    name = "cvlan-bench",
    version,
    about = "CloudVLAN benchmarks (fast path, IPAM, …)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// IPAM allocations per second at N concurrent clients, on SQLite and/or PostgreSQL.
    Ipam(ipam::Args),
    /// Gateway fast path: wg-decrypt → acl → route → wg-encrypt on one core, vs the AEAD limit and boringtun.
    Fastpath(fastpath::Args),
    /// TCP throughput between two lab namespaces: raw veth, wireguard-go, boringtun-cli,
    /// cvlan-wg and cvlan agents side by side (root; iperf3, wg).
    Wg(wg::Args),
    /// Through the gateway (vrouter-dpdk + vrouterd) vs direct agent to agent: TCP throughput
    /// and ping latency between the same two agents (root; iperf3, ethtool).
    Gateway(gateway::Args),
    /// Policy compiler: compile time for every node's filter; Matcher::decide vs the linear Filter::evaluate.
    Policy(policy::Args),
    /// Network-map hub: time from one change to every connected node's delta, vs rebuilding every map.
    Netmap(netmap::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Ipam(a) => ipam::run(a),
        Cmd::Fastpath(a) => fastpath::run(a),
        Cmd::Wg(a) => wg::run(a),
        Cmd::Gateway(a) => gateway::run(a),
        Cmd::Policy(a) => policy::run(a),
        Cmd::Netmap(a) => netmap::run(a),
    }
}
