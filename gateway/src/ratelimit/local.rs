//! The in-process side of the limiter: the same GCRA as `gcra.lua`, on this process' clock.
//! Two uses: remembering keys Redis refused until their retry time (so a key that is clearly
//! over costs no Redis call), and enforcing each rule's per-replica share while Redis is down.
//! Hand-written rather than `governor`, which is a little faster but fixes one quota per
//! limiter: here the rule comes with each call and a key's time survives a reload
//! (`benches/local_structures.rs`, BENCHMARKS.md).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Keys tracked before stale ones are swept (bounds memory under a key flood).
const SWEEP_AT: usize = 100_000;

/// A local decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalDecision {
    pub allowed: bool,
    pub remaining: u64,
    pub retry_after: Duration,
    pub reset_after: Duration,
}

impl LocalDecision {
    /// A refusal for `wait` more (a key remembered as over).
    pub fn refused(wait: Duration) -> Self {
        LocalDecision {
            allowed: false,
            remaining: 0,
            retry_after: wait,
            reset_after: wait,
        }
    }
}

/// Per-key state on this process' monotonic clock.
pub struct LocalLimiter {
    origin: Instant,
    /// Key → theoretical arrival time, in µs since `origin`.
    tat: Mutex<HashMap<String, u64>>,
    /// Key → instant before which Redis will refuse it anyway, in µs since `origin`.
    blocked: Mutex<HashMap<String, u64>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain numbers inside; a panic elsewhere cannot leave them inconsistent.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Default for LocalLimiter {
    fn default() -> Self {
        LocalLimiter {
            origin: Instant::now(),
            tat: Mutex::new(HashMap::new()),
            blocked: Mutex::new(HashMap::new()),
        }
    }
}

impl LocalLimiter {
    fn now(&self) -> u64 {
        micros(self.origin.elapsed())
    }

    /// How long `key` is still known to be refused, if it is.
    pub fn blocked_for(&self, key: &str) -> Option<Duration> {
        let now = self.now();
        let blocked = lock(&self.blocked);
        let until = *blocked.get(key)?;
        (until > now).then(|| Duration::from_micros(until - now))
    }

    /// Remembers that Redis refuses `key` for `retry_after`. Under one rule a GCRA refusal
    /// cannot end early (other replicas only push it later), so refusing locally until then
    /// is exact; a reload forgets every block ([`Self::forget_blocks`]).
    pub fn block(&self, key: &str, retry_after: Duration) {
        let now = self.now();
        let mut blocked = lock(&self.blocked);
        if blocked.len() >= SWEEP_AT {
            blocked.retain(|_, until| *until > now);
        }
        blocked.insert(key.to_owned(), now.saturating_add(micros(retry_after)));
    }

    /// Forgets every remembered refusal (the rules changed: a loosened rule admits sooner).
    pub fn forget_blocks(&self) {
        lock(&self.blocked).clear();
    }

    /// One GCRA decision for `key` with this process' budget.
    pub fn check(&self, key: &str, interval: Duration, burst: u64) -> LocalDecision {
        let (interval, burst) = (micros(interval).max(1), burst.max(1));
        let now = self.now();
        let mut tats = lock(&self.tat);
        if tats.len() >= SWEEP_AT {
            tats.retain(|_, tat| *tat > now);
        }
        // Beyond `now + interval * burst` the time was stored under a stricter rule before a
        // reload (this rule never stores that much): one request left under the new rule, so
        // the key passes at once and then at the new rate (as gcra.lua does).
        let mut tat = tats.get(key).copied().unwrap_or(now).max(now);
        if tat > now.saturating_add(interval.saturating_mul(burst)) {
            tat = now + interval * (burst - 1);
        }
        let new_tat = tat + interval;
        // Signed: early in the process' life `new_tat - interval * burst` is below zero.
        let allow_at = i128::from(new_tat) - i128::from(interval) * i128::from(burst);
        let diff = i128::from(now) - allow_at;
        if diff < 0 {
            return LocalDecision {
                allowed: false,
                remaining: 0,
                retry_after: Duration::from_micros(u64::try_from(-diff).unwrap_or(u64::MAX)),
                reset_after: Duration::from_micros(tat - now),
            };
        }
        tats.insert(key.to_owned(), new_tat);
        LocalDecision {
            allowed: true,
            remaining: u64::try_from(diff / i128::from(interval)).unwrap_or(u64::MAX),
            retry_after: Duration::ZERO,
            reset_after: Duration::from_micros(new_tat - now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_the_burst_then_refuses_with_the_wait() {
        let limiter = LocalLimiter::default();
        let interval = Duration::from_secs(10);
        for left in (0..3).rev() {
            let d = limiter.check("k", interval, 3);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
        }
        let refused = limiter.check("k", interval, 3);
        assert!(!refused.allowed);
        assert!(refused.retry_after > Duration::from_secs(9));
        assert!(
            limiter.check("other", interval, 3).allowed,
            "keys are separate"
        );
    }

    #[test]
    fn remembers_blocks_until_they_end() {
        let limiter = LocalLimiter::default();
        assert_eq!(limiter.blocked_for("k"), None);
        limiter.block("k", Duration::from_secs(5));
        assert!(
            limiter
                .blocked_for("k")
                .is_some_and(|d| d > Duration::from_secs(4))
        );
        limiter.block("j", Duration::ZERO);
        assert_eq!(limiter.blocked_for("j"), None);
        limiter.forget_blocks();
        assert_eq!(limiter.blocked_for("k"), None, "a reload forgets blocks");
    }

    #[test]
    fn a_loosened_rule_admits_a_throttled_key_at_its_own_rate() {
        let limiter = LocalLimiter::default();
        // Strict: 2 at once, then one a minute.
        let strict = Duration::from_secs(60);
        assert!(limiter.check("k", strict, 2).allowed);
        assert!(limiter.check("k", strict, 2).allowed);
        assert!(!limiter.check("k", strict, 2).allowed);
        // Loosened to 10 a second, burst 3: the key has one request left under the new
        // rule, then waits one new interval (100 ms), not the old minute.
        let loose = Duration::from_millis(100);
        assert!(limiter.check("k", loose, 3).allowed);
        let refused = limiter.check("k", loose, 3);
        assert!(!refused.allowed);
        assert!(
            refused.retry_after <= loose,
            "waits {:?}",
            refused.retry_after
        );
        std::thread::sleep(loose);
        assert!(limiter.check("k", loose, 3).allowed);
    }
}
