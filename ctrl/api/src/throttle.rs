//! Login throttling (per account and per source address) and per-source token buckets for the
//! discovery and registration tiers. In memory, per replica: a replica restart forgets them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::error::{ApiError, ApiResult};

/// Failed attempts allowed per account within the window.
const ACCOUNT_FAILURES: u32 = 10;
/// Failed attempts allowed per source within the window.
const SOURCE_FAILURES: u32 = 50;
/// Window length.
const WINDOW_SECS: u64 = 900;
/// Entries kept before old ones are swept.
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
struct Window {
    map: HashMap<String, (u32, Instant)>,
}

impl Window {
    fn count(&mut self, key: &str, now: Instant) -> u32 {
        match self.map.get(key) {
            Some((n, since)) if now.duration_since(*since).as_secs() < WINDOW_SECS => *n,
            Some(_) => {
                self.map.remove(key);
                0
            }
            None => 0,
        }
    }
    fn bump(&mut self, key: &str, now: Instant) {
        if self.map.len() >= MAX_ENTRIES {
            self.map
                .retain(|_, (_, since)| now.duration_since(*since).as_secs() < WINDOW_SECS);
        }
        let e = self.map.entry(key.to_string()).or_insert((0, now));
        if now.duration_since(e.1).as_secs() >= WINDOW_SECS {
            *e = (0, now);
        }
        e.0 += 1;
    }
}

/// Login attempt limits.
#[derive(Default)]
pub struct Throttle {
    accounts: Mutex<Window>,
    sources: Mutex<Window>,
}

impl Throttle {
    /// Refuses when the account or the source has failed too often recently.
    ///
    /// # Errors
    /// [`ApiError::TooManyRequests`].
    pub fn check(&self, account: &str, source: &str) -> ApiResult<()> {
        let now = Instant::now();
        let a = self
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .count(account, now);
        let s = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .count(source, now);
        if a >= ACCOUNT_FAILURES || s >= SOURCE_FAILURES {
            metrics::counter!("cvlan_login_throttled_total").increment(1);
            return Err(ApiError::TooManyRequests);
        }
        Ok(())
    }
    /// Records a failure.
    pub fn failed(&self, account: &str, source: &str) {
        let now = Instant::now();
        self.accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bump(account, now);
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bump(source, now);
    }
    /// Clears an account's failures after a successful login.
    pub fn succeeded(&self, account: &str) {
        self.accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .remove(account);
    }
}

/// Token bucket per source address.
pub struct RateLimit {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimit {
    /// `per_sec` sustained, `burst` at once.
    pub fn new(per_sec: f64, burst: f64) -> Self {
        RateLimit {
            per_sec,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `source`.
    ///
    /// # Errors
    /// [`ApiError::TooManyRequests`] when the bucket is empty.
    pub fn take(&self, source: &str) -> ApiResult<()> {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() >= MAX_ENTRIES {
            let full = self.burst;
            let rate = self.per_sec;
            b.retain(|_, (t, at)| *t + now.duration_since(*at).as_secs_f64() * rate < full);
        }
        let e = b.entry(source.to_string()).or_insert((self.burst, now));
        e.0 = (e.0 + now.duration_since(e.1).as_secs_f64() * self.per_sec).min(self.burst);
        e.1 = now;
        if e.0 < 1.0 {
            metrics::counter!("cvlan_rate_limited_total").increment(1);
            return Err(ApiError::TooManyRequests);
        }
        e.0 -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_locked_after_ten_failures_and_others_are_not() {
        let t = Throttle::default();
        for _ in 0..ACCOUNT_FAILURES {
            t.check("a@x.io", "1.1.1.1").unwrap();
            t.failed("a@x.io", "1.1.1.1");
        }
        assert!(t.check("a@x.io", "9.9.9.9").is_err());
        t.check("b@x.io", "1.1.1.1").unwrap();
    }

    #[test]
    fn a_source_is_limited_across_accounts() {
        let t = Throttle::default();
        for i in 0..SOURCE_FAILURES {
            t.failed(&format!("u{i}@x.io"), "2.2.2.2");
        }
        assert!(t.check("fresh@x.io", "2.2.2.2").is_err());
        t.check("fresh@x.io", "3.3.3.3").unwrap();
    }

    #[test]
    fn token_bucket_allows_the_burst_then_refuses() {
        let r = RateLimit::new(0.001, 5.0);
        for _ in 0..5 {
            r.take("s").unwrap();
        }
        assert!(r.take("s").is_err());
        r.take("other").unwrap();
    }
}
