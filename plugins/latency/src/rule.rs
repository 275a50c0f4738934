//! One evaluation: reads the watched histograms and request counters of a batch, groups
//! their series (all attributes but the status code, or `group_by`), advances each group's
//! kept state ([`crate::window`]) and reports the verdicts above their targets.
//!
//! The state of a source's metric is one JSON value in the host's key/value store under
//! `latency/SOURCE/METRIC`, so it survives an instance restart. Free of host calls: the
//! store is a parameter, so all of this runs in native tests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigil_plugin_kit::Frame;
use vigil_plugin_kit::bindings::vigil::plugin::types::{Attribute, Finding, MetricKind};

use crate::settings::Settings;
use crate::window::{Group, Reading, Scale, Verdict};

/// Where the state lives: the host's key/value interface, or a map in tests.
pub trait Store {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String>;
}

/// Something to log once (by `key`) rather than fail the evaluation for.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    pub key: String,
    pub message: String,
}

/// What an evaluation found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub findings: Vec<Finding>,
    pub warnings: Vec<Warning>,
}

impl Outcome {
    fn warn(&mut self, key: String, message: String) {
        self.warnings.push(Warning { key, message });
    }
}

/// The kept state of one metric of one source.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricState {
    pub groups: BTreeMap<String, Group>,
}

impl MetricState {
    fn series(&self) -> usize {
        self.groups.values().map(|g| g.series.len()).sum()
    }
}

/// The readings of one group in a batch.
#[derive(Default)]
struct GroupInput {
    /// The group's attributes, `key="value"` (its identity and its findings' labels).
    attributes: Vec<(String, String)>,
    bounds: Vec<f64>,
    readings: Vec<Reading>,
}

/// The readings of one metric in a batch.
struct MetricInput {
    scale: Scale,
    groups: BTreeMap<String, GroupInput>,
}

/// The state key of a source's metric.
pub fn state_key(source: &str, metric: &str) -> String {
    format!("latency/{source}/{metric}")
}

/// Evaluates one batch: advances the kept state in `store`, returns the findings.
pub fn evaluate(frame: &Frame, s: &Settings, store: &mut impl Store) -> Outcome {
    let mut outcome = Outcome::default();
    let now = frame.batch.timestamp_ns;
    let source = frame.batch.source.as_str();
    for (metric, input) in collect(frame, s, &mut outcome) {
        let key = state_key(source, &metric);
        let mut state: MetricState = match store.get(&key) {
            None => MetricState::default(),
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                outcome.warn(
                    format!("latency-state/{metric}"),
                    format!("the kept state of {metric} from {source} does not parse ({e}); it starts over"),
                );
                MetricState::default()
            }),
        };
        let verdicts = advance(&mut state, &metric, input, now, s, &mut outcome);
        state
            .groups
            .retain(|_, g| now.saturating_sub(g.seen_ns) < s.stale_after_ns);
        let saved = serde_json::to_vec(&state)
            .map_err(|e| e.to_string())
            .and_then(|bytes| store.set(&key, &bytes));
        if let Err(e) = saved {
            outcome.warn(
                format!("latency-keep/{metric}"),
                format!("cannot keep the state of {metric} from {source} ({e}): windows restart after an instance restart; lower max_series"),
            );
        }
        for (attributes, verdict) in verdicts {
            report(
                &mut outcome.findings,
                source,
                &metric,
                &attributes,
                &verdict,
                s,
            );
        }
    }
    outcome
}

/// Advances every group of the batch; returns the verdicts of the groups seen in it.
fn advance(
    state: &mut MetricState,
    metric: &str,
    input: MetricInput,
    now: u64,
    s: &Settings,
    outcome: &mut Outcome,
) -> Vec<(Vec<(String, String)>, Verdict)> {
    let mut series = state.series();
    let mut verdicts = Vec::new();
    for (key, mut group_input) in input.groups {
        let group = state.groups.get(&key);
        // New series beyond max_series are left out (state and work stay bounded).
        group_input.readings.retain(|r| {
            let known = group.is_some_and(|g| g.series.contains_key(&r.series));
            if known || series < s.max_series {
                series += usize::from(!known);
                true
            } else {
                outcome.warn(
                    format!("latency-max-series/{metric}"),
                    format!("{metric} has more than max_series = {} series: the others are not judged; raise max_series or set group_by", s.max_series),
                );
                false
            }
        });
        if group_input.readings.is_empty() {
            continue;
        }
        let group = state.groups.entry(key).or_default();
        group.advance(
            now,
            &group_input.bounds,
            &group_input.readings,
            input.scale,
            s,
        );
        if let Some(verdict) = &group.verdict {
            verdicts.push((group_input.attributes, verdict.clone()));
        }
    }
    verdicts
}

/// The watched series of the batch, by metric and group.
fn collect(frame: &Frame, s: &Settings, outcome: &mut Outcome) -> BTreeMap<String, MetricInput> {
    let table = &frame.table;
    let mut metrics: BTreeMap<String, MetricInput> = BTreeMap::new();
    let mut add = |metric: &str,
                   scale: Scale,
                   attributes: &[Attribute],
                   bounds: &[f64],
                   reading: Reading| {
        let (group_attributes, series) = split(attributes, s);
        let key = group_attributes
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(",");
        let input = metrics
            .entry(metric.to_owned())
            .or_insert_with(|| MetricInput {
                scale,
                groups: BTreeMap::new(),
            });
        let group = input.groups.entry(key).or_insert_with(|| GroupInput {
            attributes: group_attributes,
            bounds: bounds.to_vec(),
            readings: Vec::new(),
        });
        if group.bounds.as_slice() != bounds {
            return Err(format!(
                "{metric}: series of one group have different bucket bounds ({:?} and {bounds:?}); set group_by so they are judged apart",
                group.bounds
            ));
        }
        group.readings.push(Reading {
            series,
            error: is_server_error(attributes, s),
            ..reading
        });
        Ok(())
    };
    for h in &frame.batch.histograms {
        let Some(series) = table.series.get(h.series as usize) else {
            continue;
        };
        let Some(m) = table.metrics.get(series.metric as usize) else {
            continue;
        };
        if m.kind != MetricKind::Histogram || !s.metrics.contains(&m.name) {
            continue;
        }
        if let Err(e) = check_histogram(&h.bounds, &h.bucket_counts) {
            outcome.warn(
                format!("latency-malformed/{}", m.name),
                format!("{}: {e}; the point is left out", m.name),
            );
            continue;
        }
        let scale = seconds_per_unit(&m.unit, &m.name);
        if scale.is_none() {
            outcome.warn(
                format!("latency-unit/{}", m.name),
                format!("{} has unit {:?}, not a duration: its percentiles are not judged (its error ratio is)", m.name, m.unit),
            );
        }
        let reading = Reading {
            series: String::new(),
            count: h.bucket_counts.iter().sum::<u64>() as f64,
            buckets: h.bucket_counts.clone(),
            error: false,
        };
        if let Err(e) = add(&m.name, scale, &series.attributes, &h.bounds, reading) {
            outcome.warn(format!("latency-bounds/{}", m.name), e);
        }
    }
    for point in frame.points() {
        if !s.request_counters.iter().any(|c| c == point.metric) {
            continue;
        }
        if !(point.value.is_finite() && point.value >= 0.0) {
            outcome.warn(
                format!("latency-counter/{}", point.metric),
                format!(
                    "{} has the value {}, not a request count: the point is left out",
                    point.metric, point.value
                ),
            );
            continue;
        }
        let reading = Reading {
            series: String::new(),
            count: point.value,
            buckets: Vec::new(),
            error: false,
        };
        // A counter has no bounds, so no group can disagree about them.
        let _ = add(point.metric, None, point.attributes, &[], reading);
    }
    metrics
}

/// A series' group attributes (sorted) and the text telling it apart inside its group.
fn split(attributes: &[Attribute], s: &Settings) -> (Vec<(String, String)>, String) {
    let in_group = |key: &str| match &s.group_by {
        Some(keys) => keys.iter().any(|k| k == key),
        None => !s.status_attributes.iter().any(|k| k == key),
    };
    let mut group = Vec::new();
    let mut rest = Vec::new();
    for a in attributes {
        if in_group(&a.key) {
            group.push((a.key.clone(), a.value.clone()));
        } else {
            rest.push(format!("{}={:?}", a.key, a.value));
        }
    }
    group.sort();
    rest.sort();
    (group, rest.join(","))
}

/// Whether the series' status code (the first status attribute it has) is a server error:
/// `500`-`599`, or `5xx` as some instrumentations write it.
pub(crate) fn is_server_error(attributes: &[Attribute], s: &Settings) -> bool {
    let Some(code) = s
        .status_attributes
        .iter()
        .find_map(|k| attributes.iter().find(|a| &a.key == k))
    else {
        return false;
    };
    let code = code.value.trim().as_bytes();
    code.len() == 3
        && code[0] == b'5'
        && code[1..]
            .iter()
            .all(|c| c.is_ascii_digit() || c.eq_ignore_ascii_case(&b'x'))
}

/// Bounds finite and ascending, one bucket more than bounds.
fn check_histogram(bounds: &[f64], counts: &[u64]) -> Result<(), String> {
    if counts.len() != bounds.len() + 1 {
        return Err(format!(
            "{} bucket counts for {} bounds (want one more)",
            counts.len(),
            bounds.len()
        ));
    }
    if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "bucket bounds {bounds:?} are not finite and ascending"
        ));
    }
    Ok(())
}

/// Seconds per unit of a duration metric; `None` when the unit is not a duration. No unit
/// (Prometheus) means seconds unless the name says milliseconds or microseconds.
pub fn seconds_per_unit(unit: &str, metric: &str) -> Scale {
    match unit {
        "s" => Some(1.0),
        "ms" => Some(1e-3),
        "us" | "µs" => Some(1e-6),
        "ns" => Some(1e-9),
        "min" => Some(60.0),
        "h" => Some(3600.0),
        "" | "1" if metric.ends_with("_milliseconds") || metric.ends_with("_ms") => Some(1e-3),
        "" | "1" if metric.ends_with("_microseconds") || metric.ends_with("_us") => Some(1e-6),
        "" | "1" => Some(1.0),
        _ => None,
    }
}

/// The most attribute labels a finding carries (the host accepts 32 labels in all).
const MAX_GROUP_LABELS: usize = 24;

/// Adds the findings of one group's verdict: each percentile rule above its target, and
/// the error-ratio rule above its.
fn report(
    findings: &mut Vec<Finding>,
    source: &str,
    metric: &str,
    attributes: &[(String, String)],
    verdict: &Verdict,
    s: &Settings,
) {
    let selector = format!(
        "{metric}{{{}}}",
        attributes
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let key = cut(format!("{source} {selector}"), 512);
    let mut labels: Vec<(String, String)> = vec![
        ("source".into(), source.into()),
        ("metric".into(), metric.into()),
        ("requests".into(), verdict.requests.to_string()),
        ("errors".into(), verdict.errors.to_string()),
        ("window".into(), human_seconds(verdict.seconds)),
    ];
    for p in [50.0, 95.0, 99.0] {
        if let Some(v) = verdict.quantile(p) {
            labels.push((format!("p{p}"), human_seconds(v)));
        }
    }
    labels.extend(attributes.iter().take(MAX_GROUP_LABELS).cloned());
    let labels: Vec<Attribute> = labels
        .into_iter()
        .map(|(key, value)| Attribute {
            key,
            value: cut(value, 512),
        })
        .collect();
    let window = format!(
        "{} requests in {}",
        verdict.requests,
        human_seconds(verdict.seconds)
    );
    for rule in &s.percentiles {
        let Some(value) = verdict.quantile(rule.percentile) else {
            continue;
        };
        if value > rule.max_seconds {
            findings.push(Finding {
                rule: rule.name.clone(),
                key: key.clone(),
                severity: rule.severity,
                summary: cut(
                    format!(
                        "p{} latency of {selector} from {source} is {}, above {} ({window})",
                        rule.percentile,
                        human_seconds(value),
                        human_seconds(rule.max_seconds)
                    ),
                    1024,
                ),
                value: Some(value),
                labels: labels.clone(),
                for_ms: rule.for_ms,
            });
        }
    }
    if let Some(rule) = &s.error_ratio {
        let ratio = verdict.error_ratio();
        if ratio > rule.max {
            findings.push(Finding {
                rule: "error-ratio".into(),
                key,
                severity: rule.severity,
                summary: cut(
                    format!(
                        "{:.2} % of the requests of {selector} from {source} failed with a server error, above {:.2} % ({} errors, {window})",
                        ratio * 100.0,
                        rule.max * 100.0,
                        verdict.errors
                    ),
                    1024,
                ),
                value: Some(ratio),
                labels,
                for_ms: rule.for_ms,
            });
        }
    }
}

/// `seconds` for a human: `850µs`, `12.5ms`, `1.25s`.
pub fn human_seconds(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{}s", round(seconds, 3))
    } else if seconds >= 1e-3 {
        format!("{}ms", round(seconds * 1e3, 1))
    } else {
        format!("{}µs", round(seconds * 1e6, 0))
    }
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
