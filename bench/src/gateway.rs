//! `cvlan-bench gateway`: TCP throughput (iperf3) and round-trip latency (ping) between two
//! cvlan agents, in one run and on the same two hosts,
//! - through the gateway: the CVLAN in hub-and-spoke mode, every packet decrypted, filtered,
//!   routed and re-encrypted by the fast path inside `vrouter-dpdk` (DPDK on af_packet ports,
//!   one point-to-point link per agent) with `vrouterd` beside it;
//! - direct: the same CVLAN switched to mesh mode, the agents talking over the lab bridge —
//!
//! and prints the gateway path as a ratio of the direct one. The agents, their hosts and the
//! control plane stay the same between the rows: only the CVLAN's mode changes.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use cvlan_lab::cvlan::{Agent, Binaries, ControlPlane, Secret};
use cvlan_lab::gateway::{Gateway, GatewayBinaries, Port, link_agent};
use cvlan_lab::{Host, Lab, wait_until};
use serde::Serialize;
use serde_json::Value;

use crate::wg::{iperf, on_path};

/// Arguments of `cvlan-bench gateway`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Smoke run: 2 s of iperf3 and 50 pings per row.
    #[arg(long)]
    quick: bool,
    /// Seconds per iperf3 measurement [default: 10, or 2 with --quick].
    #[arg(long)]
    seconds: Option<u32>,
    /// Pings per latency measurement (10 ms apart) [default: 500, or 50 with --quick].
    #[arg(long)]
    pings: Option<u32>,
    /// Directory with the cvlan and gateway binaries [default: next to this binary].
    #[arg(long, env = "CVLAN_BENCH_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Write the rows as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
struct Row {
    path: &'static str,
    gbps: f64,
    retransmits: u64,
    rtt_avg_ms: f64,
    rtt_p50_ms: f64,
    rtt_p99_ms: f64,
    lost: u32,
}

const UNDERLAY: &str = "10.255.0.1:51820";

/// Runs the benchmark.
///
/// # Errors
/// When the lab, the control plane, the gateway or a measurement fails.
pub fn run(args: Args) -> Result<()> {
    let seconds = args.seconds.unwrap_or(if args.quick { 2 } else { 10 });
    let pings = args.pings.unwrap_or(if args.quick { 50 } else { 500 });
    for tool in ["iperf3", "ping", "ip", "ethtool"] {
        if !on_path(tool) {
            bail!(
                "{tool} is not installed: apt-get install -y iperf3 iputils-ping iproute2 ethtool"
            );
        }
    }
    let bins = Binaries::find(args.bin_dir.as_deref())?;
    let gbins = GatewayBinaries::find(args.bin_dir.as_deref())?;
    let lab = Lab::new().context("building the lab (root and iproute2 are needed)")?;
    let ctrl = lab.add_host("ctrl")?;
    let cp = ControlPlane::start(&ctrl, &bins)?;
    cp.create_tenant("bench")?;
    cp.ctl([
        "policy",
        "create",
        "--tenant",
        "bench",
        "allow-all",
        "--rule",
        "src=any dst=any action=allow",
    ])?;
    cp.ctl([
        "cvlan",
        "create",
        "--tenant",
        "bench",
        "bench",
        "--ipv4",
        "10.77.0.0/24",
        "--mode",
        "hub-and-spoke",
    ])?;
    cp.ctl([
        "vrouter",
        "create",
        "gw1",
        "--endpoint",
        UNDERLAY,
        "--assign",
        "bench",
    ])?;
    let tok = cp.ctl(["vrouter", "join-token", "gw1"])?;
    let token = Secret(
        tok.get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("vrouter join-token printed no token"))?
            .to_string(),
    );
    let gwh = lab.add_host("gw")?;
    let mut gw = Gateway::new(&gwh, &gbins, UNDERLAY.parse()?, Port::lab_ports(2));
    let a = lab.add_host("a")?;
    let b = lab.add_host("b")?;
    // The DPDK ports must exist before vrouter-dpdk starts.
    for (i, h) in [&a, &b].into_iter().enumerate() {
        link_agent(&lab, &gw, h, i)?;
    }
    gw.start_dataplane()?;
    gw.start_sidecar(&cp.node_url(), &token)?;
    let (_, node_token) = cp.create_token("bench", "bench", &["--reusable", "--expires", "1h"])?;
    let mut agents = Vec::new();
    for h in [&a, &b] {
        let ag = Agent::start(h, &bins)?;
        ag.up(&cp.node_url(), &node_token)
            .with_context(|| format!("cvlan up in {}", h.name()))?;
        agents.push(ag);
    }
    let dst = IpAddr::V4(agents[1].ipv4()?);

    let mut rows = Vec::new();
    eprintln!("== through the gateway (hub-and-spoke)");
    wait_peers(&agents[0], &["gw1"])?;
    rows.push(
        measure("through gateway", &a, &b, dst, seconds, pings).with_context(|| {
            format!(
                "vrouterd log:\n{}\nvrouter-dpdk log:\n{}",
                gw.sidecar_log(),
                gw.dataplane_log()
            )
        })?,
    );
    let counters = gw.ctl(["counters"]).ok();

    eprintln!("== direct agent to agent (mesh)");
    cp.ctl([
        "cvlan", "update", "--tenant", "bench", "bench", "--mode", "mesh",
    ])?;
    wait_peers(&agents[0], &["b"])?;
    rows.push(measure("direct (mesh)", &a, &b, dst, seconds, pings)?);
    drop(agents);
    drop(gw);
    drop(cp);
    drop(lab);

    print_table(&rows, seconds, pings);
    if let Some(c) = counters {
        eprintln!("gateway counters after the gateway row: {c}");
    }
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn wait_peers(agent: &Agent, want: &[&str]) -> Result<()> {
    wait_until(Duration::from_secs(15), "the expected peers", || {
        (agent.peer_names().ok()? == want).then_some(())
    })
    .map_err(|e| anyhow!("{e}; agent status: {:?}", agent.status()))
}

fn measure(
    path: &'static str,
    a: &Host,
    b: &Host,
    dst: IpAddr,
    seconds: u32,
    pings: u32,
) -> Result<Row> {
    let (bps, retransmits) = iperf(a, b, dst, seconds, 1)?;
    let (rtts, lost) = ping_rtts(a, dst, pings)?;
    let pct = |q: f64| -> f64 {
        let i = ((rtts.len() as f64 - 1.0) * q).round() as usize;
        rtts.get(i).copied().unwrap_or(f64::NAN)
    };
    let row = Row {
        path,
        gbps: bps / 1e9,
        retransmits,
        rtt_avg_ms: rtts.iter().sum::<f64>() / rtts.len().max(1) as f64,
        rtt_p50_ms: pct(0.5),
        rtt_p99_ms: pct(0.99),
        lost,
    };
    eprintln!(
        "   {:.3} Gb/s, RTT avg {:.3} ms p50 {:.3} p99 {:.3}, {} lost",
        row.gbps, row.rtt_avg_ms, row.rtt_p50_ms, row.rtt_p99_ms, row.lost
    );
    Ok(row)
}

/// `count` pings 10 ms apart; the sorted round-trip times in ms and how many got no answer.
fn ping_rtts(from: &Host, dst: IpAddr, count: u32) -> Result<(Vec<f64>, u32)> {
    let out = from.run([
        "ping",
        "-n",
        "-i",
        "0.01",
        "-W",
        "1",
        "-c",
        &count.to_string(),
        &dst.to_string(),
    ])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rtts: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    if rtts.is_empty() {
        bail!("no ping answers from {dst}: {text}");
    }
    rtts.sort_by(f64::total_cmp);
    let lost = count.saturating_sub(u32::try_from(rtts.len()).unwrap_or(u32::MAX));
    Ok((rtts, lost))
}

fn print_table(rows: &[Row], seconds: u32, pings: u32) {
    let direct = rows.iter().find(|r| r.path.starts_with("direct"));
    let ratio = |x: f64, base: Option<f64>| match base {
        Some(b) if b > 0.0 => format!("{:.2}×", x / b),
        _ => "–".to_string(),
    };
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "path",
        "Gb/s",
        "vs direct",
        "TCP retransmits",
        "RTT avg ms",
        "RTT p50 ms",
        "RTT p99 ms",
        "p50 vs direct",
        "lost",
    ]);
    for r in rows {
        table.add_row(vec![
            r.path.to_string(),
            format!("{:.3}", r.gbps),
            ratio(r.gbps, direct.map(|d| d.gbps)),
            r.retransmits.to_string(),
            format!("{:.3}", r.rtt_avg_ms),
            format!("{:.3}", r.rtt_p50_ms),
            format!("{:.3}", r.rtt_p99_ms),
            ratio(r.rtt_p50_ms, direct.map(|d| d.rtt_p50_ms)),
            r.lost.to_string(),
        ]);
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{table}");
        println!(
            "iperf3 TCP 1 stream {seconds} s and {pings} pings per row, the same two agents; \
             the gateway is vrouter-dpdk on af_packet veth ports (the kernel's af_packet is \
             the ceiling there, not the fast path)"
        );
    }
}
