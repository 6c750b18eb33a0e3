//! vrouterd: the gateway's control sidecar — the one writer of the shared-memory tables, the
//! WireGuard slow path (handshakes punted by the fast path) and the control-plane client.
//!
//! Sans-IO cores, tested directly:
//! - [`noise`]: WireGuard handshakes (responder, initiator, cookies, index allocation);
//! - [`punt`]: the punt datagram protocol and outer IP/UDP packets.

pub mod noise;
pub mod punt;
