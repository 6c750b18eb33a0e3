//! `cvlan-bench fastpath`: the gateway forward path (wg-decrypt → acl → route → wg-encrypt)
//! on one pinned core, against two baselines measured in the same run: the AEAD limit (ring
//! ChaCha20-Poly1305 open + seal of the same sizes, nothing else) and boringtun's `Tunn`
//! (decapsulate + encapsulate).
//!
//! Only `Worker::process` is timed for the fast path; building and encrypting the input
//! batch (fresh counters each time, so the replay window accepts them) happens outside.
//! The AEAD limit of a row is measured in the same loop as its fast-path batches (one AEAD
//! batch after each), so that the ratio holds up when other jobs share the machine.
//! Besides the uniformly random peer choice, `--train N` adds rows for 100,000 peers in
//! which each (source, destination) pair sends N consecutive packets.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use cvlan_fastpath::{Buf, INGRESS_UNDERLAY, MAX_BATCH, Next, Verdict, Worker};
use cvlan_tables::layout::Underlay;
use cvlan_tables::{
    AclRuleSpec, KeypairSpec, PeerSpec, Prefix, Segment, SegmentParams, TableBuilder, TenantSpec,
};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::Serialize;

/// Arguments of `cvlan-bench fastpath`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Short run (< 30 s): fewer packets per configuration.
    #[arg(long)]
    quick: bool,
    /// Write the rows as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG plot of packets/s vs packet size to this file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// CPU to pin the benchmark thread to.
    #[arg(long, default_value_t = 1)]
    cpu: usize,
    /// Only run fast-path rows with this many peers (for profiling one configuration).
    #[arg(long)]
    only_peers: Option<usize>,
    /// Only run fast-path rows with this many ACL rules.
    #[arg(long)]
    only_rules: Option<usize>,
    /// Only run this packet size ("64", "512", "1420" or "imix"), baselines included.
    #[arg(long)]
    only_size: Option<String>,
    /// Packets per flow train in the extra "trains" rows (100,000 peers only): consecutive
    /// packets of one (source peer, destination peer) pair, as TCP bursts and NIC/GRO
    /// batching deliver them. 0 disables those rows; the uniformly random rows always run.
    #[arg(long, default_value_t = 8)]
    train: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Size {
    Fixed(usize),
    /// 7 × 64 B, 4 × 576 B, 1 × 1420 B.
    Imix,
}

impl Size {
    fn label(self) -> String {
        match self {
            Size::Fixed(n) => n.to_string(),
            Size::Imix => "imix".into(),
        }
    }

    /// Inner IP packet size of the i-th packet.
    fn nth(self, i: usize) -> usize {
        match self {
            Size::Fixed(n) => n,
            Size::Imix => [64, 64, 64, 64, 64, 64, 64, 576, 576, 576, 576, 1420][i % 12],
        }
    }

    fn mean(self) -> f64 {
        (0..12).map(|i| self.nth(i) as f64).sum::<f64>() / 12.0
    }
}

const SIZES: [Size; 4] = [
    Size::Fixed(64),
    Size::Fixed(512),
    Size::Fixed(1420),
    Size::Imix,
];
const PEERS: [usize; 3] = [1, 1000, 100_000];
const RULES: [usize; 3] = [0, 100, 10_000];
const HEADROOM: usize = 128;
const BUF_SIZE: usize = 2048;
const GW: [u8; 4] = [192, 0, 2, 1];

#[derive(Serialize, Clone, Debug)]
struct Row {
    size: serde_json::Value,
    mean_bytes: f64,
    peers: usize,
    rules: usize,
    /// "random": every packet from and to a uniformly random peer; "trainsN": the same
    /// choice once per N consecutive packets.
    traffic: String,
    fastpath_pps: f64,
    aead_pps: f64,
    boringtun_pps: f64,
    batch_p50_us: f64,
    batch_p99_us: f64,
    /// Median ns per packet in wg-decrypt, acl, route, wg-encrypt (from the worker's TSC
    /// node clocks).
    node_ns_per_packet: [f64; 4],
}

#[derive(Serialize)]
struct Report {
    rows: Vec<Row>,
}

fn pin(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads `set` for its size.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        bail!(
            "sched_setaffinity(cpu {cpu}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// xorshift64*: cheap, deterministic traffic selection.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn peer_ip(i: usize) -> u32 {
    0x0a00_0000 + i as u32 + 1
}

fn key_for(i: usize, dir: u8) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(i as u64).to_le_bytes());
    k[8] = dir;
    k[31] = 0x5a;
    k
}

fn v4(a: u32, len: u8) -> Prefix {
    Prefix::new(std::net::IpAddr::V4(std::net::Ipv4Addr::from(a)), len)
}

/// A policy-compiler-like rule set: `rules - 1` rules over /16, /24 and /32 source and
/// destination prefixes inside 10/8 for other ports, then the rule that permits the bench
/// traffic last — so every packet pays for the whole classifier (worst-case priority).
fn acl_rules(n: usize, rng: &mut Rng) -> Vec<AclRuleSpec> {
    let lens = [16u8, 24, 32];
    let mut rules = Vec::with_capacity(n);
    for _ in 0..n.saturating_sub(1) {
        let src_len = lens[rng.below(3)];
        let dst_len = lens[rng.below(3)];
        let port = 1 + rng.below(4000) as u16;
        rules.push(AclRuleSpec {
            v6: false,
            src: u128::from(0x0a00_0000 | (rng.next() as u32 & 0x00ff_ffff)),
            src_len,
            dst: u128::from(0x0a00_0000 | (rng.next() as u32 & 0x00ff_ffff)),
            dst_len,
            proto: Some(if rng.below(2) == 0 { 6 } else { 17 }),
            sport: (0, u16::MAX),
            dport: (port, port),
            permit: rng.below(2) == 0,
            established: false,
        });
    }
    if n > 0 {
        rules.push(AclRuleSpec {
            v6: false,
            src: 0x0a00_0000,
            src_len: 8,
            dst: 0x0a00_0000,
            dst_len: 8,
            proto: Some(17),
            sport: (0, u16::MAX),
            dport: (5000, 5000),
            permit: true,
            established: false,
        });
    }
    rules
}

struct Setup {
    worker: Worker,
    _seg: Segment,
    /// Per peer: the key the remote peer sends with (= the gateway's receive key).
    peer_send: Vec<LessSafeKey>,
    peer_counter: Vec<u64>,
    peers: usize,
}

fn setup(peers: usize, rules: usize) -> Result<Setup> {
    let cap = (peers.next_power_of_two()).max(2) as u32;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ rules as u64);
    let peer_specs: Vec<PeerSpec> = (0..peers)
        .map(|i| PeerSpec {
            id: i as u64,
            tenant: 0,
            endpoint: Some(std::net::SocketAddr::from((
                [198, 18, (i >> 8) as u8, i as u8],
                51820,
            ))),
            public_key: [0; 32],
            allowed_ips: vec![v4(peer_ip(i), 32)],
            current: Some(KeypairSpec {
                receiver_index: i as u32 | 0x4000_0000,
                remote_index: i as u32,
                send_key: key_for(i, 1),
                recv_key: key_for(i, 0),
                install_id: i as u64 + 1,
            }),
            ..Default::default()
        })
        .collect();
    let tables = TableBuilder {
        underlay: Underlay {
            addr4: GW,
            port: 51820,
            ..Default::default()
        },
        tenants: vec![TenantSpec {
            id: 1,
            default_permit: rules == 0,
            local_iface: 0,
            routes: vec![],
            acl: acl_rules(rules, &mut rng),
        }],
        peers: peer_specs,
    };
    let image = tables.build(cap).context("building tables")?;
    let params = SegmentParams {
        keypair_capacity: cap,
        slot_size: image.len() + 4096,
        max_workers: 1,
    };
    let mut seg = Segment::create_memfd("cvlan-bench", params)?;
    seg.publish(&image)?;
    let worker = Worker::new(Segment::from_file(seg.file().try_clone()?)?, 0)?;
    let peer_send = (0..peers)
        .map(|i| {
            UnboundKey::new(&CHACHA20_POLY1305, &key_for(i, 0))
                .map(LessSafeKey::new)
                .map_err(|_| anyhow::anyhow!("key"))
        })
        .collect::<Result<_>>()?;
    Ok(Setup {
        worker,
        _seg: seg,
        peer_send,
        peer_counter: vec![0; peers],
        peers,
    })
}

fn nonce(c: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&c.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes an IPv4/UDP header for `payload_len` bytes of payload at `b[..28]`.
fn ipv4_udp_header(b: &mut [u8], src: u32, dst: u32, sport: u16, dport: u16, payload_len: usize) {
    let total = (28 + payload_len) as u16;
    b[..12].copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    b[2..4].copy_from_slice(&total.to_be_bytes());
    b[12..16].copy_from_slice(&src.to_be_bytes());
    b[16..20].copy_from_slice(&dst.to_be_bytes());
    let ck = ip_checksum(&b[..20]);
    b[10..12].copy_from_slice(&ck.to_be_bytes());
    b[20..22].copy_from_slice(&sport.to_be_bytes());
    b[22..24].copy_from_slice(&dport.to_be_bytes());
    b[24..26].copy_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    b[26..28].copy_from_slice(&[0, 0]);
}

/// Fills `mem` (one BUF_SIZE region per packet) with encrypted datagrams from random peers
/// to random peers and returns the descriptors.
#[allow(clippy::too_many_arguments)]
fn prepare(
    s: &mut Setup,
    size: Size,
    rng: &mut Rng,
    seq: &mut Option<usize>,
    train: usize,
    mem: &mut [u8],
    bufs: &mut Vec<Buf>,
) -> Result<()> {
    bufs.clear();
    let (mut from, mut to) = (0, 0);
    for (k, region) in mem.chunks_exact_mut(BUF_SIZE).enumerate() {
        if k % train.max(1) == 0 || seq.is_some() {
            from = match seq {
                Some(n) => {
                    *n += 1;
                    (*n - 1) % s.peers
                }
                None => rng.below(s.peers),
            };
            to = if s.peers > 1 { rng.below(s.peers) } else { 0 };
        }
        let inner_len = size.nth(k);
        let padded = inner_len.div_ceil(16) * 16;
        let outer_off = HEADROOM - 44; // outer IPv4 + UDP + WireGuard header
        let inner_off = HEADROOM;
        region[inner_off..inner_off + padded].fill(0);
        ipv4_udp_header(
            &mut region[inner_off..],
            peer_ip(from),
            peer_ip(to),
            4000,
            5000,
            inner_len - 28,
        );
        let counter = s.peer_counter[from];
        s.peer_counter[from] += 1;
        let tag = s.peer_send[from]
            .seal_in_place_separate_tag(
                nonce(counter),
                Aad::empty(),
                &mut region[inner_off..inner_off + padded],
            )
            .map_err(|_| anyhow::anyhow!("seal"))?;
        region[inner_off + padded..inner_off + padded + 16].copy_from_slice(tag.as_ref());
        let wg = outer_off + 28;
        region[wg..wg + 4].copy_from_slice(&[4, 0, 0, 0]);
        region[wg + 4..wg + 8].copy_from_slice(&(from as u32 | 0x4000_0000).to_le_bytes());
        region[wg + 8..wg + 16].copy_from_slice(&counter.to_le_bytes());
        let wg_len = 16 + padded + 16;
        ipv4_udp_header(
            &mut region[outer_off..],
            0xc612_0000 | from as u32,
            u32::from_be_bytes(GW),
            51820,
            51820,
            wg_len,
        );
        let len = 28 + wg_len;
        bufs.push(Buf {
            data: region[outer_off..].as_mut_ptr(),
            len: len as u32,
            headroom: outer_off as u32,
            tailroom: (BUF_SIZE - outer_off - len) as u32,
            ingress: INGRESS_UNDERLAY,
        });
    }
    Ok(())
}

/// Packets/s from the median time of a 256-packet batch: robust against other processes
/// preempting the pinned core (this machine is shared), and the same rule for all three
/// columns.
fn median_pps(h: &Histogram<u64>) -> f64 {
    MAX_BATCH as f64 * 1e9 / h.value_at_quantile(0.5).max(1) as f64
}

struct Measured {
    pps: f64,
    /// The AEAD limit measured in the same loop, one AEAD batch after every fast-path batch,
    /// so that both see the same load on this shared machine.
    aead_pps: f64,
    p50_us: f64,
    p99_us: f64,
    node_ns: [f64; 4],
}

/// TSC ticks per nanosecond, measured against the monotonic clock.
fn tsc_per_ns() -> f64 {
    let (t0, c0) = (Instant::now(), cvlan_fastpath::abi::ticks());
    std::thread::sleep(Duration::from_millis(30));
    let (dt, dc) = (t0.elapsed(), cvlan_fastpath::abi::ticks().wrapping_sub(c0));
    (dc as f64 / dt.as_nanos() as f64).max(1e-9)
}

fn bench_fastpath(
    s: &mut Setup,
    size: Size,
    train: usize,
    budget: Duration,
    tsc: f64,
) -> Result<Measured> {
    let mut rng = Rng(0x1234_5678 ^ s.peers as u64);
    let mut mem = vec![0u8; BUF_SIZE * MAX_BATCH];
    let mut bufs = Vec::with_capacity(MAX_BATCH);
    let mut verdicts = vec![
        Verdict {
            next: 0,
            reason: 0,
            aux: 0
        };
        MAX_BATCH
    ];
    let mut hist = Histogram::<u64>::new(3)?;
    let mut aead_hist = Histogram::<u64>::new(3)?;
    let mut aead = Aead::new()?;
    let mut node_hist: Vec<Histogram<u64>> = (0..4)
        .map(|_| Histogram::<u64>::new(3))
        .collect::<Result<_, _>>()?;
    let (mut busy, mut packets) = (Duration::ZERO, 0u64);
    // Warm-up: every peer sends once (steady state of a gateway with all peers active:
    // replay windows and counters touched), then a few batches more.
    let mut warm = s.peers.div_ceil(MAX_BATCH) + 3;
    let mut seq = Some(0usize);
    while busy < budget {
        if warm <= 3 {
            seq = None;
        }
        prepare(s, size, &mut rng, &mut seq, train, &mut mem, &mut bufs)?;
        let before = s.worker.stats().node_ticks;
        let t0 = Instant::now();
        // SAFETY: every descriptor points into `mem`, which outlives the call and is not
        // otherwise accessed during it.
        let n = unsafe { s.worker.process(&mut bufs, &mut verdicts) };
        let dt = t0.elapsed();
        if let Some(bad) = verdicts[..n]
            .iter()
            .find(|v| v.next != Next::Underlay as u16)
        {
            bail!("bench traffic not forwarded: {bad:?}");
        }
        if warm > 0 {
            warm -= 1;
            continue;
        }
        busy += dt;
        packets += n as u64;
        hist.record(dt.as_nanos() as u64)?;
        aead_hist.record(aead.batch(size)?.as_nanos() as u64)?;
        let after = s.worker.stats().node_ticks;
        for (k, h) in node_hist.iter_mut().enumerate() {
            h.record(after[k].wrapping_sub(before[k]).max(1))?;
        }
    }
    let _mean_pps = packets as f64 / busy.as_secs_f64();
    Ok(Measured {
        pps: median_pps(&hist),
        aead_pps: median_pps(&aead_hist),
        p50_us: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: hist.value_at_quantile(0.99) as f64 / 1000.0,
        node_ns: std::array::from_fn(|k| {
            node_hist[k].value_at_quantile(0.5) as f64 / tsc / MAX_BATCH as f64
        }),
    })
}

/// The AEAD limit: one ChaCha20-Poly1305 open and one seal per packet of the same padded
/// size, one key, one hot buffer, nothing else.
struct Aead {
    key: LessSafeKey,
    buf: Vec<u8>,
    counter: u64,
}

impl Aead {
    fn new() -> Result<Self> {
        Ok(Self {
            key: LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32])
                    .map_err(|_| anyhow::anyhow!("key"))?,
            ),
            buf: vec![0u8; BUF_SIZE],
            counter: 0,
        })
    }

    /// Times one batch of `MAX_BATCH` open + seal pairs.
    fn batch(&mut self, size: Size) -> Result<Duration> {
        let tb = Instant::now();
        for i in 0..MAX_BATCH {
            let len = size.nth(i).div_ceil(16) * 16;
            let tag = self
                .key
                .seal_in_place_separate_tag(nonce(self.counter), Aad::empty(), &mut self.buf[..len])
                .map_err(|_| anyhow::anyhow!("seal"))?;
            self.buf[len..len + 16].copy_from_slice(tag.as_ref());
            self.key
                .open_in_place(nonce(self.counter), Aad::empty(), &mut self.buf[..len + 16])
                .map_err(|_| anyhow::anyhow!("open"))?;
            self.counter += 1;
        }
        Ok(tb.elapsed())
    }
}

fn bt_result(r: TunnResult<'_>) -> Result<Vec<u8>> {
    match r {
        TunnResult::WriteToNetwork(p) => Ok(p.to_vec()),
        TunnResult::Done => Ok(Vec::new()),
        TunnResult::Err(e) => bail!("boringtun: {e:?}"),
        TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => Ok(p.to_vec()),
    }
}

/// boringtun: `Tunn::encapsulate` on one side, `Tunn::decapsulate` on the other, per packet.
fn bench_boringtun(size: Size, budget: Duration) -> Result<f64> {
    let (ka, kb) = (StaticSecret::from([1u8; 32]), StaticSecret::from([2u8; 32]));
    let (pa, pb) = (PublicKey::from(&ka), PublicKey::from(&kb));
    let mut a = Tunn::new(ka, pb, None, None, 1, None);
    let mut b = Tunn::new(kb, pa, None, None, 2, None);
    let mut out = vec![0u8; BUF_SIZE];
    let mut out2 = vec![0u8; BUF_SIZE];
    let init = bt_result(a.format_handshake_initiation(&mut out, false))?;
    let resp = bt_result(b.decapsulate(None, &init, &mut out))?;
    let _keepalive = bt_result(a.decapsulate(None, &resp, &mut out))?;
    let mut inner = vec![0u8; BUF_SIZE];
    let mut checked = false;
    let mut hist = Histogram::<u64>::new(3)?;
    let t0 = Instant::now();
    while t0.elapsed() < budget {
        let tb = Instant::now();
        for i in 0..MAX_BATCH {
            let len = size.nth(i);
            ipv4_udp_header(&mut inner, peer_ip(0), peer_ip(1), 4000, 5000, len - 28);
            let wire = match a.encapsulate(&inner[..len], &mut out) {
                TunnResult::WriteToNetwork(p) => p,
                other => bail!("boringtun encapsulate: {:?}", bt_result(other).err()),
            };
            match b.decapsulate(None, wire, &mut out2) {
                TunnResult::WriteToTunnelV4(p, _) => {
                    if !checked {
                        anyhow::ensure!(p.len() == len, "boringtun round trip");
                        checked = true;
                    }
                }
                other => bail!("boringtun decapsulate: {:?}", bt_result(other).err()),
            }
        }
        hist.record(tb.elapsed().as_nanos() as u64)?;
    }
    Ok(median_pps(&hist))
}

/// The size column as printed ("64", …, "imix").
fn row_label(r: &Row) -> String {
    match &r.size {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn write_svg(rows: &[Row], path: &PathBuf) -> Result<()> {
    let (w, h, ml, mr, mt, mb) = (760.0, 440.0, 70.0, 210.0, 40.0, 50.0);
    let pw = w - ml - mr;
    let ph = h - mt - mb;
    let xs: Vec<String> = SIZES.iter().map(|s| s.label()).collect();
    type Pick = fn(&Row) -> f64;
    type Series = (&'static str, &'static str, Pick, Option<(usize, usize)>);
    let series: Vec<Series> = vec![
        (
            "AEAD limit (ring open+seal)",
            "#444444",
            |r| r.aead_pps,
            Some((1, 0)),
        ),
        (
            "fastpath 1 peer, 0 rules",
            "#1f77b4",
            |r| r.fastpath_pps,
            Some((1, 0)),
        ),
        (
            "fastpath 100k peers, 10k rules",
            "#d62728",
            |r| r.fastpath_pps,
            Some((100_000, 10_000)),
        ),
        (
            "boringtun Tunn pair",
            "#2ca02c",
            |r| r.boringtun_pps,
            Some((1, 0)),
        ),
    ];
    let pick_rows = |peers: usize, rules: usize| -> Vec<Option<&Row>> {
        SIZES
            .iter()
            .map(|s| {
                rows.iter().find(|r| {
                    r.peers == peers
                        && r.rules == rules
                        && r.traffic == "random"
                        && row_label(r) == s.label()
                })
            })
            .collect()
    };
    let ymax = rows
        .iter()
        .flat_map(|r| [r.fastpath_pps, r.aead_pps, r.boringtun_pps])
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.1
        / 1e6;
    let x_of = |i: usize| ml + pw * (i as f64 + 0.5) / xs.len() as f64;
    let y_of = |v: f64| mt + ph - ph * (v / 1e6) / ymax;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">cvlan-bench fastpath: forwarded packets/s vs packet size (one core)</text>"#,
        w / 2.0
    );
    let _ = writeln!(
        s,
        r#"<line x1="{ml}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{ml}" y1="{mt}" x2="{ml}" y2="{}" stroke="black"/>"#,
        mt + ph,
        ml + pw,
        mt + ph,
        mt + ph
    );
    for k in 0..=5 {
        let v = ymax * k as f64 / 5.0;
        let y = mt + ph - ph * k as f64 / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{ml}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#dddddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.2}</text>"##,
            ml + pw,
            ml - 6.0,
            y + 4.0
        );
    }
    for (i, x) in xs.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{x}</text>"#,
            x_of(i),
            mt + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">inner packet size (bytes)</text>"#,
        ml + pw / 2.0,
        h - 10.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">Mpps</text>"#,
        mt + ph / 2.0,
        mt + ph / 2.0
    );
    for (k, (name, color, pick, sel)) in series.iter().enumerate() {
        let (peers, rules) = sel.unwrap_or((1, 0));
        let pts: Vec<String> = pick_rows(peers, rules)
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.map(|r| format!("{:.1},{:.1}", x_of(i), y_of(pick(r)))))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        for p in &pts {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(s, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
        }
        let ly = mt + 10.0 + k as f64 * 20.0;
        let lx = ml + pw + 12.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{name}</text>"#,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

/// Runs the benchmark.
///
/// # Errors
/// Pinning, table setup, or a packet that is not forwarded (a broken bench).
pub fn run(args: Args) -> Result<()> {
    pin(args.cpu).or_else(|e| {
        eprintln!("warning: {e}; falling back to CPU 0");
        pin(0)
    })?;
    let budget = if args.quick {
        Duration::from_millis(90)
    } else {
        Duration::from_millis(800)
    };
    let sizes: Vec<Size> = SIZES
        .into_iter()
        .filter(|s| args.only_size.as_ref().is_none_or(|o| *o == s.label()))
        .collect();
    if sizes.is_empty() {
        bail!("--only-size: expected 64, 512, 1420 or imix");
    }
    // (peers, rules, packets per train): the random rows, then the train rows.
    let mut configs: Vec<(usize, usize, usize)> = Vec::new();
    for peers in PEERS
        .into_iter()
        .filter(|p| args.only_peers.is_none_or(|o| o == *p))
    {
        for rules in RULES
            .into_iter()
            .filter(|r| args.only_rules.is_none_or(|o| o == *r))
        {
            configs.push((peers, rules, 1));
        }
    }
    if args.train > 1 {
        let trains: Vec<_> = configs
            .iter()
            .filter(|c| c.0 == 100_000)
            .map(|c| (c.0, c.1, args.train))
            .collect();
        configs.extend(trains);
    }
    let total = (configs.len() * sizes.len() + sizes.len()) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let tsc = tsc_per_ns();
    let mut bt = Vec::new();
    for size in &sizes {
        bar.set_message(format!("boringtun {}", size.label()));
        bt.push(bench_boringtun(*size, budget)?);
        bar.inc(1);
    }
    let mut rows = Vec::new();
    for (peers, rules, train) in configs {
        bar.set_message(format!("tables: {peers} peers, {rules} rules"));
        let mut s = setup(peers, rules)?;
        let traffic = if train > 1 {
            format!("trains{train}")
        } else {
            "random".to_string()
        };
        for (si, size) in sizes.iter().enumerate() {
            bar.set_message(format!(
                "fastpath {peers} peers {rules} rules {traffic} {}",
                size.label()
            ));
            let m = bench_fastpath(&mut s, *size, train, budget, tsc)?;
            rows.push(Row {
                size: match size {
                    Size::Fixed(n) => serde_json::json!(n),
                    Size::Imix => serde_json::json!("imix"),
                },
                mean_bytes: size.mean(),
                peers,
                rules,
                traffic: traffic.clone(),
                fastpath_pps: m.pps,
                aead_pps: m.aead_pps,
                boringtun_pps: bt[si],
                batch_p50_us: m.p50_us,
                batch_p99_us: m.p99_us,
                node_ns_per_packet: m.node_ns,
            });
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "size",
        "peers",
        "rules",
        "traffic",
        "fastpath Mpps",
        "batch p50 µs",
        "batch p99 µs",
        "AEAD Mpps",
        "boringtun Mpps",
        "fastpath/AEAD",
        "fastpath/boringtun",
        "ns/pkt dec·acl·route·enc",
        "AEAD pair ns/pkt",
    ]);
    for r in &rows {
        table.add_row(vec![
            row_label(r),
            r.peers.to_string(),
            r.rules.to_string(),
            r.traffic.clone(),
            format!("{:.3}", r.fastpath_pps / 1e6),
            format!("{:.1}", r.batch_p50_us),
            format!("{:.1}", r.batch_p99_us),
            format!("{:.3}", r.aead_pps / 1e6),
            format!("{:.3}", r.boringtun_pps / 1e6),
            format!("{:.1} %", 100.0 * r.fastpath_pps / r.aead_pps),
            format!("{:.2}×", r.fastpath_pps / r.boringtun_pps),
            r.node_ns_per_packet.map(|x| format!("{x:.0}")).join("·"),
            format!("{:.0}", 1e9 / r.aead_pps),
        ]);
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{table}");
        for size in [Size::Fixed(1420), Size::Fixed(64)] {
            if let Some(r) = rows.iter().find(|r| {
                r.peers == 100_000
                    && r.rules == 10_000
                    && r.traffic == "random"
                    && row_label(r) == size.label()
            }) {
                let goal = if size == Size::Fixed(1420) {
                    95.0
                } else {
                    90.0
                };
                let pct = 100.0 * r.fastpath_pps / r.aead_pps;
                println!(
                    "goal {} B, 100k peers, 10k rules: {pct:.1} % of the AEAD limit (target ≥ {goal} %): {}",
                    size.label(),
                    if pct >= goal { "met" } else { "missed" }
                );
            }
        }
    }
    if let Some(p) = &args.json {
        let json = serde_json::to_string_pretty(&Report { rows: rows.clone() })?;
        std::fs::write(p, json).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.svg {
        write_svg(&rows, p)?;
    }
    Ok(())
}
