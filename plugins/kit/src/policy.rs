//! Helpers for tuning policies (the `tuning-policy` world): find the current value of a
//! setting, build proposals and revert conditions, keep state across traps, warn once.
//!
//! A policy implements [`crate::policy_bindings::Guest`] and exports it with
//! `vigil_plugin_kit::export_policy!(MyPolicy);`.

use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::vigil::plugin::host::{self, LogLevel};
use crate::bindings::vigil::plugin::types::{
    Action, Attribute, CurrentSetting, Direction, IntervalChange, Proposal, RevertCondition,
    SettingChange, SettingTarget,
};

/// The value of `parameter` on `instance` of `target` in the settings the host passed to
/// `propose` (the ones the operator's allowlist names), if it is there.
pub fn current<'a>(
    settings: &'a [CurrentSetting],
    target: SettingTarget,
    instance: &str,
    parameter: &str,
) -> Option<&'a str> {
    settings
        .iter()
        .find(|s| s.target == target && s.instance == instance && s.parameter == parameter)
        .map(|s| s.value.as_str())
}

/// What one step of a policy decided: the proposals, and the warnings to log once (by key).
/// Built by pure code; [`Outcome::finish`] does the logging.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub proposals: Vec<Proposal>,
    /// `(key, message)`: logged at warn level the first time the key is seen.
    pub warnings: Vec<(String, String)>,
    /// Keys of warnings whose condition is over (warned again if it comes back).
    pub resolved: Vec<String>,
}

impl Outcome {
    /// Notes that `parameter` of `instance` is unknown (not among the settings the host
    /// passed, or not readable) when `value` is `Err`, or known again when `Ok`.
    pub fn note_setting<T>(&mut self, key: String, value: &Result<T, String>) {
        match value {
            Ok(_) => self.resolved.push(key),
            Err(message) => self.warnings.push((key, message.clone())),
        }
    }

    /// Logs the warnings (once each) and returns the proposals.
    pub fn finish(self) -> Vec<Proposal> {
        for key in &self.resolved {
            unwarn(key);
        }
        for (key, message) in &self.warnings {
            warn_once(key, message);
        }
        self.proposals
    }
}

/// The value of `parameter` on `instance` of `target`, parsed by `parse`; the error says
/// whether it is missing (and how to make the host pass it) or unreadable.
pub fn current_parsed<T>(
    settings: &[CurrentSetting],
    target: SettingTarget,
    instance: &str,
    parameter: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, String> {
    let kind = target_name(target);
    let value = current(settings, target, instance, parameter).ok_or_else(|| {
        format!(
            "the current {parameter} of {kind} {instance} is unknown (the host passes only settings the tuning allowlist names): not proposing changes to it until an allowlist entry names it"
        )
    })?;
    parse(value).map_err(|e| {
        format!("the current {parameter} of {kind} {instance} is unreadable ({e}): not proposing changes to it")
    })
}

/// The name of a setting target as the config writes it.
pub fn target_name(target: SettingTarget) -> &'static str {
    match target {
        SettingTarget::Redis => "redis",
        SettingTarget::Postgres => "postgres",
        SettingTarget::Mysql => "mysql",
        SettingTarget::Collector => "collector",
    }
}

/// `CONFIG SET parameter value` on Redis instance `instance`.
pub fn redis_config_set(instance: &str, parameter: &str, value: String) -> Action {
    Action::RedisConfigSet(change(instance, parameter, value))
}

/// `ALTER SYSTEM SET parameter = value` (and a reload) on PostgreSQL instance `instance`.
pub fn postgres_set(instance: &str, parameter: &str, value: String) -> Action {
    Action::PostgresSet(change(instance, parameter, value))
}

/// `SET GLOBAL parameter = value` on MySQL/MariaDB instance `instance`.
pub fn mysql_set_global(instance: &str, parameter: &str, value: String) -> Action {
    Action::MysqlSetGlobal(change(instance, parameter, value))
}

/// Runs the agent's collector `collector` every `interval_ms` milliseconds.
pub fn collector_interval(collector: &str, interval_ms: u64) -> Action {
    Action::CollectorInterval(IntervalChange {
        collector: collector.to_owned(),
        interval_ms,
    })
}

fn change(instance: &str, parameter: &str, value: String) -> SettingChange {
    SettingChange {
        instance: instance.to_owned(),
        parameter: parameter.to_owned(),
        value,
    }
}

/// Undo the change when `metric` (its series with all of `attributes`; for counters its
/// per-second rate) passes `limit` in the `worse` direction within `window_ms` after it.
pub fn revert_if(
    metric: &str,
    attributes: &[(&str, &str)],
    worse: Direction,
    limit: f64,
    window_ms: u64,
) -> RevertCondition {
    RevertCondition {
        metric: metric.to_owned(),
        attributes: attributes
            .iter()
            .map(|(key, value)| Attribute {
                key: (*key).to_owned(),
                value: (*value).to_owned(),
            })
            .collect(),
        worse,
        limit,
        window_ms,
    }
}

/// A proposal: `action` because of `reason`, undone when `revert` says so.
pub fn proposal(action: Action, reason: String, revert: Option<RevertCondition>) -> Proposal {
    Proposal {
        action,
        reason,
        revert_if: revert,
    }
}

/// The policy's settings, parsed by `parse` from `host::config()` the first time and kept
/// in `cell` (new settings start a new instance). Each policy keeps its own cell:
///
/// ```ignore
/// fn settings() -> Result<&'static Settings, String> {
///     static SETTINGS: OnceLock<Result<Settings, String>> = OnceLock::new();
///     settings_once(&SETTINGS, Settings::parse)
/// }
/// ```
pub fn settings_once<T>(
    cell: &'static OnceLock<Result<T, String>>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<&'static T, String> {
    cell.get_or_init(|| parse(&host::config()))
        .as_ref()
        .map_err(Clone::clone)
}

/// Runs one step of a policy on the state kept under `key` ([`load_state`]), saves the state
/// ([`save_state`]) and returns the step's proposals ([`Outcome::finish`] logs its warnings).
pub fn step_with_state<S: Serialize + DeserializeOwned + Default>(
    key: &str,
    step: impl FnOnce(&mut S) -> Outcome,
) -> Result<Vec<Proposal>, String> {
    let mut state: S = load_state(key);
    let outcome = step(&mut state);
    save_state(key, &state)?;
    Ok(outcome.finish())
}

/// The JSON value kept under `key` in the host's key/value state (kept across calls,
/// instance restarts after a trap and new versions of the plugin), or `T::default()` when
/// there is none or it no longer parses (e.g. a new version changed its shape).
pub fn load_state<T: DeserializeOwned + Default>(key: &str) -> T {
    host::state_get(key)
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Stores `value` as JSON under `key` in the host's key/value state.
pub fn save_state<T: Serialize>(key: &str, value: &T) -> Result<(), String> {
    let bytes = serde_json::to_vec(value).map_err(|e| format!("state {key:?}: {e}"))?;
    host::state_set(key, &bytes).map_err(|e| format!("cannot keep state {key:?}: {e}"))
}

/// Logs `message` at warn level the first time `key` is warned about (remembered in the
/// host's state, so a restarted instance does not repeat it); later calls do nothing.
pub fn warn_once(key: &str, message: &str) {
    let key = format!("warned:{key}");
    if host::state_get(&key).is_none_or(|v| v.is_empty()) {
        host::log(LogLevel::Warn, message);
        // When the state is full the warning repeats next time: better than none.
        let _ = host::state_set(&key, b"1");
    }
}

/// Forgets that `key` was warned about (the condition is over), so it warns again next time.
pub fn unwarn(key: &str) {
    let key = format!("warned:{key}");
    if host::state_get(&key).is_some_and(|v| !v.is_empty()) {
        let _ = host::state_set(&key, b"");
    }
}
