//! Collectors: one per source, each producing a [`Batch`] per round.
//!
//! A collector knows nothing about plugins or export.

pub mod dsn;
pub mod mysql;
pub mod net_dev;
pub mod postgres;
pub mod prometheus;
pub mod redis;
pub mod server;
pub mod system;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::config::{Config, InstanceConfig, ServerKind};
use crate::model::Batch;

/// Why a collector could not be built or a collection round failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("collector {collector}: {message}")]
    Failed { collector: String, message: String },
    #[error(transparent)]
    Setup(#[from] server::SetupError),
}

/// Builds the collector of server `instance` of `kind`: the one place that maps a
/// [`ServerKind`] to its module.
pub fn build_server(
    kind: ServerKind,
    instance: &InstanceConfig,
    host: String,
) -> Result<Box<dyn Collector>, CollectError> {
    Ok(match kind {
        ServerKind::Postgres => Box::new(postgres::collector(instance, host)?),
        ServerKind::Mysql => Box::new(mysql::collector(instance, host)?),
        ServerKind::Redis => Box::new(redis::collector(instance, host)?),
        ServerKind::Prometheus => Box::new(prometheus::collector(instance, host)?),
    })
}

/// Name of the system collector (and source of its batches).
pub const SYSTEM: &str = "system";

/// Names of every collector `config` asks for.
pub fn names(config: &Config) -> Vec<String> {
    let system = config.collect.system.enabled.then(|| SYSTEM.to_owned());
    system
        .into_iter()
        .chain(
            config
                .collect
                .servers()
                .map(|(kind, instance)| kind.source(&instance.name)),
        )
        .collect()
}

/// Builds the collector called `name` as `config` describes it; `None` when `config`
/// has no such collector.
pub fn build_named(
    config: &Config,
    host: &str,
    name: &str,
) -> Option<Result<Box<dyn Collector>, CollectError>> {
    if name == SYSTEM {
        return config.collect.system.enabled.then(|| {
            system::SystemCollector::new(config.collect.system.clone(), host.to_owned())
                .map(|c| Box::new(c) as Box<dyn Collector>)
        });
    }
    config
        .collect
        .servers()
        .find(|(kind, instance)| kind.source(&instance.name) == name)
        .map(|(kind, instance)| build_server(kind, instance, host.to_owned()))
}

/// Every collector `config` asks for.
pub fn build_all(config: &Config, host: &str) -> Result<Vec<Box<dyn Collector>>, CollectError> {
    names(config)
        .iter()
        .filter_map(|name| build_named(config, host, name))
        .collect()
}

/// What one collection round produced: the batch to export and evaluate, and whether
/// the round reached its source.
///
/// A round that found its server down still yields a batch (`<kind>.up = 0`), so it
/// is exported and evaluated; `failure` says why it counts as a failed round.
#[derive(Debug)]
pub struct Round {
    pub batch: Batch,
    /// Why the round did not reach its source (`None`: it did).
    pub failure: Option<String>,
}

impl Round {
    /// A round that reached its source.
    pub fn ok(batch: Batch) -> Self {
        Round {
            batch,
            failure: None,
        }
    }
}

/// The future a collection round returns.
pub type CollectFuture<'a> = Pin<Box<dyn Future<Output = Result<Round, CollectError>> + Send + 'a>>;

/// A source of metrics, polled every [`Collector::interval`].
pub trait Collector: Send + 'static {
    /// The source name put on its batches, e.g. `system`.
    fn name(&self) -> &str;
    /// How often to collect.
    fn interval(&self) -> Duration;
    /// Collects one round.
    fn collect(&mut self) -> CollectFuture<'_>;
}
