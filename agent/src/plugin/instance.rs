//! One loaded plugin: its compiled component, type-checked against the world,
//! and one long-lived instance that is restarted (keeping its state) after a trap.

use std::path::{Path, PathBuf};
use std::time::Instant;

use wasmtime::{Engine, Store, Trap};

use super::bindings::{AlertRule, AlertRulePre};
use super::convert::{self, Interests};
use super::host::{PluginKv, PluginState};
use super::limits::PluginLimits;
use super::runtime::PluginRuntime;
use super::{EvalError, LoadError};
use crate::model::{Batch, Finding};

/// Longest plugin name or version a plugin may report.
const MAX_INFO_BYTES: usize = 128;
/// Most interest patterns a plugin may declare.
const MAX_INTERESTS: usize = 1024;

/// What a plugin said about itself in `describe`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub interests: Vec<String>,
}

/// A running instance and its store.
struct Live {
    store: Store<PluginState>,
    bindings: AlertRule,
}

/// A plugin loaded from a file, ready to evaluate batches.
pub struct PluginInstance {
    name: String,
    path: PathBuf,
    engine: Engine,
    pre: AlertRulePre<PluginState>,
    settings_json: String,
    limits: PluginLimits,
    info: PluginInfo,
    interests: Interests,
    live: Option<Live>,
    /// State kept while no instance is live (between a trap and the restart).
    parked_kv: PluginKv,
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
            reason: root_cause(&e),
        })?;
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
            path: path.to_owned(),
            reason: root_cause(&e),
        };
        let pre = runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre = AlertRulePre::new(pre).map_err(wrong_world)?;

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
            },
            interests: Interests::default(),
            live: None,
            parked_kv: PluginKv::default(),
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
            .call(|bindings, store| bindings.call_describe(store))
            .map_err(|e| describe_error(e.to_string()))?
            .map_err(|e| describe_error(format!("the plugin says: {e}")))?;
        let info = check_info(info).map_err(describe_error)?;
        plugin.interests = Interests::new(&info.interests);
        plugin.info = info;
        plugin.dry_run().map_err(|reason| LoadError::DryRun {
            path: path.to_owned(),
            reason,
        })?;
        tracing::debug!(plugin = name, path = %path.display(), ?cache, elapsed_ms = started.elapsed().as_millis() as u64, "plugin compiled and started");
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

    /// Evaluates the part of `batch` the plugin wants. `Ok(None)`: nothing in it for this plugin.
    pub fn evaluate(&mut self, batch: &Batch) -> Result<Option<Vec<Finding>>, EvalError> {
        let Some(input) = convert::batch_for(batch, &self.interests) else {
            return Ok(None);
        };
        let output = self.call(|bindings, store| bindings.call_evaluate(store, &input))?;
        let found = output.map_err(|reason| EvalError::Reported {
            plugin: self.name.clone(),
            reason,
        })?;
        convert::findings_from(found, self.limits.max_findings)
            .map(Some)
            .map_err(|reason| EvalError::InvalidOutput {
                plugin: self.name.clone(),
                reason,
            })
    }

    /// Evaluates an empty batch: a plugin that traps, hangs or exhausts memory on it is refused.
    fn dry_run(&mut self) -> Result<(), String> {
        let empty = super::bindings::vigil::plugin::types::Batch {
            source: "vigil:dry-run".into(),
            host: String::new(),
            timestamp_ns: 0,
            metrics: Vec::new(),
            series: Vec::new(),
            values: Vec::new(),
        };
        match self.call(|bindings, store| bindings.call_evaluate(store, &empty)) {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Starts a fresh instance, handing it the plugin's state.
    fn start(&mut self) -> Result<(), String> {
        let kv = std::mem::take(&mut self.parked_kv);
        let state = PluginState::new(
            self.name.clone(),
            self.settings_json.clone(),
            kv,
            self.limits.memory_bytes,
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s.limiter_mut());
        store.set_epoch_deadline(self.limits.deadline_ticks());
        store.epoch_deadline_trap();
        match self.pre.instantiate(&mut store) {
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

    /// Calls into the instance under the deadline; a trap retires the instance
    /// (a trapped component cannot be entered again) and the next call restarts it.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&AlertRule, &mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, EvalError> {
        if self.live.is_none() {
            self.start().map_err(|reason| EvalError::Restart {
                plugin: self.name.clone(),
                reason,
            })?;
        }
        let Some(live) = self.live.as_mut() else {
            return Err(EvalError::Restart {
                plugin: self.name.clone(),
                reason: "no instance".into(),
            });
        };
        live.store.set_epoch_deadline(self.limits.deadline_ticks());
        let result = f(&live.bindings, &mut live.store);
        match result {
            Ok(value) => Ok(value),
            Err(error) => {
                let memory_exceeded = live.store.data().limiter().memory_exceeded;
                if let Some(live) = self.live.take() {
                    self.parked_kv = live.store.into_data().into_kv();
                }
                Err(self.classify(error, memory_exceeded))
            }
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
            EvalError::Trap {
                plugin,
                reason: root_cause(&error),
            }
        }
    }
}

/// The first line of an error chain's deepest cause plus its context, kept short.
fn root_cause(error: &wasmtime::Error) -> String {
    let mut text = format!("{error:#}");
    if let Some(line_end) = text.find('\n') {
        text.truncate(line_end);
    }
    if text.len() > 500 {
        let mut cut = 500;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Checks what a plugin returned from `describe` (name, version, interests) before the
/// host relies on it.
pub(crate) fn check_info(
    info: super::bindings::vigil::plugin::types::PluginInfo,
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
    })
}
