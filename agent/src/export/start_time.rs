//! Start times of cumulative series: OTLP sums carry `start_time_unix_nano`, the moment
//! from which their total counts. A series starts when it is first seen; a counter whose
//! value goes down was reset (a server restarted) and starts again at that sample.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::model::{Attributes, Batch, MetricKind};

/// One series' identity within a source: metric name and attributes.
type SeriesKey = (String, Attributes);

/// Where a series stands: when it started and its last value.
#[derive(Debug, Clone, Copy)]
struct Track {
    start: SystemTime,
    last: f64,
}

/// Start times of every cumulative series, per source. A batch from a source replaces
/// what that source reported before, so series that vanish are forgotten (and start
/// anew if they come back) and the tracker never outgrows what is collected.
#[derive(Debug, Default)]
pub struct StartTimes {
    sources: HashMap<String, HashMap<SeriesKey, Track>>,
}

impl StartTimes {
    /// The start time of every point of `batch`, in [`Batch::points`] order: `None` for
    /// gauges, else when the series was first seen, or the batch's time if a counter
    /// went down since the previous batch.
    pub fn observe(&mut self, batch: &Batch) -> Vec<Option<SystemTime>> {
        let previous = self.sources.remove(&batch.source).unwrap_or_default();
        let mut current = HashMap::with_capacity(previous.len());
        let starts = batch
            .points()
            .map(|(metric, attributes, value)| {
                let reset_on_decrease = match metric.kind {
                    MetricKind::Gauge => return None,
                    MetricKind::Counter => true,
                    MetricKind::UpDownCounter => false,
                };
                let key = (metric.name.clone(), attributes.clone());
                let start = match previous.get(&key) {
                    Some(track) if !(reset_on_decrease && value < track.last) => track.start,
                    _ => batch.timestamp,
                };
                current.insert(key, Track { start, last: value });
                Some(start)
            })
            .collect();
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
            [Some(at(4))],
            "a series that vanished from its source starts anew"
        );
    }
}
