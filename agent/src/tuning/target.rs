//! The targets behind one interface: read a setting's current value, set it, restore it.
//! Each server kind has its own module; this one finds the configured instance and
//! dispatches.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::action::{Maintenance, SettingKey, Target};
use super::decision::Restore;
use super::pg_maintenance::{self, Inspection};
use super::{collector, mysql, postgres, redis};
use crate::config::{AllowEntry, CollectConfig, InstanceConfig, ServerKind};

/// A setting as read from its server.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// As the server reports it (`536870912`, `4MB`, `allkeys-lru`).
    pub value: String,
    /// PostgreSQL: the parameter's `pg_settings.unit` (bare numbers are in it).
    pub pg_unit: Option<String>,
    /// How to put this value back exactly.
    pub restore: Restore,
    /// Why the setting cannot be changed at all (a restart-only PostgreSQL parameter, a
    /// read-only MySQL variable), if so.
    pub refusal: Option<String>,
}

/// Why reading or changing a setting did not work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TargetError {
    /// The server (or the target) refuses it: nothing changed; the gate's verdict is `refused`.
    #[error("{0}")]
    Refused(String),
    /// It failed (unreachable, timeout, an error reply).
    #[error("{0}")]
    Failed(String),
}

/// The `lock_timeout` of the DROP INDEX that reverts a created index.
const DROP_INDEX_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

fn maintenance_has_no_value(key: &SettingKey) -> TargetError {
    TargetError::Refused(format!(
        "{key} is a maintenance operation, not a setting: it has no value to read or set"
    ))
}

/// A boxed future that is `Send` (spelled out so the compiler checks it where the
/// lifetimes are concrete: sqlx futures otherwise trip its higher-ranked inference).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs `work` within `timeout`.
pub(crate) async fn within<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, TargetError>>,
) -> Result<T, TargetError> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(TargetError::Failed(format!(
                "no answer within {timeout:?} (the instance's timeout)"
            )))
        })
}

/// A new connection (PostgreSQL or MySQL) made with `options`.
pub(crate) async fn connect<C: sqlx::Connection>(options: &C::Options) -> Result<C, TargetError> {
    C::connect_with(options)
        .await
        .map_err(|e| TargetError::Failed(format!("cannot connect: {e}")))
}

/// The agent's own collector intervals, as the running agent has them. The supervisor
/// implements it; [`MemoryIntervals`] is an in-memory one (tests, previews).
pub trait CollectorIntervals: Send + Sync {
    /// The interval collector `name` runs at now (`None`: no such collector).
    fn current(&self, name: &str) -> Option<Duration>;
    /// Makes collector `name` run every `interval` from now on.
    fn set(&self, name: &str, interval: Duration) -> Result<(), String>;
}

/// Collector intervals kept in memory.
#[derive(Debug, Default)]
pub struct MemoryIntervals {
    intervals: Mutex<HashMap<String, Duration>>,
}

impl MemoryIntervals {
    /// Intervals for the collectors named in `intervals`.
    pub fn new<'a>(intervals: impl IntoIterator<Item = (&'a str, Duration)>) -> Self {
        MemoryIntervals {
            intervals: Mutex::new(
                intervals
                    .into_iter()
                    .map(|(name, d)| (name.to_owned(), d))
                    .collect(),
            ),
        }
    }
}

impl CollectorIntervals for MemoryIntervals {
    fn current(&self, name: &str) -> Option<Duration> {
        self.intervals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .copied()
    }

    fn set(&self, name: &str, interval: Duration) -> Result<(), String> {
        let mut intervals = self
            .intervals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match intervals.get_mut(name) {
            Some(slot) => {
                *slot = interval;
                Ok(())
            }
            None => Err(format!("no collector named {name:?}")),
        }
    }
}

/// Every target, for the instances of one config.
#[derive(Clone)]
pub struct Targets {
    collect: CollectConfig,
    intervals: Option<Arc<dyn CollectorIntervals>>,
}

impl Targets {
    /// The targets of the instances in `collect`; collector intervals through `intervals`
    /// (`None`: they cannot be read or changed here, e.g. in the CLI).
    pub fn new(collect: CollectConfig, intervals: Option<Arc<dyn CollectorIntervals>>) -> Self {
        Targets { collect, intervals }
    }

    /// Replaces the instances (a config reload).
    pub fn set_collect(&mut self, collect: CollectConfig) {
        self.collect = collect;
    }

    /// The configured instance a server setting lives on, if there is one.
    pub fn instance(&self, key: &SettingKey) -> Option<&InstanceConfig> {
        let kind = match key.target {
            Target::Redis => ServerKind::Redis,
            Target::Postgres | Target::PostgresMaintenance => ServerKind::Postgres,
            Target::Mysql => ServerKind::Mysql,
            Target::Collector => return None,
        };
        self.collect
            .instances(kind)
            .iter()
            .find(|i| i.name == key.instance)
    }

    /// Whether the instance (or collector) of `key` exists here.
    pub fn has_instance(&self, key: &SettingKey) -> bool {
        match key.target {
            Target::Collector => self
                .intervals
                .as_ref()
                .is_some_and(|i| i.current(&key.instance).is_some()),
            _ => self.instance(key).is_some(),
        }
    }

    fn server(&self, key: &SettingKey) -> Result<&InstanceConfig, TargetError> {
        self.instance(key).ok_or_else(|| {
            TargetError::Refused(format!(
                "no [[collect.{}]] instance named {:?} is configured",
                key.target, key.instance
            ))
        })
    }

    fn intervals(&self, key: &SettingKey) -> Result<&dyn CollectorIntervals, TargetError> {
        self.intervals.as_deref().ok_or_else(|| {
            TargetError::Refused(format!(
                "collector intervals live in the running agent and cannot be read or changed from here (collector {:?}); they return to the configured interval when the agent restarts",
                key.instance
            ))
        })
    }

    /// The current value of `key`.
    pub async fn read(&self, key: &SettingKey) -> Result<Reading, TargetError> {
        let parameter = key.parameter.as_str();
        match key.target {
            Target::Redis => redis::read(self.server(key)?, parameter).await,
            Target::Postgres => postgres::read(self.server(key)?, parameter).await,
            Target::Mysql => mysql::read(self.server(key)?, parameter).await,
            Target::Collector => collector::read(self.intervals(key)?, key),
            Target::PostgresMaintenance => Err(maintenance_has_no_value(key)),
        }
    }

    /// What the gate needs to know about maintenance operation `m` on `key`'s instance.
    pub async fn inspect(
        &self,
        key: &SettingKey,
        entry: &AllowEntry,
        m: &Maintenance,
    ) -> Result<Inspection, TargetError> {
        pg_maintenance::inspect(self.server(key)?, entry, m).await
    }

    /// Runs maintenance operation `m` on `key`'s instance; returns the state after.
    pub async fn maintain(
        &self,
        key: &SettingKey,
        entry: &AllowEntry,
        m: &Maintenance,
    ) -> Result<String, TargetError> {
        pg_maintenance::run(self.server(key)?, entry, m).await
    }

    /// Whether index `schema.index` (one a change created) is still there, as a reading a
    /// revert compares with the change's `after`: `schema.index`, or `no such index`.
    pub async fn read_index(
        &self,
        key: &SettingKey,
        schema: &str,
        index: &str,
    ) -> Result<Reading, TargetError> {
        let exists = pg_maintenance::index_exists(self.server(key)?, schema, index).await?;
        Ok(Reading {
            value: if exists {
                format!("{schema}.{index}")
            } else {
                "no such index".into()
            },
            pg_unit: None,
            restore: Restore::Nothing,
            refusal: None,
        })
    }

    /// Sets `key` to `value`; returns the value read back.
    pub async fn apply(&self, key: &SettingKey, value: &str) -> Result<String, TargetError> {
        let parameter = key.parameter.as_str();
        match key.target {
            Target::Redis => redis::set(self.server(key)?, parameter, value).await,
            Target::Postgres => {
                postgres::set(
                    self.server(key)?,
                    parameter,
                    &Restore::Set(value.into()),
                    value,
                )
                .await
            }
            Target::Mysql => mysql::set(self.server(key)?, parameter, value).await,
            Target::Collector => collector::set(self.intervals(key)?, key, value),
            Target::PostgresMaintenance => Err(maintenance_has_no_value(key)),
        }
    }

    /// Puts `key` back as `restore` says; `expect` is the value it should then have.
    /// Returns the value read back.
    pub async fn restore(
        &self,
        key: &SettingKey,
        restore: &Restore,
        expect: &str,
    ) -> Result<String, TargetError> {
        match restore {
            Restore::DropIndex { schema, index } => {
                pg_maintenance::revert_index(
                    self.server(key)?,
                    schema,
                    index,
                    DROP_INDEX_LOCK_TIMEOUT,
                )
                .await
            }
            Restore::Nothing => Err(TargetError::Refused(format!("{key} has nothing to undo"))),
            Restore::Set(value) if key.target != Target::Postgres => self.apply(key, value).await,
            _ => match key.target {
                Target::Postgres => {
                    postgres::set(self.server(key)?, &key.parameter, restore, expect).await
                }
                _ => Err(TargetError::Failed(format!(
                    "{} settings cannot be reset, only set",
                    key.target
                ))),
            },
        }
    }
}
