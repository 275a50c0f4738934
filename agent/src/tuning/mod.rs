//! Tuning: proposals from tuning-policy plugins pass the operator's gate (allowlist, rate
//! limit, cool-down, dry-run unless enforced), are applied by one module per target, and
//! every decision is audited and can be reverted.
//!
//! - [`action`]: what a policy proposes, in the host's types.
//! - [`engine`]: [`TuningEngine`], the one task that decides, applies and audits.
//! - [`gate`]: the allowlist, rate-limit, cool-down and repeat checks.
//! - [`audit`]: the append-only JSON-lines audit file.
//! - [`target`] and [`redis`], [`postgres`], [`mysql`], [`collector`]: read, set, restore.
//! - [`pg_maintenance`]: PostgreSQL VACUUM, ANALYZE, CREATE/DROP INDEX CONCURRENTLY;
//!   [`pg_verify`]: index proposals verified with hypothetical indexes (HypoPG).
//! - [`units`]: numbers with units per target.
//! - [`watch`]: automatic revert when a watched metric gets worse.
//! - [`revert`]: undoing an applied change; [`cli`]: `vigil actions list|revert`;
//!   [`advise`]: `vigil advise postgres`.
//!
//! Its configuration, the `[tuning]` section, is [`crate::config::TuningConfig`].

pub mod action;
pub mod advise;
pub mod audit;
pub mod cli;
pub mod collector;
pub mod decision;
pub mod engine;
pub mod gate;
pub mod mysql;
pub mod pg_maintenance;
pub mod pg_verify;
pub mod postgres;
pub mod redis;
pub mod revert;
pub mod target;
pub mod units;
pub mod watch;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};

pub use action::{
    Action, COLLECTOR_INTERVAL, CurrentSetting, Direction, Maintenance, MaintenanceOp, Proposal,
    RevertCondition, SettingKey, Target,
};
pub use decision::{Decision, DecisionKind, Verdict};
pub use engine::{DecisionSink, TuningEngine};
pub use target::{CollectorIntervals, MemoryIntervals};

use crate::model::Batch;
use watch::{Observation, WatchFilter};

/// Counts for self-telemetry.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TuningStats {
    /// Audited decisions per policy and verdict (`applied`, `dry-run`, `refused`, ...).
    pub decisions: BTreeMap<String, BTreeMap<String, u64>>,
    /// Proposals that repeated the previous verdict for the same action (not audited).
    pub repeats: u64,
    /// Proposals (and watched batches) dropped because the engine's queue was full, or
    /// no engine runs.
    pub dropped: u64,
    /// Decisions beyond `max_decisions_per_minute` of their policy (not decided, not audited).
    pub throttled: u64,
    /// Changes being watched for an automatic revert.
    pub watching: usize,
}

/// A message to the engine task.
pub(crate) enum Msg {
    Proposals(Vec<Proposal>),
    Decide(Box<Proposal>, oneshot::Sender<Decision>),
    Observed(Observation),
    /// A new config waits in [`Shared::pending`].
    Update,
    /// Answered once everything queued before it is decided.
    Flush(oneshot::Sender<()>),
}

/// What the handle and the engine share.
#[derive(Default)]
pub(crate) struct Shared {
    settings: Mutex<Arc<[CurrentSetting]>>,
    filters: Mutex<Arc<[WatchFilter]>>,
    watching: AtomicBool,
    stats: Mutex<TuningStats>,
    dropped: AtomicU64,
    overflow_warned: AtomicBool,
    /// A reloaded config not yet taken by the engine (never lost to a full queue).
    pending: Mutex<Option<Box<crate::config::Config>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn set_settings(&self, settings: Vec<CurrentSetting>) {
        *lock(&self.settings) = Arc::from(settings);
    }

    pub(crate) fn set_filters(&self, filters: Vec<WatchFilter>) {
        self.watching.store(!filters.is_empty(), Ordering::Release);
        *lock(&self.filters) = Arc::from(filters);
    }

    pub(crate) fn stats(&self) -> std::sync::MutexGuard<'_, TuningStats> {
        lock(&self.stats)
    }

    pub(crate) fn take_pending(&self) -> Option<Box<crate::config::Config>> {
        lock(&self.pending).take()
    }

    fn drop_count(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        if !self.overflow_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the tuning engine's queue is full (or the engine stopped): proposals are dropped and counted (vigil.tuning dropped); said once"
            );
        }
    }
}

/// The pipeline's handle on the tuning engine: proposals go in (never blocking the
/// caller), the current values of the allowlisted settings come out, and batches are
/// shown to the automatic-revert watches. Cheap to clone.
#[derive(Clone, Default)]
pub struct TuningHandle {
    inner: Arc<HandleInner>,
}

#[derive(Default)]
struct HandleInner {
    tx: Option<mpsc::Sender<Msg>>,
    shared: Arc<Shared>,
}

impl TuningHandle {
    /// A handle with no engine behind it: proposals are counted and dropped.
    pub fn disabled() -> Self {
        Self::default()
    }

    pub(crate) fn new(tx: mpsc::Sender<Msg>, shared: Arc<Shared>) -> Self {
        TuningHandle {
            inner: Arc::new(HandleInner {
                tx: Some(tx),
                shared,
            }),
        }
    }

    /// Whether an engine is behind this handle.
    pub fn is_enabled(&self) -> bool {
        self.inner.tx.is_some()
    }

    fn send(&self, msg: Msg, count: u64) -> bool {
        let sent = match &self.inner.tx {
            Some(tx) => tx.try_send(msg).is_ok(),
            None => false,
        };
        if !sent {
            self.inner.shared.drop_count(count);
        }
        sent
    }

    /// Hands `proposals` to the engine; returns at once. When the engine's queue is full
    /// they are dropped and counted (one warning).
    pub fn submit(&self, proposals: Vec<Proposal>) {
        if proposals.is_empty() {
            return;
        }
        let n = proposals.len() as u64;
        self.send(Msg::Proposals(proposals), n);
    }

    /// Decides `proposal` through the running engine (in turn with everything submitted
    /// before) and returns the decision; `None` when no engine runs.
    pub async fn decide(&self, proposal: Proposal) -> Option<Decision> {
        let (tx, rx) = oneshot::channel();
        let sender = self.inner.tx.as_ref()?;
        sender
            .send(Msg::Decide(Box::new(proposal), tx))
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Completes once every proposal submitted before it is decided (at once when no
    /// engine runs).
    pub async fn flush(&self) {
        let Some(sender) = self.inner.tx.as_ref() else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        if sender.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Applies a reloaded config: the allowlist, the policies' modes, the instances.
    /// It is taken before the next decision, even when the queue is full.
    pub fn update(&self, config: &crate::config::Config) {
        if let Some(tx) = &self.inner.tx {
            *lock(&self.inner.shared.pending) = Some(Box::new(config.clone()));
            // A wake-up only: when the queue is full, the next message takes it anyway.
            let _ = tx.try_send(Msg::Update);
        }
    }

    /// The allowlisted settings' values as last read from the servers.
    pub fn settings(&self) -> Arc<[CurrentSetting]> {
        lock(&self.inner.shared.settings).clone()
    }

    /// Shows `batch` to the automatic-revert watches (a no-op while none is active).
    pub fn observe(&self, batch: &Batch) {
        let shared = &self.inner.shared;
        if !shared.watching.load(Ordering::Acquire) {
            return;
        }
        let filters = lock(&shared.filters).clone();
        if let Some(observation) = watch::observe(&filters, batch) {
            self.send(Msg::Observed(observation), 0);
        }
    }

    /// Counts so far.
    pub fn stats(&self) -> TuningStats {
        let shared = &self.inner.shared;
        let mut stats = shared.stats().clone();
        stats.dropped = shared.dropped.load(Ordering::Relaxed);
        stats
    }
}
