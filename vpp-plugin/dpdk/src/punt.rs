//! The punt protocol between vrouter-dpdk and vrouterd (Unix datagrams; see the project's
//! interface notes): a 16-byte little-endian header followed by an IP packet or JSON.
//! Pure encoding/decoding, no I/O.

/// `b"CVPT"` read as a little-endian `u32`.
pub const MAGIC: u32 = 0x5450_5643;
/// Protocol version.
pub const VERSION: u8 = 1;
/// Header length.
pub const HEADER_LEN: usize = 16;
/// `port` of a TX datagram that asks to be routed by destination.
pub const PORT_ANY: u16 = 0xffff;

/// Datagram kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// dpdk → vrouterd: a received outer IP packet the fast path punted.
    Punt = 1,
    /// vrouterd → dpdk: a complete IP packet to transmit.
    Tx = 2,
    /// anyone → dpdk: asks for a [`Kind::StatsRep`].
    StatsReq = 3,
    /// dpdk → requester: JSON counters.
    StatsRep = 4,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Punt),
            2 => Some(Self::Tx),
            3 => Some(Self::StatsReq),
            4 => Some(Self::StatsRep),
            _ => None,
        }
    }
}

/// A decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the payload is.
    pub kind: Kind,
    /// Ingress port (PUNT) or egress port / [`PORT_ANY`] (TX).
    pub port: u16,
    /// Fast-path reason (PUNT), else 0.
    pub reason: u16,
    /// Worker that sent it (PUNT), else 0.
    pub worker: u16,
}

/// Why a datagram was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than [`HEADER_LEN`].
    Short,
    /// Wrong magic.
    Magic,
    /// Unsupported version.
    Version,
    /// Unknown kind.
    Kind,
}

impl Header {
    /// Encodes into the first [`HEADER_LEN`] bytes of `out`.
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

    /// Decodes the header at the start of a datagram.
    ///
    /// # Errors
    /// [`HeaderError`] for short datagrams and unknown magic, version or kind.
    pub fn decode(d: &[u8]) -> Result<Self, HeaderError> {
        let h: &[u8; HEADER_LEN] = d
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(HeaderError::Short)?;
        if u32::from_le_bytes([h[0], h[1], h[2], h[3]]) != MAGIC {
            return Err(HeaderError::Magic);
        }
        if h[4] != VERSION {
            return Err(HeaderError::Version);
        }
        let kind = Kind::from_u8(h[5]).ok_or(HeaderError::Kind)?;
        Ok(Self {
            kind,
            port: u16::from_le_bytes([h[6], h[7]]),
            reason: u16::from_le_bytes([h[8], h[9]]),
            worker: u16::from_le_bytes([h[10], h[11]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_start_with_cvpt_and_round_trip() {
        let h = Header {
            kind: Kind::Punt,
            port: 1,
            reason: 3,
            worker: 2,
        };
        let b = h.encode();
        assert_eq!(&b[..4], b"CVPT");
        assert_eq!(b[4], 1);
        assert_eq!(b[5], 1);
        assert_eq!(&b[6..], &[1, 0, 3, 0, 2, 0, 0, 0, 0, 0]);
        assert_eq!(Header::decode(&b), Ok(h));
    }

    #[test]
    fn unknown_magic_version_kind_and_short_datagrams_are_rejected() {
        let mut b = Header {
            kind: Kind::Tx,
            port: PORT_ANY,
            reason: 0,
            worker: 0,
        }
        .encode();
        assert_eq!(Header::decode(&b[..15]), Err(HeaderError::Short));
        b[5] = 9;
        assert_eq!(Header::decode(&b), Err(HeaderError::Kind));
        b[4] = 2;
        assert_eq!(Header::decode(&b), Err(HeaderError::Version));
        b[0] = b'X';
        assert_eq!(Header::decode(&b), Err(HeaderError::Magic));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_header_round_trips_and_arbitrary_bytes_never_panic(
            kind in 1u8..=4, port: u16, reason: u16, worker: u16,
            junk in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let kind = Kind::from_u8(kind).expect("valid kind");
            let h = Header { kind, port, reason, worker };
            let mut d = h.encode().to_vec();
            d.extend_from_slice(&junk);
            prop_assert_eq!(Header::decode(&d), Ok(h));
            let _ = Header::decode(&junk);
        }
    }
}
