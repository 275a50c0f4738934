//! The echo policy's logic, on `crate::bindings` (0.4.0 in echo-policy, 0.3.0 in
//! contract-v0-3; the `maintenance` feature adds 0.4.0's PostgreSQL maintenance actions).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::bindings::vigil::plugin::host;
use crate::bindings::vigil::plugin::types::{
    Action, Attribute, CurrentSetting, Direction, FiringAlert, IntervalChange, RevertCondition,
    SettingChange, SettingTarget, Severity,
};
use crate::bindings::{Batch, Guest, PluginInfo, Proposal};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Settings {
    interests: Option<Vec<String>>,
    mode: Option<String>,
    count: Option<usize>,
    proposals: Vec<ProposalSpec>,
}

// Without `maintenance` (built against 0.3.0) the PostgreSQL maintenance fields go unread.
#[cfg_attr(not(feature = "maintenance"), allow(dead_code))]
#[derive(Deserialize, Clone)]
struct ProposalSpec {
    action: String,
    #[serde(default)]
    instance: String,
    #[serde(default)]
    parameter: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    collector: String,
    #[serde(default)]
    interval_ms: u64,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    revert_if: Option<RevertSpec>,
    #[serde(default)]
    schema: String,
    #[serde(default)]
    table: String,
    #[serde(default)]
    index: String,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    statements: Vec<String>,
}

#[derive(Deserialize, Clone)]
struct RevertSpec {
    metric: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    worse: String,
    limit: serde_json::Value,
    window_ms: u64,
}

fn settings() -> Result<Settings, String> {
    serde_json::from_str(&host::config()).map_err(|e| format!("invalid echo-policy settings: {e}"))
}

fn change(spec: &ProposalSpec) -> SettingChange {
    SettingChange {
        instance: spec.instance.clone(),
        parameter: spec.parameter.clone(),
        value: spec.value.clone(),
    }
}

#[cfg(feature = "maintenance")]
fn table_ref(spec: &ProposalSpec) -> crate::bindings::vigil::plugin::types::TableRef {
    crate::bindings::vigil::plugin::types::TableRef {
        instance: spec.instance.clone(),
        schema: spec.schema.clone(),
        table: spec.table.clone(),
    }
}

fn proposal(spec: &ProposalSpec) -> Result<Proposal, String> {
    let action = match spec.action.as_str() {
        "redis-config-set" => Action::RedisConfigSet(change(spec)),
        "postgres-set" => Action::PostgresSet(change(spec)),
        "mysql-set-global" => Action::MysqlSetGlobal(change(spec)),
        "collector-interval" => Action::CollectorInterval(IntervalChange {
            collector: spec.collector.clone(),
            interval_ms: spec.interval_ms,
        }),
        #[cfg(feature = "maintenance")]
        "postgres-vacuum" => Action::PostgresVacuum(table_ref(spec)),
        #[cfg(feature = "maintenance")]
        "postgres-analyze" => Action::PostgresAnalyze(table_ref(spec)),
        #[cfg(feature = "maintenance")]
        "postgres-create-index" => {
            Action::PostgresCreateIndex(crate::bindings::vigil::plugin::types::IndexProposal {
                table: table_ref(spec),
                columns: spec.columns.clone(),
                statements: spec.statements.clone(),
            })
        }
        #[cfg(feature = "maintenance")]
        "postgres-drop-index" => {
            Action::PostgresDropIndex(crate::bindings::vigil::plugin::types::IndexRef {
                instance: spec.instance.clone(),
                schema: spec.schema.clone(),
                index: spec.index.clone(),
            })
        }
        other => return Err(format!("unknown action {other:?}")),
    };
    Ok(Proposal {
        action,
        reason: spec.reason.clone(),
        revert_if: spec.revert_if.as_ref().map(revert).transpose()?,
    })
}

fn revert(spec: &RevertSpec) -> Result<RevertCondition, String> {
    let limit = match &spec.limit {
        serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        serde_json::Value::String(s) => s.parse().map_err(|e| format!("limit {s:?}: {e}"))?,
        other => return Err(format!("limit {other} is neither a number nor a string")),
    };
    Ok(RevertCondition {
        metric: spec.metric.clone(),
        attributes: spec
            .attributes
            .iter()
            .map(|(key, value)| Attribute {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        worse: match spec.worse.as_str() {
            "falls" => Direction::Falls,
            _ => Direction::Rises,
        },
        limit,
        window_ms: spec.window_ms,
    })
}

/// One proposal per firing alert and per current setting, saying what the policy was shown.
fn echo_inputs(firing: &[FiringAlert], current: &[CurrentSetting]) -> Vec<Proposal> {
    let alerts = firing.iter().map(|a| Proposal {
        action: Action::RedisConfigSet(SettingChange {
            instance: "firing".into(),
            parameter: a.rule.clone(),
            value: a.key.clone(),
        }),
        reason: format!(
            "firing {}/{}/{} {} since {} value {:?}",
            a.plugin,
            a.rule,
            a.key,
            match a.severity {
                Severity::Info => "info",
                Severity::Warning => "warning",
                Severity::Critical => "critical",
            },
            a.since_ns,
            a.value
        ),
        revert_if: None,
    });
    let settings = current.iter().map(|s| {
        let change = SettingChange {
            instance: s.instance.clone(),
            parameter: s.parameter.clone(),
            value: s.value.clone(),
        };
        let (action, target) = match s.target {
            SettingTarget::Redis => (Action::RedisConfigSet(change), "redis"),
            SettingTarget::Postgres => (Action::PostgresSet(change), "postgres"),
            SettingTarget::Mysql => (Action::MysqlSetGlobal(change), "mysql"),
            SettingTarget::Collector => (
                Action::CollectorInterval(IntervalChange {
                    collector: s.instance.clone(),
                    interval_ms: s.value.parse().unwrap_or(0),
                }),
                "collector",
            ),
        };
        Proposal {
            action,
            reason: format!("current {target}"),
            revert_if: None,
        }
    });
    alerts.chain(settings).collect()
}

/// Counts this call in the host's key/value state; returns the count, 1 for the first.
fn count_call() -> Result<u64, String> {
    let n = host::state_get("n")
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
        + 1;
    host::state_set("n", &n.to_le_bytes())?;
    Ok(n)
}

struct Echo;

impl Guest for Echo {
    fn describe() -> Result<PluginInfo, String> {
        Ok(PluginInfo {
            name: "echo-policy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            interests: settings()?.interests.unwrap_or_else(|| vec!["*".into()]),
        })
    }

    fn propose(
        _batch: Batch,
        firing: Vec<FiringAlert>,
        current: Vec<CurrentSetting>,
    ) -> Result<Vec<Proposal>, String> {
        let settings = settings()?;
        match settings.mode.as_deref().unwrap_or("echo") {
            "trap" => panic!("echo-policy: trapping as asked"),
            "fail" => return Err("echo-policy: failing as asked".into()),
            "inputs" => return Ok(echo_inputs(&firing, &current)),
            "count" => {
                let n = count_call()?;
                return Ok(vec![Proposal {
                    action: Action::CollectorInterval(IntervalChange {
                        collector: "system".into(),
                        interval_ms: 1000,
                    }),
                    reason: format!("n={n}"),
                    revert_if: None,
                }]);
            }
            _ => {}
        }
        let proposals = settings
            .proposals
            .iter()
            .map(proposal)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(match (settings.count, proposals.first()) {
            (Some(count), Some(first)) => vec![first.clone(); count],
            _ => proposals,
        })
    }
}

crate::bindings::export!(Echo with_types_in crate::bindings);
