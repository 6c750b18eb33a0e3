//! Two data planes in two network namespaces, the real TUN and UDP paths (needs root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use cvlan_policy::{Action, Filter, FilterRule, PortRange, Proto};

#[test]
fn two_dataplanes_ping_over_v4_and_v6_and_carry_a_tcp_transfer() {
    let m = Mesh::new(allow_all(), allow_all());
    assert!(m.pair.a.ping("10.77.0.2"), "v4 ping a -> b");
    assert!(m.pair.b.ping("10.77.0.1"), "v4 ping b -> a");
    assert!(m.pair.a.ping("fd00:77::2"), "v6 ping a -> b");
    assert!(m.pair.b.ping("fd00:77::1"), "v6 ping b -> a");

    let len = 20 << 20;
    let (got, same) = tcp_transfer(
        &m.pair.a,
        &m.pair.b,
        "10.77.0.2:5001",
        "10.77.0.2:5001",
        len,
    );
    assert_eq!(got, len);
    assert!(same, "TCP payload corrupted");
    let (got, same) = tcp_transfer(
        &m.pair.b,
        &m.pair.a,
        "[fd00:77::1]:5002",
        "[fd00:77::1]:5002",
        len,
    );
    assert_eq!(got, len);
    assert!(same, "TCP payload corrupted (v6)");

    let sa = m.da.peer_stats();
    assert_eq!(sa.len(), 1);
    assert_eq!(sa[0].public_key, m.kb);
    assert!(sa[0].last_handshake.is_some());
    assert!(sa[0].tx_bytes >= len as u64, "tx bytes {}", sa[0].tx_bytes);
    assert!(sa[0].rx_bytes >= len as u64, "rx bytes {}", sa[0].rx_bytes);
    assert_eq!(sa[0].endpoint, Some("192.168.77.2:51820".parse().unwrap()));
    let c = m.db.counters();
    assert!(c.handshakes >= 1);
    assert_eq!(c.dropped_malformed, 0, "{c:?}");
}

#[test]
fn inbound_filter_denies_and_counts_but_lets_replies_and_established_tcp_through() {
    // b only allows TCP port 5001 from a
    let only_5001 = Filter {
        rules: vec![FilterRule {
            sources: vec![net("10.77.0.1/32")],
            destinations: vec![net("10.77.0.2/32")],
            proto: Proto::Tcp,
            ports: vec![PortRange {
                first: 5001,
                last: 5001,
            }],
            action: Action::Allow,
        }],
    };
    // a denies everything new
    let m = Mesh::new(Filter::default(), only_5001);
    assert!(
        !m.pair.a.ping("10.77.0.2"),
        "ping must be denied by b's filter"
    );
    let c = m.db.counters();
    assert!(c.dropped_filtered >= 1, "{c:?}");

    // allowed port: passes b's filter; a's replies... a is the initiator: b's SYN+ACK and
    // data pass a's deny-all filter as established TCP
    let (got, same) = tcp_transfer(
        &m.pair.a,
        &m.pair.b,
        "10.77.0.2:5001",
        "10.77.0.2:5001",
        1 << 20,
    );
    assert_eq!(got, 1 << 20);
    assert!(same);

    // b pings a: a's filter denies echo requests, but b's filter lets the reply in because b
    // started the flow... a denies the request, so open a: allow ICMP to a
    m.da.set_filter(Filter {
        rules: vec![FilterRule {
            sources: vec![net("10.77.0.0/24")],
            destinations: vec![net("10.77.0.1/32")],
            proto: Proto::Icmp,
            ports: Vec::new(),
            action: Action::Allow,
        }],
    });
    assert!(
        m.pair.b.ping("10.77.0.1"),
        "echo reply to b's own request passes b's filter"
    );

    // UDP reply to a flow b started passes b's filter; a new UDP flow from a does not
    let sock_b = m
        .pair
        .b
        .enter(|| UdpSocket::bind("10.77.0.2:6000").unwrap());
    sock_b
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let sock_a = m
        .pair
        .a
        .enter(|| UdpSocket::bind("10.77.0.1:6001").unwrap());
    sock_a
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let filtered_before = m.db.counters().dropped_filtered;
    sock_a.send_to(b"unsolicited", "10.77.0.2:6000").unwrap();
    let mut buf = [0u8; 64];
    assert!(
        sock_b.recv_from(&mut buf).is_err(),
        "unsolicited UDP must be dropped"
    );
    assert!(m.db.counters().dropped_filtered > filtered_before);
    // a denies inbound UDP too, so a cannot receive b's query: let a accept UDP 6001
    m.da.set_filter(Filter {
        rules: vec![FilterRule {
            sources: vec![net("10.77.0.2/32")],
            destinations: vec![net("10.77.0.1/32")],
            proto: Proto::Udp,
            ports: vec![PortRange {
                first: 6001,
                last: 6001,
            }],
            action: Action::Allow,
        }],
    });
    sock_b.send_to(b"query", "10.77.0.1:6001").unwrap();
    let (n, from) = sock_a.recv_from(&mut buf).expect("a receives b's query");
    assert_eq!(&buf[..n], b"query");
    sock_a.send_to(b"answer", from).unwrap();
    let (n, _) = sock_b
        .recv_from(&mut buf)
        .expect("the reply passes b's filter");
    assert_eq!(&buf[..n], b"answer");
}

#[test]
fn garbage_on_the_udp_port_is_counted_and_harmless() {
    let m = Mesh::new(allow_all(), allow_all());
    assert!(m.pair.a.ping("10.77.0.2"));
    let before = m.db.counters();
    let sock = m
        .pair
        .a
        .enter(|| UdpSocket::bind("192.168.77.1:0").unwrap());
    let dst = "192.168.77.2:51820";
    let mut sent = 0u64;
    let mut x: u32 = 12345;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for len in [
        0usize, 1, 3, 4, 15, 16, 31, 32, 33, 64, 92, 148, 200, 1400, 9000, 60000,
    ] {
        for ty in [0u8, 1, 2, 3, 4, 5, 255] {
            let mut d: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
            if len >= 4 {
                d[0] = ty;
                d[1] = 0;
                d[2] = 0;
                d[3] = 0;
            }
            if len >= 8 && ty == 4 && rnd() % 2 == 0 {
                // a receiver index that may belong to the real session's peer slot
                d[4..8].copy_from_slice(&rnd().to_le_bytes());
            }
            sock.send_to(&d, dst).unwrap();
            sent += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = m.db.counters();
    let dropped = (after.dropped_malformed - before.dropped_malformed)
        + (after.dropped_no_peer - before.dropped_no_peer);
    assert!(
        dropped >= sent,
        "sent {sent} garbage datagrams, dropped {dropped}: {after:?}"
    );
    assert!(
        m.pair.a.ping("10.77.0.2"),
        "tunnel still works after garbage"
    );
    assert!(m.pair.b.ping("10.77.0.1"));
}

#[test]
fn set_peers_keeps_established_sessions_of_unchanged_keys() {
    let m = Mesh::new(allow_all(), allow_all());
    assert!(m.pair.a.ping("10.77.0.2"));
    let hs_a = m.da.counters().handshakes;
    let hs_b = m.db.counters().handshakes;
    let last = m.da.peer_stats()[0].last_handshake;
    // same peer plus a new one with a subnet route outside the TUN prefix
    let (_, kc) = key_pair(3);
    m.da.set_peers(vec![
        peer(
            m.kb,
            "b-renamed",
            "192.168.77.2:51820",
            &["10.77.0.2/32", "fd00:77::2/128"],
        ),
        peer(kc, "c", "192.168.77.3:51820", &["10.99.0.0/16"]),
    ]);
    let routes = m.pair.a.exec(&["ip", "route", "show", "10.99.0.0/16"]);
    assert!(
        routes.contains("cvlan0"),
        "route for the new peer's subnet: {routes}"
    );
    assert!(m.pair.a.ping("10.77.0.2"));
    assert_eq!(m.da.counters().handshakes, hs_a, "no new handshake on a");
    assert_eq!(m.db.counters().handshakes, hs_b, "no new handshake on b");
    let stats = m.da.peer_stats();
    let b = stats.iter().find(|p| p.public_key == m.kb).unwrap();
    assert_eq!(b.name, "b-renamed");
    // same handshake (the wall-clock conversion jitters by microseconds)
    let (now_hs, last) = (b.last_handshake.unwrap(), last.unwrap());
    let drift = now_hs.duration_since(last).unwrap_or_else(|e| e.duration());
    assert!(
        drift < Duration::from_millis(500),
        "handshake time moved by {drift:?}"
    );
    // removing the peer removes its route
    m.da.set_peers(vec![peer(
        m.kb,
        "b",
        "192.168.77.2:51820",
        &["10.77.0.2/32"],
    )]);
    let routes = m.pair.a.exec(&["ip", "route", "show", "10.99.0.0/16"]);
    assert!(routes.trim().is_empty(), "route left behind: {routes}");
}

#[test]
fn a_packet_from_outside_the_peers_allowed_ips_is_dropped_as_bad_source() {
    let m = Mesh::new(allow_all(), allow_all());
    // a sends from a second address that b does not list in a's allowed IPs
    m.pair
        .a
        .exec(&["ip", "addr", "add", "10.77.0.9/32", "dev", "cvlan0"]);
    let out = m
        .pair
        .a
        .try_exec(&["ping", "-c", "1", "-W", "1", "-I", "10.77.0.9", "10.77.0.2"]);
    assert!(!out.status.success());
    let c = m.db.counters();
    assert!(c.dropped_bad_source >= 1, "{c:?}");
}

#[test]
fn peers_reach_each_other_over_an_ipv6_underlay() {
    let pair = Pair::new();
    let (pa, ka) = key_pair(21);
    let (pb, kb) = key_pair(22);
    let da = start(&pair.a, pa, 0, &["10.77.0.1/24"]);
    let db = start(&pair.b, pb, 0, &["10.77.0.2/24"]);
    da.set_filter(allow_all());
    db.set_filter(allow_all());
    // only a knows b's endpoint; b learns a's from the handshake (kernel-picked ports)
    da.set_peers(vec![peer(
        kb,
        "b",
        &format!("[fd77::2]:{}", db.listen_port()),
        &["10.77.0.2/32"],
    )]);
    let mut to_a = peer(ka, "a", "[fd77::1]:1", &["10.77.0.1/32"]);
    to_a.endpoint = None;
    db.set_peers(vec![to_a]);
    assert_ne!(da.listen_port(), 0);
    assert!(pair.a.ping("10.77.0.2"));
    assert!(pair.b.ping("10.77.0.1"));
    let learned = db.peer_stats()[0].endpoint.expect("b learned a's endpoint");
    assert_eq!(
        learned,
        format!("[fd77::1]:{}", da.listen_port()).parse().unwrap()
    );
}
