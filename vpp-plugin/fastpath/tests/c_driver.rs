//! Drives the C ABI from C: `tests/c/driver.c`, compiled by build.rs against
//! `include/cvlan_fastpath.h`, opens a worker on a segment file, processes a batch and reads
//! counters. Also proves the hand-written header matches the Rust definitions.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

mod common;

use std::ffi::{CString, c_char, c_int};
use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use common::*;
use cvlan_fastpath::abi::{NEXT_COUNT, REASON_COUNT};
use cvlan_fastpath::ffi;
use cvlan_fastpath::parse::parse_outer;
use cvlan_fastpath::{Buf, Counters, INGRESS_UNDERLAY, MAX_BATCH, Next, Reason, Stats, Verdict};
use cvlan_tables::layout::Underlay;
use cvlan_tables::{
    KeypairSpec, PeerSpec, RouteTarget, Segment, SegmentParams, TableBuilder, TenantSpec,
};

#[repr(C)]
struct CInput {
    pkt: *const u8,
    len: u32,
    ingress: u32,
}

#[repr(C)]
struct COutput {
    data: [u8; 2048],
    len: u32,
    next: u16,
    reason: u16,
    aux: u32,
}

#[link(name = "cvlan_c_driver", kind = "static")]
unsafe extern "C" {
    fn cvlan_c_layout(out: *mut i64, cap: usize) -> usize;
    fn cvlan_c_reason_name_mismatches() -> c_int;
    fn cvlan_c_driver_run(
        path: *const c_char,
        worker_id: u32,
        input: *const CInput,
        n: u32,
        out: *mut COutput,
        peer0: *mut Counters,
        stats: *mut Stats,
    ) -> c_int;
}

#[test]
fn the_c_header_matches_the_rust_layout_and_constants() {
    let expected: Vec<i64> = vec![
        size_of::<Buf>() as i64,
        offset_of!(Buf, data) as i64,
        offset_of!(Buf, len) as i64,
        offset_of!(Buf, headroom) as i64,
        offset_of!(Buf, tailroom) as i64,
        offset_of!(Buf, ingress) as i64,
        size_of::<Verdict>() as i64,
        offset_of!(Verdict, next) as i64,
        offset_of!(Verdict, reason) as i64,
        offset_of!(Verdict, aux) as i64,
        size_of::<Counters>() as i64,
        offset_of!(Counters, rx_packets) as i64,
        offset_of!(Counters, rx_bytes) as i64,
        offset_of!(Counters, tx_packets) as i64,
        offset_of!(Counters, tx_bytes) as i64,
        offset_of!(Counters, drops) as i64,
        size_of::<Stats>() as i64,
        offset_of!(Stats, batches) as i64,
        offset_of!(Stats, packets) as i64,
        offset_of!(Stats, next) as i64,
        offset_of!(Stats, reason) as i64,
        offset_of!(Stats, generation) as i64,
        offset_of!(Stats, node_ticks) as i64,
        i64::from(ffi::ABI_VERSION),
        i64::from(INGRESS_UNDERLAY),
        MAX_BATCH as i64,
        Next::Drop as i64,
        Next::Underlay as i64,
        Next::Local as i64,
        Next::Punt as i64,
        NEXT_COUNT as i64,
        i64::from(ffi::OK),
        i64::from(ffi::ERR_INVAL),
        i64::from(ffi::ERR_SEGMENT),
        i64::from(ffi::ERR_WORKER),
        i64::from(ffi::ERR_PANIC),
        REASON_COUNT as i64,
    ];
    let mut got = vec![0i64; 64];
    // SAFETY: the buffer has room for `cap` entries.
    let n = unsafe { cvlan_c_layout(got.as_mut_ptr(), got.len()) };
    got.truncate(n);
    assert_eq!(got, expected);
    // Every reason value and name in the header's X-macro agrees with the library.
    // SAFETY: no arguments.
    assert_eq!(unsafe { cvlan_c_reason_name_mismatches() }, 0);
    for (i, r) in Reason::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i);
    }
    let header = include_str!("../include/cvlan_fastpath.h");
    for r in Reason::ALL {
        let line = format!(
            "{}, {}, \"{}\")",
            r.name().to_uppercase(),
            r as u16,
            r.name()
        );
        assert!(header.contains(&line), "header lacks {line}");
    }
}

#[test]
fn a_c_program_drives_a_batch_end_to_end_through_the_abi() {
    let gw = StaticSecret::from(random32());
    let gw_pub = PublicKey::from(&gw);
    let k1 = StaticSecret::from(random32());
    let p1 = PublicKey::from(&k1);
    let mut b1 = Tunn::new(k1, gw_pub, None, None, 1, None);
    let s = handshake(&gw, &p1, 0x77_0003, &mut b1);

    let tables = TableBuilder {
        underlay: Underlay {
            addr4: [192, 0, 2, 1],
            port: 51820,
            ..Default::default()
        },
        tenants: vec![TenantSpec {
            id: 1,
            default_permit: true,
            local_iface: 3,
            routes: vec![(v4([10, 9, 0, 0], 16), RouteTarget::Local)],
            acl: vec![],
        }],
        peers: vec![PeerSpec {
            id: 1,
            tenant: 0,
            endpoint: Some(endpoint([203, 0, 113, 5], 40000)),
            allowed_ips: vec![v4([10, 0, 0, 2], 32)],
            current: Some(KeypairSpec {
                receiver_index: s.local_index,
                remote_index: s.remote_index,
                send_key: s.send_key,
                recv_key: s.recv_key,
                install_id: 9,
            }),
            ..Default::default()
        }],
    };
    let dir = std::env::temp_dir();
    let path = dir.join(format!("cvlan-c-driver-{}.seg", std::process::id()));
    let params = SegmentParams {
        keypair_capacity: 64,
        slot_size: 1 << 20,
        max_workers: 2,
    };
    let mut seg = Segment::create_file(&path, params).unwrap();
    seg.publish(&tables.build(64).unwrap()).unwrap();

    let ip = |a: [u8; 4]| Ipv4Addr::from(a);
    let to_peer = ipv4_udp(
        ip([10, 9, 1, 1]),
        ip([10, 0, 0, 2]),
        1000,
        2000,
        b"from C to boringtun",
    );
    let mut hs = vec![0u8; 256];
    let init = match b1.format_handshake_initiation(&mut hs, true) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("{}", result_name(&other)),
    };
    let inputs_owned: Vec<(Vec<u8>, u32)> = vec![
        (to_peer.clone(), 0),
        (
            ipv4_udp(
                ip([203, 0, 113, 5]),
                ip([192, 0, 2, 1]),
                40000,
                51820,
                &init,
            ),
            INGRESS_UNDERLAY,
        ),
        (vec![0x45, 0, 0], INGRESS_UNDERLAY),
        (
            ipv4_udp(ip([10, 9, 1, 1]), ip([10, 77, 0, 1]), 1, 2, b"no route"),
            0,
        ),
        (to_peer.clone(), 5),
    ];
    let inputs: Vec<CInput> = inputs_owned
        .iter()
        .map(|(p, ing)| CInput {
            pkt: p.as_ptr(),
            len: p.len() as u32,
            ingress: *ing,
        })
        .collect();
    let mut outs: Vec<COutput> = (0..inputs.len())
        .map(|_| COutput {
            data: [0; 2048],
            len: 0,
            next: 99,
            reason: 99,
            aux: 0,
        })
        .collect();
    let mut peer0 = Counters::default();
    let mut stats = Stats::default();
    let cpath = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: all pointers are valid for the lengths given.
    let rc = unsafe {
        cvlan_c_driver_run(
            cpath.as_ptr(),
            1,
            inputs.as_ptr(),
            inputs.len() as u32,
            outs.as_mut_ptr(),
            &mut peer0,
            &mut stats,
        )
    };
    let _ = std::fs::remove_file(&path);
    assert_eq!(rc, 0, "C driver check {rc} failed");

    let verdicts: Vec<(u16, u16)> = outs.iter().map(|o| (o.next, o.reason)).collect();
    assert_eq!(
        verdicts,
        vec![
            (Next::Underlay as u16, Reason::None as u16),
            (Next::Punt as u16, Reason::HandshakeInit as u16),
            (Next::Punt as u16, Reason::NotWireguard as u16),
            (Next::Drop as u16, Reason::NoRoute as u16),
            (Next::Drop as u16, Reason::UnknownTenant as u16),
        ]
    );
    // The C-processed datagram decapsulates in boringtun.
    let o = &outs[0];
    let wire = &o.data[..o.len as usize];
    let outer = parse_outer(wire).unwrap();
    assert_eq!((outer.dport, outer.sport), (40000, 51820));
    let mut dst = vec![0u8; 4096];
    match b1.decapsulate(
        Some(IpAddr::V4(ip([192, 0, 2, 1]))),
        &wire[outer.payload_off..],
        &mut dst,
    ) {
        TunnResult::WriteToTunnelV4(p, src) => {
            assert_eq!((p.to_vec(), src), (to_peer, ip([10, 9, 1, 1])));
        }
        other => panic!("boringtun: {}", result_name(&other)),
    }
    assert_eq!(peer0.tx_packets, 1);
    assert_eq!((stats.packets, stats.batches), (5, 1));
    assert_eq!(stats.next, [2, 1, 0, 2]);
    assert_eq!(stats.reason[Reason::NoRoute as usize], 1);
    assert_eq!(stats.generation, 1);
}
