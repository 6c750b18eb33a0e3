//! The read side (no_std): attach to a mapped segment, enter/leave a generation with the
//! acknowledgement protocol, and the lookups the fast path runs on a generation.
//!
//! Reclamation protocol: a reader loads `active`, stores its generation into its own
//! [`WorkerAck`](crate::layout::WorkerAck), then loads `active` again and only uses the
//! generation if it is unchanged (all `SeqCst`). The writer stores `active` and then scans the
//! acknowledgements (`SeqCst`): a slot whose generation is neither active nor acknowledged can
//! never be entered again, so it is safe to overwrite.

use core::mem::size_of;
use core::sync::atomic::{AtomicU64, Ordering};

use zerocopy::FromBytes;

use crate::layout::{
    ABI_VERSION, ACL_FLAG_ESTABLISHED, AclBucket, AclRef, AclRule, AclTuple, EspSa, GEN_MAGIC,
    GenHeader, Keypair, KeypairState, LpmEntry, LpmLevel, LpmRef, MAX_WORKERS, NONE, Peer, PeerKey,
    SEG_MAGIC, SLOTS, Section, SegmentHeader, TCP_ACK_OR_RST, Tenant, Underlay,
};

/// Why a segment or generation was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The mapping is smaller than the header or than `segment_size`.
    TooSmall,
    /// Wrong magic: not a CloudVLAN table segment.
    BadMagic,
    /// Written by an incompatible ABI version.
    AbiMismatch,
    /// A slot, section or reference lies outside the mapping or is misaligned.
    OutOfBounds,
    /// The worker id is not below `max_workers`.
    BadWorker,
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = match self {
            Self::TooSmall => "segment smaller than its header says",
            Self::BadMagic => "not a CloudVLAN table segment",
            Self::AbiMismatch => "table ABI version mismatch",
            Self::OutOfBounds => "section out of bounds or misaligned",
            Self::BadWorker => "worker id out of range",
        };
        f.write_str(s)
    }
}

/// Packs the `active` word.
#[must_use]
pub const fn pack_active(generation: u64, slot: usize) -> u64 {
    (generation << 8) | slot as u64
}

/// Unpacks the `active` word into (generation, slot).
#[must_use]
pub const fn unpack_active(word: u64) -> (u64, usize) {
    (word >> 8, (word & 0xff) as usize)
}

/// A validated view of a mapped segment. It never writes except to its own acknowledgement
/// and to [`KeypairState`] atomics.
#[derive(Clone, Copy)]
pub struct SegmentRef<'a> {
    header: &'a SegmentHeader,
    base: *const u8,
    len: usize,
    states: &'a [KeypairState],
}

// SAFETY: the referenced memory is shared memory accessed through atomics (header, states) or
// read-only slots that the writer does not modify while any reader can enter them.
unsafe impl Send for SegmentRef<'_> {}
// SAFETY: as above.
unsafe impl Sync for SegmentRef<'_> {}

impl<'a> SegmentRef<'a> {
    /// Validates the header of a mapped segment.
    ///
    /// # Safety
    /// `base` must point to `len` readable bytes, 64-byte aligned, that stay mapped for `'a`,
    /// written by this crate's writer (non-atomic parts are only written before publication).
    ///
    /// # Errors
    /// [`LayoutError`] when the header is not a compatible segment.
    pub unsafe fn from_raw(base: *const u8, len: usize) -> Result<Self, LayoutError> {
        if len < size_of::<SegmentHeader>() {
            return Err(LayoutError::TooSmall);
        }
        if !(base as usize).is_multiple_of(64) {
            return Err(LayoutError::OutOfBounds);
        }
        // SAFETY: size and alignment checked above; the caller guarantees validity for 'a.
        let header = unsafe { &*base.cast::<SegmentHeader>() };
        if header.magic != SEG_MAGIC {
            return Err(LayoutError::BadMagic);
        }
        if header.abi_version != ABI_VERSION
            || header.header_size as usize != size_of::<SegmentHeader>()
        {
            return Err(LayoutError::AbiMismatch);
        }
        if (header.segment_size as usize) > len {
            return Err(LayoutError::TooSmall);
        }
        let cap = header.keypair_capacity as usize;
        if !cap.is_power_of_two() || header.max_workers as usize > MAX_WORKERS {
            return Err(LayoutError::OutOfBounds);
        }
        let st_off = header.state_offset as usize;
        let st_end = cap
            .checked_mul(size_of::<KeypairState>())
            .and_then(|n| n.checked_add(st_off))
            .ok_or(LayoutError::OutOfBounds)?;
        if st_end > len || !st_off.is_multiple_of(64) {
            return Err(LayoutError::OutOfBounds);
        }
        for off in header.slot_offset {
            let end = (off as usize).checked_add(header.slot_size as usize);
            if end.is_none_or(|e| e > len) || off % 64 != 0 {
                return Err(LayoutError::OutOfBounds);
            }
        }
        // SAFETY: bounds and alignment checked above.
        let states =
            unsafe { core::slice::from_raw_parts(base.add(st_off).cast::<KeypairState>(), cap) };
        Ok(Self {
            header,
            base,
            len,
            states,
        })
    }

    /// The segment header.
    #[must_use]
    pub fn header(&self) -> &'a SegmentHeader {
        self.header
    }

    /// The keypair state record of a keypair slot.
    #[must_use]
    pub fn keypair_state(&self, slot: u32) -> Option<&'a KeypairState> {
        self.states.get(slot as usize)
    }

    /// Currently published generation number (0 = none yet).
    #[must_use]
    pub fn active_generation(&self) -> u64 {
        unpack_active(self.header.active.load(Ordering::Acquire)).0
    }

    /// Enters the active generation as worker `worker`. Never blocks: retries only while the
    /// writer publishes concurrently. Returns `Ok(None)` before the first publish.
    ///
    /// # Errors
    /// [`LayoutError`] for a bad worker id or a corrupt generation.
    pub fn enter(&self, worker: usize) -> Result<Option<GenView<'a>>, LayoutError> {
        let ack = self.ack(worker)?;
        loop {
            let word = self.header.active.load(Ordering::SeqCst);
            if word == 0 {
                return Ok(None);
            }
            let (generation, slot) = unpack_active(word);
            ack.store(generation, Ordering::SeqCst);
            if self.header.active.load(Ordering::SeqCst) == word {
                return match self.slot_view(slot) {
                    Ok(v) if v.generation() == generation => Ok(Some(v)),
                    Ok(_) => {
                        ack.store(0, Ordering::SeqCst);
                        Err(LayoutError::OutOfBounds)
                    }
                    Err(e) => {
                        ack.store(0, Ordering::SeqCst);
                        Err(e)
                    }
                };
            }
        }
    }

    /// Leaves the generation entered by [`enter`](Self::enter): from here on the writer may
    /// reclaim it. Views obtained from `enter` must not be used afterwards.
    ///
    /// # Errors
    /// [`LayoutError::BadWorker`] for a bad worker id.
    pub fn leave(&self, worker: usize) -> Result<(), LayoutError> {
        self.ack(worker)?.store(0, Ordering::Release);
        Ok(())
    }

    fn ack(&self, worker: usize) -> Result<&'a AtomicU64, LayoutError> {
        if worker >= self.header.max_workers as usize {
            return Err(LayoutError::BadWorker);
        }
        self.header
            .workers
            .get(worker)
            .map(|w| &w.generation)
            .ok_or(LayoutError::BadWorker)
    }

    /// Validates and views generation slot `slot` (no acknowledgement: the caller must have
    /// entered it, or be the writer).
    ///
    /// # Errors
    /// [`LayoutError`] when the slot content is inconsistent.
    pub fn slot_view(&self, slot: usize) -> Result<GenView<'a>, LayoutError> {
        if slot >= SLOTS {
            return Err(LayoutError::OutOfBounds);
        }
        let off = self.header.slot_offset[slot] as usize;
        let size = self.header.slot_size as usize;
        if off + size > self.len {
            return Err(LayoutError::OutOfBounds);
        }
        // SAFETY: in bounds of the mapping (checked in from_raw and here); the protocol
        // guarantees the writer does not modify an entered slot.
        let bytes = unsafe { core::slice::from_raw_parts(self.base.add(off), size) };
        GenView::parse(bytes, self.header.keypair_capacity)
    }
}

fn section<T: FromBytes + zerocopy::Immutable + zerocopy::KnownLayout>(
    bytes: &[u8],
    s: Section,
) -> Result<&[T], LayoutError> {
    let start = usize::try_from(s.offset).map_err(|_| LayoutError::OutOfBounds)?;
    let count = usize::try_from(s.count).map_err(|_| LayoutError::OutOfBounds)?;
    let end = count
        .checked_mul(size_of::<T>())
        .and_then(|n| n.checked_add(start))
        .ok_or(LayoutError::OutOfBounds)?;
    let b = bytes.get(start..end).ok_or(LayoutError::OutOfBounds)?;
    <[T]>::ref_from_bytes(b).map_err(|_| LayoutError::OutOfBounds)
}

/// The 5-tuple an ACL classifies. Addresses are `u128` (IPv4 in the low 32 bits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// Source address.
    pub src: u128,
    /// Destination address.
    pub dst: u128,
    /// IP protocol.
    pub proto: u8,
    /// Source port (0 when the protocol has none or for non-first fragments).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP flags byte (0 for other protocols and non-first fragments).
    pub tcp_flags: u8,
}

/// Whether a packet passes a rule's [`ACL_FLAG_ESTABLISHED`] condition.
#[inline]
#[must_use]
pub const fn established_ok(flags: u8, t: &FiveTuple) -> bool {
    flags & ACL_FLAG_ESTABLISHED == 0 || t.proto != 6 || t.tcp_flags & TCP_ACK_OR_RST != 0
}

/// Mask of the top `len` bits of a `bits`-wide address held in a `u128`.
#[inline]
#[must_use]
pub const fn prefix_mask(len: u32, bits: u32) -> u128 {
    // Clamped so that a corrupt length in a mapped table cannot overflow the shift.
    let bits = if bits > 128 { 128 } else { bits };
    let len = if len > bits { bits } else { len };
    if len == 0 {
        0
    } else {
        let full = if bits >= 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        (u128::MAX << (bits - len)) & full
    }
}

/// Splits a `u128` into the `[hi, lo]` form stored in records.
#[inline]
#[must_use]
pub const fn split(v: u128) -> [u64; 2] {
    [(v >> 64) as u64, v as u64]
}

/// Inverse of [`split`].
#[inline]
#[must_use]
pub const fn join(v: [u64; 2]) -> u128 {
    ((v[0] as u128) << 64) | v[1] as u128
}

/// Hash of a masked key (multiplicative, good on sequential addresses).
#[inline]
#[must_use]
pub const fn hash_key(k: u128) -> u64 {
    let x = ((k >> 64) as u64).rotate_left(23) ^ (k as u64);
    let h = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

/// Hash of an ACL bucket key: each address folded to 64 bits (free for IPv4, whose high
/// half is zero), then one multiply. Cheap because a packet hashes once per tuple; an IPv4
/// pair maps injectively to the multiplied word.
#[inline]
#[must_use]
pub const fn hash_pair(src: u128, dst: u128) -> u64 {
    let s = (src as u64) ^ ((src >> 64) as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    let d = (dst as u64) ^ ((dst >> 64) as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
    let h = (s.rotate_left(32) ^ d).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

/// Hints the CPU to pull `r`'s cache line in (never faults; a no-op off x86-64). Vector
/// nodes use it to overlap the table misses of the next packets with the current one.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint and cannot fault, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (r as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// A validated, read-only generation.
#[derive(Clone, Copy)]
pub struct GenView<'a> {
    header: &'a GenHeader,
    /// Tenants by slot.
    pub tenants: &'a [Tenant],
    /// Peers by slot.
    pub peers: &'a [Peer],
    /// Keypairs by `receiver_index & mask`.
    pub keypairs: &'a [Keypair],
    lpm_levels: &'a [LpmLevel],
    lpm_entries: &'a [LpmEntry],
    acl_tuples: &'a [AclTuple],
    acl_buckets: &'a [AclBucket],
    acl_rules: &'a [AclRule],
    acl_filters: &'a [u64],
    /// ESP SAs (reserved).
    pub esp_sas: &'a [EspSa],
    /// Peer public keys by peer slot.
    pub peer_keys: &'a [PeerKey],
    keypair_mask: u32,
}

impl<'a> GenView<'a> {
    /// Parses a generation image (a slot, or a builder's output).
    ///
    /// # Errors
    /// [`LayoutError`] when the image is inconsistent.
    pub fn parse(bytes: &'a [u8], keypair_capacity: u32) -> Result<Self, LayoutError> {
        let (header, _) =
            GenHeader::ref_from_prefix(bytes).map_err(|_| LayoutError::OutOfBounds)?;
        if header.magic != GEN_MAGIC {
            return Err(LayoutError::BadMagic);
        }
        let keypairs: &[Keypair] = section(bytes, header.keypairs)?;
        if header.keypair_capacity != keypair_capacity
            || keypairs.len() != keypair_capacity as usize
            || !keypairs.len().is_power_of_two()
        {
            return Err(LayoutError::OutOfBounds);
        }
        Ok(Self {
            header,
            tenants: section(bytes, header.tenants)?,
            peers: section(bytes, header.peers)?,
            keypairs,
            lpm_levels: section(bytes, header.lpm_levels)?,
            lpm_entries: section(bytes, header.lpm_entries)?,
            acl_tuples: section(bytes, header.acl_tuples)?,
            acl_buckets: section(bytes, header.acl_buckets)?,
            acl_rules: section(bytes, header.acl_rules)?,
            esp_sas: section(bytes, header.esp_sas)?,
            acl_filters: section(bytes, header.acl_filters)?,
            peer_keys: section(bytes, header.peer_keys)?,
            keypair_mask: keypair_capacity - 1,
        })
    }

    /// Generation number.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.header.generation
    }

    /// Outer source address/port.
    #[must_use]
    pub fn underlay(&self) -> &'a Underlay {
        &self.header.underlay
    }

    /// Keypair slot for a receiver index (direct index, no hash walk).
    #[inline]
    #[must_use]
    pub fn keypair_slot(&self, receiver_index: u32) -> u32 {
        receiver_index & self.keypair_mask
    }

    /// The active keypair whose receiver index is `receiver_index`.
    #[inline]
    #[must_use]
    pub fn keypair_by_receiver(&self, receiver_index: u32) -> Option<&'a Keypair> {
        let kp = self
            .keypairs
            .get(self.keypair_slot(receiver_index) as usize)?;
        (kp.receiver_index == receiver_index && kp.flags & crate::layout::FLAG_ACTIVE != 0)
            .then_some(kp)
    }

    /// Whether the ACL buckets of this generation exceed what stays cache-resident (L2), so
    /// that prefetching them ahead pays for the hashing it repeats.
    #[must_use]
    pub fn acl_is_large(&self) -> bool {
        core::mem::size_of_val(self.acl_filters) > 256 * 1024
    }

    /// Same for the LPM buckets.
    #[must_use]
    pub fn lpm_is_large(&self) -> bool {
        core::mem::size_of_val(self.lpm_entries) > 256 * 1024
    }

    /// Prefetches the keypair record of a receiver index.
    #[inline]
    pub fn prefetch_keypair(&self, receiver_index: u32) {
        if let Some(k) = self
            .keypairs
            .get(self.keypair_slot(receiver_index) as usize)
        {
            prefetch(k);
        }
    }

    /// Prefetches the first bucket each LPM level would probe for `addr`.
    #[inline]
    pub fn prefetch_lpm(&self, r: LpmRef, addr: u128, bits: u32) {
        let first = r.first_level as usize;
        let Some(levels) = self.lpm_levels.get(first..first + r.n_levels as usize) else {
            return;
        };
        let _ = bits;
        for lvl in levels {
            let key = addr & join(lvl.key_mask);
            let i = (hash_key(key) as u32) & lvl.mask;
            if let Some(e) = self
                .lpm_entries
                .get((lvl.first_entry as usize).saturating_add(i as usize))
            {
                prefetch(e);
            }
        }
    }

    /// Prefetches the route/allowed-IPs buckets of a tenant for `addr`.
    #[inline]
    pub fn prefetch_route(&self, tenant: &Tenant, addr: u128, is_v6: bool) {
        if is_v6 {
            self.prefetch_lpm(tenant.route6, addr, 128);
        } else {
            self.prefetch_lpm(tenant.route4, addr, 32);
        }
    }

    /// Prefetches the first bucket each ACL tuple would probe for `t`.
    #[inline]
    pub fn prefetch_acl(&self, tenant: &Tenant, t: &FiveTuple, is_v6: bool) {
        let r: AclRef = if is_v6 { tenant.acl6 } else { tenant.acl4 };
        let first = r.first_tuple as usize;
        let Some(tuples) = self.acl_tuples.get(first..first + r.n_tuples as usize) else {
            return;
        };
        for tp in tuples {
            let src = t.src & join(tp.src_mask);
            let dst = t.dst & join(tp.dst_mask);
            let h = hash_pair(src, dst);
            let fb = (h >> 32) as usize & tp.filter_mask as usize;
            let word = (tp.filter_first as usize).saturating_add(fb / 64);
            if let Some(w) = self.acl_filters.get(word) {
                prefetch(w);
            }
            let i = (h as u32) & tp.mask;
            if let Some(b) = self
                .acl_buckets
                .get((tp.first_bucket as usize).saturating_add(i as usize))
            {
                prefetch(b);
            }
        }
    }

    /// Longest-prefix match: returns the route value (peer slot or `ROUTE_LOCAL | iface`).
    #[inline]
    #[must_use]
    pub fn lpm(&self, r: LpmRef, addr: u128, bits: u32) -> Option<u32> {
        let first = r.first_level as usize;
        let levels = self.lpm_levels.get(first..first + r.n_levels as usize)?;
        let _ = bits;
        for lvl in levels {
            let key = addr & join(lvl.key_mask);
            let base = lvl.first_entry as usize;
            let mut i = (hash_key(key) as u32) & lvl.mask;
            // Bounded by the table size: a corrupt (full, or non-power-of-two mask) table
            // cannot hang a worker.
            let limit = lvl.mask.min(self.lpm_entries.len() as u32);
            for _ in 0..=limit {
                let e = self.lpm_entries.get(base.saturating_add(i as usize))?;
                if e.used == 0 {
                    break;
                }
                if join(e.key) == key {
                    return Some(e.value);
                }
                i = (i + 1) & lvl.mask;
            }
        }
        None
    }

    /// Route lookup in a tenant for an IPv4 (`is_v6 == false`) or IPv6 address.
    #[inline]
    #[must_use]
    pub fn route(&self, tenant: &Tenant, addr: u128, is_v6: bool) -> Option<u32> {
        if is_v6 {
            self.lpm(tenant.route6, addr, 128)
        } else {
            self.lpm(tenant.route4, addr, 32)
        }
    }

    /// First matching ACL rule as (rule index, action), or `None` (default action applies).
    #[inline]
    #[must_use]
    pub fn acl_classify(&self, tenant: &Tenant, t: &FiveTuple, is_v6: bool) -> Option<(u32, u8)> {
        let r: AclRef = if is_v6 { tenant.acl6 } else { tenant.acl4 };
        let first = r.first_tuple as usize;
        let tuples = self.acl_tuples.get(first..first + r.n_tuples as usize)?;
        let mut best: Option<(u32, u8)> = None;
        for tp in tuples {
            if best.is_some_and(|(b, _)| tp.min_index >= b) {
                break;
            }
            let src = t.src & join(tp.src_mask);
            let dst = t.dst & join(tp.dst_mask);
            let h = hash_pair(src, dst);
            let fb = (h >> 32) as usize & tp.filter_mask as usize;
            let word = (tp.filter_first as usize).saturating_add(fb / 64);
            if self
                .acl_filters
                .get(word)
                .is_none_or(|w| w & (1 << (fb % 64)) == 0)
            {
                continue;
            }
            if let Some(hit) = self.acl_tuple_probe(tp, src, dst, h, t, best) {
                best = Some(hit);
            }
        }
        best
    }

    /// [`acl_classify`](Self::acl_classify) for many packets of one tenant and family:
    /// `out[k]` receives the result for `packets[k]`. Tuple-major (each tuple's masks and
    /// filter stay in registers and L1 while every packet is tested against it, and the
    /// packets' filter probes are independent, so they overlap), the shape of a vector node.
    /// Early exit per packet as in the scalar form: tuples are sorted by their best rule.
    ///
    /// # Panics
    /// Never; `out` shorter than `packets` classifies only the first `out.len()` packets.
    #[inline]
    pub fn acl_classify_many(
        &self,
        tenant: &Tenant,
        is_v6: bool,
        packets: &[FiveTuple],
        out: &mut [Option<(u32, u8)>],
    ) {
        let n = packets.len().min(out.len());
        let (packets, out) = (&packets[..n], &mut out[..n]);
        out.fill(None);
        let r: AclRef = if is_v6 { tenant.acl6 } else { tenant.acl4 };
        let first = r.first_tuple as usize;
        let Some(tuples) = self.acl_tuples.get(first..first + r.n_tuples as usize) else {
            return;
        };
        for tp in tuples {
            let (sm, dm) = (join(tp.src_mask), join(tp.dst_mask));
            let (ff, fm) = (tp.filter_first as usize, tp.filter_mask as usize);
            for (t, best) in packets.iter().zip(out.iter_mut()) {
                if best.is_some_and(|(b, _)| tp.min_index >= b) {
                    continue;
                }
                let (src, dst) = (t.src & sm, t.dst & dm);
                let h = hash_pair(src, dst);
                let fb = (h >> 32) as usize & fm;
                if self
                    .acl_filters
                    .get(ff.saturating_add(fb / 64))
                    .is_none_or(|w| w & (1 << (fb % 64)) == 0)
                {
                    continue;
                }
                if let Some(hit) = self.acl_tuple_probe(tp, src, dst, h, t, *best) {
                    *best = Some(hit);
                }
            }
        }
    }

    /// The bucket probe and residual rule check of one tuple (after its filter said maybe):
    /// the first rule better than `best` that matches.
    #[inline]
    fn acl_tuple_probe(
        &self,
        tp: &AclTuple,
        src: u128,
        dst: u128,
        h: u64,
        t: &FiveTuple,
        best: Option<(u32, u8)>,
    ) -> Option<(u32, u8)> {
        let base = tp.first_bucket as usize;
        let mut i = (h as u32) & tp.mask;
        let limit = tp.mask.min(self.acl_buckets.len() as u32);
        let mut bucket = None;
        for _ in 0..=limit {
            let b = self.acl_buckets.get(base.saturating_add(i as usize))?;
            if b.n_rules == 0 {
                break;
            }
            if join(b.src) == src && join(b.dst) == dst {
                bucket = Some(b);
                break;
            }
            i = (i + 1) & tp.mask;
        }
        let b = bucket?;
        let f = b.first_rule as usize;
        let rules = self.acl_rules.get(f..f + b.n_rules as usize)?;
        for rule in rules {
            if best.is_some_and(|(bi, _)| rule.index >= bi) {
                return None;
            }
            if (rule.proto_any != 0 || rule.proto == t.proto)
                && rule.sport_lo <= t.sport
                && t.sport <= rule.sport_hi
                && rule.dport_lo <= t.dport
                && t.dport <= rule.dport_hi
                && established_ok(rule.flags, t)
            {
                return Some((rule.index, rule.action));
            }
        }
        None
    }

    /// Peer by slot, if active.
    #[inline]
    #[must_use]
    pub fn peer(&self, slot: u32) -> Option<&'a Peer> {
        if slot == NONE {
            return None;
        }
        self.peers
            .get(slot as usize)
            .filter(|p| p.flags & crate::layout::FLAG_ACTIVE != 0)
    }

    /// Tenant by slot, if active.
    #[inline]
    #[must_use]
    pub fn tenant(&self, slot: u32) -> Option<&'a Tenant> {
        self.tenants
            .get(slot as usize)
            .filter(|t| t.flags & crate::layout::FLAG_ACTIVE != 0)
    }

    /// Keypair by slot, if active.
    #[inline]
    #[must_use]
    pub fn keypair(&self, slot: u32) -> Option<&'a Keypair> {
        if slot == NONE {
            return None;
        }
        self.keypairs
            .get(slot as usize)
            .filter(|k| k.flags & crate::layout::FLAG_ACTIVE != 0)
    }
}
