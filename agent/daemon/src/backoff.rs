//! Reconnect delays: exponential with jitter, capped. Pure: the caller supplies the random
//! number, so tests can pin it and thousands of agents restarting together still spread out.

use std::time::Duration;

/// Exponential backoff state.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Default for Backoff {
    /// 500 ms doubling up to 30 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
    }
}

impl Backoff {
    /// Delays start around `base` and double per failure up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// Failures since the last [`Backoff::reset`].
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt. `unit` is a random number in `[0, 1)`: the delay is
    /// uniformly distributed in `[d/2, d)` where `d = min(cap, base * 2^attempt)` ("equal
    /// jitter": never less than half the nominal delay, so a flapping server is not hammered).
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let exp = self.attempt.min(30);
        self.attempt = self.attempt.saturating_add(1);
        let nominal = self
            .base
            .checked_mul(1u32 << exp)
            .map_or(self.cap, |d| d.min(self.cap));
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        nominal / 2 + nominal.mul_f64(unit / 2.0)
    }

    /// Back to the base delay (after a connection that worked).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn delays_double_until_the_cap_and_reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        // unit = 1.0 gives the nominal delay itself.
        let got: Vec<_> = (0..9).map(|_| b.next_delay(1.0).as_millis()).collect();
        assert_eq!(
            got,
            vec![500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        b.reset();
        assert_eq!(b.next_delay(1.0), Duration::from_millis(500));
        assert_eq!(b.next_delay(0.0), Duration::from_millis(500));
    }

    #[test]
    fn a_very_long_outage_neither_overflows_nor_exceeds_the_cap() {
        let mut b = Backoff::default();
        for _ in 0..10_000 {
            assert!(b.next_delay(0.999) <= Duration::from_secs(30));
        }
        assert_eq!(b.attempts(), 10_000);
    }

    proptest! {
        #[test]
        fn every_delay_lies_between_half_and_all_of_the_nominal_delay(
            failures in 0u32..64, unit in proptest::num::f64::ANY
        ) {
            let mut b = Backoff::default();
            for _ in 0..failures {
                b.next_delay(0.5);
            }
            let exp = failures.min(30);
            let nominal = Duration::from_millis(500)
                .checked_mul(1 << exp)
                .map_or(Duration::from_secs(30), |d| d.min(Duration::from_secs(30)));
            let d = b.next_delay(unit);
            prop_assert!(d >= nominal / 2 && d <= nominal, "{d:?} vs {nominal:?}");
        }
    }
}
