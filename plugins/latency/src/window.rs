//! One judged series (a group of histogram or counter series that differ only in their
//! status code): the last cumulative reading of each of its series, the requests counted
//! since its window began, and the verdict of its last complete window.
//!
//! Histograms and request counters are cumulative, so what happened between two batches is
//! the difference of their readings. A window adds those differences up until it holds
//! `min_requests` requests, then it is judged (percentiles, error ratio) and a new one
//! begins. A quiet batch only extends the window: the last verdict holds until the next
//! one, or until the window has stayed incomplete for `stale_after` (too quiet to judge).
//! A reading that falls (the application restarted) starts a new window; the verdict stands.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::quantile::quantile;
use crate::settings::Settings;

/// The last cumulative reading of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Last {
    /// Requests (the histogram's count, or the counter's value).
    pub count: f64,
    /// The histogram's observations per bucket; empty for a counter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<u64>,
    /// When the series was last seen (batch time, ns).
    pub seen_ns: u64,
}

/// What happened since a window began.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub started_ns: u64,
    pub requests: f64,
    /// Requests answered with a server error (5xx).
    pub errors: f64,
    /// Observations per bucket; empty for a counter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<u64>,
}

impl Window {
    fn new(now: u64) -> Window {
        Window {
            started_ns: now,
            ..Window::default()
        }
    }
}

/// The judgement of the last complete window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub requests: f64,
    pub errors: f64,
    /// How long the window lasted, in seconds.
    pub seconds: f64,
    /// `(percentile, seconds)` for every estimated percentile (none for a counter).
    pub quantiles: Vec<(f64, f64)>,
}

impl Verdict {
    /// The estimate of `percentile`, in seconds.
    pub fn quantile(&self, percentile: f64) -> Option<f64> {
        self.quantiles
            .iter()
            .find(|(p, _)| *p == percentile)
            .map(|(_, v)| *v)
    }

    /// Server errors per request.
    pub fn error_ratio(&self) -> f64 {
        if self.requests > 0.0 {
            self.errors / self.requests
        } else {
            0.0
        }
    }
}

/// One series' reading in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Identifies the series inside its group (its status code and other attributes).
    pub series: String,
    pub count: f64,
    /// Observations per bucket (histograms), empty for a counter.
    pub buckets: Vec<u64>,
    /// Whether the series counts server errors.
    pub error: bool,
}

/// The kept state of one judged group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// The histograms' bucket bounds (empty for a counter).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bounds: Vec<f64>,
    pub series: BTreeMap<String, Last>,
    pub window: Window,
    pub verdict: Option<Verdict>,
    /// When the group was last seen (batch time, ns).
    pub seen_ns: u64,
}

/// How a metric's values convert to seconds (`None`: not a duration, no percentiles).
pub type Scale = Option<f64>;

impl Group {
    /// Takes the readings of one batch at `now` (all with the bucket `bounds`). Readings
    /// not newer than the last batch seen are ignored. `scale` converts bounds to seconds.
    pub fn advance(
        &mut self,
        now: u64,
        bounds: &[f64],
        readings: &[Reading],
        scale: Scale,
        s: &Settings,
    ) {
        if now <= self.seen_ns {
            return;
        }
        if bounds != self.bounds.as_slice() || self.seen_ns == 0 {
            // The first batch, or a new bucket layout: every series starts over.
            self.bounds = bounds.to_vec();
            self.series.clear();
            self.window = Window::new(now);
        }
        // A series first seen now, in a group seen before, started from zero since then
        // (an SDK creates a series with its first request, e.g. the first 500).
        let known = !self.series.is_empty();
        let mut reset = false;
        let mut deltas = Vec::with_capacity(readings.len());
        for r in readings {
            match self.series.get(&r.series) {
                Some(last) if fell(last, r) => reset = true,
                Some(last) => deltas.push((
                    r.count - last.count,
                    r.buckets
                        .iter()
                        .zip(&last.buckets)
                        .map(|(current, before)| current - before)
                        .collect::<Vec<_>>(),
                    r.error,
                )),
                None if known => deltas.push((r.count, r.buckets.clone(), r.error)),
                None => {}
            }
            self.series.insert(
                r.series.clone(),
                Last {
                    count: r.count,
                    buckets: r.buckets.clone(),
                    seen_ns: now,
                },
            );
        }
        self.seen_ns = now;
        self.series
            .retain(|_, last| now.saturating_sub(last.seen_ns) < s.stale_after_ns);
        if reset {
            self.window = Window::new(now);
            return;
        }
        for (requests, buckets, error) in deltas {
            self.window.requests += requests;
            if error {
                self.window.errors += requests;
            }
            if !buckets.is_empty() {
                self.window.buckets.resize(buckets.len(), 0);
                for (sum, d) in self.window.buckets.iter_mut().zip(buckets) {
                    *sum += d;
                }
            }
        }
        self.judge(now, scale, s);
    }

    /// Judges the window once it holds enough requests; drops the verdict when it has
    /// stayed incomplete too long.
    fn judge(&mut self, now: u64, scale: Scale, s: &Settings) {
        let window = &self.window;
        if window.requests >= s.min_requests {
            let quantiles = match scale {
                Some(scale) => s
                    .estimated_percentiles()
                    .into_iter()
                    .filter_map(|p| {
                        quantile(p / 100.0, &self.bounds, &window.buckets).map(|v| (p, v * scale))
                    })
                    .collect(),
                None => Vec::new(),
            };
            self.verdict = Some(Verdict {
                requests: window.requests,
                errors: window.errors,
                seconds: now.saturating_sub(window.started_ns) as f64 / 1e9,
                quantiles,
            });
            self.window = Window::new(now);
        } else if now.saturating_sub(window.started_ns) >= s.stale_after_ns {
            self.verdict = None;
        }
    }
}

/// Whether a cumulative reading went down since `last` (a restart: counts begin again).
fn fell(last: &Last, r: &Reading) -> bool {
    r.count < last.count
        || r.buckets.len() != last.buckets.len()
        || r.buckets
            .iter()
            .zip(&last.buckets)
            .any(|(current, before)| current < before)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const BOUNDS: [f64; 3] = [0.1, 0.5, 1.0];

    fn settings() -> Settings {
        Settings::parse(r#"{"min_requests": 10, "stale_after": "100s"}"#).unwrap()
    }

    fn hist(series: &str, buckets: [u64; 4], error: bool) -> Reading {
        Reading {
            series: series.into(),
            count: buckets.iter().sum::<u64>() as f64,
            buckets: buckets.to_vec(),
            error,
        }
    }

    fn counter(series: &str, count: f64, error: bool) -> Reading {
        Reading {
            series: series.into(),
            count,
            buckets: Vec::new(),
            error,
        }
    }

    #[test]
    fn the_first_reading_is_the_base_and_deltas_are_judged() {
        let s = settings();
        let mut g = Group::default();
        // 1000 requests before the plugin looked: not this window's business.
        g.advance(
            S,
            &BOUNDS,
            &[hist("a", [1000, 0, 0, 0], false)],
            Some(1.0),
            &s,
        );
        assert_eq!(g.window.requests, 0.0);
        assert_eq!(g.verdict, None);
        // Then 20 requests: 10 in (0.1, 0.5], 10 in (0.5, 1].
        g.advance(
            2 * S,
            &BOUNDS,
            &[hist("a", [1000, 10, 10, 0], false)],
            Some(1.0),
            &s,
        );
        let v = g.verdict.clone().unwrap();
        assert_eq!(v.requests, 20.0);
        assert_eq!(v.seconds, 1.0);
        // p50: rank 10, end of (0.1, 0.5]; p95: rank 19, 9 of 10 into (0.5, 1]: 0.95.
        assert!((v.quantile(50.0).unwrap() - 0.5).abs() < 1e-12);
        assert!((v.quantile(95.0).unwrap() - 0.95).abs() < 1e-12);
        assert!((v.quantile(99.0).unwrap() - 0.99).abs() < 1e-12);
        // The judged window is over: a new one begins.
        assert_eq!(g.window, Window::new(2 * S));
    }

    #[test]
    fn a_window_spans_quiet_batches_and_the_verdict_holds_until_the_next_one() {
        let s = settings();
        let mut g = Group::default();
        g.advance(S, &BOUNDS, &[hist("a", [0, 0, 0, 0], false)], Some(1.0), &s);
        g.advance(
            2 * S,
            &BOUNDS,
            &[hist("a", [0, 0, 10, 0], false)],
            Some(1.0),
            &s,
        );
        let slow = g.verdict.clone().unwrap();
        // 4 then 6 fast requests: one window of 10 across two batches.
        g.advance(
            3 * S,
            &BOUNDS,
            &[hist("a", [4, 0, 10, 0], false)],
            Some(1.0),
            &s,
        );
        assert_eq!(
            g.verdict.as_ref(),
            Some(&slow),
            "an incomplete window changes nothing"
        );
        assert_eq!(g.window.requests, 4.0);
        g.advance(
            4 * S,
            &BOUNDS,
            &[hist("a", [10, 0, 10, 0], false)],
            Some(1.0),
            &s,
        );
        let fast = g.verdict.clone().unwrap();
        assert_eq!(fast.requests, 10.0);
        assert_eq!(fast.seconds, 2.0);
        assert!(fast.quantile(95.0).unwrap() <= 0.1);
    }

    #[test]
    fn a_window_incomplete_for_stale_after_drops_the_verdict() {
        let s = settings();
        let mut g = Group::default();
        g.advance(S, &BOUNDS, &[hist("a", [0, 0, 0, 0], false)], Some(1.0), &s);
        g.advance(
            2 * S,
            &BOUNDS,
            &[hist("a", [0, 0, 10, 0], false)],
            Some(1.0),
            &s,
        );
        assert!(g.verdict.is_some());
        g.advance(
            101 * S,
            &BOUNDS,
            &[hist("a", [0, 0, 11, 0], false)],
            Some(1.0),
            &s,
        );
        assert!(g.verdict.is_some(), "99 s is not yet stale");
        g.advance(
            102 * S,
            &BOUNDS,
            &[hist("a", [0, 0, 11, 0], false)],
            Some(1.0),
            &s,
        );
        assert_eq!(g.verdict, None);
    }

    #[test]
    fn a_falling_count_starts_a_new_window_from_the_new_reading() {
        let s = settings();
        let mut g = Group::default();
        g.advance(S, &BOUNDS, &[hist("a", [0, 0, 0, 0], false)], Some(1.0), &s);
        g.advance(
            2 * S,
            &BOUNDS,
            &[hist("a", [5, 0, 0, 0], false)],
            Some(1.0),
            &s,
        );
        assert_eq!(g.window.requests, 5.0);
        // The application restarted: 3 requests since; no negative delta, a new window.
        g.advance(
            3 * S,
            &BOUNDS,
            &[hist("a", [3, 0, 0, 0], false)],
            Some(1.0),
            &s,
        );
        assert_eq!(g.window, Window::new(3 * S));
        assert_eq!(g.series["a"].count, 3.0);
        // Counting goes on from the new base.
        g.advance(
            4 * S,
            &BOUNDS,
            &[hist("a", [3, 0, 0, 12], false)],
            Some(1.0),
            &s,
        );
        let v = g.verdict.clone().unwrap();
        assert_eq!(v.requests, 12.0);
        assert_eq!(v.quantile(50.0), Some(1.0), "all above the last bound");
    }

    #[test]
    fn a_bucket_falling_while_the_count_grows_is_a_reset_too() {
        let s = settings();
        let mut g = Group::default();
        g.advance(S, &BOUNDS, &[hist("a", [5, 5, 0, 0], false)], Some(1.0), &s);
        g.advance(
            2 * S,
            &BOUNDS,
            &[hist("a", [0, 0, 20, 0], false)],
            Some(1.0),
            &s,
        );
        assert_eq!(g.verdict, None);
        assert_eq!(g.window, Window::new(2 * S));
    }

    #[test]
    fn new_bounds_start_every_series_over() {
        let s = settings();
        let mut g = Group::default();
        g.advance(S, &BOUNDS, &[hist("a", [0, 0, 0, 0], false)], Some(1.0), &s);
        g.advance(
            2 * S,
            &[0.2, 0.4, 2.0],
            &[hist("a", [50, 0, 0, 0], false)],
            Some(1.0),
            &s,
        );
        assert_eq!(g.bounds, [0.2, 0.4, 2.0]);
        assert_eq!(g.window, Window::new(2 * S));
        assert_eq!(g.verdict, None);
    }

    #[test]
    fn the_error_ratio_counts_server_error_series_of_the_group() {
        let s = settings();
        let mut g = Group::default();
        g.advance(S, &[], &[counter("200", 100.0, false)], None, &s);
        // 18 more OK, and a first series of 500s with 2: new in a known group, counted whole.
        g.advance(
            2 * S,
            &[],
            &[counter("200", 118.0, false), counter("500", 2.0, true)],
            None,
            &s,
        );
        let v = g.verdict.clone().unwrap();
        assert_eq!((v.requests, v.errors), (20.0, 2.0));
        assert!((v.error_ratio() - 0.1).abs() < 1e-12);
        assert!(v.quantiles.is_empty(), "a counter has no percentiles");
    }

    #[test]
    fn histogram_series_split_by_status_are_summed() {
        let s = settings();
        let mut g = Group::default();
        let base = [
            hist("200", [0, 0, 0, 0], false),
            hist("500", [0, 0, 0, 0], true),
        ];
        g.advance(S, &BOUNDS, &base, Some(1.0), &s);
        g.advance(
            2 * S,
            &BOUNDS,
            &[
                hist("200", [8, 0, 0, 0], false),
                hist("500", [0, 0, 0, 2], true),
            ],
            Some(1.0),
            &s,
        );
        let v = g.verdict.clone().unwrap();
        assert_eq!((v.requests, v.errors), (10.0, 2.0));
        // p50: rank 5 of 8 in [0, 0.1]; p95: rank 9.5 lands in (1, +Inf): the last bound.
        assert!((v.quantile(50.0).unwrap() - 0.0625).abs() < 1e-12);
        assert_eq!(v.quantile(95.0), Some(1.0));
    }

    #[test]
    fn a_scale_converts_bounds_to_seconds() {
        let s = settings();
        let mut g = Group::default();
        let ms = [100.0, 500.0, 1000.0];
        g.advance(S, &ms, &[hist("a", [0, 0, 0, 0], false)], Some(1e-3), &s);
        g.advance(
            2 * S,
            &ms,
            &[hist("a", [0, 10, 0, 0], false)],
            Some(1e-3),
            &s,
        );
        let v = g.verdict.clone().unwrap();
        assert!((v.quantile(50.0).unwrap() - 0.3).abs() < 1e-12);
    }

    #[test]
    fn an_older_batch_is_ignored() {
        let s = settings();
        let mut g = Group::default();
        g.advance(
            5 * S,
            &BOUNDS,
            &[hist("a", [9, 0, 0, 0], false)],
            Some(1.0),
            &s,
        );
        let before = g.clone();
        g.advance(
            4 * S,
            &BOUNDS,
            &[hist("a", [1, 0, 0, 0], false)],
            Some(1.0),
            &s,
        );
        assert_eq!(g, before);
    }

    #[test]
    fn series_not_seen_for_stale_after_are_forgotten() {
        let s = settings();
        let mut g = Group::default();
        g.advance(
            S,
            &[],
            &[counter("200", 1.0, false), counter("404", 1.0, false)],
            None,
            &s,
        );
        g.advance(50 * S, &[], &[counter("200", 2.0, false)], None, &s);
        assert_eq!(g.series.len(), 2);
        g.advance(101 * S, &[], &[counter("200", 3.0, false)], None, &s);
        assert_eq!(g.series.keys().collect::<Vec<_>>(), ["200"]);
    }
}
