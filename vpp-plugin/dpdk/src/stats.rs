//! Counters the workers publish for the control side (STATS_REP, Prometheus). A worker keeps
//! its counters in plain private memory and copies them here itself, between bursts, every
//! few milliseconds (the fast path's counters may not be read while it runs); readers take a
//! consistent copy through a seqlock and never make the worker wait.

use std::sync::atomic::{AtomicU64, Ordering, fence};

use cvlan_fastpath::abi::{Counters, NEXT_COUNT, Stats};

/// Host-side counters of a worker (index = position in [`HOST_NAMES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Host {
    /// Frames received.
    RxFrames,
    /// IPv4 frames not addressed to the underlay or a port address (or another host's MAC).
    NotForUs,
    /// Frames too short for Ethernet, or IPv4 with an invalid header.
    Malformed,
    /// IPv6 frames on a port without an IPv6 address.
    Ipv6Unsupported,
    /// Other EtherTypes.
    OtherEthertype,
    /// Multi-segment mbufs (jumbo frames).
    MultiSegment,
    /// ARP messages (and IPv6 neighbour solicitations/advertisements) received.
    ArpRx,
    /// ARP replies (and neighbour advertisements) sent for our addresses.
    ArpReplies,
    /// ARP requests (and neighbour solicitations) sent for unknown next hops.
    ArpRequests,
    /// Underlay packets dropped because the next hop's MAC was unknown (ARP or NDP).
    ArpMiss,
    /// Underlay packets without an egress route.
    NoEgressRoute,
    /// Underlay packets with an IPv6 outer header and no connected IPv6 subnet for it.
    OuterV6,
    /// LOCAL verdicts (not used by a gateway): dropped.
    LocalDropped,
    /// Packets the fast path never saw because no segment is attached.
    NoSegment,
    /// Frames the port did not take on transmit.
    TxDropped,
    /// Punts sent to vrouterd.
    PuntSent,
    /// Punts dropped (vrouterd absent or its queue full).
    PuntDropped,
    /// TX datagrams from vrouterd transmitted.
    TxInjected,
    /// Datagrams on our socket with unknown magic, version or kind, or unusable payload.
    CtlBad,
    /// Stats requests answered.
    StatsRequests,
    /// mbuf allocation failures.
    AllocFailed,
    /// Punt verdicts vrouterd has no use for (not a handshake, cookie or keepalive: junk,
    /// unknown receivers, other protocols), dropped here instead of loading the slow path.
    PuntFiltered,
}

/// Names of the [`Host`] counters.
pub const HOST_NAMES: [&str; HOST_COUNT] = [
    "rx_frames",
    "not_for_us",
    "malformed",
    "ipv6_unsupported",
    "other_ethertype",
    "multi_segment",
    "arp_rx",
    "arp_replies",
    "arp_requests",
    "arp_miss",
    "no_egress_route",
    "outer_ipv6",
    "local_dropped",
    "no_segment",
    "tx_dropped",
    "punt_sent",
    "punt_dropped",
    "tx_injected",
    "ctl_bad",
    "stats_requests",
    "alloc_failed",
    "punt_filtered",
];
/// Number of host counters.
pub const HOST_COUNT: usize = 22;

/// Peer slots whose counters are published (the rest are still counted by the fast path).
pub const MAX_PEERS: usize = 4096;
/// Tenant slots whose counters are published.
pub const MAX_TENANTS: usize = 256;

const FP_WORDS: usize = 3 + NEXT_COUNT + 32; // batches, packets, generation, next, reason
const C_WORDS: usize = 5;

/// A consistent copy of one worker's counters.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Fast-path totals (zero until a segment is attached).
    pub fp: Stats,
    /// Host counters.
    pub host: [u64; HOST_COUNT],
    /// (slot, counters) of peers with any traffic.
    pub peers: Vec<(u32, Counters)>,
    /// (slot, counters) of tenants with any traffic.
    pub tenants: Vec<(u32, Counters)>,
}

/// One worker's published counters.
pub struct Published {
    seq: AtomicU64,
    fp: [AtomicU64; FP_WORDS],
    host: [AtomicU64; HOST_COUNT],
    n_peers: AtomicU64,
    n_tenants: AtomicU64,
    peers: Box<[AtomicU64]>,
    tenants: Box<[AtomicU64]>,
}

impl Default for Published {
    fn default() -> Self {
        Self {
            seq: AtomicU64::new(0),
            fp: std::array::from_fn(|_| AtomicU64::new(0)),
            host: std::array::from_fn(|_| AtomicU64::new(0)),
            n_peers: AtomicU64::new(0),
            n_tenants: AtomicU64::new(0),
            peers: (0..MAX_PEERS * C_WORDS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            tenants: (0..MAX_TENANTS * C_WORDS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

fn put_counters(dst: &[AtomicU64], c: &Counters) {
    let w = [c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes, c.drops];
    for (d, v) in dst.iter().zip(w) {
        d.store(v, Ordering::Relaxed);
    }
}

fn get_counters(src: &[AtomicU64]) -> Counters {
    let v = |i: usize| src[i].load(Ordering::Relaxed);
    Counters {
        rx_packets: v(0),
        rx_bytes: v(1),
        tx_packets: v(2),
        tx_bytes: v(3),
        drops: v(4),
    }
}

impl Published {
    /// Publishes the worker's counters. Called only by the owning worker thread.
    /// `peer`/`tenant` give the counters of a slot; `n_peers`/`n_tenants` are the table sizes.
    pub fn publish(
        &self,
        fp: &Stats,
        host: &[u64; HOST_COUNT],
        n_peers: usize,
        peer: impl Fn(u32) -> Counters,
        n_tenants: usize,
        tenant: impl Fn(u32) -> Counters,
    ) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        let words = [fp.batches, fp.packets, fp.generation];
        for (i, v) in words
            .into_iter()
            .chain(fp.next.iter().copied())
            .chain(fp.reason.iter().copied())
            .enumerate()
        {
            self.fp[i].store(v, Ordering::Relaxed);
        }
        for (d, v) in self.host.iter().zip(host) {
            d.store(*v, Ordering::Relaxed);
        }
        let np = n_peers.min(MAX_PEERS);
        for slot in 0..np {
            put_counters(&self.peers[slot * C_WORDS..][..C_WORDS], &peer(slot as u32));
        }
        self.n_peers.store(np as u64, Ordering::Relaxed);
        let nt = n_tenants.min(MAX_TENANTS);
        for slot in 0..nt {
            put_counters(
                &self.tenants[slot * C_WORDS..][..C_WORDS],
                &tenant(slot as u32),
            );
        }
        self.n_tenants.store(nt as u64, Ordering::Relaxed);
        self.seq.store(s + 2, Ordering::Release);
    }

    /// A consistent copy (retries while the worker is publishing).
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut snap = Snapshot::default();
            let v = |i: usize| self.fp[i].load(Ordering::Relaxed);
            snap.fp.batches = v(0);
            snap.fp.packets = v(1);
            snap.fp.generation = v(2);
            for (k, n) in snap.fp.next.iter_mut().enumerate() {
                *n = v(3 + k);
            }
            for (k, r) in snap.fp.reason.iter_mut().enumerate() {
                *r = v(3 + NEXT_COUNT + k);
            }
            for (d, s) in snap.host.iter_mut().zip(&self.host) {
                *d = s.load(Ordering::Relaxed);
            }
            let np = (self.n_peers.load(Ordering::Relaxed) as usize).min(MAX_PEERS);
            for slot in 0..np {
                let c = get_counters(&self.peers[slot * C_WORDS..][..C_WORDS]);
                if c != Counters::default() {
                    snap.peers.push((slot as u32, c));
                }
            }
            let nt = (self.n_tenants.load(Ordering::Relaxed) as usize).min(MAX_TENANTS);
            for slot in 0..nt {
                let c = get_counters(&self.tenants[slot * C_WORDS..][..C_WORDS]);
                if c != Counters::default() {
                    snap.tenants.push((slot as u32, c));
                }
            }
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return snap;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_copy_reads_back_with_only_active_slots() {
        let p = Published::default();
        let mut fp = Stats {
            batches: 3,
            packets: 70,
            generation: 7,
            ..Stats::default()
        };
        fp.next[1] = 60;
        fp.reason[3] = 10;
        let mut host = [0; HOST_COUNT];
        host[Host::PuntSent as usize] = 10;
        let c = Counters {
            rx_packets: 5,
            ..Counters::default()
        };
        p.publish(
            &fp,
            &host,
            3,
            |s| if s == 1 { c } else { Counters::default() },
            1,
            |_| c,
        );
        let s = p.snapshot();
        assert_eq!(s.fp, fp);
        assert_eq!(s.host, host);
        assert_eq!(s.peers, vec![(1, c)]);
        assert_eq!(s.tenants, vec![(0, c)]);
        assert_eq!(HOST_NAMES[Host::AllocFailed as usize], "alloc_failed");
    }

    #[test]
    fn readers_racing_the_publisher_see_whole_snapshots() {
        let p = std::sync::Arc::new(Published::default());
        let w = {
            let p = p.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    let fp = Stats {
                        batches: i,
                        packets: i * 2,
                        ..Stats::default()
                    };
                    p.publish(
                        &fp,
                        &[i; HOST_COUNT],
                        0,
                        |_| Counters::default(),
                        0,
                        |_| Counters::default(),
                    );
                }
            })
        };
        for _ in 0..20_000 {
            let s = p.snapshot();
            assert_eq!(s.fp.packets, s.fp.batches * 2);
            assert!(s.host.iter().all(|&h| h == s.host[0]));
        }
        w.join().expect("publisher");
    }
}
