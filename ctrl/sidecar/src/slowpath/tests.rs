use super::*;
use crate::model::stable_id;
use crate::noise::{INITIATION_LEN, Identity, seal_keepalive};
use crate::punt::parse_udp;

const UNDERLAY: &str = "10.255.0.1:51820";

fn b64(k: [u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(k)
}

/// A gateway slow path with one peer "n1" (endpoints `eps`) and that peer's own engine.
fn setup(eps: &[&str]) -> (SlowPath, Handshakes, u64) {
    let gw = Identity::new(rand::random());
    let gw_pub = gw.public();
    let node = Identity::new(rand::random());
    let node_pub = node.public();
    let mut remote = Handshakes::new(node, 64);
    remote.set_peer(1, gw_pub, None);
    let mut sp = SlowPath::new(
        Model::default(),
        Handshakes::new(gw, 256),
        UNDERLAY.parse().expect("addr"),
        256,
        1,
        1000,
    );
    sp.apply_snapshot(&pb::GatewayTables {
        version: 1,
        tenants: vec![pb::GatewayTenant {
            tenant_id: "t".into(),
            index: 0,
            default_action: 1,
        }],
        peers: vec![pb::GatewayPeer {
            node_id: "n1".into(),
            tenant_id: "t".into(),
            wg_public_key: b64(node_pub),
            allowed_ips: vec!["10.0.0.2/32".into()],
            endpoint: eps.first().map(|s| s.to_string()).unwrap_or_default(),
            endpoints: eps.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }],
        ..Default::default()
    })
    .expect("snapshot");
    assert!(sp.take_dirty());
    (sp, remote, stable_id("n1"))
}

fn wall() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
}

fn punted(from: &str, wg: &[u8]) -> Vec<u8> {
    build_udp(
        from.parse().expect("from"),
        UNDERLAY.parse().expect("to"),
        wg,
    )
    .expect("pkt")
}

fn drain(sp: &mut SlowPath) -> Vec<(SocketAddr, Vec<u8>)> {
    std::iter::from_fn(|| sp.poll_transmit()).collect()
}

#[test]
fn a_punted_initiation_is_answered_from_the_underlay_and_installs_a_next_keypair() {
    let (mut sp, mut remote, id) = setup(&[]);
    let now = Instant::now();
    let init = remote.initiate(1, now, wall()).expect("init");
    sp.handle_punt("handshake_init", &punted("203.0.113.9:4500", &init), now);
    let out = drain(&mut sp);
    assert_eq!(out.len(), 1);
    let udp = parse_udp(&out[0].1).expect("udp");
    assert_eq!(udp.src, UNDERLAY.parse().expect("u"));
    assert_eq!(udp.dst, "203.0.113.9:4500".parse().expect("d"));
    assert!(matches!(
        remote.handle(udp.payload, udp.src, now, false),
        Ok(Outcome::Completed(_))
    ));
    assert!(sp.take_dirty());
    let p = sp.model.peer(id).expect("peer");
    assert!(p.keys.next.is_some() && p.keys.current.is_none());
    assert_eq!(p.endpoint(), Some("203.0.113.9:4500".parse().expect("ep")));
    assert_eq!(sp.counters().handshakes_responded, 1);
}

#[test]
fn an_authenticated_keepalive_confirms_the_next_keypair_and_a_replayed_one_is_dropped() {
    let (mut sp, mut remote, id) = setup(&[]);
    let now = Instant::now();
    let init = remote.initiate(1, now, wall()).expect("init");
    sp.handle_punt("handshake_init", &punted("203.0.113.9:4500", &init), now);
    let (_, resp) = drain(&mut sp).remove(0);
    let udp = parse_udp(&resp).expect("udp");
    let Ok(Outcome::Completed(s)) = remote.handle(udp.payload, udp.src, now, false) else {
        panic!("complete");
    };
    let ka = seal_keepalive(s.send_key(), s.remote_index, 0);
    sp.take_dirty();
    sp.handle_punt("keepalive", &punted("203.0.113.9:4500", &ka), now);
    assert!(sp.take_dirty());
    assert!(sp.model.peer(id).expect("peer").keys.current.is_some());
    sp.handle_punt("keepalive", &punted("203.0.113.10:4500", &ka), now);
    assert_eq!(sp.counters().drops.get("replay"), Some(&1));
    // The replay did not move the endpoint.
    assert_eq!(
        sp.model.peer(id).expect("peer").endpoint(),
        Some("203.0.113.9:4500".parse().expect("ep"))
    );
    let mut forged = ka;
    forged[20] ^= 1;
    forged[8] = 5;
    sp.handle_punt("keepalive", &punted("203.0.113.9:4500", &forged), now);
    assert_eq!(sp.counters().drops.get("decrypt_failed"), Some(&1));
}

#[test]
fn the_same_initiation_goes_to_every_endpoint_and_the_answer_completes_the_session() {
    let (mut sp, mut remote, id) = setup(&["192.0.2.7:51820", "198.51.100.7:51820"]);
    let now = Instant::now();
    sp.tick(now, wall(), |_| false);
    let out = drain(&mut sp);
    assert_eq!(out.len(), 2);
    let a = parse_udp(&out[0].1).expect("a");
    let b = parse_udp(&out[1].1).expect("b");
    assert_eq!(a.payload, b.payload);
    assert_eq!(a.payload.len(), INITIATION_LEN);
    assert_eq!(
        (a.dst, b.dst),
        (
            "192.0.2.7:51820".parse().expect("1"),
            "198.51.100.7:51820".parse().expect("2")
        )
    );
    // The peer accepts the first copy and rejects the second as a replay.
    let Ok(Outcome::Responded { response, .. }) = remote.handle(a.payload, a.src, now, false)
    else {
        panic!("respond");
    };
    assert_eq!(
        remote
            .handle(b.payload, b.src, now + Duration::from_millis(30), false)
            .map(|_| ()),
        Err(HandshakeError::Replay)
    );
    sp.handle_punt(
        "handshake_response",
        &punted("198.51.100.7:51820", &response),
        now,
    );
    assert_eq!(sp.take_keepalives().len(), 1);
    assert_eq!(sp.initiating(), 0);
    let p = sp.model.peer(id).expect("peer");
    assert!(p.keys.current.as_ref().is_some_and(|k| k.initiator));
    // The endpoint that answered is the one used from now on.
    assert_eq!(
        p.endpoint(),
        Some("198.51.100.7:51820".parse().expect("ep"))
    );
}

#[test]
fn unanswered_initiations_are_retried_after_rekey_timeout_and_abandoned_after_the_attempt_time() {
    let (mut sp, _remote, _) = setup(&["192.0.2.7:51820"]);
    let t0 = Instant::now();
    sp.tick(t0, wall(), |_| false);
    assert_eq!(drain(&mut sp).len(), 1);
    sp.tick(t0 + Duration::from_secs(2), wall(), |_| false);
    assert!(drain(&mut sp).is_empty());
    sp.tick(t0 + Duration::from_millis(5400), wall(), |_| false);
    assert_eq!(drain(&mut sp).len(), 1);
    let used = sp.indices_in_use();
    assert_eq!(used, 1, "a retry replaces the pending index");
    sp.tick(t0 + REKEY_ATTEMPT_TIME, wall(), |_| false);
    assert_eq!(sp.counters().gave_up, 1);
    assert_eq!(sp.indices_in_use(), 0);
    sp.tick(
        t0 + REKEY_ATTEMPT_TIME + Duration::from_secs(1),
        wall(),
        |_| false,
    );
    assert!(drain(&mut sp).is_empty(), "quiet after giving up");
    sp.tick(t0 + REKEY_ATTEMPT_TIME + RETRY_QUIET_TIME, wall(), |_| {
        false
    });
    assert_eq!(drain(&mut sp).len(), 1);
}

#[test]
fn garbage_punts_are_counted_by_reason_and_change_nothing() {
    let (mut sp, _, _) = setup(&[]);
    let now = Instant::now();
    sp.handle_punt("handshake_init", b"\x45garbage", now);
    // A tenant's inner packet punted for lack of a keypair is never read as a handshake.
    let inner_like = build_udp(
        "10.0.0.9:1".parse().expect("a"),
        "10.0.0.2:51820".parse().expect("b"),
        &[1, 0, 0, 0, 5, 5],
    )
    .expect("pkt");
    sp.handle_punt("no_keypair", &inner_like, now);
    sp.handle_punt(
        "handshake_init",
        &punted("192.0.2.1:1", &[1, 0, 0, 0, 9]),
        now,
    );
    let mut forged = [7u8; INITIATION_LEN];
    forged[..4].copy_from_slice(&[1, 0, 0, 0]);
    sp.handle_punt("handshake_init", &punted("192.0.2.1:1", &forged), now);
    sp.handle_punt("keepalive", &punted("192.0.2.1:1", &[9, 9]), now);
    let c = sp.counters();
    assert_eq!(c.punts.get("handshake_init"), Some(&3));
    assert_eq!(c.punts.get("no_keypair"), Some(&1));
    assert_eq!(c.drops.get("not_udp"), Some(&1));
    assert_eq!(c.drops.get("malformed"), Some(&1));
    assert_eq!(c.drops.get("bad_mac1"), Some(&1));
    assert_eq!(c.drops.get("not_handshake"), Some(&1));
    assert!(!sp.take_dirty());
    assert!(drain(&mut sp).is_empty());
}
