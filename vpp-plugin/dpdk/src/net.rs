//! Ethernet, ARP and IPv4 header work and the egress route table of the host. Pure functions
//! over byte slices (no I/O), so they are tested without DPDK.

use std::net::Ipv4Addr;

/// Ethernet header length.
pub const ETH_LEN: usize = 14;
/// EtherType IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// EtherType ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// ARP over Ethernet/IPv4: 14 + 28 bytes, padded to the 60-byte Ethernet minimum.
pub const ARP_FRAME_LEN: usize = 60;
/// Broadcast MAC.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// ARP operation: request.
pub const ARP_REQUEST: u16 = 1;
/// ARP operation: reply.
pub const ARP_REPLY: u16 = 2;

/// The fields of an Ethernet/IPv4 ARP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// [`ARP_REQUEST`] or [`ARP_REPLY`].
    pub oper: u16,
    /// Sender hardware address.
    pub sha: [u8; 6],
    /// Sender protocol address.
    pub spa: u32,
    /// Target hardware address.
    pub tha: [u8; 6],
    /// Target protocol address.
    pub tpa: u32,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn mac_at(b: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

/// The EtherType of a frame (`None` when shorter than an Ethernet header).
#[must_use]
pub fn ethertype(frame: &[u8]) -> Option<u16> {
    (frame.len() >= ETH_LEN).then(|| be16(frame, 12))
}

/// Source MAC of a frame of at least [`ETH_LEN`] bytes.
#[must_use]
pub fn src_mac(frame: &[u8]) -> [u8; 6] {
    mac_at(frame, 6)
}

/// Destination MAC of a frame of at least [`ETH_LEN`] bytes.
#[must_use]
pub fn dst_mac(frame: &[u8]) -> [u8; 6] {
    mac_at(frame, 0)
}

/// Parses an Ethernet/IPv4 ARP message from a whole frame.
#[must_use]
pub fn parse_arp(frame: &[u8]) -> Option<Arp> {
    let a = frame.get(ETH_LEN..ETH_LEN + 28)?;
    if be16(a, 0) != 1 || be16(a, 2) != ETH_P_IPV4 || a[4] != 6 || a[5] != 4 {
        return None;
    }
    Some(Arp {
        oper: be16(a, 6),
        sha: mac_at(a, 8),
        spa: be32(a, 14),
        tha: mac_at(a, 18),
        tpa: be32(a, 24),
    })
}

/// Writes an Ethernet header.
pub fn write_eth(out: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    out[0..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    out[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// Writes an ARP frame into `out` (at least 42 bytes), zero-padded up to [`ARP_FRAME_LEN`]
/// as far as `out` allows, and returns the frame length.
pub fn write_arp(out: &mut [u8], eth_dst: [u8; 6], arp: &Arp) -> usize {
    let total = out.len().min(ARP_FRAME_LEN);
    write_eth(out, eth_dst, arp.sha, ETH_P_ARP);
    let a = &mut out[ETH_LEN..total];
    a.fill(0);
    a[0..2].copy_from_slice(&1u16.to_be_bytes());
    a[2..4].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&arp.oper.to_be_bytes());
    a[8..14].copy_from_slice(&arp.sha);
    a[14..18].copy_from_slice(&arp.spa.to_be_bytes());
    a[18..24].copy_from_slice(&arp.tha);
    a[24..28].copy_from_slice(&arp.tpa.to_be_bytes());
    total
}

/// The checked header fields of an IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Info {
    /// Total length from the header (Ethernet padding after it is not part of the packet).
    pub total_len: usize,
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
}

/// Checks the IPv4 header of `p` (version, header length, total length within `p`).
#[must_use]
pub fn ipv4_info(p: &[u8]) -> Option<Ipv4Info> {
    let first = *p.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || p.len() < ihl {
        return None;
    }
    let total_len = usize::from(be16(p, 2));
    if total_len < ihl || total_len > p.len() {
        return None;
    }
    Some(Ipv4Info {
        total_len,
        src: be32(p, 12),
        dst: be32(p, 16),
    })
}

/// The checked header fields of an IPv6 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Info {
    /// 40 + payload length (Ethernet padding after it is not part of the packet).
    pub total_len: usize,
    /// Next header.
    pub next: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Source address.
    pub src: u128,
    /// Destination address.
    pub dst: u128,
}

fn be128(b: &[u8], at: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    u128::from_be_bytes(a)
}

/// Checks the IPv6 header of `p` (version, payload length within `p`).
#[must_use]
pub fn ipv6_info(p: &[u8]) -> Option<Ipv6Info> {
    if p.len() < 40 || p[0] >> 4 != 6 {
        return None;
    }
    let total_len = 40 + usize::from(be16(p, 4));
    if total_len > p.len() {
        return None;
    }
    Some(Ipv6Info {
        total_len,
        next: p[6],
        hop_limit: p[7],
        src: be128(p, 8),
        dst: be128(p, 24),
    })
}

/// ICMPv6 type: neighbour solicitation.
pub const NDP_NS: u8 = 135;
/// ICMPv6 type: neighbour advertisement.
pub const NDP_NA: u8 = 136;
/// Length of the NS/NA frames written here: Ethernet + IPv6 + 24-byte message + 8-byte
/// link-layer address option.
pub const NDP_FRAME_LEN: usize = ETH_LEN + 40 + 32;

/// A neighbour solicitation or advertisement (RFC 4861), as far as a host needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ndp {
    /// [`NDP_NS`] or [`NDP_NA`].
    pub kind: u8,
    /// Target address.
    pub target: u128,
    /// Source (NS) or target (NA) link-layer address option.
    pub lladdr: Option<[u8; 6]>,
}

/// Parses an NS/NA from an IPv6 packet (no extension headers; hop limit must be 255 and the
/// ICMPv6 checksum valid, as RFC 4861 requires).
#[must_use]
pub fn parse_ndp(ip: &[u8], info: &Ipv6Info) -> Option<Ndp> {
    if info.next != 58 || info.hop_limit != 255 || info.total_len < 40 + 24 {
        return None;
    }
    let m = &ip[40..info.total_len];
    let kind = m[0];
    if (kind != NDP_NS && kind != NDP_NA) || m[1] != 0 {
        return None;
    }
    if icmpv6_checksum(info.src, info.dst, m) != 0 {
        return None;
    }
    let target = be128(m, 8);
    let want = if kind == NDP_NS { 1 } else { 2 };
    let mut lladdr = None;
    let mut opts = &m[24..];
    while opts.len() >= 8 {
        let len = usize::from(opts[1]) * 8;
        if len == 0 || len > opts.len() {
            return None;
        }
        if opts[0] == want && len == 8 {
            lladdr = Some(mac_at(opts, 2));
        }
        opts = &opts[len..];
    }
    Some(Ndp {
        kind,
        target,
        lladdr,
    })
}

/// The ICMPv6 checksum of `msg` (0 when a message with its checksum field filled is valid).
#[must_use]
pub fn icmpv6_checksum(src: u128, dst: u128, msg: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for a in [src, dst] {
        for c in a.to_be_bytes().chunks_exact(2) {
            sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
    }
    sum += msg.len() as u64 + 58;
    let mut chunks = msg.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The solicited-node multicast address of `a` and its Ethernet multicast MAC.
#[must_use]
pub fn solicited_node(a: u128) -> (u128, [u8; 6]) {
    let ip = 0xff02_0000_0000_0000_0000_0001_ff00_0000u128 | (a & 0xff_ffff);
    let b = ip.to_be_bytes();
    (ip, [0x33, 0x33, b[12], b[13], b[14], b[15]])
}

/// Writes an NS (`kind` = [`NDP_NS`], to the target's solicited-node group) or a solicited
/// NA (to `dst`) with our link-layer address into `out` (≥ [`NDP_FRAME_LEN`] bytes).
pub fn write_ndp(
    out: &mut [u8],
    kind: u8,
    eth_dst: [u8; 6],
    our_mac: [u8; 6],
    src: u128,
    dst: u128,
    target: u128,
) -> usize {
    write_eth(out, eth_dst, our_mac, ETH_P_IPV6);
    let ip = &mut out[ETH_LEN..NDP_FRAME_LEN];
    ip.fill(0);
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&32u16.to_be_bytes());
    ip[6] = 58;
    ip[7] = 255;
    ip[8..24].copy_from_slice(&src.to_be_bytes());
    ip[24..40].copy_from_slice(&dst.to_be_bytes());
    let m = &mut ip[40..];
    m[0] = kind;
    if kind == NDP_NA {
        m[4] = 0x60; // solicited + override
    }
    m[8..24].copy_from_slice(&target.to_be_bytes());
    m[24] = if kind == NDP_NS { 1 } else { 2 };
    m[25] = 1;
    m[26..32].copy_from_slice(&our_mac);
    let ck = icmpv6_checksum(src, dst, m);
    m[2..4].copy_from_slice(&ck.to_be_bytes());
    NDP_FRAME_LEN
}

/// A port's connected IPv6 subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortAddr6 {
    /// The port's own address.
    pub addr: u128,
    /// Prefix length.
    pub len: u8,
}

impl PortAddr6 {
    /// Whether `a` lies in this port's subnet.
    #[must_use]
    pub fn contains(&self, a: u128) -> bool {
        let m = if self.len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.len.min(128)))
        };
        a & m == self.addr & m
    }
}

/// A port's connected IPv4 subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortAddr {
    /// The port's own address.
    pub addr: u32,
    /// Prefix length.
    pub len: u8,
}

/// The network mask of a prefix length.
#[must_use]
pub fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

impl PortAddr {
    /// Whether `a` lies in this port's subnet.
    #[must_use]
    pub fn contains(&self, a: u32) -> bool {
        a & mask(self.len) == self.addr & mask(self.len)
    }
}

/// One egress route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Route {
    net: u32,
    len: u8,
    port: u16,
    /// Gateway; `None` for a connected subnet (the destination is the next hop).
    via: Option<u32>,
}

/// The egress table: connected subnets of the ports plus static routes, longest prefix
/// first. Small (a handful of entries), so a scan beats any index.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

/// Errors building the route table.
#[derive(Debug)]
pub enum RouteError {
    /// A `via` gateway lies in no port's connected subnet.
    GatewayNotConnected(Ipv4Addr),
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::GatewayNotConnected(a) => {
                write!(f, "route gateway {a} is not inside any port's subnet")
            }
        }
    }
}

impl std::error::Error for RouteError {}

impl Routes {
    /// Builds the table from the ports' subnets (index = port) and `(prefix, len, via)`
    /// static routes.
    ///
    /// # Errors
    /// [`RouteError`] when a gateway is not on a connected subnet.
    pub fn new(ports: &[PortAddr], statics: &[(u32, u8, u32)]) -> Result<Self, RouteError> {
        let mut routes: Vec<Route> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| Route {
                net: p.addr & mask(p.len),
                len: p.len,
                port: i as u16,
                via: None,
            })
            .collect();
        for &(net, len, via) in statics {
            let port = ports
                .iter()
                .position(|p| p.contains(via))
                .ok_or(RouteError::GatewayNotConnected(Ipv4Addr::from(via)))?;
            routes.push(Route {
                net: net & mask(len),
                len,
                port: port as u16,
                via: Some(via),
            });
        }
        // Stable: among equal lengths, connected subnets (pushed first) win.
        routes.sort_by_key(|r| std::cmp::Reverse(r.len));
        Ok(Self { routes })
    }

    /// Egress port and next-hop address for `dst`.
    #[must_use]
    pub fn lookup(&self, dst: u32) -> Option<(u16, u32)> {
        self.routes
            .iter()
            .find(|r| dst & mask(r.len) == r.net)
            .map(|r| (r.port, r.via.unwrap_or(dst)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndp_frames_round_trip_with_a_valid_checksum_and_bad_ones_are_refused() {
        let me = 0xfd00_0251_0001_0000_0000_0000_0000_0001u128;
        let peer = 0xfd00_0251_0001_0000_0000_0000_0000_0002u128;
        let mac = [2, 0, 0, 0, 0, 1];
        let (group, gmac) = solicited_node(peer);
        assert_eq!(gmac, [0x33, 0x33, 0xff, 0, 0, 2]);
        let mut f = [0u8; NDP_FRAME_LEN];
        write_ndp(&mut f, NDP_NS, gmac, mac, me, group, peer);
        assert_eq!(ethertype(&f), Some(ETH_P_IPV6));
        let ip = &f[ETH_LEN..];
        let info = ipv6_info(ip).expect("ipv6");
        assert_eq!(info.total_len, 72);
        assert_eq!(
            parse_ndp(ip, &info),
            Some(Ndp {
                kind: NDP_NS,
                target: peer,
                lladdr: Some(mac)
            })
        );
        let mut bad = f;
        bad[ETH_LEN + 40 + 20] ^= 1;
        let ip = &bad[ETH_LEN..];
        assert_eq!(parse_ndp(ip, &ipv6_info(ip).expect("v6")), None, "checksum");
        let mut hop = f;
        hop[ETH_LEN + 7] = 64;
        let ip = &hop[ETH_LEN..];
        assert_eq!(
            parse_ndp(ip, &ipv6_info(ip).expect("v6")),
            None,
            "hop limit"
        );
        write_ndp(&mut f, NDP_NA, [2, 0, 0, 0, 0, 2], mac, me, peer, me);
        let ip = &f[ETH_LEN..];
        let na = parse_ndp(ip, &ipv6_info(ip).expect("v6")).expect("na");
        assert_eq!((na.kind, na.target, na.lladdr), (NDP_NA, me, Some(mac)));
        assert!(ipv6_info(&f[ETH_LEN..ETH_LEN + 60]).is_none(), "truncated");
    }

    fn ip(a: [u8; 4]) -> u32 {
        u32::from(Ipv4Addr::from(a))
    }

    #[test]
    fn arp_frames_round_trip_through_write_and_parse() {
        let req = Arp {
            oper: ARP_REQUEST,
            sha: [2, 0, 0, 0, 0, 1],
            spa: ip([10, 0, 0, 1]),
            tha: [0; 6],
            tpa: ip([10, 0, 0, 2]),
        };
        let mut f = [0u8; 64];
        assert_eq!(write_arp(&mut f, BROADCAST, &req), 60);
        assert_eq!(ethertype(&f), Some(ETH_P_ARP));
        assert_eq!(dst_mac(&f), BROADCAST);
        assert_eq!(src_mac(&f), req.sha);
        assert_eq!(parse_arp(&f[..60]), Some(req));
        assert_eq!(parse_arp(&f[..41]), None, "truncated ARP is refused");
        let mut short = [0u8; 42];
        assert_eq!(write_arp(&mut short, BROADCAST, &req), 42);
        assert_eq!(parse_arp(&short), Some(req));
    }

    #[test]
    fn ipv4_headers_with_bad_lengths_are_refused_and_padding_is_excluded() {
        let mut p = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&[0; 18]); // Ethernet padding
        let i = ipv4_info(&p).expect("valid");
        assert_eq!(i.total_len, 28);
        assert_eq!(i.dst, ip([10, 0, 0, 2]));
        let mut long = p.clone();
        long[3] = 200;
        assert_eq!(ipv4_info(&long), None, "total length beyond the frame");
        let mut short_ihl = p.clone();
        short_ihl[0] = 0x44;
        assert_eq!(ipv4_info(&short_ihl), None);
        let mut v6 = p.clone();
        v6[0] = 0x65;
        assert_eq!(ipv4_info(&v6), None);
        assert_eq!(ipv4_info(&p[..19]), None);
    }

    #[test]
    fn routes_prefer_the_longest_prefix_and_resolve_gateways_to_their_port() {
        let ports = [
            PortAddr {
                addr: ip([10, 251, 1, 1]),
                len: 24,
            },
            PortAddr {
                addr: ip([10, 251, 2, 1]),
                len: 24,
            },
        ];
        let r = Routes::new(
            &ports,
            &[
                (0, 0, ip([10, 251, 2, 254])),
                (ip([192, 0, 2, 0]), 24, ip([10, 251, 1, 254])),
            ],
        )
        .expect("routes");
        assert_eq!(
            r.lookup(ip([10, 251, 1, 7])),
            Some((0, ip([10, 251, 1, 7])))
        );
        assert_eq!(
            r.lookup(ip([10, 251, 2, 9])),
            Some((1, ip([10, 251, 2, 9])))
        );
        assert_eq!(
            r.lookup(ip([192, 0, 2, 5])),
            Some((0, ip([10, 251, 1, 254])))
        );
        assert_eq!(r.lookup(ip([8, 8, 8, 8])), Some((1, ip([10, 251, 2, 254]))));
        let none = Routes::new(&ports, &[]).expect("routes");
        assert_eq!(none.lookup(ip([8, 8, 8, 8])), None);
        assert!(Routes::new(&ports, &[(0, 0, ip([172, 16, 0, 1]))]).is_err());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// The reference: every matching route, longest prefix first, connected before static.
    fn naive(ports: &[PortAddr], statics: &[(u32, u8, u32)], dst: u32) -> Option<(u16, u32)> {
        let mut best: Option<(u8, u16, u32)> = None;
        for (i, p) in ports.iter().enumerate() {
            if p.contains(dst) && best.is_none_or(|b| p.len > b.0) {
                best = Some((p.len, i as u16, dst));
            }
        }
        for &(net, len, via) in statics {
            if dst & mask(len) == net & mask(len) && best.is_none_or(|b| len > b.0) {
                let port = ports.iter().position(|p| p.contains(via))? as u16;
                best = Some((len, port, via));
            }
        }
        best.map(|b| (b.1, b.2))
    }

    proptest! {
        #[test]
        fn route_lookup_matches_a_linear_longest_prefix_reference(
            ports in prop::collection::vec((any::<u32>(), 8u8..=30), 1..4),
            statics in prop::collection::vec((any::<u32>(), 0u8..=32, 0usize..4, 1u32..200), 0..6),
            dsts in prop::collection::vec(any::<u32>(), 1..32),
        ) {
            let ports: Vec<PortAddr> = ports.into_iter().map(|(addr, len)| PortAddr { addr, len }).collect();
            // Gateways inside some port's subnet (as the binary requires).
            let statics: Vec<(u32, u8, u32)> = statics
                .into_iter()
                .map(|(net, len, p, host)| {
                    let pa = ports[p % ports.len()];
                    (net, len, (pa.addr & mask(pa.len)) | (host & !mask(pa.len)))
                })
                .collect();
            let r = Routes::new(&ports, &statics).expect("gateways are connected");
            for dst in dsts.iter().copied().chain(statics.iter().map(|s| s.0)) {
                prop_assert_eq!(r.lookup(dst), naive(&ports, &statics, dst));
            }
        }

        #[test]
        fn parsers_never_panic_and_ipv4_lengths_stay_inside_the_input(
            b in prop::collection::vec(any::<u8>(), 0..128),
        ) {
            let _ = parse_arp(&b);
            let _ = ethertype(&b);
            if let Some(i) = ipv6_info(&b) {
                prop_assert!(i.total_len <= b.len());
                let _ = parse_ndp(&b, &i);
            }
            if let Some(i) = ipv4_info(&b) {
                prop_assert!(i.total_len <= b.len() && i.total_len >= 20);
            }
        }
    }
}
