//! The data plane as the agent sees it: a small trait over cvlan-dataplane's `Dataplane`, so
//! the control logic builds and is tested on its own, and so `--no-tun` (control plane only)
//! is possible. The types mirror cvlan-dataplane's interface one to one.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use cvlan_policy::Filter;
use ipnet::IpNet;

/// How to start the data plane.
#[derive(Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// TUN device name.
    pub tun_name: String,
    /// x25519 static secret.
    pub private_key: [u8; 32],
    /// UDP port; 0 lets the kernel pick.
    pub listen_port: u16,
    /// CVLAN addresses with their prefix lengths.
    pub addresses: Vec<IpNet>,
    /// TUN MTU.
    pub mtu: u16,
}

impl fmt::Debug for TunnelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelConfig")
            .field("tun_name", &self.tun_name)
            .field("listen_port", &self.listen_port)
            .field("addresses", &self.addresses)
            .field("mtu", &self.mtu)
            .finish_non_exhaustive()
    }
}

/// One WireGuard peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// x25519 public key.
    pub public_key: [u8; 32],
    /// Display name.
    pub name: String,
    /// Where to send (None: wait for the peer to reach us).
    pub endpoint: Option<SocketAddr>,
    /// Prefixes routed to and accepted from this peer.
    pub allowed_ips: Vec<IpNet>,
    /// Keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
}

/// Live statistics of one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStats {
    /// x25519 public key.
    pub public_key: [u8; 32],
    /// Display name.
    pub name: String,
    /// Current endpoint (may have roamed from the configured one).
    pub endpoint: Option<SocketAddr>,
    /// Last completed handshake.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received (decrypted payload).
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
}

/// The data plane could not be started.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TunnelError(pub String);

/// A running data plane.
pub trait Tunnels: Send {
    /// The UDP port actually bound.
    fn listen_port(&self) -> u16;
    /// Replaces the peer set (sessions of unchanged keys survive).
    fn set_peers(&self, peers: Vec<PeerConfig>);
    /// Replaces the inbound filter.
    fn set_filter(&self, filter: Filter);
    /// Per-peer statistics.
    fn peer_stats(&self) -> Vec<PeerStats>;
    /// Named counters for metrics (drops, handshakes, …).
    fn counters(&self) -> Vec<(&'static str, u64)>;
    /// Stops the threads and deletes the TUN.
    fn shutdown(self: Box<Self>);
}

/// Starts data planes.
pub trait TunnelFactory: Send + Sync {
    /// Starts one.
    ///
    /// # Errors
    /// [`TunnelError`] (no permission, device busy, port in use, …).
    fn start(&self, cfg: TunnelConfig) -> Result<Box<dyn Tunnels>, TunnelError>;
}

/// What a [`MemoryTunnels`] was told, for tests and for `--no-tun`.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// Configuration of the running instance (None when stopped).
    pub config: Option<TunnelConfig>,
    /// Current peers.
    pub peers: Vec<PeerConfig>,
    /// Current filter.
    pub filter: Filter,
    /// How many times a data plane was started.
    pub starts: u32,
    /// How many times one was shut down.
    pub shutdowns: u32,
}

/// A data plane without a TUN: binds the UDP port (so the reported endpoint is real) and
/// records what it is told. Used by `cvlan-agent --no-tun` and by the control-plane tests.
#[derive(Clone, Default)]
pub struct MemoryFactory {
    /// Shared record, readable by the test or the caller.
    pub record: Arc<Mutex<Recorded>>,
}

impl MemoryFactory {
    /// A snapshot of what was recorded.
    pub fn recorded(&self) -> Recorded {
        self.record.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

struct MemoryTunnels {
    record: Arc<Mutex<Recorded>>,
    socket: std::net::UdpSocket,
}

impl TunnelFactory for MemoryFactory {
    fn start(&self, cfg: TunnelConfig) -> Result<Box<dyn Tunnels>, TunnelError> {
        let socket = std::net::UdpSocket::bind(("0.0.0.0", cfg.listen_port))
            .map_err(|e| TunnelError(format!("bind UDP port {}: {e}", cfg.listen_port)))?;
        if let Ok(mut r) = self.record.lock() {
            r.config = Some(cfg);
            r.starts += 1;
            r.peers.clear();
            r.filter = Filter::default();
        }
        Ok(Box::new(MemoryTunnels {
            record: self.record.clone(),
            socket,
        }))
    }
}

impl Tunnels for MemoryTunnels {
    fn listen_port(&self) -> u16 {
        self.socket.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    fn set_peers(&self, peers: Vec<PeerConfig>) {
        if let Ok(mut r) = self.record.lock() {
            r.peers = peers;
        }
    }

    fn set_filter(&self, filter: Filter) {
        if let Ok(mut r) = self.record.lock() {
            r.filter = filter;
        }
    }

    fn peer_stats(&self) -> Vec<PeerStats> {
        self.record
            .lock()
            .map(|r| {
                r.peers
                    .iter()
                    .map(|p| PeerStats {
                        public_key: p.public_key,
                        name: p.name.clone(),
                        endpoint: p.endpoint,
                        last_handshake: None,
                        rx_bytes: 0,
                        tx_bytes: 0,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    fn shutdown(self: Box<Self>) {
        if let Ok(mut r) = self.record.lock() {
            r.config = None;
            r.peers.clear();
            r.shutdowns += 1;
        }
    }
}

/// The real data plane (TUN + WireGuard), when this build has it.
pub fn kernel_factory() -> Option<Arc<dyn TunnelFactory>> {
    #[cfg(feature = "dataplane")]
    {
        Some(Arc::new(kernel::KernelFactory))
    }
    #[cfg(not(feature = "dataplane"))]
    {
        None
    }
}

#[cfg(feature = "dataplane")]
mod kernel {
    //! Glue to cvlan-dataplane: the same shapes, converted field by field.

    use super::{PeerConfig, PeerStats, TunnelConfig, TunnelError, TunnelFactory, Tunnels};
    use cvlan_dataplane as dp;

    pub struct KernelFactory;

    struct Kernel(dp::Dataplane);

    impl TunnelFactory for KernelFactory {
        fn start(&self, cfg: TunnelConfig) -> Result<Box<dyn Tunnels>, TunnelError> {
            let d = dp::Dataplane::start(dp::Config {
                tun_name: cfg.tun_name,
                private_key: cfg.private_key,
                listen_port: cfg.listen_port,
                addresses: cfg.addresses,
                mtu: cfg.mtu,
            })
            .map_err(|e| TunnelError(e.to_string()))?;
            Ok(Box::new(Kernel(d)))
        }
    }

    impl Tunnels for Kernel {
        fn listen_port(&self) -> u16 {
            self.0.listen_port()
        }

        fn set_peers(&self, peers: Vec<PeerConfig>) {
            self.0.set_peers(
                peers
                    .into_iter()
                    .map(|p| dp::PeerConfig {
                        public_key: p.public_key,
                        name: p.name,
                        endpoint: p.endpoint,
                        allowed_ips: p.allowed_ips,
                        persistent_keepalive: p.persistent_keepalive,
                    })
                    .collect(),
            );
        }

        fn set_filter(&self, filter: cvlan_policy::Filter) {
            self.0.set_filter(filter);
        }

        fn peer_stats(&self) -> Vec<PeerStats> {
            self.0
                .peer_stats()
                .into_iter()
                .map(|s| PeerStats {
                    public_key: s.public_key,
                    name: s.name,
                    endpoint: s.endpoint,
                    last_handshake: s.last_handshake,
                    rx_bytes: s.rx_bytes,
                    tx_bytes: s.tx_bytes,
                })
                .collect()
        }

        fn counters(&self) -> Vec<(&'static str, u64)> {
            let c = self.0.counters();
            vec![
                ("dropped_malformed", c.dropped_malformed),
                ("dropped_filtered", c.dropped_filtered),
                ("dropped_no_peer", c.dropped_no_peer),
                ("dropped_bad_source", c.dropped_bad_source),
                ("dropped_no_endpoint", c.dropped_no_endpoint),
                ("handshakes", c.handshakes),
                ("handshakes_sent", c.handshakes_sent),
                ("cookies_sent", c.cookies_sent),
                ("rx_datagrams", c.rx_datagrams),
                ("tx_datagrams", c.tx_datagrams),
                ("tun_rx_packets", c.tun_rx_packets),
                ("tun_tx_packets", c.tun_tx_packets),
                ("io_errors", c.io_errors),
            ]
        }

        fn shutdown(self: Box<Self>) {
            self.0.shutdown();
        }
    }
}
