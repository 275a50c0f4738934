//! Crossing the boundary for tuning policies (contracts 0.4.0 and 0.3.0): firing alerts and current
//! settings into WIT values, proposals back into [`crate::tuning`] types, validated all
//! or nothing (a policy's answer is outside input).

use std::time::{Duration, SystemTime};

use super::bindings::v0_4::vigil::plugin::types as wit;
use super::convert::{check_attributes, check_len, unix_nanos};
use crate::alert::Alert;
use crate::model::Severity;
use crate::tuning::action::COLLECTOR_INTERVAL;
use crate::tuning::{
    Action, CurrentSetting, Direction, Maintenance, MaintenanceOp, Proposal, RevertCondition,
    Target,
};

/// Most proposals one `propose` call may return.
pub const MAX_PROPOSALS: usize = 100;
/// Longest instance, parameter or collector name.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest proposed value.
pub const MAX_VALUE_BYTES: usize = 256;
/// Longest reason.
pub const MAX_REASON_BYTES: usize = 1024;
/// Longest metric name a revert condition may watch.
pub const MAX_METRIC_BYTES: usize = 256;
/// Most attributes a revert condition may match.
pub const MAX_REVERT_ATTRIBUTES: usize = 16;
/// Longest PostgreSQL identifier (schema, table, column, index): NAMEDATALEN - 1.
pub const MAX_IDENTIFIER_BYTES: usize = 63;
/// Most columns of a proposed index.
pub const MAX_INDEX_COLUMNS: usize = 8;
/// Most statements an index proposal may name.
pub const MAX_INDEX_STATEMENTS: usize = 16;
/// Longest window a revert condition may watch.
pub const MAX_REVERT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// An alert firing now, as a policy is shown it.
pub fn firing_alert(alert: &Alert) -> wit::FiringAlert {
    wit::FiringAlert {
        plugin: alert.key.plugin.clone(),
        rule: alert.key.rule.clone(),
        key: alert.key.key.clone(),
        severity: match alert.severity {
            Severity::Info => wit::Severity::Info,
            Severity::Warning => wit::Severity::Warning,
            Severity::Critical => wit::Severity::Critical,
        },
        since_ns: unix_nanos(alert.firing_since.unwrap_or(alert.active_since)),
        value: alert.value,
    }
}

/// A setting's current value, as a policy is shown it.
pub fn current_setting(setting: &CurrentSetting) -> wit::CurrentSetting {
    wit::CurrentSetting {
        target: match setting.setting.target {
            Target::Redis => wit::SettingTarget::Redis,
            Target::Postgres => wit::SettingTarget::Postgres,
            Target::Mysql => wit::SettingTarget::Mysql,
            Target::Collector => wit::SettingTarget::Collector,
            // No setting has this target (the allowlist names operations, not settings).
            Target::PostgresMaintenance => wit::SettingTarget::Postgres,
        },
        instance: setting.setting.instance.clone(),
        parameter: setting.setting.parameter.clone(),
        value: setting.value.clone(),
    }
}

/// Checks policy `policy`'s answer to a batch collected at `proposed_at` and converts it.
/// All or nothing: the first problem rejects the whole answer, naming the proposal.
pub fn proposals_from(
    answer: Vec<wit::Proposal>,
    policy: &str,
    proposed_at: SystemTime,
) -> Result<Vec<Proposal>, String> {
    if answer.len() > MAX_PROPOSALS {
        return Err(format!(
            "{} proposals; the limit is {MAX_PROPOSALS} per call",
            answer.len()
        ));
    }
    answer
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            proposal_from(p, policy, proposed_at).map_err(|e| format!("proposal #{i}: {e}"))
        })
        .collect()
}

fn proposal_from(
    p: wit::Proposal,
    policy: &str,
    proposed_at: SystemTime,
) -> Result<Proposal, String> {
    check_len("reason", &p.reason, 0, MAX_REASON_BYTES)?;
    let action = action_from(p.action)?;
    let revert_if = p.revert_if.map(revert_from).transpose()?;
    Ok(Proposal {
        policy: policy.to_owned(),
        action,
        reason: p.reason,
        revert_if,
        proposed_at,
    })
}

fn action_from(action: wit::Action) -> Result<Action, String> {
    let (target, change) = match action {
        wit::Action::RedisConfigSet(change) => (Target::Redis, change),
        wit::Action::PostgresSet(change) => (Target::Postgres, change),
        wit::Action::MysqlSetGlobal(change) => (Target::Mysql, change),
        wit::Action::CollectorInterval(change) => {
            check_len("collector", &change.collector, 1, MAX_NAME_BYTES)?;
            if change.interval_ms == 0 {
                return Err("interval-ms is 0; a collector interval must be at least 1 ms".into());
            }
            return Ok(Action::new(
                Target::Collector,
                change.collector,
                COLLECTOR_INTERVAL,
                change.interval_ms.to_string(),
            ));
        }
        wit::Action::PostgresVacuum(table) => {
            return table_action(MaintenanceOp::Vacuum, table, Vec::new(), Vec::new());
        }
        wit::Action::PostgresAnalyze(table) => {
            return table_action(MaintenanceOp::Analyze, table, Vec::new(), Vec::new());
        }
        wit::Action::PostgresCreateIndex(index) => {
            if index.columns.is_empty() || index.columns.len() > MAX_INDEX_COLUMNS {
                return Err(format!(
                    "an index proposal has {} columns; it takes 1 to {MAX_INDEX_COLUMNS}",
                    index.columns.len()
                ));
            }
            for column in &index.columns {
                check_identifier("column", column)?;
            }
            if index.statements.len() > MAX_INDEX_STATEMENTS {
                return Err(format!(
                    "an index proposal names {} statements; the limit is {MAX_INDEX_STATEMENTS}",
                    index.statements.len()
                ));
            }
            for id in &index.statements {
                if id.parse::<i64>().is_err() {
                    return Err(format!(
                        "statement {id:?} is not a pg_stat_statements query id (a postgresql.query.id value)"
                    ));
                }
            }
            return table_action(
                MaintenanceOp::CreateIndex,
                index.table,
                index.columns,
                index.statements,
            );
        }
        wit::Action::PostgresDropIndex(index) => {
            return table_action(
                MaintenanceOp::DropIndex,
                wit::TableRef {
                    instance: index.instance,
                    schema: index.schema,
                    table: index.index,
                },
                Vec::new(),
                Vec::new(),
            );
        }
    };
    check_len("instance", &change.instance, 1, MAX_NAME_BYTES)?;
    check_len("parameter", &change.parameter, 1, MAX_NAME_BYTES)?;
    check_len("value", &change.value, 0, MAX_VALUE_BYTES)?;
    Ok(Action::new(
        target,
        change.instance,
        change.parameter,
        change.value,
    ))
}

/// Checks a PostgreSQL identifier: 1 to 63 bytes, no NUL (it is quoted before it reaches SQL).
fn check_identifier(what: &str, name: &str) -> Result<(), String> {
    check_len(what, name, 1, MAX_IDENTIFIER_BYTES)?;
    if name.contains('\0') {
        return Err(format!("{what} {name:?} contains a NUL byte"));
    }
    Ok(())
}

/// A maintenance action on `table` (for drop-index: the index) after checking its names.
fn table_action(
    op: MaintenanceOp,
    table: wit::TableRef,
    columns: Vec<String>,
    statements: Vec<String>,
) -> Result<Action, String> {
    check_len("instance", &table.instance, 1, MAX_NAME_BYTES)?;
    check_identifier("schema", &table.schema)?;
    let what = if op == MaintenanceOp::DropIndex {
        "index"
    } else {
        "table"
    };
    check_identifier(what, &table.table)?;
    Ok(Maintenance {
        op,
        schema: table.schema,
        name: table.table,
        columns,
        statements,
    }
    .into_action(table.instance))
}

fn revert_from(r: wit::RevertCondition) -> Result<RevertCondition, String> {
    check_len("revert-if metric", &r.metric, 1, MAX_METRIC_BYTES)?;
    if r.attributes.len() > MAX_REVERT_ATTRIBUTES {
        return Err(format!(
            "revert-if has {} attributes; the limit is {MAX_REVERT_ATTRIBUTES}",
            r.attributes.len()
        ));
    }
    check_attributes("revert-if attribute", &r.attributes)?;
    if !r.limit.is_finite() {
        return Err(format!(
            "revert-if limit is {}; it must be a finite number",
            r.limit
        ));
    }
    let window = Duration::from_millis(r.window_ms);
    if window > MAX_REVERT_WINDOW {
        return Err(format!(
            "revert-if window-ms is {}; the limit is {} (one day)",
            r.window_ms,
            MAX_REVERT_WINDOW.as_millis()
        ));
    }
    Ok(RevertCondition {
        metric: r.metric,
        attributes: r.attributes.into_iter().map(|a| (a.key, a.value)).collect(),
        worse: match r.worse {
            wit::Direction::Rises => Direction::Rises,
            wit::Direction::Falls => Direction::Falls,
        },
        limit: r.limit,
        window,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertKey, AlertState};

    fn change(instance: &str, parameter: &str, value: &str) -> wit::SettingChange {
        wit::SettingChange {
            instance: instance.into(),
            parameter: parameter.into(),
            value: value.into(),
        }
    }

    fn redis(value: &str) -> wit::Proposal {
        wit::Proposal {
            action: wit::Action::RedisConfigSet(change("cache", "maxmemory", value)),
            reason: "evictions rising".into(),
            revert_if: None,
        }
    }

    fn revert(limit: f64, window_ms: u64, attributes: usize) -> wit::RevertCondition {
        wit::RevertCondition {
            metric: "redis.keys.evicted".into(),
            attributes: (0..attributes)
                .map(|i| wit::Attribute {
                    key: format!("k{i}"),
                    value: "v".into(),
                })
                .collect(),
            worse: wit::Direction::Rises,
            limit,
            window_ms,
        }
    }

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn every_action_converts_to_its_target() {
        let mut pg = redis("x");
        pg.action = wit::Action::PostgresSet(change("main", "work_mem", "64MB"));
        let mut my = redis("x");
        my.action = wit::Action::MysqlSetGlobal(change("db", "max_connections", "300"));
        let mut interval = redis("x");
        interval.action = wit::Action::CollectorInterval(wit::IntervalChange {
            collector: "system".into(),
            interval_ms: 30_000,
        });
        interval.revert_if = Some(revert(0.9, 60_000, 1));
        let out = proposals_from(vec![redis("256mb"), pg, my, interval], "p", at()).unwrap();
        let actions: Vec<String> = out.iter().map(|p| p.action.to_string()).collect();
        assert_eq!(
            actions,
            [
                "redis cache maxmemory = 256mb",
                "postgres main work_mem = 64MB",
                "mysql db max_connections = 300",
                "collector system interval-ms = 30000",
            ]
        );
        assert!(out.iter().all(|p| p.policy == "p" && p.proposed_at == at()));
        assert_eq!(out[0].reason, "evictions rising");
        let watch = out[3].revert_if.as_ref().unwrap();
        assert_eq!(watch.window, Duration::from_secs(60));
        assert_eq!(watch.attributes, [("k0".to_owned(), "v".to_owned())]);
        assert_eq!(watch.worse, Direction::Rises);
    }

    #[test]
    fn answers_are_checked_all_or_nothing() {
        let reject = |answer: Vec<wit::Proposal>| proposals_from(answer, "p", at()).unwrap_err();
        assert!(reject(vec![redis("1"); 101]).contains("limit is 100"));
        assert!(proposals_from(vec![redis("1"); 100], "p", at()).is_ok());
        assert!(
            reject(vec![redis("1"), redis(&"x".repeat(257))]).starts_with("proposal #1: value")
        );
        let mut empty = redis("1");
        empty.action = wit::Action::RedisConfigSet(change("", "maxmemory", "1"));
        assert!(reject(vec![empty]).contains("instance is empty"));
        let mut long = redis("1");
        long.reason = "r".repeat(1025);
        assert!(reject(vec![long]).contains("reason"));
        for (condition, expected) in [
            (revert(f64::NAN, 1000, 0), "finite"),
            (revert(f64::INFINITY, 1000, 0), "finite"),
            (revert(1.0, 86_400_001, 0), "window-ms"),
            (revert(1.0, 1000, 17), "17 attributes"),
        ] {
            let mut p = redis("1");
            p.revert_if = Some(condition);
            assert!(reject(vec![p]).contains(expected), "{expected}");
        }
        let mut zero = redis("1");
        zero.action = wit::Action::CollectorInterval(wit::IntervalChange {
            collector: "system".into(),
            interval_ms: 0,
        });
        assert!(reject(vec![zero]).contains("interval-ms"));
    }

    #[test]
    fn a_firing_alert_says_since_when_and_its_last_value() {
        let started = at();
        let alert = Alert {
            key: AlertKey {
                plugin: "threshold".into(),
                rule: "hot".into(),
                key: "s=a".into(),
            },
            source: "system".into(),
            state: AlertState::Firing,
            severity: Severity::Critical,
            summary: String::new(),
            value: Some(0.97),
            labels: vec![],
            hold_for: Duration::ZERO,
            active_since: started - Duration::from_secs(60),
            firing_since: Some(started),
        };
        let w = firing_alert(&alert);
        assert_eq!(
            (w.plugin.as_str(), w.rule.as_str(), w.key.as_str()),
            ("threshold", "hot", "s=a")
        );
        assert_eq!(w.since_ns, 1_700_000_000 * 1_000_000_000);
        assert_eq!(w.value, Some(0.97));
        assert!(matches!(w.severity, wit::Severity::Critical));
    }
}
