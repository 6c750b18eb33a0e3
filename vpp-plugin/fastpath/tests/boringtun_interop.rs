//! Interop with boringtun (an independent WireGuard implementation): keys come from real
//! handshakes (boringtun as responder, see `common::handshake`), packets cross in both
//! directions and through the full decrypt → acl → route → encrypt pipeline.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

mod common;

use std::net::{IpAddr, Ipv4Addr};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use common::*;
use cvlan_fastpath::parse::parse_outer;
use cvlan_fastpath::{Buf, INGRESS_UNDERLAY, Next, Reason, Verdict, Worker};
use cvlan_tables::layout::Underlay;
use cvlan_tables::{
    AclRuleSpec, KeypairSpec, PeerSpec, RouteTarget, Segment, SegmentParams, TableBuilder,
    TenantSpec,
};

const GW: [u8; 4] = [192, 0, 2, 1];
const B1_EP: [u8; 4] = [198, 51, 100, 2];
const B2_EP: [u8; 4] = [198, 51, 100, 3];
const LOCAL_IFACE: u32 = 7;

struct Lab {
    worker: Worker,
    seg: Segment,
    b1: Tunn,
    b2: Tunn,
    s1: Session,
    tables: TableBuilder,
}

fn keypair(s: &Session, install_id: u64) -> KeypairSpec {
    KeypairSpec {
        receiver_index: s.local_index,
        remote_index: s.remote_index,
        send_key: s.send_key,
        recv_key: s.recv_key,
        install_id,
    }
}

fn lab() -> Lab {
    let gw = StaticSecret::from(random32());
    let gw_pub = PublicKey::from(&gw);
    let (k1, k2) = (
        StaticSecret::from(random32()),
        StaticSecret::from(random32()),
    );
    let (p1, p2) = (PublicKey::from(&k1), PublicKey::from(&k2));
    let mut b1 = Tunn::new(k1, gw_pub, None, None, 1, None);
    let mut b2 = Tunn::new(k2, gw_pub, None, None, 2, None);
    let s1 = handshake(&gw, &p1, 0x5a00_0011, &mut b1);
    let s2 = handshake(&gw, &p2, 0x5a00_0022, &mut b2);

    let deny_ssh = AclRuleSpec {
        v6: false,
        src: 0,
        src_len: 0,
        dst: 0,
        dst_len: 0,
        proto: Some(6),
        sport: (0, u16::MAX),
        dport: (22, 22),
        permit: false,
        established: false,
    };
    let tables = TableBuilder {
        underlay: Underlay {
            addr4: GW,
            port: 51820,
            ..Default::default()
        },
        tenants: vec![TenantSpec {
            id: 42,
            default_permit: true,
            local_iface: LOCAL_IFACE,
            routes: vec![(v4([10, 0, 1, 0], 24), RouteTarget::Local)],
            acl: vec![deny_ssh],
        }],
        peers: vec![
            PeerSpec {
                id: 1,
                tenant: 0,
                endpoint: Some(endpoint(B1_EP, 51820)),
                public_key: *p1.as_bytes(),
                allowed_ips: vec![v4([10, 0, 0, 2], 32)],
                current: Some(keypair(&s1, 1)),
                ..Default::default()
            },
            PeerSpec {
                id: 2,
                tenant: 0,
                endpoint: Some(endpoint(B2_EP, 51821)),
                public_key: *p2.as_bytes(),
                allowed_ips: vec![v4([10, 0, 0, 3], 32)],
                current: Some(keypair(&s2, 2)),
                ..Default::default()
            },
        ],
    };
    let params = SegmentParams {
        keypair_capacity: 256,
        slot_size: 1 << 20,
        max_workers: 2,
    };
    let mut seg = Segment::create_memfd("interop", params).unwrap();
    seg.publish(&tables.build(256).unwrap()).unwrap();
    let worker = Worker::new(
        Segment::from_file(seg.file().try_clone().unwrap()).unwrap(),
        0,
    )
    .unwrap();
    Lab {
        worker,
        seg,
        b1,
        b2,
        s1,
        tables,
    }
}

fn run(w: &mut Worker, b: &mut OwnedBuf, ingress: u32) -> (Verdict, Vec<u8>, Buf) {
    let mut d = [b.desc(ingress)];
    let mut v = [Verdict {
        next: 99,
        reason: 99,
        aux: 99,
    }];
    // SAFETY: the descriptor describes `b.mem`, owned here for the call.
    assert_eq!(unsafe { w.process(&mut d, &mut v) }, 1);
    let out = b.after(&d[0]);
    (v[0], out, d[0])
}

fn ip(a: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

/// Sends a packet from the gateway's local side through wg-encrypt and checks the outer
/// headers; returns the WireGuard payload.
fn send_local(
    lab: &mut Lab,
    inner: &[u8],
    expect_peer: u32,
    expect_ep: [u8; 4],
    port: u16,
) -> Vec<u8> {
    let mut b = OwnedBuf::new(inner, 128, 64);
    let (v, out, _) = run(&mut lab.worker, &mut b, 0);
    assert_eq!(
        v,
        Verdict {
            next: Next::Underlay as u16,
            reason: 0,
            aux: expect_peer
        }
    );
    let o = parse_outer(&out).unwrap();
    assert_eq!(
        (o.src, o.dst),
        (
            u128::from(u32::from(ip(GW))),
            u128::from(u32::from(ip(expect_ep)))
        )
    );
    assert_eq!((o.sport, o.dport), (51820, port));
    // The outer IPv4 header checksum verifies.
    let mut sum = 0u32;
    for c in out[..20].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    assert_eq!(sum, 0xffff);
    out[o.payload_off..o.payload_off + o.payload_len].to_vec()
}

/// Lets boringtun decapsulate a datagram and returns the inner packet.
fn bt_decap(t: &mut Tunn, from: [u8; 4], wg: &[u8]) -> (Vec<u8>, Ipv4Addr) {
    let mut out = vec![0u8; 4096];
    match t.decapsulate(Some(IpAddr::V4(ip(from))), wg, &mut out) {
        TunnResult::WriteToTunnelV4(p, src) => (p.to_vec(), src),
        other => panic!("boringtun: {}", result_name(&other)),
    }
}

fn bt_encap(t: &mut Tunn, inner: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 4096];
    match t.encapsulate(inner, &mut out) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("boringtun: {}", result_name(&other)),
    }
}

/// Confirms B1's session: boringtun (responder) uses a session only after a data packet.
fn confirmed_lab() -> Lab {
    let mut lab = lab();
    let inner = ipv4_udp(
        ip([10, 0, 1, 5]),
        ip([10, 0, 0, 2]),
        4000,
        5000,
        b"hello boringtun",
    );
    let wg = send_local(&mut lab, &inner, 0, B1_EP, 51820);
    let (got, src) = bt_decap(&mut lab.b1, GW, &wg);
    assert_eq!((got, src), (inner, ip([10, 0, 1, 5])));
    lab
}

#[test]
fn wg_encrypt_output_decapsulates_in_boringtun() {
    let mut lab = confirmed_lab();
    // Several more, with sizes that need padding, to exercise counters and the pad.
    for n in [0usize, 1, 15, 16, 17, 1000, 1392] {
        let payload = vec![n as u8; n];
        let inner = ipv4_udp(ip([10, 0, 1, 5]), ip([10, 0, 0, 2]), 4000, 5000, &payload);
        let wg = send_local(&mut lab, &inner, 0, B1_EP, 51820);
        assert_eq!(bt_decap(&mut lab.b1, GW, &wg).0, inner);
    }
    let c = lab.worker.peer_counters(0);
    assert_eq!(c.tx_packets, 8);
}

#[test]
fn boringtun_transport_packet_decrypts_in_wg_decrypt() {
    let mut lab = confirmed_lab();
    let inner = ipv4_udp(
        ip([10, 0, 0, 2]),
        ip([10, 0, 1, 9]),
        5000,
        4000,
        b"hello gateway",
    );
    let wg = bt_encap(&mut lab.b1, &inner);
    let outer = ipv4_udp(ip(B1_EP), ip(GW), 51820, 51820, &wg);

    let mut b = OwnedBuf::new(&outer, 64, 64);
    let (v, out, _) = run(&mut lab.worker, &mut b, INGRESS_UNDERLAY);
    assert_eq!(
        v,
        Verdict {
            next: Next::Local as u16,
            reason: 0,
            aux: LOCAL_IFACE
        }
    );
    assert_eq!(out, inner);
    let slot = lab.s1.local_index & 255;
    assert!(
        !lab.seg.keypair_seen(slot),
        "only a `next` keypair is flagged"
    );

    // The same datagram again is a replay.
    let mut b = OwnedBuf::new(&outer, 64, 64);
    let (v, _, _) = run(&mut lab.worker, &mut b, INGRESS_UNDERLAY);
    assert_eq!(
        (v.next, v.reason),
        (Next::Drop as u16, Reason::Replay as u16)
    );

    // A tampered datagram fails authentication and does not burn its counter.
    let wg2 = bt_encap(&mut lab.b1, &inner);
    let mut bad = ipv4_udp(ip(B1_EP), ip(GW), 51820, 51820, &wg2);
    let last = bad.len() - 20;
    bad[last] ^= 1;
    let mut b = OwnedBuf::new(&bad, 64, 64);
    let (v, out_bad, _) = run(&mut lab.worker, &mut b, INGRESS_UNDERLAY);
    assert_eq!(
        (v.next, v.reason),
        (Next::Drop as u16, Reason::AuthFailed as u16)
    );
    assert_eq!(out_bad.len(), bad.len());
    let good = ipv4_udp(ip(B1_EP), ip(GW), 51820, 51820, &wg2);
    let mut b = OwnedBuf::new(&good, 64, 64);
    assert_eq!(
        run(&mut lab.worker, &mut b, INGRESS_UNDERLAY).0.next,
        Next::Local as u16
    );
    assert_eq!(lab.worker.peer_counters(0).rx_packets, 2);
    assert_eq!(lab.worker.peer_counters(0).drops, 2);
}

#[test]
fn peer_to_peer_traffic_crosses_all_four_nodes_between_two_boringtun_peers() {
    let mut lab = confirmed_lab();
    let inner = ipv4_udp(
        ip([10, 0, 0, 2]),
        ip([10, 0, 0, 3]),
        7,
        8,
        b"via the gateway",
    );
    let wg = bt_encap(&mut lab.b1, &inner);
    let outer = ipv4_udp(ip(B1_EP), ip(GW), 51820, 51820, &wg);
    let mut b = OwnedBuf::new(&outer, 0, 64);
    let (v, out, _) = run(&mut lab.worker, &mut b, INGRESS_UNDERLAY);
    assert_eq!(
        v,
        Verdict {
            next: Next::Underlay as u16,
            reason: 0,
            aux: 1
        }
    );
    let o = parse_outer(&out).unwrap();
    assert_eq!((o.dst, o.dport), (u128::from(u32::from(ip(B2_EP))), 51821));
    let (got, src) = bt_decap(&mut lab.b2, GW, &out[o.payload_off..]);
    assert_eq!((got, src), (inner, ip([10, 0, 0, 2])));
}

#[test]
fn inner_source_outside_the_peers_allowed_ips_is_dropped() {
    let mut lab = confirmed_lab();
    let inner = ipv4_udp(ip([10, 0, 0, 99]), ip([10, 0, 1, 9]), 1, 2, b"spoofed");
    let outer = ipv4_udp(
        ip(B1_EP),
        ip(GW),
        51820,
        51820,
        &bt_encap(&mut lab.b1, &inner),
    );
    let mut b = OwnedBuf::new(&outer, 64, 64);
    let (v, _, _) = run(&mut lab.worker, &mut b, INGRESS_UNDERLAY);
    assert_eq!(
        (v.next, v.reason),
        (Next::Drop as u16, Reason::SourceNotAllowed as u16)
    );
}

#[test]
fn the_tenant_acl_drops_denied_flows_after_decryption() {
    let mut lab = confirmed_lab();
    let mut inner = ipv4_udp(ip([10, 0, 0, 2]), ip([10, 0, 1, 9]), 40000, 22, &[0; 20]);
    inner[9] = 6; // TCP (the IPv4 checksum is not checked by the fast path)
    let outer = ipv4_udp(
        ip(B1_EP),
        ip(GW),
        51820,
        51820,
        &bt_encap(&mut lab.b1, &inner),
    );
    let mut b = OwnedBuf::new(&outer, 64, 64);
    let (v, _, _) = run(&mut lab.worker, &mut b, INGRESS_UNDERLAY);
    assert_eq!(
        (v.next, v.reason),
        (Next::Drop as u16, Reason::AclDeny as u16)
    );
    inner[23] = 23; // dport 23 is allowed by the default
    let outer = ipv4_udp(
        ip(B1_EP),
        ip(GW),
        51820,
        51820,
        &bt_encap(&mut lab.b1, &inner),
    );
    let mut b = OwnedBuf::new(&outer, 64, 64);
    assert_eq!(
        run(&mut lab.worker, &mut b, INGRESS_UNDERLAY).0.next,
        Next::Local as u16
    );
}

#[test]
fn handshakes_keepalives_and_unknown_receivers_are_punted_untouched() {
    let mut lab = confirmed_lab();
    let mut hs = vec![0u8; 256];
    let init = match lab.b2.format_handshake_initiation(&mut hs, true) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("{}", result_name(&other)),
    };
    let keepalive = bt_encap(&mut lab.b1, &[]);
    let mut unknown = bt_encap(
        &mut lab.b1,
        &ipv4_udp(ip([10, 0, 0, 2]), ip([10, 0, 1, 1]), 1, 1, b"x"),
    );
    unknown[4] ^= 0x40; // receiver index nobody installed
    for (wg, reason) in [
        (init, Reason::HandshakeInit),
        (keepalive, Reason::Keepalive),
        (unknown, Reason::UnknownReceiver),
    ] {
        let outer = ipv4_udp(ip(B1_EP), ip(GW), 51820, 51820, &wg);
        let mut b = OwnedBuf::new(&outer, 64, 64);
        let before = b.desc(INGRESS_UNDERLAY);
        let (v, out, after) = run(&mut lab.worker, &mut b, INGRESS_UNDERLAY);
        assert_eq!((v.next, v.reason), (Next::Punt as u16, reason as u16));
        assert_eq!(
            (out, after.data, after.len),
            (outer, before.data, before.len)
        );
    }
}

#[test]
fn the_first_packet_on_a_next_keypair_is_accepted_and_flagged_for_promotion() {
    let mut lab = confirmed_lab();
    // The sidecar republishes B1's keypair in the `next` position (as after a responder
    // handshake); the same install id keeps its send counter.
    let mut t = lab.tables.clone();
    t.peers[0].next = t.peers[0].current.take();
    lab.seg.publish(&t.build(256).unwrap()).unwrap();
    let slot = lab.s1.local_index & 255;
    assert!(!lab.seg.keypair_seen(slot));
    let inner = ipv4_udp(ip([10, 0, 0, 2]), ip([10, 0, 1, 9]), 5000, 4000, b"on next");
    let outer = ipv4_udp(
        ip(B1_EP),
        ip(GW),
        51820,
        51820,
        &bt_encap(&mut lab.b1, &inner),
    );
    let mut b = OwnedBuf::new(&outer, 64, 64);
    let (v, out, _) = run(&mut lab.worker, &mut b, INGRESS_UNDERLAY);
    assert_eq!((v.next, out), (Next::Local as u16, inner));
    assert!(
        lab.seg.keypair_seen(slot),
        "receive use is flagged for the sidecar"
    );
    // Without a current keypair, traffic towards B1 is punted for a handshake.
    let back = ipv4_udp(ip([10, 0, 1, 5]), ip([10, 0, 0, 2]), 1, 2, b"x");
    let mut b = OwnedBuf::new(&back, 128, 64);
    let (v, _, _) = run(&mut lab.worker, &mut b, 0);
    assert_eq!(
        (v.next, v.reason),
        (Next::Punt as u16, Reason::NoKeypair as u16)
    );
}
