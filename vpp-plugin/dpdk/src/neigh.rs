//! The neighbour (ARP) table shared by all workers: fixed size, open addressing, one seqlock
//! per entry. Readers never block or write; a learner that meets a concurrent writer on the
//! same entry skips (learning is best effort and repeats with the next packet). Shared rather
//! than per worker because with several queues an ARP reply can arrive on another worker's
//! queue than the one that asked.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// Entries (power of two).
const SIZE: usize = 1024;
/// Probe length.
const PROBE: usize = 8;

#[derive(Default)]
#[repr(align(32))]
struct Entry {
    seq: AtomicU32,
    /// The address (IPv4 as IPv4-mapped IPv6), high and low halves.
    hi: AtomicU64,
    lo: AtomicU64,
    /// `(port + 1) << 48 | mac`; 0 = empty.
    word: AtomicU64,
}

/// The table.
pub struct Neighbours {
    entries: Box<[Entry]>,
    used: AtomicU32,
}

/// The table key of an IPv4 address (IPv4-mapped, so both families share one table).
#[must_use]
pub fn v4(ip: u32) -> u128 {
    0xffff_0000_0000 | u128::from(ip)
}

fn slot(port: u16, ip: u128) -> usize {
    let h = ((ip >> 64) as u64 ^ ip as u64 ^ u64::from(port)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 40) as usize & (SIZE - 1)
}

fn pack(port: u16, mac: [u8; 6]) -> u64 {
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(&mac);
    u64::from_le_bytes(b) | ((u64::from(port) + 1) << 48)
}

fn unpack(v: u64) -> [u8; 6] {
    let b = v.to_le_bytes();
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[..6]);
    m
}

impl Default for Neighbours {
    fn default() -> Self {
        Self {
            entries: (0..SIZE).map(|_| Entry::default()).collect(),
            used: AtomicU32::new(0),
        }
    }
}

impl Neighbours {
    /// A consistent (address, word) read of entry `i`, or `None` while it is being written.
    fn read(&self, i: usize) -> Option<(u128, u64)> {
        let e = &self.entries[i];
        let s1 = e.seq.load(Ordering::Acquire);
        if s1 & 1 == 1 {
            return None;
        }
        let hi = e.hi.load(Ordering::Relaxed);
        let lo = e.lo.load(Ordering::Relaxed);
        let w = e.word.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        (e.seq.load(Ordering::Relaxed) == s1)
            .then_some(((u128::from(hi) << 64) | u128::from(lo), w))
    }

    /// The MAC of `ip` (see [`v4`]) on `port`, if known.
    #[must_use]
    pub fn lookup(&self, port: u16, ip: u128) -> Option<[u8; 6]> {
        let h = slot(port, ip);
        let tag = u64::from(port) + 1;
        for d in 0..PROBE {
            match self.read((h + d) & (SIZE - 1)) {
                Some((_, 0)) => return None,
                Some((a, w)) if a == ip && w >> 48 == tag => return Some(unpack(w)),
                _ => {}
            }
        }
        None
    }

    /// Records `ip` → `mac` on `port`. Cheap when nothing changed (reads only).
    pub fn learn(&self, port: u16, ip: u128, mac: [u8; 6]) {
        let w = pack(port, mac);
        let h = slot(port, ip);
        let mut target = None;
        for d in 0..PROBE {
            let i = (h + d) & (SIZE - 1);
            match self.read(i) {
                Some((_, 0)) => {
                    target = Some((i, true));
                    break;
                }
                Some((a, ew)) if a == ip && ew >> 48 == w >> 48 => {
                    if ew == w {
                        return;
                    }
                    target = Some((i, false));
                    break;
                }
                _ => {}
            }
        }
        // Full probe window: replace the home entry.
        let (i, fresh) = target.unwrap_or((h, false));
        let e = &self.entries[i];
        let s = e.seq.load(Ordering::Relaxed);
        if s & 1 == 1
            || e.seq
                .compare_exchange(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        fence(Ordering::Release);
        let was_empty = e.word.load(Ordering::Relaxed) == 0;
        e.hi.store((ip >> 64) as u64, Ordering::Relaxed);
        e.lo.store(ip as u64, Ordering::Relaxed);
        e.word.store(w, Ordering::Relaxed);
        e.seq.store(s + 2, Ordering::Release);
        if fresh && was_empty {
            self.used.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Entries in use.
    #[must_use]
    pub fn len(&self) -> u32 {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn learned_neighbours_are_found_per_port_and_updated_in_place() {
        let n = Neighbours::default();
        assert_eq!(n.lookup(0, v4(0x0a00_0001)), None);
        n.learn(0, v4(0x0a00_0001), [2, 0, 0, 0, 0, 1]);
        n.learn(1, v4(0x0a00_0001), [2, 0, 0, 0, 0, 2]);
        assert_eq!(n.lookup(0, v4(0x0a00_0001)), Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(n.lookup(1, v4(0x0a00_0001)), Some([2, 0, 0, 0, 0, 2]));
        n.learn(0, v4(0x0a00_0001), [2, 0, 0, 0, 0, 3]);
        assert_eq!(n.lookup(0, v4(0x0a00_0001)), Some([2, 0, 0, 0, 0, 3]));
        assert_eq!(n.len(), 2);
        let v6 = 0xfd00_0000_0000_0000_0000_0000_0000_0001u128;
        assert_eq!(n.lookup(0, v6), None);
        n.learn(0, v6, [2, 0, 0, 0, 0, 6]);
        assert_eq!(n.lookup(0, v6), Some([2, 0, 0, 0, 0, 6]));
        assert_eq!(n.lookup(0, v4(1)), None, "families do not mix");
    }

    #[test]
    fn the_table_agrees_with_a_map_for_the_most_recent_entries() {
        // More addresses than probe windows hold: the newest learning of each address that
        // is still present must be the one returned, never another address's MAC.
        let n = Neighbours::default();
        let mut reference = HashMap::new();
        for i in 0..3000u32 {
            let ip = 0x0a00_0000 + (i * 7919) % 5000;
            let mac = [2, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8, 9];
            n.learn(0, v4(ip), mac);
            reference.insert(ip, mac);
            assert_eq!(n.lookup(0, v4(ip)), Some(mac));
        }
        for (ip, mac) in reference {
            if let Some(found) = n.lookup(0, v4(ip)) {
                assert_eq!(found, mac);
            }
        }
    }

    #[test]
    fn concurrent_learners_and_readers_never_see_a_torn_entry() {
        let n = std::sync::Arc::new(Neighbours::default());
        let writers: Vec<_> = (0..2u8)
            .map(|w| {
                let n = n.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        let b = (i % 200) as u8;
                        n.learn(0, v4(0x0a00_0000 + u32::from(b)), [b, b, b, b, b, w]);
                    }
                })
            })
            .collect();
        for _ in 0..20_000 {
            for b in 0..200u8 {
                if let Some(m) = n.lookup(0, v4(0x0a00_0000 + u32::from(b))) {
                    assert_eq!(&m[..5], &[b; 5], "torn read");
                }
            }
        }
        for w in writers {
            w.join().expect("writer");
        }
    }
}
