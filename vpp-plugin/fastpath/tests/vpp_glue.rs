//! Header-level test of the VPP plugin: `vpp-plugin/plugin/cvlan_glue.c` — the only part of
//! the plugin that does not need VPP — is compiled by build.rs against
//! `include/cvlan_fastpath.h` with `-Wall -Wextra -Werror`, linked with the fast path, and
//! driven end to end: WireGuard packets sealed with known keys go in as the decrypt node would
//! hand them over, tenant packets as the encrypt feature would, and the next indices, error
//! indices, tallies and the bytes that come out are checked. Also the punt header bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ptr;

use common::{endpoint, ipv4_udp, v4};
use cvlan_fastpath::abi::{NEXT_COUNT, REASON_COUNT};
use cvlan_fastpath::parse::parse_outer;
use cvlan_fastpath::{Buf, INGRESS_UNDERLAY, MAX_BATCH, Next, Reason, Verdict, Worker, ffi};
use cvlan_tables::layout::Underlay;
use cvlan_tables::{
    AclRuleSpec, KeypairSpec, PeerSpec, RouteTarget, Segment, SegmentParams, TableBuilder,
    TenantSpec,
};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

/// The glue's own errors after the fast path's reasons (cvlan_glue.h, foreach_cvlan_glue_error).
const OWN_ERRORS: [&str; 6] = [
    "not_attached",
    "chained_buffer",
    "gso",
    "bad_family",
    "out_of_bounds",
    "no_interface",
];
const N_ERROR: usize = REASON_COUNT + OWN_ERRORS.len();
const NOT_ATTACHED: u16 = REASON_COUNT as u16;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct GluePkt {
    data: *mut u8,
    len: u32,
    headroom: u32,
    tailroom: u32,
    ingress: u32,
}

#[repr(C)]
struct GlueNexts {
    drop: u16,
    punt: u16,
    underlay: [u16; 2],
    local: [u16; 2],
}

#[repr(C)]
#[derive(Debug)]
struct GlueTally {
    packets: u32,
    next: [u32; NEXT_COUNT],
    passed_with_reason: [u32; N_ERROR],
    dropped: [u32; N_ERROR],
}

#[repr(C)]
struct GlueScratch {
    bufs: [Buf; MAX_BATCH],
    verdicts: [Verdict; MAX_BATCH],
}

#[repr(C)]
struct PuntHdr {
    kind: u8,
    port: u16,
    reason: u16,
    worker: u16,
}

#[link(name = "cvlan_vpp_glue", kind = "static")]
unsafe extern "C" {
    fn cvlan_glue_process(
        w: *mut c_void, // cvlan_fp_worker *
        s: *mut GlueScratch,
        pkts: *mut GluePkt,
        n: u32,
        map: *const GlueNexts,
        nexts: *mut u16,
        errors: *mut u16,
        aux: *mut u32,
        verdict: *mut u8,
        tally: *mut GlueTally,
    ) -> u32;
    fn cvlan_glue_error_name(error: u32) -> *const c_char;
    fn cvlan_glue_error_desc(error: u32) -> *const c_char;
    fn cvlan_punt_hdr_write(out: *mut u8, h: *const PuntHdr);
    fn cvlan_punt_hdr_read(p: *const u8, len: usize, out: *mut PuntHdr) -> c_int;
}

/// Next indices as a VPP node would number them; all distinct so a swapped mapping shows.
const MAP: GlueNexts = GlueNexts {
    drop: 0,
    punt: 1,
    underlay: [2, 3],
    local: [4, 5],
};

const HEADROOM: usize = 128;
const BUFSZ: usize = 2048;

/// Packet memory owned like VPP owns its buffers: fixed-size, data at an offset.
struct Bufs {
    mem: Vec<u8>,
    pkts: Vec<GluePkt>,
}

impl Bufs {
    fn new(packets: &[(Vec<u8>, u32)]) -> Self {
        let mut mem = vec![0u8; packets.len() * BUFSZ];
        let mut pkts = Vec::new();
        for (i, (p, ingress)) in packets.iter().enumerate() {
            let b = &mut mem[i * BUFSZ..(i + 1) * BUFSZ];
            b[HEADROOM..HEADROOM + p.len()].copy_from_slice(p);
            pkts.push(GluePkt {
                data: ptr::null_mut(),
                len: p.len() as u32,
                headroom: HEADROOM as u32,
                tailroom: (BUFSZ - HEADROOM - p.len()) as u32,
                ingress: *ingress,
            });
        }
        let base = mem.as_mut_ptr();
        for (i, p) in pkts.iter_mut().enumerate() {
            // SAFETY: inside `mem` (i * BUFSZ + HEADROOM < mem.len()).
            p.data = unsafe { base.add(i * BUFSZ + HEADROOM) };
        }
        Self { mem, pkts }
    }

    /// The bytes descriptor `i` points at, checked to still lie inside its own buffer.
    fn bytes(&self, i: usize) -> Vec<u8> {
        let p = &self.pkts[i];
        let start = self.mem.as_ptr() as usize + i * BUFSZ;
        let off = p.data as usize - start;
        assert_eq!(off, p.headroom as usize, "packet {i}: headroom");
        assert_eq!(
            off + (p.len + p.tailroom) as usize,
            BUFSZ,
            "packet {i}: tailroom"
        );
        self.mem[i * BUFSZ + off..i * BUFSZ + off + p.len as usize].to_vec()
    }
}

struct Out {
    nexts: Vec<u16>,
    errors: Vec<u16>,
    aux: Vec<u32>,
    verdict: Vec<u8>,
    tally: Box<GlueTally>,
}

fn run(w: *mut Worker, bufs: &mut Bufs) -> Out {
    let n = bufs.pkts.len();
    // Boxed: 8 KiB of descriptors, as the plugin keeps one per thread.
    // SAFETY: all-zero is a valid GlueScratch (null pointers, zero integers).
    let mut scratch: Box<GlueScratch> = Box::new(unsafe { std::mem::zeroed() });
    let mut out = Out {
        nexts: vec![999; n],
        errors: vec![999; n],
        aux: vec![999; n],
        verdict: vec![99; n],
        // SAFETY: all-zero is a valid tally.
        tally: Box::new(unsafe { std::mem::zeroed() }),
    };
    // SAFETY: every array has n elements; buffer regions are inside `bufs.mem`.
    let done = unsafe {
        cvlan_glue_process(
            w.cast(),
            &mut *scratch,
            bufs.pkts.as_mut_ptr(),
            n as u32,
            &MAP,
            out.nexts.as_mut_ptr(),
            out.errors.as_mut_ptr(),
            out.aux.as_mut_ptr(),
            out.verdict.as_mut_ptr(),
            &mut *out.tally,
        )
    };
    assert_eq!(done as usize, n);
    out
}

fn name(e: u32) -> String {
    // SAFETY: the glue returns static NUL-terminated strings.
    unsafe { CStr::from_ptr(cvlan_glue_error_name(e)) }
        .to_str()
        .unwrap()
        .to_owned()
}

fn desc(e: u32) -> String {
    // SAFETY: as above.
    unsafe { CStr::from_ptr(cvlan_glue_error_desc(e)) }
        .to_str()
        .unwrap()
        .to_owned()
}

fn key(k: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, k).unwrap())
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// A WireGuard transport data message sealed with `k` (what a peer sends us).
fn wg_data(k: &[u8; 32], receiver: u32, counter: u64, inner: &[u8]) -> Vec<u8> {
    let mut pt = inner.to_vec();
    pt.resize(inner.len().div_ceil(16) * 16, 0);
    key(k)
        .seal_in_place_append_tag(nonce(counter), Aad::empty(), &mut pt)
        .unwrap();
    let mut m = vec![4, 0, 0, 0];
    m.extend_from_slice(&receiver.to_le_bytes());
    m.extend_from_slice(&counter.to_le_bytes());
    m.extend_from_slice(&pt);
    m
}

/// Opens a datagram the gateway sent: returns (outer is IPv6, receiver, counter, inner).
fn open_sent(wire: &[u8], k: &[u8; 32]) -> (bool, u32, u64, Vec<u8>) {
    let o = parse_outer(wire).unwrap();
    let m = &wire[o.payload_off..o.payload_off + o.payload_len];
    assert_eq!(m[0], 4, "transport data message");
    let receiver = u32::from_le_bytes(m[4..8].try_into().unwrap());
    let counter = u64::from_le_bytes(m[8..16].try_into().unwrap());
    let mut ct = m[16..].to_vec();
    let pt = key(k)
        .open_in_place(nonce(counter), Aad::empty(), &mut ct)
        .expect("the gateway's datagram opens with the peer's key")
        .to_vec();
    (o.v6, receiver, counter, pt)
}

fn keys(seed: u8) -> ([u8; 32], [u8; 32]) {
    ([seed; 32], [seed.wrapping_add(100); 32])
}

struct Lab {
    path: std::path::PathBuf,
    worker: *mut Worker,
    /// (gateway receives with, gateway sends with) per peer slot.
    a: ([u8; 32], [u8; 32]),
    b: ([u8; 32], [u8; 32]),
}

impl Drop for Lab {
    fn drop(&mut self) {
        // SAFETY: opened by cvlan_fp_worker_open, closed once.
        unsafe { ffi::cvlan_fp_worker_close(self.worker) };
        let _ = std::fs::remove_file(&self.path);
    }
}

const RX_A: u32 = 0x0001_0100;
const RX_B: u32 = 0x0001_0101;
const TX_A: u32 = 0xa0a0;
const TX_B: u32 = 0xb0b0;
const LOCAL_IFACE: u32 = 3;

/// One tenant; peer A (IPv4 endpoint, keys), peer B (IPv6 endpoint, keys), peer C (no
/// keypair); 10.9.0.0/16 is local; UDP to 10.0.0.3 port 9 is denied.
fn lab(tag: &str) -> Lab {
    let a = keys(1);
    let b = keys(2);
    let kp = |rx: u32, tx: u32, k: ([u8; 32], [u8; 32]), id: u64| KeypairSpec {
        receiver_index: rx,
        remote_index: tx,
        recv_key: k.0,
        send_key: k.1,
        install_id: id,
    };
    let tables = TableBuilder {
        underlay: Underlay {
            addr4: [192, 0, 2, 1],
            port: 51820,
            addr6: "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets(),
            ..Default::default()
        },
        tenants: vec![TenantSpec {
            id: 1,
            default_permit: true,
            local_iface: LOCAL_IFACE,
            routes: vec![(v4([10, 9, 0, 0], 16), RouteTarget::Local)],
            acl: vec![AclRuleSpec {
                v6: false,
                src: 0,
                src_len: 0,
                dst: u128::from(u32::from_be_bytes([10, 0, 0, 3])),
                dst_len: 32,
                proto: Some(17),
                sport: (0, 65535),
                dport: (9, 9),
                permit: false,
                established: false,
            }],
        }],
        peers: vec![
            PeerSpec {
                id: 1,
                tenant: 0,
                endpoint: Some(endpoint([203, 0, 113, 5], 40000)),
                allowed_ips: vec![v4([10, 0, 0, 2], 32)],
                current: Some(kp(RX_A, TX_A, a, 11)),
                ..Default::default()
            },
            PeerSpec {
                id: 2,
                tenant: 0,
                endpoint: Some(SocketAddr::new(
                    IpAddr::V6("2001:db8::5".parse().unwrap()),
                    40001,
                )),
                allowed_ips: vec![v4([10, 0, 0, 3], 32)],
                current: Some(kp(RX_B, TX_B, b, 12)),
                ..Default::default()
            },
            PeerSpec {
                id: 3,
                tenant: 0,
                endpoint: Some(endpoint([203, 0, 113, 7], 40002)),
                allowed_ips: vec![v4([10, 0, 0, 4], 32)],
                ..Default::default()
            },
        ],
    };
    let path =
        std::env::temp_dir().join(format!("cvlan-vpp-glue-{tag}-{}.seg", std::process::id()));
    let mut seg = Segment::create_file(
        &path,
        SegmentParams {
            keypair_capacity: 64,
            slot_size: 1 << 20,
            max_workers: 2,
        },
    )
    .unwrap();
    seg.publish(&tables.build(64).unwrap()).unwrap();
    let cpath = CString::new(path.to_str().unwrap()).unwrap();
    let mut worker = ptr::null_mut();
    // SAFETY: NUL-terminated path, writable out pointer.
    let rc = unsafe { ffi::cvlan_fp_worker_open(cpath.as_ptr(), 1, &mut worker) };
    assert_eq!(rc, ffi::OK);
    Lab { path, worker, a, b }
}

fn ip(a: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

/// An underlay datagram from peer A's endpoint to the gateway.
fn from_a(msg: &[u8]) -> Vec<u8> {
    ipv4_udp(ip([203, 0, 113, 5]), ip([192, 0, 2, 1]), 40000, 51820, msg)
}

#[test]
fn the_glue_maps_every_verdict_to_the_right_next_index_error_and_bytes() {
    let lab = lab("verdicts");
    let a_to_b = ipv4_udp(ip([10, 0, 0, 2]), ip([10, 0, 0, 3]), 1000, 2000, b"A to B");
    let a_to_lan = ipv4_udp(
        ip([10, 0, 0, 2]),
        ip([10, 9, 1, 1]),
        1000,
        2000,
        b"A to LAN",
    );
    let lan_to_a = ipv4_udp(
        ip([10, 9, 1, 1]),
        ip([10, 0, 0, 2]),
        3000,
        4000,
        b"LAN to A",
    );
    let mut tampered = from_a(&wg_data(&lab.a.0, RX_A, 2, &a_to_b));
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let mut init = vec![1u8, 0, 0, 0];
    init.resize(148, 0x5a);
    let input: Vec<(Vec<u8>, u32)> = vec![
        // 0: A → B, hub and spoke: decrypted, routed, re-sealed for B over IPv6.
        (
            from_a(&wg_data(&lab.a.0, RX_A, 0, &a_to_b)),
            INGRESS_UNDERLAY,
        ),
        // 1: A → the tenant's LAN: decrypted, delivered locally (IPv4).
        (
            from_a(&wg_data(&lab.a.0, RX_A, 1, &a_to_lan)),
            INGRESS_UNDERLAY,
        ),
        // 2: a tag that does not verify.
        (tampered, INGRESS_UNDERLAY),
        // 3: a handshake initiation: the sidecar's business.
        (from_a(&init), INGRESS_UNDERLAY),
        // 4: not even IP.
        (vec![0x45, 0, 0], INGRESS_UNDERLAY),
        // 5: the LAN → A, through the encrypt feature: sealed for A over IPv4.
        (lan_to_a.clone(), 0),
        // 6: the LAN → C, who has no session yet: punted so the sidecar starts one.
        (
            ipv4_udp(ip([10, 9, 1, 1]), ip([10, 0, 0, 4]), 1, 2, b"to C"),
            0,
        ),
        // 7: the LAN → B on a denied port.
        (
            ipv4_udp(ip([10, 9, 1, 1]), ip([10, 0, 0, 3]), 1, 9, b"denied"),
            0,
        ),
        // 8: an interface bound to a tenant slot the tables do not have.
        (lan_to_a, 7),
    ];
    let mut bufs = Bufs::new(&input);
    let out = run(lab.worker, &mut bufs);

    let got: Vec<(u16, String)> = out
        .nexts
        .iter()
        .zip(&out.errors)
        .map(|(n, e)| (*n, name(u32::from(*e))))
        .collect();
    let want: Vec<(u16, String)> = [
        (MAP.underlay[1], "none"),
        (MAP.local[0], "none"),
        (MAP.drop, "auth_failed"),
        (MAP.punt, "handshake_init"),
        (MAP.punt, "not_wireguard"),
        (MAP.underlay[0], "none"),
        (MAP.punt, "no_keypair"),
        (MAP.drop, "acl_deny"),
        (MAP.drop, "unknown_tenant"),
    ]
    .iter()
    .map(|(n, e)| (*n, (*e).to_owned()))
    .collect();
    assert_eq!(got, want);
    assert_eq!((out.aux[0], out.aux[1], out.aux[5]), (1, LOCAL_IFACE, 0));
    // The verdict tells UNDERLAY from LOCAL where both lead to ip4-lookup/ip6-lookup.
    let (d, u, l, p) = (
        Next::Drop as u8,
        Next::Underlay as u8,
        Next::Local as u8,
        Next::Punt as u8,
    );
    assert_eq!(out.verdict, vec![u, l, d, p, p, u, p, d, d]);

    // 0 leaves over IPv6 to B, sealed with B's keys, addressed to B's index.
    let (v6, receiver, counter, pt) = open_sent(&bufs.bytes(0), &lab.b.1);
    assert!(v6);
    assert_eq!((receiver, counter), (TX_B, 0));
    assert_eq!(&pt[..a_to_b.len()], &a_to_b[..]);
    assert!(pt[a_to_b.len()..].iter().all(|&b| b == 0), "zero padding");
    // 1 is the inner packet, in place.
    assert_eq!(bufs.bytes(1), a_to_lan);
    // 5 leaves over IPv4 to A.
    let (v6, receiver, _, pt) = open_sent(&bufs.bytes(5), &lab.a.1);
    assert!(!v6);
    assert_eq!(receiver, TX_A);
    assert!(pt.starts_with(&ipv4_udp(
        ip([10, 9, 1, 1]),
        ip([10, 0, 0, 2]),
        3000,
        4000,
        b"LAN to A"
    )));
    // A punted datagram is handed over untouched (outer header onward).
    assert_eq!(bufs.bytes(3), input[3].0);

    let t = &out.tally;
    assert_eq!(t.packets, 9);
    assert_eq!(t.next, [3, 2, 1, 3]); // drop, underlay, local, punt
    let r = |x: Reason| x as usize;
    assert_eq!(t.dropped[r(Reason::AuthFailed)], 1);
    assert_eq!(t.dropped[r(Reason::AclDeny)], 1);
    assert_eq!(t.dropped[r(Reason::UnknownTenant)], 1);
    assert_eq!(t.dropped.iter().sum::<u32>(), 3);
    assert_eq!(t.passed_with_reason[r(Reason::HandshakeInit)], 1);
    assert_eq!(t.passed_with_reason[r(Reason::NotWireguard)], 1);
    assert_eq!(t.passed_with_reason[r(Reason::NoKeypair)], 1);
    assert_eq!(t.passed_with_reason.iter().sum::<u32>(), 3);
    assert_eq!(t.passed_with_reason[r(Reason::None)], 0);

    // The same datagram again, in the next frame: a replay, dropped and counted as such.
    let mut again = Bufs::new(&input[..1]);
    let out = run(lab.worker, &mut again);
    assert_eq!(out.nexts, vec![MAP.drop]);
    assert_eq!(name(u32::from(out.errors[0])), "replay");
    assert_eq!(out.tally.dropped[r(Reason::Replay)], 1);
}

#[test]
fn more_than_one_batch_is_split_into_fast_path_calls_of_at_most_256() {
    let lab = lab("split");
    let n = MAX_BATCH + 44;
    let input: Vec<(Vec<u8>, u32)> = (0..n)
        .map(|i| {
            let body = format!("packet {i}");
            let p = ipv4_udp(ip([10, 9, 1, 1]), ip([10, 0, 0, 2]), 5, 6, body.as_bytes());
            (p, 0)
        })
        .collect();
    let mut bufs = Bufs::new(&input);
    let out = run(lab.worker, &mut bufs);
    assert!(out.nexts.iter().all(|&x| x == MAP.underlay[0]));
    assert_eq!(out.tally.packets as usize, n);
    assert_eq!(out.tally.next[Next::Underlay as usize] as usize, n);
    // Every packet got its own counter and opens to its own payload.
    let mut counters: Vec<u64> = (0..n)
        .map(|i| {
            let (_, _, c, pt) = open_sent(&bufs.bytes(i), &lab.a.1);
            assert!(pt.starts_with(&input[i].0));
            c
        })
        .collect();
    counters.sort_unstable();
    counters.dedup();
    assert_eq!(counters.len(), n);
    let mut stats = cvlan_fastpath::Stats::default();
    // SAFETY: live worker, not processing.
    assert_eq!(
        unsafe { ffi::cvlan_fp_worker_stats(lab.worker, &mut stats) },
        ffi::OK
    );
    assert_eq!(stats.batches, 2, "one fast-path call per 256 packets");
}

#[test]
fn without_a_segment_every_packet_is_dropped_as_not_attached() {
    let input = vec![(vec![0x45u8; 40], INGRESS_UNDERLAY), (vec![0x60u8; 40], 0)];
    let mut bufs = Bufs::new(&input);
    let out = run(ptr::null_mut(), &mut bufs);
    assert_eq!(out.nexts, vec![MAP.drop; 2]);
    assert_eq!(out.errors, vec![NOT_ATTACHED; 2]);
    assert_eq!(out.verdict, vec![Next::Drop as u8; 2]);
    assert_eq!(out.tally.dropped[usize::from(NOT_ATTACHED)], 2);
    assert_eq!(out.tally.next[Next::Drop as usize], 2);
}

#[test]
fn error_indices_are_the_reasons_then_the_plugins_own() {
    for (i, r) in Reason::ALL.iter().enumerate() {
        assert_eq!(name(i as u32), r.name());
        assert_eq!(desc(i as u32), r.name());
    }
    for (k, own) in OWN_ERRORS.iter().enumerate() {
        assert_eq!(name((REASON_COUNT + k) as u32), *own);
        assert!(!desc((REASON_COUNT + k) as u32).is_empty());
    }
    // N_ERROR here is the C enum's CVLAN_GLUE_N_ERROR: one past the last name.
    assert_eq!(name(N_ERROR as u32), "?");
    assert_eq!(desc(N_ERROR as u32), "?");
}

#[test]
fn the_punt_header_is_the_one_vrouterd_speaks() {
    let mut out = [0xffu8; 16];
    let h = PuntHdr {
        kind: 1,
        port: 0x0102,
        reason: Reason::HandshakeInit as u16,
        worker: 0x0304,
    };
    // SAFETY: 16 writable bytes.
    unsafe { cvlan_punt_hdr_write(out.as_mut_ptr(), &h) };
    let mut want = b"CVPT".to_vec();
    want.extend_from_slice(&[1, 1, 0x02, 0x01, 3, 0, 0x04, 0x03, 0, 0, 0, 0]);
    assert_eq!(out.to_vec(), want);

    let mut back = PuntHdr {
        kind: 0,
        port: 0,
        reason: 0,
        worker: 0,
    };
    let mut dgram = out.to_vec();
    dgram.extend_from_slice(b"payload");
    // SAFETY: valid slices, writable out.
    let read = |d: &[u8], o: &mut PuntHdr| unsafe { cvlan_punt_hdr_read(d.as_ptr(), d.len(), o) };
    assert_eq!(read(&dgram, &mut back), 16);
    assert_eq!(
        (back.kind, back.port, back.reason, back.worker),
        (1, 0x0102, 3, 0x0304)
    );
    assert_eq!(read(&dgram[..15], &mut back), -1);
    let mut bad = dgram.clone();
    bad[0] = b'X';
    assert_eq!(read(&bad, &mut back), -2);
    let mut bad = dgram.clone();
    bad[4] = 2;
    assert_eq!(read(&bad, &mut back), -3);
    let mut bad = dgram;
    bad[5] = 9;
    assert_eq!(read(&bad, &mut back), -4);
}
