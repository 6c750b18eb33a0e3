//! The punt protocol between vrouter-dpdk and vrouterd (Unix datagrams, see
//! notes/interfaces.md): the 16-byte header is defined once in [`cvlan_tables::punt`] (the
//! wire-contract crate both sides build against) and re-exported here; this module adds the
//! outer IPv4/IPv6 + UDP parsing of punted packets and building of the packets vrouterd
//! transmits. Sans-IO.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use cvlan_tables::punt::{HEADER_LEN, Header, Kind, MAGIC, PORT_ROUTE, PuntError, VERSION};

/// A punted outer UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Udp<'a> {
    /// Outer source.
    pub src: SocketAddr,
    /// Outer destination.
    pub dst: SocketAddr,
    /// UDP payload.
    pub payload: &'a [u8],
}

/// Parses an outer IPv4/IPv6 + UDP packet (no options beyond IHL, no IPv6 extension
/// headers, no fragments — the fast path punts those as not-WireGuard anyway).
#[must_use]
pub fn parse_udp(p: &[u8]) -> Option<Udp<'_>> {
    let (src, dst, l4) = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0xf) * 4;
            if ihl < 20 || p.len() < ihl + 8 || p[9] != 17 {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            let frag = u16::from_be_bytes([p[6], p[7]]);
            if frag & 0x3fff != 0 || total < ihl + 8 || total > p.len() {
                return None;
            }
            let s: [u8; 4] = p[12..16].try_into().ok()?;
            let d: [u8; 4] = p[16..20].try_into().ok()?;
            (IpAddr::from(s), IpAddr::from(d), &p[ihl..total])
        }
        6 => {
            if p.len() < 48 || p[6] != 17 {
                return None;
            }
            let plen = usize::from(u16::from_be_bytes([p[4], p[5]]));
            if 40 + plen > p.len() || plen < 8 {
                return None;
            }
            let s: [u8; 16] = p[8..24].try_into().ok()?;
            let d: [u8; 16] = p[24..40].try_into().ok()?;
            (IpAddr::from(s), IpAddr::from(d), &p[40..40 + plen])
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    let ulen = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
    if ulen < 8 || ulen > l4.len() {
        return None;
    }
    Some(Udp {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        payload: &l4[8..ulen],
    })
}

fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut it = data.chunks_exact(2);
    for c in &mut it {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = it.remainder() {
        sum += u32::from(*b) << 8;
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Builds an IPv4 or IPv6 + UDP packet from `src` to `dst` (same family) carrying
/// `payload`. IPv4 gets a header checksum and UDP checksum 0; IPv6 a full UDP checksum (it is
/// mandatory there). `None` for mixed families or an oversized payload.
#[must_use]
pub fn build_udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let ulen = u16::try_from(8 + payload.len()).ok()?;
    let mut udp = Vec::with_capacity(usize::from(ulen));
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&ulen.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(20 + udp.len()).ok()?;
            let mut p = Vec::with_capacity(usize::from(total));
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            let ck = csum_fold(csum_add(0, &p));
            p[10..12].copy_from_slice(&ck.to_be_bytes());
            p.extend_from_slice(&udp);
            Some(p)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut sum = csum_add(0, &s.octets());
            sum = csum_add(sum, &d.octets());
            sum += u32::from(ulen) + 17;
            sum = csum_add(sum, &udp);
            let mut ck = csum_fold(sum);
            if ck == 0 {
                ck = 0xffff;
            }
            udp[6..8].copy_from_slice(&ck.to_be_bytes());
            let mut p = Vec::with_capacity(40 + udp.len());
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&ulen.to_be_bytes());
            p.extend_from_slice(&[17, 64]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&udp);
            Some(p)
        }
        _ => None,
    }
}

/// The unspecified address of `dst`'s family with `port` (the underlay address of the
/// other family is missing).
#[must_use]
pub fn unspecified_like(dst: &SocketAddr, port: u16) -> SocketAddr {
    match dst {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn built_packets_parse_back_with_valid_checksums() {
        for (s, d) in [
            ("10.255.0.1:51820", "10.251.1.2:40000"),
            ("[fd00::1]:51820", "[fd00::2]:40000"),
        ] {
            let (s, d): (SocketAddr, SocketAddr) = (s.parse().expect("s"), d.parse().expect("d"));
            let p = build_udp(s, d, b"hello").expect("build");
            let u = parse_udp(&p).expect("parse");
            assert_eq!((u.src, u.dst, u.payload), (s, d, &b"hello"[..]));
            if s.is_ipv4() {
                assert_eq!(csum_fold(csum_add(0, &p[..20])), 0);
            } else {
                let mut sum = csum_add(0, &p[8..40]);
                sum += (p.len() as u32 - 40) + 17;
                sum = csum_add(sum, &p[40..]);
                assert_eq!(csum_fold(sum), 0);
            }
        }
        let mixed = build_udp(
            "10.0.0.1:1".parse().expect("a"),
            "[::1]:1".parse().expect("b"),
            b"",
        );
        assert!(mixed.is_none());
    }

    proptest! {
        #[test]
        fn random_datagrams_never_panic(d in prop::collection::vec(any::<u8>(), 0..120)) {
            let _ = parse_udp(&d);
            let mut v4 = d.clone();
            if !v4.is_empty() { v4[0] = 0x45; }
            let _ = parse_udp(&v4);
            let mut v6 = d;
            if !v6.is_empty() { v6[0] = 0x60; }
            let _ = parse_udp(&v6);
        }
    }
}
