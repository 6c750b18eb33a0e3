//! Interop of the sidecar's Noise IK with boringtun (an independent WireGuard implementation),
//! both ways, and then transport data: packets boringtun encrypts are opened by the real fast
//! path (cvlan-fastpath `Worker` over a memfd segment) with the keys our handshake derived, and
//! packets the fast path encrypts are opened by boringtun.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use cvlan_fastpath::{Buf, INGRESS_UNDERLAY, Next, Reason, Verdict, Worker};
use cvlan_sidecar::noise::{
    Handshakes, Identity, Outcome, Session, open_keepalive, seal_keepalive,
};
use cvlan_sidecar::punt::build_udp;
use cvlan_tables::layout::Underlay;
use cvlan_tables::{
    KeypairSpec, PeerSpec, Prefix, RouteTarget, Segment, SegmentParams, TableBuilder, TenantSpec,
};

const GW: [u8; 4] = [192, 0, 2, 1];
const B_EP: [u8; 4] = [198, 51, 100, 2];
const B_PORT: u16 = 40000;
const PEER: u64 = 1;

fn b_src() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(B_EP)), B_PORT)
}

fn wall() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
}

struct Lab {
    engine: Handshakes,
    b: Tunn,
    seg: Segment,
    worker: Worker,
    tables: TableBuilder,
}

fn lab() -> Lab {
    let gw_sk: [u8; 32] = rand::random();
    let b_sk = StaticSecret::from(rand::random::<[u8; 32]>());
    let b_pub = PublicKey::from(&b_sk);
    let gw_pub = PublicKey::from(&StaticSecret::from(gw_sk));
    let b = Tunn::new(b_sk, gw_pub, None, None, 7, None);
    let mut engine = Handshakes::new(Identity::new(gw_sk), 256);
    engine.set_peer(PEER, *b_pub.as_bytes(), None);
    let tables = TableBuilder {
        underlay: Underlay {
            addr4: GW,
            port: 51820,
            ..Default::default()
        },
        tenants: vec![TenantSpec {
            id: 42,
            default_permit: true,
            local_iface: 3,
            routes: vec![(
                Prefix::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 0)), 24),
                RouteTarget::Local,
            )],
            acl: vec![],
        }],
        peers: vec![PeerSpec {
            id: PEER,
            tenant: 0,
            endpoint: Some(b_src()),
            public_key: *b_pub.as_bytes(),
            allowed_ips: vec![Prefix::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 32)],
            ..Default::default()
        }],
    };
    let params = SegmentParams {
        keypair_capacity: 256,
        slot_size: 1 << 20,
        max_workers: 1,
    };
    let seg = Segment::create_memfd("noise-interop", params).unwrap();
    let worker = Worker::new(
        Segment::from_file(seg.file().try_clone().unwrap()).unwrap(),
        0,
    )
    .unwrap();
    Lab {
        engine,
        b,
        seg,
        worker,
        tables,
    }
}

impl Lab {
    fn install(&mut self, current: Option<&Session>, next: Option<&Session>) {
        let p = &mut self.tables.peers[0];
        p.current = current.map(|s| s.keypair_spec(u64::from(s.local_index) | 1 << 40));
        p.next = next.map(|s| s.keypair_spec(u64::from(s.local_index) | 1 << 40));
        self.seg
            .publish_retry(&self.tables.build(256).unwrap(), 100)
            .unwrap();
    }

    /// One datagram from boringtun's endpoint through the worker.
    fn underlay_in(&mut self, wg: &[u8]) -> (Verdict, Vec<u8>) {
        let pkt = ipv4_udp(B_EP, GW, B_PORT, 51820, wg);
        run(&mut self.worker, &pkt, INGRESS_UNDERLAY)
    }

    /// An inner packet from the gateway's local side (tenant slot 0) through the worker.
    fn local_in(&mut self, inner: &[u8]) -> (Verdict, Vec<u8>) {
        run(&mut self.worker, inner, 0)
    }
}

fn run(w: &mut Worker, packet: &[u8], ingress: u32) -> (Verdict, Vec<u8>) {
    let (head, tail) = (128usize, 64usize);
    let mut mem = vec![0u8; head + packet.len() + tail];
    mem[head..head + packet.len()].copy_from_slice(packet);
    let mut d = [Buf {
        data: mem[head..].as_mut_ptr(),
        len: packet.len() as u32,
        headroom: head as u32,
        tailroom: tail as u32,
        ingress,
    }];
    let mut v = [Verdict {
        next: 99,
        reason: 99,
        aux: 99,
    }];
    // SAFETY: the descriptor describes `mem`, owned here for the call.
    assert_eq!(unsafe { w.process(&mut d, &mut v) }, 1);
    let off = d[0].headroom as usize;
    (v[0], mem[off..off + d[0].len as usize].to_vec())
}

/// An IPv4/UDP packet (the sidecar's own builder, which also writes its TX packets).
fn ipv4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let sa = |a: [u8; 4], p| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), p);
    build_udp(sa(src, sport), sa(dst, dport), payload).unwrap()
}

fn inner(src: [u8; 4], dst: [u8; 4], tag: u8) -> Vec<u8> {
    ipv4_udp(src, dst, 5000, 6000, &[tag; 40])
}

fn network(r: TunnResult<'_>) -> Vec<u8> {
    match r {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        TunnResult::Err(e) => panic!("boringtun error {e:?}"),
        _ => panic!("boringtun did not write to the network"),
    }
}

fn b_encap(b: &mut Tunn, pkt: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 2048];
    network(b.encapsulate(pkt, &mut out))
}

fn b_decap_tunnel(b: &mut Tunn, wg: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 2048];
    match b.decapsulate(Some(IpAddr::V4(Ipv4Addr::from(GW))), wg, &mut out) {
        TunnResult::WriteToTunnelV4(p, _) => p.to_vec(),
        TunnResult::Err(e) => panic!("boringtun error {e:?}"),
        _ => panic!("boringtun did not deliver a packet"),
    }
}

/// The WireGuard payload of an encrypted packet the worker sent to the underlay.
fn wg_payload(out: &[u8]) -> Vec<u8> {
    let o = cvlan_fastpath::parse::parse_outer(out).unwrap();
    assert_eq!(
        (o.src, o.dst, o.dport),
        (
            u128::from(u32::from(Ipv4Addr::from(GW))),
            u128::from(u32::from(Ipv4Addr::from(B_EP))),
            B_PORT
        )
    );
    out[o.payload_off..o.payload_off + o.payload_len].to_vec()
}

#[test]
fn boringtun_initiates_our_responder_answers_and_data_flows_both_ways_through_the_fast_path() {
    let mut l = lab();
    let now = Instant::now();
    let mut buf = vec![0u8; 256];
    let init = network(l.b.format_handshake_initiation(&mut buf, false));
    let Outcome::Responded { response, session } =
        l.engine.handle(&init, b_src(), now, false).unwrap()
    else {
        panic!("no response");
    };
    assert_eq!(session.peer, PEER);
    // The responder installs the session as `next`: received on, not yet sent with.
    l.install(None, Some(&session));

    // boringtun completes and confirms with a keepalive, which the fast path punts unopened;
    // the sidecar authenticates it with the derived receive key.
    let mut out = vec![0u8; 256];
    let keepalive =
        network(l.b.decapsulate(Some(IpAddr::V4(Ipv4Addr::from(GW))), &response, &mut out));
    let (v, _) = l.underlay_in(&keepalive);
    assert_eq!(
        (v.next, v.reason),
        (Next::Punt as u16, Reason::Keepalive as u16)
    );
    assert_eq!(open_keepalive(session.recv_key(), &keepalive), Some(0));
    assert_eq!(open_keepalive(session.send_key(), &keepalive), None);

    // Data from boringtun decrypts in the worker with the derived keys and marks the `next`
    // keypair as seen (what makes the sidecar promote it).
    let slot = session.local_index & 255;
    assert!(!l.seg.keypair_seen(slot));
    let pkt = inner([10, 0, 0, 2], [10, 0, 1, 9], 1);
    let wg = b_encap(&mut l.b, &pkt);
    let (v, got) = l.underlay_in(&wg);
    assert_eq!((v.next, v.reason), (Next::Local as u16, 0));
    assert_eq!(got, pkt);
    assert!(l.seg.keypair_seen(slot));

    // Promoted to current: the worker encrypts to boringtun, which opens it.
    l.install(Some(&session), None);
    let back = inner([10, 0, 1, 9], [10, 0, 0, 2], 2);
    let (v, out) = l.local_in(&back);
    assert_eq!((v.next, v.aux), (Next::Underlay as u16, 0));
    assert_eq!(b_decap_tunnel(&mut l.b, &wg_payload(&out)), back);
}

#[test]
fn we_initiate_boringtun_responds_and_data_flows_both_ways_through_the_fast_path() {
    let mut l = lab();
    let now = Instant::now();
    let init = l.engine.initiate(PEER, now, wall()).unwrap();
    let mut out = vec![0u8; 256];
    let response = network(l.b.decapsulate(Some(IpAddr::V4(Ipv4Addr::from(GW))), &init, &mut out));
    let Outcome::Completed(session) = l.engine.handle(&response, b_src(), now, false).unwrap()
    else {
        panic!("not completed");
    };
    assert!(session.initiator);
    l.install(Some(&session), None);

    // Our own keepalive (what the sidecar sends to confirm the session) is accepted.
    let ka = seal_keepalive(session.send_key(), session.remote_index, 0);
    let mut out = vec![0u8; 256];
    assert!(matches!(
        l.b.decapsulate(Some(IpAddr::V4(Ipv4Addr::from(GW))), &ka, &mut out),
        TunnResult::Done
    ));

    // The worker continues the same counter sequence: the sidecar took counter 0 above, so
    // the shared send counter must move past it, as vrouterd does through KeypairState.
    let st = l.seg.reader().unwrap();
    st.keypair_state(session.local_index & 255)
        .unwrap()
        .send_counter
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let pkt = inner([10, 0, 1, 9], [10, 0, 0, 2], 3);
    let (v, out) = l.local_in(&pkt);
    assert_eq!(v.next, Next::Underlay as u16);
    assert_eq!(b_decap_tunnel(&mut l.b, &wg_payload(&out)), pkt);

    let pkt = inner([10, 0, 0, 2], [10, 0, 1, 9], 4);
    let wg = b_encap(&mut l.b, &pkt);
    let (v, got) = l.underlay_in(&wg);
    assert_eq!((v.next, v.reason), (Next::Local as u16, 0));
    assert_eq!(got, pkt);
}

#[test]
fn boringtun_consumes_our_cookie_reply_and_its_retry_with_mac2_is_answered_under_load() {
    let mut l = lab();
    let now = Instant::now();
    let mut buf = vec![0u8; 256];
    let init = network(l.b.format_handshake_initiation(&mut buf, false));
    let Outcome::CookieReply(reply) = l.engine.handle(&init, b_src(), now, true).unwrap() else {
        panic!("no cookie reply under load");
    };
    let mut out = vec![0u8; 256];
    assert!(matches!(
        l.b.decapsulate(Some(IpAddr::V4(Ipv4Addr::from(GW))), &reply, &mut out),
        TunnResult::Done
    ));
    // boringtun's retry carries MAC2 over the cookie; still under load, it is answered.
    std::thread::sleep(Duration::from_millis(25));
    let retry = network(l.b.format_handshake_initiation(&mut buf, true));
    assert!(matches!(
        l.engine
            .handle(&retry, b_src(), now + Duration::from_millis(25), true),
        Ok(Outcome::Responded { .. })
    ));
}

#[test]
fn we_consume_boringtuns_cookie_reply_and_our_retry_with_mac2_is_answered() {
    let mut l = lab();
    // A boringtun responder whose rate limiter is always under load (limit 0).
    let b_sk = StaticSecret::from(rand::random::<[u8; 32]>());
    let b_pub = PublicKey::from(&b_sk);
    let limiter = Arc::new(RateLimiter::new(&b_pub, 0));
    l.b = Tunn::new(
        b_sk,
        PublicKey::from(l.engine.identity().public()),
        None,
        None,
        9,
        Some(limiter),
    );
    l.engine.set_peer(PEER, *b_pub.as_bytes(), None);

    let now = Instant::now();
    let from_gw = Some(IpAddr::V4(Ipv4Addr::from(GW)));
    let init = l.engine.initiate(PEER, now, wall()).unwrap();
    let mut out = vec![0u8; 256];
    let reply = network(l.b.decapsulate(from_gw, &init, &mut out));
    assert_eq!(reply.len(), 64, "a cookie reply");
    assert!(matches!(
        l.engine.handle(&reply, b_src(), now, false),
        Ok(Outcome::CookieStored { peer: PEER })
    ));
    let retry = l
        .engine
        .initiate(PEER, now, wall() + Duration::from_millis(1))
        .unwrap();
    let response = network(l.b.decapsulate(from_gw, &retry, &mut out));
    assert_eq!(response.len(), 92, "a handshake response");
    assert!(matches!(
        l.engine.handle(&response, b_src(), now, false),
        Ok(Outcome::Completed(_))
    ));
}

/// Handshakes per second of the responder (consume an initiation, build the response, derive
/// the session), single core. `cargo test -p cvlan-sidecar --release --test noise_interop --
/// --ignored --nocapture responder_handshake_rate`.
#[test]
#[ignore = "measurement, not a check"]
fn responder_handshake_rate() {
    let gw_sk: [u8; 32] = rand::random();
    let gw_pub = PublicKey::from(&StaticSecret::from(gw_sk)).to_bytes();
    let mut responder = Handshakes::new(Identity::new(gw_sk), 1 << 16);
    let n = 2000u32;
    let mut inits = Vec::new();
    let w = wall();
    for i in 0..n {
        let mut initiator = Handshakes::new(Identity::new(rand::random()), 16);
        initiator.set_peer(1, gw_pub, None);
        responder.set_peer(u64::from(i), initiator.identity().public(), None);
        inits.push(initiator.initiate(1, Instant::now(), w).unwrap());
    }
    let t = Instant::now();
    for (i, m) in inits.iter().enumerate() {
        match responder.handle(m, b_src(), t, false).unwrap() {
            Outcome::Responded { session, .. } => {
                let _: KeypairSpec = session.keypair_spec(i as u64 + 1);
                responder.indices().release(session.local_index);
            }
            other => panic!("{other:?}"),
        }
    }
    let el = t.elapsed();
    println!(
        "responder: {n} handshakes in {el:?} = {:.0} handshakes/s (one core)",
        f64::from(n) / el.as_secs_f64()
    );
}
