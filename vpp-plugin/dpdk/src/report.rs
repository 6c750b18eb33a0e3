//! Renders counters: the STATS_REP JSON (shape agreed in the interface notes) and the
//! Prometheus text exposition, plus the tiny HTTP listener that serves the latter.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cvlan_fastpath::abi::{Counters, Reason};
use serde_json::{Map, Value, json};

use crate::eal::port_stats;
use crate::stats::{HOST_NAMES, Host, Snapshot};
use crate::worker::Shared;

const NEXT_NAMES: [&str; 4] = ["drop", "underlay", "local", "punt"];

fn counters_json(c: &Counters) -> Value {
    json!({"rx_packets": c.rx_packets, "rx_bytes": c.rx_bytes, "tx_packets": c.tx_packets,
           "tx_bytes": c.tx_bytes, "drops": c.drops})
}

fn snapshots(sh: &Shared) -> Vec<Snapshot> {
    sh.published.iter().map(|p| p.snapshot()).collect()
}

fn host_sum(snaps: &[Snapshot], h: Host) -> u64 {
    snaps.iter().map(|s| s.host[h as usize]).sum()
}

/// The STATS_REP payload.
#[must_use]
pub fn stats_json(sh: &Shared) -> Value {
    let ports: Vec<Value> = sh
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let s = port_stats(p.id);
            json!({"port": i, "iface": p.iface, "rx_packets": s.ipackets, "rx_bytes": s.ibytes,
                   "tx_packets": s.opackets, "tx_bytes": s.obytes,
                   "rx_dropped": s.imissed + s.ierrors + s.rx_nombuf, "tx_dropped": s.oerrors})
        })
        .collect();
    let snaps = snapshots(sh);
    let workers: Vec<Value> = snaps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut reasons = Map::new();
            for r in Reason::ALL {
                let n = s.fp.reason[r as usize];
                if n > 0 {
                    reasons.insert(r.name().into(), n.into());
                }
            }
            let mut next = Map::new();
            for (k, name) in NEXT_NAMES.iter().enumerate() {
                next.insert((*name).into(), s.fp.next[k].into());
            }
            let mut host = Map::new();
            for (k, name) in HOST_NAMES.iter().enumerate() {
                host.insert((*name).into(), s.host[k].into());
            }
            let peers: Map<String, Value> = s
                .peers
                .iter()
                .map(|(slot, c)| (slot.to_string(), counters_json(c)))
                .collect();
            let tenants: Map<String, Value> = s
                .tenants
                .iter()
                .map(|(slot, c)| (slot.to_string(), counters_json(c)))
                .collect();
            json!({"worker": i, "batches": s.fp.batches, "packets": s.fp.packets, "next": next,
                   "reasons": reasons, "generation": s.fp.generation, "peers": peers,
                   "tenants": tenants, "host": host})
        })
        .collect();
    let error = sh.seg.error.lock().ok().and_then(|e| e.clone());
    json!({
        "ports": ports,
        "workers": workers,
        "punt": {"sent": host_sum(&snaps, Host::PuntSent),
                 "dropped": host_sum(&snaps, Host::PuntDropped),
                 "tx_injected": host_sum(&snaps, Host::TxInjected)},
        "arp": {"entries": sh.neigh.len(), "misses": host_sum(&snaps, Host::ArpMiss)},
        "segment": {"path": sh.segment.display().to_string(),
                    "attached": sh.seg.attached.load(Ordering::Relaxed), "error": error},
    })
}

/// Prometheus text exposition of every counter.
#[must_use]
pub fn prometheus(sh: &Shared) -> String {
    let mut o = String::new();
    let family = |o: &mut String, name: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
    };
    type Field = (
        &'static str,
        &'static str,
        fn(&crate::dpdk::rte_eth_stats) -> u64,
    );
    let port_fields: [Field; 6] = [
        ("rx_packets", "Packets received", |s| s.ipackets),
        ("rx_bytes", "Bytes received", |s| s.ibytes),
        ("tx_packets", "Packets transmitted", |s| s.opackets),
        ("tx_bytes", "Bytes transmitted", |s| s.obytes),
        (
            "rx_dropped",
            "Receive drops (missed, errors, no mbuf)",
            |s| s.imissed + s.ierrors + s.rx_nombuf,
        ),
        ("tx_dropped", "Transmit errors", |s| s.oerrors),
    ];
    let stats: Vec<_> = sh.ports.iter().map(|p| port_stats(p.id)).collect();
    for (field, help, get) in port_fields {
        let name = format!("vrouter_dpdk_port_{field}_total");
        family(&mut o, &name, help);
        for (i, (p, s)) in sh.ports.iter().zip(&stats).enumerate() {
            let _ = writeln!(o, "{name}{{port=\"{i}\",iface=\"{}\"}} {}", p.iface, get(s));
        }
    }
    let snaps = snapshots(sh);
    family(
        &mut o,
        "vrouter_dpdk_worker_packets_total",
        "Packets through the fast path",
    );
    for (w, s) in snaps.iter().enumerate() {
        let _ = writeln!(
            o,
            "vrouter_dpdk_worker_packets_total{{worker=\"{w}\"}} {}",
            s.fp.packets
        );
    }
    family(
        &mut o,
        "vrouter_dpdk_worker_batches_total",
        "Fast-path calls",
    );
    for (w, s) in snaps.iter().enumerate() {
        let _ = writeln!(
            o,
            "vrouter_dpdk_worker_batches_total{{worker=\"{w}\"}} {}",
            s.fp.batches
        );
    }
    family(
        &mut o,
        "vrouter_dpdk_worker_next_total",
        "Fast-path verdicts by next node",
    );
    for (w, s) in snaps.iter().enumerate() {
        for (k, n) in NEXT_NAMES.iter().enumerate() {
            let _ = writeln!(
                o,
                "vrouter_dpdk_worker_next_total{{worker=\"{w}\",next=\"{n}\"}} {}",
                s.fp.next[k]
            );
        }
    }
    family(
        &mut o,
        "vrouter_dpdk_worker_reason_total",
        "Fast-path verdicts by reason",
    );
    for (w, s) in snaps.iter().enumerate() {
        for r in Reason::ALL {
            let _ = writeln!(
                o,
                "vrouter_dpdk_worker_reason_total{{worker=\"{w}\",reason=\"{}\"}} {}",
                r.name(),
                s.fp.reason[r as usize]
            );
        }
    }
    family(
        &mut o,
        "vrouter_dpdk_host_total",
        "Host-side counters (ARP, punt, drops)",
    );
    for (w, s) in snaps.iter().enumerate() {
        for (k, n) in HOST_NAMES.iter().enumerate() {
            let _ = writeln!(
                o,
                "vrouter_dpdk_host_total{{worker=\"{w}\",counter=\"{n}\"}} {}",
                s.host[k]
            );
        }
    }
    family(
        &mut o,
        "vrouter_dpdk_punt_sent_total",
        "Punts sent to vrouterd",
    );
    let _ = writeln!(
        o,
        "vrouter_dpdk_punt_sent_total {}",
        host_sum(&snaps, Host::PuntSent)
    );
    family(
        &mut o,
        "vrouter_dpdk_punt_dropped_total",
        "Punts dropped (vrouterd absent or full)",
    );
    let _ = writeln!(
        o,
        "vrouter_dpdk_punt_dropped_total {}",
        host_sum(&snaps, Host::PuntDropped)
    );
    let _ = writeln!(
        o,
        "# HELP vrouter_dpdk_segment_attached 1 when the table segment is attached\n\
         # TYPE vrouter_dpdk_segment_attached gauge\nvrouter_dpdk_segment_attached {}",
        u8::from(sh.seg.attached.load(Ordering::Relaxed))
    );
    let _ = writeln!(
        o,
        "# HELP vrouter_dpdk_table_generation Table generation used by the last batch\n\
         # TYPE vrouter_dpdk_table_generation gauge"
    );
    for (w, s) in snaps.iter().enumerate() {
        let _ = writeln!(
            o,
            "vrouter_dpdk_table_generation{{worker=\"{w}\"}} {}",
            s.fp.generation
        );
    }
    let _ = writeln!(
        o,
        "# HELP vrouter_dpdk_arp_entries Neighbour entries\n# TYPE vrouter_dpdk_arp_entries \
         gauge\nvrouter_dpdk_arp_entries {}",
        sh.neigh.len()
    );
    o
}

/// Serves `GET /metrics` on `addr` from a plain thread (one connection at a time; scrapes
/// are rare and the workers never wait for it).
///
/// # Errors
/// When the address cannot be bound.
pub fn serve_metrics(addr: SocketAddr, sh: Arc<Shared>) -> std::io::Result<()> {
    let l = TcpListener::bind(addr)?;
    tracing::info!(%addr, "metrics listening");
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let mut req = [0u8; 4096];
                let mut n = 0;
                while n < req.len() {
                    match c.read(&mut req[n..]) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    if req[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&req[..n]);
                let resp = if head.starts_with("GET /metrics ") || head.starts_with("GET / ") {
                    let body = prometheus(&sh);
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_owned()
                };
                let _ = c.write_all(resp.as_bytes());
            }
        })?;
    Ok(())
}
