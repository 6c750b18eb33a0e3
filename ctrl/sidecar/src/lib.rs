//! vrouterd: the gateway's control sidecar — the one writer of the shared-memory tables, the
//! WireGuard slow path (handshakes punted by the fast path) and the control-plane client.
//!
//! Sans-IO cores, tested directly:
//! - [`noise`]: WireGuard handshakes (responder, initiator, cookies, index allocation);
//! - [`model`]: tenants, peers, ACLs, routes and keypairs → a table generation;
//! - [`slowpath`]: punted messages and timers → packets to send, tables to publish;
//! - [`punt`]: the punt datagram protocol and outer IP/UDP packets;
//! - [`bootstrap`]: tables from a local TOML file;
//! - [`ctl`]: the control socket protocol and `vrouterctl`'s rendering.
//!
//! The shell: [`daemon`] (the coordinator owning segment and sockets) and [`control`] (the
//! control-plane client: enrolment, Sync stream).

pub mod bootstrap;
pub mod control;
pub mod ctl;
pub mod daemon;
pub mod model;
pub mod noise;
pub mod punt;
pub mod slowpath;

/// Default punt socket.
pub const DEFAULT_PUNT_SOCKET: &str = "/run/cvlan/vrouterd-punt.sock";
/// Default vrouter-dpdk socket.
pub const DEFAULT_DPDK_SOCKET: &str = "/run/cvlan/vrouter-dpdk.sock";
/// Default control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/cvlan/vrouterd.sock";
/// Default segment path.
pub const DEFAULT_SEGMENT: &str = "/dev/shm/cvlan-tables";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vrouterd";
