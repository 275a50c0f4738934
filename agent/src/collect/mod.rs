//! Collectors: one per source, each producing a [`Batch`] per round.
//!
//! A collector knows nothing about plugins or export.

pub mod dsn;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod server;
pub mod system;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::model::Batch;

/// Why a collection round failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("collector {collector}: {message}")]
    Failed { collector: String, message: String },
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
