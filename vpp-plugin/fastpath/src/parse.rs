//! Packet parsers: outer IPv4/IPv6 + UDP, WireGuard message framing, inner IPv4/IPv6 5-tuple.
//! Pure functions over byte slices, never panicking on any input (fuzzed, see `fuzz/`).

use cvlan_tables::FiveTuple;

/// WireGuard message types.
pub const WG_HANDSHAKE_INIT: u8 = 1;
/// Handshake response.
pub const WG_HANDSHAKE_RESPONSE: u8 = 2;
/// Cookie reply.
pub const WG_COOKIE_REPLY: u8 = 3;
/// Transport data.
pub const WG_DATA: u8 = 4;
/// Transport data header: type + reserved (4), receiver (4), counter (8).
pub const WG_DATA_HEADER: usize = 16;
/// Poly1305 tag.
pub const TAG_LEN: usize = 16;

/// Why a packet could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than its headers or its length fields say.
    Truncated,
    /// Not IPv4/IPv6, or header fields out of range.
    BadHeader,
    /// Outer packet is not UDP (or carries IPv6 extension headers).
    NotUdp,
    /// Outer packet is a fragment.
    Fragment,
}

/// The outer (underlay) headers of a received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outer {
    /// IPv6 underlay.
    pub v6: bool,
    /// Source address (IPv4 in the low 32 bits).
    pub src: u128,
    /// Destination address.
    pub dst: u128,
    /// UDP source port.
    pub sport: u16,
    /// UDP destination port.
    pub dport: u16,
    /// Offset of the UDP payload.
    pub payload_off: usize,
    /// Length of the UDP payload.
    pub payload_len: usize,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn addr4(b: &[u8], at: usize) -> Option<u128> {
    let s = b.get(at..at + 4)?;
    Some(u128::from(u32::from_be_bytes([s[0], s[1], s[2], s[3]])))
}

fn addr6(b: &[u8], at: usize) -> Option<u128> {
    let s: [u8; 16] = b.get(at..at + 16)?.try_into().ok()?;
    Some(u128::from_be_bytes(s))
}

/// Parses outer IPv4/IPv6 + UDP.
///
/// # Errors
/// [`ParseError`] when the datagram is not an unfragmented UDP packet.
// Inlined into the nodes: the out-of-line call returned the whole `Outer` (two u128
// addresses the decrypt node never reads) through memory, ~86 instructions per packet.
#[inline]
pub fn parse_outer(p: &[u8]) -> Result<Outer, ParseError> {
    let first = *p.first().ok_or(ParseError::Truncated)?;
    let (v6, src, dst, l4, end) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            let total = usize::from(be16(p, 2).ok_or(ParseError::Truncated)?);
            if ihl < 20 || total < ihl {
                return Err(ParseError::BadHeader);
            }
            if total > p.len() {
                return Err(ParseError::Truncated);
            }
            let frag = be16(p, 6).ok_or(ParseError::Truncated)?;
            if frag & 0x3fff != 0 {
                return Err(ParseError::Fragment);
            }
            if p[9] != 17 {
                return Err(ParseError::NotUdp);
            }
            let src = addr4(p, 12).ok_or(ParseError::Truncated)?;
            let dst = addr4(p, 16).ok_or(ParseError::Truncated)?;
            (false, src, dst, ihl, total)
        }
        6 => {
            if p.len() < 40 {
                return Err(ParseError::Truncated);
            }
            let total = 40 + usize::from(be16(p, 4).ok_or(ParseError::Truncated)?);
            if total > p.len() {
                return Err(ParseError::Truncated);
            }
            if p[6] != 17 {
                return Err(ParseError::NotUdp);
            }
            let src = addr6(p, 8).ok_or(ParseError::Truncated)?;
            let dst = addr6(p, 24).ok_or(ParseError::Truncated)?;
            (true, src, dst, 40, total)
        }
        _ => return Err(ParseError::BadHeader),
    };
    if end < l4 + 8 {
        return Err(ParseError::Truncated);
    }
    let sport = be16(p, l4).ok_or(ParseError::Truncated)?;
    let dport = be16(p, l4 + 2).ok_or(ParseError::Truncated)?;
    let ulen = usize::from(be16(p, l4 + 4).ok_or(ParseError::Truncated)?);
    if ulen < 8 || l4 + ulen > end {
        return Err(ParseError::BadHeader);
    }
    Ok(Outer {
        v6,
        src,
        dst,
        sport,
        dport,
        payload_off: l4 + 8,
        payload_len: ulen - 8,
    })
}

/// A classified WireGuard message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WgMessage {
    /// Handshake initiation (148 bytes).
    HandshakeInit,
    /// Handshake response (92 bytes).
    HandshakeResponse,
    /// Cookie reply (64 bytes).
    CookieReply,
    /// Transport data with an empty payload.
    Keepalive {
        /// Receiver index.
        receiver: u32,
    },
    /// Transport data.
    Data {
        /// Receiver index.
        receiver: u32,
        /// Nonce counter.
        counter: u64,
        /// Ciphertext + tag length (offset is [`WG_DATA_HEADER`]).
        ct_len: usize,
    },
    /// Anything else (wrong type, reserved bytes, or length).
    Unknown,
}

/// Classifies a WireGuard UDP payload.
#[must_use]
#[inline]
pub fn parse_wg(m: &[u8]) -> WgMessage {
    let Some(head) = m.get(..4) else {
        return WgMessage::Unknown;
    };
    if head[1..] != [0, 0, 0] {
        return WgMessage::Unknown;
    }
    match (head[0], m.len()) {
        (WG_HANDSHAKE_INIT, 148) => WgMessage::HandshakeInit,
        (WG_HANDSHAKE_RESPONSE, 92) => WgMessage::HandshakeResponse,
        (WG_COOKIE_REPLY, 64) => WgMessage::CookieReply,
        (WG_DATA, n) if n >= WG_DATA_HEADER + TAG_LEN => {
            let receiver = u32::from_le_bytes([m[4], m[5], m[6], m[7]]);
            let mut c = [0u8; 8];
            c.copy_from_slice(&m[8..16]);
            let ct_len = n - WG_DATA_HEADER;
            if ct_len == TAG_LEN {
                WgMessage::Keepalive { receiver }
            } else {
                WgMessage::Data {
                    receiver,
                    counter: u64::from_le_bytes(c),
                    ct_len,
                }
            }
        }
        _ => WgMessage::Unknown,
    }
}

/// The inner (tenant) packet's classification fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inner {
    /// IPv6.
    pub v6: bool,
    /// Length from the IP header (padding after it is not part of the packet).
    pub total_len: usize,
    /// The 5-tuple.
    pub tuple: FiveTuple,
}

/// Parses an inner IPv4/IPv6 packet. Ports are read for TCP, UDP and SCTP first fragments;
/// they are 0 otherwise. IPv6 extension headers are not walked (the next-header value is the
/// protocol).
///
/// # Errors
/// [`ParseError`] when the packet is not a complete IPv4/IPv6 packet.
#[inline]
pub fn parse_inner(p: &[u8]) -> Result<Inner, ParseError> {
    let first = *p.first().ok_or(ParseError::Truncated)?;
    let (v6, src, dst, proto, l4, total, first_frag) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            let total = usize::from(be16(p, 2).ok_or(ParseError::Truncated)?);
            if ihl < 20 || total < ihl {
                return Err(ParseError::BadHeader);
            }
            if total > p.len() {
                return Err(ParseError::Truncated);
            }
            let frag = be16(p, 6).ok_or(ParseError::Truncated)?;
            let src = addr4(p, 12).ok_or(ParseError::Truncated)?;
            let dst = addr4(p, 16).ok_or(ParseError::Truncated)?;
            (false, src, dst, p[9], ihl, total, frag & 0x1fff == 0)
        }
        6 => {
            if p.len() < 40 {
                return Err(ParseError::Truncated);
            }
            let total = 40 + usize::from(be16(p, 4).ok_or(ParseError::Truncated)?);
            if total > p.len() {
                return Err(ParseError::Truncated);
            }
            let src = addr6(p, 8).ok_or(ParseError::Truncated)?;
            let dst = addr6(p, 24).ok_or(ParseError::Truncated)?;
            (true, src, dst, p[6], 40, total, true)
        }
        _ => return Err(ParseError::BadHeader),
    };
    let (sport, dport) = if first_frag && matches!(proto, 6 | 17 | 132) && total >= l4 + 4 {
        (be16(p, l4).unwrap_or(0), be16(p, l4 + 2).unwrap_or(0))
    } else {
        (0, 0)
    };
    let tcp_flags = if first_frag && proto == 6 && total >= l4 + 14 {
        p[l4 + 13]
    } else {
        0
    };
    Ok(Inner {
        v6,
        total_len: total,
        tuple: FiveTuple {
            src,
            dst,
            proto,
            sport,
            dport,
            tcp_flags,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_udp(payload: &[u8]) -> Vec<u8> {
        let total = 28 + payload.len();
        let mut p = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            17,
            0,
            0,
        ];
        p.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 7]);
        let ulen = 8 + payload.len();
        p.extend_from_slice(&[0x1f, 0x90, 0xca, 0x6c, (ulen >> 8) as u8, ulen as u8, 0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn outer_ipv4_udp_is_located() {
        let p = ipv4_udp(&[1, 2, 3]);
        let o = parse_outer(&p).unwrap();
        assert_eq!(
            (o.v6, o.sport, o.dport, o.payload_off, o.payload_len),
            (false, 8080, 51820, 28, 3)
        );
        assert_eq!(o.src, 0xc000_0201);
    }

    #[test]
    fn outer_fragments_and_non_udp_are_refused() {
        let mut p = ipv4_udp(&[0; 4]);
        p[6] = 0x20; // MF
        assert_eq!(parse_outer(&p), Err(ParseError::Fragment));
        let mut p = ipv4_udp(&[0; 4]);
        p[9] = 6;
        assert_eq!(parse_outer(&p), Err(ParseError::NotUdp));
        assert_eq!(parse_outer(&p[..10]), Err(ParseError::Truncated));
    }

    #[test]
    fn wireguard_messages_are_classified_by_type_and_length() {
        let mut init = vec![0u8; 148];
        init[0] = 1;
        assert_eq!(parse_wg(&init), WgMessage::HandshakeInit);
        init.push(0);
        assert_eq!(parse_wg(&init), WgMessage::Unknown);
        let mut data = vec![4u8, 0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0];
        data.extend_from_slice(&[0; 16]);
        assert_eq!(parse_wg(&data), WgMessage::Keepalive { receiver: 7 });
        data.extend_from_slice(&[0; 16]);
        assert_eq!(
            parse_wg(&data),
            WgMessage::Data {
                receiver: 7,
                counter: 9,
                ct_len: 32
            }
        );
        data[2] = 1;
        assert_eq!(parse_wg(&data), WgMessage::Unknown);
    }

    #[test]
    fn inner_tcp_ports_are_read_but_not_for_later_fragments() {
        let mut p = ipv4_udp(&[0; 8]);
        p[9] = 6;
        let i = parse_inner(&p).unwrap();
        assert_eq!(
            (i.tuple.proto, i.tuple.sport, i.tuple.dport, i.total_len),
            (6, 8080, 51820, 36)
        );
        p[6] = 0x00;
        p[7] = 0x10; // fragment offset 16
        assert_eq!(parse_inner(&p).unwrap().tuple.sport, 0);
    }
}
