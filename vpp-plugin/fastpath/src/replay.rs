//! RFC 6479 anti-replay window: a ring of 64-bit words, advanced by clearing whole words, so
//! that both check and update are O(1) without shifting the bitmap.
//!
//! Sized for the gateway's working set rather than rounded up to a power of two: one window
//! per keypair slot per worker (100,000 peers → ~40 MB per worker at 320 B, against 69 MB at
//! 4096 bits), and a packet touches two of its lines (the header and one bitmap word).

/// Words in the ring. Not a power of two: `% 34` compiles to a multiply, and 34 words give a
/// window just above the 2048 counters the gateway guarantees.
const WORDS: usize = 34;
/// Counters older than `highest + 1 - WINDOW` are rejected (2112): one word of the ring is
/// kept as slack so that advancing never clears bits still inside the window.
pub const WINDOW: u64 = (WORDS as u64 - 1) * 64;

#[inline(always)]
fn word_index(counter: u64) -> usize {
    ((counter >> 6) % WORDS as u64) as usize
}
/// WireGuard's REJECT-AFTER-MESSAGES: counters at or above it are never valid.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

/// One keypair's receive window. All-zero is the valid empty state.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
pub struct ReplayWindow {
    /// The keypair this window belongs to (a different one resets it).
    pub install_id: u64,
    /// Highest accepted counter + 1 (0 = nothing accepted yet).
    next: u64,
    bitmap: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            install_id: 0,
            next: 0,
            bitmap: [0; WORDS],
        }
    }
}

impl ReplayWindow {
    /// Resets for a new keypair.
    pub fn reset(&mut self, install_id: u64) {
        self.install_id = install_id;
        self.next = 0;
        self.bitmap = [0; WORDS];
    }

    /// The bitmap word `counter` maps to (for prefetching).
    #[inline]
    #[must_use]
    pub fn word_for(&self, counter: u64) -> &u64 {
        &self.bitmap[word_index(counter)]
    }

    /// Whether `counter` may be accepted (no state change: call before authenticating).
    #[inline]
    #[must_use]
    pub fn check(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if counter >= self.next {
            return true;
        }
        if self.next > WINDOW && counter < self.next - WINDOW {
            return false;
        }
        self.bitmap[word_index(counter)] & (1 << (counter & 63)) == 0
    }

    /// Records an authenticated `counter`; returns false if it was a replay after all.
    #[inline]
    pub fn update(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter >= self.next {
            let top = counter >> 6;
            let cur = if self.next == 0 {
                None
            } else {
                Some((self.next - 1) >> 6)
            };
            match cur {
                Some(cur) if top - cur < WORDS as u64 => {
                    for w in cur + 1..=top {
                        self.bitmap[(w % WORDS as u64) as usize] = 0;
                    }
                }
                _ => self.bitmap = [0; WORDS],
            }
            self.next = counter + 1;
        }
        self.bitmap[word_index(counter)] |= 1 << (counter & 63);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// The reference: a set of seen counters and the same window rule.
    struct Reference {
        seen: BTreeSet<u64>,
        next: u64,
    }

    impl Reference {
        fn accept(&mut self, c: u64) -> bool {
            let too_old = self.next > WINDOW && c < self.next - WINDOW;
            if c >= REJECT_AFTER_MESSAGES || too_old || self.seen.contains(&c) {
                return false;
            }
            self.seen.insert(c);
            self.next = self.next.max(c + 1);
            true
        }
    }

    #[test]
    fn the_window_is_at_least_2048() {
        let mut w = ReplayWindow::default();
        assert!(w.update(5000));
        assert!(w.update(5000 - 2048));
        assert!(!w.update(5000 - 2048));
        assert!(!w.update(5001 - WINDOW - 1));
    }

    #[test]
    fn a_window_is_five_cache_lines() {
        assert_eq!(core::mem::size_of::<ReplayWindow>(), 320);
        const { assert!(WINDOW >= 2048) };
    }

    #[test]
    fn counters_near_the_reject_limit_are_refused() {
        let w = ReplayWindow::default();
        assert!(!w.check(REJECT_AFTER_MESSAGES));
        assert!(w.check(REJECT_AFTER_MESSAGES - 1));
    }

    fn arb_counters() -> impl Strategy<Value = Vec<u64>> {
        // Mostly local jitter (reorder and duplicates), with occasional big jumps.
        prop::collection::vec(
            prop_oneof![
                8 => (0u64..64, -300i64..300).prop_map(|(a, d)| (a * 97).saturating_add_signed(d)),
                2 => 0u64..20_000,
                1 => Just(0u64),
            ],
            1..400,
        )
        .prop_map(|v| {
            let mut base = 0u64;
            v.into_iter()
                .map(|x| {
                    base = base.wrapping_add(x / 7);
                    base.wrapping_add(x) % 30_000
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn window_agrees_with_a_set_based_reference(counters in arb_counters()) {
            let mut w = ReplayWindow::default();
            let mut r = Reference { seen: BTreeSet::new(), next: 0 };
            for c in counters {
                let checked = w.check(c);
                let got = w.update(c);
                prop_assert_eq!(checked, got);
                prop_assert_eq!(got, r.accept(c), "counter {}", c);
            }
        }
    }
}
