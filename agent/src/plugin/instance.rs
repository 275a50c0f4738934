//! One loaded plugin: its compiled component, type-checked against one of the contract
//! versions the agent accepts, and one long-lived instance that is restarted (keeping its
//! state) after a trap.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use wasmtime::{Engine, Store, Trap};

use super::bindings::v0_4::vigil::plugin::types as wit;
use super::bindings::{v0_1, v0_2, v0_3, v0_4};
use super::convert::{self, BatchSender, Interests};
use super::epoch::EpochTicker;
use super::evaluation::{Output, PluginKind, PolicyInputs};
use super::host::{PluginKv, PluginState};
use super::legacy;
use super::limits::PluginLimits;
use super::output::GuestOutput;
use super::proposal;
use super::runtime::PluginRuntime;
use super::{EvalError, LoadError};
use crate::alert::Alert;
use crate::model::{Batch, Finding};
use crate::tuning::{CurrentSetting, Proposal};

/// Longest plugin name or version a plugin may report.
const MAX_INFO_BYTES: usize = 128;
/// Most interest patterns a plugin may declare.
const MAX_INTERESTS: usize = 1024;
/// Longest error text kept from a failed call (the wasm backtrace is cut to fit).
const MAX_ERROR_BYTES: usize = 2048;
/// Most wasm backtrace frames kept in an error.
const MAX_BACKTRACE_FRAMES: usize = 6;
/// Most bytes of the plugin's output quoted in a trap's error.
const MAX_QUOTED_OUTPUT_BYTES: usize = 2048;

/// What a plugin said about itself in `describe`, the contract it was built against and
/// the world it implements.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub interests: Vec<String>,
    /// The `vigil:plugin` contract version it implements, e.g. `0.4.0`.
    pub contract: String,
    /// The world it implements: `alert-rule` or `tuning-policy`.
    pub kind: PluginKind,
}

/// The component, pre-linked against the contract version and world it implements.
enum Pre {
    Rule(v0_4::AlertRulePre<PluginState>),
    Policy(v0_4::policy::TuningPolicyPre<PluginState>),
    RuleV0_3(v0_3::AlertRulePre<PluginState>),
    PolicyV0_3(v0_3::policy::TuningPolicyPre<PluginState>),
    RuleV0_2(v0_2::AlertRulePre<PluginState>),
    RuleV0_1(v0_1::AlertRulePre<PluginState>),
}

impl Pre {
    /// Finds the world the component implements, trying 0.4.0 alert-rule, 0.4.0
    /// tuning-policy, 0.3.0 alert-rule, 0.3.0 tuning-policy, 0.2.0 alert-rule and 0.1.0
    /// alert-rule in that order. The exports of 0.4.0, 0.3.0 and 0.2.0 alert rules have the
    /// same shape, so only the versions of the
    /// `vigil:plugin` interfaces the component imports are tried (all of them when it
    /// imports none).
    fn new(pre: wasmtime::component::InstancePre<PluginState>) -> Result<Self, String> {
        let declared = declared_contracts(pre.component());
        let tried = |version: &str| declared.is_empty() || declared.contains(version);
        let mut failures = Vec::new();
        let mut failed = |world: &str, error: wasmtime::Error| {
            failures.push(format!("as a {world}: {}", error_chain(&error)));
        };
        if tried("0.4.0") {
            match v0_4::AlertRulePre::new(pre.clone()) {
                Ok(pre) => return Ok(Pre::Rule(pre)),
                Err(e) => failed("0.4.0 alert-rule", e),
            }
            match v0_4::policy::TuningPolicyPre::new(pre.clone()) {
                Ok(pre) => return Ok(Pre::Policy(pre)),
                Err(e) => failed("0.4.0 tuning-policy", e),
            }
        }
        if tried("0.3.0") {
            match v0_3::AlertRulePre::new(pre.clone()) {
                Ok(pre) => return Ok(Pre::RuleV0_3(pre)),
                Err(e) => failed("0.3.0 alert-rule", e),
            }
            match v0_3::policy::TuningPolicyPre::new(pre.clone()) {
                Ok(pre) => return Ok(Pre::PolicyV0_3(pre)),
                Err(e) => failed("0.3.0 tuning-policy", e),
            }
        }
        if tried("0.2.0") {
            match v0_2::AlertRulePre::new(pre.clone()) {
                Ok(pre) => return Ok(Pre::RuleV0_2(pre)),
                Err(e) => failed("0.2.0 alert-rule", e),
            }
        }
        if tried("0.1.0") {
            match v0_1::AlertRulePre::new(pre) {
                Ok(pre) => return Ok(Pre::RuleV0_1(pre)),
                Err(e) => failed("0.1.0 alert-rule", e),
            }
        }
        if failures.is_empty() {
            let declared: Vec<&str> = declared.iter().map(String::as_str).collect();
            return Err(format!(
                "it imports the interfaces of vigil:plugin {}, none of them accepted",
                declared.join(" and ")
            ));
        }
        Err(failures.join("; "))
    }

    fn contract(&self) -> &'static str {
        match self {
            Pre::Rule(_) | Pre::Policy(_) => "0.4.0",
            Pre::RuleV0_3(_) | Pre::PolicyV0_3(_) => "0.3.0",
            Pre::RuleV0_2(_) => "0.2.0",
            Pre::RuleV0_1(_) => "0.1.0",
        }
    }

    fn kind(&self) -> PluginKind {
        match self {
            Pre::Policy(_) | Pre::PolicyV0_3(_) => PluginKind::TuningPolicy,
            Pre::Rule(_) | Pre::RuleV0_3(_) | Pre::RuleV0_2(_) | Pre::RuleV0_1(_) => {
                PluginKind::AlertRule
            }
        }
    }

    fn instantiate(&self, store: &mut Store<PluginState>) -> wasmtime::Result<Bindings> {
        Ok(match self {
            Pre::Rule(pre) => Bindings::Rule(pre.instantiate(store)?),
            Pre::Policy(pre) => Bindings::Policy(pre.instantiate(store)?),
            Pre::RuleV0_3(pre) => Bindings::RuleV0_3(pre.instantiate(store)?),
            Pre::PolicyV0_3(pre) => Bindings::PolicyV0_3(pre.instantiate(store)?),
            Pre::RuleV0_2(pre) => Bindings::RuleV0_2(pre.instantiate(store)?),
            Pre::RuleV0_1(pre) => Bindings::RuleV0_1(pre.instantiate(store)?),
        })
    }
}

/// A running instance's exports.
enum Bindings {
    Rule(v0_4::AlertRule),
    Policy(v0_4::policy::TuningPolicy),
    RuleV0_3(v0_3::AlertRule),
    PolicyV0_3(v0_3::policy::TuningPolicy),
    RuleV0_2(v0_2::AlertRule),
    RuleV0_1(v0_1::AlertRule),
}

impl Bindings {
    fn describe(
        &self,
        store: &mut Store<PluginState>,
    ) -> wasmtime::Result<Result<wit::PluginInfo, String>> {
        match self {
            Bindings::Rule(b) => b.call_describe(store),
            Bindings::Policy(b) => b.call_describe(store),
            Bindings::RuleV0_3(b) => b.call_describe(store),
            Bindings::PolicyV0_3(b) => b.call_describe(store),
            Bindings::RuleV0_2(b) => b.call_describe(store),
            Bindings::RuleV0_1(b) => Ok(b.call_describe(store)?.map(legacy::plugin_info)),
        }
    }
}

/// A batch as the plugin's contract version lays it out.
enum Input {
    Current(wit::Batch),
    Legacy(v0_1::Batch),
}

/// A running instance and its store.
struct Live {
    store: Store<PluginState>,
    bindings: Bindings,
}

/// A plugin loaded from a file, ready to evaluate batches.
pub struct PluginInstance {
    name: String,
    path: PathBuf,
    engine: Engine,
    ticker: EpochTicker,
    pre: Pre,
    settings_json: String,
    limits: PluginLimits,
    info: PluginInfo,
    interests: Interests,
    live: Option<Live>,
    /// State kept while no instance is live (between a trap and the restart).
    parked_kv: PluginKv,
    /// What the live instance has been sent (0.2.0: which series tables it holds).
    sender: BatchSender,
    /// Where the instance's stdout and stderr go.
    output: GuestOutput,
    /// What the plugin printed during its last call.
    last_output: Option<String>,
    /// SHA-256 of the file it was loaded from.
    content_hash: String,
}

impl PluginInstance {
    /// Reads, compiles, type-checks and starts the plugin at `path`, then asks it to describe itself.
    pub fn load(
        runtime: &PluginRuntime,
        path: &Path,
        name: &str,
        settings_json: String,
    ) -> Result<Self, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(runtime, path, name, settings_json, &bytes)
    }

    /// Like [`PluginInstance::load`], from bytes already read; `path` names the origin in errors.
    ///
    /// `describe` is the only call made: nothing is evaluated at load time, so a plugin's
    /// state and counters see only real batches.
    pub fn from_bytes(
        runtime: &PluginRuntime,
        path: &Path,
        name: &str,
        settings_json: String,
        bytes: &[u8],
    ) -> Result<Self, LoadError> {
        let started = Instant::now();
        let (component, cache) = runtime.component(bytes).map_err(|e| LoadError::Compile {
            path: path.to_owned(),
            reason: error_chain(&e),
        })?;
        let pre = runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| error_chain(&e))
            .and_then(Pre::new)
            .map_err(|reason| LoadError::WrongWorld {
                path: path.to_owned(),
                reason,
            })?;

        let mut plugin = PluginInstance {
            name: name.to_owned(),
            path: path.to_owned(),
            engine: runtime.engine().clone(),
            ticker: runtime.ticker().clone(),
            pre,
            settings_json,
            limits: runtime.limits(),
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                interests: Vec::new(),
                contract: String::new(),
                kind: PluginKind::AlertRule,
            },
            interests: Interests::default(),
            live: None,
            parked_kv: PluginKv::default(),
            sender: BatchSender::default(),
            output: GuestOutput::default(),
            last_output: None,
            content_hash: super::cache::content_hash(bytes),
        };
        plugin.start().map_err(|reason| LoadError::Instantiate {
            path: path.to_owned(),
            reason,
        })?;
        let describe_error = |reason: String| LoadError::Describe {
            path: path.to_owned(),
            reason,
        };
        let info = plugin
            .call(|bindings, store| bindings.describe(store))
            .map_err(|e| describe_error(e.to_string()))?
            .map_err(|e| describe_error(format!("the plugin says: {e}")))?;
        let mut info = check_info(info).map_err(describe_error)?;
        info.contract = plugin.pre.contract().to_owned();
        info.kind = plugin.pre.kind();
        plugin.interests = Interests::new(&info.interests);
        plugin.info = info;
        tracing::debug!(plugin = name, path = %path.display(), contract = plugin.pre.contract(), kind = %plugin.pre.kind(), ?cache, elapsed_ms = started.elapsed().as_millis() as u64, "plugin compiled and started");
        Ok(plugin)
    }

    /// The plugin's name in the agent (its file stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SHA-256 of the file it was loaded from.
    pub fn content_hash(&self) -> &str {
        &self.content_hash
    }

    /// The settings (JSON) it runs with.
    pub fn settings_json(&self) -> &str {
        &self.settings_json
    }

    /// Hands over the key/value state (for the next version of the same plugin).
    pub fn take_state(&mut self) -> PluginKv {
        match self.live.take() {
            Some(live) => live.store.into_data().into_kv(),
            None => std::mem::take(&mut self.parked_kv),
        }
    }

    /// Takes over the key/value state of a previous version: the running instance is
    /// replaced by a fresh one that starts with `kv`.
    pub fn adopt_state(&mut self, kv: PluginKv) {
        self.live = None;
        self.parked_kv = kv;
    }

    /// Bytes of linear memory the live instance uses (0 when none is live).
    pub fn memory_bytes(&self) -> usize {
        self.live
            .as_ref()
            .map_or(0, |l| l.store.data().limiter().memory_in_use)
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metric names it wants (from `describe`).
    pub fn interests(&self) -> &Interests {
        &self.interests
    }

    /// What the plugin said about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// What the plugin wrote to stdout and stderr during its last call, if anything.
    pub fn last_output(&self) -> Option<&str> {
        self.last_output.as_deref()
    }

    /// The world it implements.
    pub fn kind(&self) -> PluginKind {
        self.pre.kind()
    }

    /// Calls the plugin on `batch` as its world says: an alert rule evaluates it, a
    /// tuning policy proposes actions, shown `inputs` beside it. `Ok(None)`: nothing in
    /// the batch for this plugin.
    pub fn run(
        &mut self,
        batch: &Batch,
        inputs: &PolicyInputs,
    ) -> Result<Option<Output>, EvalError> {
        Ok(match self.kind() {
            PluginKind::AlertRule => self.evaluate(batch)?.map(Output::Findings),
            PluginKind::TuningPolicy => self
                .propose(batch, &inputs.firing, &inputs.settings)?
                .map(Output::Proposals),
        })
    }

    /// Evaluates the part of `batch` the plugin (an alert rule) wants. `Ok(None)`: nothing
    /// in it for this plugin.
    pub fn evaluate(&mut self, batch: &Batch) -> Result<Option<Vec<Finding>>, EvalError> {
        self.expect_kind(PluginKind::AlertRule, "evaluate")?;
        // A restart forgets which tables the instance holds, so restart before building the batch.
        self.ensure_live()?;
        let input = match &self.pre {
            Pre::RuleV0_1(_) => legacy::batch_for(batch, &self.interests).map(Input::Legacy),
            Pre::Rule(_)
            | Pre::RuleV0_3(_)
            | Pre::RuleV0_2(_)
            | Pre::Policy(_)
            | Pre::PolicyV0_3(_) => self
                .sender
                .batch_for(batch, &self.interests)
                .map(Input::Current),
        };
        let Some(input) = input else {
            return Ok(None);
        };
        let output = self.call(|bindings, store| match (bindings, &input) {
            (Bindings::Rule(b), Input::Current(batch)) => b.call_evaluate(store, batch),
            (Bindings::RuleV0_3(b), Input::Current(batch)) => b.call_evaluate(store, batch),
            (Bindings::RuleV0_2(b), Input::Current(batch)) => b.call_evaluate(store, batch),
            (Bindings::RuleV0_1(b), Input::Legacy(batch)) => Ok(b
                .call_evaluate(store, batch)?
                .map(|found| found.into_iter().map(legacy::finding).collect())),
            _ => Err(wasmtime::format_err!(
                "internal error: batch and instance of different contract versions"
            )),
        })?;
        let found = output.map_err(|reason| EvalError::Reported {
            plugin: self.name.clone(),
            reason,
        })?;
        if let Input::Current(batch) = &input {
            self.sender.delivered(batch);
        }
        convert::findings_from(found, self.limits.max_findings)
            .map(Some)
            .map_err(|reason| EvalError::InvalidOutput {
                plugin: self.name.clone(),
                reason,
            })
    }

    /// Asks the plugin (a tuning policy) what it proposes for the part of `batch` it wants,
    /// shown the alerts `firing` and the allowlisted `settings`. `Ok(None)`: nothing in the
    /// batch for this plugin. The answer is checked all or nothing
    /// ([`proposal::proposals_from`]); each proposal is stamped with the batch's collection
    /// time and the plugin's name.
    pub fn propose(
        &mut self,
        batch: &Batch,
        firing: &[Alert],
        settings: &[CurrentSetting],
    ) -> Result<Option<Vec<Proposal>>, EvalError> {
        self.expect_kind(PluginKind::TuningPolicy, "propose")?;
        // A restart forgets which tables the instance holds, so restart before building the batch.
        self.ensure_live()?;
        let Some(input) = self.sender.batch_for(batch, &self.interests) else {
            return Ok(None);
        };
        let firing: Vec<wit::FiringAlert> = firing.iter().map(proposal::firing_alert).collect();
        let settings: Vec<wit::CurrentSetting> =
            settings.iter().map(proposal::current_setting).collect();
        let output = self.call(|bindings, store| match bindings {
            Bindings::Policy(b) => b.call_propose(store, &input, &firing, &settings),
            Bindings::PolicyV0_3(b) => Ok(b
                .call_propose(store, &input, &firing, &settings)?
                .map(|answer| answer.into_iter().map(legacy::proposal).collect())),
            _ => Err(wasmtime::format_err!(
                "internal error: propose on an instance that is no tuning policy"
            )),
        })?;
        let answer = output.map_err(|reason| EvalError::Reported {
            plugin: self.name.clone(),
            reason,
        })?;
        self.sender.delivered(&input);
        proposal::proposals_from(answer, &self.name, batch.timestamp)
            .map(Some)
            .map_err(|reason| EvalError::InvalidOutput {
                plugin: self.name.clone(),
                reason,
            })
    }

    /// An internal error unless the plugin implements the world of `kind`: `call` is the
    /// export asked for.
    fn expect_kind(&self, kind: PluginKind, call: &str) -> Result<(), EvalError> {
        if self.kind() == kind {
            return Ok(());
        }
        Err(EvalError::Internal {
            plugin: self.name.clone(),
            reason: format!("{call} called on a {}; only a {kind} has it", self.kind()),
        })
    }

    /// Starts a fresh instance, handing it the plugin's state; it holds no series table yet.
    fn start(&mut self) -> Result<(), String> {
        let kv = std::mem::take(&mut self.parked_kv);
        let state = PluginState::new(
            self.name.clone(),
            self.settings_json.clone(),
            kv,
            self.limits.memory_bytes,
            self.output.clone(),
        );
        self.sender.forget_delivered();
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s.limiter_mut());
        let in_flight = self.ticker.in_flight();
        store.set_epoch_deadline(self.limits.deadline_ticks());
        store.epoch_deadline_trap();
        let started = self.pre.instantiate(&mut store);
        drop(in_flight);
        self.collect_output();
        match started {
            Ok(bindings) => {
                self.live = Some(Live { store, bindings });
                Ok(())
            }
            Err(e) => {
                self.parked_kv = store.into_data().into_kv();
                Err(self.classify(e, false).to_string())
            }
        }
    }

    /// Restarts the instance if a failure retired it.
    fn ensure_live(&mut self) -> Result<(), EvalError> {
        if self.live.is_none() {
            self.start().map_err(|reason| EvalError::Restart {
                plugin: self.name.clone(),
                reason,
            })?;
        }
        Ok(())
    }

    /// Calls into the instance under the deadline; a trap retires the instance
    /// (a trapped component cannot be entered again) and the next call restarts it.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&Bindings, &mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, EvalError> {
        self.ensure_live()?;
        let Some(live) = self.live.as_mut() else {
            return Err(EvalError::Restart {
                plugin: self.name.clone(),
                reason: "no instance".into(),
            });
        };
        let in_flight = self.ticker.in_flight();
        live.store.set_epoch_deadline(self.limits.deadline_ticks());
        let result = f(&live.bindings, &mut live.store);
        drop(in_flight);
        self.collect_output();
        match result {
            Ok(value) => Ok(value),
            Err(error) => {
                let memory_exceeded = self
                    .live
                    .as_ref()
                    .is_some_and(|l| l.store.data().limiter().memory_exceeded);
                if let Some(live) = self.live.take() {
                    self.parked_kv = live.store.into_data().into_kv();
                }
                Err(self.classify(error, memory_exceeded))
            }
        }
    }

    /// Takes what the plugin printed in the call just made and logs it at debug.
    fn collect_output(&mut self) {
        self.last_output = self.output.take();
        if let Some(text) = &self.last_output {
            tracing::debug!(plugin = self.name.as_str(), "plugin output:\n{text}");
        }
    }

    fn classify(&self, error: wasmtime::Error, memory_exceeded: bool) -> EvalError {
        let plugin = self.name.clone();
        if memory_exceeded {
            EvalError::Memory {
                plugin,
                limit_mib: (self.limits.memory_bytes >> 20) as u64,
            }
        } else if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            EvalError::Deadline {
                plugin,
                deadline_ms: self.limits.deadline.as_millis(),
            }
        } else {
            // What the plugin printed (a panic message, a traceback) says most: it goes
            // right after the trap, before the backtrace.
            let chain = error_chain(&error);
            let (summary, backtrace) = chain.split_once('\n').unwrap_or((&chain, ""));
            let mut reason = summary.to_owned();
            if let Some(output) = &self.last_output {
                reason.push_str("\nthe plugin printed:\n");
                reason.push_str(tail(output, MAX_QUOTED_OUTPUT_BYTES).trim_end());
            }
            if !backtrace.is_empty() {
                reason.push_str("\nwasm backtrace:\n");
                reason.push_str(backtrace);
            }
            EvalError::Trap { plugin, reason }
        }
    }
}

/// The `vigil:plugin` contract versions whose interfaces `component` imports (e.g.
/// `vigil:plugin/host@0.2.0` says 0.2.0).
fn declared_contracts(component: &wasmtime::component::Component) -> BTreeSet<String> {
    component
        .component_type()
        .imports(component.engine())
        .filter_map(|(name, _)| {
            let (_, version) = name.strip_prefix("vigil:plugin/")?.split_once('@')?;
            Some(version.to_owned())
        })
        .collect()
}

/// The whole error chain of a failed call on its first line, the deepest cause first
/// (what happened: the trap, the guest's message), then the contexts' details on the
/// lines below (where: the wasm backtrace, cut to [`MAX_BACKTRACE_FRAMES`] frames); at
/// most [`MAX_ERROR_BYTES`] in all.
fn error_chain(error: &wasmtime::Error) -> String {
    let causes: Vec<String> = error.chain().map(|cause| cause.to_string()).collect();
    let mut summary = Vec::new();
    let mut details = String::new();
    for cause in causes.iter().rev() {
        let mut lines = cause.lines();
        summary.push(
            lines
                .next()
                .unwrap_or_default()
                .trim_end_matches(':')
                .to_owned(),
        );
        let rest: Vec<&str> = lines.collect();
        for line in rest.iter().take(MAX_BACKTRACE_FRAMES) {
            details.push_str("\n  ");
            details.push_str(line.trim());
        }
        if rest.len() > MAX_BACKTRACE_FRAMES {
            details.push_str(&format!(
                "\n  ... {} more lines",
                rest.len() - MAX_BACKTRACE_FRAMES
            ));
        }
    }
    let mut text = summary.join("; ");
    text.push_str(&details);
    super::host::cut_to(&mut text, MAX_ERROR_BYTES);
    text
}

/// The last `max` bytes of `text` (at a character boundary).
fn tail(text: &str, max: usize) -> &str {
    &text[text.ceil_char_boundary(text.len().saturating_sub(max))..]
}

/// Checks what a plugin returned from `describe` (name, version, interests) before the
/// host relies on it.
pub(crate) fn check_info(info: wit::PluginInfo) -> Result<PluginInfo, String> {
    if info.name.is_empty() || info.name.len() > MAX_INFO_BYTES {
        return Err(format!("name must be 1 to {MAX_INFO_BYTES} bytes"));
    }
    if info.version.len() > MAX_INFO_BYTES {
        return Err(format!("version must be at most {MAX_INFO_BYTES} bytes"));
    }
    if info.interests.len() > MAX_INTERESTS {
        return Err(format!(
            "{} interests; the limit is {MAX_INTERESTS}",
            info.interests.len()
        ));
    }
    if let Some(bad) = info
        .interests
        .iter()
        .find(|i| i.is_empty() || i.len() > 256)
    {
        return Err(format!("interest {bad:?} must be 1 to 256 bytes"));
    }
    Ok(PluginInfo {
        name: info.name,
        version: info.version,
        interests: info.interests,
        contract: String::new(),
        kind: PluginKind::AlertRule,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertKey, AlertState};
    use crate::model::Severity;
    use crate::model::{BatchBuilder, MetricDesc, MetricKind, attrs};
    use crate::tuning::{Direction, SettingKey, Target};
    use std::time::Duration;
    use vigil_testkit::plugins::{CONTRACT_V0_1, CONTRACT_V0_2, ECHO_POLICY, MISBEHAVE, THRESHOLD};

    fn runtime() -> PluginRuntime {
        PluginRuntime::new(PluginLimits {
            deadline: Duration::from_secs(5),
            memory_bytes: 64 << 20,
            max_findings: 100,
        })
        .unwrap()
    }

    fn load(runtime: &PluginRuntime, file: &str, name: &str, settings: &str) -> PluginInstance {
        PluginInstance::load(runtime, file.as_ref(), name, settings.into()).unwrap()
    }

    fn batch(series: &[(&str, f64)]) -> Batch {
        let metric = MetricDesc::new("test.value", "1", MetricKind::Gauge, "");
        let other = MetricDesc::new("test.other", "1", MetricKind::Gauge, "");
        let mut b = BatchBuilder::new("test", "h");
        for (name, value) in series {
            b.point(&other, attrs([("s", *name)]), 100.0);
            b.point(&metric, attrs([("s", *name)]), *value);
        }
        b.build()
    }

    fn keys(found: Option<Vec<Finding>>) -> Vec<String> {
        found.unwrap().into_iter().map(|f| f.key).collect()
    }

    #[test]
    fn values_meet_the_table_sent_earlier_also_after_a_restart() {
        let runtime = runtime();
        let mut plugin = load(
            &runtime,
            THRESHOLD,
            "threshold",
            r#"{"rules":[{"name":"hot","metric":"test.value","op":">","value":0.5}]}"#,
        );
        assert_eq!(plugin.info().contract, "0.4.0");
        assert_eq!(plugin.info().kind, PluginKind::AlertRule);
        let first = batch(&[("a", 1.0), ("b", 0.0)]);
        assert_eq!(keys(plugin.evaluate(&first).unwrap()), ["s=a"]);
        // Same series, new values: the plugin pairs them with the table it kept.
        let second = batch(&[("a", 0.0), ("b", 1.0)]);
        assert_eq!(second.table_id(), first.table_id());
        assert_eq!(keys(plugin.evaluate(&second).unwrap()), ["s=b"]);
        // A new series changes the table.
        let grown = batch(&[("a", 1.0), ("b", 1.0), ("c", 1.0)]);
        assert_eq!(
            keys(plugin.evaluate(&grown).unwrap()),
            ["s=a", "s=b", "s=c"]
        );
        // A fresh instance (as after a trap) is sent the table again.
        let kv = plugin.take_state();
        plugin.adopt_state(kv);
        assert_eq!(keys(plugin.evaluate(&second).unwrap()), ["s=b"]);
    }

    #[test]
    fn a_plugin_built_against_contract_0_1_still_loads_and_fires() {
        let runtime = runtime();
        let mut plugin = load(
            &runtime,
            CONTRACT_V0_1,
            "contract-v0-1",
            r#"{"metric":"test.value","limit":0.5}"#,
        );
        assert_eq!(plugin.info().contract, "0.1.0");
        assert_eq!(plugin.info().interests, ["test.value"]);
        for _ in 0..2 {
            let found = plugin
                .evaluate(&batch(&[("a", 0.9), ("b", 0.1)]))
                .unwrap()
                .unwrap();
            assert_eq!(found.len(), 1);
            assert_eq!(
                (found[0].rule.as_str(), found[0].key.as_str()),
                ("legacy-above", "s=a")
            );
            assert_eq!(found[0].value, Some(0.9));
        }
    }

    #[test]
    fn a_plugin_built_against_contract_0_2_still_loads_and_fires() {
        let runtime = runtime();
        let mut plugin = load(
            &runtime,
            CONTRACT_V0_2,
            "contract-v0-2",
            r#"{"metric":"test.value","limit":0.5}"#,
        );
        assert_eq!(plugin.info().contract, "0.2.0");
        assert_eq!(plugin.info().kind, PluginKind::AlertRule);
        assert_eq!(plugin.info().interests, ["test.value"]);
        // The second batch crosses without its table: the plugin pairs it with the one it kept.
        for values in [(0.9, 0.1), (0.2, 0.7)] {
            let found = plugin
                .evaluate(&batch(&[("a", values.0), ("b", values.1)]))
                .unwrap()
                .unwrap();
            assert_eq!(found.len(), 1);
            let expected = if values.0 > 0.5 { "s=a" } else { "s=b" };
            assert_eq!(
                (found[0].rule.as_str(), found[0].key.as_str()),
                ("legacy-above", expected)
            );
        }
    }

    /// The echo policy, proposing what `settings` (JSON) says.
    fn policy(runtime: &PluginRuntime, settings: &str) -> PluginInstance {
        load(runtime, ECHO_POLICY, "echo", settings)
    }

    fn propose(plugin: &mut PluginInstance) -> Result<Option<Vec<Proposal>>, EvalError> {
        plugin.propose(&batch(&[("a", 1.0)]), &[], &[])
    }

    const REDIS_PROPOSAL: &str = r#"{"action":"redis-config-set","instance":"cache","parameter":"maxmemory","value":"256mb","reason":"evictions rising","revert_if":{"metric":"redis.keys.evicted","attributes":{"db":"0"},"worse":"rises","limit":10,"window_ms":60000}}"#;

    #[test]
    fn a_policy_loads_as_a_tuning_policy_and_its_proposals_come_back_converted() {
        let runtime = runtime();
        let settings = format!(
            r#"{{"proposals":[{REDIS_PROPOSAL},{{"action":"collector-interval","collector":"system","interval_ms":30000,"reason":"cpu saturated"}}]}}"#
        );
        let mut plugin = policy(&runtime, &settings);
        assert_eq!(plugin.info().contract, "0.4.0");
        assert_eq!(plugin.info().kind, PluginKind::TuningPolicy);
        let b = batch(&[("a", 1.0)]);
        let proposals = plugin.propose(&b, &[], &[]).unwrap().unwrap();
        assert_eq!(proposals.len(), 2);
        let redis = &proposals[0];
        assert_eq!(redis.policy, "echo");
        assert_eq!(redis.proposed_at, b.timestamp);
        assert_eq!(redis.action.to_string(), "redis cache maxmemory = 256mb");
        assert_eq!(redis.reason, "evictions rising");
        let watch = redis.revert_if.as_ref().unwrap();
        assert_eq!(
            (watch.metric.as_str(), watch.worse, watch.limit),
            ("redis.keys.evicted", Direction::Rises, 10.0)
        );
        assert_eq!(watch.attributes, [("db".to_owned(), "0".to_owned())]);
        assert_eq!(watch.window, Duration::from_secs(60));
        let interval = &proposals[1];
        assert_eq!(interval.action.setting.target, Target::Collector);
        assert_eq!(interval.action.setting.instance, "system");
        assert_eq!(
            interval.action.setting.parameter,
            crate::tuning::action::COLLECTOR_INTERVAL
        );
        assert_eq!(interval.action.value, "30000");
        assert!(interval.revert_if.is_none());
        // Through `run`, as the registry calls it.
        let output = plugin.run(&b, &PolicyInputs::default()).unwrap();
        assert!(matches!(output, Some(Output::Proposals(p)) if p.len() == 2));
    }

    #[test]
    fn a_policy_is_shown_the_firing_alerts_and_current_settings() {
        let runtime = runtime();
        let mut plugin = policy(&runtime, r#"{"mode":"inputs"}"#);
        let since = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let alert = Alert {
            key: AlertKey {
                plugin: "threshold".into(),
                rule: "hot".into(),
                key: "s=a".into(),
            },
            source: "test".into(),
            state: AlertState::Firing,
            severity: Severity::Critical,
            summary: "hot".into(),
            value: Some(0.97),
            labels: vec![],
            hold_for: Duration::ZERO,
            active_since: since - Duration::from_secs(30),
            firing_since: Some(since),
        };
        let setting = CurrentSetting {
            setting: SettingKey {
                target: Target::Postgres,
                instance: "main".into(),
                parameter: "work_mem".into(),
            },
            value: "4MB".into(),
        };
        let proposals = plugin
            .propose(&batch(&[("a", 1.0)]), &[alert], &[setting])
            .unwrap()
            .unwrap();
        let seen: Vec<(String, String)> = proposals
            .iter()
            .map(|p| (p.action.to_string(), p.reason.clone()))
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "redis firing hot = s=a".to_owned(),
                    "firing threshold/hot/s=a critical since 1700000000000000000 value Some(0.97)"
                        .to_owned()
                ),
                (
                    "postgres main work_mem = 4MB".to_owned(),
                    "current postgres".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn a_policy_sees_only_batches_holding_a_metric_it_asked_for() {
        let runtime = runtime();
        let settings = format!(r#"{{"interests":["redis.*"],"proposals":[{REDIS_PROPOSAL}]}}"#);
        let mut plugin = policy(&runtime, &settings);
        assert!(propose(&mut plugin).unwrap().is_none());
    }

    #[test]
    fn invalid_policy_output_is_rejected_whole() {
        let runtime = runtime();
        let huge = "x".repeat(300);
        let cases = [
            (format!(r#"{{"count":101,"proposals":[{REDIS_PROPOSAL}]}}"#), "101 proposals"),
            (format!(r#"{{"count":100000,"proposals":[{REDIS_PROPOSAL}]}}"#), "100000 proposals"),
            (
                format!(
                    r#"{{"proposals":[{REDIS_PROPOSAL},{{"action":"redis-config-set","instance":"cache","parameter":"maxmemory","value":"{huge}"}}]}}"#
                ),
                "proposal #1: value is 300 bytes",
            ),
            (
                r#"{"proposals":[{"action":"postgres-set","instance":"main","parameter":"work_mem","value":"8MB","revert_if":{"metric":"m","worse":"rises","limit":"NaN","window_ms":1000}}]}"#.to_owned(),
                "limit is NaN",
            ),
            (
                r#"{"proposals":[{"action":"mysql-set-global","instance":"","parameter":"x","value":"1"}]}"#.to_owned(),
                "instance is empty",
            ),
        ];
        for (settings, expected) in cases {
            let mut plugin = policy(&runtime, &settings);
            let error = propose(&mut plugin).unwrap_err();
            assert_eq!(error.cause(), "invalid-output", "{error}");
            assert!(error.to_string().contains(expected), "{expected}: {error}");
        }
        // Exactly at the limit is fine.
        let mut plugin = policy(
            &runtime,
            &format!(r#"{{"count":100,"proposals":[{REDIS_PROPOSAL}]}}"#),
        );
        assert_eq!(propose(&mut plugin).unwrap().unwrap().len(), 100);
    }

    #[test]
    fn a_trapping_policy_is_restarted_with_its_state() {
        let runtime = runtime();
        let mut plugin = policy(&runtime, r#"{"mode":"trap"}"#);
        for _ in 0..2 {
            let error = propose(&mut plugin).unwrap_err();
            assert_eq!(error.cause(), "trap", "{error}");
            assert!(error.to_string().contains("trapping as asked"), "{error}");
        }
        // State survives a restart: a counting policy counts on across a new instance.
        let mut counting = policy(&runtime, r#"{"mode":"count"}"#);
        let reason = |p: &mut PluginInstance| propose(p).unwrap().unwrap()[0].reason.clone();
        assert_eq!(reason(&mut counting), "n=1");
        let kv = counting.take_state();
        counting.adopt_state(kv);
        assert_eq!(reason(&mut counting), "n=2");
        let mut failing = policy(&runtime, r#"{"mode":"fail"}"#);
        assert_eq!(propose(&mut failing).unwrap_err().cause(), "plugin-error");
    }

    #[test]
    fn calling_the_other_worlds_export_is_an_internal_error() {
        let runtime = runtime();
        let mut policy = policy(&runtime, r#"{"proposals":[]}"#);
        let error = policy.evaluate(&batch(&[("a", 1.0)])).unwrap_err();
        assert_eq!(error.cause(), "internal", "{error}");
        assert!(
            error
                .to_string()
                .contains("evaluate called on a tuning-policy"),
            "{error}"
        );
        let mut rule = load(
            &runtime,
            THRESHOLD,
            "threshold",
            r#"{"rules":[{"name":"hot","metric":"test.value","op":">","value":0.5}]}"#,
        );
        let error = propose(&mut rule).unwrap_err();
        assert_eq!(error.cause(), "internal", "{error}");
        // Neither call harmed the instances.
        assert!(propose(&mut policy).unwrap().unwrap().is_empty());
        assert_eq!(keys(rule.evaluate(&batch(&[("a", 1.0)])).unwrap()), ["s=a"]);
    }

    #[test]
    fn a_guest_panic_reports_its_message_and_output() {
        let runtime = runtime();
        let mut plugin = load(
            &runtime,
            MISBEHAVE,
            "misbehave",
            r#"{"mode":"panic","message":"the rule table is corrupt"}"#,
        );
        let error = plugin.evaluate(&batch(&[("a", 1.0)])).unwrap_err();
        let text = error.to_string();
        assert_eq!(error.cause(), "trap", "{text}");
        assert!(text.contains("unreachable"), "the trap itself: {text}");
        assert!(
            text.contains("the rule table is corrupt"),
            "the guest's message: {text}"
        );
        assert!(
            text.contains("misbehave: about to panic"),
            "its stdout: {text}"
        );
        let output = plugin.last_output().unwrap();
        assert!(output.contains("the rule table is corrupt"), "{output}");
    }

    #[test]
    fn error_chains_keep_every_cause_and_a_few_frames() {
        let frames: String = (0..30).map(|i| format!("\n    {i}: frame {i}")).collect();
        let error = wasmtime::Error::msg("wasm trap: unreachable")
            .context(format!("error while executing at wasm backtrace:{frames}"));
        let text = error_chain(&error);
        assert!(
            text.starts_with(
                "wasm trap: unreachable; error while executing at wasm backtrace\n  0: frame 0"
            ),
            "{text}"
        );
        assert!(
            text.contains("5: frame 5") && !text.contains("6: frame 6"),
            "{text}"
        );
        assert!(text.ends_with("... 24 more lines"), "{text}");
    }
}
