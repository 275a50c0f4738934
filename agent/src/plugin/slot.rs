//! One installed version of a plugin: its instance behind a lock of its own (held for
//! the length of one call), and a small health record (failures, quarantine, memory)
//! that status readers take without ever waiting for a plugin call.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::convert::Interests;
use super::evaluation::{Evaluation, PluginKind, PluginStatus, PolicyInputs};
use super::host::PluginKv;
use super::instance::{PluginInfo, PluginInstance};
use super::lane::Lane;
use crate::backoff::Backoff;
use crate::model::Batch;
use crate::sync::LockExt;

/// First quarantine period; each further quarantine doubles it, up to [`QUARANTINE_MAX`].
pub const QUARANTINE_MIN: Duration = Duration::from_secs(5);
/// Longest quarantine period.
pub const QUARANTINE_MAX: Duration = Duration::from_secs(300);

/// A plugin's health, updated after each call.
#[derive(Debug)]
struct Health {
    consecutive_failures: u32,
    quarantined_until: Option<Instant>,
    /// Quarantine periods: doubling per quarantine (never reset, so a plugin that keeps
    /// failing after recoveries stays out longer).
    quarantines: Backoff,
    memory_bytes: usize,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            consecutive_failures: 0,
            quarantined_until: None,
            quarantines: Backoff::new(QUARANTINE_MIN, QUARANTINE_MAX),
            memory_bytes: 0,
        }
    }
}

impl Health {
    fn quarantined(&self, now: Instant) -> bool {
        self.quarantined_until.is_some_and(|until| until > now)
    }

    /// Counts a call's outcome; returns the quarantine period it started, if any.
    fn record(&mut self, plugin: &str, failed: bool, quarantine_after: u32) -> Option<Duration> {
        if !failed {
            self.consecutive_failures = 0;
            if self.quarantined_until.take().is_some() {
                tracing::info!(plugin, "plugin left quarantine: its evaluation succeeded");
            }
            return None;
        }
        self.consecutive_failures += 1;
        // A plugin on probation after a quarantine goes straight back in.
        if self.consecutive_failures >= quarantine_after || self.quarantined_until.is_some() {
            let now = Instant::now();
            let period = self.quarantines.failed(now).retry_in;
            self.quarantined_until = Some(now + period);
            return Some(period);
        }
        None
    }
}

/// What [`PluginSlot::evaluate`] did with a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Evaluated (or found nothing of interest); the handler ran.
    Evaluated,
    /// In quarantine: not called.
    Quarantined,
    /// This version was replaced or removed: the batch belongs to whatever is installed now.
    Retired,
}

/// One installed version of a plugin.
pub struct PluginSlot {
    name: String,
    info: PluginInfo,
    content_hash: String,
    settings_json: String,
    /// The metric names it wants: a batch without any is not handed to it.
    interests: Interests,
    /// `None` once retired (its state handed to the next version, or removed).
    instance: Mutex<Option<PluginInstance>>,
    health: Mutex<Health>,
    /// The batches waiting for this plugin, shared by its successive versions.
    pub(super) lane: Arc<Lane>,
}

impl PluginSlot {
    /// Installs `instance`, draining batches from `lane`.
    pub fn new(instance: PluginInstance, lane: Arc<Lane>) -> Self {
        let health = Health {
            memory_bytes: instance.memory_bytes(),
            ..Health::default()
        };
        PluginSlot {
            name: instance.name().to_owned(),
            info: instance.info().clone(),
            content_hash: instance.content_hash().to_owned(),
            settings_json: instance.settings_json().to_owned(),
            interests: instance.interests().clone(),
            instance: Mutex::new(Some(instance)),
            health: Mutex::new(health),
            lane,
        }
    }

    /// SHA-256 of the file this version was loaded from.
    pub fn content_hash(&self) -> &str {
        &self.content_hash
    }

    /// The settings (JSON) this version runs with.
    pub fn settings_json(&self) -> &str {
        &self.settings_json
    }

    fn instance(&self) -> std::sync::MutexGuard<'_, Option<PluginInstance>> {
        self.instance
            .locked_as(format_args!("plugin {}", self.name))
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health
            .locked_as(format_args!("plugin {} health", self.name))
    }

    /// Whether `batch` holds a metric this version wants (else calling it would find
    /// nothing to evaluate).
    pub fn wants(&self, batch: &Batch) -> bool {
        batch
            .metrics
            .iter()
            .any(|metric| self.interests.wants(&metric.name))
    }

    /// The world this version implements.
    pub fn kind(&self) -> PluginKind {
        self.info.kind
    }

    /// Evaluates `batch` (an alert rule) or proposes for it, shown `inputs` (a tuning
    /// policy), unless the plugin is in quarantine, and hands the result to `done` before
    /// the plugin's lock is released. Waits only for this plugin's call in flight, if any.
    pub fn evaluate(
        &self,
        batch: &Batch,
        inputs: &PolicyInputs,
        quarantine_after: u32,
        done: impl FnOnce(Evaluation),
    ) -> Outcome {
        if self.health().quarantined(Instant::now()) {
            return Outcome::Quarantined;
        }
        let mut guard = self.instance();
        let Some(instance) = guard.as_mut() else {
            return Outcome::Retired;
        };
        let started = Instant::now();
        let outcome = instance.run(batch, inputs);
        let duration = started.elapsed();
        let memory_bytes = instance.memory_bytes();
        let (quarantined_for, failures_in_a_row) = {
            let mut health = self.health();
            health.memory_bytes = memory_bytes;
            let quarantined_for = health.record(&self.name, outcome.is_err(), quarantine_after);
            (quarantined_for, health.consecutive_failures)
        };
        done(Evaluation {
            plugin: self.name.clone(),
            duration,
            outcome,
            quarantined_for,
            failures_in_a_row,
        });
        Outcome::Evaluated
    }

    /// Retires this version: waits for its call in flight, if any, and hands over its
    /// key/value state (for the next version). Later evaluations find it [`Outcome::Retired`].
    pub fn retire(&self) -> PluginKv {
        self.instance()
            .take()
            .map(|mut instance| instance.take_state())
            .unwrap_or_default()
    }

    /// What the plugin looks like from outside; never waits for a plugin call.
    pub fn status(&self) -> PluginStatus {
        let health = self.health();
        PluginStatus {
            name: self.name.clone(),
            version: self.info.version.clone(),
            contract: self.info.contract.clone(),
            kind: self.info.kind,
            content_hash: self.content_hash.clone(),
            quarantined: health.quarantined(Instant::now()),
            consecutive_failures: health.consecutive_failures,
            memory_bytes: health.memory_bytes,
            skipped_batches: self.lane.skipped(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_quarantine_with_growing_periods() {
        let mut health = Health::default();
        assert_eq!(health.record("p", true, 2), None);
        assert_eq!(health.record("p", true, 2), Some(QUARANTINE_MIN));
        assert!(health.quarantined(Instant::now()));
        // On probation: the next failure goes straight back, for twice as long.
        assert_eq!(health.record("p", true, 2), Some(QUARANTINE_MIN * 2));
        assert_eq!(health.record("p", false, 2), None);
        assert!(!health.quarantined(Instant::now()));
        assert_eq!(health.consecutive_failures, 0);
    }
}
