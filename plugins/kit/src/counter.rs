//! Rates of cumulative counters between two batches, and streaks of batches in which a
//! condition held (hysteresis). Plain serializable values: a plugin keeps them in module
//! state (lost when its instance restarts) or in the host's key/value state (kept across
//! a trap: see [`crate::policy::load_state`]). Pure: built and tested on the host too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How much a counter grew between two readings, and over how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delta {
    /// The counter's growth (never negative).
    pub increase: f64,
    /// Seconds between the two readings (always above zero).
    pub seconds: f64,
}

impl Delta {
    /// Growth per second.
    pub fn per_second(&self) -> f64 {
        self.increase / self.seconds
    }

    /// Growth per minute.
    pub fn per_minute(&self) -> f64 {
        self.per_second() * 60.0
    }
}

/// The last reading of one cumulative counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    /// Collection time (ns since the epoch) and value of the last reading.
    last: Option<(u64, f64)>,
}

impl Counter {
    /// Takes a reading made at `at_ns` (a batch's `timestamp-ns`). Returns the growth since
    /// the previous reading, or `None` when there is nothing to compare: the first reading,
    /// a counter that went down (the server restarted: this reading becomes the base), a
    /// reading not newer than the last (kept out), or a value that is not a number (ignored).
    pub fn advance(&mut self, at_ns: u64, value: f64) -> Option<Delta> {
        if !value.is_finite() {
            return None;
        }
        let previous = self.last;
        match previous {
            Some((last_ns, _)) if at_ns <= last_ns => return None,
            _ => self.last = Some((at_ns, value)),
        }
        let (last_ns, last_value) = previous?;
        if value < last_value {
            return None;
        }
        Some(Delta {
            increase: value - last_value,
            seconds: (at_ns - last_ns) as f64 / 1e9,
        })
    }
}

/// Counters by key (a series' identity, e.g. `evicted` or `db=shop`), for one source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters(BTreeMap<String, Counter>);

impl Counters {
    /// Takes a reading of counter `key` (see [`Counter::advance`]).
    pub fn advance(&mut self, key: &str, at_ns: u64, value: f64) -> Option<Delta> {
        match self.0.get_mut(key) {
            Some(counter) => counter.advance(at_ns, value),
            None => self
                .0
                .entry(key.to_owned())
                .or_default()
                .advance(at_ns, value),
        }
    }

    /// Forgets every counter whose key `keep` refuses (series that are gone), so the
    /// state stays as small as the source.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.0.retain(|key, _| keep(key));
    }

    /// How many counters are kept.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no counter is kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How many consecutive batches a condition held: the hysteresis of "for N batches".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Streak {
    held: u32,
}

impl Streak {
    /// Notes one batch: `Some(true)` extends the streak, `Some(false)` ends it, `None`
    /// (nothing could be judged, e.g. the first reading of a counter) leaves it as it is.
    /// Returns the streak's length.
    pub fn observe(&mut self, holds: Option<bool>) -> u32 {
        match holds {
            Some(true) => self.held = self.held.saturating_add(1),
            Some(false) => self.held = 0,
            None => {}
        }
        self.held
    }

    /// Whether the condition held for at least `batches` consecutive batches.
    pub fn reached(&self, batches: u32) -> bool {
        self.held >= batches
    }

    /// The streak's length in batches.
    pub fn batches(&self) -> u32 {
        self.held
    }

    /// Starts over (e.g. after the setting the condition judges changed).
    pub fn reset(&mut self) {
        self.held = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn rate_between_two_readings() {
        let mut c = Counter::default();
        assert_eq!(c.advance(10 * S, 100.0), None, "first reading");
        let d = c.advance(20 * S, 150.0).unwrap();
        assert_eq!(d.increase, 50.0);
        assert_eq!(d.seconds, 10.0);
        assert_eq!(d.per_second(), 5.0);
        assert_eq!(d.per_minute(), 300.0);
        assert_eq!(c.advance(30 * S, 150.0).unwrap().per_second(), 0.0);
    }

    #[test]
    fn a_reset_counter_becomes_the_new_base() {
        let mut c = Counter::default();
        c.advance(S, 1000.0);
        assert_eq!(c.advance(2 * S, 3.0), None, "server restarted");
        assert_eq!(c.advance(3 * S, 5.0).unwrap().increase, 2.0);
    }

    #[test]
    fn old_or_repeated_readings_and_nan_are_kept_out() {
        let mut c = Counter::default();
        c.advance(10 * S, 100.0);
        assert_eq!(c.advance(10 * S, 200.0), None, "same time");
        assert_eq!(c.advance(5 * S, 200.0), None, "older");
        assert_eq!(c.advance(11 * S, f64::NAN), None);
        assert_eq!(c.advance(12 * S, 104.0).unwrap().per_second(), 2.0);
    }

    #[test]
    fn counters_by_key_and_retain() {
        let mut cs = Counters::default();
        cs.advance("a", S, 1.0);
        cs.advance("b", S, 1.0);
        assert_eq!(cs.advance("a", 2 * S, 3.0).unwrap().increase, 2.0);
        cs.retain(|k| k == "a");
        assert_eq!(cs.len(), 1);
        assert_eq!(cs.advance("b", 3 * S, 9.0), None, "b was forgotten");
        let json = serde_json::to_string(&cs).unwrap();
        let back: Counters = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cs, "survives the host's key/value state");
    }

    #[test]
    fn streaks_count_consecutive_batches() {
        let mut s = Streak::default();
        assert_eq!(s.observe(Some(true)), 1);
        assert_eq!(s.observe(None), 1, "unjudged batch leaves it");
        assert_eq!(s.observe(Some(true)), 2);
        assert!(s.reached(2) && !s.reached(3));
        assert_eq!(s.observe(Some(false)), 0);
        s.observe(Some(true));
        s.reset();
        assert_eq!(s.batches(), 0);
    }
}
