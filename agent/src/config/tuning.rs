//! `[tuning]`: where decisions are audited, which policies enforce, and the allowlist
//! (`[[tuning.allow]]`) without which nothing is ever changed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{CollectConfig, ServerKind};
use crate::tuning::action::{
    COLLECTOR_INTERVAL, MaintenanceOp, SettingKey, Target, is_parameter_name,
};
use crate::tuning::units;

/// `[tuning]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TuningConfig {
    /// Append-only JSON-lines file of every decision (fsync'd); relative to the config file.
    pub audit_file: PathBuf,
    /// How often the allowlisted settings are read back from the servers for policies.
    #[serde(with = "humantime_serde")]
    pub settings_refresh: Duration,
    /// Per policy: decisions beyond this many a minute are counted, not audited or logged.
    pub max_decisions_per_minute: u32,
    /// `[tuning.policies.NAME]`: per policy (file stem) settings.
    pub policies: BTreeMap<String, PolicyConfig>,
    /// `[[tuning.allow]]`: the only changes that may ever happen.
    pub allow: Vec<AllowEntry>,
}

impl Default for TuningConfig {
    fn default() -> Self {
        TuningConfig {
            audit_file: PathBuf::from("/var/lib/vigil/actions.jsonl"),
            settings_refresh: Duration::from_secs(30),
            max_decisions_per_minute: 60,
            policies: BTreeMap::new(),
            allow: Vec::new(),
        }
    }
}

/// Whether a policy's proposals are applied or only audited as what would have happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyMode {
    #[default]
    DryRun,
    Enforce,
}

impl PolicyMode {
    /// The config's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::DryRun => "dry-run",
            PolicyMode::Enforce => "enforce",
        }
    }
}

/// `[tuning.policies.NAME]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// `dry-run` (default) or `enforce`.
    pub mode: PolicyMode,
}

/// A number with an optional unit in the target's syntax (`"64mb"`, `"30s"`), written as
/// TOML text or a bare number.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "LimitRepr")]
pub struct Limit(pub String);

#[derive(Deserialize)]
#[serde(untagged)]
enum LimitRepr {
    Int(i64),
    Float(f64),
    Text(String),
}

impl TryFrom<LimitRepr> for Limit {
    type Error = String;
    fn try_from(repr: LimitRepr) -> Result<Self, String> {
        Ok(Limit(match repr {
            LimitRepr::Int(i) => i.to_string(),
            LimitRepr::Float(f) => f.to_string(),
            LimitRepr::Text(t) => t,
        }))
    }
}

/// `[[tuning.allow]]`: one setting that may be changed, and within what.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    pub target: Target,
    /// The instance name (`[[collect.KIND]] name`); collectors: `system` or an instance name.
    pub instance: String,
    /// The server's name of the setting; collectors: `interval-ms`.
    pub parameter: String,
    /// The values allowed (an enumeration); or use `min`/`max`.
    #[serde(default)]
    pub values: Vec<String>,
    /// Smallest allowed value (units in the target's syntax).
    pub min: Option<Limit>,
    /// Largest allowed value.
    pub max: Option<Limit>,
    /// Largest change at once (numeric settings only).
    pub max_step: Option<Limit>,
    /// At most this many applied changes of this setting ...
    #[serde(default = "six")]
    pub max_changes: u32,
    /// ... per this window.
    #[serde(default = "one_hour", with = "humantime_serde")]
    pub per: Duration,
    /// No change to this setting for this long after one.
    #[serde(default = "five_minutes", with = "humantime_serde")]
    pub cooldown: Duration,
    /// Only these policies may use this entry (empty: every policy).
    #[serde(default)]
    pub policies: Vec<String>,
    /// `postgres-maintenance`: the tables (`schema.table`, `*` matches any run of
    /// characters: `public.*`, `*.orders`) the operation may be done to; for `drop-index`,
    /// the tables whose vigil-made indexes may be dropped.
    #[serde(default)]
    pub tables: Vec<String>,
    /// `postgres-maintenance`: the server's `statement_timeout` for the operation.
    #[serde(default = "one_hour", with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// `postgres-maintenance`: the server's `lock_timeout` for the operation.
    #[serde(default = "five_seconds", with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// `postgres-maintenance` `create-index`: the least share of the named statements'
    /// planner cost a (hypothetical) index must remove, 0..1.
    #[serde(default = "half")]
    pub min_cost_reduction: f64,
}

fn six() -> u32 {
    6
}
fn one_hour() -> Duration {
    Duration::from_secs(3600)
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn half() -> f64 {
    0.5
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl AllowEntry {
    /// The setting this entry is about.
    pub fn key(&self) -> SettingKey {
        SettingKey {
            target: self.target,
            instance: self.instance.clone(),
            parameter: self.parameter.clone(),
        }
    }

    /// Whether `policy` may use this entry.
    pub fn admits(&self, policy: &str) -> bool {
        self.policies.is_empty() || self.policies.iter().any(|p| p == policy)
    }

    /// Whether this (maintenance) entry's `tables` cover `schema`.`table`.
    pub fn covers_table(&self, schema: &str, table: &str) -> bool {
        let name = format!("{schema}.{table}");
        self.tables.iter().any(|p| wildcard_match(p, &name))
    }
}

impl TuningConfig {
    /// The mode of policy `name` (dry-run unless configured to enforce).
    pub fn mode(&self, policy: &str) -> PolicyMode {
        self.policies
            .get(policy)
            .map(|p| p.mode)
            .unwrap_or_default()
    }

    /// Every distinct setting the allowlist names, in config order (maintenance
    /// operations are no settings: left out).
    pub fn allowed_settings(&self) -> Vec<SettingKey> {
        let mut keys: Vec<SettingKey> = Vec::new();
        for entry in self
            .allow
            .iter()
            .filter(|e| e.target != Target::PostgresMaintenance)
        {
            let key = entry.key();
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    }

    /// Checks the section against the configured collectors; the error names the field
    /// (relative to `tuning.`) and what is wrong.
    pub(crate) fn validate(&self, collect: &CollectConfig) -> Result<(), (String, String)> {
        if self.audit_file.as_os_str().is_empty() {
            return Err((
                "audit_file".into(),
                "must name a file, e.g. \"/var/lib/vigil/actions.jsonl\"".into(),
            ));
        }
        if self.settings_refresh < Duration::from_secs(1) {
            return Err(("settings_refresh".into(), "must be at least 1s".into()));
        }
        if self.max_decisions_per_minute == 0 {
            return Err((
                "max_decisions_per_minute".into(),
                "must be at least 1".into(),
            ));
        }
        for (i, entry) in self.allow.iter().enumerate() {
            entry
                .validate(collect)
                .map_err(|(field, problem)| (format!("allow[{i}].{field}"), problem))?;
        }
        Ok(())
    }
}

impl AllowEntry {
    fn validate(&self, collect: &CollectConfig) -> Result<(), (String, String)> {
        let fail = |field: &str, problem: String| Err((field.to_owned(), problem));
        let target = self.target;
        let configured = match target {
            Target::Redis => server_named(collect, ServerKind::Redis, &self.instance),
            Target::Postgres | Target::PostgresMaintenance => {
                server_named(collect, ServerKind::Postgres, &self.instance)
            }
            Target::Mysql => server_named(collect, ServerKind::Mysql, &self.instance),
            Target::Collector => collect.collector_source(&self.instance).is_some(),
        };
        if !configured {
            let what = match target {
                Target::Collector => {
                    "names no collector: use \"system\" (when enabled) or the name of a configured instance"
                        .to_owned()
                }
                Target::PostgresMaintenance => {
                    "names no [[collect.postgres]] instance of this config".to_owned()
                }
                _ => format!("names no [[collect.{target}]] instance of this config"),
            };
            return fail("instance", format!("{:?} {what}", self.instance));
        }
        if target == Target::PostgresMaintenance {
            return self.validate_maintenance();
        }
        if !self.tables.is_empty() {
            return fail(
                "tables",
                "is for target \"postgres-maintenance\"; a setting takes values or min/max".into(),
            );
        }
        if target == Target::Collector {
            if self.parameter != COLLECTOR_INTERVAL {
                return fail(
                    "parameter",
                    format!("must be \"{COLLECTOR_INTERVAL}\" for target \"collector\""),
                );
            }
        } else if !is_parameter_name(&self.parameter) {
            return fail(
                "parameter",
                "must be the server's name of a setting: lower-case letters, digits, '_', '.', '-'"
                    .into(),
            );
        }
        let range = self.min.is_some() || self.max.is_some();
        match (self.values.is_empty(), range) {
            (false, true) => {
                return fail(
                    "values",
                    "takes either values = [...] or min/max, not both".into(),
                );
            }
            (true, false) => {
                return fail(
                    "values",
                    "is missing: list the allowed values, or give min and max".into(),
                );
            }
            (false, false) => {
                if self.max_step.is_some() {
                    return fail(
                        "max_step",
                        "applies to numeric ranges only (min/max), not to values".into(),
                    );
                }
            }
            (true, true) => {
                let mut parsed = Vec::new();
                for (field, limit) in [("min", &self.min), ("max", &self.max)] {
                    let Some(Limit(text)) = limit else {
                        return fail(field, "is missing: a range needs both min and max".into());
                    };
                    let Some(value) = units::parse(target, text, None) else {
                        return fail(field, format!("{text:?} is not a number in {target} units"));
                    };
                    parsed.push(value);
                }
                if parsed[0] > parsed[1] {
                    return fail("min", "is larger than max".into());
                }
                if let Some(Limit(text)) = &self.max_step
                    && !units::parse(target, text, None).is_some_and(|v| v > 0.0)
                {
                    return fail(
                        "max_step",
                        format!("{text:?} is not a positive number in {target} units"),
                    );
                }
            }
        }
        if self.max_changes == 0 {
            return fail("max_changes", "must be at least 1".into());
        }
        if self.per.is_zero() {
            return fail("per", "must be more than 0s".into());
        }
        if self.policies.iter().any(String::is_empty) {
            return fail("policies", "has an empty policy name".into());
        }
        Ok(())
    }
}

impl AllowEntry {
    /// The checks of a `postgres-maintenance` entry: an operation, tables, no values.
    fn validate_maintenance(&self) -> Result<(), (String, String)> {
        let fail = |field: &str, problem: String| Err((field.to_owned(), problem));
        if MaintenanceOp::from_name(&self.parameter).is_none() {
            let names: Vec<&str> = MaintenanceOp::ALL.iter().map(|op| op.as_str()).collect();
            return fail(
                "parameter",
                format!(
                    "must name an operation for target \"postgres-maintenance\": one of {}",
                    names.join(", ")
                ),
            );
        }
        if self.tables.is_empty() || self.tables.iter().any(|t| t.is_empty()) {
            return fail(
                "tables",
                "is missing: list the tables the operation may touch, e.g. [\"public.*\"]".into(),
            );
        }
        if !self.values.is_empty()
            || self.min.is_some()
            || self.max.is_some()
            || self.max_step.is_some()
        {
            return fail(
                "values",
                "values, min, max and max_step are for settings; a postgres-maintenance entry takes tables".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.min_cost_reduction) {
            return fail("min_cost_reduction", "must be between 0 and 1".into());
        }
        if self.max_changes == 0 {
            return fail("max_changes", "must be at least 1".into());
        }
        if self.per.is_zero() {
            return fail("per", "must be more than 0s".into());
        }
        Ok(())
    }
}

fn server_named(collect: &CollectConfig, kind: ServerKind, name: &str) -> bool {
    collect.instances(kind).iter().any(|i| i.name == name)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    use super::*;

    const SERVERS: &str = "[[collect.redis]]\nname = \"main\"\nurl = \"redis://127.0.0.1\"\n[[collect.postgres]]\nname = \"pg\"\nurl = \"postgres://127.0.0.1/x\"\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("{SERVERS}{extra}"), "agent.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_section_parses() {
        let config = parse(
            r#"
[tuning]
audit_file = "/tmp/a.jsonl"
settings_refresh = "10s"
[tuning.policies.redis-memory]
mode = "enforce"
[[tuning.allow]]
target = "redis"
instance = "main"
parameter = "maxmemory"
min = "64mb"
max = "1gb"
max_step = "128mb"
max_changes = 3
per = "1h"
cooldown = "5m"
policies = ["redis-memory"]
[[tuning.allow]]
target = "redis"
instance = "main"
parameter = "maxmemory-policy"
values = ["allkeys-lru", "allkeys-lfu"]
[[tuning.allow]]
target = "collector"
instance = "system"
parameter = "interval-ms"
min = "10s"
max = 60000
"#,
        )
        .unwrap();
        let t = &config.tuning;
        assert_eq!(t.mode("redis-memory"), PolicyMode::Enforce);
        assert_eq!(t.mode("other"), PolicyMode::DryRun);
        assert_eq!(t.allow.len(), 3);
        assert_eq!(t.allow[1].max_changes, 6);
        assert_eq!(t.allow[1].cooldown, Duration::from_secs(300));
        assert_eq!(t.allow[2].max, Some(Limit("60000".into())));
        assert!(t.allow[0].admits("redis-memory") && !t.allow[0].admits("x"));
        assert!(t.allow[1].admits("x"));
        assert_eq!(t.allowed_settings().len(), 3);
        assert!(Config::default_embedded().unwrap().tuning.allow.is_empty());
    }

    #[test]
    fn mistakes_are_refused_with_their_place() {
        let entry = |body: &str| parse(&format!("[[tuning.allow]]\n{body}\n")).unwrap_err();
        let err = entry(
            "target = \"redis\"\ninstance = \"main\"\nparameter = \"hz\"\nvalues = [\"1\"]\nmax_stpe = \"1\"",
        );
        assert!(err.contains("max_stpe") && err.contains("line 12"), "{err}");
        let err =
            entry("target = \"redis\"\ninstance = \"other\"\nparameter = \"hz\"\nvalues = [\"1\"]");
        assert!(err.contains("tuning.allow[0].instance"), "{err}");
        let err =
            entry("target = \"mysql\"\ninstance = \"main\"\nparameter = \"hz\"\nvalues = [\"1\"]");
        assert!(err.contains("[[collect.mysql]]"), "{err}");
        let err = entry(
            "target = \"postgres\"\ninstance = \"pg\"\nparameter = \"work_mem; DROP\"\nvalues = [\"1\"]",
        );
        assert!(err.contains("tuning.allow[0].parameter"), "{err}");
        let err = entry("target = \"redis\"\ninstance = \"main\"\nparameter = \"hz\"");
        assert!(err.contains("tuning.allow[0].values"), "{err}");
        let err = entry("target = \"redis\"\ninstance = \"main\"\nparameter = \"hz\"\nmin = \"1\"");
        assert!(err.contains("tuning.allow[0].max"), "{err}");
        let err = entry(
            "target = \"redis\"\ninstance = \"main\"\nparameter = \"hz\"\nmin = \"2\"\nmax = \"1\"",
        );
        assert!(err.contains("larger than max"), "{err}");
        let err = entry(
            "target = \"redis\"\ninstance = \"main\"\nparameter = \"hz\"\nmin = \"1\"\nmax = \"5xb\"",
        );
        assert!(err.contains("redis units"), "{err}");
        let err = entry(
            "target = \"collector\"\ninstance = \"system\"\nparameter = \"hz\"\nvalues = [\"1\"]",
        );
        assert!(err.contains("interval-ms"), "{err}");
        let err = entry(
            "target = \"collector\"\ninstance = \"nope\"\nparameter = \"interval-ms\"\nvalues = [\"1\"]",
        );
        assert!(err.contains("names no collector"), "{err}");
        let err = parse("[tuning.policies.p]\nmode = \"yolo\"\n").unwrap_err();
        assert!(err.contains("yolo") || err.contains("mode"), "{err}");
    }
}
