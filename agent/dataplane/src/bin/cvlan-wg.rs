//! `cvlan-wg`: runs the CloudVLAN data plane from a static configuration (benchmarks,
//! interop tests). See the crate documentation for the command line.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::Parser;
use cvlan_dataplane::{Config, DEFAULT_MTU, Dataplane, IpNet, PeerConfig};
use cvlan_policy::{Action, Filter, FilterRule, Proto};

#[derive(Parser)]
#[command(about = "CloudVLAN WireGuard data plane with a static configuration")]
struct Args {
    /// Print a new private key and its public key ("PRIVATE PUBLIC", base64) and exit.
    #[arg(long)]
    genkey: bool,
    /// Print the public key of this base64 private key and exit.
    #[arg(long, value_name = "PRIVATE_KEY")]
    pubkey: Option<String>,
    /// Our private key (base64), or @FILE to read it from a file.
    #[arg(long, required_unless_present_any = ["genkey", "pubkey"])]
    private_key: Option<String>,
    /// UDP listen port (0 = any).
    #[arg(long, default_value_t = 51820)]
    listen_port: u16,
    /// TUN device name.
    #[arg(long, default_value = "cvlan0")]
    tun: String,
    /// TUN MTU.
    #[arg(long, default_value_t = DEFAULT_MTU)]
    mtu: u16,
    /// Address with prefix length for the TUN (repeatable).
    #[arg(long)]
    address: Vec<IpNet>,
    /// A peer: `PUBKEY[,endpoint=IP:PORT][,allowed=NET;NET...][,keepalive=SECS][,name=NAME]`.
    #[arg(long)]
    peer: Vec<String>,
    /// Deny inbound traffic (except replies and established TCP) instead of allowing all.
    #[arg(long)]
    deny_all: bool,
}

fn key(s: &str) -> Result<[u8; 32]> {
    let s = s.trim();
    let bytes = STANDARD.decode(s).context("key is not base64")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("a key must be 32 bytes"))
}

fn parse_peer(s: &str) -> Result<PeerConfig> {
    let mut parts = s.split(',');
    let public_key = key(parts.next().unwrap_or_default())?;
    let mut p = PeerConfig {
        public_key,
        name: String::new(),
        endpoint: None,
        allowed_ips: Vec::new(),
        persistent_keepalive: None,
    };
    for part in parts {
        let (k, v) = part
            .split_once('=')
            .context("peer option must be key=value")?;
        match k {
            "endpoint" => p.endpoint = Some(v.parse::<SocketAddr>().context("endpoint")?),
            "allowed" => {
                for n in v.split(';').filter(|n| !n.is_empty()) {
                    p.allowed_ips.push(n.parse().context("allowed IP")?);
                }
            }
            "keepalive" => p.persistent_keepalive = Some(v.parse().context("keepalive")?),
            "name" => p.name = v.to_string(),
            other => bail!("unknown peer option {other}"),
        }
    }
    Ok(p)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

#[allow(clippy::print_stdout)]
fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.genkey {
        let mut bytes = [0u8; 32];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
        let secret = boringtun::x25519::StaticSecret::from(bytes);
        let public = boringtun::x25519::PublicKey::from(&secret);
        println!(
            "{} {}",
            STANDARD.encode(secret.to_bytes()),
            STANDARD.encode(public.as_bytes())
        );
        return Ok(());
    }
    if let Some(k) = &args.pubkey {
        let secret = boringtun::x25519::StaticSecret::from(key(k)?);
        println!(
            "{}",
            STANDARD.encode(boringtun::x25519::PublicKey::from(&secret).as_bytes())
        );
        return Ok(());
    }
    let pk = args.private_key.clone().unwrap_or_default();
    let pk = match pk.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).context("reading the private key file")?,
        None => pk,
    };
    let peers = args
        .peer
        .iter()
        .map(|p| parse_peer(p))
        .collect::<Result<Vec<_>>>()?;
    let dp = Dataplane::start(Config {
        tun_name: args.tun.clone(),
        private_key: key(&pk)?,
        listen_port: args.listen_port,
        addresses: args.address.clone(),
        mtu: args.mtu,
    })
    .context("starting the data plane")?;
    if !args.deny_all {
        dp.set_filter(Filter {
            rules: vec![FilterRule {
                sources: vec!["0.0.0.0/0".parse()?, "::/0".parse()?],
                destinations: vec!["0.0.0.0/0".parse()?, "::/0".parse()?],
                proto: Proto::Any,
                ports: Vec::new(),
                action: Action::Allow,
            }],
        });
    }
    dp.set_peers(peers);
    println!(
        "cvlan-wg up: tun {} port {} public key {}",
        args.tun,
        dp.listen_port(),
        STANDARD.encode(dp.public_key())
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    while !STOP.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("{:?}", dp.counters());
    for p in dp.peer_stats() {
        println!(
            "peer {} endpoint {:?} rx {} B / {} pkts, tx {} B / {} pkts",
            STANDARD.encode(p.public_key),
            p.endpoint,
            p.rx_bytes,
            p.rx_packets,
            p.tx_bytes,
            p.tx_packets
        );
    }
    dp.shutdown();
    Ok(())
}
