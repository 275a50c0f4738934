//! What the plugin set reports: one plugin's evaluation of one batch, what a tuning
//! policy is shown beside the batch, and a plugin's status as seen from outside.

use std::sync::Arc;
use std::time::Duration;

use super::EvalError;
use crate::alert::Alert;
use crate::model::Finding;
use crate::tuning::{CurrentSetting, Proposal};

/// Which world a plugin implements: what it is called for and what it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    /// Reports findings (`evaluate`), which the alert book turns into alerts.
    AlertRule,
    /// Proposes tuning actions (`propose`), which the tuning gate decides on.
    TuningPolicy,
}

impl PluginKind {
    /// The world's name: `alert-rule` or `tuning-policy`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::AlertRule => super::bindings::ALERT_RULE,
            PluginKind::TuningPolicy => super::bindings::TUNING_POLICY,
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a plugin's call returned: an alert rule's findings or a policy's proposals.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Findings(Vec<Finding>),
    Proposals(Vec<Proposal>),
}

/// What tuning policies are shown beside one batch: the alerts firing and the
/// allowlisted settings' values when the batch was handed out (one snapshot per batch,
/// shared by every policy). Alert rules ignore it.
#[derive(Debug, Clone)]
pub struct PolicyInputs {
    pub firing: Arc<[Alert]>,
    pub settings: Arc<[CurrentSetting]>,
}

impl Default for PolicyInputs {
    fn default() -> Self {
        PolicyInputs {
            firing: Arc::from(Vec::new()),
            settings: Arc::from(Vec::new()),
        }
    }
}

/// One plugin's evaluation of one batch.
#[derive(Debug)]
pub struct Evaluation {
    pub plugin: String,
    pub duration: Duration,
    /// `Ok(None)`: the batch held nothing the plugin wants, so it was not called.
    pub outcome: Result<Option<Output>, EvalError>,
    /// Set when this failure put the plugin in quarantine, for how long.
    pub quarantined_for: Option<Duration>,
    /// Failed calls in a row, this one included (0 when it succeeded): a run of failures
    /// is logged once, at its first.
    pub failures_in_a_row: u32,
}

/// What a plugin looks like from outside, for status and telemetry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub version: String,
    /// The `vigil:plugin` contract version it implements.
    pub contract: String,
    /// The world it implements: `alert-rule` or `tuning-policy`.
    pub kind: PluginKind,
    pub content_hash: String,
    pub quarantined: bool,
    pub consecutive_failures: u32,
    pub memory_bytes: usize,
    /// Batches skipped because the plugin could not keep up with them.
    pub skipped_batches: u64,
}
