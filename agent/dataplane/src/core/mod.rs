//! The sans-IO WireGuard core: peers, cryptokey routing, the inbound filter, counters.
//!
//! Inputs are byte buffers and `now`; outputs are datagrams to send ([`TxBatch`]) and IP
//! packets for the TUN ([`TunBatch`]). No sockets, no threads, no clock reads of its own
//! (boringtun's `Tunn` reads the monotonic clock internally for its protocol timers).
//!
//! All methods take `&self` so that the shell's I/O threads can share one `Core`: the peer
//! set and the filter are immutable snapshots swapped with arc-swap; each peer's mutable
//! state (its `Tunn`, endpoint) sits behind a mutex that a batch takes once per peer.

pub mod flows;
pub mod lpm;
pub mod packet;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use cvlan_policy::{Action, Filter, Matcher};

use crate::{Counters, PeerConfig};
use flows::FlowCache;
use lpm::Lpm;

/// Packets handled per internal chunk (bounded stack arrays, no allocation).
pub const MAX_BATCH: usize = 128;

/// WireGuard data message overhead: type, receiver, counter (16) + AEAD tag (16).
pub const DATA_OVERHEAD: usize = 32;

/// Room an encapsulation needs beyond the plaintext (the handshake initiation is 148 bytes).
const fn encap_room(plain: usize) -> usize {
    if plain + DATA_OVERHEAD > 148 {
        plain + DATA_OVERHEAD
    } else {
        148
    }
}

/// Handshakes per second before boringtun's rate limiter demands cookies (both our
/// pre-dispatch check and the `Tunn` count each handshake once).
const HANDSHAKE_RATE_LIMIT: u64 = 200;

const MSG_HANDSHAKE_INIT: u32 = 1;
const MSG_HANDSHAKE_RESP: u32 = 2;
const MSG_COOKIE_REPLY: u32 = 3;
const MSG_DATA: u32 = 4;

const NO_PEER: u32 = u32::MAX;

/// Datagrams to send: contiguous bytes plus (offset, length, destination) items, so that
/// runs of equal-size datagrams to one destination can go out as one UDP GSO send.
pub struct TxBatch {
    buf: Vec<u8>,
    pos: usize,
    items: Vec<TxItem>,
}

/// One datagram of a [`TxBatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxItem {
    /// Offset in the batch's bytes.
    pub start: usize,
    /// Length.
    pub len: usize,
    /// Destination.
    pub dst: SocketAddr,
}

impl TxBatch {
    /// A batch holding up to `bytes` bytes of datagrams (allocated once, here).
    pub fn new(bytes: usize) -> Self {
        Self {
            buf: vec![0; bytes],
            pos: 0,
            items: Vec::with_capacity(bytes / 64 + 1),
        }
    }

    /// Empties the batch (keeps its memory).
    pub fn clear(&mut self) {
        self.pos = 0;
        self.items.clear();
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The datagrams, in order.
    pub fn items(&self) -> &[TxItem] {
        &self.items
    }

    /// All bytes (index with [`TxItem::start`]/[`TxItem::len`]).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Free space for the next datagram, if at least `need` bytes are left and there is room
    /// for another item (the item list never reallocates).
    fn spare(&mut self, need: usize) -> Option<&mut [u8]> {
        if self.buf.len() - self.pos >= need && self.items.len() < self.items.capacity() {
            Some(&mut self.buf[self.pos..])
        } else {
            None
        }
    }

    /// Appends the `len` bytes just written into [`Self::spare`].
    fn commit(&mut self, len: usize, dst: SocketAddr) {
        self.items.push(TxItem {
            start: self.pos,
            len,
            dst,
        });
        self.pos += len;
    }
}

/// Received datagrams, filled by the shell: bytes plus (offset, length, source) items.
pub struct RxBatch {
    /// The bytes the items point into.
    pub buf: Vec<u8>,
    /// The datagrams.
    pub items: Vec<RxItem>,
}

/// One datagram of an [`RxBatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxItem {
    /// Offset in [`RxBatch::buf`].
    pub start: usize,
    /// Length.
    pub len: usize,
    /// Sender (IPv4-mapped IPv6 addresses already turned into IPv4).
    pub src: SocketAddr,
}

/// Decrypted packets for the TUN: one buffer per packet with `offset` bytes of headroom (for
/// the virtio-net header) and capacity for GRO coalescing by the shell.
pub struct TunBatch {
    bufs: Vec<Vec<u8>>,
    len: usize,
    offset: usize,
}

impl TunBatch {
    /// `count` buffers of `capacity` bytes each with `offset` bytes of headroom.
    pub fn new(count: usize, offset: usize, capacity: usize) -> Self {
        Self {
            bufs: (0..count).map(|_| Vec::with_capacity(capacity)).collect(),
            len: 0,
            offset,
        }
    }

    /// The filled buffers (packet at `[offset..]`), for the shell to write and then
    /// [`Self::clear`]. The shell may grow or shrink them (GRO coalescing).
    pub fn filled_mut(&mut self) -> &mut [Vec<u8>] {
        &mut self.bufs[..self.len]
    }

    /// The packets, without headroom.
    pub fn packets(&self) -> impl Iterator<Item = &[u8]> {
        self.bufs[..self.len].iter().map(|b| &b[self.offset..])
    }

    /// Number of packets.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no packets.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The headroom in front of each packet.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Forgets the packets (keeps the buffers).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The next free buffer sized to `offset + need` bytes (only grows within capacity after
    /// the first use, so no allocation), or `None` when full.
    fn next(&mut self, need: usize) -> Option<&mut Vec<u8>> {
        let b = self.bufs.get_mut(self.len)?;
        let want = self.offset + need;
        if want > b.capacity() {
            return None;
        }
        b.resize(want, 0);
        Some(b)
    }

    fn commit(&mut self, plain_len: usize) {
        let off = self.offset;
        if let Some(b) = self.bufs.get_mut(self.len) {
            b.truncate(off + plain_len);
            self.len += 1;
        }
    }
}

/// Per-peer status as the core knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorePeerStats {
    /// Public key.
    pub public_key: [u8; 32],
    /// Display name.
    pub name: String,
    /// Current endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Time since the current session's handshake, if there is a session.
    pub since_handshake: Option<Duration>,
    /// Plaintext bytes delivered from the peer.
    pub rx_bytes: u64,
    /// Plaintext bytes sent to the peer.
    pub tx_bytes: u64,
    /// Packets delivered from the peer.
    pub rx_packets: u64,
    /// Packets sent to the peer.
    pub tx_packets: u64,
}

/// Mutable per-peer state, behind the peer's mutex.
struct PeerState {
    tunn: Tunn,
    endpoint: Option<SocketAddr>,
    configured_endpoint: Option<SocketAddr>,
    keepalive: Option<u16>,
    last_sent: Option<Instant>,
}

/// A peer's session: survives peer-set updates that keep its public key.
struct Session {
    index: u32,
    state: Mutex<PeerState>,
    rx_bytes: AtomicU64,
    tx_bytes: AtomicU64,
    rx_packets: AtomicU64,
    tx_packets: AtomicU64,
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, PeerState> {
        // a panic while holding the lock cannot leave a Tunn half-updated in a way that is
        // worse than dropping the peer's traffic; keep going
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Peer {
    public_key: [u8; 32],
    name: String,
    session: Arc<Session>,
}

/// An immutable peer set with its lookup tables.
#[derive(Default)]
struct PeerTable {
    peers: Vec<Peer>,
    /// allowed IPs → position in `peers`
    routes: Lpm<u32>,
    /// (session index, position) sorted by index
    by_index: Vec<(u32, u32)>,
    by_key: HashMap<[u8; 32], u32>,
}

impl PeerTable {
    fn peer_by_index(&self, receiver: u32) -> u32 {
        let idx = receiver >> 8;
        match self.by_index.binary_search_by_key(&idx, |(i, _)| *i) {
            Ok(p) => self.by_index[p].1,
            Err(_) => NO_PEER,
        }
    }
}

#[derive(Default)]
struct AtomicCounters {
    dropped_malformed: AtomicU64,
    dropped_filtered: AtomicU64,
    dropped_no_peer: AtomicU64,
    dropped_bad_source: AtomicU64,
    dropped_no_endpoint: AtomicU64,
    handshakes: AtomicU64,
    handshakes_sent: AtomicU64,
    cookies_sent: AtomicU64,
    rx_datagrams: AtomicU64,
    tx_datagrams: AtomicU64,
    tun_rx_packets: AtomicU64,
    tun_tx_packets: AtomicU64,
    io_errors: AtomicU64,
}

macro_rules! each_counter {
    ($m:ident) => {
        $m!(
            dropped_malformed,
            dropped_filtered,
            dropped_no_peer,
            dropped_bad_source,
            dropped_no_endpoint,
            handshakes,
            handshakes_sent,
            cookies_sent,
            rx_datagrams,
            tx_datagrams,
            tun_rx_packets,
            tun_tx_packets,
            io_errors
        )
    };
}

impl AtomicCounters {
    fn add(&self, c: &Counters) {
        macro_rules! add {
            ($($f:ident),*) => {$(
                if c.$f != 0 {
                    self.$f.fetch_add(c.$f, Ordering::Relaxed);
                }
            )*};
        }
        each_counter!(add);
    }

    fn snapshot(&self) -> Counters {
        let mut c = Counters::default();
        macro_rules! load {
            ($($f:ident),*) => {$( c.$f = self.$f.load(Ordering::Relaxed); )*};
        }
        each_counter!(load);
        c
    }
}

/// The WireGuard core. See the module docs.
pub struct Core {
    secret: StaticSecret,
    public: PublicKey,
    limiter: Arc<RateLimiter>,
    peers: ArcSwap<PeerTable>,
    filter: ArcSwap<Matcher>,
    flows: FlowCache,
    counters: AtomicCounters,
    next_index: AtomicU32,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last rate-limiter reset.
    limiter_reset_ms: AtomicU64,
    /// Serialises peer-set writers (readers never take it).
    writer: Mutex<()>,
}

/// Maps IPv4-mapped IPv6 socket addresses (from a dual-stack socket) to plain IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

fn msg_type(d: &[u8]) -> u32 {
    match d.get(..4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

fn receiver_index(d: &[u8], at: usize) -> u32 {
    match d.get(at..at + 4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

impl Core {
    /// A core with our static private key and no peers; the inbound filter denies
    /// everything until [`Core::set_filter`].
    pub fn new(private_key: [u8; 32], now: Instant) -> Self {
        let secret = StaticSecret::from(private_key);
        let public = PublicKey::from(&secret);
        let start = std::collections::hash_map::RandomState::new().hash_one(now) as u32;
        Self {
            limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            secret,
            public,
            peers: ArcSwap::from_pointee(PeerTable::default()),
            filter: ArcSwap::from_pointee(Matcher::new(&Filter::default())),
            flows: FlowCache::new(),
            counters: AtomicCounters::default(),
            next_index: AtomicU32::new(start & 0x00ff_ffff),
            epoch: now,
            limiter_reset_ms: AtomicU64::new(0),
            writer: Mutex::new(()),
        }
    }

    /// Our public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    fn secs(&self, now: Instant) -> u32 {
        // +1 so that 0 never means "now" in the flow cache
        now.saturating_duration_since(self.epoch).as_secs() as u32 + 1
    }

    /// Replaces the peer set. Peers whose public key stays keep their session (and learned
    /// endpoint, unless the configured endpoint changed); new keys get a fresh `Tunn`.
    /// Duplicate keys: the first wins. Our own key is ignored.
    pub fn set_peers(&self, peers: &[PeerConfig], _now: Instant) {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.peers.load_full();
        let mut table = PeerTable::default();
        let me = self.public.to_bytes();
        for cfg in peers {
            if cfg.public_key == me || table.by_key.contains_key(&cfg.public_key) {
                continue;
            }
            let session = match old.by_key.get(&cfg.public_key) {
                Some(&pos) => {
                    let s = old.peers[pos as usize].session.clone();
                    {
                        let mut st = s.lock();
                        if st.configured_endpoint != cfg.endpoint {
                            st.configured_endpoint = cfg.endpoint;
                            if cfg.endpoint.is_some() {
                                st.endpoint = cfg.endpoint;
                            }
                        }
                        st.keepalive = cfg.persistent_keepalive.filter(|k| *k > 0);
                    }
                    s
                }
                None => Arc::new(self.new_session(cfg)),
            };
            let pos = table.peers.len() as u32;
            for net in &cfg.allowed_ips {
                table.routes.insert(net.trunc(), pos);
            }
            table.by_index.push((session.index, pos));
            table.by_key.insert(cfg.public_key, pos);
            table.peers.push(Peer {
                public_key: cfg.public_key,
                name: cfg.name.clone(),
                session,
            });
        }
        table.by_index.sort_unstable();
        self.peers.store(Arc::new(table));
    }

    fn new_session(&self, cfg: &PeerConfig) -> Session {
        // 24-bit indices: boringtun puts a session counter in the low 8 bits
        let index = self.next_index.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
        let tunn = Tunn::new(
            self.secret.clone(),
            PublicKey::from(cfg.public_key),
            None,
            // persistent keepalive is ours (driven by `now`, changeable without a new Tunn)
            None,
            index,
            Some(self.limiter.clone()),
        );
        Session {
            index,
            state: Mutex::new(PeerState {
                tunn,
                endpoint: cfg.endpoint,
                configured_endpoint: cfg.endpoint,
                keepalive: cfg.persistent_keepalive.filter(|k| *k > 0),
                last_sent: None,
            }),
            rx_bytes: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            rx_packets: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
        }
    }

    /// Replaces the inbound filter (compiled once here, then read lock-free).
    pub fn set_filter(&self, filter: &Filter) {
        self.filter.store(Arc::new(Matcher::new(filter)));
    }

    /// Counter snapshot.
    pub fn counters(&self) -> Counters {
        self.counters.snapshot()
    }

    /// Adds I/O error counts observed by the shell (the only counter the core cannot see).
    pub fn count_io_errors(&self, n: u64) {
        self.counters.io_errors.fetch_add(n, Ordering::Relaxed);
    }

    /// Per-peer status.
    pub fn peer_stats(&self) -> Vec<CorePeerStats> {
        let table = self.peers.load();
        table
            .peers
            .iter()
            .map(|p| {
                let s = &p.session;
                let (endpoint, since_handshake) = {
                    let st = s.lock();
                    (st.endpoint, st.tunn.time_since_last_handshake())
                };
                CorePeerStats {
                    public_key: p.public_key,
                    name: p.name.clone(),
                    endpoint,
                    since_handshake,
                    rx_bytes: s.rx_bytes.load(Ordering::Relaxed),
                    tx_bytes: s.tx_bytes.load(Ordering::Relaxed),
                    rx_packets: s.rx_packets.load(Ordering::Relaxed),
                    tx_packets: s.tx_packets.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Encapsulates IP packets read from the TUN: packet `i` is
    /// `bufs[i][offset..offset + sizes[i]]`, for `i < count`. Encrypted datagrams (and
    /// handshake initiations for peers without a session) are appended to `out`.
    #[allow(clippy::needless_range_loop)] // peer_of is indexed alongside the packets
    pub fn handle_tun_packets<B: AsRef<[u8]>>(
        &self,
        bufs: &[B],
        sizes: &[usize],
        offset: usize,
        count: usize,
        out: &mut TxBatch,
        now: Instant,
    ) {
        let count = count.min(bufs.len()).min(sizes.len());
        let table = self.peers.load();
        let now_secs = self.secs(now);
        let mut c = Counters::default();
        let mut base = 0;
        while base < count {
            let n = (count - base).min(MAX_BATCH);
            let pkt = |i: usize| -> &[u8] {
                let b = bufs[base + i].as_ref();
                b.get(offset..offset + sizes[base + i]).unwrap_or(&[])
            };
            let mut peer_of = [NO_PEER; MAX_BATCH];
            let mut last: Option<(IpAddr, u32)> = None;
            let mut last_flow = None;
            c.tun_tx_packets += n as u64;
            for (i, slot) in peer_of.iter_mut().enumerate().take(n) {
                let p = pkt(i);
                let Some(parsed) = packet::parse(p) else {
                    c.dropped_malformed += 1;
                    continue;
                };
                // a GSO batch is mostly one flow: hash it once per run of packets
                if let Some(flow) = parsed.outbound_flow()
                    && last_flow != Some(flow)
                {
                    self.flows.record(&flow, now_secs);
                    last_flow = Some(flow);
                }
                let peer = match last {
                    Some((dst, peer)) if dst == parsed.dst => peer,
                    _ => {
                        let peer = table.routes.lookup(parsed.dst).unwrap_or(NO_PEER);
                        last = Some((parsed.dst, peer));
                        peer
                    }
                };
                if peer == NO_PEER {
                    c.dropped_no_peer += 1;
                }
                *slot = peer;
            }
            // one lock per peer per chunk; packets of a peer keep their order
            for i in 0..n {
                let p = peer_of[i];
                if p == NO_PEER {
                    continue;
                }
                let session = &table.peers[p as usize].session;
                let mut st = session.lock();
                let (mut bytes, mut pkts) = (0u64, 0u64);
                for j in i..n {
                    if peer_of[j] != p {
                        continue;
                    }
                    peer_of[j] = NO_PEER;
                    let src = pkt(j);
                    let Some(ep) = st.endpoint else {
                        c.dropped_no_endpoint += 1;
                        continue;
                    };
                    let Some(dst) = out.spare(encap_room(src.len())) else {
                        c.io_errors += 1;
                        continue;
                    };
                    match st.tunn.encapsulate(src, dst) {
                        TunnResult::WriteToNetwork(d) => {
                            let len = d.len();
                            if msg_type(d) == MSG_HANDSHAKE_INIT {
                                c.handshakes_sent += 1;
                            } else {
                                bytes += src.len() as u64;
                                pkts += 1;
                            }
                            out.commit(len, ep);
                        }
                        // queued until the handshake in progress completes
                        TunnResult::Done => {}
                        TunnResult::Err(_) => c.dropped_malformed += 1,
                        TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => {}
                    }
                }
                st.last_sent = Some(now);
                drop(st);
                if pkts > 0 {
                    session.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
                    session.tx_packets.fetch_add(pkts, Ordering::Relaxed);
                }
            }
            base += n;
        }
        self.counters.add(&c);
    }

    /// Handles received datagrams: data for the TUN goes to `tun`, protocol replies
    /// (handshake responses, cookies, keepalives, packets queued during a handshake) to `net`.
    /// Anything malformed, unauthenticated, replayed, from an unknown peer, from a source
    /// outside the peer's allowed IPs or denied by the filter is dropped and counted.
    #[allow(clippy::needless_range_loop)] // peer_of is indexed alongside the datagrams
    pub fn handle_datagrams(
        &self,
        rx: &RxBatch,
        tun: &mut TunBatch,
        net: &mut TxBatch,
        now: Instant,
    ) {
        let table = self.peers.load();
        let filter = self.filter.load();
        let now_secs = self.secs(now);
        let mut c = Counters::default();
        let items = &rx.items;
        let mut base = 0;
        while base < items.len() {
            let n = (items.len() - base).min(MAX_BATCH);
            let dgram = |i: usize| -> &[u8] {
                let it = &items[base + i];
                rx.buf.get(it.start..it.start + it.len).unwrap_or(&[])
            };
            let mut peer_of = [NO_PEER; MAX_BATCH];
            c.rx_datagrams += n as u64;
            for (i, slot) in peer_of.iter_mut().enumerate().take(n) {
                let d = dgram(i);
                let src = items[base + i].src;
                *slot = match (msg_type(d), d.len()) {
                    (MSG_DATA, l) if l >= DATA_OVERHEAD => {
                        table.peer_by_index(receiver_index(d, 4))
                    }
                    (MSG_HANDSHAKE_RESP, 92) | (MSG_COOKIE_REPLY, 64) => {
                        let at = if msg_type(d) == MSG_HANDSHAKE_RESP {
                            8
                        } else {
                            4
                        };
                        table.peer_by_index(receiver_index(d, at))
                    }
                    (MSG_HANDSHAKE_INIT, 148) => {
                        match self.identify_initiator(&table, d, src, net, &mut c) {
                            Some(p) => p,
                            // already counted (bad MAC, cookie sent)
                            None => continue,
                        }
                    }
                    _ => {
                        c.dropped_malformed += 1;
                        continue;
                    }
                };
                if *slot == NO_PEER {
                    c.dropped_no_peer += 1;
                }
            }
            for i in 0..n {
                let p = peer_of[i];
                if p == NO_PEER {
                    continue;
                }
                let session = &table.peers[p as usize].session;
                let mut st = session.lock();
                let (mut bytes, mut pkts) = (0u64, 0u64);
                let mut flush_queue = false;
                for j in i..n {
                    if peer_of[j] != p {
                        continue;
                    }
                    peer_of[j] = NO_PEER;
                    let d = dgram(j);
                    let src = items[base + j].src;
                    let ty = msg_type(d);
                    // boringtun panics when the plaintext does not fit: check first
                    let off = tun.offset;
                    let Some(buf) = tun.next(d.len()) else {
                        c.dropped_malformed += 1;
                        continue;
                    };
                    match st.tunn.decapsulate(Some(src.ip()), d, &mut buf[off..]) {
                        TunnResult::WriteToNetwork(reply) => {
                            let len = reply.len();
                            if let Some(spare) = net.spare(len) {
                                spare[..len].copy_from_slice(reply);
                                net.commit(len, src);
                            } else {
                                c.io_errors += 1;
                            }
                            match ty {
                                MSG_HANDSHAKE_INIT => {
                                    c.handshakes += 1;
                                    c.handshakes_sent += 1;
                                }
                                MSG_HANDSHAKE_RESP => c.handshakes += 1,
                                _ => c.cookies_sent += 1,
                            }
                            st.endpoint = Some(src);
                            flush_queue = true;
                        }
                        TunnResult::WriteToTunnelV4(plain, from) => {
                            let len = plain.len();
                            if self.admit(
                                &table,
                                p,
                                IpAddr::V4(from),
                                plain,
                                &filter,
                                now_secs,
                                &mut c,
                            ) {
                                bytes += len as u64;
                                pkts += 1;
                                c.tun_rx_packets += 1;
                                tun.commit(len);
                            }
                            st.endpoint = Some(src);
                        }
                        TunnResult::WriteToTunnelV6(plain, from) => {
                            let len = plain.len();
                            if self.admit(
                                &table,
                                p,
                                IpAddr::V6(from),
                                plain,
                                &filter,
                                now_secs,
                                &mut c,
                            ) {
                                bytes += len as u64;
                                pkts += 1;
                                c.tun_rx_packets += 1;
                                tun.commit(len);
                            }
                            st.endpoint = Some(src);
                        }
                        TunnResult::Done => {
                            // keepalive (authenticated) or a cookie reply was absorbed
                            if ty == MSG_DATA {
                                st.endpoint = Some(src);
                            }
                        }
                        TunnResult::Err(WireGuardError::UnderLoad) => c.dropped_malformed += 1,
                        TunnResult::Err(_) => c.dropped_malformed += 1,
                    }
                }
                if flush_queue {
                    Self::flush_queued(&mut st, net);
                }
                drop(st);
                if pkts > 0 {
                    session.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
                    session.rx_packets.fetch_add(pkts, Ordering::Relaxed);
                }
            }
            base += n;
        }
        self.counters.add(&c);
    }

    /// Sends packets that boringtun queued while the handshake was in progress.
    fn flush_queued(st: &mut PeerState, net: &mut TxBatch) {
        let Some(ep) = st.endpoint else { return };
        // bounded: boringtun's queue holds at most 256 packets
        for _ in 0..512 {
            // a queued packet can be as large as a TUN read (boringtun panics if it does
            // not fit)
            let Some(spare) = net.spare(encap_room(u16::MAX as usize)) else {
                return;
            };
            match st.tunn.decapsulate(None, &[], spare) {
                TunnResult::WriteToNetwork(d) => {
                    let len = d.len();
                    net.commit(len, ep);
                }
                _ => return,
            }
        }
    }

    /// Finds the peer a handshake initiation comes from (after the rate limiter's MAC check;
    /// under load it answers with a cookie instead).
    fn identify_initiator(
        &self,
        table: &PeerTable,
        d: &[u8],
        src: SocketAddr,
        net: &mut TxBatch,
        c: &mut Counters,
    ) -> Option<u32> {
        let Some(spare) = net.spare(64) else {
            c.io_errors += 1;
            return None;
        };
        let packet = match self.limiter.verify_packet(Some(src.ip()), d, spare) {
            Ok(p) => p,
            Err(TunnResult::WriteToNetwork(cookie)) => {
                let len = cookie.len();
                net.commit(len, src);
                c.cookies_sent += 1;
                return None;
            }
            Err(_) => {
                c.dropped_malformed += 1;
                return None;
            }
        };
        let boringtun::noise::Packet::HandshakeInit(init) = packet else {
            c.dropped_malformed += 1;
            return None;
        };
        match parse_handshake_anon(&self.secret, &self.public, &init) {
            Ok(half) => Some(
                table
                    .by_key
                    .get(&half.peer_static_public)
                    .copied()
                    .unwrap_or(NO_PEER),
            ),
            Err(_) => {
                c.dropped_malformed += 1;
                None
            }
        }
    }

    /// The inbound checks for a decrypted packet from peer `p`.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &self,
        table: &PeerTable,
        p: u32,
        from: IpAddr,
        plain: &[u8],
        filter: &Matcher,
        now_secs: u32,
        c: &mut Counters,
    ) -> bool {
        if table.routes.lookup(from) != Some(p) {
            c.dropped_bad_source += 1;
            return false;
        }
        let Some(parsed) = packet::parse(plain) else {
            c.dropped_malformed += 1;
            return false;
        };
        if parsed.is_tcp_established() {
            return true;
        }
        if let Some(flow) = parsed.reply_to_flow()
            && self.flows.contains(&flow, now_secs)
        {
            return true;
        }
        let verdict = filter.decide(&cvlan_policy::Packet {
            src: parsed.src,
            dst: parsed.dst,
            proto: parsed.proto,
            dst_port: parsed.dst_port(),
        });
        if verdict == Action::Allow {
            true
        } else {
            c.dropped_filtered += 1;
            false
        }
    }

    /// Drives handshake retries, rekeys, keepalives and persistent keepalives; call every
    /// ~100–250 ms. Datagrams to send go to `out`.
    pub fn update_timers(&self, now: Instant, out: &mut TxBatch) {
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        if ms.saturating_sub(self.limiter_reset_ms.load(Ordering::Relaxed)) >= 1000 {
            self.limiter_reset_ms.store(ms, Ordering::Relaxed);
            self.limiter.reset_count();
        }
        let table = self.peers.load();
        let mut c = Counters::default();
        for peer in &table.peers {
            let mut st = peer.session.lock();
            let Some(spare) = out.spare(encap_room(0)) else {
                break;
            };
            if let TunnResult::WriteToNetwork(d) = st.tunn.update_timers(spare) {
                {
                    let len = d.len();
                    if msg_type(d) == MSG_HANDSHAKE_INIT {
                        c.handshakes_sent += 1;
                    }
                    match st.endpoint {
                        Some(ep) => {
                            out.commit(len, ep);
                            st.last_sent = Some(now);
                        }
                        None => c.dropped_no_endpoint += 1,
                    }
                }
            }
            if let (Some(k), Some(ep)) = (st.keepalive, st.endpoint) {
                let due = st.last_sent.is_none_or(|t| {
                    now.saturating_duration_since(t) >= Duration::from_secs(k.into())
                });
                if due && let Some(spare) = out.spare(encap_room(0)) {
                    if let TunnResult::WriteToNetwork(d) = st.tunn.encapsulate(&[], spare) {
                        let len = d.len();
                        if msg_type(d) == MSG_HANDSHAKE_INIT {
                            c.handshakes_sent += 1;
                        }
                        out.commit(len, ep);
                    }
                    st.last_sent = Some(now);
                }
            }
        }
        self.counters.add(&c);
    }

    /// Counts datagrams the shell actually sent.
    pub fn count_sent(&self, n: u64) {
        self.counters.tx_datagrams.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::packet::build;
    use super::*;
    use cvlan_policy::{FilterRule, PortRange, Proto};
    use proptest::prelude::*;

    const EP_A: &str = "192.0.2.1:51820";
    const EP_B: &str = "192.0.2.2:51820";

    fn keys(seed: u8) -> ([u8; 32], [u8; 32]) {
        let private = [seed; 32];
        let public = PublicKey::from(&StaticSecret::from(private)).to_bytes();
        (private, public)
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("prefix")
    }
    use ipnet::IpNet;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn allow_all() -> Filter {
        Filter {
            rules: vec![FilterRule {
                sources: vec![net("0.0.0.0/0"), net("::/0")],
                destinations: vec![net("0.0.0.0/0"), net("::/0")],
                proto: Proto::Any,
                ports: Vec::new(),
                action: Action::Allow,
            }],
        }
    }

    /// Two cores that know each other: a = 10.0.0.1, b = 10.0.0.2.
    fn pair(now: Instant) -> (Core, Core) {
        let (pa, ka) = keys(1);
        let (pb, kb) = keys(2);
        let a = Core::new(pa, now);
        let b = Core::new(pb, now);
        a.set_peers(
            &[PeerConfig {
                public_key: kb,
                name: "b".into(),
                endpoint: Some(EP_B.parse().expect("ep")),
                allowed_ips: vec![net("10.0.0.2/32")],
                persistent_keepalive: None,
            }],
            now,
        );
        b.set_peers(
            &[PeerConfig {
                public_key: ka,
                name: "a".into(),
                endpoint: None,
                allowed_ips: vec![net("10.0.0.1/32")],
                persistent_keepalive: None,
            }],
            now,
        );
        (a, b)
    }

    struct Out {
        tun: Vec<Vec<u8>>,
        net: TxBatch,
    }

    fn send_ip(core: &Core, pkts: &[Vec<u8>], now: Instant) -> TxBatch {
        let mut out = TxBatch::new(1 << 20);
        let sizes: Vec<usize> = pkts.iter().map(Vec::len).collect();
        core.handle_tun_packets(pkts, &sizes, 0, pkts.len(), &mut out, now);
        out
    }

    fn deliver(tx: &TxBatch, from: &str, to: &Core, now: Instant) -> Out {
        let mut rx = RxBatch {
            buf: tx.bytes().to_vec(),
            items: Vec::new(),
        };
        for it in tx.items() {
            rx.items.push(RxItem {
                start: it.start,
                len: it.len,
                src: from.parse().expect("addr"),
            });
        }
        let mut tun = TunBatch::new(MAX_BATCH, 10, 70_000);
        let mut net = TxBatch::new(1 << 20);
        to.handle_datagrams(&rx, &mut tun, &mut net, now);
        Out {
            tun: tun.packets().map(<[u8]>::to_vec).collect(),
            net,
        }
    }

    /// Runs the handshake by sending `first` from a; returns what b delivered.
    fn connect(a: &Core, b: &Core, first: Vec<u8>, now: Instant) -> Vec<Vec<u8>> {
        let init = send_ip(a, &[first], now);
        assert_eq!(init.items().len(), 1, "a sends a handshake initiation");
        let resp = deliver(&init, EP_A, b, now);
        assert!(resp.tun.is_empty());
        let fin = deliver(&resp.net, EP_B, a, now);
        assert!(fin.tun.is_empty());
        // keepalive + the queued packet
        let got = deliver(&fin.net, EP_A, b, now);
        got.tun
    }

    fn ping(src: &str, dst: &str, id: u16) -> Vec<u8> {
        build::ip(ip(src), ip(dst), 1, &build::icmp_msg(8, id))
    }

    #[test]
    fn a_packet_queued_during_the_handshake_arrives_after_it() {
        let now = Instant::now();
        let (a, b) = pair(now);
        b.set_filter(&allow_all());
        let p = ping("10.0.0.1", "10.0.0.2", 1);
        assert_eq!(connect(&a, &b, p.clone(), now), vec![p]);
        assert_eq!(a.counters().handshakes, 1);
        assert_eq!(b.counters().handshakes, 1);
        // b learned a's endpoint from the handshake
        assert_eq!(b.peer_stats()[0].endpoint, Some(EP_A.parse().expect("ep")));
    }

    #[test]
    fn a_batch_of_packets_is_encrypted_in_order_and_delivered() {
        let now = Instant::now();
        let (a, b) = pair(now);
        b.set_filter(&allow_all());
        connect(&a, &b, ping("10.0.0.1", "10.0.0.2", 1), now);
        let pkts: Vec<Vec<u8>> = (0..300u16)
            .map(|i| {
                build::ip(
                    ip("10.0.0.1"),
                    ip("10.0.0.2"),
                    17,
                    &build::udp(i, 9, &[i as u8; 1000]),
                )
            })
            .collect();
        let tx = send_ip(&a, &pkts, now);
        assert_eq!(tx.items().len(), 300);
        let got = deliver(&tx, EP_A, &b, now);
        // the TunBatch holds MAX_BATCH packets; the rest are counted as dropped
        assert_eq!(got.tun, pkts[..MAX_BATCH].to_vec());
        let stats = &b.peer_stats()[0];
        assert_eq!(stats.rx_packets, MAX_BATCH as u64 + 1);
    }

    #[test]
    fn default_filter_denies_new_inbound_flows_but_not_replies_or_established_tcp() {
        let now = Instant::now();
        let (a, b) = pair(now);
        // b: default deny
        let got = connect(&a, &b, ping("10.0.0.1", "10.0.0.2", 1), now);
        assert!(got.is_empty());
        assert_eq!(b.counters().dropped_filtered, 1);
        // b pings a; a (default deny) drops the request...
        let a_from_b = |pkt: Vec<u8>| deliver(&send_ip(&b, &[pkt], now), EP_B, &a, now).tun;
        assert!(a_from_b(ping("10.0.0.2", "10.0.0.1", 7)).is_empty());
        // ...but b accepts the echo reply to its own request
        let b_from_a = |pkt: Vec<u8>| deliver(&send_ip(&a, &[pkt], now), EP_A, &b, now).tun;
        let reply = build::ip(ip("10.0.0.1"), ip("10.0.0.2"), 1, &build::icmp_msg(0, 7));
        assert_eq!(b_from_a(reply.clone()), vec![reply]);
        let wrong_id = build::ip(ip("10.0.0.1"), ip("10.0.0.2"), 1, &build::icmp_msg(0, 8));
        assert!(b_from_a(wrong_id).is_empty());
        // TCP: SYN denied, ACK passes as established
        let syn = build::ip(
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            6,
            &build::tcp(1000, 22, 0x02),
        );
        assert!(b_from_a(syn).is_empty());
        let ack = build::ip(
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            6,
            &build::tcp(1000, 22, 0x10),
        );
        assert_eq!(b_from_a(ack.clone()), vec![ack]);
        // a rule opens port 22
        b.set_filter(&Filter {
            rules: vec![FilterRule {
                sources: vec![net("10.0.0.1/32")],
                destinations: vec![net("10.0.0.2/32")],
                proto: Proto::Tcp,
                ports: vec![PortRange {
                    first: 22,
                    last: 22,
                }],
                action: Action::Allow,
            }],
        });
        let syn = build::ip(
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            6,
            &build::tcp(1000, 22, 0x02),
        );
        assert_eq!(b_from_a(syn.clone()), vec![syn]);
    }

    #[test]
    fn a_source_outside_the_peers_allowed_ips_is_dropped() {
        let now = Instant::now();
        let (a, b) = pair(now);
        b.set_filter(&allow_all());
        connect(&a, &b, ping("10.0.0.1", "10.0.0.2", 1), now);
        let spoofed = ping("10.0.0.66", "10.0.0.2", 2);
        let got = deliver(&send_ip(&a, &[spoofed], now), EP_A, &b, now);
        assert!(got.tun.is_empty());
        assert_eq!(b.counters().dropped_bad_source, 1);
    }

    #[test]
    fn a_packet_to_no_peer_is_counted() {
        let now = Instant::now();
        let (a, _b) = pair(now);
        let out = send_ip(&a, &[ping("10.0.0.1", "10.0.0.3", 1), vec![0x45, 0]], now);
        assert!(out.is_empty());
        let c = a.counters();
        assert_eq!((c.dropped_no_peer, c.dropped_malformed), (1, 1));
    }

    #[test]
    fn replacing_the_peer_set_keeps_the_session_and_roamed_endpoint() {
        let now = Instant::now();
        let (a, b) = pair(now);
        b.set_filter(&allow_all());
        connect(&a, &b, ping("10.0.0.1", "10.0.0.2", 1), now);
        // a roams to a new address: b follows after an authenticated packet
        let roamed = "198.51.100.7:4444";
        let p = ping("10.0.0.1", "10.0.0.2", 2);
        assert_eq!(
            deliver(&send_ip(&a, std::slice::from_ref(&p), now), roamed, &b, now).tun,
            vec![p]
        );
        assert_eq!(
            b.peer_stats()[0].endpoint,
            Some(roamed.parse().expect("ep"))
        );
        let (_, ka) = keys(1);
        let (_, kc) = keys(3);
        b.set_peers(
            &[
                PeerConfig {
                    public_key: kc,
                    name: "c".into(),
                    endpoint: None,
                    allowed_ips: vec![net("10.0.0.3/32")],
                    persistent_keepalive: None,
                },
                PeerConfig {
                    public_key: ka,
                    name: "a2".into(),
                    endpoint: None,
                    allowed_ips: vec![net("10.0.0.1/32")],
                    persistent_keepalive: None,
                },
            ],
            now,
        );
        let p = ping("10.0.0.1", "10.0.0.2", 3);
        assert_eq!(
            deliver(&send_ip(&a, std::slice::from_ref(&p), now), roamed, &b, now).tun,
            vec![p]
        );
        let stats = b.peer_stats();
        let pa = stats.iter().find(|s| s.public_key == ka).expect("a");
        assert_eq!(pa.endpoint, Some(roamed.parse().expect("ep")));
        assert_eq!(b.counters().handshakes, 1);
    }

    #[test]
    fn persistent_keepalive_is_sent_on_the_callers_clock() {
        let now = Instant::now();
        let (a, b) = pair(now);
        b.set_filter(&allow_all());
        connect(&a, &b, ping("10.0.0.1", "10.0.0.2", 1), now);
        // turning keepalive on keeps the session
        let (_, kb) = keys(2);
        a.set_peers(
            &[PeerConfig {
                public_key: kb,
                name: "b".into(),
                endpoint: Some(EP_B.parse().expect("ep")),
                allowed_ips: vec![net("10.0.0.2/32")],
                persistent_keepalive: Some(25),
            }],
            now,
        );
        let mut out = TxBatch::new(1 << 16);
        a.update_timers(now + Duration::from_secs(10), &mut out);
        assert!(out.is_empty());
        a.update_timers(now + Duration::from_secs(26), &mut out);
        assert_eq!(out.items().len(), 1);
        assert_eq!(out.items()[0].len, DATA_OVERHEAD, "an empty data message");
        let got = deliver(&out, EP_A, &b, now);
        assert!(got.tun.is_empty());
        assert_eq!(b.counters().dropped_malformed, 0);
        out.clear();
        a.update_timers(now + Duration::from_secs(30), &mut out);
        assert!(out.is_empty());
    }

    fn datagram_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            // well-formed headers with random bodies, at the sizes boringtun accepts
            (1u8..=4, prop::collection::vec(any::<u8>(), 0..1600)).prop_map(|(ty, body)| {
                let len = match ty {
                    1 => 148,
                    2 => 92,
                    3 => 64,
                    _ => 32 + body.len(),
                };
                let mut d = vec![0u8; len];
                d[0] = ty;
                for (i, b) in body.iter().enumerate().take(len.saturating_sub(4)) {
                    d[4 + i] = *b;
                }
                d
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Hostile datagrams (random, or real ones with bytes flipped) never panic, never
        /// reach the TUN, and are all counted.
        #[test]
        fn hostile_datagrams_are_dropped_and_counted(
            random in prop::collection::vec(datagram_strategy(), 1..20),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            index_guess in any::<bool>(),
        ) {
            let now = Instant::now();
            let (a, b) = pair(now);
            b.set_filter(&allow_all());
            connect(&a, &b, ping("10.0.0.1", "10.0.0.2", 1), now);
            let before = b.counters();
            // a real data packet with flipped bytes
            let real = send_ip(&a, &[ping("10.0.0.1", "10.0.0.2", 2)], now);
            let it = real.items()[0];
            let mut corrupted = real.bytes()[it.start..it.start + it.len].to_vec();
            for (at, x) in &flips {
                let i = at.index(corrupted.len());
                corrupted[i] ^= x | 1;
            }
            let mut all = random.clone();
            if index_guess {
                // aim random data messages at the live session's receiver index
                for d in all.iter_mut().filter(|d| d.len() >= 32 && d[0] == 4) {
                    d[4..8].copy_from_slice(&corrupted[4..8]);
                }
            }
            all.push(corrupted);
            let mut tx = TxBatch::new(1 << 20);
            for d in &all {
                let spare = tx.spare(d.len()).expect("room");
                spare[..d.len()].copy_from_slice(d);
                tx.commit(d.len(), EP_B.parse().expect("ep"));
            }
            let got = deliver(&tx, EP_A, &b, now);
            prop_assert!(got.tun.is_empty());
            let after = b.counters();
            let dropped = (after.dropped_malformed - before.dropped_malformed)
                + (after.dropped_no_peer - before.dropped_no_peer);
            // a random handshake initiation can only draw a cookie reply, never a session
            let cookies = after.cookies_sent - before.cookies_sent;
            prop_assert_eq!(dropped + cookies, all.len() as u64);
            prop_assert_eq!(after.handshakes, before.handshakes);
        }
    }
}
