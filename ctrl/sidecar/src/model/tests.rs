use super::*;
use cvlan_tables::FiveTuple;
use cvlan_tables::layout::ACTION_PERMIT;
use proptest::prelude::*;
use std::net::Ipv4Addr;

fn key(b: u8) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([b; 32])
}

fn peer(node: &str, tenant: &str, k: u8, ip: &str) -> pb::GatewayPeer {
    pb::GatewayPeer {
        node_id: node.into(),
        tenant_id: tenant.into(),
        cvlan_id: "c".into(),
        wg_public_key: key(k),
        allowed_ips: vec![format!("{ip}/32")],
        endpoint: format!("192.0.2.{k}:51820"),
        endpoints: vec![
            format!("192.0.2.{k}:51820"),
            format!("198.51.100.{k}:51820"),
        ],
    }
}

fn tenant(id: &str, index: u32) -> pb::GatewayTenant {
    pb::GatewayTenant {
        tenant_id: id.into(),
        index,
        default_action: pb::Action::Deny as i32,
    }
}

fn snapshot(peers: Vec<pb::GatewayPeer>) -> pb::GatewayTables {
    pb::GatewayTables {
        version: 1,
        tenants: vec![tenant("t1", 0), tenant("t2", 1)],
        peers,
        acls: vec![],
        routes: vec![],
    }
}

fn session(peer: u64, idx: u32, initiator: bool) -> Session {
    // Sessions come from real handshakes: run one between two engines.
    use crate::noise::{Handshakes, Identity, Outcome};
    let a = Identity::new([idx as u8 | 1; 32]);
    let b = Identity::new([7; 32]);
    let (pa, pb_) = (a.public(), b.public());
    let mut ea = Handshakes::new(a, 1 << 16);
    let mut eb = Handshakes::new(b, 1 << 16);
    ea.set_peer(peer, pb_, None);
    eb.set_peer(peer, pa, None);
    let now = Instant::now();
    let init = ea
        .initiate(peer, now, Duration::from_secs(1))
        .expect("init");
    let src: SocketAddr = "192.0.2.1:1".parse().expect("addr");
    let Ok(Outcome::Responded { response, session }) = eb.handle(&init, src, now, false) else {
        panic!("respond")
    };
    if !initiator {
        return session;
    }
    let Ok(Outcome::Completed(s)) = ea.handle(&response, src, now, false) else {
        panic!("complete")
    };
    s
}

#[test]
fn slots_are_stable_across_snapshots_and_freed_slots_are_reused() {
    let mut m = Model::default();
    m.apply_snapshot(&snapshot(vec![
        peer("a", "t1", 1, "10.0.0.1"),
        peer("b", "t1", 2, "10.0.0.2"),
        peer("c", "t2", 3, "10.0.0.3"),
    ]))
    .expect("apply");
    let slot = |m: &Model, n: &str| m.peer(stable_id(n)).expect("peer").slot;
    let (sa, sb, sc) = (slot(&m, "a"), slot(&m, "b"), slot(&m, "c"));
    let mut all = vec![sa, sb, sc];
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2]);
    // b leaves, d joins: d takes b's slot, a and c keep theirs.
    let applied = m
        .apply_snapshot(&snapshot(vec![
            peer("a", "t1", 1, "10.0.0.1"),
            peer("c", "t2", 3, "10.0.0.3"),
            peer("d", "t2", 4, "10.0.0.4"),
        ]))
        .expect("apply");
    assert_eq!(applied.removed_peers, vec![stable_id("b")]);
    assert_eq!((slot(&m, "a"), slot(&m, "c"), slot(&m, "d")), (sa, sc, sb));
    let b = m.build();
    assert_eq!(b.peers.len(), 3);
    assert_eq!(b.peers[sb as usize].id, stable_id("d"));
    assert_eq!(
        b.peers[sb as usize].endpoint,
        Some("192.0.2.4:51820".parse().expect("ep"))
    );
    b.build(64).expect("compiles");
}

#[test]
fn a_bad_public_key_refuses_the_whole_update() {
    let mut m = Model::default();
    let mut p = peer("a", "t1", 1, "10.0.0.1");
    p.wg_public_key = "short".into();
    assert!(m.apply_snapshot(&snapshot(vec![p])).is_err());
    assert!(m.peers().is_empty() && !m.ready);
}

#[test]
fn acl_entries_expand_sources_times_destinations_times_ports_in_order() {
    let e = pb::AclEntry {
        tenant_id: "t1".into(),
        source_cidrs: vec!["10.0.0.0/24".into(), "fd00::/64".into()],
        destination_cidrs: vec!["10.0.1.5/32".into(), "fd00:1::5".into()],
        protocol: pb::Protocol::Tcp as i32,
        ports: vec![
            pb::PortRange {
                first: 22,
                last: 22,
            },
            pb::PortRange {
                first: 80,
                last: 90,
            },
        ],
        action: pb::Action::Allow as i32,
        source_ports: vec![pb::PortRange {
            first: 1000,
            last: 0,
        }],
        established: false,
    };
    let r = expand_acl(&e);
    // v4×v4 and v6×v6 only, two destination ranges each.
    assert_eq!(r.len(), 4);
    assert!(!r[0].v6 && !r[1].v6 && r[2].v6 && r[3].v6);
    assert_eq!((r[0].dport, r[1].dport), ((22, 22), (80, 90)));
    assert!(
        r.iter()
            .all(|x| x.sport == (1000, 1000) && x.permit && x.proto == Some(6))
    );
    // ICMP ignores ports and only applies to IPv4; "any" on both sides covers both families.
    let icmp = pb::AclEntry {
        protocol: pb::Protocol::Icmp as i32,
        ports: vec![pb::PortRange { first: 1, last: 2 }],
        ..Default::default()
    };
    let r = expand_acl(&icmp);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].v6, r[0].dport, r[0].permit),
        (false, (0, u16::MAX), false)
    );
}

#[test]
fn a_responder_session_is_next_until_seen_then_current_and_expires_after_reject_time() {
    let mut m = Model::default();
    m.apply_snapshot(&snapshot(vec![peer("a", "t1", 1, "10.0.0.1")]))
        .expect("apply");
    let id = stable_id("a");
    let s = session(id, 5, false);
    let t0 = Instant::now();
    assert!(m.install(&s, 11, t0).is_empty());
    let p = m.peer(id).expect("peer");
    assert!(p.keys.current.is_none() && p.keys.next.is_some());
    // The next keypair is received on but no handshake is wanted meanwhile.
    assert!(m.wants_handshake(t0).is_empty());
    let mask = 63;
    let (changed, released) = m.promote(|_| false, mask);
    assert!(!changed && released.is_empty());
    let (changed, _) = m.promote(|slot| slot == s.local_index & mask, mask);
    assert!(changed);
    assert!(m.peer(id).expect("peer").keys.current.is_some());
    let b = m.build();
    assert_eq!(b.peers[0].current.map(|k| k.install_id), Some(11));
    assert!(m.expire(t0 + Duration::from_secs(179)).released.is_empty());
    assert_eq!(
        m.expire(t0 + REJECT_AFTER_TIME).released,
        vec![s.local_index]
    );
    // No current keypair, endpoints known: we initiate.
    assert_eq!(m.wants_handshake(t0 + REJECT_AFTER_TIME), vec![id]);
}

#[test]
fn sessions_we_initiated_are_rekeyed_after_rekey_after_time() {
    let mut m = Model::default();
    m.apply_snapshot(&snapshot(vec![peer("a", "t1", 1, "10.0.0.1")]))
        .expect("apply");
    let id = stable_id("a");
    let t0 = Instant::now();
    m.install(&session(id, 9, true), 1, t0);
    assert!(m.wants_handshake(t0 + Duration::from_secs(60)).is_empty());
    assert_eq!(m.wants_handshake(t0 + REKEY_AFTER_TIME), vec![id]);
    // The rekeyed session becomes current, the old one previous.
    let s2 = session(id, 10, true);
    assert!(m.install(&s2, 2, t0 + REKEY_AFTER_TIME).is_empty());
    let k = &m.peer(id).expect("peer").keys;
    assert_eq!(k.current.as_ref().map(|k| k.spec.install_id), Some(2));
    assert_eq!(k.previous.as_ref().map(|k| k.spec.install_id), Some(1));
}

#[test]
fn a_key_change_voids_the_peers_sessions() {
    let mut m = Model::default();
    m.apply_snapshot(&snapshot(vec![peer("a", "t1", 1, "10.0.0.1")]))
        .expect("apply");
    let id = stable_id("a");
    let s = session(id, 3, true);
    m.install(&s, 1, Instant::now());
    let applied = m
        .apply_snapshot(&snapshot(vec![peer("a", "t1", 9, "10.0.0.1")]))
        .expect("apply");
    assert_eq!(applied.released, vec![s.local_index]);
    assert_eq!(applied.removed_peers, vec![id]);
    assert!(m.peer(id).expect("peer").keys.current.is_none());
}

#[test]
fn a_delta_replaces_a_tenants_acls_and_removes_peers() {
    let mut m = Model::default();
    let mut snap = snapshot(vec![
        peer("a", "t1", 1, "10.0.0.1"),
        peer("b", "t1", 2, "10.0.0.2"),
    ]);
    snap.acls.push(pb::AclEntry {
        tenant_id: "t1".into(),
        action: pb::Action::Allow as i32,
        ..Default::default()
    });
    m.apply_snapshot(&snap).expect("apply");
    assert_eq!(
        m.build().tenants[m.tenants()[&stable_id("t1")].slot as usize]
            .acl
            .len(),
        2
    );
    let d = pb::GatewayDelta {
        version: 2,
        peers_removed: vec!["b".into()],
        tenants_replaced: vec!["t1".into()],
        ..Default::default()
    };
    m.apply_delta(&d).expect("delta");
    let b = m.build();
    assert!(b.tenants.iter().all(|t| t.acl.is_empty()));
    assert_eq!(b.peers.len(), 1);
    assert_eq!(m.version, 2);
}

#[test]
fn a_restarted_model_keeps_recovered_slots_and_keypairs_for_the_same_peers() {
    let mut m = Model::default();
    m.apply_snapshot(&snapshot(vec![
        peer("a", "t1", 1, "10.0.0.1"),
        peer("b", "t2", 2, "10.0.0.2"),
    ]))
    .expect("apply");
    let (a, b) = (stable_id("a"), stable_id("b"));
    let t0 = Instant::now();
    let sa = session(a, 1, true);
    let sb = session(b, 2, true);
    m.install(&sa, 100, t0);
    m.install(&sb, 101, t0);
    let img = m.build().build(1 << 16).expect("build");
    let view = GenView::parse(&img, 1 << 16).expect("view");
    let rec = Recovered::from_view(&view, t0);
    let mut m2 = Model::new(Underlay::default(), Some(rec));
    assert_eq!(m2.recovered_indices().len(), 2);
    assert_eq!(m2.max_install_id(), 101);
    // The control plane still lists a (same key) but not b.
    let applied = m2
        .apply_snapshot(&snapshot(vec![peer("a", "t1", 1, "10.0.0.1")]))
        .expect("apply");
    assert_eq!(applied.removed_peers, vec![b]);
    assert_eq!(applied.released, vec![sb.local_index]);
    let pa = m2.peer(a).expect("a");
    assert_eq!(pa.slot, m.peer(a).expect("a").slot);
    assert_eq!(
        pa.keys.current.as_ref().map(|k| k.spec),
        Some(sa.keypair_spec(100))
    );
    let rebuilt = m2.build();
    assert_eq!(
        rebuilt.peers[pa.slot as usize].current,
        Some(sa.keypair_spec(100))
    );
}

/// The reference semantics of a gateway ACL entry, straight from the proto.
fn entry_matches(e: &pb::AclEntry, t: &FiveTuple, v6: bool) -> bool {
    let inside = |cidrs: &[String], a: u128| {
        cidrs.is_empty()
            || cidrs
                .iter()
                .filter_map(|c| parse_prefix(c))
                .any(|p| p.addr.is_ipv6() == v6 && p.contains(a))
    };
    let proto_ok = match e.protocol {
        0 => true,
        1 => !v6 && t.proto == 1,
        58 => v6 && t.proto == 58,
        p => p as u8 == t.proto,
    };
    let ports_apply = matches!(e.protocol, 6 | 17);
    let in_ranges = |r: &[pb::PortRange], port: u16| {
        !ports_apply
            || r.is_empty()
            || r.iter()
                .any(|x| (x.first as u16..=x.last as u16).contains(&port))
    };
    inside(&e.source_cidrs, t.src)
        && inside(&e.destination_cidrs, t.dst)
        && proto_ok
        && in_ranges(&e.ports, t.dport)
        && in_ranges(&e.source_ports, t.sport)
        && (!e.established || t.proto != 6 || t.tcp_flags & 0x14 != 0)
}

fn arb_cidrs() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop_oneof![
            (0u8..4, prop_oneof![Just(24u8), Just(30), Just(32)])
                .prop_map(|(x, l)| format!("10.0.0.{}/{l}", x * 2)),
            (0u8..4).prop_map(|x| format!("fd00::{x}/127")),
        ],
        0..3,
    )
}

fn arb_ranges() -> impl Strategy<Value = Vec<pb::PortRange>> {
    prop::collection::vec(
        (1u32..6, 0u32..3).prop_map(|(a, w)| pb::PortRange {
            first: a,
            last: a + w,
        }),
        0..3,
    )
}

fn arb_entry() -> impl Strategy<Value = pb::AclEntry> {
    (
        arb_cidrs(),
        arb_cidrs(),
        prop_oneof![Just(0), Just(1), Just(6), Just(17), Just(58)],
        arb_ranges(),
        arb_ranges(),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(|(s, d, p, dp, sp, (allow, established))| pb::AclEntry {
            tenant_id: "t1".into(),
            source_cidrs: s,
            destination_cidrs: d,
            protocol: p,
            ports: dp,
            action: if allow { 1 } else { 2 },
            source_ports: sp,
            established,
        })
}

proptest! {
    #[test]
    fn compiled_gateway_acls_agree_with_the_entries_read_literally(
        entries in prop::collection::vec(arb_entry(), 0..12),
        packets in prop::collection::vec((any::<bool>(), 0u8..8, 0u8..8, prop_oneof![Just(1u8), Just(6), Just(17), Just(58)], 0u16..9, 0u16..9, prop_oneof![Just(0x02u8), Just(0x12), Just(0x10), Just(0x01)]), 1..40),
    ) {
        let mut m = Model::default();
        let mut snap = snapshot(vec![]);
        snap.acls = entries.clone();
        m.apply_snapshot(&snap).expect("apply");
        let img = m.build().build(16).expect("build");
        let view = GenView::parse(&img, 16).expect("view");
        let t = view.tenants[m.tenants()[&stable_id("t1")].slot as usize];
        for (v6, s, d, proto, sport, dport, flags) in packets {
            let addr = |x: u8| if v6 { u128::from(0xfd00u16) << 112 | u128::from(x) } else { u128::from(u32::from(Ipv4Addr::new(10, 0, 0, x))) };
            let tcp_flags = if proto == 6 { flags } else { 0 };
            let tuple = FiveTuple { src: addr(s), dst: addr(d), proto, sport, dport, tcp_flags };
            let want = entries.iter().find(|e| entry_matches(e, &tuple, v6)).map(|e| e.action == 1);
            let got = view.acl_classify(&t, &tuple, v6).map(|(_, a)| a == ACTION_PERMIT);
            prop_assert_eq!(got, want, "{:?} v6={}", tuple, v6);
        }
    }
}
