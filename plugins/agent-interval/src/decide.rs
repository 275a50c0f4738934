//! The policy's logic, free of host calls (built and tested natively): settings, the
//! busy share of a batch, and the step from one batch to the proposals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigil_plugin_kit::bindings::vigil::plugin::types::{CurrentSetting, SettingTarget};
use vigil_plugin_kit::counter::Streak;
use vigil_plugin_kit::policy::{Outcome, collector_interval, current_parsed, proposal};
use vigil_plugin_kit::units::{human_millis, parse_millis};
use vigil_plugin_kit::{Frame, points_of};

/// The metric watched.
pub const CPU: &str = "system.cpu.utilization";
/// The collectors' interval parameter in the settings the host passes.
pub const INTERVAL: &str = "interval-ms";

/// The settings as the config writes them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default = "default_collectors")]
    collectors: Vec<String>,
    #[serde(default = "default_high")]
    high: f64,
    #[serde(default = "default_low")]
    low: f64,
    #[serde(default = "default_for_batches")]
    for_batches: u32,
    #[serde(default = "default_max_interval")]
    max_interval: String,
    #[serde(default = "default_base_interval")]
    base_interval: String,
}

fn default_collectors() -> Vec<String> {
    vec!["system".into()]
}
fn default_high() -> f64 {
    0.9
}
fn default_low() -> f64 {
    0.5
}
fn default_for_batches() -> u32 {
    3
}
fn default_max_interval() -> String {
    "60s".into()
}
fn default_base_interval() -> String {
    "10s".into()
}

fn invalid<T>(what: impl std::fmt::Display) -> Result<T, String> {
    Err(format!("invalid agent-interval settings: {what}"))
}

/// The policy's settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub collectors: Vec<String>,
    pub high: f64,
    pub low: f64,
    pub for_batches: u32,
    pub max_interval_ms: u64,
    pub base_interval_ms: u64,
}

impl Settings {
    /// Parses and checks the settings JSON (`host::config()`).
    pub fn parse(json: &str) -> Result<Settings, String> {
        let raw: Raw = serde_json::from_str(json)
            .map_err(|e| format!("invalid agent-interval settings: {e}"))?;
        if raw.collectors.is_empty() || raw.collectors.iter().any(|c| c.is_empty()) {
            return invalid("collectors must name at least one collector (e.g. [\"system\"])");
        }
        if !(0.0..=1.0).contains(&raw.low)
            || !(0.0..=1.0).contains(&raw.high)
            || raw.low >= raw.high
        {
            return invalid(format!(
                "low ({}) and high ({}) are busy shares: 0 <= low < high <= 1",
                raw.low, raw.high
            ));
        }
        if raw.for_batches == 0 {
            return invalid("for_batches must be at least 1");
        }
        let max_interval_ms =
            parse_millis(&raw.max_interval).or_else(|e| invalid(format!("max_interval: {e}")))?;
        let base_interval_ms =
            parse_millis(&raw.base_interval).or_else(|e| invalid(format!("base_interval: {e}")))?;
        if base_interval_ms == 0 || base_interval_ms > max_interval_ms {
            return invalid(format!(
                "base_interval ({}) must be above 0 and at most max_interval ({})",
                raw.base_interval, raw.max_interval
            ));
        }
        Ok(Settings {
            collectors: raw.collectors,
            high: raw.high,
            low: raw.low,
            for_batches: raw.for_batches,
            max_interval_ms,
            base_interval_ms,
        })
    }
}

/// The host's busy share of CPU time in a batch (0..1): the whole-host series (no
/// `cpu.logical_number` attribute), else the mean of the per-core series.
pub fn busy(frame: &Frame) -> Option<f64> {
    let mut cores = (0.0, 0usize);
    for point in points_of(frame, CPU).filter(|p| p.value.is_finite()) {
        if point.attr("cpu.logical_number").is_empty() {
            return Some(point.value);
        }
        cores = (cores.0 + point.value, cores.1 + 1);
    }
    (cores.1 > 0).then(|| cores.0 / cores.1 as f64)
}

/// What the policy remembers between batches (in the host's state: it survives a trap).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Consecutive batches with busy above `high`.
    high: Streak,
    /// Consecutive batches with busy below `low`.
    low: Streak,
    /// Each collector's interval as last seen: a change restarts the streaks, so a new
    /// interval has to prove itself for `for_batches` batches before the next step.
    seen: BTreeMap<String, u64>,
}

/// One batch: updates the streaks with `busy` and proposes intervals for the collectors
/// whose current interval (from `settings`) is known.
pub fn step(
    state: &mut State,
    s: &Settings,
    busy: Option<f64>,
    settings: &[CurrentSetting],
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut intervals = Vec::new();
    let mut changed = false;
    for collector in &s.collectors {
        let current = current_parsed(
            settings,
            SettingTarget::Collector,
            collector,
            INTERVAL,
            parse_millis,
        )
        .and_then(|ms| match ms {
            0 => Err(format!("the interval of collector {collector} is 0")),
            ms => Ok(ms),
        });
        outcome.note_setting(format!("{collector}:{INTERVAL}"), &current);
        if let Ok(ms) = current {
            changed |= state
                .seen
                .insert(collector.clone(), ms)
                .is_some_and(|old| old != ms);
            intervals.push((collector, ms));
        }
    }
    if changed {
        state.high.reset();
        state.low.reset();
    }
    let high = state.high.observe(busy.map(|b| b > s.high));
    let low = state.low.observe(busy.map(|b| b < s.low));
    let Some(busy) = busy else {
        return outcome;
    };
    for (collector, current) in intervals {
        let backing_off = state.high.reached(s.for_batches);
        let target = if backing_off {
            current.saturating_mul(2).min(s.max_interval_ms)
        } else if state.low.reached(s.for_batches) {
            (current / 2).max(s.base_interval_ms)
        } else {
            continue;
        };
        // Backing off only ever lengthens the interval, returning only shortens it.
        if (backing_off && target <= current) || (!backing_off && target >= current) {
            continue;
        }
        let why = if backing_off {
            format!(
                "host CPU {:.0}% busy, above {:.0}% for {high} batches: collector {collector} backs off from every {} to every {} (at most {})",
                busy * 100.0,
                s.high * 100.0,
                human_millis(current),
                human_millis(target),
                human_millis(s.max_interval_ms)
            )
        } else {
            format!(
                "host CPU {:.0}% busy, below {:.0}% for {low} batches: collector {collector} returns from every {} to every {} (base {})",
                busy * 100.0,
                s.low * 100.0,
                human_millis(current),
                human_millis(target),
                human_millis(s.base_interval_ms)
            )
        };
        outcome
            .proposals
            .push(proposal(collector_interval(collector, target), why, None));
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_plugin_kit::bindings::vigil::plugin::types::{
        Action, Attribute, Batch, IntervalChange, Metric, MetricKind, Series, SeriesTable,
    };

    fn interval(collector: &str, ms: u64) -> CurrentSetting {
        CurrentSetting {
            target: SettingTarget::Collector,
            instance: collector.into(),
            parameter: INTERVAL.into(),
            value: ms.to_string(),
        }
    }

    fn proposed(outcome: &Outcome) -> Vec<(String, u64)> {
        outcome
            .proposals
            .iter()
            .map(|p| match &p.action {
                Action::CollectorInterval(IntervalChange {
                    collector,
                    interval_ms,
                }) => (collector.clone(), *interval_ms),
                other => panic!("unexpected action {other:?}"),
            })
            .collect()
    }

    fn defaults() -> Settings {
        Settings::parse("{}").unwrap()
    }

    #[test]
    fn defaults_and_invalid_settings() {
        let s = defaults();
        assert_eq!(s.collectors, ["system"]);
        assert_eq!((s.high, s.low, s.for_batches), (0.9, 0.5, 3));
        assert_eq!((s.max_interval_ms, s.base_interval_ms), (60_000, 10_000));
        for (json, says) in [
            (r#"{"high": 0.4}"#, "0 <= low < high <= 1"),
            (r#"{"low": -1}"#, "0 <= low < high <= 1"),
            (r#"{"for_batches": 0}"#, "at least 1"),
            (r#"{"max_interval": "soon"}"#, "max_interval"),
            (r#"{"base_interval": "2m"}"#, "at most max_interval"),
            (r#"{"collectors": []}"#, "at least one collector"),
            (r#"{"hihg": 0.95}"#, "unknown field"),
        ] {
            let err = Settings::parse(json).unwrap_err();
            assert!(err.contains(says), "{json}: {err}");
            assert!(err.starts_with("invalid agent-interval settings"), "{err}");
        }
    }

    #[test]
    fn backs_off_after_for_batches_busy_batches_up_to_the_max() {
        let s = defaults();
        let mut state = State::default();
        let at = [interval("system", 10_000)];
        assert!(step(&mut state, &s, Some(0.95), &at).proposals.is_empty());
        assert!(step(&mut state, &s, Some(0.97), &at).proposals.is_empty());
        let third = step(&mut state, &s, Some(0.99), &at);
        assert_eq!(proposed(&third), [("system".to_owned(), 20_000)]);
        assert!(
            third.proposals[0].reason.contains("99% busy"),
            "{:?}",
            third.proposals[0].reason
        );
        assert_eq!(third.proposals[0].revert_if, None);
        // The same proposal while nothing changed (the host decides it once).
        assert_eq!(
            proposed(&step(&mut state, &s, Some(0.99), &at)),
            [("system".to_owned(), 20_000)]
        );
        // Applied: the streak starts over at the new interval.
        let at = [interval("system", 40_000)];
        assert!(step(&mut state, &s, Some(0.99), &at).proposals.is_empty());
        assert!(step(&mut state, &s, Some(0.99), &at).proposals.is_empty());
        assert_eq!(
            proposed(&step(&mut state, &s, Some(0.99), &at)),
            [("system".to_owned(), 60_000)],
            "capped"
        );
        let at = [interval("system", 60_000)];
        for _ in 0..5 {
            assert!(
                step(&mut state, &s, Some(1.0), &at).proposals.is_empty(),
                "at the max"
            );
        }
    }

    #[test]
    fn returns_towards_the_base_when_idle_never_below_it() {
        let s = defaults();
        let mut state = State::default();
        let at = [interval("system", 15_000)];
        step(&mut state, &s, Some(0.1), &at);
        step(&mut state, &s, Some(0.1), &at);
        assert_eq!(
            proposed(&step(&mut state, &s, Some(0.1), &at)),
            [("system".to_owned(), 10_000)]
        );
        let at = [interval("system", 10_000)];
        for _ in 0..5 {
            assert!(
                step(&mut state, &s, Some(0.0), &at).proposals.is_empty(),
                "at the base"
            );
        }
    }

    #[test]
    fn a_batch_in_between_or_unjudged_breaks_or_keeps_the_streak() {
        let s = defaults();
        let mut state = State::default();
        let at = [interval("system", 10_000)];
        step(&mut state, &s, Some(0.95), &at);
        step(&mut state, &s, Some(0.95), &at);
        step(&mut state, &s, Some(0.7), &at); // between low and high: both streaks end
        step(&mut state, &s, Some(0.95), &at);
        assert!(step(&mut state, &s, Some(0.95), &at).proposals.is_empty());
        assert!(
            step(&mut state, &s, None, &at).proposals.is_empty(),
            "no CPU value"
        );
        assert_eq!(step(&mut state, &s, Some(0.95), &at).proposals.len(), 1);
    }

    #[test]
    fn unknown_intervals_are_warned_about_and_never_proposed() {
        let s = Settings::parse(r#"{"collectors": ["system", "main"]}"#).unwrap();
        let mut state = State::default();
        let at = [interval("system", 10_000)];
        let mut last = Outcome::default();
        for _ in 0..3 {
            last = step(&mut state, &s, Some(0.95), &at);
        }
        assert_eq!(proposed(&last), [("system".to_owned(), 20_000)]);
        assert_eq!(last.warnings.len(), 1);
        assert_eq!(last.warnings[0].0, "main:interval-ms");
        assert!(
            last.warnings[0].1.contains("collector main is unknown"),
            "{}",
            last.warnings[0].1
        );
        assert_eq!(last.resolved, ["system:interval-ms"]);
        let unreadable = [CurrentSetting {
            value: "often".into(),
            ..interval("system", 0)
        }];
        let o = step(&mut state, &s, Some(0.95), &unreadable);
        assert!(o.proposals.is_empty());
        assert!(
            o.warnings.iter().any(|(_, m)| m.contains("unreadable")),
            "{:?}",
            o.warnings
        );
    }

    #[test]
    fn busy_is_the_whole_host_series_else_the_mean_of_the_cores() {
        let core = |n: &str| {
            vec![Attribute {
                key: "cpu.logical_number".into(),
                value: n.into(),
            }]
        };
        let frame = |source: &str, series: Vec<Vec<Attribute>>, values: Vec<f64>| {
            Frame::new(Batch {
                source: source.into(),
                host: "h".into(),
                timestamp_ns: 1,
                table_id: 7,
                table: Some(SeriesTable {
                    id: 7,
                    metrics: vec![Metric {
                        name: CPU.into(),
                        unit: "1".into(),
                        kind: MetricKind::Gauge,
                    }],
                    series: series
                        .into_iter()
                        .map(|attributes| Series {
                            metric: 0,
                            attributes,
                        })
                        .collect(),
                }),
                values,
                histograms: Vec::new(),
            })
            .unwrap()
        };
        let f = frame(
            "system-a",
            vec![core("0"), vec![], core("1")],
            vec![1.0, 0.3, 0.0],
        );
        assert_eq!(busy(&f), Some(0.3));
        let f = frame("system-b", vec![core("0"), core("1")], vec![1.0, 0.5]);
        assert_eq!(busy(&f), Some(0.75));
        let f = frame("system-c", vec![], vec![]);
        assert_eq!(busy(&f), None);
    }
}
