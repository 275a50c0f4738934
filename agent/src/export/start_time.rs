//! Start times of cumulative series: OTLP sums carry `start_time_unix_nano`, the moment
//! from which their total counts. A series starts when it is first seen; a counter whose
//! value goes down was reset (a server restarted) and starts again at that sample.
//!
//! The series of a source are kept in one hash table updated in place (foldhash, looked
//! up by the batch's own strings): a round allocates nothing for series already known.

use std::hash::BuildHasher;
use std::time::SystemTime;

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};

use crate::model::{Attributes, Batch, MetricKind};

/// One tracked series: its identity within a source (metric name and attributes), when
/// it started, its last value, and the source's round that last reported it.
#[derive(Debug)]
struct Track {
    name: String,
    attributes: Attributes,
    start: SystemTime,
    last: f64,
    seen: u64,
}

/// The tracked series of one source, and how many batches it has sent.
#[derive(Debug, Default)]
struct SourceSeries {
    series: HashTable<Track>,
    rounds: u64,
}

/// Batches of its source a series may be missing from (its server down for a while)
/// before it is forgotten; a reset during the outage is still caught when it returns.
const FORGET_AFTER_MISSING: u64 = 60;

/// Start times of every cumulative series, per source. Series missing from their source
/// for [`FORGET_AFTER_MISSING`] batches are forgotten (and start anew if they come
/// back), so the tracker never outgrows what is collected.
#[derive(Default)]
pub struct StartTimes {
    sources: HashMap<String, SourceSeries>,
    /// Seeded per process: series attributes come from outside.
    hasher: DefaultHashBuilder,
}

impl StartTimes {
    /// The start time of every point of `batch`, in [`Batch::points`] then
    /// [`Batch::histogram_points`] order: `None` for gauges, else when the series was first
    /// seen, or the batch's time if a counter (a histogram's count) went down since the
    /// previous batch.
    pub fn observe(&mut self, batch: &Batch) -> Vec<Option<SystemTime>> {
        let hasher = &self.hasher;
        let hash =
            |name: &str, attributes: &[(String, String)]| hasher.hash_one((name, attributes));
        let source = self.sources.entry_ref(batch.source.as_str()).or_default();
        source.rounds += 1;
        let round = source.rounds;
        let mut resets = 0usize;
        let histograms = batch
            .histogram_points()
            .map(|(metric, attributes, h)| (metric, attributes, h.count as f64));
        let starts = batch
            .points()
            .chain(histograms)
            .map(|(metric, attributes, value)| {
                let reset_on_decrease = match metric.kind {
                    MetricKind::Gauge => return None,
                    MetricKind::Counter | MetricKind::Histogram => true,
                    MetricKind::UpDownCounter => false,
                };
                let key = hash(&metric.name, attributes);
                let known = source.series.find_mut(key, |t| {
                    t.name == metric.name && t.attributes == *attributes
                });
                let start = match known {
                    Some(track) => {
                        // Compared with the previous batch's value (a series twice in one
                        // batch is compared with that batch's first value).
                        if reset_on_decrease && value < track.last && track.seen < round {
                            resets += 1;
                            track.start = batch.timestamp;
                        }
                        track.last = value;
                        track.seen = round;
                        track.start
                    }
                    None => {
                        let track = Track {
                            name: metric.name.clone(),
                            attributes: attributes.clone(),
                            start: batch.timestamp,
                            last: value,
                            seen: round,
                        };
                        source
                            .series
                            .insert_unique(key, track, |t| hash(&t.name, &t.attributes));
                        batch.timestamp
                    }
                };
                Some(start)
            })
            .collect();
        source
            .series
            .retain(|t| round - t.seen <= FORGET_AFTER_MISSING);
        if resets > 0 {
            tracing::info!(
                source = %batch.source,
                "a counter of {} went down (server restart?): {resets} cumulative series start anew",
                batch.source
            );
        }
        starts
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{BatchBuilder, MetricDesc, attrs};

    fn batch_at(source: &str, at: SystemTime, points: &[(&MetricDesc, &str, f64)]) -> Batch {
        let mut b = BatchBuilder::new(source, "h");
        for (metric, key, value) in points {
            b.point(metric, attrs([("k", key)]), *value);
        }
        let mut batch = b.build();
        batch.timestamp = at;
        batch
    }

    #[test]
    fn a_counter_reset_starts_a_new_start_time() {
        let calls = MetricDesc::new("calls", "1", MetricKind::Counter, "");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut starts = StartTimes::default();
        assert_eq!(
            starts.observe(&batch_at("s", at(0), &[(&calls, "a", 5.0)])),
            [Some(at(0))]
        );
        assert_eq!(
            starts.observe(&batch_at("s", at(1), &[(&calls, "a", 9.0)])),
            [Some(at(0))],
            "growing: same start"
        );
        assert_eq!(
            starts.observe(&batch_at("s", at(2), &[(&calls, "a", 9.0)])),
            [Some(at(0))],
            "unchanged: same start"
        );
        assert_eq!(
            starts.observe(&batch_at("s", at(3), &[(&calls, "a", 2.0)])),
            [Some(at(3))],
            "went down: the server restarted, a new start at this sample"
        );
        assert_eq!(
            starts.observe(&batch_at("s", at(4), &[(&calls, "a", 4.0)])),
            [Some(at(3))],
            "the new start holds"
        );
    }

    #[test]
    fn series_are_tracked_per_source_and_kind() {
        let calls = MetricDesc::new("calls", "1", MetricKind::Counter, "");
        let used = MetricDesc::new("used", "By", MetricKind::UpDownCounter, "");
        let load = MetricDesc::new("load", "1", MetricKind::Gauge, "");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut starts = StartTimes::default();
        starts.observe(&batch_at(
            "a",
            at(0),
            &[(&calls, "x", 5.0), (&used, "x", 10.0), (&load, "x", 1.0)],
        ));
        starts.observe(&batch_at("b", at(1), &[(&calls, "x", 1.0)]));
        assert_eq!(
            starts.observe(&batch_at(
                "a",
                at(2),
                &[(&calls, "x", 6.0), (&used, "x", 3.0), (&load, "x", 0.5)],
            )),
            [Some(at(0)), Some(at(0)), None],
            "another source's lower value is no reset; an up-down counter may go down"
        );
        assert_eq!(
            starts.observe(&batch_at("a", at(3), &[(&used, "x", 3.0)])),
            [Some(at(0))]
        );
        assert_eq!(
            starts.observe(&batch_at("a", at(4), &[(&calls, "x", 7.0)])),
            [Some(at(0))],
            "a series missing for a round (its server down) keeps its start"
        );
        for i in 0..=FORGET_AFTER_MISSING {
            starts.observe(&batch_at("a", at(5 + i), &[(&used, "x", 3.0)]));
        }
        assert_eq!(
            starts.observe(&batch_at("a", at(100), &[(&calls, "x", 8.0)])),
            [Some(at(100))],
            "a series gone for long is forgotten and starts anew"
        );
    }

    #[test]
    fn a_histogram_starts_anew_when_its_count_goes_down() {
        let d = MetricDesc::new("d", "s", MetricKind::Histogram, "");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let batch = |s: u64, count: u64| {
            let mut b = BatchBuilder::new("s", "h");
            b.histogram(
                &d,
                vec![],
                crate::model::Histogram {
                    count,
                    sum: 1.0,
                    bounds: vec![],
                    bucket_counts: vec![count],
                    min: None,
                    max: None,
                },
            );
            let mut batch = b.build();
            batch.timestamp = at(s);
            batch
        };
        let mut starts = StartTimes::default();
        assert_eq!(starts.observe(&batch(0, 5)), [Some(at(0))]);
        assert_eq!(starts.observe(&batch(1, 7)), [Some(at(0))]);
        assert_eq!(
            starts.observe(&batch(2, 1)),
            [Some(at(2))],
            "went down: reset"
        );
    }
}
