//! A small lock-free cache of outbound flows, written by the TUN→UDP path and read by the
//! UDP→TUN path so that replies to flows this node started pass the inbound filter.
//!
//! Direct-mapped: a flow hashes to one slot holding a 32-bit fingerprint and the second it
//! was last seen. A newer flow simply evicts an older one in the same slot (its replies then
//! face the filter, like after a conntrack timeout); a false match needs a 32-bit fingerprint
//! collision in the same slot.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use super::lpm::IntHasher;
use super::packet::FlowKey;

/// How long an outbound flow admits replies after its last outbound packet.
pub const FLOW_TIMEOUT_SECS: u32 = 120;

const SLOTS: usize = 1 << 13;

/// The cache (64 KiB).
pub struct FlowCache {
    slots: Box<[AtomicU64]>,
    seed: u64,
}

impl Default for FlowCache {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowCache {
    /// An empty cache with a random hash seed (so remote peers cannot aim at slots).
    pub fn new() -> Self {
        let seed = std::collections::hash_map::RandomState::new().hash_one(0u8);
        Self {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            seed,
        }
    }

    fn hash(&self, key: &FlowKey) -> u64 {
        let mut h = IntHasher::default();
        h.write_u64(self.seed);
        key.hash(&mut h);
        // final avalanche so both the slot bits and the fingerprint bits depend on all input
        let mut x = h.finish();
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    }

    /// Notes an outbound packet of `key` at `now_secs` (seconds on the caller's clock, > 0).
    /// Skips the store when the slot already says the same, so a busy flow does not bounce
    /// the cache line between the two I/O threads.
    pub fn record(&self, key: &FlowKey, now_secs: u32) {
        let h = self.hash(key);
        let slot = &self.slots[(h as usize) & (SLOTS - 1)];
        let value = (h & 0xffff_ffff_0000_0000) | u64::from(now_secs.max(1));
        if slot.load(Ordering::Relaxed) != value {
            slot.store(value, Ordering::Relaxed);
        }
    }

    /// Whether `key` had an outbound packet within [`FLOW_TIMEOUT_SECS`] of `now_secs`.
    pub fn contains(&self, key: &FlowKey, now_secs: u32) -> bool {
        let h = self.hash(key);
        let v = self.slots[(h as usize) & (SLOTS - 1)].load(Ordering::Relaxed);
        let seen = v as u32;
        v & 0xffff_ffff_0000_0000 == h & 0xffff_ffff_0000_0000
            && seen != 0
            && now_secs.saturating_sub(seen) <= FLOW_TIMEOUT_SECS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(lport: u16) -> FlowKey {
        FlowKey {
            local: "10.0.0.1".parse().expect("ip"),
            remote: "10.0.0.2".parse().expect("ip"),
            proto: 17,
            lport,
            rport: 53,
        }
    }

    #[test]
    fn a_recorded_flow_is_found_until_it_times_out() {
        let c = FlowCache::new();
        assert!(!c.contains(&key(1), 10));
        c.record(&key(1), 10);
        assert!(c.contains(&key(1), 10));
        assert!(c.contains(&key(1), 10 + FLOW_TIMEOUT_SECS));
        assert!(!c.contains(&key(1), 11 + FLOW_TIMEOUT_SECS));
        assert!(!c.contains(&key(2), 10));
    }
}
