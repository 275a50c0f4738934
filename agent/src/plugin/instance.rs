//! One loaded plugin: its compiled component, type-checked against one of the contract
//! versions the agent accepts, and one long-lived instance that is restarted (keeping its
//! state) after a trap.

use std::path::{Path, PathBuf};
use std::time::Instant;

use wasmtime::{Engine, Store, Trap};

use super::bindings::{v0_1, v0_2};
use super::convert::{self, BatchSender, Interests};
use super::host::{PluginKv, PluginState};
use super::legacy;
use super::limits::PluginLimits;
use super::output::GuestOutput;
use super::runtime::PluginRuntime;
use super::{EvalError, LoadError};
use crate::model::{Batch, Finding};

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

/// What a plugin said about itself in `describe`, and the contract it was built against.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub interests: Vec<String>,
    /// The `vigil:plugin` contract version it implements, e.g. `0.2.0`.
    pub contract: String,
}

/// The component, pre-linked against the contract version it implements.
enum Pre {
    Current(v0_2::AlertRulePre<PluginState>),
    Legacy(v0_1::AlertRulePre<PluginState>),
}

impl Pre {
    /// Finds the contract version the component implements, newest first.
    fn new(pre: wasmtime::component::InstancePre<PluginState>) -> Result<Self, String> {
        let current = match v0_2::AlertRulePre::new(pre.clone()) {
            Ok(pre) => return Ok(Pre::Current(pre)),
            Err(e) => error_chain(&e),
        };
        match v0_1::AlertRulePre::new(pre) {
            Ok(pre) => Ok(Pre::Legacy(pre)),
            Err(legacy) => Err(format!(
                "as 0.2.0: {current}; as 0.1.0: {}",
                error_chain(&legacy)
            )),
        }
    }

    fn contract(&self) -> &'static str {
        match self {
            Pre::Current(_) => "0.2.0",
            Pre::Legacy(_) => "0.1.0",
        }
    }

    fn instantiate(&self, store: &mut Store<PluginState>) -> wasmtime::Result<Bindings> {
        Ok(match self {
            Pre::Current(pre) => Bindings::Current(pre.instantiate(store)?),
            Pre::Legacy(pre) => Bindings::Legacy(pre.instantiate(store)?),
        })
    }
}

/// A running instance's exports.
enum Bindings {
    Current(v0_2::AlertRule),
    Legacy(v0_1::AlertRule),
}

impl Bindings {
    fn describe(
        &self,
        store: &mut Store<PluginState>,
    ) -> wasmtime::Result<Result<v0_2::PluginInfo, String>> {
        match self {
            Bindings::Current(b) => b.call_describe(store),
            Bindings::Legacy(b) => Ok(b.call_describe(store)?.map(legacy::plugin_info)),
        }
    }
}

/// A batch as the plugin's contract version lays it out.
enum Input {
    Current(v0_2::Batch),
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
            pre,
            settings_json,
            limits: runtime.limits(),
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                interests: Vec::new(),
                contract: String::new(),
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
        plugin.interests = Interests::new(&info.interests);
        plugin.info = info;
        tracing::debug!(plugin = name, path = %path.display(), contract = plugin.pre.contract(), ?cache, elapsed_ms = started.elapsed().as_millis() as u64, "plugin compiled and started");
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

    /// What the plugin said about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// What the plugin wrote to stdout and stderr during its last call, if anything.
    pub fn last_output(&self) -> Option<&str> {
        self.last_output.as_deref()
    }

    /// Evaluates the part of `batch` the plugin wants. `Ok(None)`: nothing in it for this plugin.
    pub fn evaluate(&mut self, batch: &Batch) -> Result<Option<Vec<Finding>>, EvalError> {
        // A restart forgets which tables the instance holds, so restart before building the batch.
        self.ensure_live()?;
        let input = match &self.pre {
            Pre::Current(_) => self
                .sender
                .batch_for(batch, &self.interests)
                .map(Input::Current),
            Pre::Legacy(_) => legacy::batch_for(batch, &self.interests).map(Input::Legacy),
        };
        let Some(input) = input else {
            return Ok(None);
        };
        let output = self.call(|bindings, store| match (bindings, &input) {
            (Bindings::Current(b), Input::Current(batch)) => b.call_evaluate(store, batch),
            (Bindings::Legacy(b), Input::Legacy(batch)) => Ok(b
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
        store.set_epoch_deadline(self.limits.deadline_ticks());
        store.epoch_deadline_trap();
        let started = self.pre.instantiate(&mut store);
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
        live.store.set_epoch_deadline(self.limits.deadline_ticks());
        let result = f(&live.bindings, &mut live.store);
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
pub(crate) fn check_info(
    info: super::bindings::v0_2::vigil::plugin::types::PluginInfo,
) -> Result<PluginInfo, String> {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BatchBuilder, MetricDesc, MetricKind, attrs};
    use std::time::Duration;
    use vigil_testkit::plugins::{CONTRACT_V0_1, MISBEHAVE, THRESHOLD};

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
        assert_eq!(plugin.info().contract, "0.2.0");
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
