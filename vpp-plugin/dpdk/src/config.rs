//! Command line, environment (`VROUTER_DPDK_*`) and `--config` TOML. Precedence: flag or
//! environment, then the TOML file, then the built-in default.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::Deserialize;

/// DPDK host of the CloudVLAN gateway fast path.
///
/// Receives WireGuard traffic on DPDK ports, runs the cvlan-fastpath nodes (decrypt, ACL,
/// route, encrypt) over bursts on run-to-completion workers, answers ARP for its port
/// addresses, punts handshakes to vrouterd over a Unix datagram socket and transmits what
/// vrouterd sends back. Ports default to `net_af_packet` over a kernel interface, without
/// hugepages or PCI devices (`--no-huge -m 512 --no-pci --no-telemetry`).
#[derive(Parser, Debug, Default)]
#[command(name = "vrouter-dpdk", version)]
pub struct Cli {
    /// TOML file with any of the options below (keys as the long flags, `port`/`route` arrays).
    #[arg(long, env = "VROUTER_DPDK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Table segment written by vrouterd [default: /dev/shm/cvlan-tables].
    #[arg(long, env = "VROUTER_DPDK_SEGMENT")]
    pub segment: Option<PathBuf>,
    /// A port: `iface=NAME,addr=A.B.C.D/LEN[,addr6=X::Y/LEN]` (repeatable; the i-th becomes
    /// net_af_packet<i>).
    #[arg(long = "port", env = "VROUTER_DPDK_PORTS", value_delimiter = ';')]
    pub ports: Vec<String>,
    /// The gateway's underlay IPv4 address (vrouterd's --listen address).
    #[arg(long, env = "VROUTER_DPDK_UNDERLAY")]
    pub underlay: Option<Ipv4Addr>,
    /// The gateway's underlay IPv6 address, if it listens on IPv6 too.
    #[arg(long, env = "VROUTER_DPDK_UNDERLAY6")]
    pub underlay6: Option<Ipv6Addr>,
    /// Worker lcores (one rx/tx queue per port each) [default: 1].
    #[arg(long, env = "VROUTER_DPDK_WORKERS")]
    pub workers: Option<u16>,
    /// Our Unix datagram socket (TX and STATS_REQ in) [default: /run/cvlan/vrouter-dpdk.sock].
    #[arg(long, env = "VROUTER_DPDK_SOCKET")]
    pub socket: Option<PathBuf>,
    /// vrouterd's punt socket [default: /run/cvlan/vrouterd-punt.sock].
    #[arg(long, env = "VROUTER_DPDK_SIDECAR_SOCKET")]
    pub sidecar_socket: Option<PathBuf>,
    /// Prometheus metrics listener, e.g. 127.0.0.1:9436 (off by default).
    #[arg(long, env = "VROUTER_DPDK_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// EAL --file-prefix [default: vrouter-dpdk-<pid>].
    #[arg(long, env = "VROUTER_DPDK_FILE_PREFIX")]
    pub file_prefix: Option<String>,
    /// Extra EAL arguments, whitespace separated (appended; `-l`/`--lcores` here replace the
    /// default lcore list).
    #[arg(long, env = "VROUTER_DPDK_EAL_ARGS", allow_hyphen_values = true)]
    pub eal_args: Option<String>,
    /// A static route: `PREFIX,via=ADDR` (repeatable; ADDR must be on a port's subnet).
    #[arg(long = "route", env = "VROUTER_DPDK_ROUTES", value_delimiter = ';')]
    pub routes: Vec<String>,
    /// Sleep this many microseconds after 256 idle polls (0 = pure polling) [default: 0].
    #[arg(long, env = "VROUTER_DPDK_IDLE_SLEEP_US")]
    pub idle_sleep_us: Option<u32>,
    /// Log as JSON lines.
    #[arg(long, env = "VROUTER_DPDK_LOG_JSON")]
    pub log_json: bool,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    segment: Option<PathBuf>,
    #[serde(default)]
    port: Vec<String>,
    underlay: Option<Ipv4Addr>,
    underlay6: Option<Ipv6Addr>,
    workers: Option<u16>,
    socket: Option<PathBuf>,
    sidecar_socket: Option<PathBuf>,
    metrics_listen: Option<SocketAddr>,
    file_prefix: Option<String>,
    eal_args: Option<String>,
    #[serde(default)]
    route: Vec<String>,
    idle_sleep_us: Option<u32>,
    log_json: Option<bool>,
}

/// One port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    /// Kernel interface the af_packet PMD binds to.
    pub iface: String,
    /// Our address on it.
    pub addr: Ipv4Addr,
    /// Prefix length of the connected subnet.
    pub len: u8,
    /// Our IPv6 address and prefix length, if any.
    pub addr6: Option<(Ipv6Addr, u8)>,
}

/// One static route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination prefix.
    pub net: Ipv4Addr,
    /// Its length.
    pub len: u8,
    /// Gateway.
    pub via: Ipv4Addr,
}

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub segment: PathBuf,
    pub ports: Vec<PortSpec>,
    pub underlay: Ipv4Addr,
    pub underlay6: Option<Ipv6Addr>,
    pub workers: u16,
    pub socket: PathBuf,
    pub sidecar_socket: PathBuf,
    pub metrics_listen: Option<SocketAddr>,
    pub file_prefix: String,
    pub eal_args: Vec<String>,
    pub routes: Vec<RouteSpec>,
    pub idle_sleep_us: u32,
    pub log_json: bool,
}

/// Parses `ADDR/LEN` for either family (`max` = address bits).
fn parse_prefix_of<A: std::str::FromStr>(s: &str, family: &str, max: u8) -> Result<(A, u8)> {
    let (a, l) = s
        .split_once('/')
        .with_context(|| format!("{s:?}: expected an {family} ADDRESS/LEN"))?;
    let addr: A = a
        .parse()
        .map_err(|_| anyhow::anyhow!("{a:?}: not an {family} address"))?;
    let len: u8 = l
        .parse()
        .with_context(|| format!("{l:?}: not a prefix length"))?;
    if len > max {
        bail!("prefix length {len} > {max}");
    }
    Ok((addr, len))
}

fn parse_prefix(s: &str) -> Result<(Ipv4Addr, u8)> {
    parse_prefix_of(s, "IPv4", 32)
}

fn parse_prefix6(s: &str) -> Result<(Ipv6Addr, u8)> {
    parse_prefix_of(s, "IPv6", 128)
}

/// Parses `iface=NAME,addr=A/LEN[,addr6=X/LEN]`.
///
/// # Errors
/// When a key is missing, unknown or malformed.
pub fn parse_port(s: &str) -> Result<PortSpec> {
    let (mut iface, mut addr, mut addr6) = (None, None, None);
    for kv in s.split(',') {
        match kv.split_once('=') {
            Some(("iface", v)) if !v.is_empty() => iface = Some(v.to_owned()),
            Some(("addr", v)) => addr = Some(parse_prefix(v)?),
            Some(("addr6", v)) => addr6 = Some(parse_prefix6(v)?),
            _ => bail!("--port {s:?}: expected iface=NAME,addr=A.B.C.D/LEN[,addr6=X::Y/LEN]"),
        }
    }
    let iface = iface.with_context(|| format!("--port {s:?}: iface= missing"))?;
    if iface.contains(char::is_whitespace) || iface.len() > 15 {
        bail!("--port {s:?}: invalid interface name");
    }
    let (addr, len) = addr.with_context(|| format!("--port {s:?}: addr= missing"))?;
    Ok(PortSpec {
        iface,
        addr,
        len,
        addr6,
    })
}

/// Parses `PREFIX,via=ADDR`.
///
/// # Errors
/// When malformed.
pub fn parse_route(s: &str) -> Result<RouteSpec> {
    let (p, via) = s
        .split_once(",via=")
        .with_context(|| format!("--route {s:?}: expected PREFIX,via=ADDR"))?;
    let (net, len) = parse_prefix(p)?;
    let via = via
        .parse()
        .with_context(|| format!("--route {s:?}: bad gateway"))?;
    Ok(RouteSpec { net, len, via })
}

impl Cli {
    /// Merges the TOML file (if any) and the defaults.
    ///
    /// # Errors
    /// Unreadable or invalid file, invalid values, missing required options.
    pub fn resolve(self) -> Result<Config> {
        let file: FileConfig = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing config {}", p.display()))?
            }
            None => FileConfig::default(),
        };
        let ports_raw = if self.ports.is_empty() {
            file.port
        } else {
            self.ports
        };
        let ports = ports_raw
            .iter()
            .map(|s| parse_port(s))
            .collect::<Result<Vec<_>>>()?;
        if ports.is_empty() {
            bail!("at least one --port iface=NAME,addr=A.B.C.D/LEN is required");
        }
        let routes_raw = if self.routes.is_empty() {
            file.route
        } else {
            self.routes
        };
        let routes = routes_raw
            .iter()
            .map(|s| parse_route(s))
            .collect::<Result<Vec<_>>>()?;
        let underlay = self
            .underlay
            .or(file.underlay)
            .context("--underlay A.B.C.D is required (the gateway's WireGuard address)")?;
        let workers = self.workers.or(file.workers).unwrap_or(1);
        if workers == 0 {
            bail!("--workers must be at least 1");
        }
        let eal_args = self
            .eal_args
            .or(file.eal_args)
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        Ok(Config {
            segment: self
                .segment
                .or(file.segment)
                .unwrap_or_else(|| "/dev/shm/cvlan-tables".into()),
            ports,
            underlay,
            underlay6: self.underlay6.or(file.underlay6),
            workers,
            socket: self
                .socket
                .or(file.socket)
                .unwrap_or_else(|| "/run/cvlan/vrouter-dpdk.sock".into()),
            sidecar_socket: self
                .sidecar_socket
                .or(file.sidecar_socket)
                .unwrap_or_else(|| "/run/cvlan/vrouterd-punt.sock".into()),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            file_prefix: self
                .file_prefix
                .or(file.file_prefix)
                .unwrap_or_else(|| format!("vrouter-dpdk-{}", std::process::id())),
            eal_args,
            routes,
            idle_sleep_us: self.idle_sleep_us.or(file.idle_sleep_us).unwrap_or(0),
            log_json: self.log_json || file.log_json.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_and_route_specs_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_port("iface=veth0,addr=10.251.1.1/24").expect("port"),
            PortSpec {
                iface: "veth0".into(),
                addr: Ipv4Addr::new(10, 251, 1, 1),
                len: 24,
                addr6: None
            }
        );
        let p = parse_port("iface=v,addr=10.0.0.1/24,addr6=fd00::1/64").expect("v6");
        assert_eq!(p.addr6, Some(("fd00::1".parse().expect("addr"), 64)));
        assert!(parse_port("iface=v,addr=10.0.0.1/24,addr6=fd00::1/129").is_err());
        let e = parse_port("iface=veth0").expect_err("no addr");
        assert!(e.to_string().contains("addr= missing"), "{e}");
        assert!(parse_port("iface=v,addr=10.0.0.1/33").is_err());
        assert!(parse_port("if=v,addr=10.0.0.1/24").is_err());
        assert_eq!(
            parse_route("0.0.0.0/0,via=10.251.1.254").expect("route"),
            RouteSpec {
                net: Ipv4Addr::UNSPECIFIED,
                len: 0,
                via: Ipv4Addr::new(10, 251, 1, 254)
            }
        );
        assert!(parse_route("10.0.0.0/8").is_err());
    }

    #[test]
    fn flags_override_the_toml_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("cvd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "underlay = \"10.255.0.1\"\nworkers = 2\nport = [\"iface=a,addr=10.0.0.1/24\"]\n\
             route = [\"0.0.0.0/0,via=10.0.0.254\"]\nsidecar-socket = \"/tmp/x.sock\"\n",
        )
        .expect("write");
        let cli = Cli::try_parse_from([
            "vrouter-dpdk",
            "--config",
            f.to_str().expect("utf8"),
            "--workers",
            "3",
        ])
        .expect("parse");
        let c = cli.resolve().expect("resolve");
        assert_eq!(c.workers, 3);
        assert_eq!(c.underlay, Ipv4Addr::new(10, 255, 0, 1));
        assert_eq!(c.ports.len(), 1);
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.sidecar_socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.socket, PathBuf::from("/run/cvlan/vrouter-dpdk.sock"));
        std::fs::write(&f, "bogus = 1\n").expect("write");
        let cli = Cli::try_parse_from(["x", "--config", f.to_str().expect("utf8")]).expect("p");
        assert!(cli.resolve().is_err(), "unknown keys are refused");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
