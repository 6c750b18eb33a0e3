//! `cvlan`: the command line for the local cvlan-agent (talks to it over its Unix socket).
#![allow(clippy::print_stdout)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use cvlan_agent::ipc::{self, AgentState, ClientError, Request, Status, UpRequest};
use cvlan_agent::ping::Pinger;

#[derive(Parser)]
#[command(
    name = "cvlan",
    version,
    about = "Join this device to a CloudVLAN and inspect its tunnels (talks to the local cvlan-agent)"
)]
struct Cli {
    /// cvlan-agent's control socket.
    #[arg(long, global = true, env = "CVLAN_SOCKET", default_value = cvlan_agent::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Register with the control plane (first time) and bring the tunnels up.
    Up {
        /// Control plane node endpoint, e.g. https://10.0.0.1:8443.
        #[arg(long)]
        server: Option<String>,
        /// Registration token (needed the first time only).
        #[arg(long, env = "CVLAN_AUTH_KEY", hide_env_values = true)]
        auth_key: Option<String>,
        /// Name to register this node under [default: the host name].
        #[arg(long)]
        hostname: Option<String>,
        /// Trust this CA certificate (PEM) instead of the pin carried in the token.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Bring the tunnels down and disconnect; the identity is kept for `cvlan up`.
    Down,
    /// Show this node, the control connection and the peers.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print this node's CVLAN addresses.
    Ip {
        /// IPv4 only.
        #[arg(short = '4', conflicts_with = "v6")]
        v4: bool,
        /// IPv6 only.
        #[arg(short = '6')]
        v6: bool,
    },
    /// ICMP echo to a peer (by name or address) through the tunnel.
    Ping {
        /// Peer name or CVLAN address.
        peer: String,
        /// Number of requests.
        #[arg(short = 'c', long, default_value_t = 4)]
        count: u32,
        /// Seconds between requests.
        #[arg(short = 'i', long, default_value_t = 1.0)]
        interval: f64,
        /// Seconds to wait for each reply.
        #[arg(short = 'W', long, default_value_t = 2.0)]
        timeout: f64,
        /// Payload bytes.
        #[arg(short = 's', long, default_value_t = 56)]
        size: usize,
    },
    /// Take everything down and delete this node's identity from the state directory.
    Logout,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cvlan: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn call(
    socket: &std::path::Path,
    req: Request,
    timeout: Duration,
) -> anyhow::Result<ipc::Reply> {
    ipc::call(socket, &req, timeout).await.map_err(|e| match e {
        // The daemon's message is already what the user needs to see.
        ClientError::Remote(r) => anyhow::anyhow!(r.message),
        other => anyhow::anyhow!(other),
    })
}

async fn status(socket: &std::path::Path) -> anyhow::Result<Status> {
    call(socket, Request::Status, Duration::from_secs(10))
        .await?
        .status
        .context("cvlan-agent sent no status")
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let socket = cli.socket;
    match cli.cmd {
        Cmd::Up {
            server,
            auth_key,
            hostname,
            ca_file,
        } => {
            let ca_pem = match ca_file {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("reading --ca-file {}", p.display()))?,
                ),
                None => None,
            };
            let r = call(
                &socket,
                Request::Up(UpRequest {
                    server,
                    auth_key,
                    hostname,
                    ca_pem,
                }),
                Duration::from_secs(90),
            )
            .await?;
            if let Some(m) = r.message {
                println!("{m}");
            }
            if let Some(s) = r.status
                && let Some(me) = s.self_node
            {
                println!("{}: {}", me.name, me.addresses.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Down => {
            let r = call(&socket, Request::Down, Duration::from_secs(30)).await?;
            println!("{}", r.message.unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Logout => {
            let r = call(&socket, Request::Logout, Duration::from_secs(30)).await?;
            println!("{}", r.message.unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { json } => {
            let s = status(&socket).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", render_status(&s, SystemTime::now()));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ip { v4, v6 } => {
            let s = status(&socket).await?;
            let Some(me) = s.self_node else {
                bail!("{}", s.message);
            };
            let mut any = false;
            for a in me.addresses {
                let ip = a.split('/').next().unwrap_or_default();
                let Ok(ip) = ip.parse::<IpAddr>() else {
                    continue;
                };
                if (v4 && !ip.is_ipv4()) || (v6 && !ip.is_ipv6()) {
                    continue;
                }
                println!("{ip}");
                any = true;
            }
            if !any {
                bail!(
                    "no {}address assigned",
                    if v4 {
                        "IPv4 "
                    } else if v6 {
                        "IPv6 "
                    } else {
                        ""
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ping {
            peer,
            count,
            interval,
            timeout,
            size,
        } => {
            let s = status(&socket).await?;
            if s.state != AgentState::Running {
                bail!("not connected ({}): {}", s.state, s.message);
            }
            let (target, label) = resolve(&s, &peer)?;
            let source = s.self_node.as_ref().and_then(|me| {
                me.addresses
                    .iter()
                    .filter_map(|a| a.split('/').next()?.parse::<IpAddr>().ok())
                    .find(|a| a.is_ipv4() == target.is_ipv4())
            });
            let timeout = Duration::from_secs_f64(timeout.max(0.01));
            let interval = Duration::from_secs_f64(interval.max(0.0));
            let res = tokio::task::spawn_blocking(move || {
                ping(target, &label, source, count, size, interval, timeout)
            })
            .await
            .context("ping task")??;
            Ok(if res > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// A peer name or address to the address to ping and a label for the output.
fn resolve(s: &Status, peer: &str) -> anyhow::Result<(IpAddr, String)> {
    let host_addrs = |addrs: &[String]| -> Vec<IpAddr> {
        addrs
            .iter()
            .filter_map(|a| {
                let (ip, len) = a.split_once('/').unwrap_or((a, ""));
                let ip: IpAddr = ip.parse().ok()?;
                let host = match len {
                    "" => true,
                    l => l == if ip.is_ipv4() { "32" } else { "128" },
                };
                host.then_some(ip)
            })
            .collect()
    };
    if let Ok(ip) = peer.parse::<IpAddr>() {
        let name = s
            .peers
            .iter()
            .find(|p| host_addrs(&p.addresses).contains(&ip))
            .map_or_else(|| ip.to_string(), |p| format!("{} ({ip})", p.name));
        return Ok((ip, name));
    }
    let found = s
        .peers
        .iter()
        .find(|p| p.name == peer)
        .or_else(|| s.peers.iter().find(|p| p.name.eq_ignore_ascii_case(peer)))
        .or_else(|| s.peers.iter().find(|p| p.node_id == peer));
    let Some(p) = found else {
        let names: Vec<&str> = s.peers.iter().map(|p| p.name.as_str()).collect();
        bail!(
            "no peer named {peer:?} (peers: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
    };
    let addrs = host_addrs(&p.addresses);
    let ip = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .with_context(|| format!("peer {} has no address", p.name))?;
    Ok((ip, format!("{} ({ip})", p.name)))
}

/// Sends `count` echo requests; returns how many were answered.
fn ping(
    target: IpAddr,
    label: &str,
    source: Option<IpAddr>,
    count: u32,
    size: usize,
    interval: Duration,
    timeout: Duration,
) -> anyhow::Result<u32> {
    let p = Pinger::new(target, source).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            anyhow::anyhow!("raw ICMP sockets need root (CAP_NET_RAW): {e}")
        } else {
            anyhow::anyhow!("ICMP socket: {e}")
        }
    })?;
    println!("PING {label}: {size} data bytes");
    let mut rtts = Vec::new();
    for i in 0..count {
        let seq = (i + 1) as u16;
        match p.ping(seq, size, timeout)? {
            Some((rtt, len)) => {
                println!(
                    "{len} bytes from {label}: icmp_seq={seq} time={:.3} ms",
                    rtt.as_secs_f64() * 1e3
                );
                rtts.push(rtt);
            }
            None => println!("no reply from {label}: icmp_seq={seq} (timeout)"),
        }
        if i + 1 < count {
            std::thread::sleep(interval);
        }
    }
    let got = rtts.len() as u32;
    let loss = if count == 0 {
        0.0
    } else {
        100.0 * f64::from(count - got) / f64::from(count)
    };
    println!("--- {label} ping statistics ---");
    println!("{count} packets transmitted, {got} received, {loss:.0}% packet loss");
    if let (Some(min), Some(max)) = (rtts.iter().min(), rtts.iter().max()) {
        let avg = rtts.iter().sum::<Duration>() / got.max(1);
        println!(
            "rtt min/avg/max = {:.3}/{:.3}/{:.3} ms",
            min.as_secs_f64() * 1e3,
            avg.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    }
    Ok(got)
}

fn bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn ago(unix: u64, now: SystemTime) -> String {
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let s = now.saturating_sub(unix);
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

/// The human form of `cvlan status`.
fn render_status(s: &Status, now: SystemTime) -> String {
    let mut out = String::new();
    match &s.self_node {
        Some(me) => out.push_str(&format!(
            "{}  {}  ({})\n",
            me.name,
            me.addresses.join(", "),
            s.state
        )),
        None => out.push_str(&format!("({})\n", s.state)),
    }
    out.push_str(&format!("{}\n", s.message));
    if let Some(server) = &s.server {
        out.push_str(&format!(
            "control plane {server}: {}, map version {}\n",
            if s.control.connected {
                "connected"
            } else {
                "disconnected"
            },
            s.control.map_version
        ));
    }
    if s.peers.is_empty() {
        if s.state == AgentState::Running {
            out.push_str("no peers\n");
        }
        return out;
    }
    let mut rows = vec![[
        "PEER".to_string(),
        "ADDRESSES".into(),
        "ENDPOINT".into(),
        "HANDSHAKE".into(),
        "RX".into(),
        "TX".into(),
    ]];
    for p in &s.peers {
        rows.push([
            p.name.clone(),
            p.addresses.join(","),
            p.endpoint.clone().unwrap_or_else(|| "-".into()),
            p.last_handshake_unix
                .map_or_else(|| "never".into(), |t| ago(t, now)),
            bytes(p.rx_bytes),
            bytes(p.tx_bytes),
        ]);
    }
    let mut w = [0usize; 6];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cvlan_agent::ipc::{ControlStatus, PeerStatus, SelfStatus};

    fn status() -> Status {
        Status {
            state: AgentState::Running,
            message: "connected".into(),
            server: Some("https://10.99.0.1:8443".into()),
            control: ControlStatus {
                connected: true,
                map_version: 4,
                ..Default::default()
            },
            self_node: Some(SelfStatus {
                name: "a1".into(),
                addresses: vec!["10.20.0.2/24".into(), "fd20::2/64".into()],
                ..Default::default()
            }),
            peers: vec![
                PeerStatus {
                    name: "a2".into(),
                    node_id: "n2".into(),
                    addresses: vec!["10.20.0.3/32".into(), "fd20::3/128".into()],
                    endpoint: Some("10.99.0.3:51820".into()),
                    last_handshake_unix: Some(1000),
                    rx_bytes: 2048,
                    tx_bytes: 10,
                    ..Default::default()
                },
                PeerStatus {
                    name: "site".into(),
                    node_id: "x1".into(),
                    addresses: vec!["192.168.50.0/24".into(), "fd20::9/128".into()],
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn peers_resolve_by_name_or_address_to_their_host_address() {
        let s = status();
        assert_eq!(
            resolve(&s, "a2").expect("name").0,
            "10.20.0.3".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            resolve(&s, "A2").expect("case").0,
            "10.20.0.3".parse::<IpAddr>().expect("ip")
        );
        let (ip, label) = resolve(&s, "fd20::3").expect("address");
        assert_eq!(ip, "fd20::3".parse::<IpAddr>().expect("ip"));
        assert_eq!(label, "a2 (fd20::3)");
        // A subnet route is not the peer's own address: its /128 is.
        assert_eq!(
            resolve(&s, "site").expect("site").0,
            "fd20::9".parse::<IpAddr>().expect("ip")
        );
        let e = resolve(&s, "nobody").expect_err("unknown");
        assert!(e.to_string().contains("peers: a2, site"), "{e}");
    }

    #[test]
    fn the_status_table_lists_every_peer_with_traffic_and_handshake_age() {
        let out = render_status(&status(), UNIX_EPOCH + Duration::from_secs(1005));
        assert!(
            out.starts_with("a1  10.20.0.2/24, fd20::2/64  (running)\n"),
            "{out}"
        );
        assert!(out.contains("map version 4"), "{out}");
        let a2 = out.lines().find(|l| l.starts_with("a2")).expect("a2 row");
        assert!(
            a2.contains("10.99.0.3:51820") && a2.contains("5s ago") && a2.contains("2.0 KiB"),
            "{a2}"
        );
        let site = out
            .lines()
            .find(|l| l.starts_with("site"))
            .expect("site row");
        assert!(site.contains("never"), "{site}");
    }
}
