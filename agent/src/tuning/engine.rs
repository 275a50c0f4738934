//! The tuning engine: one task that takes proposals from a bounded queue and decides them
//! strictly one at a time (so none is decided twice), applies what passes the gate in
//! enforce mode, audits every decision, keeps the allowlisted settings' values fresh for
//! policies, and reverts watched changes whose metric got worse.
//!
//! The gate, in order (the first refusal wins and names its reason): the allowlist (the
//! instance is configured; an entry for target + instance + parameter admits the policy;
//! the value is allowed; the server can change it without a restart; the step from the
//! current value is within `max_step`), the rate limit, the cool-down, and the mode
//! (dry-run unless the policy enforces). A value equal to the current one is `unchanged`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::action::{CurrentSetting, Proposal};
use super::audit::{self, AuditLog, Entry, Status};
use super::decision::{Decision, DecisionKind, Restore, Verdict};
use super::gate::{self, GateState};
use super::revert::{self, RevertRequest};
use super::target::{CollectorIntervals, Reading, TargetError, Targets};
use super::watch::{Observation, Watch, Watches};
use super::{Msg, Shared, TuningHandle};
use crate::config::Config;
use crate::config::{PolicyMode, TuningConfig};

/// Called for every audited decision (the supervisor turns it into an OTLP log record).
pub type DecisionSink = Arc<dyn Fn(&Decision) + Send + Sync>;

/// Proposal batches (and watched batches) queued for the engine at most.
pub const QUEUE: usize = 1024;

/// How long a value read from a server is reused for the next decision on it.
const READING_TTL: Duration = Duration::from_secs(1);

/// What a maintenance gate learned beside its verdict.
#[derive(Default)]
struct Notes {
    /// Why there is nothing to do (for an `unchanged` verdict).
    unchanged: Option<String>,
    /// Appended to a passing verdict's reason (verified or unverified, and why).
    note: String,
    /// An index proposal's verification.
    verification: Option<super::pg_verify::Verification>,
}

/// What the gate says before anything is applied.
enum Gate {
    Refuse(String, Option<Reading>),
    Unchanged(Reading),
    /// Passes; the reading is `None` only in previews without a known value.
    Pass(Option<Reading>),
}

/// The engine. Build it, take a [`TuningHandle`], then [`TuningEngine::run`] it in a task.
pub struct TuningEngine {
    tuning: TuningConfig,
    targets: Targets,
    audit: AuditLog,
    gate: GateState,
    watches: Watches,
    shared: Arc<Shared>,
    sink: Option<DecisionSink>,
    rx: Option<mpsc::Receiver<Msg>>,
    handle: TuningHandle,
    /// Recent readings per setting (reused for READING_TTL; dropped after a change).
    readings: std::collections::HashMap<super::SettingKey, (Instant, Reading)>,
    /// Settings whose last refresh failed (logged once until they read again).
    failing: HashSet<super::SettingKey>,
    /// Built by [`TuningEngine::offline`]: every decision is a preview.
    offline: bool,
}

impl TuningEngine {
    /// An engine for `config`; collector intervals through `intervals` (`None`: collector
    /// actions are refused), every audited decision handed to `sink`. The audit trail of
    /// `tuning.audit_file` seeds the rate limits and cool-downs (a restart resets neither).
    pub fn new(
        config: &Config,
        intervals: Option<Arc<dyn CollectorIntervals>>,
        sink: Option<DecisionSink>,
    ) -> Self {
        let path = &config.tuning.audit_file;
        let gate = match audit::read_entries(path) {
            Ok((entries, _)) => GateState::from_rows(&audit::fold(entries)),
            Err(e) => {
                tracing::warn!(
                    "cannot read the audit file {}: {e}; rate limits and cool-downs start empty",
                    path.display()
                );
                GateState::default()
            }
        };
        Self::new_with_gate(config, intervals, sink, gate)
    }

    fn new_with_gate(
        config: &Config,
        intervals: Option<Arc<dyn CollectorIntervals>>,
        sink: Option<DecisionSink>,
        gate: GateState,
    ) -> Self {
        let audit = AuditLog::new(&config.tuning.audit_file);
        let (tx, rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared::default());
        TuningEngine {
            tuning: config.tuning.clone(),
            targets: Targets::new(config.collect.clone(), intervals),
            audit,
            gate,
            watches: Watches::default(),
            handle: TuningHandle::new(tx, shared.clone()),
            shared,
            sink,
            rx: Some(rx),
            readings: Default::default(),
            failing: HashSet::new(),
            offline: false,
        }
    }

    /// An engine for previews only ([`TuningEngine::preview`], `vigil plugin test`): it
    /// reads no audit file and reaches no server.
    pub fn offline(config: &Config) -> Self {
        let mut engine = TuningEngine::new_with_gate(config, None, None, GateState::default());
        engine.targets = Targets::new(crate::config::CollectConfig::default(), None);
        engine.offline = true;
        engine
    }

    /// The handle the pipeline uses (clone it freely).
    pub fn handle(&self) -> TuningHandle {
        self.handle.clone()
    }

    /// Applies a reloaded config: allowlist, modes, instances and the audit file.
    pub fn update(&mut self, config: &Config) {
        self.tuning = config.tuning.clone();
        self.targets.set_collect(config.collect.clone());
        if self.audit.path() != config.tuning.audit_file {
            self.audit = AuditLog::new(&config.tuning.audit_file);
        }
        self.readings.clear();
    }

    /// Runs until every handle is dropped: decides queued proposals in order, refreshes the
    /// settings every `settings_refresh`, and follows the watches.
    pub async fn run(mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        // The engine's own handle must not keep the queue open.
        self.handle = TuningHandle::disabled();
        self.refresh_settings().await;
        let mut period = self.tuning.settings_refresh;
        let mut refresh = ticker(period);
        let mut expiry = ticker(Duration::from_secs(1));
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    None => break,
                    Some(msg) => self.handle_msg(msg).await,
                },
                _ = refresh.tick() => self.refresh_settings().await,
                _ = expiry.tick(), if !self.watches.is_empty() => self.expire_watches().await,
            }
            if self.tuning.settings_refresh != period {
                period = self.tuning.settings_refresh;
                refresh = ticker(period);
            }
        }
    }

    async fn handle_msg(&mut self, msg: Msg) {
        if let Some(config) = self.shared.take_pending() {
            self.update(&config);
            self.refresh_settings().await;
        }
        match msg {
            Msg::Proposals(proposals) => {
                for proposal in proposals {
                    self.decide(proposal).await;
                }
            }
            Msg::Decide(proposal, reply) => {
                let decision = self.decide(*proposal).await;
                let _ = reply.send(decision);
            }
            Msg::Observed(observation) => self.observed(observation).await,
            Msg::Update => {}
            Msg::Flush(reply) => {
                let _ = reply.send(());
            }
        }
    }

    /// Decides `proposal`: the gate, then (in enforce mode) the change, audited. (An
    /// [`TuningEngine::offline`] engine only previews.)
    pub async fn decide(&mut self, proposal: Proposal) -> Decision {
        self.decide_as(proposal, None).await
    }

    /// What the engine would decide, touching no server and auditing nothing: the current
    /// value is taken from `known` (checks that need it are skipped when it is not there).
    /// For `vigil plugin test`.
    pub async fn preview(&mut self, proposal: Proposal, known: &[CurrentSetting]) -> Decision {
        self.decide_as(proposal, Some(known)).await
    }

    async fn decide_as(
        &mut self,
        proposal: Proposal,
        preview: Option<&[CurrentSetting]>,
    ) -> Decision {
        let preview = preview.or(self.offline.then_some(&[][..]));
        let now = SystemTime::now();
        let mode = self.tuning.mode(&proposal.policy);
        let mut decision = Decision {
            id: None,
            time: now,
            kind: DecisionKind::Proposal,
            policy: proposal.policy.clone(),
            action: proposal.action.clone(),
            reason: proposal.reason.clone(),
            verdict: Verdict::Refused,
            verdict_reason: String::new(),
            mode: Some(mode),
            before: None,
            after: None,
            reverts: None,
            revert_if: proposal.revert_if.clone(),
            repeat: false,
            verification: None,
        };
        let (gate, notes) = match &proposal.action.maintenance {
            Some(m) => {
                self.maintenance_gate(&proposal, m, now, preview, mode)
                    .await
            }
            None => (self.gate(&proposal, now, preview).await, Notes::default()),
        };
        decision.verification = notes.verification;
        let key = &proposal.action.setting;
        let value = &proposal.action.value;
        let mut apply = None;
        match gate {
            Gate::Refuse(why, reading) => {
                decision.before = reading.map(|r| r.value);
                decision.verdict_reason = why;
            }
            Gate::Unchanged(reading) => {
                decision.verdict = Verdict::Unchanged;
                decision.verdict_reason = notes
                    .unchanged
                    .unwrap_or_else(|| format!("{key} is already {}", reading.value));
                decision.before = Some(reading.value);
            }
            Gate::Pass(reading) => {
                let from = reading
                    .as_ref()
                    .map_or("its current value".to_owned(), |r| r.value.clone());
                decision.before = reading.as_ref().map(|r| r.value.clone());
                let what = match &proposal.action.maintenance {
                    Some(m) => format!(
                        "{} {} on {} (now: {from}){}",
                        m.op.as_str(),
                        value,
                        key.instance,
                        notes.note
                    ),
                    None => format!("set {key} from {from} to {value}"),
                };
                match (mode, preview) {
                    (PolicyMode::DryRun, _) => {
                        decision.verdict = Verdict::DryRun;
                        decision.verdict_reason = format!(
                            "would {what} (policy {:?} is in dry-run mode)",
                            proposal.policy
                        );
                    }
                    (PolicyMode::Enforce, Some(_)) => {
                        decision.verdict = Verdict::WouldApply;
                        decision.verdict_reason = format!("would {what} (enforce mode)");
                    }
                    (PolicyMode::Enforce, None) => apply = reading,
                }
            }
        }
        if preview.is_some() {
            if decision.before.is_none() && decision.verdict != Verdict::Refused {
                decision
                    .verdict_reason
                    .push_str("; max_step and the current value not checked: no server was asked");
            }
            return decision;
        }
        if apply.is_none()
            && self.gate.is_repeat(
                &decision.policy,
                &decision.action,
                decision.verdict,
                &decision.verdict_reason,
            )
        {
            self.shared.stats().repeats += 1;
            decision.repeat = true;
            return decision;
        }
        if !self.gate.take_budget(
            &decision.policy,
            self.tuning.max_decisions_per_minute,
            Instant::now(),
        ) {
            self.shared.stats().throttled += 1;
            decision.verdict = Verdict::Refused;
            decision.verdict_reason = format!(
                "policy {:?} made more than {} decisions in the last minute (tuning.max_decisions_per_minute): not decided",
                decision.policy, self.tuning.max_decisions_per_minute
            );
            return decision;
        }
        let decision = match apply {
            Some(reading) => self.apply(decision, reading).await,
            None => revert::audit_one(&self.audit, decision, None).await,
        };
        self.gate.remember(
            &decision.policy,
            &decision.action,
            decision.verdict,
            &decision.verdict_reason,
        );
        self.decided(&decision);
        decision
    }

    /// The gate's checks, in order.
    async fn gate(
        &mut self,
        proposal: &Proposal,
        now: SystemTime,
        preview: Option<&[CurrentSetting]>,
    ) -> Gate {
        let key = &proposal.action.setting;
        let value = proposal.action.value.as_str();
        let entry = match gate::allow_entry(&self.tuning, &proposal.policy, key) {
            Ok(entry) => entry.clone(),
            Err(why) => return Gate::Refuse(why, None),
        };
        if preview.is_none() && !self.targets.has_instance(key) {
            return Gate::Refuse(
                format!(
                    "no {} instance (or collector) named {:?} is configured",
                    key.target, key.instance
                ),
                None,
            );
        }
        let reading = match preview {
            Some(known) => known.iter().find(|s| &s.setting == key).map(|s| Reading {
                value: s.value.clone(),
                pg_unit: None,
                restore: Restore::Set(s.value.clone()),
                refusal: None,
            }),
            None => match self.read(key).await {
                Ok(reading) => Some(reading),
                Err(e) => {
                    // The value check first: a bad value is refused as such even when the
                    // server cannot be read.
                    if let Err(why) = gate::check_value(&entry, value, None, None) {
                        return Gate::Refuse(why, None);
                    }
                    return Gate::Refuse(format!("cannot read the current value: {e}"), None);
                }
            },
        };
        let unit = reading.as_ref().and_then(|r| r.pg_unit.clone());
        let current = reading.as_ref().map(|r| r.value.as_str());
        if let Err(why) = gate::check_value(&entry, value, current, unit.as_deref()) {
            return Gate::Refuse(why, reading);
        }
        if let Some(refusal) = reading.as_ref().and_then(|r| r.refusal.clone()) {
            return Gate::Refuse(refusal, reading);
        }
        if let Some(r) = &reading
            && super::units::same_value(key.target, &r.value, value, unit.as_deref())
        {
            return Gate::Unchanged(r.clone());
        }
        if preview.is_none() {
            if let Err(why) = self.gate.check_rate(&entry, key, now) {
                return Gate::Refuse(why, reading);
            }
            if let Err(why) = self.gate.check_cooldown(&entry, key, now) {
                return Gate::Refuse(why, reading);
            }
        }
        Gate::Pass(reading)
    }

    /// The gate of a PostgreSQL maintenance proposal, in order: the allowlist entry for the
    /// instance and operation admits the policy and covers the table; the instance is
    /// configured; the server is asked (the table exists, there is something to do, an
    /// index proposal is verified: refused when it cannot be in enforce mode, reported
    /// unverified in dry-run); the rate limit and the cool-down.
    async fn maintenance_gate(
        &mut self,
        proposal: &Proposal,
        m: &super::Maintenance,
        now: SystemTime,
        preview: Option<&[CurrentSetting]>,
        mode: PolicyMode,
    ) -> (Gate, Notes) {
        let key = &proposal.action.setting;
        let mut notes = Notes::default();
        let refuse = |why: String| (Gate::Refuse(why, None), Notes::default());
        let entry = match gate::allow_entry(&self.tuning, &proposal.policy, key) {
            Ok(entry) => entry.clone(),
            Err(why) => return refuse(why),
        };
        let table_checked = m.op != super::MaintenanceOp::DropIndex;
        if table_checked && !entry.covers_table(&m.schema, &m.name) {
            return refuse(format!(
                "table {}.{} is not covered by the tables {:?} of the [[tuning.allow]] entry for {key}",
                m.schema, m.name, entry.tables
            ));
        }
        if preview.is_some() {
            notes.note = "; not inspected or verified: no server was asked".into();
            return (Gate::Pass(None), notes);
        }
        if !self.targets.has_instance(key) {
            return refuse(format!(
                "no postgres instance named {:?} is configured",
                key.instance
            ));
        }
        let inspection = match self.targets.inspect(key, &entry, m).await {
            Ok(inspection) => inspection,
            Err(e) => return refuse(format!("cannot inspect {}: {e}", m.object())),
        };
        let reading = inspection.reading;
        match inspection.verification {
            Some(Ok(v)) => {
                notes.note = format!(
                    "; verified: the planner's cost of the statements {:.1} -> {:.1} with the index (-{:.0} %)",
                    v.cost_before,
                    v.cost_after,
                    v.reduction() * 100.0
                );
                notes.verification = Some(v);
            }
            Some(Err(why)) if mode == PolicyMode::Enforce => {
                return (
                    Gate::Refuse(format!("cannot verify the index: {why}"), Some(reading)),
                    notes,
                );
            }
            Some(Err(why)) => notes.note = format!("; unverified: {why}"),
            None => {}
        }
        if let Some(refusal) = reading.refusal.clone() {
            return (Gate::Refuse(refusal, Some(reading)), notes);
        }
        if let Some(why) = inspection.unchanged {
            notes.unchanged = Some(why);
            return (Gate::Unchanged(reading), notes);
        }
        if let Err(why) = self.gate.check_rate(&entry, key, now) {
            return (Gate::Refuse(why, Some(reading)), notes);
        }
        if let Err(why) = self.gate.check_cooldown(&entry, key, now) {
            return (Gate::Refuse(why, Some(reading)), notes);
        }
        (Gate::Pass(Some(reading)), notes)
    }

    /// The current value of `key`, reused for a second after it was read.
    async fn read(&mut self, key: &super::SettingKey) -> Result<Reading, TargetError> {
        if let Some((at, reading)) = self.readings.get(key)
            && at.elapsed() < READING_TTL
        {
            return Ok(reading.clone());
        }
        let reading = self.targets.read(key).await?;
        self.readings
            .insert(key.clone(), (Instant::now(), reading.clone()));
        Ok(reading)
    }

    /// Applies a change that passed the gate: `applying` audited first, then the server,
    /// then the outcome.
    async fn apply(&mut self, mut decision: Decision, reading: Reading) -> Decision {
        let key = decision.action.setting.clone();
        let value = decision.action.value.clone();
        decision.verdict_reason = match &decision.action.maintenance {
            Some(m) => format!(
                "{} {value} on {} (before: {})",
                m.op.as_str(),
                key.instance,
                reading.value
            ),
            None => format!("set {key} from {} to {value}", reading.value),
        };
        let mut entry = revert::entry_of(&decision, Status::Applying);
        entry.restore = Some(reading.restore.clone());
        let log = self.audit.clone();
        let recorded = tokio::task::spawn_blocking(move || log.record(&mut entry)).await;
        let id = match recorded {
            Ok(Ok(id)) => id,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => format!("cannot write the audit file: {e}"),
                    Ok(Ok(_)) => String::new(),
                };
                tracing::warn!(policy = %decision.policy, "not applying {}: {why}", decision.action);
                decision.verdict = Verdict::Refused;
                decision.verdict_reason = why;
                return decision;
            }
        };
        decision.id = Some(id);
        self.readings.remove(&key);
        let maintenance = decision.action.maintenance.clone();
        let result = match &maintenance {
            Some(m) => match gate::allow_entry(&self.tuning, &decision.policy, &key) {
                Ok(entry) => self.targets.maintain(&key, &entry.clone(), m).await,
                Err(why) => Err(TargetError::Refused(why)),
            },
            None => self.targets.apply(&key, &value).await,
        };
        let now = SystemTime::now();
        let mut outcome;
        match result {
            Ok(after) => {
                decision.verdict = Verdict::Applied;
                if maintenance.is_some() {
                    decision
                        .verdict_reason
                        .push_str(&format!("; after: {after}"));
                } else if !super::units::same_value(
                    key.target,
                    &after,
                    &value,
                    reading.pg_unit.as_deref(),
                ) {
                    decision
                        .verdict_reason
                        .push_str(&format!(" (the server now reports {after})"));
                }
                outcome = Entry::new(id, Status::Applied);
                outcome.after = Some(after.clone());
                decision.after = Some(after.clone());
                self.gate.record_change(&key, decision.time, true);
                if maintenance.is_none() {
                    self.set_setting(&key, &after);
                }
                match &decision.revert_if {
                    Some(condition) => {
                        self.watches
                            .add(Watch::new(id, key.clone(), condition.clone(), now));
                    }
                    None => self.watches.remove(&key),
                }
                self.publish_watches();
            }
            Err(e) => {
                let (verdict, status) = match &e {
                    TargetError::Refused(_) => (Verdict::Refused, Status::Refused),
                    TargetError::Failed(_) => (Verdict::Failed, Status::Failed),
                };
                decision.verdict = verdict;
                decision.verdict_reason = e.to_string();
                outcome = Entry::new(id, status);
                outcome.error = Some(e.to_string());
                if verdict == Verdict::Failed {
                    // A failed attempt starts a cool-down: no hammering a failing server.
                    self.gate.record_change(&key, decision.time, false);
                }
            }
        }
        let log = self.audit.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || log.append(&outcome)).await {
            tracing::error!(
                "decision {id} ({key}) was carried out but its outcome is not audited: {e}"
            );
        }
        decision
    }

    /// Counts, logs and hands on an audited decision.
    fn decided(&self, decision: &Decision) {
        if !decision.audited() {
            return;
        }
        {
            let mut stats = self.shared.stats();
            *stats
                .decisions
                .entry(decision.policy.clone())
                .or_default()
                .entry(decision.verdict.as_str().to_owned())
                .or_default() += 1;
            stats.watching = self.watches.len();
        }
        tracing::info!(
            id = decision.id,
            policy = %decision.policy,
            kind = decision.kind.as_str(),
            verdict = decision.verdict.as_str(),
            "tuning decision: {}: {}",
            decision.action,
            decision.verdict_reason
        );
        if let Some(sink) = &self.sink {
            sink(decision);
        }
    }

    fn publish_watches(&self) {
        self.shared.set_filters(self.watches.filters());
        self.shared.stats().watching = self.watches.len();
    }

    /// Batches seen by the handle: fire watches whose metric got worse.
    async fn observed(&mut self, observation: Observation) {
        let fired = self.watches.fire(&observation);
        if fired.is_empty() {
            return;
        }
        self.publish_watches();
        for (watch, observed) in fired {
            self.auto_revert(watch, observed).await;
        }
    }

    async fn auto_revert(&mut self, watch: Watch, observed: String) {
        let rows = match audit::read_entries(self.audit.path()) {
            Ok((entries, _)) => audit::fold(entries),
            Err(e) => {
                tracing::error!(
                    "cannot revert change {} ({observed}): cannot read the audit file: {e}",
                    watch.id
                );
                return;
            }
        };
        let Some(original) = rows.iter().find(|r| r.entry.id == watch.id) else {
            tracing::error!(
                "cannot revert change {} ({observed}): it is not in the audit file",
                watch.id
            );
            return;
        };
        let policy = original.entry.policy.clone().unwrap_or_default();
        let request = RevertRequest {
            original,
            kind: DecisionKind::AutoRevert,
            policy,
            reason: observed,
            force: false,
        };
        let decision = match revert::revert(&self.targets, &self.audit, request).await {
            Ok(decision) => decision,
            Err(why) => {
                tracing::warn!("no automatic revert of change {}: {why}", watch.id);
                return;
            }
        };
        if decision.verdict == Verdict::Applied {
            self.gate.record_change(&watch.key, decision.time, false);
            if let Some(after) = &decision.after {
                self.set_setting(&watch.key, after);
            }
        }
        self.readings.remove(&watch.key);
        self.decided(&decision);
        if !decision.audited() {
            tracing::warn!(
                "automatic revert of change {}: {}",
                watch.id,
                decision.verdict_reason
            );
        }
    }

    /// Watches whose window ended: one `kept` line each.
    async fn expire_watches(&mut self) {
        let ended = self.watches.expire(SystemTime::now());
        if ended.is_empty() {
            return;
        }
        self.publish_watches();
        for watch in ended {
            let mut entry = Entry::new(watch.id, Status::Kept);
            entry.verdict = Some(format!(
                "{} did not get worse than {} within {}: the change is kept",
                watch.condition.metric,
                watch.condition.limit,
                humantime::format_duration(watch.condition.window)
            ));
            let log = self.audit.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || log.append(&entry)).await {
                tracing::warn!("end of the watch of change {}: {e}", watch.id);
            }
        }
    }

    fn set_setting(&self, key: &super::SettingKey, value: &str) {
        let mut settings: Vec<CurrentSetting> = self.handle_settings();
        match settings.iter_mut().find(|s| &s.setting == key) {
            Some(s) => s.value = value.to_owned(),
            None => settings.push(CurrentSetting {
                setting: key.clone(),
                value: value.to_owned(),
            }),
        }
        self.shared.set_settings(settings);
    }

    fn handle_settings(&self) -> Vec<CurrentSetting> {
        super::lock(&self.shared.settings).to_vec()
    }

    /// Reads every allowlisted setting; a failed read keeps the old value (logged once).
    pub async fn refresh_settings(&mut self) {
        let old = self.handle_settings();
        let mut fresh = Vec::new();
        for key in self.tuning.allowed_settings() {
            if !self.targets.has_instance(&key) {
                continue;
            }
            match self.targets.read(&key).await {
                Ok(reading) => {
                    if self.failing.remove(&key) {
                        tracing::info!("{key} can be read again");
                    }
                    fresh.push(CurrentSetting {
                        setting: key,
                        value: reading.value,
                    });
                }
                Err(e) => {
                    if self.failing.insert(key.clone()) {
                        tracing::warn!(
                            "cannot read {key} for tuning policies: {e}; keeping its last value (said once until it reads again)"
                        );
                    }
                    if let Some(previous) = old.iter().find(|s| s.setting == key) {
                        fresh.push(previous.clone());
                    }
                }
            }
        }
        self.shared.set_settings(fresh);
    }
}

/// Ticks every `period` from one period from now, skipping ticks it missed.
fn ticker(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    interval
}
