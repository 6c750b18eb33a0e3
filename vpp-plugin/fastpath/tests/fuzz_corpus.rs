//! Replays the committed cargo-fuzz corpus (`fuzz/corpus/<target>/`) through the same fuzz
//! bodies, plus every truncation and a spread of byte flips of each input — CI does not run
//! cargo fuzz itself. `CVLAN_WRITE_CORPUS=1 cargo test --test fuzz_corpus` regenerates the
//! seed inputs from real packets and a real table image.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use cvlan_fastpath::fuzzing;
use cvlan_tables::{
    AclRuleSpec, KeypairSpec, PeerSpec, Prefix, RouteTarget, TableBuilder, TenantSpec,
};

type Body = fn(&[u8]);

const TARGETS: [(&str, Body); 4] = [
    ("parse_outer", fuzzing::outer),
    ("parse_wg", fuzzing::wg),
    ("parse_inner", fuzzing::inner),
    ("table_generation", fuzzing::generation),
];

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn ipv4(proto: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 1];
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0, 10, 0, 0, 2, 10, 0, 1, 9]);
    p.extend_from_slice(payload);
    p
}

fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).octets());
    p.extend_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 9).octets());
    p.extend_from_slice(payload);
    p
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn wg_data(len: usize) -> Vec<u8> {
    let mut m = vec![4, 0, 0, 0, 0x11, 0, 0, 0x5a, 3, 0, 0, 0, 0, 0, 0, 0];
    m.resize(16 + len, 0xab);
    m
}

fn wg_msg(t: u8, len: usize) -> Vec<u8> {
    let mut m = vec![t, 0, 0, 0];
    m.resize(len, 0x42);
    m
}

fn table_image() -> Vec<u8> {
    let p4 = |a: [u8; 4], l| Prefix::new(IpAddr::V4(Ipv4Addr::from(a)), l);
    let p6 = |s: u16, l| Prefix::new(IpAddr::V6(Ipv6Addr::new(0xfd00, s, 0, 0, 0, 0, 0, 0)), l);
    let rule = |dst_len, port, permit| AclRuleSpec {
        v6: false,
        src: 0x0a00_0000,
        src_len: 8,
        dst: 0x0a00_0100,
        dst_len,
        proto: Some(6),
        sport: (0, u16::MAX),
        dport: (port, port),
        permit,
        established: false,
    };
    let kp = |r| KeypairSpec {
        receiver_index: r,
        remote_index: 9,
        send_key: [1; 32],
        recv_key: [2; 32],
        install_id: u64::from(r),
    };
    TableBuilder {
        tenants: vec![
            TenantSpec {
                id: 1,
                default_permit: false,
                local_iface: 2,
                routes: vec![
                    (p4([10, 0, 1, 0], 24), RouteTarget::Local),
                    (p6(1, 64), RouteTarget::Local),
                ],
                acl: vec![rule(24, 22, false), rule(32, 443, true), rule(16, 80, true)],
            },
            TenantSpec {
                id: 2,
                default_permit: true,
                ..Default::default()
            },
        ],
        peers: vec![
            PeerSpec {
                id: 1,
                tenant: 0,
                allowed_ips: vec![p4([10, 0, 0, 2], 32), p6(2, 48)],
                current: Some(kp(1)),
                previous: Some(kp(2)),
                ..Default::default()
            },
            PeerSpec {
                id: 2,
                tenant: 1,
                allowed_ips: vec![p4([10, 0, 0, 0], 8)],
                ..Default::default()
            },
        ],
        ..Default::default()
    }
    .build(4)
    .unwrap()
}

fn seeds(target: &str) -> Vec<(&'static str, Vec<u8>)> {
    match target {
        "parse_outer" => vec![
            (
                "ipv4_wg_data",
                ipv4(17, 0x4000, &udp(51820, 51820, &wg_data(48))),
            ),
            (
                "ipv6_wg_init",
                ipv6(17, &udp(51820, 51820, &wg_msg(1, 148))),
            ),
            ("ipv4_fragment", ipv4(17, 0x2000, &udp(1, 2, b"frag"))),
            ("ipv4_tcp", ipv4(6, 0, &[0; 20])),
        ],
        "parse_wg" => vec![
            ("data", wg_data(48)),
            ("init", wg_msg(1, 148)),
            ("response", wg_msg(2, 92)),
            ("cookie", wg_msg(3, 64)),
            ("keepalive", wg_data(16)),
            (
                "reserved_set",
                vec![4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
        ],
        "parse_inner" => vec![
            ("ipv4_udp", ipv4(17, 0, &udp(4000, 5000, b"payload"))),
            ("ipv4_tcp_later_fragment", ipv4(6, 0x0010, &[0; 24])),
            ("ipv6_udp", ipv6(17, &udp(53, 5353, b"q"))),
            ("ipv6_hop_by_hop", ipv6(0, &[17, 0, 0, 0, 0, 0, 0, 0])),
        ],
        "table_generation" => vec![("two_tenants", table_image())],
        _ => vec![],
    }
}

#[test]
fn the_committed_fuzz_corpus_replays_through_every_fuzz_body() {
    let write = std::env::var_os("CVLAN_WRITE_CORPUS").is_some();
    for (target, body) in TARGETS {
        let dir = corpus_dir(target);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            for (name, bytes) in seeds(target) {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            files += 1;
            body(&data);
            for cut in 0..data.len() {
                body(&data[..cut]);
            }
            let step = (data.len() / 512).max(1);
            let mut m = data.clone();
            for i in (0..m.len()).step_by(step) {
                for bit in [0x01u8, 0x80] {
                    m[i] ^= bit;
                    body(&m);
                    m[i] ^= bit;
                }
                m[i] = 0xff;
                body(&m);
                m[i] = data[i];
            }
        }
        assert!(files > 0, "no corpus for {target}");
    }
}

#[test]
fn seed_inputs_are_accepted_by_their_parsers() {
    use cvlan_fastpath::parse::{WgMessage, parse_inner, parse_outer, parse_wg};
    for (_, p) in seeds("parse_outer").iter().take(2) {
        assert!(parse_outer(p).is_ok());
    }
    assert!(matches!(
        parse_wg(&wg_data(48)),
        WgMessage::Data { ct_len: 48, .. }
    ));
    for (_, p) in seeds("parse_inner") {
        assert!(parse_inner(&p).is_ok());
    }
    let img = table_image();
    let v = cvlan_tables::GenView::parse(&img, 4).unwrap();
    assert_eq!(v.tenants.len(), 2);
}
