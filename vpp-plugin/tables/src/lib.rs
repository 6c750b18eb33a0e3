//! cvlan-tables: the shared-memory table format between the gateway sidecar (vrouterd, the
//! one writer) and the fast-path workers (lock-free readers). A core crate: no I/O beyond
//! mapping the segment, no clock.
//!
//! * [`layout`] — the `#[repr(C)]` records (no_std).
//! * [`view`] — attach, enter/leave a generation, and the lookups the fast path runs (no_std).
//! * [`punt`] — the punt datagram header between the fast path and vrouterd (no_std).
//! * `builder` / `segment` (feature `std`) — compile tables into a generation image and publish
//!   it with one atomic swap; a slot is reused only when no worker acknowledges it.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod layout;
pub mod punt;
pub mod view;

#[cfg(feature = "std")]
pub mod builder;
#[cfg(feature = "std")]
pub mod segment;

#[cfg(feature = "std")]
pub use builder::{
    AclRuleSpec, BuildError, KeypairSpec, PeerSpec, Prefix, RouteTarget, TableBuilder, TenantSpec,
};
#[cfg(feature = "std")]
pub use segment::{Segment, SegmentError, SegmentParams};
pub use view::{FiveTuple, GenView, LayoutError, SegmentRef};
