//! Creating, mapping and publishing into a table segment (std). The segment lives in a memfd
//! or a file (normally under /dev/shm) shared by the sidecar (the one writer) and the workers.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::Ordering;

use memmap2::MmapRaw;
use zerocopy::FromBytes;

use crate::layout::{
    ABI_VERSION, FLAG_ACTIVE, GenHeader, Keypair, KeypairState, MAX_WORKERS, SEG_MAGIC, SLOTS,
    SegmentHeader,
};
use crate::view::{GenView, LayoutError, SegmentRef, pack_active, unpack_active};

const PAGE: usize = 4096;

fn round_page(n: usize) -> usize {
    n.div_ceil(PAGE) * PAGE
}

/// Errors of segment creation, mapping and publication.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// Creating, sizing or mapping the backing file failed.
    #[error("segment I/O")]
    Io(#[from] std::io::Error),
    /// The mapped bytes are not a valid segment or generation.
    #[error("segment layout: {0}")]
    Layout(LayoutError),
    /// Every non-active slot is still acknowledged by a worker; retry later.
    #[error("no reclaimable generation slot (a worker still reads it)")]
    Busy,
    /// The generation image does not fit into a slot.
    #[error("generation image of {need} bytes exceeds slot size {have}")]
    TooLarge {
        /// Image size.
        need: usize,
        /// Slot size.
        have: usize,
    },
    /// Invalid creation parameters.
    #[error("invalid segment parameters")]
    BadParams,
}

impl From<LayoutError> for SegmentError {
    fn from(e: LayoutError) -> Self {
        Self::Layout(e)
    }
}

/// Creation parameters.
#[derive(Clone, Copy, Debug)]
pub struct SegmentParams {
    /// Keypair table size (power of two).
    pub keypair_capacity: u32,
    /// Bytes per generation slot.
    pub slot_size: usize,
    /// Workers that may attach (≤ [`MAX_WORKERS`]).
    pub max_workers: u32,
}

/// A mapped segment (writer or reader side).
pub struct Segment {
    map: MmapRaw,
    file: File,
}

impl Segment {
    /// Creates a segment file at `path`, e.g. `/dev/shm/cvlan-tables`, replacing whatever was
    /// there. The file is made afresh (never opened through a link or a file someone else
    /// planted in a shared directory) and readable by its owner only: it holds session keys.
    ///
    /// # Errors
    /// I/O errors (also when an existing file cannot be removed, e.g. another user's in a
    /// sticky directory) and invalid parameters.
    pub fn create_file(path: &Path, params: SegmentParams) -> Result<Self, SegmentError> {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        Self::init(file, params)
    }

    /// Creates an anonymous memfd segment (share it by passing the fd).
    ///
    /// # Errors
    /// I/O errors and invalid parameters.
    pub fn create_memfd(name: &str, params: SegmentParams) -> Result<Self, SegmentError> {
        let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(std::io::Error::from)?;
        Self::init(File::from(fd), params)
    }

    fn init(file: File, p: SegmentParams) -> Result<Self, SegmentError> {
        if !p.keypair_capacity.is_power_of_two()
            || p.max_workers as usize > MAX_WORKERS
            || p.slot_size < core::mem::size_of::<GenHeader>()
        {
            return Err(SegmentError::BadParams);
        }
        let header_len = round_page(core::mem::size_of::<SegmentHeader>());
        let state_len =
            round_page(p.keypair_capacity as usize * core::mem::size_of::<KeypairState>());
        let slot_size = round_page(p.slot_size);
        let total = header_len + state_len + SLOTS * slot_size;
        file.set_len(total as u64)?;
        let map = MmapRaw::map_raw(&file)?;
        let h = map.as_mut_ptr().cast::<SegmentHeader>();
        let mut slot_offset = [0u64; SLOTS];
        for (i, o) in slot_offset.iter_mut().enumerate() {
            *o = (header_len + state_len + i * slot_size) as u64;
        }
        // SAFETY: the fresh mapping is at least `total` bytes, page aligned, zero filled, and
        // not yet shared with any reader; the writes below initialise plain fields.
        unsafe {
            (&raw mut (*h).abi_version).write(ABI_VERSION);
            (&raw mut (*h).header_size).write(core::mem::size_of::<SegmentHeader>() as u32);
            (&raw mut (*h).segment_size).write(total as u64);
            (&raw mut (*h).slot_size).write(slot_size as u64);
            (&raw mut (*h).slot_offset).write(slot_offset);
            (&raw mut (*h).state_offset).write(header_len as u64);
            (&raw mut (*h).keypair_capacity).write(p.keypair_capacity);
            (&raw mut (*h).max_workers).write(p.max_workers);
            // Magic last: a reader racing the creation sees BadMagic, not a partial header.
            std::sync::atomic::fence(Ordering::Release);
            (&raw mut (*h).magic).write(SEG_MAGIC);
        }
        Ok(Self { map, file })
    }

    /// Maps an existing segment file.
    ///
    /// # Errors
    /// I/O errors and an invalid header.
    pub fn open(path: &Path) -> Result<Self, SegmentError> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Self::from_file(file)
    }

    /// Maps an existing segment from an open file (e.g. a received memfd).
    ///
    /// # Errors
    /// I/O errors and an invalid header.
    pub fn from_file(file: File) -> Result<Self, SegmentError> {
        let map = MmapRaw::map_raw(&file)?;
        let s = Self { map, file };
        s.reader()?;
        Ok(s)
    }

    /// The backing file (to pass a memfd on).
    #[must_use]
    pub fn file(&self) -> &File {
        &self.file
    }

    /// A validated read view of the mapping.
    ///
    /// # Errors
    /// [`SegmentError::Layout`] when the header is invalid.
    pub fn reader(&self) -> Result<SegmentRef<'_>, SegmentError> {
        // SAFETY: the mapping is valid for the lifetime of `self`, page aligned, and only
        // modified by the writer following the publication protocol.
        Ok(unsafe { SegmentRef::from_raw(self.map.as_ptr(), self.map.len()) }?)
    }

    /// Publishes a generation image built by [`crate::TableBuilder::build`] and returns its
    /// generation number. Only one writer may publish into a segment at a time (the sidecar);
    /// `&mut self` enforces that within a process.
    ///
    /// # Errors
    /// [`SegmentError::Busy`] when no slot is reclaimable yet (retry), `TooLarge`, `Layout`.
    pub fn publish(&mut self, image: &[u8]) -> Result<u64, SegmentError> {
        let r = self.reader()?;
        let h = r.header();
        let have = h.slot_size as usize;
        if image.len() > have {
            return Err(SegmentError::TooLarge {
                need: image.len(),
                have,
            });
        }
        let new_view = GenView::parse(image, h.keypair_capacity)?;

        let active = h.active.load(Ordering::SeqCst);
        let (active_gen, active_slot) = unpack_active(active);
        let acks: Vec<u64> = h.workers[..h.max_workers as usize]
            .iter()
            .map(|w| w.generation.load(Ordering::SeqCst))
            .collect();
        let mut newest = active_gen;
        let mut free = None;
        for s in 0..SLOTS {
            let g = h.slot_generation[s].load(Ordering::SeqCst);
            newest = newest.max(g);
            if (active != 0 && s == active_slot) || free.is_some() {
                continue;
            }
            if g == 0 || !acks.contains(&g) {
                free = Some(s);
            }
        }
        let slot = free.ok_or(SegmentError::Busy)?;
        let generation = newest + 1;

        // Reset the shared state of keypairs that are new in this generation, before anyone
        // can see the new generation (see KeypairState: install_id first, then the counter).
        for kp in new_view
            .keypairs
            .iter()
            .filter(|k| k.flags & FLAG_ACTIVE != 0)
        {
            let slot_idx = kp.receiver_index & (h.keypair_capacity - 1);
            if let Some(st) = r.keypair_state(slot_idx)
                && st.install_id.load(Ordering::SeqCst) != kp.install_id
            {
                st.install_id.store(kp.install_id, Ordering::SeqCst);
                st.send_counter.store(0, Ordering::SeqCst);
                st.rx_seen.store(0, Ordering::SeqCst);
            }
        }

        let off = h.slot_offset[slot] as usize;
        // SAFETY: the slot is in bounds (validated by `reader`), no reader can enter it (its
        // generation is neither active nor acknowledged, see the view module docs), and we
        // are the only writer.
        unsafe {
            let dst = self.map.as_mut_ptr().add(off);
            std::ptr::copy_nonoverlapping(image.as_ptr(), dst, image.len());
            let gh = dst.cast::<GenHeader>();
            (&raw mut (*gh).generation).write(generation);
        }
        h.slot_generation[slot].store(generation, Ordering::SeqCst);
        h.active
            .store(pack_active(generation, slot), Ordering::SeqCst);
        Ok(generation)
    }

    /// Publishes, retrying (with a short sleep) while all slots are still read.
    ///
    /// # Errors
    /// As [`publish`](Self::publish), except `Busy` after `max_tries`.
    pub fn publish_retry(&mut self, image: &[u8], max_tries: u32) -> Result<u64, SegmentError> {
        let mut tries = 0;
        loop {
            match self.publish(image) {
                Err(SegmentError::Busy) if tries < max_tries => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
                other => return other,
            }
        }
    }

    /// Whether the worker `w` flagged the keypair in `slot` as used on receive.
    #[must_use]
    pub fn keypair_seen(&self, slot: u32) -> bool {
        self.reader()
            .ok()
            .and_then(|r| r.keypair_state(slot))
            .is_some_and(|s| s.rx_seen.load(Ordering::Acquire) != 0)
    }
}

/// Reads a keypair record out of an image (used by tests and tools).
#[must_use]
pub fn image_keypair(image: &[u8], slot: u32) -> Option<Keypair> {
    let (gh, _) = GenHeader::ref_from_prefix(image).ok()?;
    let view = GenView::parse(image, gh.keypair_capacity).ok()?;
    view.keypairs.get(slot as usize).copied()
}

/// Asks the kernel to back the 2 MiB-aligned part of `v`'s allocation (spare capacity
/// included) with transparent huge pages. For large per-worker arrays touched at random
/// (replay windows and counters of 100,000 peers span tens of MB): with 4 KiB pages nearly
/// every packet would also pay a TLB miss, a two-dimensional page walk under virtualisation.
/// Best effort (errors are ignored); call it before the memory is first touched.
pub fn advise_huge_pages<T>(v: &Vec<T>) {
    const HUGE: usize = 2 << 20;
    let start = v.as_ptr() as usize;
    let end = start + v.capacity() * core::mem::size_of::<T>();
    let (a, b) = (start.next_multiple_of(HUGE), end & !(HUGE - 1));
    if b > a {
        // SAFETY: [a, b) lies inside `v`'s allocation; MADV_HUGEPAGE changes no contents.
        let _ = unsafe {
            rustix::mm::madvise(
                a as *mut core::ffi::c_void,
                b - a,
                rustix::mm::Advice::LinuxHugepage,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{Prefix, RouteTarget, TableBuilder, TenantSpec};
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    fn params() -> SegmentParams {
        SegmentParams {
            keypair_capacity: 16,
            slot_size: 1 << 16,
            max_workers: 4,
        }
    }

    /// A generation whose every lookup reveals its generation tag `g`: tenant id, and the
    /// route of each of 32 addresses points at peer slot `g`.
    fn tagged(g: u64) -> Vec<u8> {
        let routes = (0..32u32)
            .map(|i| {
                let p = Prefix::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 32);
                (p, RouteTarget::Peer(g as u32))
            })
            .collect();
        TableBuilder {
            tenants: vec![TenantSpec {
                id: g,
                routes,
                ..Default::default()
            }],
            ..Default::default()
        }
        .build(16)
        .unwrap()
    }

    #[test]
    fn a_reader_sees_nothing_before_the_first_publish() {
        let seg = Segment::create_memfd("t", params()).unwrap();
        assert!(seg.reader().unwrap().enter(0).unwrap().is_none());
    }

    #[test]
    fn a_slot_entered_by_a_worker_is_not_reclaimed() {
        let mut seg = Segment::create_memfd("t", params()).unwrap();
        let g1 = seg.publish(&tagged(1)).unwrap();
        let file = seg.file().try_clone().unwrap();
        let reader_seg = Segment::from_file(file).unwrap();
        let r = reader_seg.reader().unwrap();
        let v = r.enter(0).unwrap().unwrap();
        assert_eq!(v.generation(), g1);
        // The other two slots keep being recycled; g1's slot never is.
        for g in 2..=6 {
            assert_eq!(seg.publish(&tagged(g)).unwrap(), g);
            assert_eq!(
                (v.generation(), v.tenants[0].id),
                (1, 1),
                "entered generation intact"
            );
        }
        // A second worker holds the active generation: nothing is left to reclaim after one
        // more publish.
        let v6 = r.enter(1).unwrap().unwrap();
        assert_eq!(v6.generation(), 6);
        assert_eq!(seg.publish(&tagged(7)).unwrap(), 7);
        assert!(matches!(seg.publish(&tagged(8)), Err(SegmentError::Busy)));
        assert_eq!((v.tenants[0].id, v6.tenants[0].id), (1, 6));
        r.leave(0).unwrap();
        assert_eq!(seg.publish(&tagged(8)).unwrap(), 8);
        assert_eq!(r.active_generation(), 8);
    }

    #[test]
    fn bad_worker_ids_and_foreign_files_are_rejected() {
        let seg = Segment::create_memfd("t", params()).unwrap();
        assert!(matches!(
            seg.reader().unwrap().enter(4),
            Err(LayoutError::BadWorker)
        ));
        let fd = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let f = File::from(fd);
        f.set_len(1 << 16).unwrap();
        assert!(matches!(
            Segment::from_file(f),
            Err(SegmentError::Layout(LayoutError::BadMagic))
        ));
    }

    #[test]
    fn readers_hammered_by_generation_swaps_see_one_consistent_generation_per_batch() {
        let mut seg = Segment::create_memfd("t", params()).unwrap();
        seg.publish(&tagged(1)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for w in 0..3usize {
            let file = seg.file().try_clone().unwrap();
            let stop = stop.clone();
            handles.push(std::thread::spawn(move || {
                let s = Segment::from_file(file).unwrap();
                let r = s.reader().unwrap();
                let (mut batches, mut last) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let v = r.enter(w).unwrap().unwrap();
                    let g = v.generation();
                    assert!(g >= last, "generations go forward");
                    last = g;
                    let t = v.tenants[0];
                    assert_eq!(t.id, g);
                    // A "batch" of 32 lookups, spread out to widen the race window.
                    for i in 0..32u32 {
                        assert_eq!(
                            v.route(&t, u128::from(0x0a00_0000 + i), false),
                            Some(g as u32)
                        );
                        std::hint::spin_loop();
                    }
                    r.leave(w).unwrap();
                    batches += 1;
                }
                batches
            }));
        }
        let mut published = 1;
        let image = |g| tagged(g);
        while published < 3000 {
            let next = published + 1;
            // The image is tagged with the generation number it will get.
            match seg.publish(&image(next)) {
                Ok(g) => {
                    assert_eq!(g, next);
                    published = g;
                }
                Err(SegmentError::Busy) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(total > 0);
    }
}
