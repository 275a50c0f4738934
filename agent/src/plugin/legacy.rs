//! Adapters for plugins built against older contracts, so they keep loading.
//! - `0.1.0` alert rules: their batches carry the whole series table every time (0.1.0 has
//!   no other layout); their findings and self-description are the same records as now.
//!   0.1.0 has no histograms: a batch's histogram series and points are left out (a wanted
//!   histogram metric is listed, as a gauge, with no series).
//! - `0.3.0` tuning policies: everything but their proposals is 0.4.0's; a proposal's action
//!   variant lacks 0.4.0's PostgreSQL maintenance actions, so [`proposal`] maps it over.

use super::bindings::v0_1::vigil::plugin::types as old;
use super::bindings::v0_3::policy::types as v0_3;
use super::bindings::v0_4::vigil::plugin::types as wit;
use super::convert::{Interests, unix_nanos, wanted_part};
use crate::model::Batch;

/// The part of `batch` a 0.1.0 plugin wants; `None` when that is nothing.
pub fn batch_for(batch: &Batch, interests: &Interests) -> Option<old::Batch> {
    let (table, values) = wanted_part(batch, interests)?;
    let scalar_series = values.len();
    Some(old::Batch {
        source: batch.source.clone(),
        host: batch.host.clone(),
        timestamp_ns: unix_nanos(batch.timestamp),
        metrics: table
            .metrics
            .into_iter()
            .map(|m| old::Metric {
                name: m.name,
                unit: m.unit,
                kind: match m.kind {
                    wit::MetricKind::Gauge | wit::MetricKind::Histogram => old::MetricKind::Gauge,
                    wit::MetricKind::Counter => old::MetricKind::Counter,
                    wit::MetricKind::UpDownCounter => old::MetricKind::UpDownCounter,
                },
            })
            .collect(),
        series: table
            .series
            .into_iter()
            .take(scalar_series)
            .map(|s| old::Series {
                metric: s.metric,
                attributes: s.attributes.into_iter().map(attribute).collect(),
            })
            .collect(),
        values,
    })
}

fn attribute(a: wit::Attribute) -> old::Attribute {
    old::Attribute {
        key: a.key,
        value: a.value,
    }
}

/// A 0.1.0 finding as its 0.4.0 twin (the records are the same).
pub fn finding(f: old::Finding) -> wit::Finding {
    wit::Finding {
        rule: f.rule,
        key: f.key,
        severity: match f.severity {
            old::Severity::Info => wit::Severity::Info,
            old::Severity::Warning => wit::Severity::Warning,
            old::Severity::Critical => wit::Severity::Critical,
        },
        summary: f.summary,
        value: f.value,
        labels: f
            .labels
            .into_iter()
            .map(|a| wit::Attribute {
                key: a.key,
                value: a.value,
            })
            .collect(),
        for_ms: f.for_ms,
    }
}

/// A 0.1.0 self-description as its 0.4.0 twin.
pub fn plugin_info(info: old::PluginInfo) -> wit::PluginInfo {
    wit::PluginInfo {
        name: info.name,
        version: info.version,
        interests: info.interests,
    }
}

/// A 0.3.0 proposal as its 0.4.0 twin (every 0.3.0 action is a 0.4.0 action).
pub fn proposal(p: v0_3::Proposal) -> wit::Proposal {
    let change = |c: v0_3::SettingChange| wit::SettingChange {
        instance: c.instance,
        parameter: c.parameter,
        value: c.value,
    };
    wit::Proposal {
        action: match p.action {
            v0_3::Action::RedisConfigSet(c) => wit::Action::RedisConfigSet(change(c)),
            v0_3::Action::PostgresSet(c) => wit::Action::PostgresSet(change(c)),
            v0_3::Action::MysqlSetGlobal(c) => wit::Action::MysqlSetGlobal(change(c)),
            v0_3::Action::CollectorInterval(c) => {
                wit::Action::CollectorInterval(wit::IntervalChange {
                    collector: c.collector,
                    interval_ms: c.interval_ms,
                })
            }
        },
        reason: p.reason,
        revert_if: p.revert_if.map(|r| wit::RevertCondition {
            metric: r.metric,
            attributes: r
                .attributes
                .into_iter()
                .map(|a| wit::Attribute {
                    key: a.key,
                    value: a.value,
                })
                .collect(),
            worse: match r.worse {
                v0_3::Direction::Rises => wit::Direction::Rises,
                v0_3::Direction::Falls => wit::Direction::Falls,
            },
            limit: r.limit,
            window_ms: r.window_ms,
        }),
    }
}
