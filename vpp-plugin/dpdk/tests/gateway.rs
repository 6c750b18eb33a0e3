//! vrouter-dpdk end to end: the real binary on DPDK's af_packet PMD inside a network
//! namespace, a table segment built with cvlan-tables, WireGuard peers A and B in a second
//! namespace (keys installed directly, no handshake), vrouterd's side played by the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

fn inner(payload: &[u8]) -> Vec<u8> {
    ipv4_udp(A_INNER, B_INNER, 1000, 2000, payload)
}

#[test]
fn arp_is_answered_and_peer_a_traffic_leaves_reencrypted_for_peer_b() {
    let mut lab = Lab::new();
    write_segment(&lab.segment());
    lab.start(&[]);
    lab.wait_log("attached to table segment", Duration::from_secs(5));

    // (a) An ARP request for the port address gets our MAC back.
    let raw = Raw::new(&lab);
    let mut req = vec![0xff; 6];
    req.extend_from_slice(&RM_MAC);
    req.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    req.extend_from_slice(&RM_MAC);
    req.extend_from_slice(&A_HOST.octets());
    req.extend_from_slice(&[0; 6]);
    req.extend_from_slice(&GW_PORT_ADDR.octets());
    req.resize(60, 0);
    raw.send(&req);
    let t0 = Instant::now();
    let reply = loop {
        assert!(t0.elapsed() < Duration::from_secs(3), "no ARP reply");
        if let Some(f) = raw.recv()
            && f.len() >= 42
            && f[12..14] == [0x08, 0x06]
            && f[20..22] == [0, 2]
        {
            break f;
        }
    };
    assert_eq!(&reply[0..6], &RM_MAC, "reply is unicast to the asker");
    assert_eq!(&reply[22..28], &GW_MAC, "sender MAC is the port's");
    assert_eq!(&reply[28..32], &GW_PORT_ADDR.octets());
    assert_eq!(&reply[32..38], &RM_MAC);
    assert_eq!(&reply[38..42], &A_HOST.octets());

    // (b) A's transport packet comes out sealed for B, at B's endpoint, with B's index.
    let a = lab.udp(A_HOST, A_PORT);
    let b = lab.udp(B_HOST, B_PORT);
    let mut counter = 0;
    let msg = a_to_b(&a, &b, &mut counter, &inner(b"through the gateway"));
    let (receiver, c, pt) = open_wg(&KEY_GW_TO_B, &msg).expect("B's key opens it");
    assert_eq!(receiver, B_INDEX);
    // Counter 0 may have been spent on a packet dropped while B's host was resolved by ARP.
    assert!(c <= 1, "one of the first packets on B's keypair: {c}");
    let want = inner(b"through the gateway");
    assert_eq!(&pt[..want.len()], &want[..]);
    assert!(pt[want.len()..].iter().all(|&x| x == 0), "zero padding");
    assert_eq!(pt.len() % 16, 0);
    assert!(open_wg(&KEY_GW_TO_A, &msg).is_none(), "not A's key");

    // A second packet is not lost to ARP and carries the next counter.
    let msg = a_to_b(&a, &b, &mut counter, &inner(b"again"));
    let (_, c2, _) = open_wg(&KEY_GW_TO_B, &msg).unwrap();
    assert_eq!(c2, c + 1);
    assert!(lab.stop().success(), "SIGTERM exits 0:\n{}", lab.log_text());
    assert!(lab.log_text().contains("stopped"));
}

#[test]
fn handshake_initiation_is_punted_and_stats_report_the_traffic() {
    let mut lab = Lab::new();
    write_segment(&lab.segment());
    let sidecar = UnixDatagram::bind(lab.sidecar()).unwrap();
    sidecar
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    lab.start(&[]);
    lab.wait_log("attached to table segment", Duration::from_secs(5));
    let a = lab.udp(A_HOST, A_PORT);
    let mut init = vec![1u8, 0, 0, 0];
    init.resize(148, 0x5a);
    a.send_to(&init, (UNDERLAY, WG_PORT)).unwrap();

    // (c) the PUNT datagram: header per the interface notes + the outer IP packet.
    let mut buf = [0u8; 4096];
    let n = sidecar.recv(&mut buf).expect("PUNT within 3 s");
    let d = &buf[..n];
    assert_eq!(&d[0..4], b"CVPT");
    assert_eq!(d[4], 1, "version");
    assert_eq!(d[5], 1, "kind PUNT");
    assert_eq!(u16::from_le_bytes([d[6], d[7]]), 0, "ingress port");
    assert_eq!(u16::from_le_bytes([d[8], d[9]]), 3, "reason handshake_init");
    assert_eq!(u16::from_le_bytes([d[10], d[11]]), 0, "worker");
    assert_eq!(&d[12..16], &[0; 4], "reserved");
    let ip = &d[16..];
    assert_eq!(ip.len(), 20 + 8 + 148, "exactly the IP packet, no Ethernet");
    assert_eq!(ip[0], 0x45);
    assert_eq!(&ip[12..16], &A_HOST.octets());
    assert_eq!(&ip[16..20], &UNDERLAY.octets());
    assert_eq!(u16::from_be_bytes([ip[22], ip[23]]), WG_PORT);
    assert_eq!(&ip[28..], &init[..]);

    // (e) counters reflect it; a couple of forwarded packets too.
    let b = lab.udp(B_HOST, B_PORT);
    let mut counter = 0;
    a_to_b(&a, &b, &mut counter, &inner(b"counted"));
    let s = lab.stats();
    let port = &s["ports"][0];
    assert_eq!(port["iface"], lab.gw_if.as_str());
    assert!(port["rx_packets"].as_u64().unwrap() >= 2, "{s}");
    assert!(port["tx_packets"].as_u64().unwrap() >= 1, "{s}");
    assert!(port["rx_bytes"].as_u64().unwrap() > 148, "{s}");
    let w = &s["workers"][0];
    assert_eq!(w["worker"], 0);
    assert!(w["packets"].as_u64().unwrap() >= 2, "{s}");
    assert!(w["next"]["punt"].as_u64().unwrap() >= 1, "{s}");
    assert!(w["next"]["underlay"].as_u64().unwrap() >= 1, "{s}");
    assert!(w["reasons"]["handshake_init"].as_u64().unwrap() >= 1, "{s}");
    assert!(w["generation"].as_u64().unwrap() >= 1, "{s}");
    assert!(w["peers"]["0"]["rx_packets"].as_u64().unwrap() >= 1, "{s}");
    assert!(w["peers"]["1"]["tx_packets"].as_u64().unwrap() >= 1, "{s}");
    assert!(
        w["tenants"]["0"]["rx_packets"].as_u64().unwrap() >= 1,
        "{s}"
    );
    assert!(s["punt"]["sent"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["punt"]["dropped"], 0, "{s}");
    assert!(s["arp"]["entries"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(s["segment"]["attached"], true);
    assert!(s["segment"]["error"].is_null());

    // With the sidecar gone, punts are dropped and counted; forwarding goes on.
    drop(sidecar);
    let _ = std::fs::remove_file(lab.sidecar());
    a.send_to(&init, (UNDERLAY, WG_PORT)).unwrap();
    a_to_b(&a, &b, &mut counter, &inner(b"still forwarding"));
    let s = lab.stats();
    assert!(s["punt"]["dropped"].as_u64().unwrap() >= 1, "{s}");
}

#[test]
fn tx_datagram_from_the_sidecar_is_routed_onto_the_wire() {
    let mut lab = Lab::new();
    write_segment(&lab.segment());
    // The metrics listener lives in the gateway namespace: no clash between parallel tests.
    lab.start(&["--metrics-listen", "127.0.0.1:9436"]);
    let a = lab.udp(A_HOST, A_PORT);
    let me = UnixDatagram::unbound().unwrap();
    let pkt = ipv4_udp(UNDERLAY, A_HOST, WG_PORT, A_PORT, b"from vrouterd");
    let mut d = header(2, 0xffff, 0);
    d.extend_from_slice(&pkt);
    // The first may be dropped while the gateway resolves A's host by ARP.
    let t0 = Instant::now();
    let mut buf = [0u8; 2048];
    let got = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "TX never reached the wire:\n{}",
            lab.log_text()
        );
        me.send_to(&d, lab.sock()).unwrap();
        if let Ok((n, from)) = a.recv_from(&mut buf) {
            break (buf[..n].to_vec(), from);
        }
    };
    assert_eq!(got.0, b"from vrouterd");
    assert_eq!(got.1, std::net::SocketAddr::from((UNDERLAY, WG_PORT)));
    // Garbage on the socket is counted, not fatal.
    me.send_to(b"BAD!magic: not a punt header", lab.sock())
        .unwrap();
    let s = lab.stats();
    assert!(s["punt"]["tx_injected"].as_u64().unwrap() >= 1, "{s}");
    let host = &s["workers"][0]["host"];
    assert!(host["ctl_bad"].as_u64().unwrap() >= 1, "{s}");
    assert!(host["arp_requests"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["arp"]["misses"].as_u64().unwrap() >= 1, "{s}");

    let metrics = in_ns(&lab.gw, || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect("127.0.0.1:9436").unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        body
    });
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    let value = |line: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("no {line} in\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let port = format!(
        "vrouter_dpdk_port_tx_packets_total{{port=\"0\",iface=\"{}\"}}",
        lab.gw_if
    );
    assert!(value(&port) >= 1);
    assert!(value("vrouter_dpdk_host_total{worker=\"0\",counter=\"tx_injected\"}") >= 1);
    assert_eq!(value("vrouter_dpdk_segment_attached"), 1);
    assert!(metrics.contains("vrouter_dpdk_worker_reason_total{worker=\"0\",reason=\"replay\"}"));
    assert!(lab.stop().success());
}

#[test]
fn two_workers_share_the_port_and_both_publish_counters() {
    let mut lab = Lab::new();
    write_segment(&lab.segment());
    lab.start(&["--workers", "2", "--eal-args", "--log-level=lib.eal:notice"]);
    lab.wait_log("attached to table segment", Duration::from_secs(5));
    lab.wait_log("\"--log-level=lib.eal:notice\"]", Duration::from_secs(1));
    let a = lab.udp(A_HOST, A_PORT);
    let b = lab.udp(B_HOST, B_PORT);
    let msg = a_to_b(&a, &b, &mut 0, &inner(b"two workers"));
    assert!(open_wg(&KEY_GW_TO_B, &msg).is_some());
    let t0 = Instant::now();
    loop {
        let s = lab.stats();
        let w = s["workers"].as_array().unwrap();
        assert_eq!(w.len(), 2, "{s}");
        let fwd: u64 = w
            .iter()
            .map(|w| w["next"]["underlay"].as_u64().unwrap())
            .sum();
        if fwd >= 1 {
            break;
        }
        // Worker 1 publishes on its own every 50 ms.
        assert!(t0.elapsed() < Duration::from_secs(2), "{s}");
        std::thread::sleep(Duration::from_millis(60));
    }
    assert!(lab.stop().success());
}

#[test]
fn malformed_truncated_wrong_key_and_replayed_packets_are_dropped_by_reason() {
    let mut lab = Lab::new();
    write_segment(&lab.segment());
    lab.start(&[]);
    lab.wait_log("attached to table segment", Duration::from_secs(5));
    let a = lab.udp(A_HOST, A_PORT);
    let b = lab.udp(B_HOST, B_PORT);
    let mut counter = 100;
    // A valid packet first (also teaches the gateway the MACs).
    a_to_b(&a, &b, &mut counter, &inner(b"valid"));
    let u = (UNDERLAY, WG_PORT);
    // Replayed: the same counter again.
    let replayed = wg_data(&KEY_A_TO_GW, RX_A, counter - 1, &inner(b"valid"));
    a.send_to(&replayed, u).unwrap();
    // Wrong key.
    a.send_to(&wg_data(&[0x77; 32], RX_A, 500, &inner(b"x")), u)
        .unwrap();
    // Decrypts, but the inner packet is not IP.
    a.send_to(&wg_data(&KEY_A_TO_GW, RX_A, 501, &[0u8; 16]), u)
        .unwrap();
    // Truncated at the IP layer: total length beyond the frame (raw frame).
    let raw = Raw::new(&lab);
    let mut f = GW_MAC.to_vec();
    f.extend_from_slice(&RM_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = ipv4_udp(A_HOST, UNDERLAY, A_PORT, WG_PORT, &[4, 0, 0, 0, 1, 2, 3]);
    ip[2..4].copy_from_slice(&400u16.to_be_bytes());
    f.extend_from_slice(&ip);
    raw.send(&f);
    // Nothing of that may reach B.
    let mut buf = [0u8; 2048];
    assert!(b.recv_from(&mut buf).is_err(), "a bad packet was forwarded");
    let t0 = Instant::now();
    let s = loop {
        let s = lab.stats();
        let r = &s["workers"][0]["reasons"];
        if r["replay"].as_u64() >= Some(1)
            && r["auth_failed"].as_u64() >= Some(1)
            && r["malformed"].as_u64() >= Some(1)
            && s["workers"][0]["host"]["malformed"].as_u64() >= Some(1)
        {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "{s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        s["workers"][0]["next"]["drop"].as_u64().unwrap() >= 3,
        "{s}"
    );
    assert!(
        s["workers"][0]["peers"]["0"]["drops"].as_u64().is_some(),
        "{s}"
    );
}

#[test]
fn corrupt_and_wrong_abi_segments_are_refused_until_a_valid_one_appears() {
    let mut lab = Lab::new();
    std::fs::write(lab.segment(), vec![0x42u8; 8192]).unwrap();
    lab.start(&[]);
    lab.wait_log("refusing table segment", Duration::from_secs(5));
    lab.wait_log("not a CloudVLAN table segment", Duration::from_secs(1));

    // A real segment with another ABI version number.
    let tmp = lab.dir.join("abi");
    write_segment(&tmp);
    let mut bytes = std::fs::read(&tmp).unwrap();
    let off = std::mem::offset_of!(cvlan_tables::layout::SegmentHeader, abi_version);
    let v = u32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap());
    bytes[off..off + 4].copy_from_slice(&(v + 1).to_ne_bytes());
    std::fs::write(lab.dir.join("abi.bad"), &bytes).unwrap();
    std::fs::rename(lab.dir.join("abi.bad"), lab.segment()).unwrap();
    lab.wait_log("ABI version mismatch", Duration::from_secs(8));
    assert!(lab.alive(), "refusing a segment must not stop the process");
    let s = lab.stats();
    assert_eq!(s["segment"]["attached"], false);
    assert!(
        s["segment"]["error"]
            .as_str()
            .unwrap()
            .contains("ABI version mismatch"),
        "{s}"
    );

    // Fixed: the workers attach and forward.
    write_segment(&lab.segment());
    lab.wait_log("attached to table segment", Duration::from_secs(5));
    let a = lab.udp(A_HOST, A_PORT);
    let b = lab.udp(B_HOST, B_PORT);
    let msg = a_to_b(&a, &b, &mut 0, &inner(b"after the fix"));
    assert!(open_wg(&KEY_GW_TO_B, &msg).is_some());
    assert!(lab.stop().success());
}

#[test]
fn more_workers_than_cpus_is_refused_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("cvd-workers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "--port",
            "iface=lo,addr=10.0.0.1/24",
            "--underlay",
            "10.255.0.1",
        ])
        .args(["--workers", "4096", "--socket"])
        .arg(dir.join("s.sock"))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--workers 4096 exceeds the") && err.contains("CPU"),
        "{err}"
    );
}

#[test]
fn a_peer_behind_a_static_route_on_the_second_port_is_reached() {
    let mut lab = Lab::new();
    let far = std::net::Ipv4Addr::new(192, 0, 2, 3);
    let ns2 = lab.add_second_port(far);
    write_segment_image(
        &lab.segment(),
        &tables_with_b(std::net::SocketAddr::from((far, B_PORT))),
    );
    lab.start(&["--route", "192.0.2.0/24,via=10.251.2.3"]);
    lab.wait_log("attached to table segment", Duration::from_secs(5));
    let a = lab.udp(A_HOST, A_PORT);
    let b = in_ns(&ns2, move || {
        std::net::UdpSocket::bind((far, B_PORT)).unwrap()
    });
    b.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let msg = a_to_b(&a, &b, &mut 0, &inner(b"via port 1"));
    let (receiver, _, pt) = open_wg(&KEY_GW_TO_B, &msg).expect("B's key opens it");
    assert_eq!(receiver, B_INDEX);
    assert!(pt.starts_with(&inner(b"via port 1")));
    let s = lab.stats();
    assert_eq!(
        s["ports"][1]["iface"],
        lab.second.as_ref().unwrap().0.as_str()
    );
    assert!(s["ports"][1]["tx_packets"].as_u64().unwrap() >= 1, "{s}");
    assert!(
        s["ports"][1]["rx_packets"].as_u64().unwrap() >= 1,
        "ARP reply: {s}"
    );
    assert!(lab.stop().success());
}

#[test]
fn a_replaced_segment_file_is_reattached_and_a_deleted_one_keeps_the_last_tables() {
    let mut lab = Lab::new();
    write_segment(&lab.segment());
    lab.start(&[]);
    lab.wait_log("attached to table segment", Duration::from_secs(5));
    let a = lab.udp(A_HOST, A_PORT);
    let b = lab.udp(B_HOST, B_PORT);
    let mut counter = 0;
    a_to_b(&a, &b, &mut counter, &inner(b"first tables"));

    // vrouterd gone and its segment file with it: the workers keep the mapping they hold.
    std::fs::remove_file(lab.segment()).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let msg = a_to_b(&a, &b, &mut counter, &inner(b"file deleted"));
    assert!(open_wg(&KEY_GW_TO_B, &msg).is_some());

    // A new file (new inode) where B moved to another port: re-attached within seconds.
    let moved = std::net::SocketAddr::from((B_HOST, B_PORT + 1));
    write_segment_image(&lab.segment(), &tables_with_b(moved));
    lab.wait_log("replaced=true", Duration::from_secs(5));
    let b2 = lab.udp(B_HOST, B_PORT + 1);
    let msg = a_to_b(&a, &b2, &mut counter, &inner(b"new tables"));
    assert!(open_wg(&KEY_GW_TO_B, &msg).is_some());
    assert!(lab.stop().success());
}

#[test]
fn ipv6_underlay_with_neighbour_discovery_forwards_a_to_b() {
    use std::net::SocketAddr;
    let mut lab = Lab::new();
    lab.v6 = true;
    write_segment_image(
        &lab.segment(),
        &tables_with(
            SocketAddr::from((A_HOST6, A_PORT)),
            SocketAddr::from((B_HOST6, B_PORT)),
        ),
    );
    lab.start(&[]);
    lab.wait_log("attached to table segment", Duration::from_secs(5));
    let a = lab.udp(A_HOST6, A_PORT);
    let b = lab.udp(B_HOST6, B_PORT);
    let gw = SocketAddr::from((UNDERLAY6, WG_PORT));
    // The remote kernel resolves fd00:251:1::1 by NDP (our NA), the gateway resolves B's
    // host by its own solicitation.
    let msg = a_to_b_via(&a, &b, gw, &mut 0, &inner(b"over ipv6"));
    let (receiver, _, pt) = open_wg(&KEY_GW_TO_B, &msg).expect("B's key opens it");
    assert_eq!(receiver, B_INDEX);
    assert!(pt.starts_with(&inner(b"over ipv6")));
    let s = lab.stats();
    let host = &s["workers"][0]["host"];
    assert!(host["arp_replies"].as_u64().unwrap() >= 1, "NA sent: {s}");
    assert!(host["arp_requests"].as_u64().unwrap() >= 1, "NS sent: {s}");
    assert!(s["arp"]["entries"].as_u64().unwrap() >= 2, "{s}");
    assert!(lab.stop().success());
}
