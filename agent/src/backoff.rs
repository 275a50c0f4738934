//! Exponential back-off with outage reporting, the one retry policy every loop uses
//! (export, server collectors, Alertmanager delivery, plugin quarantine): the wait
//! doubles per failure from `min` up to `max`; the first failure of an outage is
//! reported once, and the first success after it once.

use std::time::{Duration, Instant};

/// What a failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed {
    /// Whether this failure started an outage (warn now; stay quiet until recovery).
    pub first: bool,
    /// How long to wait before the next attempt.
    pub retry_in: Duration,
}

/// Retry timing and outage state of one thing that can fail.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
    down_since: Option<Instant>,
    next_attempt: Option<Instant>,
}

impl Backoff {
    /// Waits from `min`, doubling per consecutive failure, never longer than `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
            down_since: None,
            next_attempt: None,
        }
    }

    /// The wait after `failures` consecutive failures.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.min.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// Records a failure at `now`.
    pub fn failed(&mut self, now: Instant) -> Failed {
        let first = self.down_since.is_none();
        if first {
            self.down_since = Some(now);
        }
        self.failures = self.failures.saturating_add(1);
        let retry_in = self.delay(self.failures);
        self.next_attempt = Some(now + retry_in);
        Failed { first, retry_in }
    }

    /// Records a success; returns how long the outage lasted if this ended one.
    pub fn succeeded(&mut self) -> Option<Duration> {
        self.failures = 0;
        self.next_attempt = None;
        self.down_since.take().map(|since| since.elapsed())
    }

    /// Whether an attempt is due at `now` (always, unless backing off).
    pub fn ready(&self, now: Instant) -> bool {
        self.next_attempt.is_none_or(|at| now >= at)
    }

    /// When the next attempt is due, if backing off.
    pub fn next_attempt(&self) -> Option<Instant> {
        self.next_attempt
    }

    /// Whether the last attempt failed.
    pub fn is_failing(&self) -> bool {
        self.down_since.is_some()
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_reports_an_outage_once() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let now = Instant::now();
        assert!(b.ready(now));
        let waits: Vec<_> = (0..5).map(|_| b.failed(now)).collect();
        assert!(waits[0].first);
        assert!(waits[1..].iter().all(|f| !f.first));
        let secs: Vec<u64> = waits.iter().map(|f| f.retry_in.as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 5, 5]);
        assert!(!b.ready(now));
        assert!(b.ready(now + Duration::from_secs(5)));
        assert!(b.is_failing());
        assert!(b.succeeded().is_some());
        assert!(b.succeeded().is_none(), "recovery is reported once");
        assert!(b.ready(now));
        assert_eq!(b.failed(now).retry_in, Duration::from_secs(1));
    }

    #[test]
    fn max_below_min_is_min() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(b.failed(Instant::now()).retry_in, Duration::from_secs(2));
    }
}
