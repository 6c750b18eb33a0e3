//! WireGuard data plane of cvlan-agent: boringtun sessions behind a sans-IO core, TUN and
//! batched UDP I/O.
//!
//! Two layers:
//! - [`core`] is the **sans-IO core**: it owns the peers (one boringtun `noise::Tunn` each),
//!   cryptokey routing (allowed IPs → peer, longest prefix match), receiver-index → peer lookup,
//!   the inbound filter and the counters. It never touches a socket or reads the clock for its
//!   own decisions: every entry point takes `now: Instant`. (boringtun itself reads the
//!   monotonic clock inside `Tunn` for its handshake/rekey timers; that is the only clock read
//!   and it stays inside `Tunn`.) Its methods take `&self`, so the shell's worker threads share
//!   one core: peer sets and filters are swapped in as immutable snapshots (arc-swap), and a
//!   peer's `Tunn` is locked at most once per batch.
//! - [`Dataplane`] is the **shell**: a TUN device with offloads (virtio-net header, TSO/USO
//!   from the kernel split by `tun-rs`, GRO coalescing towards the kernel), one UDP socket with
//!   `recvmmsg`/`sendmmsg`, `UDP_SEGMENT` (GSO) for sending and `UDP_GRO` for receiving, routes
//!   through rtnetlink, and three threads: TUN→UDP, UDP→TUN and timers/control.
//!
//! # Inbound filter
//! A packet decrypted from a peer must have a source address inside that peer's allowed IPs
//! (else it is dropped and counted in [`Counters::dropped_bad_source`]). Then the
//! [`cvlan_policy::Filter`] set with [`Dataplane::set_filter`] decides, except that TCP
//! segments without SYN (or with SYN+ACK) belong to established connections and pass, and
//! UDP/ICMP replies to flows this node initiated pass (a small lock-free flow cache written by
//! the TUN→UDP path; ICMP errors quoting such a flow pass too). Until a filter is set,
//! everything else is denied.
//!
//! # The `cvlan-wg` binary
//! A static-configuration runner for benchmarks and interop, in the style of `wg-quick`:
//!
//! ```text
//! cvlan-wg --private-key BASE64 [--listen-port 51820] --address 10.9.0.1/24 [--address fd00::1/64]
//!          [--tun cvlan0] [--mtu 1420] [--deny-all]
//!          --peer 'PUBKEY_BASE64,endpoint=IP:PORT,allowed=10.9.0.2/32;fd00::2/128,keepalive=25' ...
//! cvlan-wg --genkey            # prints "PRIVATE_BASE64 PUBLIC_BASE64"
//! cvlan-wg --pubkey BASE64     # prints the public key of a private key
//! ```
//! It runs until SIGINT/SIGTERM (prints counters then), allows all inbound traffic unless
//! `--deny-all` is given, and logs with `RUST_LOG`. `--private-key @FILE` reads the key from
//! a file. Run one per network namespace (`ip netns exec NS cvlan-wg ...`); the TUN, routes
//! and socket live in the namespace it starts in.
//!
//! # Knobs and measuring
//! `CVLAN_DP_DISABLE=tun-offload,udp-gso,udp-gro` (any subset) turns offloads off, to
//! measure what each brings or to work around a kernel that misbehaves.
//! `scripts/iperf-netns.sh raw|cvlan|wggo [SECONDS]` measures TCP throughput (iperf3) between
//! two fresh namespaces over raw veth, two `cvlan-wg`, or two `wireguard-go`.
//!
//! # Performance (2-core machine shared with other builds, load average 8–11)
//! `scripts/iperf-netns.sh MODE 10`, iperf3 TCP, one stream, MTU 1420, release build:
//!
//! | path | Gb/s |
//! |---|---|
//! | raw veth | 6.1–6.2 |
//! | cvlan-wg, all offloads | 1.2–1.9 |
//! | cvlan-wg, `CVLAN_DP_DISABLE=udp-gso` | 0.54 |
//! | cvlan-wg, `CVLAN_DP_DISABLE=udp-gro` | 0.59 |
//! | cvlan-wg, `CVLAN_DP_DISABLE=udp-gso,udp-gro` (TUN offload only) | 0.61 |
//! | cvlan-wg, `CVLAN_DP_DISABLE=tun-offload,udp-gso,udp-gro` (batching only) | 0.40 |
//! | wireguard-go | 0.15–0.23 |
//!
//! The two `cvlan-wg` processes used 0.69 CPU for 1.27 Gb/s in that run (`perf stat -e
//! task-clock`), about 4.4 CPU-seconds per GB including the kernel work done on their
//! threads; ChaCha20-Poly1305 (ring, AVX2) is the largest single cost, then the kernel copies.
//!
//! # Running a data plane inside a namespace from Rust
//! Call [`Dataplane::start`] on a thread that has `setns(CLONE_NEWNET)`-ed into the
//! namespace: the TUN, the UDP socket and the netlink socket are bound to the namespace of
//! the creating thread, and the worker threads it spawns inherit it (see
//! `tests/common/mod.rs`).

pub mod core;
mod shell;

use std::fmt;
use std::net::SocketAddr;
use std::time::SystemTime;

pub use ipnet::IpNet;
pub use shell::Dataplane;

/// Default TUN MTU: 1500 minus the worst-case WireGuard-over-IPv6 overhead (80 bytes).
pub const DEFAULT_MTU: u16 = 1420;

/// How the data plane is set up by [`Dataplane::start`].
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// TUN device name, e.g. `cvlan0`.
    pub tun_name: String,
    /// x25519 static secret (never logged or Debug-printed).
    pub private_key: [u8; 32],
    /// UDP port to listen on; 0 lets the kernel pick (see [`Dataplane::listen_port`]).
    pub listen_port: u16,
    /// Addresses assigned to the TUN with their prefix length (gives the connected route).
    pub addresses: Vec<IpNet>,
    /// TUN MTU, normally [`DEFAULT_MTU`].
    pub mtu: u16,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("tun_name", &self.tun_name)
            .field("private_key", &"<redacted>")
            .field("listen_port", &self.listen_port)
            .field("addresses", &self.addresses)
            .field("mtu", &self.mtu)
            .finish()
    }
}

/// One WireGuard peer as configured by the control plane (or statically).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's x25519 public key (its identity; sessions are keyed by it).
    pub public_key: [u8; 32],
    /// A display name (node name) for status output.
    pub name: String,
    /// Where to send handshakes first; learned from authenticated packets when `None`
    /// (and updated when the peer roams).
    pub endpoint: Option<SocketAddr>,
    /// Cryptokey routing: destinations sent to this peer, and the only sources accepted from it.
    pub allowed_ips: Vec<IpNet>,
    /// Send a keepalive when nothing was sent for this many seconds (NAT traversal).
    pub persistent_keepalive: Option<u16>,
}

/// Per-peer status, for `cvlan status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's public key.
    pub public_key: [u8; 32],
    /// The configured display name.
    pub name: String,
    /// The current endpoint (configured or learned).
    pub endpoint: Option<SocketAddr>,
    /// When the current session's handshake completed, if there is a session.
    pub last_handshake: Option<SystemTime>,
    /// Plaintext bytes received from the peer (delivered to the TUN).
    pub rx_bytes: u64,
    /// Plaintext bytes sent to the peer.
    pub tx_bytes: u64,
    /// Packets delivered to the TUN from this peer.
    pub rx_packets: u64,
    /// Packets encapsulated for this peer.
    pub tx_packets: u64,
}

/// Data-plane wide counters (monotonic since start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// UDP datagrams that were not valid WireGuard messages, failed authentication, were
    /// replays, oversized, or could not be decrypted; also undecodable TUN packets.
    pub dropped_malformed: u64,
    /// Decrypted packets denied by the inbound filter.
    pub dropped_filtered: u64,
    /// Packets from the TUN whose destination is in no peer's allowed IPs, and datagrams for
    /// an unknown receiver index or from an unknown public key.
    pub dropped_no_peer: u64,
    /// Decrypted packets whose source address is outside the sending peer's allowed IPs.
    pub dropped_bad_source: u64,
    /// Packets for a peer without a known endpoint.
    pub dropped_no_endpoint: u64,
    /// Handshakes completed (as initiator or responder).
    pub handshakes: u64,
    /// Handshake messages sent (initiations and responses).
    pub handshakes_sent: u64,
    /// Cookie replies sent because the handshake rate limit was hit.
    pub cookies_sent: u64,
    /// UDP datagrams received.
    pub rx_datagrams: u64,
    /// UDP datagrams sent.
    pub tx_datagrams: u64,
    /// Packets written to the TUN (before GRO coalescing).
    pub tun_rx_packets: u64,
    /// Packets read from the TUN (after GSO splitting).
    pub tun_tx_packets: u64,
    /// I/O errors on the TUN or the UDP socket (sends that failed, reads that failed).
    pub io_errors: u64,
}

/// Errors of [`Dataplane::start`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable (message says why; contains no secret).
    #[error("invalid data plane configuration: {0}")]
    InvalidConfig(&'static str),
    /// Creating or configuring the TUN device failed.
    #[error("TUN device: {0}")]
    Tun(#[source] std::io::Error),
    /// Creating or binding the UDP socket failed.
    #[error("UDP socket: {0}")]
    Udp(#[source] std::io::Error),
    /// A netlink request (address, route, link) failed.
    #[error("netlink: {0}")]
    Netlink(#[source] std::io::Error),
    /// A worker thread could not be spawned.
    #[error("spawning a worker thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The daemon shares one `Dataplane` between its tasks.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Dataplane>();
    send_sync::<core::Core>();
};
