//! The `#[repr(C)]` types of the C ABI (mirrored by `include/cvlan_fastpath.h`; the C driver
//! test checks sizes and offsets from the C side against these).

/// `ingress` value of a buffer received from the underlay (encrypted WireGuard datagram).
pub const INGRESS_UNDERLAY: u32 = u32::MAX;
/// Largest batch a node processes at once (larger calls are split).
pub const MAX_BATCH: usize = 256;

/// One packet buffer, owned by the caller. The fast path moves `data` within
/// `[data - headroom, data + len + tailroom)` and updates the four fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    /// First byte of the packet (outer IP header for underlay ingress, inner IP header for
    /// local ingress).
    pub data: *mut u8,
    /// Packet length.
    pub len: u32,
    /// Writable bytes before `data`.
    pub headroom: u32,
    /// Writable bytes after `data + len`.
    pub tailroom: u32,
    /// [`INGRESS_UNDERLAY`], or the tenant slot of the local interface it came from.
    pub ingress: u32,
}

/// Where a packet goes next.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Free the buffer; `reason` says why.
    Drop = 0,
    /// Transmit on the underlay: `data` now starts at the outer IP header; `aux` = peer slot.
    Underlay = 1,
    /// Deliver decrypted to the tenant's local interface; `aux` = interface.
    Local = 2,
    /// Hand, untouched, to the sidecar; `reason` says why.
    Punt = 3,
}

/// Number of [`Next`] values.
pub const NEXT_COUNT: usize = 4;

/// The per-packet result.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// A [`Next`] value.
    pub next: u16,
    /// A [`Reason`] value (0 for forwarded packets).
    pub reason: u16,
    /// Peer slot (underlay) or interface (local), else 0.
    pub aux: u32,
}

macro_rules! reasons {
    ($($name:ident = $val:literal, $c:literal, $doc:literal;)*) => {
        /// Why a packet was dropped or punted (X-macro style: one list, names for C and logs).
        #[repr(u16)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason {
            $(#[doc = $doc] $name = $val,)*
        }
        /// Number of reasons.
        pub const REASON_COUNT: usize = [$($val),*].len();
        impl Reason {
            /// All reasons, by value.
            pub const ALL: [Reason; REASON_COUNT] = [$(Reason::$name),*];
            /// Stable short name (as in the C header's `CVLAN_FP_REASON_*`, lower case).
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self { $(Reason::$name => $c,)* }
            }
            /// NUL-terminated name for C.
            #[must_use]
            pub const fn c_name(self) -> &'static core::ffi::CStr {
                match self { $(Reason::$name => {
                    match core::ffi::CStr::from_bytes_with_nul(concat!($c, "\0").as_bytes()) {
                        Ok(s) => s,
                        Err(_) => c"?",
                    }
                })* }
            }
        }
    };
}

reasons! {
    None = 0, "none", "Forwarded: no reason.";
    Malformed = 1, "malformed", "Drop: headers truncated or inconsistent.";
    NotWireguard = 2, "not_wireguard", "Punt: underlay packet that is not UDP/unfragmented.";
    HandshakeInit = 3, "handshake_init", "Punt: WireGuard handshake initiation.";
    HandshakeResponse = 4, "handshake_response", "Punt: WireGuard handshake response.";
    CookieReply = 5, "cookie_reply", "Punt: WireGuard cookie reply.";
    Keepalive = 6, "keepalive", "Punt: WireGuard keepalive (empty data message).";
    UnknownMessage = 7, "unknown_message", "Punt: unknown WireGuard message type or length.";
    UnknownReceiver = 8, "unknown_receiver", "Punt: receiver index without an installed keypair.";
    Replay = 9, "replay", "Drop: counter replayed or older than the window.";
    AuthFailed = 10, "auth_failed", "Drop: ChaCha20-Poly1305 authentication failed.";
    SourceNotAllowed = 11, "source_not_allowed", "Drop: inner source outside the peer's allowed IPs.";
    AclDeny = 12, "acl_deny", "Drop: denied by the tenant ACL.";
    NoRoute = 13, "no_route", "Drop: no route for the inner destination.";
    NoKeypair = 14, "no_keypair", "Punt: egress peer has no current keypair (needs a handshake).";
    NoEndpoint = 15, "no_endpoint", "Punt: egress peer endpoint unknown.";
    KeypairExhausted = 16, "keypair_exhausted", "Punt: send counter at the limit or keypair retired.";
    NoHeadroom = 17, "no_headroom", "Drop: not enough headroom for the outer headers.";
    NoTailroom = 18, "no_tailroom", "Drop: not enough tailroom for padding and tag.";
    UnknownTenant = 19, "unknown_tenant", "Drop: local ingress from an unknown tenant slot.";
    NoTables = 20, "no_tables", "Drop: no table generation published yet.";
    Internal = 21, "internal", "Drop: internal error (corrupt tables or a caught panic).";
}

/// Per-peer or per-tenant counters kept by one worker.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets decrypted from (peer) / received in (tenant).
    pub rx_packets: u64,
    /// Inner bytes received.
    pub rx_bytes: u64,
    /// Packets encrypted to (peer) / sent in (tenant).
    pub tx_packets: u64,
    /// Inner bytes sent.
    pub tx_bytes: u64,
    /// Packets dropped after being attributed to this peer/tenant.
    pub drops: u64,
}

/// Worker totals.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Batches processed.
    pub batches: u64,
    /// Packets processed.
    pub packets: u64,
    /// Packets per [`Next`].
    pub next: [u64; NEXT_COUNT],
    /// Packets per [`Reason`] (index = value).
    pub reason: [u64; 32],
    /// Generation seen by the last batch.
    pub generation: u64,
    /// Time-stamp-counter ticks spent per node: wg-decrypt, acl, route, wg-encrypt (like
    /// VPP's per-node clocks; 0 where no TSC is available).
    pub node_ticks: [u64; 4],
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            batches: 0,
            packets: 0,
            next: [0; NEXT_COUNT],
            reason: [0; 32],
            generation: 0,
            node_ticks: [0; 4],
        }
    }
}

/// Reads the time-stamp counter (0 off x86-64).
#[inline(always)]
#[must_use]
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc has no preconditions.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

const _: () = assert!(REASON_COUNT <= 32);
