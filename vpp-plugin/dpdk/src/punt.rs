//! The punt protocol between vrouter-dpdk and vrouterd (Unix datagrams; see the project's
//! interface notes): a 16-byte little-endian header followed by an IP packet or JSON. The
//! header is defined once in [`cvlan_tables::punt`], the wire-contract crate vrouterd builds
//! against too; this module only re-exports what the workers use.

pub use cvlan_tables::punt::{HEADER_LEN, Header, Kind, PORT_ROUTE};
