//! The agent's own telemetry: every internal metric has one definition here, counted
//! from typed events or read from the sinks' own totals, and published as batches from
//! sources `vigil`, `vigil.export` and `vigil.receive`; like every batch they go out over OTLP and show
//! on `/metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::{Batch, BatchBuilder, MetricDesc, MetricKind, Severity, attrs};
use crate::tuning::TuningStats;

/// What self-telemetry reports of one loaded plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginGauges {
    pub name: String,
    /// Whether it is in quarantine now.
    pub quarantined: bool,
    /// Linear memory of its instance.
    pub memory_bytes: usize,
}

/// Delivery totals of one Alertmanager.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Alerts accepted (re-sends included).
    pub sent: u64,
    /// Failed posts by cause: `connect`, `timeout`, `status_4xx` or `status_5xx`.
    pub failed: BTreeMap<&'static str, u64>,
    /// Alerts waiting to be accepted, as of the last attempt.
    pub pending: usize,
    /// Resolved alerts given up on: not accepted within their retention.
    pub dropped: u64,
}

/// Totals of one signal's queue, as self-telemetry reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// Items waiting to be sent.
    pub queued: u64,
    /// Most items the queue holds.
    pub capacity: u64,
    /// Items delivered.
    pub sent: u64,
    /// Export requests that failed (their items stay queued).
    pub failed_requests: u64,
    /// Items dropped: pushed out by newer ones while full, or still queued at shutdown.
    pub dropped: u64,
}

/// The queues' totals per signal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportStats {
    pub metrics: QueueStats,
    pub logs: QueueStats,
}

/// Something worth counting happened.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A plugin was called to evaluate a batch and answered (`ok`) or failed, after
    /// `duration`. Not emitted for a batch that held nothing the plugin wants (it was
    /// not called).
    PluginEvaluated {
        plugin: &'a str,
        duration: Duration,
        ok: bool,
    },
    /// A plugin evaluation failed; `cause` is the error's label.
    PluginFailed { plugin: &'a str, cause: &'a str },
    /// A plugin file failed to load.
    PluginLoadFailed { plugin: &'a str, cause: &'a str },
    /// A collection round failed.
    CollectFailed { collector: &'a str },
    /// A plugin was loaded again (file or settings changed) or unloaded.
    PluginReloaded { plugin: &'a str },
    /// A plugin was put in quarantine.
    PluginQuarantined { plugin: &'a str },
    /// The config file was applied (`ok`) or refused.
    ConfigReloaded { ok: bool },
    /// A collection round succeeded.
    Collected {
        collector: &'a str,
        duration: Duration,
        points: usize,
    },
}

/// Calls of one plugin: answered, failed, and the time they took together.
#[derive(Debug, Default, Clone, Copy)]
struct Calls {
    ok: u64,
    failed: u64,
    time: Duration,
}

/// Running totals of self-telemetry.
#[derive(Debug, Default)]
pub struct SelfTelemetry {
    evaluations: BTreeMap<String, Calls>,
    plugin_errors: BTreeMap<(String, String), u64>,
    load_failures: BTreeMap<(String, String), u64>,
    collect_errors: BTreeMap<String, u64>,
    collections: BTreeMap<String, (u64, Duration, usize)>,
    reloads: BTreeMap<String, u64>,
    quarantines: BTreeMap<String, u64>,
    config_reloads: BTreeMap<&'static str, u64>,
}

fn desc(name: &str, unit: &str, kind: MetricKind, text: &str) -> MetricDesc {
    MetricDesc::new(name, unit, kind, text)
}

impl SelfTelemetry {
    /// Counts an event.
    pub fn emit(&mut self, event: Event<'_>) {
        match event {
            Event::PluginEvaluated {
                plugin,
                duration,
                ok,
            } => {
                let calls = self.evaluations.entry(plugin.to_owned()).or_default();
                if ok {
                    calls.ok += 1;
                } else {
                    calls.failed += 1;
                }
                calls.time += duration;
            }
            Event::PluginFailed { plugin, cause } => {
                *self
                    .plugin_errors
                    .entry((plugin.to_owned(), cause.to_owned()))
                    .or_default() += 1;
            }
            Event::PluginLoadFailed { plugin, cause } => {
                *self
                    .load_failures
                    .entry((plugin.to_owned(), cause.to_owned()))
                    .or_default() += 1;
            }
            Event::PluginReloaded { plugin } => {
                *self.reloads.entry(plugin.to_owned()).or_default() += 1;
            }
            Event::PluginQuarantined { plugin } => {
                *self.quarantines.entry(plugin.to_owned()).or_default() += 1;
            }
            Event::ConfigReloaded { ok } => {
                *self
                    .config_reloads
                    .entry(if ok { "ok" } else { "error" })
                    .or_default() += 1;
            }
            Event::CollectFailed { collector } => {
                *self.collect_errors.entry(collector.to_owned()).or_default() += 1;
            }
            Event::Collected {
                collector,
                duration,
                points,
            } => {
                let entry = self.collections.entry(collector.to_owned()).or_default();
                entry.0 += 1;
                entry.1 += duration;
                entry.2 = points;
            }
        }
    }

    /// Successful evaluations of `plugin` so far.
    pub fn evaluations(&self, plugin: &str) -> u64 {
        self.evaluations.get(plugin).map_or(0, |c| c.ok)
    }

    /// The totals as a batch from source `vigil`, with the firing alerts per severity,
    /// the state of every loaded plugin, each Alertmanager's delivery totals and the
    /// tuning engine's counts (`None`: no engine runs, no `vigil.tuning.*` series).
    pub fn batch(
        &self,
        host: &str,
        firing: &[(Severity, usize)],
        plugins: &[PluginGauges],
        alertmanagers: &[(String, DeliveryStats)],
        tuning: Option<&TuningStats>,
    ) -> Batch {
        use MetricKind::*;
        let mut b = BatchBuilder::new("vigil", host);
        let plugins_loaded = plugins.len();
        let quarantined = desc(
            "vigil.plugin.quarantined",
            "1",
            Gauge,
            "1 while a plugin is in quarantine",
        );
        let memory = desc(
            "vigil.plugin.memory",
            "By",
            Gauge,
            "Linear memory of a plugin instance",
        );
        for status in plugins {
            let a = attrs([("vigil.plugin", &status.name)]);
            b.point(
                &quarantined,
                a.clone(),
                if status.quarantined { 1.0 } else { 0.0 },
            );
            b.point(&memory, a, status.memory_bytes as f64);
        }
        let reloads = desc(
            "vigil.plugin.reloads",
            "{reload}",
            Counter,
            "Plugin versions swapped in or unloaded while running",
        );
        for (plugin, count) in &self.reloads {
            b.point(&reloads, attrs([("vigil.plugin", plugin)]), *count as f64);
        }
        let quarantines = desc(
            "vigil.plugin.quarantines",
            "{quarantine}",
            Counter,
            "Times a plugin was put in quarantine",
        );
        for (plugin, count) in &self.quarantines {
            b.point(
                &quarantines,
                attrs([("vigil.plugin", plugin)]),
                *count as f64,
            );
        }
        let config_reloads = desc(
            "vigil.config.reloads",
            "{reload}",
            Counter,
            "Config file reloads by result",
        );
        for (result, count) in &self.config_reloads {
            b.point(&config_reloads, attrs([("result", result)]), *count as f64);
        }
        let evaluations = desc(
            "vigil.plugin.evaluations",
            "{evaluation}",
            Counter,
            "Plugin calls by result: ok (answered) or error (failed)",
        );
        let eval_time = desc(
            "vigil.plugin.evaluation.time",
            "s",
            Counter,
            "Time spent in plugin calls, answered or failed",
        );
        for (plugin, calls) in &self.evaluations {
            b.point(
                &evaluations,
                attrs([("vigil.plugin", plugin), ("result", "ok")]),
                calls.ok as f64,
            );
            if calls.failed > 0 {
                b.point(
                    &evaluations,
                    attrs([("vigil.plugin", plugin), ("result", "error")]),
                    calls.failed as f64,
                );
            }
            b.point(
                &eval_time,
                attrs([("vigil.plugin", plugin)]),
                calls.time.as_secs_f64(),
            );
        }
        let errors = desc(
            "vigil.plugin.errors",
            "{error}",
            Counter,
            "Failed plugin evaluations by cause",
        );
        for ((plugin, cause), count) in &self.plugin_errors {
            b.point(
                &errors,
                attrs([("vigil.plugin", plugin), ("error.type", cause)]),
                *count as f64,
            );
        }
        let load = desc(
            "vigil.plugin.load_failures",
            "{failure}",
            Counter,
            "Plugin files that failed to load, by cause",
        );
        for ((plugin, cause), count) in &self.load_failures {
            b.point(
                &load,
                attrs([("vigil.plugin", plugin), ("error.type", cause)]),
                *count as f64,
            );
        }
        b.point(
            &desc(
                "vigil.plugins.loaded",
                "{plugin}",
                Gauge,
                "Plugins loaded and running",
            ),
            vec![],
            plugins_loaded as f64,
        );
        let collect_errors = desc(
            "vigil.collector.errors",
            "{error}",
            Counter,
            "Failed collection rounds",
        );
        for (collector, count) in &self.collect_errors {
            b.point(
                &collect_errors,
                attrs([("vigil.collector", collector)]),
                *count as f64,
            );
        }
        let rounds = desc(
            "vigil.collector.rounds",
            "{round}",
            Counter,
            "Successful collection rounds",
        );
        let round_time = desc(
            "vigil.collector.time",
            "s",
            Counter,
            "Time spent collecting",
        );
        let points = desc(
            "vigil.collector.points",
            "{point}",
            Gauge,
            "Datapoints in the last round",
        );
        for (collector, (count, time, last_points)) in &self.collections {
            let a = attrs([("vigil.collector", collector)]);
            b.point(&rounds, a.clone(), *count as f64);
            b.point(&round_time, a.clone(), time.as_secs_f64());
            b.point(&points, a, *last_points as f64);
        }
        alertmanager_points(&mut b, alertmanagers);
        if let Some(stats) = tuning {
            tuning_points(&mut b, stats);
        }
        let firing_desc = desc(
            "vigil.alerts.firing",
            "{alert}",
            Gauge,
            "Alerts firing now, by severity",
        );
        for (severity, count) in firing {
            b.point(
                &firing_desc,
                attrs([("vigil.alert.severity", severity.as_str())]),
                *count as f64,
            );
        }
        b.build()
    }
}

/// Each Alertmanager's delivery totals, by `url.full` as configured.
fn alertmanager_points(b: &mut BatchBuilder, alertmanagers: &[(String, DeliveryStats)]) {
    use MetricKind::*;
    {
        let sent = desc(
            "vigil.alertmanager.sent",
            "{alert}",
            Counter,
            "Alerts posted to an Alertmanager and accepted (re-sends included)",
        );
        for (url, stats) in alertmanagers {
            b.point(&sent, attrs([("url.full", url)]), stats.sent as f64);
        }
        let failed = desc(
            "vigil.alertmanager.failed",
            "{request}",
            Counter,
            "Failed posts to an Alertmanager, by cause",
        );
        for (url, stats) in alertmanagers {
            for (cause, count) in &stats.failed {
                b.point(
                    &failed,
                    attrs([("url.full", url), ("error.type", cause)]),
                    *count as f64,
                );
            }
        }
        let pending = desc(
            "vigil.alertmanager.pending",
            "{alert}",
            Gauge,
            "Alerts waiting for an Alertmanager to accept them",
        );
        for (url, stats) in alertmanagers {
            b.point(&pending, attrs([("url.full", url)]), stats.pending as f64);
        }
        let dropped = desc(
            "vigil.alertmanager.dropped",
            "{alert}",
            Counter,
            "Resolved alerts given up on after their retention (the Alertmanager never accepted them)",
        );
        for (url, stats) in alertmanagers {
            b.point(&dropped, attrs([("url.full", url)]), stats.dropped as f64);
        }
    }
}

/// The tuning engine's counts: audited decisions by policy and verdict, proposals not
/// decided (repeats, dropped, throttled) and the changes under an automatic-revert watch.
fn tuning_points(b: &mut BatchBuilder, stats: &TuningStats) {
    use MetricKind::*;
    let decisions = desc(
        "vigil.tuning.decisions",
        "{decision}",
        Counter,
        "Audited tuning decisions, by policy and verdict",
    );
    for (policy, verdicts) in &stats.decisions {
        for (verdict, count) in verdicts {
            b.point(
                &decisions,
                attrs([("vigil.plugin", policy), ("vigil.tuning.verdict", verdict)]),
                *count as f64,
            );
        }
    }
    for (name, text, count) in [
        (
            "vigil.tuning.proposals.repeated",
            "Proposals that repeated the last decision on the same action (not audited again)",
            stats.repeats,
        ),
        (
            "vigil.tuning.proposals.dropped",
            "Proposals dropped: the tuning engine's queue was full, or no engine ran",
            stats.dropped,
        ),
        (
            "vigil.tuning.proposals.throttled",
            "Proposals beyond a policy's tuning.max_decisions_per_minute (not decided)",
            stats.throttled,
        ),
    ] {
        b.point(
            &desc(name, "{proposal}", Counter, text),
            vec![],
            count as f64,
        );
    }
    b.point(
        &desc(
            "vigil.tuning.watches",
            "{change}",
            Gauge,
            "Applied changes under an automatic-revert watch",
        ),
        vec![],
        stats.watching as f64,
    );
}

/// The export queues' totals as a batch from source `vigil.export`, by `signal`.
/// Metrics are counted in datapoints, logs in records.
pub fn export_batch(host: &str, stats: &ExportStats) -> Batch {
    use MetricKind::*;
    let mut b = BatchBuilder::new("vigil.export", host);
    let queued = desc(
        "vigil.export.queue.size",
        "{item}",
        Gauge,
        "Items waiting to be sent (metric datapoints or log records)",
    );
    let capacity = desc(
        "vigil.export.queue.capacity",
        "{item}",
        Gauge,
        "Most items the export queue holds",
    );
    let sent = desc("vigil.export.sent", "{item}", Counter, "Items delivered");
    let failed = desc(
        "vigil.export.failed",
        "{request}",
        Counter,
        "Export requests that failed (their data stays queued)",
    );
    let dropped = desc(
        "vigil.export.dropped",
        "{item}",
        Counter,
        "Items lost: pushed out of a full queue, or unsent at shutdown",
    );
    for (signal, q) in [("metrics", &stats.metrics), ("logs", &stats.logs)] {
        let a = attrs([("signal", signal)]);
        b.point(&queued, a.clone(), q.queued as f64)
            .point(&capacity, a.clone(), q.capacity as f64)
            .point(&sent, a.clone(), q.sent as f64)
            .point(&failed, a.clone(), q.failed_requests as f64)
            .point(&dropped, a, q.dropped as f64);
    }
    b.build()
}

/// The OTLP receiver's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiveTotals {
    /// Datapoints taken, by transport (`grpc`, `http`).
    pub datapoints: BTreeMap<&'static str, u64>,
    /// Datapoints refused, by reason (`summary`, `exponential_histogram`, ...).
    pub refused: BTreeMap<&'static str, u64>,
    /// Requests refused whole, by transport and cause (`malformed`, `too_large`,
    /// `unauthenticated`, `busy`, ...).
    pub bad_requests: BTreeMap<(&'static str, &'static str), u64>,
}

/// The OTLP receiver's totals as a batch from source `vigil.receive`.
pub fn receive_batch(host: &str, totals: &ReceiveTotals) -> Batch {
    use MetricKind::*;
    let mut b = BatchBuilder::new("vigil.receive", host);
    let datapoints = desc(
        "vigil.receive.datapoints",
        "{datapoint}",
        Counter,
        "Datapoints received from applications and taken, by transport",
    );
    for (transport, count) in &totals.datapoints {
        b.point(
            &datapoints,
            attrs([("network.protocol.name", transport)]),
            *count as f64,
        );
    }
    let refused = desc(
        "vigil.receive.refused",
        "{datapoint}",
        Counter,
        "Datapoints received and refused (reported to the sender as a partial success), by reason",
    );
    for (reason, count) in &totals.refused {
        b.point(&refused, attrs([("reason", reason)]), *count as f64);
    }
    let bad = desc(
        "vigil.receive.bad_requests",
        "{request}",
        Counter,
        "Requests refused whole, by transport and cause",
    );
    for ((transport, cause), count) in &totals.bad_requests {
        b.point(
            &bad,
            attrs([("network.protocol.name", transport), ("error.type", cause)]),
            *count as f64,
        );
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_counters() {
        let mut t = SelfTelemetry::default();
        t.emit(Event::PluginEvaluated {
            plugin: "p",
            duration: Duration::from_millis(2),
            ok: true,
        });
        t.emit(Event::PluginEvaluated {
            plugin: "p",
            duration: Duration::from_millis(3),
            ok: true,
        });
        t.emit(Event::PluginEvaluated {
            plugin: "p",
            duration: Duration::from_millis(4),
            ok: false,
        });
        t.emit(Event::PluginFailed {
            plugin: "p",
            cause: "trap",
        });
        let batch = t.batch("h", &[(Severity::Critical, 2)], &[], &[], None);
        let get = |name: &str, result: Option<&str>| {
            batch
                .points()
                .find(|(m, attrs, _)| {
                    m.name == name
                        && result.is_none_or(|r| attrs.iter().any(|(k, v)| k == "result" && v == r))
                })
                .map(|(_, _, v)| v)
        };
        assert_eq!(get("vigil.plugin.evaluations", Some("ok")), Some(2.0));
        assert_eq!(get("vigil.plugin.evaluations", Some("error")), Some(1.0));
        assert_eq!(t.evaluations("p"), 2, "successful evaluations");
        assert_eq!(get("vigil.plugin.errors", None), Some(1.0));
        assert_eq!(get("vigil.alerts.firing", None), Some(2.0));
        assert_eq!(get("vigil.alertmanager.sent", None), None);
        assert_eq!(
            get("vigil.tuning.watches", None),
            None,
            "no engine, no series"
        );
        let time = get("vigil.plugin.evaluation.time", None).unwrap();
        assert!((time - 0.009).abs() < 1e-9, "every call's time: {time}");
    }

    #[test]
    fn alertmanager_delivery_is_counted_per_url() {
        let t = SelfTelemetry::default();
        let (a, b) = ("http://a:9093", "http://b:9093");
        let stats = [
            (
                a.to_owned(),
                DeliveryStats {
                    sent: 3,
                    ..DeliveryStats::default()
                },
            ),
            (
                b.to_owned(),
                DeliveryStats {
                    failed: [("connect", 1)].into(),
                    pending: 3,
                    ..DeliveryStats::default()
                },
            ),
        ];
        let batch = t.batch("h", &[], &[], &stats, None);
        let get = |name: &str, url: &str| {
            batch
                .points()
                .find(|(m, attrs, _)| {
                    m.name == name && attrs.iter().any(|(k, v)| k == "url.full" && v == url)
                })
                .map(|(_, attrs, v)| (attrs.len(), v))
        };
        assert_eq!(get("vigil.alertmanager.sent", a), Some((1, 3.0)));
        assert_eq!(get("vigil.alertmanager.failed", b), Some((2, 1.0)));
        assert_eq!(get("vigil.alertmanager.pending", b), Some((1, 3.0)));
    }

    #[test]
    fn tuning_counts_are_counters_per_policy_and_verdict_and_a_watch_gauge() {
        let stats = TuningStats {
            decisions: [
                (
                    "redis-memory".to_owned(),
                    [("applied".to_owned(), 2), ("refused".to_owned(), 1)].into(),
                ),
                ("pg-work-mem".to_owned(), [("dry-run".to_owned(), 4)].into()),
            ]
            .into(),
            repeats: 7,
            dropped: 3,
            throttled: 5,
            watching: 1,
        };
        let batch = SelfTelemetry::default().batch("h", &[], &[], &[], Some(&stats));
        assert_eq!(batch.source, "vigil");
        type Row = (String, MetricKind, String, crate::model::Attributes, f64);
        let points: Vec<Row> = batch
            .points()
            .filter(|(m, _, _)| m.name.starts_with("vigil.tuning."))
            .map(|(m, a, v)| (m.name.clone(), m.kind, m.unit.clone(), a.to_vec(), v))
            .collect();
        let decision = |policy: &str, verdict: &str| {
            points
                .iter()
                .find(|(name, _, _, a, _)| {
                    name == "vigil.tuning.decisions"
                        && a == &[
                            ("vigil.plugin".to_owned(), policy.to_owned()),
                            ("vigil.tuning.verdict".to_owned(), verdict.to_owned()),
                        ]
                })
                .map(|(_, kind, unit, _, v)| (*kind, unit.as_str(), *v))
        };
        assert_eq!(
            decision("redis-memory", "applied"),
            Some((MetricKind::Counter, "{decision}", 2.0))
        );
        assert_eq!(
            decision("redis-memory", "refused"),
            Some((MetricKind::Counter, "{decision}", 1.0))
        );
        assert_eq!(
            decision("pg-work-mem", "dry-run"),
            Some((MetricKind::Counter, "{decision}", 4.0))
        );
        assert_eq!(decision("pg-work-mem", "applied"), None, "no zero series");
        let single = |name: &str| {
            let found: Vec<_> = points.iter().filter(|(n, ..)| n == name).collect();
            assert_eq!(found.len(), 1, "{name}: {points:?}");
            let (_, kind, unit, attributes, value) = found[0];
            assert!(attributes.is_empty(), "{name}: {attributes:?}");
            (*kind, unit.as_str(), *value)
        };
        use MetricKind::{Counter, Gauge};
        assert_eq!(
            single("vigil.tuning.proposals.repeated"),
            (Counter, "{proposal}", 7.0)
        );
        assert_eq!(
            single("vigil.tuning.proposals.dropped"),
            (Counter, "{proposal}", 3.0)
        );
        assert_eq!(
            single("vigil.tuning.proposals.throttled"),
            (Counter, "{proposal}", 5.0)
        );
        assert_eq!(single("vigil.tuning.watches"), (Gauge, "{change}", 1.0));
        assert_eq!(points.len(), 7, "{points:?}");
    }
}
