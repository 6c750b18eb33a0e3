//! The `#[repr(C)]` records of a table segment. Everything here is plain data with a fixed
//! layout (checked by size assertions below), so that the sidecar (writer) and the workers
//! (readers, possibly C code in VPP) agree byte for byte.
//!
//! Segment = [`SegmentHeader`] | keypair state region | `SLOTS` generation slots.
//! A generation slot = [`GenHeader`] followed by sections (arrays of one record type each),
//! every section 64-byte aligned, located by a [`Section`] (offset from the slot start, count).

use core::sync::atomic::AtomicU64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// "CVLANSEG" — first eight bytes of a segment.
pub const SEG_MAGIC: u64 = u64::from_le_bytes(*b"CVLANSEG");
/// "CVLANGEN" — first eight bytes of a generation slot.
pub const GEN_MAGIC: u64 = u64::from_le_bytes(*b"CVLANGEN");
/// Bumped on every incompatible layout change.
pub const ABI_VERSION: u32 = 5;
/// Worker acknowledgement slots in the header.
pub const MAX_WORKERS: usize = 64;
/// Generation slots: one active, one being reclaimed by slow readers, one being written.
pub const SLOTS: usize = 3;
/// "No index" in any `u32` reference field.
pub const NONE: u32 = u32::MAX;
/// Route/LPM value bit meaning "deliver to the tenant's local interface" (low bits: iface).
pub const ROUTE_LOCAL: u32 = 0x8000_0000;

/// Tenant/peer/keypair flag: the record is in use.
pub const FLAG_ACTIVE: u32 = 1;
/// Keypair flag: this is its peer's `next` keypair (responder side, not yet confirmed), so
/// the first packet it authenticates must be reported through `KeypairState::rx_seen`.
pub const FLAG_NEXT: u32 = 2;

/// ACL rule flag: a TCP segment matches only with ACK or RST set — a reply within a
/// connection, never an opening SYN. Other protocols are unaffected. This is how a stateless
/// gateway lets replies through without letting the replying side open connections.
pub const ACL_FLAG_ESTABLISHED: u8 = 1;
/// TCP header flag bits the established match looks at (ACK | RST).
pub const TCP_ACK_OR_RST: u8 = 0x10 | 0x04;

/// ACL action: drop.
pub const ACTION_DENY: u8 = 0;
/// ACL action: forward.
pub const ACTION_PERMIT: u8 = 1;

/// One worker's acknowledgement: the generation it is reading, or 0 when between batches.
/// Own cache line so workers never false-share.
#[repr(C, align(64))]
pub struct WorkerAck {
    /// Generation currently read by this worker (0 = not reading).
    pub generation: AtomicU64,
    /// Padding to a cache line.
    pub _pad: [u64; 7],
}

/// Start of the segment. Written once at creation except for `active`, `slot_generation`
/// and the worker acknowledgements.
#[repr(C, align(64))]
pub struct SegmentHeader {
    /// [`SEG_MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// `size_of::<SegmentHeader>()`, so that readers can detect a mismatch.
    pub header_size: u32,
    /// Total mapped size in bytes.
    pub segment_size: u64,
    /// Bytes per generation slot.
    pub slot_size: u64,
    /// Offset of each generation slot from the segment start (page aligned).
    pub slot_offset: [u64; SLOTS],
    /// Offset of the keypair state region (`keypair_capacity` × [`KeypairState`]).
    pub state_offset: u64,
    /// Keypair table size, a power of two; receiver index low bits select the entry.
    pub keypair_capacity: u32,
    /// Number of usable [`WorkerAck`] entries.
    pub max_workers: u32,
    /// The published generation: `(generation << 8) | slot`, 0 before the first publish.
    pub active: AtomicU64,
    /// Generation held by each slot (0 = never written).
    pub slot_generation: [AtomicU64; SLOTS],
    /// Room for later fields without an ABI bump.
    pub reserved: [u64; 32],
    /// Per-worker acknowledgements used for reclamation.
    pub workers: [WorkerAck; MAX_WORKERS],
}

/// Mutable per-keypair state that must survive generation swaps (not part of a generation).
#[repr(C, align(64))]
pub struct KeypairState {
    /// `install_id` of the keypair this state belongs to; a mismatch means "retired".
    pub install_id: AtomicU64,
    /// Next send counter (the only shared atomic in the hot path).
    pub send_counter: AtomicU64,
    /// Set to 1 by a worker the first time a packet authenticates with this keypair; the
    /// sidecar uses it to promote a `next` keypair to `current`.
    pub rx_seen: AtomicU64,
    /// Padding to a cache line.
    pub _pad: [u64; 5],
}

/// Location of one array inside a generation slot.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Section {
    /// Byte offset from the slot start (64-byte aligned).
    pub offset: u64,
    /// Number of records.
    pub count: u64,
}

/// The gateway's own underlay address, used as the outer source of encrypted packets.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Underlay {
    /// IPv4 source address (network order bytes), all zero if none.
    pub addr4: [u8; 4],
    /// UDP source port.
    pub port: u16,
    /// Padding.
    pub _pad: u16,
    /// IPv6 source address, all zero if none.
    pub addr6: [u8; 16],
}

/// Start of a generation slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GenHeader {
    /// [`GEN_MAGIC`].
    pub magic: u64,
    /// Generation number (≥ 1), equal to the one in `SegmentHeader::active`.
    pub generation: u64,
    /// Bytes used in the slot.
    pub total_len: u64,
    /// Number of keypair records (== segment keypair capacity).
    pub keypair_capacity: u32,
    /// Padding.
    pub _pad: u32,
    /// Outer source address/port.
    pub underlay: Underlay,
    /// [`Tenant`] records; the tenant *slot* is the index.
    pub tenants: Section,
    /// [`Peer`] records; the peer *slot* is the index (stable across generations).
    pub peers: Section,
    /// [`Keypair`] records, direct-indexed by `receiver_index & (capacity - 1)`.
    pub keypairs: Section,
    /// [`LpmLevel`] records of every tenant's route tables.
    pub lpm_levels: Section,
    /// [`LpmEntry`] hash buckets of all LPM levels.
    pub lpm_entries: Section,
    /// [`AclTuple`] records of every tenant's compiled ACL.
    pub acl_tuples: Section,
    /// [`AclBucket`] hash buckets of all tuples.
    pub acl_buckets: Section,
    /// [`AclRule`] residual checks (protocol, ports, action).
    pub acl_rules: Section,
    /// [`EspSa`] records (reserved for the ESP nodes; empty today).
    pub esp_sas: Section,
    /// `u64` words of the ACL tuples' presence filters.
    pub acl_filters: Section,
    /// [`PeerKey`] records, by peer slot (kept out of [`Peer`] so that a peer is one line).
    pub peer_keys: Section,
    /// Room for later sections without an ABI bump.
    pub reserved: [u64; 28],
}

/// Reference to a tenant's LPM levels (one per prefix length present, longest first).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct LpmRef {
    /// Index of the first [`LpmLevel`].
    pub first_level: u32,
    /// Number of levels.
    pub n_levels: u32,
}

/// Reference to a tenant's compiled ACL for one family.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct AclRef {
    /// Index of the first [`AclTuple`].
    pub first_tuple: u32,
    /// Number of tuples.
    pub n_tuples: u32,
}

/// A tenant.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Tenant {
    /// External tenant id.
    pub id: u64,
    /// [`FLAG_ACTIVE`].
    pub flags: u32,
    /// [`ACTION_DENY`] or [`ACTION_PERMIT`] when no rule matches.
    pub default_action: u32,
    /// Local interface for `ROUTE_LOCAL` routes.
    pub local_iface: u32,
    /// Padding.
    pub _pad: u32,
    /// IPv4 routes (and allowed IPs).
    pub route4: LpmRef,
    /// IPv6 routes (and allowed IPs).
    pub route6: LpmRef,
    /// IPv4 ACL.
    pub acl4: AclRef,
    /// IPv6 ACL.
    pub acl6: AclRef,
}

/// A WireGuard peer of a tenant: one cache line, everything wg-encrypt reads of it. (Sized,
/// not aligned, to 64 bytes: sections start on a 64-byte boundary inside a page-aligned slot,
/// so records sit on lines there, while an unaligned image buffer still parses.)
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Peer {
    /// External peer id.
    pub id: u64,
    /// Tenant slot.
    pub tenant: u32,
    /// [`FLAG_ACTIVE`].
    pub flags: u32,
    /// Keypair slot used for sending, or [`NONE`].
    pub current: u32,
    /// Previous keypair slot (still accepted on receive), or [`NONE`].
    pub previous: u32,
    /// Next keypair slot (responder side, not yet confirmed), or [`NONE`].
    pub next: u32,
    /// Endpoint UDP port.
    pub endpoint_port: u16,
    /// 4, 6, or 0 when the endpoint is unknown.
    pub endpoint_family: u8,
    /// Padding.
    pub _pad: u8,
    /// Endpoint address (IPv4 in the first four bytes).
    pub endpoint_addr: [u8; 16],
    /// Room for later fields.
    pub reserved: [u8; 16],
}

/// A peer's static public key (for the sidecar and diagnostics; never read per packet).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct PeerKey {
    /// Curve25519 public key.
    pub public_key: [u8; 32],
}

/// A WireGuard session keypair: two cache lines, the first holding everything wg-decrypt
/// reads (so a received packet needs neither the send half nor the peer record), the second
/// everything wg-encrypt reads. (Sized, not aligned, to lines: see [`Peer`].)
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Keypair {
    /// Our index (the receiver index in packets we receive).
    pub receiver_index: u32,
    /// Peer slot.
    pub peer: u32,
    /// [`FLAG_ACTIVE`], [`FLAG_NEXT`].
    pub flags: u32,
    /// The peer's tenant slot (a copy, so that receive never reads the peer record).
    pub tenant: u32,
    /// Unique per installed keypair, ties [`KeypairState`] and per-worker replay windows.
    pub install_id: u64,
    /// ChaCha20-Poly1305 key for receiving.
    pub recv_key: [u8; 32],
    /// Room for later receive-side fields.
    pub _rx_reserved: [u8; 8],
    /// The peer's index, written as the receiver index of packets we send.
    pub remote_index: u32,
    /// Padding.
    pub _pad: u32,
    /// ChaCha20-Poly1305 key for sending.
    pub send_key: [u8; 32],
    /// Room for later send-side fields.
    pub _tx_reserved: [u8; 24],
}

/// One prefix length of a tenant's LPM: an open-addressing hash table of masked keys.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct LpmLevel {
    /// Prefix length.
    pub prefix_len: u32,
    /// Table size − 1 (size is a power of two).
    pub mask: u32,
    /// Index of the first [`LpmEntry`].
    pub first_entry: u64,
    /// The prefix mask `[hi, lo]`, precomputed (a variable 128-bit shift per packet costs).
    pub key_mask: [u64; 2],
}

/// An LPM hash bucket.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct LpmEntry {
    /// Masked key as `[high 64 bits, low 64 bits]` (IPv4 in the low 32 bits).
    pub key: [u64; 2],
    /// Peer slot, or `ROUTE_LOCAL | iface`.
    pub value: u32,
    /// 1 when occupied.
    pub used: u32,
}

/// One (source length, destination length) tuple of a compiled ACL.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct AclTuple {
    /// Source prefix length.
    pub src_len: u8,
    /// Destination prefix length.
    pub dst_len: u8,
    /// Padding.
    pub _pad: [u8; 2],
    /// Smallest rule index in this tuple (tuples are sorted by it, for early exit).
    pub min_index: u32,
    /// Bucket table size − 1.
    pub mask: u32,
    /// Padding.
    pub _pad2: u32,
    /// Index of the first [`AclBucket`].
    pub first_bucket: u64,
    /// Source prefix mask `[hi, lo]`, precomputed.
    pub src_mask: [u64; 2],
    /// Destination prefix mask `[hi, lo]`, precomputed.
    pub dst_mask: [u64; 2],
    /// Index of this tuple's presence filter in `acl_filters` (u64 words): one bit per
    /// `hash >> 32` value, set for every bucket key, so most misses skip the bucket probe.
    pub filter_first: u64,
    /// Filter size in bits − 1 (a power of two minus one).
    pub filter_mask: u32,
    /// Padding.
    pub _pad3: u32,
}

/// A bucket: all rules of one tuple with the same masked source and destination.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct AclBucket {
    /// Masked source `[hi, lo]`.
    pub src: [u64; 2],
    /// Masked destination `[hi, lo]`.
    pub dst: [u64; 2],
    /// Index of the first [`AclRule`] (rules of a bucket are sorted by rule index).
    pub first_rule: u32,
    /// Number of rules; 0 = empty bucket.
    pub n_rules: u32,
}

/// The residual part of a rule checked after its bucket matched.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct AclRule {
    /// Position in the tenant's rule list (lower wins).
    pub index: u32,
    /// Source port range, inclusive.
    pub sport_lo: u16,
    /// Source port range, inclusive.
    pub sport_hi: u16,
    /// Destination port range, inclusive.
    pub dport_lo: u16,
    /// Destination port range, inclusive.
    pub dport_hi: u16,
    /// IP protocol (ignored when `proto_any`).
    pub proto: u8,
    /// 1 = any protocol.
    pub proto_any: u8,
    /// [`ACTION_DENY`] or [`ACTION_PERMIT`].
    pub action: u8,
    /// [`ACL_FLAG_ESTABLISHED`] or 0.
    pub flags: u8,
}

/// An ESP security association (layout reserved for the ESP nodes of a later issue).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct EspSa {
    /// Security parameter index.
    pub spi: u32,
    /// Flags (direction, algorithm).
    pub flags: u32,
    /// Tenant slot.
    pub tenant: u32,
    /// Peer slot (or [`NONE`]).
    pub peer: u32,
    /// AES-256-GCM key.
    pub key: [u8; 32],
    /// GCM salt.
    pub salt: u32,
    /// Padding.
    pub _pad: u32,
    /// Room for tunnel endpoints and lifetimes.
    pub reserved: [u64; 8],
}

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<WorkerAck>() == 64);
    assert!(size_of::<KeypairState>() == 64);
    assert!(size_of::<SegmentHeader>().is_multiple_of(64));
    assert!(size_of::<GenHeader>() == 456);
    assert!(size_of::<Tenant>() == 56);
    assert!(size_of::<Peer>() == 64);
    assert!(size_of::<Keypair>() == 128);
    assert!(core::mem::offset_of!(Keypair, recv_key) + 32 <= 64);
    assert!(core::mem::offset_of!(Keypair, remote_index) == 64);
    assert!(size_of::<LpmLevel>() == 32);
    assert!(size_of::<LpmEntry>() == 24);
    assert!(size_of::<AclTuple>() == 72);
    assert!(size_of::<AclBucket>() == 40);
    assert!(size_of::<AclRule>() == 16);
    assert!(size_of::<EspSa>() == 120);
};
