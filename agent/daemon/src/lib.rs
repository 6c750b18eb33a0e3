//! cvlan-agent daemon and cvlan CLI: joins a device to a CVLAN and keeps its tunnels in sync.
//!
//! A shell crate around a few pure parts:
//! - [`netmap`]: the network map as the control plane streams it (snapshot, then deltas) and
//!   its translation into the data plane's peer set and inbound filter — pure functions;
//! - [`backoff`]: reconnect delays (time and randomness passed in);
//! - [`ipc`]: the versioned JSON-lines protocol between `cvlan` and `cvlan-agent`;
//! - [`state`]: the state directory (keys, certificate, node, cached map), written atomically.
//!
//! The shell: [`tls`] (CA-pinned rustls connector for the tonic client), [`agent`] (lifecycle,
//! Sync loop, outage handling), [`tunnel`] (the data-plane trait and its implementations),
//! [`endpoints`] (local UDP endpoints to report), [`ping`] (ICMP echo for `cvlan ping`) and
//! [`metrics_http`].

pub mod agent;
pub mod backoff;
pub mod endpoints;
pub mod ipc;
pub mod keys;
pub mod metrics_http;
pub mod netmap;
pub mod ping;
pub mod state;
pub mod tls;
pub mod token;
pub mod tunnel;

/// Default path of the daemon's control socket.
pub const DEFAULT_SOCKET: &str = "/run/cvlan/cvlan.sock";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cvlan-agent";
/// Default TUN device name.
pub const DEFAULT_TUN: &str = "cvlan0";
/// Default node-listener port of the control plane when the URL has none.
pub const DEFAULT_SERVER_PORT: u16 = 8443;
