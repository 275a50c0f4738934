//! What a tuning policy proposes, in the host's own types (the WIT records of the
//! `tuning-policy` world, converted and validated by the plugin runtime).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Where a setting lives: which host module reads and changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// `CONFIG GET` / `CONFIG SET` on a `[[collect.redis]]` instance.
    Redis,
    /// `ALTER SYSTEM SET` + `pg_reload_conf()` on a `[[collect.postgres]]` instance.
    Postgres,
    /// `SET GLOBAL` on a `[[collect.mysql]]` instance.
    Mysql,
    /// One of the agent's own collectors (`system` or an instance name); parameter `interval-ms`.
    Collector,
    /// A maintenance operation on a `[[collect.postgres]]` instance: the parameter is the
    /// operation ([`MaintenanceOp`]), the value the table or index it is done to.
    PostgresMaintenance,
}

impl Target {
    /// The name used in the config, the audit file and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Redis => "redis",
            Target::Postgres => "postgres",
            Target::Mysql => "mysql",
            Target::Collector => "collector",
            Target::PostgresMaintenance => "postgres-maintenance",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The parameter name of a collector's interval (value: milliseconds).
pub const COLLECTOR_INTERVAL: &str = "interval-ms";

/// Whether `name` may reach SQL as an identifier: `[a-z0-9_.-]+`, at most 128 bytes.
pub fn is_parameter_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// One setting on one instance: what the allowlist, the rate limit and the cool-down key by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SettingKey {
    pub target: Target,
    /// The instance (or collector) name from the agent config.
    pub instance: String,
    /// The server's own name for the setting (`maxmemory`, `work_mem`, `interval-ms`).
    pub parameter: String,
}

impl std::fmt::Display for SettingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.target, self.instance, self.parameter)
    }
}

/// A typed change: set one setting to one value, or (target `postgres-maintenance`) do one
/// maintenance operation (the parameter) to one table or index (the value).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Action {
    #[serde(flatten)]
    pub setting: SettingKey,
    /// The new value in the server's own syntax (`256mb`, `64MB`; collectors: milliseconds);
    /// for a maintenance operation its object as text (`public.orders`,
    /// `public.orders (customer_id, status)`, `public.vigil_idx_orders_customer_id`).
    pub value: String,
    /// A maintenance operation's object, typed (`None` for setting changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
}

/// The PostgreSQL maintenance operations (the `parameter` of a `postgres-maintenance` action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaintenanceOp {
    /// `VACUUM (ANALYZE)` of one table.
    Vacuum,
    /// `ANALYZE` of one table.
    Analyze,
    /// `CREATE INDEX CONCURRENTLY` of a new `vigil_idx_` index.
    CreateIndex,
    /// `DROP INDEX CONCURRENTLY` of a `vigil_idx_` index.
    DropIndex,
}

impl MaintenanceOp {
    /// Every operation.
    pub const ALL: [MaintenanceOp; 4] = [
        MaintenanceOp::Vacuum,
        MaintenanceOp::Analyze,
        MaintenanceOp::CreateIndex,
        MaintenanceOp::DropIndex,
    ];

    /// The parameter name in the allowlist and the audit file.
    pub fn as_str(self) -> &'static str {
        match self {
            MaintenanceOp::Vacuum => "vacuum",
            MaintenanceOp::Analyze => "analyze",
            MaintenanceOp::CreateIndex => "create-index",
            MaintenanceOp::DropIndex => "drop-index",
        }
    }

    /// The operation named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

/// What a maintenance operation is done to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Maintenance {
    pub op: MaintenanceOp,
    pub schema: String,
    /// The table (drop-index: the index).
    pub name: String,
    /// create-index: the indexed columns, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// create-index: the `pg_stat_statements` query ids the index is meant for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statements: Vec<String>,
}

impl Maintenance {
    /// The object as text: `schema.name`, plus ` (col, col)` for an index proposal.
    pub fn object(&self) -> String {
        let mut text = format!("{}.{}", self.schema, self.name);
        if !self.columns.is_empty() {
            text.push_str(&format!(" ({})", self.columns.join(", ")));
        }
        text
    }

    /// The action doing this on `instance`.
    pub fn into_action(self, instance: impl Into<String>) -> Action {
        Action {
            setting: SettingKey {
                target: Target::PostgresMaintenance,
                instance: instance.into(),
                parameter: self.op.as_str().to_owned(),
            },
            value: self.object(),
            maintenance: Some(self),
        }
    }
}

impl Action {
    /// Set `parameter` of `instance` (of `target`) to `value`.
    pub fn new(
        target: Target,
        instance: impl Into<String>,
        parameter: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        Action {
            setting: SettingKey {
                target,
                instance: instance.into(),
                parameter: parameter.into(),
            },
            value: value.into(),
            maintenance: None,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {}", self.setting, self.value)
    }
}

/// Which way a watched metric goes when things get worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Rises,
    Falls,
}

/// Undo an applied change by itself when a metric passes `limit` within `window` after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevertCondition {
    /// The metric watched, e.g. `redis.keys.evicted`.
    pub metric: String,
    /// Attributes a watched series must have (all of them); empty: every series of the metric.
    pub attributes: Vec<(String, String)>,
    pub worse: Direction,
    /// The value (counters: the per-second rate between two batches) that counts as worse.
    pub limit: f64,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

/// An action a policy proposed, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// The policy's name in the agent (its file stem).
    pub policy: String,
    pub action: Action,
    /// One line for the audit trail.
    pub reason: String,
    pub revert_if: Option<RevertCondition>,
    /// When the policy proposed it (the batch's collection time).
    pub proposed_at: SystemTime,
}

/// A setting's value as the host last read it, handed to policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrentSetting {
    pub setting: SettingKey,
    pub value: String,
}
