//! A worker: one per core. Owns its replay windows and counters (no sharing), maps the table
//! segment, and runs the vector nodes over batches of up to [`MAX_BATCH`] buffers:
//! `wg-decrypt` → `acl` → `route` → `wg-encrypt`. No allocation, lock or syscall per packet;
//! the only shared write per packet is the keypair send counter (and a once-per-keypair flag).

use std::sync::atomic::Ordering;

use cvlan_tables::layout::{ACTION_PERMIT, ROUTE_LOCAL};
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
}

/// How many packets ahead the nodes prefetch table entries: short where each packet costs
/// an AEAD operation (that hides a DRAM miss), long where a packet costs a few lookups.
const PREFETCH: usize = 4;
/// Prefetch distance of the lookup-only passes (allowed IPs, acl, route).
const PREFETCH_FAR: usize = 16;

/// One worker: its mapping of the segment and its private state.
pub struct Worker {
    seg: Segment,
    core: Core,
}

/// The private per-worker state the nodes run on.
struct Core {
    id: usize,
    replay: Box<[ReplayWindow]>,
    peer_counters: Vec<Counters>,
    tenant_counters: Vec<Counters>,
    stats: Stats,
    meta: Box<[Meta; MAX_BATCH]>,
}

fn zeroed_windows(n: usize) -> Box<[ReplayWindow]> {
    // All-zero is the empty window; calloc'ed pages are only committed when touched, so a
    // large keypair capacity costs address space, not memory.
    let mut v: Vec<ReplayWindow> = Vec::new();
    v.resize_with(n, ReplayWindow::default);
    v.into_boxed_slice()
}

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
            replay: zeroed_windows(cap),
            id: id as usize,
            peer_counters: Vec::new(),
            tenant_counters: Vec::new(),
            stats: Stats::default(),
            meta: Box::new([Meta::default(); MAX_BATCH]),
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
            .copied()
            .unwrap_or_default()
    }

    /// Counters of a tenant slot.
    #[must_use]
    pub fn tenant_counters(&self, slot: u32) -> Counters {
        self.core
            .tenant_counters
            .get(slot as usize)
            .copied()
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
            c.peer_counters
                .resize(view.peers.len(), Counters::default());
        }
        if c.tenant_counters.len() < view.tenants.len() {
            c.tenant_counters
                .resize(view.tenants.len(), Counters::default());
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
                c.drops += 1;
            }
            if let Some(c) = self.tenant_counters.get_mut(m.tenant as usize) {
                c.drops += 1;
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
        // Pass 1: classify; prefetch keypair records and replay windows.
        for (i, (b, v)) in bufs.iter_mut().zip(verdicts.iter_mut()).enumerate() {
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
                            c.rx_packets += 1;
                            c.rx_bytes += inner.total_len as u64;
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

        // Pass 2: replay check, open in place; prefetch the peer record a few packets ahead.
        let n = bufs.len();
        let lpm_large = view.lpm_is_large();
        let mut cached: Option<(u64, LessSafeKey)> = None;
        for i in 0..n {
            if i + PREFETCH < n
                && let Some(ahead) = self.meta.get(i + PREFETCH)
                && !ahead.done
                && let Some(kp) = view.keypair_by_receiver(ahead.receiver)
                && let Some(peer) = view.peers.get(kp.peer as usize)
            {
                prefetch(peer);
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
            let Some(peer) = view.peer(kp.peer) else {
                self.finish(i, v, Next::Punt, Reason::UnknownReceiver);
                continue;
            };
            self.meta[i].in_peer = kp.peer;
            self.meta[i].tenant = peer.tenant;
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
            if slot == peer.next
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
            if lpm_large && let Some(t) = view.tenant(peer.tenant) {
                view.prefetch_route(t, inner.tuple.src, inner.v6);
            }
            p.start += cs;
            p.len = inner.total_len;
            set_buf(b, &p);
            self.meta[i].v6 = inner.v6;
            self.meta[i].tuple = inner.tuple;
        }

        // Pass 3: allowed IPs (cryptokey routing) and receive counters.
        for i in 0..n {
            if i + PREFETCH_FAR < n
                && let Some(ahead) = self.meta.get(i + PREFETCH_FAR)
                && !ahead.done
                && ahead.in_peer != u32::MAX
                && let Some(c) = self.peer_counters.get(ahead.in_peer as usize)
            {
                prefetch(c);
            }
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
                c.rx_packets += 1;
                c.rx_bytes += len;
            }
            if let Some(c) = self.tenant_counters.get_mut(m.tenant as usize) {
                c.rx_packets += 1;
                c.rx_bytes += len;
            }
        }
    }

    /// acl: first matching rule of the tenant's compiled classifier, else the default.
    fn node_acl(&mut self, view: &GenView<'_>, n: usize, verdicts: &mut [Verdict]) {
        let far = if view.acl_is_large() { PREFETCH_FAR } else { 0 };
        for m in self.meta.iter().take(far.min(n)) {
            if !m.done
                && let Some(t) = view.tenant(m.tenant)
            {
                view.prefetch_acl(t, &m.tuple, m.v6);
            }
        }
        for (i, v) in verdicts.iter_mut().enumerate().take(n) {
            if far > 0
                && i + far < n
                && let Some(ahead) = self.meta.get(i + far)
                && !ahead.done
                && let Some(t) = view.tenant(ahead.tenant)
            {
                view.prefetch_acl(t, &ahead.tuple, ahead.v6);
            }
            let m = self.meta[i];
            if m.done {
                continue;
            }
            let Some(t) = view.tenant(m.tenant) else {
                self.finish(i, v, Next::Drop, Reason::UnknownTenant);
                continue;
            };
            let action = match view.acl_classify(t, &m.tuple, m.v6) {
                Some((_, a)) => u32::from(a),
                None => t.default_action,
            };
            if action != u32::from(ACTION_PERMIT) {
                self.finish(i, v, Next::Drop, Reason::AclDeny);
            }
        }
    }

    /// route: longest-prefix match of the inner destination → egress peer or local delivery.
    fn node_route(&mut self, view: &GenView<'_>, n: usize, verdicts: &mut [Verdict]) {
        let far = if view.lpm_is_large() { PREFETCH_FAR } else { 0 };
        for m in self.meta.iter().take(far.min(n)) {
            if !m.done
                && let Some(t) = view.tenant(m.tenant)
            {
                view.prefetch_route(t, m.tuple.dst, m.v6);
            }
        }
        for (i, v) in verdicts.iter_mut().enumerate().take(n) {
            if far > 0
                && i + far < n
                && let Some(ahead) = self.meta.get(i + far)
                && !ahead.done
                && let Some(t) = view.tenant(ahead.tenant)
            {
                view.prefetch_route(t, ahead.tuple.dst, ahead.v6);
            }
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

    fn prefetch_peer(&self, view: &GenView<'_>, i: usize) {
        if let Some(m) = self.meta.get(i)
            && !m.done
            && let Some(peer) = view.peers.get(m.out_peer as usize)
        {
            prefetch(peer);
        }
    }

    fn prefetch_tx(&self, seg: &SegmentRef<'_>, view: &GenView<'_>, i: usize) {
        let Some(m) = self.meta.get(i) else { return };
        if m.done {
            return;
        }
        if let Some(peer) = view.peers.get(m.out_peer as usize) {
            if let Some(k) = view.keypairs.get(peer.current as usize) {
                prefetch(k);
            }
            if let Some(st) = seg.keypair_state(peer.current) {
                prefetch(st);
            }
        }
        if let Some(c) = self.peer_counters.get(m.out_peer as usize) {
            prefetch(c);
        }
    }

    /// wg-encrypt: pads, seals in place with the peer's current keypair and writes the
    /// WireGuard, UDP and outer IP headers into the headroom.
    unsafe fn node_wg_encrypt(
        &mut self,
        seg: &SegmentRef<'_>,
        view: &GenView<'_>,
        bufs: &mut [Buf],
        verdicts: &mut [Verdict],
    ) {
        let underlay = *view.underlay();
        let mut cached: Option<(u64, LessSafeKey)> = None;
        let n = bufs.len();
        // Warm up the prefetch window: peer records first, then (depending on them) keypair,
        // send state and counters of the first packets.
        for i in 0..(2 * PREFETCH).min(n) {
            self.prefetch_peer(view, i);
        }
        for i in 0..PREFETCH.min(n) {
            self.prefetch_tx(seg, view, i);
        }
        for (i, (b, v)) in bufs.iter_mut().zip(verdicts.iter_mut()).enumerate() {
            if i + 2 * PREFETCH < n {
                self.prefetch_peer(view, i + 2 * PREFETCH);
            }
            if i + PREFETCH < n {
                self.prefetch_tx(seg, view, i + PREFETCH);
            }
            let m = self.meta[i];
            if m.done {
                continue;
            }
            let Some(peer) = view.peer(m.out_peer) else {
                self.finish(i, v, Next::Drop, Reason::NoRoute);
                continue;
            };
            let Some(kp) = view.keypair(peer.current) else {
                self.finish(i, v, Next::Punt, Reason::NoKeypair);
                continue;
            };
            let outer_ip = match peer.endpoint_family {
                4 => 20,
                6 => 40,
                _ => {
                    self.finish(i, v, Next::Punt, Reason::NoEndpoint);
                    continue;
                }
            };
            // SAFETY: forwarded from the caller of `process`.
            let Some(mut p) = (unsafe { pkt(b) }) else {
                self.finish(i, v, Next::Drop, Reason::Malformed);
                continue;
            };
            let hdr = outer_ip + 8 + WG_DATA_HEADER;
            let padded = p.len.div_ceil(16) * 16;
            if p.start < hdr {
                self.finish(i, v, Next::Drop, Reason::NoHeadroom);
                continue;
            }
            if p.all.len() - p.start < padded + TAG_LEN {
                self.finish(i, v, Next::Drop, Reason::NoTailroom);
                continue;
            }
            let Some(st) = seg.keypair_state(peer.current) else {
                self.finish(i, v, Next::Drop, Reason::Internal);
                continue;
            };
            // SeqCst pairs with the writer's reset order (install_id, then counter): a
            // counter taken after a reset is always seen with the new install_id.
            let counter = st.send_counter.fetch_add(1, Ordering::SeqCst);
            if counter >= REJECT_AFTER_MESSAGES
                || st.install_id.load(Ordering::SeqCst) != kp.install_id
            {
                self.finish(i, v, Next::Punt, Reason::KeypairExhausted);
                continue;
            }
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
                c.tx_packets += 1;
                c.tx_bytes += inner_len as u64;
            }
            if let Some(c) = self.tenant_counters.get_mut(m.tenant as usize) {
                c.tx_packets += 1;
                c.tx_bytes += inner_len as u64;
            }
        }
    }
}
