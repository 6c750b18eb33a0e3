//! Just enough IPv4/IPv6/TCP/UDP/ICMP parsing for the inbound filter and the flow cache.
//!
//! Every read is bounds-checked: packets come from peers (after decryption, but a peer can
//! still be hostile) and from local applications through the TUN.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(crate) const PROTO_ICMP: u8 = 1;
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const PROTO_ICMPV6: u8 = 58;

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// What the transport header says, as far as the filter cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP with its ports and flags byte.
    Tcp { sport: u16, dport: u16, flags: u8 },
    /// UDP with its ports.
    Udp { sport: u16, dport: u16 },
    /// ICMP/ICMPv6 echo request (`request`) or reply, with its identifier.
    IcmpEcho { request: bool, id: u16 },
    /// ICMP/ICMPv6 error quoting a packet (the quoted packet's flow, when it parses).
    IcmpError { quoted: Option<FlowKey> },
    /// Any other protocol or ICMP type, non-first fragments, or a truncated header.
    Other,
}

/// A parsed IP packet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper-layer protocol number (after IPv6 extension headers).
    pub proto: u8,
    /// The transport details.
    pub transport: Transport,
}

/// A flow as seen from this node: local and remote address, protocol, local and remote
/// "port" (the echo identifier and 0 for ICMP echo).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// This node's address.
    pub local: IpAddr,
    /// The peer side's address.
    pub remote: IpAddr,
    /// Protocol number.
    pub proto: u8,
    /// Local port (or ICMP echo id).
    pub lport: u16,
    /// Remote port (0 for ICMP echo).
    pub rport: u16,
}

impl Parsed {
    /// Whether this is a TCP segment of an established connection (no SYN, or SYN+ACK).
    pub fn is_tcp_established(&self) -> bool {
        match self.transport {
            Transport::Tcp { flags, .. } => {
                flags & TCP_SYN == 0 || flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
            }
            _ => false,
        }
    }

    /// The destination port the filter sees: TCP/UDP destination port, else 0.
    pub fn dst_port(&self) -> u16 {
        match self.transport {
            Transport::Tcp { dport, .. } | Transport::Udp { dport, .. } => dport,
            _ => 0,
        }
    }

    /// The flow this packet belongs to when it is *sent* by this node (src is local).
    pub fn outbound_flow(&self) -> Option<FlowKey> {
        let (lport, rport) = match self.transport {
            Transport::Tcp { sport, dport, .. } | Transport::Udp { sport, dport } => (sport, dport),
            Transport::IcmpEcho { request: true, id } => (id, 0),
            _ => return None,
        };
        Some(FlowKey {
            local: self.src,
            remote: self.dst,
            proto: self.proto,
            lport,
            rport,
        })
    }

    /// The outbound flow an inbound packet would be a reply to (dst is local).
    pub fn reply_to_flow(&self) -> Option<FlowKey> {
        let (lport, rport) = match self.transport {
            Transport::Tcp { sport, dport, .. } | Transport::Udp { sport, dport } => (dport, sport),
            Transport::IcmpEcho { request: false, id } => (id, 0),
            Transport::IcmpError { quoted } => return quoted,
            _ => return None,
        };
        Some(FlowKey {
            local: self.dst,
            remote: self.src,
            proto: self.proto,
            lport,
            rport,
        })
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses an IPv4 or IPv6 packet. `None` when the IP header itself is unusable.
pub fn parse(pkt: &[u8]) -> Option<Parsed> {
    parse_depth(pkt, 0)
}

fn parse_depth(pkt: &[u8], depth: u8) -> Option<Parsed> {
    match pkt.first()? >> 4 {
        4 => parse_v4(pkt, depth),
        6 => parse_v6(pkt, depth),
        _ => None,
    }
}

fn parse_v4(pkt: &[u8], depth: u8) -> Option<Parsed> {
    if pkt.len() < 20 {
        return None;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    if ihl < 20 || pkt.len() < ihl {
        return None;
    }
    let src = IpAddr::V4(Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]));
    let proto = pkt[9];
    let frag_offset = be16(pkt, 6)? & 0x1fff;
    // a quoted packet inside an ICMP error may be truncated: trust what we have
    let total = usize::from(be16(pkt, 2)?).clamp(ihl, pkt.len());
    let l4 = &pkt[ihl..total];
    let transport = if frag_offset != 0 {
        Transport::Other
    } else {
        transport(proto, l4, false, depth)
    };
    Some(Parsed {
        src,
        dst,
        proto,
        transport,
    })
}

fn parse_v6(pkt: &[u8], depth: u8) -> Option<Parsed> {
    if pkt.len() < 40 {
        return None;
    }
    let mut a = [0u8; 16];
    a.copy_from_slice(&pkt[8..24]);
    let src = IpAddr::V6(Ipv6Addr::from(a));
    a.copy_from_slice(&pkt[24..40]);
    let dst = IpAddr::V6(Ipv6Addr::from(a));
    let mut next = pkt[6];
    let mut off = 40usize;
    let mut first_fragment = true;
    // walk a bounded number of extension headers
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let len = (usize::from(*pkt.get(off + 1)?) + 1) * 8;
                next = *pkt.get(off)?;
                off += len;
            }
            51 => {
                let len = (usize::from(*pkt.get(off + 1)?) + 2) * 4;
                next = *pkt.get(off)?;
                off += len;
            }
            44 => {
                next = *pkt.get(off)?;
                if be16(pkt, off + 2)? & 0xfff8 != 0 {
                    first_fragment = false;
                }
                off += 8;
            }
            _ => break,
        }
    }
    let l4 = pkt.get(off..).unwrap_or(&[]);
    let transport = if first_fragment {
        transport(next, l4, true, depth)
    } else {
        Transport::Other
    };
    Some(Parsed {
        src,
        dst,
        proto: next,
        transport,
    })
}

fn transport(proto: u8, l4: &[u8], v6: bool, depth: u8) -> Transport {
    match proto {
        PROTO_TCP => match (be16(l4, 0), be16(l4, 2), l4.get(13)) {
            (Some(sport), Some(dport), Some(flags)) => Transport::Tcp {
                sport,
                dport,
                flags: *flags,
            },
            _ => Transport::Other,
        },
        PROTO_UDP => match (be16(l4, 0), be16(l4, 2)) {
            (Some(sport), Some(dport)) => Transport::Udp { sport, dport },
            _ => Transport::Other,
        },
        PROTO_ICMP if !v6 => icmp(l4, 8, 0, &[3, 4, 5, 11, 12], depth),
        PROTO_ICMPV6 if v6 => icmp(l4, 128, 129, &[1, 2, 3, 4], depth),
        _ => Transport::Other,
    }
}

fn icmp(l4: &[u8], echo_request: u8, echo_reply: u8, errors: &[u8], depth: u8) -> Transport {
    let Some(&ty) = l4.first() else {
        return Transport::Other;
    };
    if ty == echo_request || ty == echo_reply {
        return match be16(l4, 4) {
            Some(id) => Transport::IcmpEcho {
                request: ty == echo_request,
                id,
            },
            None => Transport::Other,
        };
    }
    if errors.contains(&ty) {
        // the quoted packet is one we sent: its src is local; one level of quoting only
        let quoted = if depth == 0 {
            l4.get(8..)
                .and_then(|q| parse_depth(q, depth + 1))
                .and_then(|q| q.outbound_flow())
        } else {
            None
        };
        return Transport::IcmpError { quoted };
    }
    Transport::Other
}

#[cfg(test)]
pub(crate) mod build {
    //! Packet builders shared by the core's tests.
    use std::net::IpAddr;

    /// An IPv4 or IPv6 packet with a transport header (ports/flags or ICMP type/id) and
    /// `payload` bytes. Checksums are left zero (the core does not look at them).
    pub fn ip(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = 20 + l4.len();
                let mut p = vec![0u8; 20];
                p[0] = 0x45;
                p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                p[8] = 64;
                p[9] = proto;
                p[12..16].copy_from_slice(&s.octets());
                p[16..20].copy_from_slice(&d.octets());
                p.extend_from_slice(l4);
                p
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut p = vec![0u8; 40];
                p[0] = 0x60;
                p[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
                p[6] = proto;
                p[7] = 64;
                p[8..24].copy_from_slice(&s.octets());
                p[24..40].copy_from_slice(&d.octets());
                p.extend_from_slice(l4);
                p
            }
            _ => panic!("mixed address families"),
        }
    }

    pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t
    }

    pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; 8];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        t.extend_from_slice(payload);
        t
    }

    pub fn icmp_msg(ty: u8, id: u16) -> Vec<u8> {
        let mut t = vec![0u8; 8];
        t[0] = ty;
        t[4..6].copy_from_slice(&id.to_be_bytes());
        t
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use proptest::prelude::*;

    fn a(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn tcp_syn_is_new_and_syn_ack_is_established() {
        let syn = parse(&ip(a("10.0.0.1"), a("10.0.0.2"), 6, &tcp(1000, 22, 0x02))).expect("p");
        assert!(!syn.is_tcp_established());
        assert_eq!(syn.dst_port(), 22);
        let synack = parse(&ip(a("10.0.0.1"), a("10.0.0.2"), 6, &tcp(1000, 22, 0x12))).expect("p");
        assert!(synack.is_tcp_established());
        let ack = parse(&ip(a("fd00::1"), a("fd00::2"), 6, &tcp(1000, 22, 0x10))).expect("p");
        assert!(ack.is_tcp_established());
    }

    #[test]
    fn udp_reply_matches_the_outbound_flow() {
        let out = parse(&ip(a("10.0.0.1"), a("10.0.0.2"), 17, &udp(5000, 53, b"q"))).expect("p");
        let back = parse(&ip(a("10.0.0.2"), a("10.0.0.1"), 17, &udp(53, 5000, b"a"))).expect("p");
        assert_eq!(out.outbound_flow(), back.reply_to_flow());
        assert!(out.outbound_flow().is_some());
    }

    #[test]
    fn echo_reply_matches_the_request_but_a_request_is_no_reply() {
        let req = parse(&ip(a("fd00::1"), a("fd00::2"), 58, &icmp_msg(128, 7))).expect("p");
        let rep = parse(&ip(a("fd00::2"), a("fd00::1"), 58, &icmp_msg(129, 7))).expect("p");
        assert_eq!(req.outbound_flow(), rep.reply_to_flow());
        let inbound_req = parse(&ip(a("fd00::2"), a("fd00::1"), 58, &icmp_msg(128, 7))).expect("p");
        assert_eq!(inbound_req.reply_to_flow(), None);
    }

    #[test]
    fn icmp_error_quotes_the_flow_it_is_about() {
        let sent = ip(a("10.0.0.1"), a("10.0.0.9"), 17, &udp(4000, 4001, b"x"));
        let mut err = vec![3u8, 4, 0, 0, 0, 0, 5, 0xdc];
        err.extend_from_slice(&sent[..28]);
        let back = parse(&ip(a("10.0.0.9"), a("10.0.0.1"), 1, &err)).expect("p");
        assert_eq!(
            back.reply_to_flow(),
            parse(&sent).expect("p").outbound_flow()
        );
    }

    #[test]
    fn non_first_fragments_carry_no_ports() {
        let mut p = ip(a("10.0.0.1"), a("10.0.0.2"), 6, &tcp(1, 2, 0x10));
        p[6..8].copy_from_slice(&100u16.to_be_bytes());
        let parsed = parse(&p).expect("p");
        assert_eq!(parsed.transport, Transport::Other);
        assert_eq!(parsed.dst_port(), 0);
    }

    proptest! {
        #[test]
        fn parsing_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
            let mut v4 = bytes.clone();
            if let Some(b) = v4.first_mut() { *b = 0x40 | (*b & 0x0f); }
            let _ = parse(&v4);
            let mut v6 = bytes;
            if let Some(b) = v6.first_mut() { *b = 0x60; }
            let _ = parse(&v6);
        }
    }
}
