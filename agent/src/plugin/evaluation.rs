//! What the plugin set reports: one plugin's evaluation of one batch, and a plugin's
//! status as seen from outside.

use std::time::Duration;

use super::EvalError;
use crate::model::Finding;

/// One plugin's evaluation of one batch.
#[derive(Debug)]
pub struct Evaluation {
    pub plugin: String,
    pub duration: Duration,
    /// `Ok(None)`: the batch held nothing the plugin wants, so it was not called.
    pub outcome: Result<Option<Vec<Finding>>, EvalError>,
    /// Set when this failure put the plugin in quarantine, for how long.
    pub quarantined_for: Option<Duration>,
}

/// What a plugin looks like from outside, for status and telemetry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub version: String,
    /// The `vigil:plugin` contract version it implements.
    pub contract: String,
    pub content_hash: String,
    pub quarantined: bool,
    pub consecutive_failures: u32,
    pub memory_bytes: usize,
    /// Batches skipped because the plugin could not keep up with them.
    pub skipped_batches: u64,
}
