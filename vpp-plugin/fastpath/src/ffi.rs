//! The C ABI (declared in `include/cvlan_fastpath.h`): open a worker on a table segment,
//! process batches of caller-owned buffers into per-packet verdicts, read counters.
//! Every function catches panics; none unwinds into C.

use std::ffi::{CStr, c_char, c_int};
use std::os::fd::BorrowedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use cvlan_tables::Segment;

use crate::abi::{Buf, Counters, Next, Reason, Stats, Verdict};
use crate::worker::Worker;

/// ABI version of this header/library pair.
pub const ABI_VERSION: u32 = 1;
/// Success.
pub const OK: c_int = 0;
/// A null pointer or invalid argument.
pub const ERR_INVAL: c_int = -1;
/// The table segment could not be opened or is invalid.
pub const ERR_SEGMENT: c_int = -2;
/// The worker id is out of range for the segment.
pub const ERR_WORKER: c_int = -3;
/// A panic was caught (a bug); the call had no effect.
pub const ERR_PANIC: c_int = -4;

/// Returns [`ABI_VERSION`].
#[unsafe(no_mangle)]
pub extern "C" fn cvlan_fp_abi_version() -> u32 {
    ABI_VERSION
}

fn open_worker(
    seg: Result<Segment, cvlan_tables::SegmentError>,
    id: u32,
    out: *mut *mut Worker,
) -> c_int {
    let Ok(seg) = seg else { return ERR_SEGMENT };
    match Worker::new(seg, id) {
        Ok(w) => {
            // SAFETY: `out` was checked non-null by the callers; the contract says writable.
            unsafe { out.write(Box::into_raw(Box::new(w))) };
            OK
        }
        Err(crate::worker::WorkerError::BadWorkerId(_)) => ERR_WORKER,
        Err(_) => ERR_SEGMENT,
    }
}

/// Opens worker `worker_id` on the segment file at `path` (e.g. under /dev/shm).
///
/// # Safety
/// `path` must be a NUL-terminated string; `out` must be valid for writing one pointer.
/// On success `*out` owns a worker that must be released with [`cvlan_fp_worker_close`] and
/// used by one thread at a time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cvlan_fp_worker_open(
    path: *const c_char,
    worker_id: u32,
    out: *mut *mut Worker,
) -> c_int {
    if path.is_null() || out.is_null() {
        return ERR_INVAL;
    }
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: non-null and NUL-terminated per the contract.
        let Ok(p) = unsafe { CStr::from_ptr(path) }.to_str() else {
            return ERR_INVAL;
        };
        open_worker(Segment::open(Path::new(p)), worker_id, out)
    }))
    .unwrap_or(ERR_PANIC)
}

/// Opens worker `worker_id` on a segment given by a file descriptor (a memfd or an open
/// /dev/shm file). The descriptor is duplicated; the caller keeps ownership of `fd`.
///
/// # Safety
/// `fd` must be an open descriptor; `out` must be valid for writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cvlan_fp_worker_open_fd(
    fd: c_int,
    worker_id: u32,
    out: *mut *mut Worker,
) -> c_int {
    if fd < 0 || out.is_null() {
        return ERR_INVAL;
    }
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller guarantees `fd` is open for the duration of this call.
        let owned = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned();
        let Ok(owned) = owned else { return ERR_SEGMENT };
        open_worker(Segment::from_file(owned.into()), worker_id, out)
    }))
    .unwrap_or(ERR_PANIC)
}

/// Releases a worker (NULL is ignored).
///
/// # Safety
/// `w` must come from `cvlan_fp_worker_open*` and not be used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cvlan_fp_worker_close(w: *mut Worker) {
    if w.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: per the contract, `w` is an owned worker pointer.
        drop(unsafe { Box::from_raw(w) });
    }));
}

/// Processes `n` buffers (internally in batches of 256) and writes one verdict per buffer;
/// buffer descriptors are updated in place (`data`, `len`, `headroom`, `tailroom`).
/// Returns the number of verdicts written (`n`, or 0 for invalid arguments). If a panic is
/// caught every verdict says drop/internal.
///
/// # Safety
/// `w` must be a live worker used by no other thread; `bufs` and `verdicts` must point to `n`
/// elements each; every buffer's `data - headroom .. data + len + tailroom` must be writable
/// and untouched by others during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cvlan_fp_process(
    w: *mut Worker,
    bufs: *mut Buf,
    verdicts: *mut Verdict,
    n: u32,
) -> u32 {
    if w.is_null() || bufs.is_null() || verdicts.is_null() {
        return 0;
    }
    // SAFETY: per the contract.
    let bufs = unsafe { std::slice::from_raw_parts_mut(bufs, n as usize) };
    // SAFETY: per the contract.
    let verdicts = unsafe { std::slice::from_raw_parts_mut(verdicts, n as usize) };
    let r = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: per the contract.
        let w = unsafe { &mut *w };
        // SAFETY: buffer validity is the caller's contract.
        unsafe { w.process(bufs, verdicts) }
    }));
    match r {
        Ok(k) => k as u32,
        Err(_) => {
            for v in verdicts.iter_mut() {
                *v = Verdict {
                    next: Next::Drop as u16,
                    reason: Reason::Internal as u16,
                    aux: 0,
                };
            }
            n
        }
    }
}

/// Copies the worker totals into `*out`.
///
/// # Safety
/// `w` must be a live worker not being processed concurrently; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cvlan_fp_worker_stats(w: *const Worker, out: *mut Stats) -> c_int {
    if w.is_null() || out.is_null() {
        return ERR_INVAL;
    }
    // SAFETY: per the contract.
    unsafe { out.write(*(*w).stats()) };
    OK
}

/// Copies the counters of peer slot `peer` into `*out` (zeros for unseen peers).
///
/// # Safety
/// As [`cvlan_fp_worker_stats`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cvlan_fp_peer_counters(
    w: *const Worker,
    peer: u32,
    out: *mut Counters,
) -> c_int {
    if w.is_null() || out.is_null() {
        return ERR_INVAL;
    }
    // SAFETY: per the contract.
    unsafe { out.write((*w).peer_counters(peer)) };
    OK
}

/// Copies the counters of tenant slot `tenant` into `*out`.
///
/// # Safety
/// As [`cvlan_fp_worker_stats`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cvlan_fp_tenant_counters(
    w: *const Worker,
    tenant: u32,
    out: *mut Counters,
) -> c_int {
    if w.is_null() || out.is_null() {
        return ERR_INVAL;
    }
    // SAFETY: per the contract.
    unsafe { out.write((*w).tenant_counters(tenant)) };
    OK
}

/// Static NUL-terminated name of a reason ("?" if unknown). Never fails.
#[unsafe(no_mangle)]
pub extern "C" fn cvlan_fp_reason_name(reason: u16) -> *const c_char {
    Reason::ALL
        .get(usize::from(reason))
        .map_or(c"?".as_ptr(), |r| r.c_name().as_ptr())
}
