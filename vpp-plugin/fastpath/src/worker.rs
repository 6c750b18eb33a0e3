//! A worker: one per core. Owns its replay windows and counters (no sharing), maps the table
//! segment, and runs the vector nodes over batches of up to [`MAX_BATCH`] buffers:
//! `wg-decrypt` → `acl` → `route` → `wg-encrypt`. No allocation, lock or syscall per packet;
//! the only shared write per packet is the keypair send counter (and a once-per-keypair flag).

use std::sync::atomic::Ordering;

use cvlan_tables::layout::{ACTION_PERMIT, FLAG_NEXT, ROUTE_LOCAL};
use cvlan_tables::view::prefetch;
use cvlan_tables::{FiveTuple, GenView, Segment, SegmentError, SegmentRef};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::abi::{Buf, Counters, INGRESS_UNDERLAY, MAX_BATCH, Next, Reason, Stats, Verdict, ticks};
use crate::parse::{
    TAG_LEN, WG_DATA, WG_DATA_HEADER, WgMessage, parse_inner, parse_outer, parse_wg,
};
use crate::replay::{REJECT_AFTER_MESSAGES, ReplayWindow};

/// Errors creating a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The segment could not be mapped or is invalid.
    #[error("table segment")]
    Segment(#[from] SegmentError),
    /// The worker id is not below the segment's `max_workers`.
    #[error("worker id {0} out of range")]
    BadWorkerId(u32),
}

#[derive(Clone, Copy, Default)]
struct Meta {
    done: bool,
    v6: bool,
    tenant: u32,
    in_peer: u32,
    out_peer: u32,
    tuple: FiveTuple,
    /// Transport data: receiver index, counter, ciphertext offset (from the packet start)
    /// and length, filled by the classify pass of wg-decrypt.
    receiver: u32,
    counter: u64,
    ct_start: u32,
    ct_len: u32,
    /// wg-encrypt: the egress peer's current keypair slot, filled by its lookup pass.
    tx_slot: u32,
}

/// How many packets ahead the crypto passes prefetch packet bytes: each packet costs an AEAD
/// operation there, which hides an L2/L3 miss for the next ones.
const PREFETCH: usize = 4;
/// Prefetch distance of the lookup-only passes (allowed IPs, acl, route).
const PREFETCH_FAR: usize = 16;
/// How far ahead wg-encrypt's seal pass prefetches keypair, send counter and counters.
const TX_AHEAD: usize = 8;

/// Pulls in the cache line at `p` (a hint: never faults, whatever the address).
#[inline(always)]
fn prefetch_ptr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint and cannot fault.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Pulls in the cache line of `r` for writing (PREFETCHW where the target has it), so that
/// the atomic add on a send counter does not wait for the line.
#[inline(always)]
fn prefetch_write<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint and cannot fault.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_ET0 }>(
            (r as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// Prefetches the first `lines` cache lines of packet bytes starting at `p`.
#[inline(always)]
fn prefetch_bytes(p: *const u8, lines: usize) {
    for k in 0..lines {
        prefetch_ptr(p.wrapping_add(64 * k));
    }
}

/// Per-worker counters padded to a cache line, so that a packet touches one line per peer.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct CounterLine(Counters);

/// A vector of `n` default values on huge pages where possible (advised before first touch).
fn huge_vec<T: Default>(n: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    cvlan_tables::segment::advise_huge_pages(&v);
    v.resize_with(n, T::default);
    v
}

/// One worker: its mapping of the segment and its private state.
pub struct Worker {
    seg: Segment,
    core: Core,
}

/// The private per-worker state the nodes run on.
struct Core {
    id: usize,
    replay: Vec<ReplayWindow>,
    peer_counters: Vec<CounterLine>,
    tenant_counters: Vec<CounterLine>,
    stats: Stats,
    meta: Box<[Meta; MAX_BATCH]>,
    /// acl node scratch: packet indices, 5-tuples and results of one (tenant, family) group.
    acl_idx: Box<[u16; MAX_BATCH]>,
    acl_in: Box<[FiveTuple; MAX_BATCH]>,
    acl_out: Box<[Option<(u32, u8)>; MAX_BATCH]>,
}

/// (tenant, family) groups per batch the acl node classifies together.
const ACL_GROUPS: usize = 8;

/// A packet's bytes with its head/tail room, and the current packet window in it.
struct Pkt<'b> {
    all: &'b mut [u8],
    start: usize,
    len: usize,
}

impl Pkt<'_> {
    fn data(&mut self) -> &mut [u8] {
        &mut self.all[self.start..self.start + self.len]
    }
}

/// Builds the packet view of a descriptor.
///
/// # Safety
/// `b.data - b.headroom .. b.data + b.len + b.tailroom` must be valid for reads and writes and
/// not aliased for `'b`.
unsafe fn pkt<'b>(b: &Buf) -> Option<Pkt<'b>> {
    let total = (b.headroom as usize)
        .checked_add(b.len as usize)?
        .checked_add(b.tailroom as usize)?;
    if b.data.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees the range.
    let all = unsafe { std::slice::from_raw_parts_mut(b.data.sub(b.headroom as usize), total) };
    Some(Pkt {
        all,
        start: b.headroom as usize,
        len: b.len as usize,
    })
}

fn set_buf(b: &mut Buf, p: &Pkt<'_>) {
    let total = p.all.len();
    let base = b.data.wrapping_sub(b.headroom as usize);
    b.data = base.wrapping_add(p.start);
    b.headroom = p.start as u32;
    b.len = p.len as u32;
    b.tailroom = (total - p.start - p.len) as u32;
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

fn checksum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn checksum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Worker {
    /// Attaches worker `id` to a mapped segment.
    ///
    /// # Errors
    /// [`WorkerError`] when the id is out of range or the segment invalid.
    pub fn new(seg: Segment, id: u32) -> Result<Self, WorkerError> {
        let r = seg.reader()?;
        let h = r.header();
        if id >= h.max_workers {
            return Err(WorkerError::BadWorkerId(id));
        }
        let cap = h.keypair_capacity as usize;
        let core = Core {
            replay: huge_vec(cap),
            id: id as usize,
            peer_counters: Vec::new(),
            tenant_counters: Vec::new(),
            stats: Stats::default(),
            meta: Box::new([Meta::default(); MAX_BATCH]),
            acl_idx: Box::new([0; MAX_BATCH]),
            acl_in: Box::new([FiveTuple::default(); MAX_BATCH]),
            acl_out: Box::new([None; MAX_BATCH]),
        };
        Ok(Self { seg, core })
    }

    /// Worker totals.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }

    /// Counters of a peer slot (zero if never seen).
    #[must_use]
    pub fn peer_counters(&self, slot: u32) -> Counters {
        self.core
            .peer_counters
            .get(slot as usize)
            .map(|c| c.0)
            .unwrap_or_default()
    }

    /// Counters of a tenant slot.
    #[must_use]
    pub fn tenant_counters(&self, slot: u32) -> Counters {
        self.core
            .tenant_counters
            .get(slot as usize)
            .map(|c| c.0)
            .unwrap_or_default()
    }

    /// Processes buffers in batches of at most [`MAX_BATCH`], writing one verdict per buffer.
    ///
    /// # Safety
    /// Every `bufs[i]` must describe a writable region `data - headroom .. data + len +
    /// tailroom` that is valid and not accessed by anyone else during the call.
    /// `verdicts.len()` must be at least `bufs.len()` (extra buffers are left unprocessed).
    pub unsafe fn process(&mut self, bufs: &mut [Buf], verdicts: &mut [Verdict]) -> usize {
        let n = bufs.len().min(verdicts.len());
        for (bc, vc) in bufs[..n]
            .chunks_mut(MAX_BATCH)
            .zip(verdicts[..n].chunks_mut(MAX_BATCH))
        {
            // SAFETY: forwarded from the caller.
            unsafe { self.process_batch(bc, vc) };
        }
        n
    }

    unsafe fn process_batch(&mut self, bufs: &mut [Buf], verdicts: &mut [Verdict]) {
        let n = bufs.len();
        let c = &mut self.core;
        c.stats.batches += 1;
        c.stats.packets += n as u64;
        let seg = match self.seg.reader() {
            Ok(r) => r,
            Err(_) => return c.drop_all(verdicts, Reason::Internal),
        };
        let view = match seg.enter(c.id) {
            Ok(Some(v)) => v,
            Ok(None) => return c.drop_all(verdicts, Reason::NoTables),
            Err(_) => return c.drop_all(verdicts, Reason::Internal),
        };
        c.stats.generation = view.generation();
        if c.peer_counters.len() < view.peers.len() {
            // Once per growth of the peer table, not per packet.
            let mut v = huge_vec(view.peers.len());
            v[..c.peer_counters.len()].copy_from_slice(&c.peer_counters);
            c.peer_counters = v;
        }
        if c.tenant_counters.len() < view.tenants.len() {
            c.tenant_counters
                .resize(view.tenants.len(), CounterLine::default());
        }
        for v in verdicts.iter_mut() {
            *v = Verdict {
                next: Next::Drop as u16,
                reason: Reason::Internal as u16,
                aux: 0,
            };
        }
        // SAFETY: forwarded from the caller.
        unsafe {
            let t0 = ticks();
            c.node_wg_decrypt(&seg, &view, bufs, verdicts);
            let t1 = ticks();
            c.node_acl(&view, n, verdicts);
            let t2 = ticks();
            c.node_route(&view, n, verdicts);
            let t3 = ticks();
            c.node_wg_encrypt(&seg, &view, bufs, verdicts);
            let t4 = ticks();
            let nt = &mut c.stats.node_ticks;
            nt[0] += t1.wrapping_sub(t0);
            nt[1] += t2.wrapping_sub(t1);
            nt[2] += t3.wrapping_sub(t2);
            nt[3] += t4.wrapping_sub(t3);
        }
        // Leaving cannot fail for an id validated in `new`.
        let _ = seg.leave(c.id);
        for v in verdicts.iter() {
            c.stats.next[usize::from(v.next) & 3] += 1;
            c.stats.reason[usize::from(v.reason) & 31] += 1;
        }
    }
}

impl Core {
    fn drop_all(&mut self, verdicts: &mut [Verdict], r: Reason) {
        for v in verdicts.iter_mut() {
            *v = Verdict {
                next: Next::Drop as u16,
                reason: r as u16,
                aux: 0,
            };
        }
        self.stats.next[Next::Drop as usize] += verdicts.len() as u64;
        self.stats.reason[r as usize] += verdicts.len() as u64;
    }

    fn finish(&mut self, i: usize, v: &mut Verdict, next: Next, reason: Reason) {
        self.meta[i].done = true;
        *v = Verdict {
            next: next as u16,
            reason: reason as u16,
            aux: 0,
        };
        if next == Next::Drop {
            let m = self.meta[i];
            if let Some(c) = self.peer_counters.get_mut(m.in_peer as usize) {
                c.0.drops += 1;
            }
            if let Some(c) = self.tenant_counters.get_mut(m.tenant as usize) {
                c.0.drops += 1;
            }
        }
    }

    /// wg-decrypt: classifies underlay datagrams, opens transport data in place, checks the
    /// replay window and the allowed IPs; local-ingress packets are only parsed.
    /// Three passes over the batch (classify, open, allowed-IPs) so that each can prefetch
    /// the table entries the next packets need.
    unsafe fn node_wg_decrypt(
        &mut self,
        seg: &SegmentRef<'_>,
        view: &GenView<'_>,
        bufs: &mut [Buf],
        verdicts: &mut [Verdict],
    ) {
        // Pass 1: classify; prefetch each packet's keypair receive line, replay-window header
        // and the one window word its counter maps to, a whole pass before they are read.
        let n = bufs.len();
        for i in 0..n {
            if let Some(ahead) = bufs.get(i + PREFETCH_FAR) {
                prefetch_ptr(ahead.data);
            }
            let (b, v) = (&mut bufs[i], &mut verdicts[i]);
            self.meta[i] = Meta {
                in_peer: u32::MAX,
                tenant: u32::MAX,
                ..Meta::default()
            };
            // SAFETY: forwarded from the caller of `process`.
            let Some(mut p) = (unsafe { pkt(b) }) else {
                self.finish(i, v, Next::Drop, Reason::Malformed);
                continue;
            };
            if b.ingress != INGRESS_UNDERLAY {
                if view.tenant(b.ingress).is_none() {
                    self.finish(i, v, Next::Drop, Reason::UnknownTenant);
                    continue;
                }
                match parse_inner(p.data()) {
                    Ok(inner) => {
                        self.meta[i].tenant = b.ingress;
                        self.meta[i].v6 = inner.v6;
                        self.meta[i].tuple = inner.tuple;
                        p.len = inner.total_len;
                        set_buf(b, &p);
                        if let Some(c) = self.tenant_counters.get_mut(b.ingress as usize) {
                            c.0.rx_packets += 1;
                            c.0.rx_bytes += inner.total_len as u64;
                        }
                    }
                    Err(_) => self.finish(i, v, Next::Drop, Reason::Malformed),
                }
                continue;
            }
            let Ok(outer) = parse_outer(p.data()) else {
                self.finish(i, v, Next::Punt, Reason::NotWireguard);
                continue;
            };
            let off = outer.payload_off;
            let msg = {
                let d = p.data();
                parse_wg(&d[off..off + outer.payload_len])
            };
            let reason = match msg {
                WgMessage::Data {
                    receiver,
                    counter,
                    ct_len,
                } => {
                    let m = &mut self.meta[i];
                    m.receiver = receiver;
                    m.counter = counter;
                    m.ct_start = (off + WG_DATA_HEADER) as u32;
                    m.ct_len = ct_len as u32;
                    view.prefetch_keypair(receiver);
                    if let Some(w) = self.replay.get(view.keypair_slot(receiver) as usize) {
                        prefetch(w);
                        prefetch(w.word_for(counter));
                    }
                    continue;
                }
                WgMessage::HandshakeInit => Reason::HandshakeInit,
                WgMessage::HandshakeResponse => Reason::HandshakeResponse,
                WgMessage::CookieReply => Reason::CookieReply,
                WgMessage::Keepalive { .. } => Reason::Keepalive,
                WgMessage::Unknown => Reason::UnknownMessage,
            };
            self.finish(i, v, Next::Punt, reason);
        }

        // Pass 2: replay check, open in place. Everything a packet reads here is one keypair
        // line (tenant and peer slot are copied into it) and its window lines, prefetched by
        // pass 1; the ciphertext of the next packets is prefetched a few packets ahead.
        let lpm_large = view.lpm_is_large();
        let mut cached: Option<(u64, LessSafeKey)> = None;
        for i in 0..n {
            if let Some(ahead) = self.meta.get(i + PREFETCH)
                && i + PREFETCH < n
                && !ahead.done
            {
                let start = bufs[i + PREFETCH]
                    .data
                    .wrapping_add(ahead.ct_start as usize);
                prefetch_bytes(start, (ahead.ct_len as usize).div_ceil(64).min(4));
            }
            let m = self.meta[i];
            if m.done || bufs[i].ingress != INGRESS_UNDERLAY {
                continue;
            }
            let (b, v) = (&mut bufs[i], &mut verdicts[i]);
            let Some(kp) = view.keypair_by_receiver(m.receiver) else {
                self.finish(i, v, Next::Punt, Reason::UnknownReceiver);
                continue;
            };
            self.meta[i].in_peer = kp.peer;
            self.meta[i].tenant = kp.tenant;
            let slot = view.keypair_slot(m.receiver);
            let Some(win) = self.replay.get_mut(slot as usize) else {
                self.finish(i, v, Next::Drop, Reason::Internal);
                continue;
            };
            if win.install_id != kp.install_id {
                win.reset(kp.install_id);
            }
            if !win.check(m.counter) {
                self.finish(i, v, Next::Drop, Reason::Replay);
                continue;
            }
            if cached.as_ref().is_none_or(|(id, _)| *id != kp.install_id) {
                let Ok(k) = UnboundKey::new(&CHACHA20_POLY1305, &kp.recv_key) else {
                    self.finish(i, v, Next::Drop, Reason::Internal);
                    continue;
                };
                cached = Some((kp.install_id, LessSafeKey::new(k)));
            }
            let Some((_, key)) = cached.as_ref() else {
                continue;
            };
            // SAFETY: forwarded from the caller of `process`.
            let Some(mut p) = (unsafe { pkt(b) }) else {
                self.finish(i, v, Next::Drop, Reason::Malformed);
                continue;
            };
            let (cs, cl) = (m.ct_start as usize, m.ct_len as usize);
            let opened = {
                let d = p.data();
                key.open_in_place(nonce(m.counter), Aad::empty(), &mut d[cs..cs + cl])
                    .map(|pt| pt.len())
            };
            let Ok(plain_len) = opened else {
                self.finish(i, v, Next::Drop, Reason::AuthFailed);
                continue;
            };
            // Cannot fail: checked above and only this worker updates this window.
            win.update(m.counter);
            if kp.flags & FLAG_NEXT != 0
                && let Some(st) = seg.keypair_state(slot)
                && st.rx_seen.load(Ordering::Relaxed) == 0
            {
                // First packet on the responder's next keypair: the sidecar promotes it.
                st.rx_seen.store(1, Ordering::Release);
            }
            let inner = {
                let d = p.data();
                parse_inner(&d[cs..cs + plain_len])
            };
            let Ok(inner) = inner else {
                self.finish(i, v, Next::Drop, Reason::Malformed);
                continue;
            };
            if let Some(c) = self.peer_counters.get(kp.peer as usize) {
                prefetch(c);
            }
            if lpm_large && let Some(t) = view.tenant(kp.tenant) {
                // Allowed IPs (pass 3) and, already, the route node's lookup.
                view.prefetch_route(t, inner.tuple.src, inner.v6);
                view.prefetch_route(t, inner.tuple.dst, inner.v6);
            }
            p.start += cs;
            p.len = inner.total_len;
            set_buf(b, &p);
            self.meta[i].v6 = inner.v6;
            self.meta[i].tuple = inner.tuple;
        }

        // Pass 3: allowed IPs (cryptokey routing) and receive counters.
        for i in 0..n {
            let m = self.meta[i];
            if m.done || bufs[i].ingress != INGRESS_UNDERLAY {
                continue;
            }
            let v = &mut verdicts[i];
            let Some(tenant) = view.tenant(m.tenant) else {
                self.finish(i, v, Next::Drop, Reason::UnknownTenant);
                continue;
            };
            if view.route(tenant, m.tuple.src, m.v6) != Some(m.in_peer) {
                self.finish(i, v, Next::Drop, Reason::SourceNotAllowed);
                continue;
            }
            let len = u64::from(bufs[i].len);
            if let Some(c) = self.peer_counters.get_mut(m.in_peer as usize) {
                c.0.rx_packets += 1;
                c.0.rx_bytes += len;
            }
            if let Some(c) = self.tenant_counters.get_mut(m.tenant as usize) {
                c.0.rx_packets += 1;
                c.0.rx_bytes += len;
            }
        }
    }

    /// acl: first matching rule of the tenant's compiled classifier, else the default.
    /// Packets are gathered per (tenant, family) and classified together, tuple by tuple;
    /// after [`ACL_GROUPS`] groups the remaining packets (a batch spread over many tenants)
    /// are classified one by one, so that gathering stays linear.
    fn node_acl(&mut self, view: &GenView<'_>, n: usize, verdicts: &mut [Verdict]) {
        let mut gathered = [false; MAX_BATCH];
        let mut groups = 0;
        for start in 0..n {
            let m0 = self.meta[start];
            if m0.done || gathered[start] {
                continue;
            }
            let Some(t) = view.tenant(m0.tenant) else {
                self.finish(
                    start,
                    &mut verdicts[start],
                    Next::Drop,
                    Reason::UnknownTenant,
                );
                continue;
            };
            let mut k = 0;
            if groups < ACL_GROUPS {
                groups += 1;
                for (j, (mj, g)) in self.meta[..n]
                    .iter()
                    .zip(gathered[..n].iter_mut())
                    .enumerate()
                    .skip(start)
                {
                    if !mj.done && !*g && mj.tenant == m0.tenant && mj.v6 == m0.v6 {
                        *g = true;
                        self.acl_idx[k] = j as u16;
                        self.acl_in[k] = mj.tuple;
                        k += 1;
                    }
                }
            } else {
                self.acl_idx[0] = start as u16;
                self.acl_in[0] = m0.tuple;
                k = 1;
            }
            view.acl_classify_many(t, m0.v6, &self.acl_in[..k], &mut self.acl_out[..k]);
            for q in 0..k {
                let action = match self.acl_out[q] {
                    Some((_, a)) => u32::from(a),
                    None => t.default_action,
                };
                if action != u32::from(ACTION_PERMIT) {
                    let i = usize::from(self.acl_idx[q]);
                    self.finish(i, &mut verdicts[i], Next::Drop, Reason::AclDeny);
                }
            }
        }
    }

    /// route: longest-prefix match of the inner destination → egress peer or local delivery.
    /// (Underlay packets had their route buckets prefetched by wg-decrypt's open pass.)
    fn node_route(&mut self, view: &GenView<'_>, n: usize, verdicts: &mut [Verdict]) {
        for (i, v) in verdicts.iter_mut().enumerate().take(n) {
            let m = self.meta[i];
            if m.done {
                continue;
            }
            let Some(t) = view.tenant(m.tenant) else {
                self.finish(i, v, Next::Drop, Reason::UnknownTenant);
                continue;
            };
            match view.route(t, m.tuple.dst, m.v6) {
                None => self.finish(i, v, Next::Drop, Reason::NoRoute),
                Some(r) if r & ROUTE_LOCAL != 0 => {
                    self.finish(i, v, Next::Local, Reason::None);
                    v.aux = r & !ROUTE_LOCAL;
                }
                Some(peer) => {
                    self.meta[i].out_peer = peer;
                    if let Some(p) = view.peers.get(peer as usize) {
                        prefetch(p);
                    }
                }
            }
        }
    }

    /// Prefetches what sealing packet `i` writes besides the packet: its keypair's send line,
    /// the send counter (for writing) and the egress peer's counters.
    fn prefetch_tx(&self, seg: &SegmentRef<'_>, view: &GenView<'_>, i: usize) {
        let Some(m) = self.meta.get(i) else { return };
        if m.done {
            return;
        }
        if let Some(kp) = view.keypairs.get(m.tx_slot as usize) {
            prefetch_ptr((&raw const kp.remote_index).cast::<u8>());
        }
        if let Some(st) = seg.keypair_state(m.tx_slot) {
            prefetch_write(&st.send_counter);
        }
        if let Some(c) = self.peer_counters.get(m.out_peer as usize) {
            prefetch(c);
        }
    }

    /// wg-encrypt: pads, seals in place with the peer's current keypair and writes the
    /// WireGuard, UDP and outer IP headers into the headroom.
    ///
    /// Two passes: the first resolves every packet's peer (prefetched by route) to its
    /// keypair slot, checks room and endpoint, and prefetches the keypair's send line, its
    /// send counter (for writing) and the peer's counters; the second seals. Consecutive
    /// packets on one keypair take their counters with one atomic add.
    unsafe fn node_wg_encrypt(
        &mut self,
        seg: &SegmentRef<'_>,
        view: &GenView<'_>,
        bufs: &mut [Buf],
        verdicts: &mut [Verdict],
    ) {
        let n = bufs.len();
        for i in 0..n {
            let m = self.meta[i];
            if m.done {
                continue;
            }
            let (b, v) = (&bufs[i], &mut verdicts[i]);
            let Some(peer) = view.peer(m.out_peer) else {
                self.finish(i, v, Next::Drop, Reason::NoRoute);
                continue;
            };
            if view.keypair(peer.current).is_none() {
                self.finish(i, v, Next::Punt, Reason::NoKeypair);
                continue;
            }
            let outer_ip = match peer.endpoint_family {
                4 => 20,
                6 => 40,
                _ => {
                    self.finish(i, v, Next::Punt, Reason::NoEndpoint);
                    continue;
                }
            };
            if (b.headroom as usize) < outer_ip + 8 + WG_DATA_HEADER {
                self.finish(i, v, Next::Drop, Reason::NoHeadroom);
                continue;
            }
            let padded = (b.len as usize).div_ceil(16) * 16;
            if (b.len as usize) + (b.tailroom as usize) < padded + TAG_LEN {
                self.finish(i, v, Next::Drop, Reason::NoTailroom);
                continue;
            }
            self.meta[i].tx_slot = peer.current;
        }
        for i in 0..TX_AHEAD.min(n) {
            self.prefetch_tx(seg, view, i);
        }
        // Counters reserved by the last atomic add: (keypair slot, next counter, end).
        let mut reserved: (u32, u64, u64) = (u32::MAX, 0, 0);
        let mut cached: Option<(u64, LessSafeKey)> = None;
        let underlay = *view.underlay();
        for i in 0..n {
            if i + PREFETCH < n && !self.meta[i + PREFETCH].done {
                let ahead = &bufs[i + PREFETCH];
                prefetch_bytes(ahead.data, (ahead.len as usize).div_ceil(64).min(4));
                // The headers go into the line(s) before the packet.
                prefetch_ptr(ahead.data.wrapping_sub(64));
            }
            if i + TX_AHEAD < n {
                self.prefetch_tx(seg, view, i + TX_AHEAD);
            }
            let m = self.meta[i];
            if m.done {
                continue;
            }
            let (b, v) = (&mut bufs[i], &mut verdicts[i]);
            // Checked by the first pass (same generation), so these cannot fail here.
            let (Some(peer), Some(kp), Some(st)) = (
                view.peer(m.out_peer),
                view.keypairs.get(m.tx_slot as usize),
                seg.keypair_state(m.tx_slot),
            ) else {
                self.finish(i, v, Next::Drop, Reason::Internal);
                continue;
            };
            let outer_ip = if peer.endpoint_family == 4 { 20 } else { 40 };
            // SAFETY: forwarded from the caller of `process`.
            let Some(mut p) = (unsafe { pkt(b) }) else {
                self.finish(i, v, Next::Drop, Reason::Malformed);
                continue;
            };
            let padded = p.len.div_ceil(16) * 16;
            if reserved.0 != m.tx_slot || reserved.1 == reserved.2 {
                // One atomic add for this packet and the following ones on the same keypair
                // (a whole batch for one busy peer); packets dropped in between leave gaps,
                // which receivers accept.
                let mut run = 1u64;
                for nm in self.meta[i + 1..n].iter().filter(|nm| !nm.done) {
                    if nm.tx_slot != m.tx_slot {
                        break;
                    }
                    run += 1;
                }
                // SeqCst pairs with the writer's reset order (install_id, then counter): a
                // counter taken after a reset is always seen with the new install_id.
                let base = st.send_counter.fetch_add(run, Ordering::SeqCst);
                let retired = st.install_id.load(Ordering::SeqCst) != kp.install_id;
                reserved = if retired {
                    (m.tx_slot, u64::MAX, u64::MAX)
                } else {
                    (m.tx_slot, base, base.saturating_add(run))
                };
            }
            let counter = reserved.1;
            if counter == u64::MAX || counter >= REJECT_AFTER_MESSAGES {
                self.finish(i, v, Next::Punt, Reason::KeypairExhausted);
                continue;
            }
            reserved.1 += 1;
            if cached.as_ref().is_none_or(|(id, _)| *id != kp.install_id) {
                let Ok(k) = UnboundKey::new(&CHACHA20_POLY1305, &kp.send_key) else {
                    self.finish(i, v, Next::Drop, Reason::Internal);
                    continue;
                };
                cached = Some((kp.install_id, LessSafeKey::new(k)));
            }
            let Some((_, key)) = cached.as_ref() else {
                continue;
            };
            let inner_len = p.len;
            let s = p.start;
            p.all[s + inner_len..s + padded].fill(0);
            let Ok(tag) = key.seal_in_place_separate_tag(
                nonce(counter),
                Aad::empty(),
                &mut p.all[s..s + padded],
            ) else {
                self.finish(i, v, Next::Drop, Reason::Internal);
                continue;
            };
            p.all[s + padded..s + padded + TAG_LEN].copy_from_slice(tag.as_ref());
            // WireGuard header.
            let w = s - WG_DATA_HEADER;
            p.all[w..w + 4].copy_from_slice(&[WG_DATA, 0, 0, 0]);
            p.all[w + 4..w + 8].copy_from_slice(&kp.remote_index.to_le_bytes());
            p.all[w + 8..w + 16].copy_from_slice(&counter.to_le_bytes());
            // UDP header.
            let u = w - 8;
            let udp_len = 8 + WG_DATA_HEADER + padded + TAG_LEN;
            p.all[u..u + 2].copy_from_slice(&underlay.port.to_be_bytes());
            p.all[u + 2..u + 4].copy_from_slice(&peer.endpoint_port.to_be_bytes());
            p.all[u + 4..u + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            p.all[u + 6..u + 8].copy_from_slice(&[0, 0]);
            let ip = u - outer_ip;
            let total = outer_ip + udp_len;
            if outer_ip == 20 {
                let h = &mut p.all[ip..ip + 20];
                h[0] = 0x45;
                h[1] = 0;
                h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                h[4..8].copy_from_slice(&[0, 0, 0x40, 0]); // id 0, DF
                h[8] = 64;
                h[9] = 17;
                h[10..12].copy_from_slice(&[0, 0]);
                h[12..16].copy_from_slice(&underlay.addr4);
                h[16..20].copy_from_slice(&peer.endpoint_addr[..4]);
                let c = checksum_fold(checksum_add(0, h));
                h[10..12].copy_from_slice(&c.to_be_bytes());
            } else {
                let h = &mut p.all[ip..ip + 40];
                h[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
                h[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
                h[6] = 17;
                h[7] = 64;
                h[8..24].copy_from_slice(&underlay.addr6);
                h[24..40].copy_from_slice(&peer.endpoint_addr);
                // UDP over IPv6 needs a checksum: pseudo-header + UDP header + payload.
                let mut sum = checksum_add(0, &p.all[ip + 8..ip + 40]);
                sum += udp_len as u32 + 17;
                sum = checksum_add(sum, &p.all[u..u + udp_len]);
                let mut c = checksum_fold(sum);
                if c == 0 {
                    c = 0xffff;
                }
                p.all[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
            }
            p.start = ip;
            p.len = total;
            set_buf(b, &p);
            *v = Verdict {
                next: Next::Underlay as u16,
                reason: Reason::None as u16,
                aux: m.out_peer,
            };
            if let Some(c) = self.peer_counters.get_mut(m.out_peer as usize) {
                c.0.tx_packets += 1;
                c.0.tx_bytes += inner_len as u64;
            }
            if let Some(c) = self.tenant_counters.get_mut(m.tenant as usize) {
                c.0.tx_packets += 1;
                c.0.tx_bytes += inner_len as u64;
            }
        }
    }
}
