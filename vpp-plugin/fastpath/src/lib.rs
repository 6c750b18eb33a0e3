//! cvlan-fastpath: the gateway's per-packet work as VPP-style vector nodes over batches of
//! buffers — `wg-decrypt` → `acl` → `route` → `wg-encrypt` — reading the shared-memory tables
//! of `cvlan-tables`, behind a small C ABI ([`ffi`], `include/cvlan_fastpath.h`).
//!
//! A core crate: no sockets, no clock, no allocation or locks per packet. Everything that is
//! not transport data (handshakes, cookies, keepalives, unknown traffic) is punted to the
//! sidecar with a reason.

pub mod abi;
pub mod ffi;
pub mod fuzzing;
pub mod parse;
pub mod replay;
pub mod worker;

pub use abi::{Buf, Counters, INGRESS_UNDERLAY, MAX_BATCH, Next, Reason, Stats, Verdict};
pub use worker::{Worker, WorkerError};
