//! Tuning: proposals from tuning-policy plugins pass the operator's gate (allowlist, rate
//! limit, cool-down, dry-run unless enforced), are applied by one module per target, and
//! every decision is audited and can be reverted.
//!
//! - [`action`]: what a policy proposes, in the host's types.

pub mod action;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use action::{Action, CurrentSetting, Direction, Proposal, RevertCondition, SettingKey, Target};

use crate::model::Batch;

/// The pipeline's handle on the tuning engine: proposals go in (never blocking the
/// caller), the current values of the allowlisted settings come out, and batches are
/// shown to the automatic-revert watches. Cheap to clone.
#[derive(Clone, Default)]
pub struct TuningHandle {
    inner: Arc<HandleInner>,
}

#[derive(Default)]
struct HandleInner {
    dropped: AtomicU64,
}

impl TuningHandle {
    /// A handle with no engine behind it: proposals are counted and dropped.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Hands `proposals` to the engine; returns at once.
    pub fn submit(&self, proposals: Vec<Proposal>) {
        self.inner
            .dropped
            .fetch_add(proposals.len() as u64, Ordering::Relaxed);
    }

    /// The allowlisted settings' values as last read from the servers.
    pub fn settings(&self) -> Arc<[CurrentSetting]> {
        Arc::from(Vec::new())
    }

    /// Shows `batch` to the automatic-revert watches (a no-op while none is active).
    pub fn observe(&self, _batch: &Batch) {}
}
