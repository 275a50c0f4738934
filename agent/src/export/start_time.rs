//! Start times of cumulative series: OTLP sums carry `start_time_unix_nano`, the moment
//! from which their total counts. A series starts when it is first seen; a counter whose
//! value goes down was reset (a server restarted) and starts again at that sample.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::model::{Attributes, Batch, MetricKind};

/// One series' identity within a source: metric name and attributes.
type SeriesKey = (String, Attributes);

/// Where a series stands: when it started, its last value, and for how many batches of
/// its source it has been missing.
#[derive(Debug, Clone, Copy)]
struct Track {
    start: SystemTime,
    last: f64,
    missing: u32,
}

/// Batches of its source a series may be missing from (its server down for a while)
/// before it is forgotten; a reset during the outage is still caught when it returns.
const FORGET_AFTER_MISSING: u32 = 60;

/// Start times of every cumulative series, per source. Series missing from their source
/// for [`FORGET_AFTER_MISSING`] batches are forgotten (and start anew if they come
/// back), so the tracker never outgrows what is collected.
#[derive(Debug, Default)]
pub struct StartTimes {
    sources: HashMap<String, HashMap<SeriesKey, Track>>,
}

impl StartTimes {
    /// The start time of every point of `batch`, in [`Batch::points`] then
    /// [`Batch::histogram_points`] order: `None` for gauges, else when the series was first
    /// seen, or the batch's time if a counter (a histogram's count) went down since the
    /// previous batch.
    pub fn observe(&mut self, batch: &Batch) -> Vec<Option<SystemTime>> {
        let previous = self.sources.remove(&batch.source).unwrap_or_default();
        let mut current = HashMap::with_capacity(previous.len());
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
                let key = (metric.name.clone(), attributes.clone());
                let start = match previous.get(&key) {
                    Some(track) if reset_on_decrease && value < track.last => {
                        resets += 1;
                        batch.timestamp
                    }
                    Some(track) => track.start,
                    None => batch.timestamp,
                };
                current.insert(
                    key,
                    Track {
                        start,
                        last: value,
                        missing: 0,
                    },
                );
                Some(start)
            })
            .collect();
        for (key, track) in previous {
            if track.missing < FORGET_AFTER_MISSING && !current.contains_key(&key) {
                current.insert(
                    key,
                    Track {
                        missing: track.missing + 1,
                        ..track
                    },
                );
            }
        }
        if resets > 0 {
            tracing::info!(
                source = %batch.source,
                "a counter of {} went down (server restart?): {resets} cumulative series start anew",
                batch.source
            );
        }
        self.sources.insert(batch.source.clone(), current);
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
        for i in 0..=FORGET_AFTER_MISSING as u64 {
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
