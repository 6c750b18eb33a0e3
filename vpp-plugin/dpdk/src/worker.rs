//! The run-to-completion worker loop, one per lcore: rx burst per port → Ethernet/ARP/NDP →
//! one fast-path call per burst → per verdict: Ethernet + tx batch per port, punt batch to
//! vrouterd (one `sendmmsg` per burst), or free. Worker 0 also polls the control socket
//! (bounded per iteration) for TX datagrams and stats requests.
//!
//! Per packet: no allocation, no lock, no syscall. Syscalls happen per burst (af_packet's tx
//! kick, the punt batch) or per loop iteration (one non-blocking `recvfrom` on worker 0).

use std::ffi::c_void;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cvlan_fastpath::{Buf, INGRESS_UNDERLAY, MAX_BATCH, Next, Reason, Verdict};
use cvlan_tables::Segment;

use crate::dpdk::{self, rte_mbuf};
use crate::eal::Pool;
use crate::neigh::{Neighbours, v4};
use crate::net::{
    ARP_FRAME_LEN, ARP_REPLY, ARP_REQUEST, Arp, BROADCAST, ETH_LEN, ETH_P_ARP, ETH_P_IPV4,
    ETH_P_IPV6, Ipv6Info, NDP_FRAME_LEN, NDP_NA, NDP_NS, Ndp, PortAddr, PortAddr6, Routes, dst_mac,
    ethertype, ipv4_info, ipv6_info, parse_arp, parse_ndp, solicited_node, src_mac, write_arp,
    write_eth, write_ndp,
};
use crate::punt::{HEADER_LEN, Header, Kind, PORT_ROUTE};
use crate::stats::{HOST_COUNT, Host, MAX_PEERS, MAX_TENANTS, Published};

/// Set by SIGTERM/SIGINT.
pub static STOP: AtomicBool = AtomicBool::new(false);

const BURST: usize = MAX_BATCH;
/// Frames queued per port before a tx burst is forced.
const TXQ: usize = 2 * BURST;
/// Control datagrams handled per loop iteration.
const CTL_PER_ITER: usize = 32;
/// ARP request rate-limit slots (per worker).
const ARP_RL: usize = 64;
/// Idle polls before sleeping (when --idle-sleep-us is set).
const IDLE_POLLS: u32 = 256;

/// A configured, started port.
pub struct PortInfo {
    /// DPDK port id.
    pub id: u16,
    /// Kernel interface.
    pub iface: String,
    /// Its MAC.
    pub mac: [u8; 6],
    /// Our address/subnet on it.
    pub addr: PortAddr,
    /// Our IPv6 address/subnet on it, if any.
    pub addr6: Option<PortAddr6>,
}

/// Segment state for logs and STATS_REP.
#[derive(Default)]
pub struct SegmentStatus {
    /// Worker 0 holds a fast-path worker on a valid segment.
    pub attached: AtomicBool,
    /// The last refusal (None once attached).
    pub error: Mutex<Option<String>>,
}

/// What all workers share (read-only but for atomics).
pub struct Shared {
    pub ports: Vec<PortInfo>,
    pub routes: Routes,
    pub underlay: u32,
    pub underlay6: Option<u128>,
    pub neigh: Neighbours,
    pub published: Vec<Published>,
    pub segment: PathBuf,
    pub seg: SegmentStatus,
    pub sock: OwnedFd,
    pub sidecar: (libc::sockaddr_un, libc::socklen_t),
    pub pool: Pool,
    pub idle_sleep_us: u32,
    pub tsc_hz: u64,
}

// SAFETY: the raw pointers inside (sockaddr is plain data; the pool is MP/MC safe) are only
// used through thread-safe DPDK calls.
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

fn tsc() -> u64 {
    cvlan_fastpath::abi::ticks()
}

/// A `mbuf`'s window as a mutable slice of `len` bytes (`len` ≤ data_len + tailroom).
///
/// # Safety
/// `v` must describe a live mbuf owned by the caller.
unsafe fn window<'a>(v: &dpdk::cvd_mbuf_view, len: usize) -> &'a mut [u8] {
    // SAFETY: the caller owns the mbuf; len stays within its data room.
    unsafe { std::slice::from_raw_parts_mut(v.data, len) }
}

fn view(m: *mut rte_mbuf) -> dpdk::cvd_mbuf_view {
    let mut v = dpdk::cvd_mbuf_view {
        data: std::ptr::null_mut(),
        len: 0,
        headroom: 0,
        tailroom: 0,
        nb_segs: 0,
    };
    // SAFETY: m is a live mbuf from rx/alloc; v is a valid out pointer.
    unsafe { dpdk::cvd_mbuf_get(m, &mut v) };
    v
}

struct Tx {
    m: [*mut rte_mbuf; TXQ],
    n: usize,
}

struct Punts {
    hdr: [[u8; HEADER_LEN]; BURST],
    iov: [[libc::iovec; 2]; BURST],
    msg: [libc::mmsghdr; BURST],
    m: [*mut rte_mbuf; BURST],
    n: usize,
}

/// One worker's private state (boxed: the arrays are large and the punt batch holds
/// pointers into itself).
pub struct Worker<'s> {
    sh: &'s Shared,
    id: u16,
    fp: Option<cvlan_fastpath::Worker>,
    seg_ino: (u64, u64),
    next_attach: u64,
    last_log: u64,
    last_err: String,
    rx: [*mut rte_mbuf; BURST],
    bufs: [Buf; BURST],
    verdicts: [Verdict; BURST],
    bm: [*mut rte_mbuf; BURST],
    bport: [u16; BURST],
    tx: Vec<Tx>,
    free: [*mut rte_mbuf; TXQ],
    nfree: usize,
    punts: Punts,
    host: [u64; HOST_COUNT],
    arp_rl: [(u64, u64); ARP_RL],
    next_publish: u64,
    ctl_buf: Vec<u8>,
}

impl<'s> Worker<'s> {
    /// A worker for queue `id`.
    #[must_use]
    pub fn new(sh: &'s Shared, id: u16) -> Box<Self> {
        let null: *mut rte_mbuf = std::ptr::null_mut();
        let buf0 = Buf {
            data: std::ptr::null_mut(),
            len: 0,
            headroom: 0,
            tailroom: 0,
            ingress: 0,
        };
        let v0 = Verdict {
            next: 0,
            reason: 0,
            aux: 0,
        };
        // SAFETY: iovec and mmsghdr are plain C structs for which all-zero is valid.
        let (iov0, msg0): (libc::iovec, libc::mmsghdr) = unsafe { std::mem::zeroed() };
        Box::new(Self {
            sh,
            id,
            fp: None,
            seg_ino: (0, 0),
            next_attach: 0,
            last_log: 0,
            last_err: String::new(),
            rx: [null; BURST],
            bufs: [buf0; BURST],
            verdicts: [v0; BURST],
            bm: [null; BURST],
            bport: [0; BURST],
            tx: sh
                .ports
                .iter()
                .map(|_| Tx {
                    m: [null; TXQ],
                    n: 0,
                })
                .collect(),
            free: [null; TXQ],
            nfree: 0,
            punts: Punts {
                hdr: [[0; HEADER_LEN]; BURST],
                iov: [[iov0; 2]; BURST],
                msg: [msg0; BURST],
                m: [null; BURST],
                n: 0,
            },
            host: [0; HOST_COUNT],
            arp_rl: [(0, 0); ARP_RL],
            next_publish: 0,
            ctl_buf: if id == 0 { vec![0; 65536] } else { Vec::new() },
        })
    }

    fn count(&mut self, h: Host) {
        self.host[h as usize] += 1;
    }

    /// Runs until [`STOP`].
    pub fn run(&mut self) {
        let mut idle = 0u32;
        while !STOP.load(Ordering::Relaxed) {
            let now = tsc();
            if now >= self.next_attach {
                self.next_attach = now + self.sh.tsc_hz;
                self.check_segment();
            }
            let mut got = 0usize;
            for p in 0..self.sh.ports.len() {
                got += self.rx_port(p);
            }
            if self.id == 0 {
                got += self.poll_ctl();
            }
            for p in 0..self.sh.ports.len() {
                self.flush_tx(p);
            }
            if now >= self.next_publish {
                self.next_publish = now + self.sh.tsc_hz / 20;
                self.publish();
            }
            if got == 0 {
                idle = idle.saturating_add(1);
                if self.sh.idle_sleep_us > 0 && idle >= IDLE_POLLS {
                    std::thread::sleep(std::time::Duration::from_micros(u64::from(
                        self.sh.idle_sleep_us,
                    )));
                }
            } else {
                idle = 0;
            }
        }
        self.publish();
    }

    /// Attaches (or re-attaches, when vrouterd replaced the file) to the segment. Once a
    /// second, never per packet.
    fn check_segment(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(&self.sh.segment).map(|m| (m.dev(), m.ino()));
        if self.fp.is_some() && ino.as_ref().ok() == Some(&self.seg_ino) {
            return;
        }
        if self.fp.is_some() && ino.is_err() {
            // The file is gone (vrouterd restarting): keep forwarding on the mapping we hold.
            return;
        }
        let attempt = Segment::open(&self.sh.segment)
            .map_err(cvlan_fastpath::WorkerError::from)
            .and_then(|s| cvlan_fastpath::Worker::new(s, u32::from(self.id)));
        match attempt {
            Ok(w) => {
                let replaced = self.fp.is_some();
                self.fp = Some(w);
                self.seg_ino = ino.unwrap_or((0, 0));
                if self.id == 0 {
                    self.sh.seg.attached.store(true, Ordering::Relaxed);
                    if let Ok(mut e) = self.sh.seg.error.lock() {
                        *e = None;
                    }
                }
                tracing::info!(
                    worker = self.id,
                    segment = %self.sh.segment.display(),
                    replaced,
                    "attached to table segment"
                );
                self.last_err.clear();
            }
            Err(e) => {
                if self.fp.is_some() {
                    // A new file that does not validate (yet): keep the old tables.
                    return;
                }
                let missing = matches!(
                    &e,
                    cvlan_fastpath::WorkerError::Segment(cvlan_tables::SegmentError::Io(io))
                        if io.kind() == std::io::ErrorKind::NotFound
                );
                let msg = format!("{:#}", anyhow::Error::from(e));
                let now = tsc();
                if self.id == 0
                    && (msg != self.last_err
                        || now.wrapping_sub(self.last_log) > 5 * self.sh.tsc_hz)
                {
                    self.last_log = now;
                    if missing {
                        tracing::info!(
                            segment = %self.sh.segment.display(),
                            "waiting for table segment (vrouterd creates it); dropping \
                             WireGuard traffic until then"
                        );
                    } else {
                        tracing::error!(
                            segment = %self.sh.segment.display(),
                            reason = %msg,
                            "refusing table segment: {msg}; retrying every second"
                        );
                    }
                    if let Ok(mut g) = self.sh.seg.error.lock() {
                        *g = Some(msg.clone());
                    }
                }
                self.last_err = msg;
            }
        }
    }

    /// Copies counters to the shared snapshot (the fast path's may only be read here, by the
    /// thread that runs it).
    pub fn publish(&self) {
        let def = cvlan_fastpath::Stats::default();
        let fp = self.fp.as_ref();
        self.sh.published[usize::from(self.id)].publish(
            fp.map_or(&def, |w| w.stats()),
            &self.host,
            if fp.is_some() { MAX_PEERS } else { 0 },
            |s| fp.map(|w| w.peer_counters(s)).unwrap_or_default(),
            if fp.is_some() { MAX_TENANTS } else { 0 },
            |s| fp.map(|w| w.tenant_counters(s)).unwrap_or_default(),
        );
    }

    fn free_later(&mut self, m: *mut rte_mbuf) {
        if self.nfree == TXQ {
            self.flush_free();
        }
        self.free[self.nfree] = m;
        self.nfree += 1;
    }

    fn flush_free(&mut self) {
        if self.nfree > 0 {
            // SAFETY: the array holds nfree mbufs this worker owns and no longer uses.
            unsafe { dpdk::rte_pktmbuf_free_bulk(self.free.as_mut_ptr(), self.nfree as u32) };
            self.nfree = 0;
        }
    }

    fn tx_push(&mut self, port: usize, m: *mut rte_mbuf) {
        if self.tx[port].n == TXQ {
            self.flush_tx(port);
        }
        let t = &mut self.tx[port];
        t.m[t.n] = m;
        t.n += 1;
    }

    fn flush_tx(&mut self, port: usize) {
        let n = self.tx[port].n;
        if n == 0 {
            return;
        }
        let id = self.sh.ports[port].id;
        // SAFETY: the array holds n mbufs owned by this worker; queue `self.id` belongs to it.
        let sent = usize::from(unsafe {
            dpdk::cvd_tx_burst(id, self.id, self.tx[port].m.as_mut_ptr(), n as u16)
        });
        for k in sent..n {
            let m = self.tx[port].m[k];
            self.host[Host::TxDropped as usize] += 1;
            self.free_later(m);
        }
        self.tx[port].n = 0;
        self.flush_free();
    }

    /// One rx burst on port `p` through the fast path. Returns the frames received.
    fn rx_port(&mut self, p: usize) -> usize {
        let sh = self.sh;
        let port = &sh.ports[p];
        // SAFETY: rx array has BURST slots; queue `self.id` belongs to this worker.
        let n = usize::from(unsafe {
            dpdk::cvd_rx_burst(port.id, self.id, self.rx.as_mut_ptr(), BURST as u16)
        });
        if n == 0 {
            return 0;
        }
        self.host[Host::RxFrames as usize] += n as u64;
        let mut nd = 0;
        for k in 0..n {
            let m = self.rx[k];
            let v = view(m);
            if v.nb_segs != 1 {
                self.count(Host::MultiSegment);
                self.free_later(m);
                continue;
            }
            // SAFETY: the mbuf was just received and is owned by this worker.
            let frame = unsafe { window(&v, v.len as usize) };
            match ethertype(frame) {
                Some(ETH_P_ARP) => self.on_arp(p, m, &v),
                Some(ETH_P_IPV4) => {
                    let Some(info) = ipv4_info(&frame[ETH_LEN..]) else {
                        self.count(Host::Malformed);
                        self.free_later(m);
                        continue;
                    };
                    let dmac = dst_mac(frame);
                    let to_us =
                        dmac == port.mac && (info.dst == sh.underlay || info.dst == port.addr.addr);
                    if !to_us {
                        self.count(Host::NotForUs);
                        self.free_later(m);
                        continue;
                    }
                    if port.addr.contains(info.src) {
                        sh.neigh.learn(p as u16, v4(info.src), src_mac(frame));
                    }
                    self.push_desc(nd, m, &v, info.total_len, p);
                    nd += 1;
                }
                Some(ETH_P_IPV6) => {
                    let Some(a6) = port.addr6 else {
                        self.count(Host::Ipv6Unsupported);
                        self.free_later(m);
                        continue;
                    };
                    let ip = &frame[ETH_LEN..];
                    let Some(info) = ipv6_info(ip) else {
                        self.count(Host::Malformed);
                        self.free_later(m);
                        continue;
                    };
                    if info.next == 58
                        && let Some(nd) = parse_ndp(ip, &info)
                    {
                        self.on_ndp(p, m, &v, &info, nd, a6);
                        continue;
                    }
                    let dmac = dst_mac(frame);
                    let to_us =
                        dmac == port.mac && (Some(info.dst) == sh.underlay6 || info.dst == a6.addr);
                    if !to_us {
                        self.count(Host::NotForUs);
                        self.free_later(m);
                        continue;
                    }
                    if a6.contains(info.src) {
                        sh.neigh.learn(p as u16, info.src, src_mac(frame));
                    }
                    self.push_desc(nd, m, &v, info.total_len, p);
                    nd += 1;
                }
                Some(_) => {
                    self.count(Host::OtherEthertype);
                    self.free_later(m);
                }
                None => {
                    self.count(Host::Malformed);
                    self.free_later(m);
                }
            }
        }
        self.process(nd);
        n
    }

    /// Describes the IP packet (`total_len` bytes after the Ethernet header) of received mbuf
    /// `m` as fast-path buffer `i`; Ethernet header and trailer become head/tail room.
    fn push_desc(
        &mut self,
        i: usize,
        m: *mut rte_mbuf,
        v: &dpdk::cvd_mbuf_view,
        total_len: usize,
        p: usize,
    ) {
        let trailer = v.len as usize - ETH_LEN - total_len;
        self.bufs[i] = Buf {
            // SAFETY: the caller checked ETH_LEN + total_len ≤ len, inside the mbuf.
            data: unsafe { v.data.add(ETH_LEN) },
            len: total_len as u32,
            headroom: v.headroom + ETH_LEN as u32,
            tailroom: v.tailroom + trailer as u32,
            ingress: INGRESS_UNDERLAY,
        };
        self.bm[i] = m;
        self.bport[i] = p as u16;
    }

    fn process(&mut self, nd: usize) {
        if nd == 0 {
            return;
        }
        let Some(fp) = self.fp.as_mut() else {
            self.host[Host::NoSegment as usize] += nd as u64;
            for i in 0..nd {
                self.free_later(self.bm[i]);
            }
            return;
        };
        // SAFETY: each descriptor covers its own received mbuf (data room bounds from the
        // mbuf itself), owned by this worker and untouched by anyone else during the call.
        unsafe { fp.process(&mut self.bufs[..nd], &mut self.verdicts[..nd]) };
        for i in 0..nd {
            let (b, v, m) = (self.bufs[i], self.verdicts[i], self.bm[i]);
            match v.next {
                x if x == Next::Underlay as u16 => {
                    self.emit(m, b.data, b.len as usize, b.headroom as usize, None);
                }
                x if x == Next::Punt as u16 && slow_path_wants(v.reason) => {
                    self.punt_push(m, &b, self.bport[i], v.reason);
                }
                x if x == Next::Punt as u16 => {
                    self.count(Host::PuntFiltered);
                    self.free_later(m);
                }
                x if x == Next::Local as u16 => {
                    self.count(Host::LocalDropped);
                    self.free_later(m);
                }
                _ => self.free_later(m),
            }
        }
        self.punt_flush();
    }

    /// Routes an IPv4 packet at `data` (inside mbuf `m`) to its egress port, prepends
    /// Ethernet and queues it. Returns whether it was queued.
    fn emit(
        &mut self,
        m: *mut rte_mbuf,
        data: *mut u8,
        len: usize,
        headroom: usize,
        port: Option<u16>,
    ) -> bool {
        // SAFETY: data..data+len is the packet window of m, owned by this worker.
        let pkt = unsafe { std::slice::from_raw_parts(data, len) };
        let sh = self.sh;
        let forced = port.filter(|&p| usize::from(p) < sh.ports.len());
        let (route, ethertype) = match pkt.first().map(|b| b >> 4) {
            Some(4) if len >= 20 => {
                let dst = u32::from_be_bytes([pkt[16], pkt[17], pkt[18], pkt[19]]);
                let route = match forced {
                    Some(p) => {
                        let nh = sh
                            .routes
                            .lookup(dst)
                            .filter(|r| r.0 == p)
                            .map_or(dst, |r| r.1);
                        Some((p, v4(nh)))
                    }
                    None => sh.routes.lookup(dst).map(|(p, nh)| (p, v4(nh))),
                };
                (route, ETH_P_IPV4)
            }
            Some(6) if len >= 40 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&pkt[24..40]);
                let dst = u128::from_be_bytes(a);
                // Connected IPv6 subnets only (no IPv6 static routes yet).
                let route = forced
                    .map(usize::from)
                    .or_else(|| {
                        sh.ports
                            .iter()
                            .position(|q| q.addr6.is_some_and(|a6| a6.contains(dst)))
                    })
                    .map(|p| (p as u16, dst));
                (route, ETH_P_IPV6)
            }
            _ => {
                self.count(Host::Malformed);
                self.free_later(m);
                return false;
            }
        };
        let Some((out, nh)) = route else {
            self.count(if ethertype == ETH_P_IPV6 {
                Host::OuterV6
            } else {
                Host::NoEgressRoute
            });
            self.free_later(m);
            return false;
        };
        let out = usize::from(out);
        let Some(mac) = sh.neigh.lookup(out as u16, nh) else {
            self.count(Host::ArpMiss);
            self.free_later(m);
            self.solicit(out, nh);
            return false;
        };
        if headroom < ETH_LEN {
            self.count(Host::Malformed);
            self.free_later(m);
            return false;
        }
        // SAFETY: headroom ≥ ETH_LEN bytes precede data inside the mbuf.
        let eth = unsafe { data.sub(ETH_LEN) };
        // SAFETY: as above; the 14 bytes belong to m.
        write_eth(
            unsafe { std::slice::from_raw_parts_mut(eth, ETH_LEN) },
            mac,
            sh.ports[out].mac,
            ethertype,
        );
        // SAFETY: eth..eth+len+14 lies within m's buffer (checked again by the shim).
        if unsafe { dpdk::cvd_mbuf_set(m, eth, (len + ETH_LEN) as u32) } != 0 {
            self.count(Host::Malformed);
            self.free_later(m);
            return false;
        }
        self.tx_push(out, m);
        true
    }

    fn on_arp(&mut self, p: usize, m: *mut rte_mbuf, v: &dpdk::cvd_mbuf_view) {
        self.count(Host::ArpRx);
        let sh = self.sh;
        let port = &sh.ports[p];
        // SAFETY: the received mbuf is ours.
        let frame = unsafe { window(v, v.len as usize) };
        let Some(a) = parse_arp(frame) else {
            self.count(Host::Malformed);
            self.free_later(m);
            return;
        };
        if a.spa != 0 && port.addr.contains(a.spa) {
            sh.neigh.learn(p as u16, v4(a.spa), a.sha);
        }
        let ours =
            a.tpa == port.addr.addr || (a.tpa == sh.underlay && port.addr.contains(sh.underlay));
        if a.oper != ARP_REQUEST || !ours {
            self.free_later(m);
            return;
        }
        let reply = Arp {
            oper: ARP_REPLY,
            sha: port.mac,
            spa: a.tpa,
            tha: a.sha,
            tpa: a.spa,
        };
        let room = (v.len + v.tailroom) as usize;
        // SAFETY: the window stays inside the mbuf's data room.
        let out = unsafe { window(v, room.min(ARP_FRAME_LEN)) };
        let n = write_arp(out, a.sha, &reply);
        // SAFETY: n ≤ data room.
        if unsafe { dpdk::cvd_mbuf_set(m, v.data, n as u32) } != 0 {
            self.free_later(m);
            return;
        }
        self.count(Host::ArpReplies);
        self.tx_push(p, m);
    }

    /// Asks for the MAC of `key` ([`v4`]-mapped IPv4 → ARP request; IPv6 → neighbour
    /// solicitation), at most once per 100 ms per next hop and worker.
    fn solicit(&mut self, p: usize, key: u128) {
        let h = ((key >> 64) as u64 ^ key as u64 ^ (p as u64) << 48)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let now = tsc();
        let slot = (h >> 58) as usize % ARP_RL;
        let (k, t) = self.arp_rl[slot];
        if k == h && now.wrapping_sub(t) < self.sh.tsc_hz / 10 {
            return;
        }
        self.arp_rl[slot] = (h, now);
        let sh = self.sh;
        let port = &sh.ports[p];
        let v4_target = (key >> 32 == 0xffff).then_some(key as u32);
        let Some(src6) = v4_target.map_or(port.addr6.map(|a| a.addr), |_| Some(0)) else {
            // An IPv6 next hop on a port without an IPv6 address: nothing to ask with.
            return;
        };
        // SAFETY: the pool is valid for the process lifetime.
        let m = unsafe { dpdk::cvd_pktmbuf_alloc(sh.pool.0) };
        if m.is_null() {
            self.count(Host::AllocFailed);
            return;
        }
        let v = view(m);
        // SAFETY: a fresh mbuf has far more than NDP_FRAME_LEN bytes of tailroom.
        let out = unsafe { window(&v, (v.tailroom as usize).min(NDP_FRAME_LEN)) };
        let n = match v4_target {
            Some(ip) => {
                let req = Arp {
                    oper: ARP_REQUEST,
                    sha: port.mac,
                    spa: port.addr.addr,
                    tha: [0; 6],
                    tpa: ip,
                };
                write_arp(&mut out[..ARP_FRAME_LEN], BROADCAST, &req)
            }
            None => {
                let (group, gmac) = solicited_node(key);
                write_ndp(out, NDP_NS, gmac, port.mac, src6, group, key)
            }
        };
        // SAFETY: within the fresh mbuf's data room.
        if unsafe { dpdk::cvd_mbuf_set(m, v.data, n as u32) } != 0 {
            self.free_later(m);
            return;
        }
        self.count(Host::ArpRequests);
        self.tx_push(p, m);
    }

    /// Neighbour discovery on a port with an IPv6 address: learn from NS/NA, answer NS for
    /// our addresses. Consumes `m`.
    fn on_ndp(
        &mut self,
        p: usize,
        m: *mut rte_mbuf,
        v: &dpdk::cvd_mbuf_view,
        info: &Ipv6Info,
        nd: Ndp,
        a6: PortAddr6,
    ) {
        self.count(Host::ArpRx);
        let sh = self.sh;
        let port = &sh.ports[p];
        let (who, mac) = if nd.kind == NDP_NS {
            (info.src, nd.lladdr)
        } else {
            (nd.target, nd.lladdr)
        };
        if let Some(mac) = mac
            && who != 0
            && a6.contains(who)
        {
            sh.neigh.learn(p as u16, who, mac);
        }
        let ours = nd.target == a6.addr
            || (Some(nd.target) == sh.underlay6 && sh.underlay6.is_some_and(|u| a6.contains(u)));
        // An unspecified source is duplicate address detection: nothing to answer.
        if nd.kind != NDP_NS
            || !ours
            || info.src == 0
            || (v.len + v.tailroom) < NDP_FRAME_LEN as u32
        {
            self.free_later(m);
            return;
        }
        // SAFETY: the received mbuf is ours.
        let frame = unsafe { window(v, NDP_FRAME_LEN) };
        let to = src_mac(frame);
        let n = write_ndp(frame, NDP_NA, to, port.mac, nd.target, info.src, nd.target);
        // SAFETY: n ≤ data room.
        if unsafe { dpdk::cvd_mbuf_set(m, v.data, n as u32) } != 0 {
            self.free_later(m);
            return;
        }
        self.count(Host::ArpReplies);
        self.tx_push(p, m);
    }

    fn punt_push(&mut self, m: *mut rte_mbuf, b: &Buf, port: u16, reason: u16) {
        let i = self.punts.n;
        let p = &mut self.punts;
        p.hdr[i] = Header {
            kind: Kind::Punt,
            port,
            reason,
            worker: self.id,
        }
        .encode();
        p.iov[i] = [
            libc::iovec {
                iov_base: p.hdr[i].as_mut_ptr().cast::<c_void>(),
                iov_len: HEADER_LEN,
            },
            libc::iovec {
                iov_base: b.data.cast::<c_void>(),
                iov_len: b.len as usize,
            },
        ];
        p.msg[i].msg_hdr.msg_name = (&raw const self.sh.sidecar.0).cast_mut().cast::<c_void>();
        p.msg[i].msg_hdr.msg_namelen = self.sh.sidecar.1;
        p.msg[i].msg_hdr.msg_iov = p.iov[i].as_mut_ptr();
        p.msg[i].msg_hdr.msg_iovlen = 2;
        p.m[i] = m;
        p.n += 1;
    }

    fn punt_flush(&mut self) {
        let n = self.punts.n;
        if n == 0 {
            return;
        }
        // SAFETY: msg[..n] point at live headers, iovecs, mbuf data and the sidecar address,
        // all kept alive until the call returns; MSG_DONTWAIT never blocks the worker.
        let sent = unsafe {
            libc::sendmmsg(
                self.sh.sock.as_raw_fd(),
                self.punts.msg.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
            )
        };
        let sent = usize::try_from(sent).unwrap_or(0).min(n);
        self.host[Host::PuntSent as usize] += sent as u64;
        self.host[Host::PuntDropped as usize] += (n - sent) as u64;
        for k in 0..n {
            let m = self.punts.m[k];
            self.free_later(m);
        }
        self.punts.n = 0;
    }

    /// Handles up to [`CTL_PER_ITER`] datagrams on our socket. Returns how many.
    fn poll_ctl(&mut self) -> usize {
        let mut handled = 0;
        while handled < CTL_PER_ITER {
            // SAFETY: zeroed sockaddr_un is valid; recvfrom writes at most its size.
            let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
            let mut alen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            // SAFETY: buffer and address are valid for their lengths; non-blocking.
            let n = unsafe {
                libc::recvfrom(
                    self.sh.sock.as_raw_fd(),
                    self.ctl_buf.as_mut_ptr().cast::<c_void>(),
                    self.ctl_buf.len(),
                    libc::MSG_DONTWAIT,
                    (&raw mut addr).cast::<libc::sockaddr>(),
                    &mut alen,
                )
            };
            let Ok(n) = usize::try_from(n) else { break };
            handled += 1;
            match Header::decode(&self.ctl_buf[..n]) {
                Ok(h) if h.kind == Kind::Tx => self.inject(h.port, n),
                Ok(h) if h.kind == Kind::StatsReq => self.reply_stats(&addr, alen),
                _ => self.count(Host::CtlBad),
            }
        }
        handled
    }

    fn inject(&mut self, port: u16, n: usize) {
        let payload = &self.ctl_buf[HEADER_LEN..n];
        let total = ipv4_info(payload)
            .map(|i| i.total_len)
            .or_else(|| ipv6_info(payload).map(|i| i.total_len));
        let Some(total_len) = total else {
            self.count(Host::CtlBad);
            return;
        };
        // SAFETY: the pool is valid for the process lifetime.
        let m = unsafe { dpdk::cvd_pktmbuf_alloc(self.sh.pool.0) };
        if m.is_null() {
            self.count(Host::AllocFailed);
            return;
        }
        let v = view(m);
        if total_len > v.tailroom as usize {
            self.count(Host::CtlBad);
            self.free_later(m);
            return;
        }
        // SAFETY: total_len ≤ tailroom of the fresh mbuf.
        unsafe { window(&v, total_len) }.copy_from_slice(&payload[..total_len]);
        let force = (port != PORT_ROUTE).then_some(port);
        if self.emit(m, v.data, total_len, v.headroom as usize, force) {
            self.count(Host::TxInjected);
        }
    }

    fn reply_stats(&mut self, addr: &libc::sockaddr_un, alen: libc::socklen_t) {
        if (alen as usize) <= std::mem::size_of::<libc::sa_family_t>() {
            // An unbound sender cannot be answered.
            self.count(Host::CtlBad);
            return;
        }
        self.count(Host::StatsRequests);
        self.publish();
        let json = crate::report::stats_json(self.sh).to_string();
        let mut d = Vec::with_capacity(HEADER_LEN + json.len());
        d.extend_from_slice(
            &Header {
                kind: Kind::StatsRep,
                port: 0,
                reason: 0,
                worker: self.id,
            }
            .encode(),
        );
        d.extend_from_slice(json.as_bytes());
        // SAFETY: valid buffer and the sender's address as received.
        unsafe {
            libc::sendto(
                self.sh.sock.as_raw_fd(),
                d.as_ptr().cast::<c_void>(),
                d.len(),
                libc::MSG_DONTWAIT,
                std::ptr::from_ref(addr).cast::<libc::sockaddr>(),
                alen,
            )
        };
    }

    /// Releases everything still queued (at shutdown).
    pub fn drain(&mut self) {
        self.punt_flush();
        for p in 0..self.sh.ports.len() {
            self.flush_tx(p);
        }
        self.flush_free();
    }
}

/// The lcore entry point for workers 1.. (worker 0 runs on the main lcore).
///
/// # Safety
/// `arg` is a `Box<(Arc<Shared>, u16)>` leaked by the launcher.
pub unsafe extern "C" fn lcore_main(arg: *mut c_void) -> i32 {
    // SAFETY: per the contract, reclaimed exactly once here.
    let ctx = unsafe { Box::from_raw(arg.cast::<(Arc<Shared>, u16)>()) };
    let (sh, id) = *ctx;
    run_worker(&sh, id)
}

/// Runs worker `id` to completion; a panic stops the process cleanly instead of unwinding
/// into DPDK.
pub fn run_worker(sh: &Shared, id: u16) -> i32 {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut w = Worker::new(sh, id);
        tracing::info!(worker = id, "worker running");
        w.run();
        w.drain();
    }));
    if r.is_err() {
        tracing::error!(worker = id, "worker panicked; stopping");
        STOP.store(true, Ordering::Relaxed);
        return -1;
    }
    0
}

/// Punts vrouterd acts on: handshake messages, cookie replies and keepalives (which confirm a
/// new session). Anything else the fast path punts — unknown message types, unknown receiver
/// indices — is attacker-controllable junk that would only crowd real handshakes out of the
/// punt socket, so it is counted and dropped here.
fn slow_path_wants(reason: u16) -> bool {
    [
        Reason::HandshakeInit,
        Reason::HandshakeResponse,
        Reason::CookieReply,
        Reason::Keepalive,
    ]
    .iter()
    .any(|r| *r as u16 == reason)
}
