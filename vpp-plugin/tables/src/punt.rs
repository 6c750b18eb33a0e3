//! The punt protocol header between vrouter-dpdk (the fast path) and vrouterd (the sidecar):
//! Unix datagrams of a 16-byte little-endian header followed by an IP packet or JSON.
//!
//! ```text
//! offset  0: magic    u32  b"CVPT"
//! offset  4: version  u8   1
//! offset  5: kind     u8   Punt=1 Tx=2 StatsReq=3 StatsRep=4
//! offset  6: port     u16  ingress port (Punt), egress port or PORT_ROUTE (Tx)
//! offset  8: reason   u16  fast-path verdict reason (Punt), else 0
//! offset 10: worker   u16  worker that sent it, else 0
//! offset 12: reserved u32  0 on send, ignored on receive
//! ```
//!
//! It lives here, next to the table layout, because it is the other half of the wire contract
//! both sides build against; one definition means they cannot drift. Pure encoding and
//! decoding, no_std and no alloc: a fast-path worker encodes into a fixed array per packet.

use core::fmt;

/// `b"CVPT"` read as a little-endian `u32`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"CVPT");
/// Protocol version.
pub const VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 16;
/// `port` of a TX datagram that asks the fast path to route by destination.
pub const PORT_ROUTE: u16 = 0xffff;

/// Datagram kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// dpdk → vrouterd: a received outer IP packet the fast path punted.
    Punt = 1,
    /// vrouterd → dpdk: a complete IP packet to transmit.
    Tx = 2,
    /// anyone → dpdk: asks for a [`Kind::StatsRep`] to the sender's address.
    StatsReq = 3,
    /// dpdk → requester: JSON counters.
    StatsRep = 4,
}

impl Kind {
    /// The kind with wire value `v`, if there is one.
    #[must_use]
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Punt),
            2 => Some(Self::Tx),
            3 => Some(Self::StatsReq),
            4 => Some(Self::StatsRep),
            _ => None,
        }
    }
}

/// Why a datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PuntError {
    /// Shorter than [`HEADER_LEN`].
    Short,
    /// Wrong magic.
    BadMagic,
    /// Unsupported version.
    BadVersion,
    /// Unknown kind.
    BadKind,
}

impl PuntError {
    /// A stable label for metrics and counters.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::BadMagic => "bad_magic",
            Self::BadVersion => "bad_version",
            Self::BadKind => "bad_kind",
        }
    }
}

// By hand rather than thiserror: this module must build without `std` (thiserror is only
// pulled in by the `std` feature).
impl fmt::Display for PuntError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Short => "datagram shorter than the punt header",
            Self::BadMagic => "bad punt magic",
            Self::BadVersion => "unsupported punt version",
            Self::BadKind => "unknown punt kind",
        })
    }
}

impl core::error::Error for PuntError {}

/// A datagram header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the payload is.
    pub kind: Kind,
    /// Ingress port (PUNT) or egress port / [`PORT_ROUTE`] (TX), else 0.
    pub port: u16,
    /// Fast-path verdict reason (PUNT), else 0.
    pub reason: u16,
    /// Worker that sent it, else 0.
    pub worker: u16,
}

impl Header {
    /// The header's wire bytes (the payload follows them in the datagram).
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4] = VERSION;
        h[5] = self.kind as u8;
        h[6..8].copy_from_slice(&self.port.to_le_bytes());
        h[8..10].copy_from_slice(&self.reason.to_le_bytes());
        h[10..12].copy_from_slice(&self.worker.to_le_bytes());
        h
    }

    /// Splits a datagram into its header and payload.
    ///
    /// # Errors
    /// [`PuntError`] for a short datagram or an unknown magic, version or kind (checked in
    /// that order).
    pub fn parse(d: &[u8]) -> Result<(Self, &[u8]), PuntError> {
        let (h, payload) = d
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(PuntError::Short)?;
        if u32::from_le_bytes([h[0], h[1], h[2], h[3]]) != MAGIC {
            return Err(PuntError::BadMagic);
        }
        if h[4] != VERSION {
            return Err(PuntError::BadVersion);
        }
        let kind = Kind::from_u8(h[5]).ok_or(PuntError::BadKind)?;
        let header = Self {
            kind,
            port: u16::from_le_bytes([h[6], h[7]]),
            reason: u16::from_le_bytes([h[8], h[9]]),
            worker: u16::from_le_bytes([h[10], h[11]]),
        };
        Ok((header, payload))
    }

    /// Decodes the header at the start of a datagram, ignoring the payload.
    ///
    /// # Errors
    /// As [`Header::parse`].
    pub fn decode(d: &[u8]) -> Result<Self, PuntError> {
        Self::parse(d).map(|(h, _)| h)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::string::ToString;
    use std::vec::Vec;

    fn datagram(h: Header, payload: &[u8]) -> Vec<u8> {
        let mut d = h.encode().to_vec();
        d.extend_from_slice(payload);
        d
    }

    #[test]
    fn header_bytes_follow_the_documented_layout_and_round_trip_with_the_payload() {
        let h = Header {
            kind: Kind::Punt,
            port: 1,
            reason: 3,
            worker: 2,
        };
        let b = h.encode();
        assert_eq!(&b[..4], b"CVPT");
        assert_eq!(b[4], 1, "version");
        assert_eq!(b[5], 1, "kind");
        assert_eq!(&b[6..], &[1, 0, 3, 0, 2, 0, 0, 0, 0, 0]);
        assert_eq!(Header::decode(&b), Ok(h));
        let d = datagram(h, b"xyz");
        assert_eq!(Header::parse(&d), Ok((h, &b"xyz"[..])));
        assert_eq!(Header::parse(&b), Ok((h, &[][..])), "empty payload");
    }

    #[test]
    fn short_datagrams_and_bad_magic_version_or_kind_are_refused_by_reason() {
        let d = datagram(
            Header {
                kind: Kind::Tx,
                port: PORT_ROUTE,
                reason: 0,
                worker: 0,
            },
            b"xyz",
        );
        assert_eq!(Header::parse(&d[..HEADER_LEN - 1]), Err(PuntError::Short));
        assert_eq!(Header::decode(&[]), Err(PuntError::Short));
        let mut bad = d.clone();
        bad[0] = b'X';
        assert_eq!(Header::parse(&bad), Err(PuntError::BadMagic));
        let mut bad = d.clone();
        bad[4] = 2;
        assert_eq!(Header::parse(&bad), Err(PuntError::BadVersion));
        for k in [0, 5, 9, 255] {
            let mut bad = d.clone();
            bad[5] = k;
            assert_eq!(Header::parse(&bad), Err(PuntError::BadKind), "kind {k}");
        }
    }

    #[test]
    fn the_reserved_bytes_are_ignored_on_receive() {
        let h = Header {
            kind: Kind::StatsReq,
            port: 0,
            reason: 0,
            worker: 0,
        };
        let mut b = h.encode();
        b[12..].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(Header::decode(&b), Ok(h));
    }

    #[test]
    fn every_error_has_a_distinct_label_and_message() {
        let all = [
            PuntError::Short,
            PuntError::BadMagic,
            PuntError::BadVersion,
            PuntError::BadKind,
        ];
        let names: Vec<_> = all.iter().map(|e| e.name()).collect();
        assert_eq!(names, ["short", "bad_magic", "bad_version", "bad_kind"]);
        let msgs: std::collections::BTreeSet<_> = all.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), all.len());
        let _: &dyn core::error::Error = &PuntError::Short;
    }

    proptest! {
        #[test]
        fn every_header_round_trips_and_arbitrary_bytes_never_panic(
            k in 1u8..=4, port: u16, reason: u16, worker: u16,
            junk in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let kind = Kind::from_u8(k).expect("valid kind");
            prop_assert_eq!(kind as u8, k);
            let h = Header { kind, port, reason, worker };
            let d = datagram(h, &junk);
            prop_assert_eq!(Header::parse(&d), Ok((h, &junk[..])));
            let _ = Header::parse(&junk);
        }
    }
}
