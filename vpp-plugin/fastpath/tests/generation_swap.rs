//! Workers process packets while the writer publishes new generations as fast as it can:
//! every packet of a batch must have been routed by one and the same generation — the one
//! the worker reports for that batch.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cvlan_fastpath::{Buf, Next, Verdict, Worker};
use cvlan_tables::{
    Prefix, RouteTarget, Segment, SegmentError, SegmentParams, TableBuilder, TenantSpec,
};

const ROUTES: u32 = 64;

/// Generation `g`: 64 local routes whose interface is `g`, so a verdict's `aux` tells which
/// generation's route entry produced it.
fn image(g: u64) -> Vec<u8> {
    let routes = (0..ROUTES)
        .map(|i| {
            let p = Prefix::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i << 8))), 24);
            (p, RouteTarget::Local)
        })
        .collect();
    TableBuilder {
        tenants: vec![TenantSpec {
            id: 1,
            default_permit: true,
            local_iface: g as u32,
            routes,
            acl: vec![],
        }],
        ..Default::default()
    }
    .build(16)
    .unwrap()
}

fn packet(dst: u32) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 9, 9, 9];
    p.extend_from_slice(&dst.to_be_bytes());
    p.extend_from_slice(&[0x0f, 0xa0, 0x13, 0x88, 0, 8, 0, 0]);
    p
}

#[test]
fn every_packet_of_a_batch_sees_one_consistent_generation_while_swaps_hammer() {
    let params = SegmentParams {
        keypair_capacity: 16,
        slot_size: 1 << 16,
        max_workers: 3,
    };
    let mut seg = Segment::create_memfd("swap", params).unwrap();
    seg.publish(&image(1)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for id in 0..2u32 {
        let file = seg.file().try_clone().unwrap();
        let stop = stop.clone();
        workers.push(std::thread::spawn(move || {
            let mut w = Worker::new(Segment::from_file(file).unwrap(), id).unwrap();
            let packets: Vec<Vec<u8>> = (0..256u32)
                .map(|i| packet(0x0a00_0000 + ((i % ROUTES) << 8) + 7))
                .collect();
            let (mut batches, mut last, mut distinct) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let mut mem: Vec<Vec<u8>> = packets.clone();
                let mut bufs: Vec<Buf> = mem
                    .iter_mut()
                    .map(|m| Buf {
                        data: m.as_mut_ptr(),
                        len: m.len() as u32,
                        headroom: 0,
                        tailroom: 0,
                        ingress: 0,
                    })
                    .collect();
                let mut v = vec![
                    Verdict {
                        next: 9,
                        reason: 9,
                        aux: 0
                    };
                    bufs.len()
                ];
                // SAFETY: each descriptor covers its own Vec, alive for the call.
                unsafe { w.process(&mut bufs, &mut v) };
                let g = w.stats().generation;
                for verdict in &v {
                    assert_eq!(verdict.next, Next::Local as u16);
                    assert_eq!(
                        u64::from(verdict.aux),
                        g,
                        "packet routed by another generation"
                    );
                }
                assert!(g >= last);
                if g != last {
                    distinct += 1;
                }
                last = g;
                batches += 1;
            }
            (batches, distinct)
        }));
    }
    let mut published = 1u64;
    while published < 2000 {
        match seg.publish(&image(published + 1)) {
            Ok(g) => {
                assert_eq!(g, published + 1);
                published = g;
            }
            Err(SegmentError::Busy) => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in workers {
        let (batches, _distinct) = h.join().unwrap();
        assert!(batches > 0);
    }
}
