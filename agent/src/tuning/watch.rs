//! Automatic revert: an applied change whose proposal carried `revert_if` is watched for
//! its window. Matching series (metric name + attribute subset) are followed: a gauge by
//! its value, a counter by its per-second rate between consecutive batches of the same
//! source. When one passes the limit the way the policy called worse, the watch fires and
//! the engine reverts the change.

use std::collections::HashMap;
use std::time::SystemTime;

use super::action::{Direction, RevertCondition, SettingKey};
use crate::model::{Attributes, Batch, MetricKind};

/// What the pipeline's batches are filtered by before they reach the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchFilter {
    pub metric: String,
    pub attributes: Vec<(String, String)>,
}

impl WatchFilter {
    fn matches(&self, metric: &str, attributes: &Attributes) -> bool {
        metric == self.metric
            && self
                .attributes
                .iter()
                .all(|wanted| attributes.iter().any(|have| have == wanted))
    }
}

/// One datapoint of a watched metric.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedPoint {
    pub metric: String,
    pub kind: MetricKind,
    pub attributes: Attributes,
    pub value: f64,
}

/// The watched datapoints of one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub source: String,
    pub timestamp: SystemTime,
    pub points: Vec<ObservedPoint>,
}

/// The points of `batch` some filter matches, or `None` when there are none.
pub fn observe(filters: &[WatchFilter], batch: &Batch) -> Option<Observation> {
    let points: Vec<ObservedPoint> = batch
        .points()
        .filter(|(metric, attributes, _)| {
            filters.iter().any(|f| f.matches(&metric.name, attributes))
        })
        .map(|(metric, attributes, value)| ObservedPoint {
            metric: metric.name.clone(),
            kind: metric.kind,
            attributes: attributes.clone(),
            value,
        })
        .collect();
    (!points.is_empty()).then(|| Observation {
        source: batch.source.clone(),
        timestamp: batch.timestamp,
        points,
    })
}

/// A change being watched.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The decision id of the change.
    pub id: u64,
    pub key: SettingKey,
    pub condition: RevertCondition,
    /// When the change was applied (earlier points are ignored).
    pub since: SystemTime,
    /// When the watch ends without a revert.
    pub until: SystemTime,
    /// Last value per (source, metric, attributes), for counter rates.
    last: HashMap<(String, String, Attributes), (SystemTime, f64)>,
}

impl Watch {
    /// A watch of change `id` to `key` from `since` for `condition.window`.
    pub fn new(id: u64, key: SettingKey, condition: RevertCondition, since: SystemTime) -> Self {
        Watch {
            id,
            key,
            until: since + condition.window,
            since,
            condition,
            last: HashMap::new(),
        }
    }

    /// The value of the first watched series that is worse than the limit in `observation`,
    /// described in one line.
    fn check(&mut self, observation: &Observation) -> Option<String> {
        if observation.timestamp < self.since {
            return None;
        }
        let condition = &self.condition;
        let filter = WatchFilter {
            metric: condition.metric.clone(),
            attributes: condition.attributes.clone(),
        };
        for point in &observation.points {
            if !filter.matches(&point.metric, &point.attributes) {
                continue;
            }
            let (value, per_second) = match point.kind {
                MetricKind::Counter => {
                    let series = (
                        observation.source.clone(),
                        point.metric.clone(),
                        point.attributes.clone(),
                    );
                    let previous = self
                        .last
                        .insert(series, (observation.timestamp, point.value));
                    let Some((then, before)) = previous else {
                        continue;
                    };
                    let Ok(elapsed) = observation.timestamp.duration_since(then) else {
                        continue;
                    };
                    if elapsed.is_zero() || point.value < before {
                        continue;
                    }
                    ((point.value - before) / elapsed.as_secs_f64(), true)
                }
                MetricKind::Gauge | MetricKind::UpDownCounter => (point.value, false),
                // Histogram points are not scalar points: none reach here.
                MetricKind::Histogram => continue,
            };
            let worse = match condition.worse {
                Direction::Rises => value > condition.limit,
                Direction::Falls => value < condition.limit,
            };
            if worse {
                let unit = if per_second { "/s" } else { "" };
                let verb = match condition.worse {
                    Direction::Rises => "rose to",
                    Direction::Falls => "fell to",
                };
                let after = observation
                    .timestamp
                    .duration_since(self.since)
                    .unwrap_or_default();
                return Some(format!(
                    "{} {verb} {value:.3}{unit} (limit {}{unit}) {} after change {}",
                    condition.metric,
                    condition.limit,
                    humantime::format_duration(std::time::Duration::from_secs(after.as_secs())),
                    self.id
                ));
            }
        }
        None
    }
}

/// The active watches.
#[derive(Debug, Default)]
pub struct Watches {
    list: Vec<Watch>,
}

impl Watches {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Starts `watch`; an older watch of the same setting ends (its change was superseded).
    pub fn add(&mut self, watch: Watch) {
        self.list.retain(|w| w.key != watch.key);
        self.list.push(watch);
    }

    /// Ends the watch of `key`, if any (the setting was changed by something else).
    pub fn remove(&mut self, key: &SettingKey) {
        self.list.retain(|w| &w.key != key);
    }

    /// What the pipeline should pass on.
    pub fn filters(&self) -> Vec<WatchFilter> {
        self.list
            .iter()
            .map(|w| WatchFilter {
                metric: w.condition.metric.clone(),
                attributes: w.condition.attributes.clone(),
            })
            .collect()
    }

    /// The watches `observation` fires (removed), each with what was observed.
    pub fn fire(&mut self, observation: &Observation) -> Vec<(Watch, String)> {
        let mut fired = Vec::new();
        let mut i = 0;
        while i < self.list.len() {
            let within = observation.timestamp <= self.list[i].until;
            match self.list[i].check(observation).filter(|_| within) {
                Some(observed) => fired.push((self.list.remove(i), observed)),
                None => i += 1,
            }
        }
        fired
    }

    /// The watches whose window ended by `now` (removed).
    pub fn expire(&mut self, now: SystemTime) -> Vec<Watch> {
        let (ended, active) = std::mem::take(&mut self.list)
            .into_iter()
            .partition(|w| w.until <= now);
        self.list = active;
        ended
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{BatchBuilder, MetricDesc, attrs};
    use crate::tuning::action::Target;

    fn batch(at: SystemTime, evicted: f64, ratio: f64) -> Batch {
        let mut b = BatchBuilder::new("redis:main", "h");
        let counter = MetricDesc::new("redis.keys.evicted", "{key}", MetricKind::Counter, "");
        let gauge = MetricDesc::new("hit.ratio", "1", MetricKind::Gauge, "");
        b.point(&counter, attrs([("vigil.instance", "main")]), evicted);
        b.point(
            &counter,
            attrs([("vigil.instance", "other")]),
            evicted * 100.0,
        );
        b.point(&gauge, attrs([("vigil.instance", "main")]), ratio);
        let mut batch = b.build();
        batch.timestamp = at;
        batch
    }

    fn watch(metric: &str, worse: Direction, limit: f64, since: SystemTime) -> Watch {
        Watch::new(
            7,
            SettingKey {
                target: Target::Redis,
                instance: "main".into(),
                parameter: "maxmemory".into(),
            },
            RevertCondition {
                metric: metric.into(),
                attributes: vec![("vigil.instance".into(), "main".into())],
                worse,
                limit,
                window: Duration::from_secs(300),
            },
            since,
        )
    }

    #[test]
    fn counters_fire_on_their_rate_and_gauges_on_their_value() {
        let t0 = SystemTime::now();
        let mut watches = Watches::default();
        watches.add(watch("redis.keys.evicted", Direction::Rises, 10.0, t0));
        let filters = watches.filters();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let see = |w: &mut Watches, b: &Batch| w.fire(&observe(&filters, b).unwrap());
        // First batch: no rate yet; then 50 keys in 10 s = 5/s (fine); then 200 in 10 s = 20/s.
        assert!(see(&mut watches, &batch(at(10), 1000.0, 0.9)).is_empty());
        assert!(see(&mut watches, &batch(at(20), 1050.0, 0.9)).is_empty());
        let fired = see(&mut watches, &batch(at(30), 1250.0, 0.9));
        assert_eq!(fired.len(), 1);
        assert!(
            fired[0]
                .1
                .starts_with("redis.keys.evicted rose to 20.000/s (limit 10/s) 30s after change 7"),
            "{}",
            fired[0].1
        );
        assert!(watches.is_empty());

        watches.add(watch("hit.ratio", Direction::Falls, 0.5, t0));
        let filters = watches.filters();
        assert!(
            watches
                .fire(&observe(&filters, &batch(at(10), 0.0, 0.6)).unwrap())
                .is_empty()
        );
        let fired = watches.fire(&observe(&filters, &batch(at(20), 0.0, 0.4)).unwrap());
        assert!(
            fired[0]
                .1
                .starts_with("hit.ratio fell to 0.400 (limit 0.5)"),
            "{}",
            fired[0].1
        );
    }

    #[test]
    fn windows_end_and_nothing_unwatched_passes() {
        let t0 = SystemTime::now();
        let mut watches = Watches::default();
        assert!(observe(&watches.filters(), &batch(t0, 1.0, 1.0)).is_none());
        watches.add(watch("hit.ratio", Direction::Falls, 0.5, t0));
        let obs = observe(&watches.filters(), &batch(t0, 1.0, 1.0)).unwrap();
        assert_eq!(obs.points.len(), 1, "only the watched series passes");
        // Points from before the change and after the window do not count.
        let early = observe(
            &watches.filters(),
            &batch(t0 - Duration::from_secs(5), 0.0, 0.1),
        )
        .unwrap();
        assert!(watches.fire(&early).is_empty());
        let late = observe(
            &watches.filters(),
            &batch(t0 + Duration::from_secs(400), 0.0, 0.1),
        )
        .unwrap();
        assert!(watches.fire(&late).is_empty());
        assert!(watches.expire(t0 + Duration::from_secs(299)).is_empty());
        assert_eq!(watches.expire(t0 + Duration::from_secs(300)).len(), 1);
        assert!(watches.is_empty());
    }
}
