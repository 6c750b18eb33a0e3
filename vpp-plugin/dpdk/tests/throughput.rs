//! Packets per second through vrouter-dpdk on af_packet over a veth (not a timed test: run
//! by hand, release build, and read the printed figures):
//!
//! ```text
//! cargo test --release -p vrouter-dpdk --test throughput -- --ignored --nocapture
//! ```
//!
//! Peer A's generator (sendmmsg, encrypting on the fly) and B's receiver run in the remote
//! namespace on the same small machine as the busy-polling worker, and af_packet costs a
//! kernel copy per frame each way: the figure is a floor for this lab setup, not the fast
//! path's rate (see cvlan-bench fastpath for that).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

const SECONDS: f64 = 3.0;
const BATCH: usize = 64;

fn counters(lab: &Lab) -> (u64, u64, u64) {
    let s = lab.stats();
    (
        s["ports"][0]["rx_packets"].as_u64().unwrap(),
        s["workers"][0]["next"]["underlay"].as_u64().unwrap(),
        s["ports"][0]["tx_packets"].as_u64().unwrap(),
    )
}

fn run(lab: &Lab, payload: usize, counter: &mut u64) {
    let a = lab.udp(A_HOST, A_PORT);
    let b = lab.udp(B_HOST, B_PORT);
    let inner_pkt = ipv4_udp(A_INNER, B_INNER, 1000, 2000, &vec![0x55; payload]);
    // Warm up: resolves B's MAC.
    a_to_b(&a, &b, counter, &inner_pkt);
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let rx = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if b.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let (rx0, fwd0, tx0) = counters(lab);
    let dst = std::net::SocketAddr::from((UNDERLAY, WG_PORT));
    let dst = match dst {
        std::net::SocketAddr::V4(v) => libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: v.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v.ip()).to_be(),
            },
            sin_zero: [0; 8],
        },
        std::net::SocketAddr::V6(_) => unreachable!(),
    };
    let t0 = Instant::now();
    let mut sent = 0u64;
    while t0.elapsed().as_secs_f64() < SECONDS {
        let msgs: Vec<Vec<u8>> = (0..BATCH)
            .map(|k| wg_data(&KEY_A_TO_GW, RX_A, *counter + k as u64, &inner_pkt))
            .collect();
        *counter += BATCH as u64;
        let mut iov: Vec<libc::iovec> = msgs
            .iter()
            .map(|m| libc::iovec {
                iov_base: m.as_ptr() as *mut _,
                iov_len: m.len(),
            })
            .collect();
        // SAFETY: all-zero mmsghdr is valid; fields set below.
        let mut hdrs: Vec<libc::mmsghdr> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (h, v) in hdrs.iter_mut().zip(iov.iter_mut()) {
            h.msg_hdr.msg_name = (&raw const dst).cast_mut().cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: headers point at live iovecs, buffers and address.
        let n = unsafe { libc::sendmmsg(a.as_raw_fd(), hdrs.as_mut_ptr(), BATCH as u32, 0) };
        sent += u64::try_from(n).unwrap_or(0);
    }
    let dt = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    rx.join().unwrap();
    let (rx1, fwd1, tx1) = counters(lab);
    let pps = |n: u64| n as f64 / dt;
    println!(
        "payload {payload:>5} B (outer frame {} B): offered {:>8.0} pps | gateway rx {:>8.0} pps, \
         forwarded {:>8.0} pps, tx {:>8.0} pps | received at B {:>8.0} pps ({:.1} Mb/s inner)",
        14 + 28 + 32 + inner_pkt.len().div_ceil(16) * 16,
        pps(sent),
        pps(rx1 - rx0),
        pps(fwd1 - fwd0),
        pps(tx1 - tx0),
        pps(received.load(Ordering::Relaxed)),
        pps(received.load(Ordering::Relaxed)) * inner_pkt.len() as f64 * 8.0 / 1e6,
    );
}

#[test]
#[ignore = "measurement: run by hand with --release --nocapture"]
fn af_packet_throughput_for_64_and_1400_byte_payloads() {
    let mut lab = Lab::new();
    write_segment(&lab.segment());
    lab.start(&["--idle-sleep-us", "0"]);
    lab.wait_log("attached to table segment", Duration::from_secs(5));
    let mut counter = 0;
    for payload in [64, 1400] {
        run(&lab, payload, &mut counter);
    }
    assert!(lab.stop().success());
}
