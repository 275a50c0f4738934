//! Every plugin of the plugin directory, by name: evaluated together, replaced one at a
//! time (the new version is loaded and validated first, then swapped in between
//! evaluations, inheriting the old version's state), and quarantined with exponential
//! back-off after repeated failures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::instance::PluginInstance;
use super::runtime::PluginRuntime;
use super::{EvalError, LoadError};
use crate::config::PluginsConfig;
use crate::model::{Batch, Finding};

/// First quarantine period; each further quarantine doubles it, up to [`QUARANTINE_MAX`].
pub const QUARANTINE_MIN: Duration = Duration::from_secs(5);
/// Longest quarantine period.
pub const QUARANTINE_MAX: Duration = Duration::from_secs(300);

/// A plugin file that could not be loaded.
#[derive(Debug)]
pub struct LoadFailure {
    pub name: String,
    pub path: PathBuf,
    pub error: LoadError,
}

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

/// A loaded plugin and its health.
struct Slot {
    instance: PluginInstance,
    consecutive_failures: u32,
    quarantined_until: Option<Instant>,
    quarantines: u32,
}

impl Slot {
    fn new(instance: PluginInstance) -> Self {
        Slot {
            instance,
            consecutive_failures: 0,
            quarantined_until: None,
            quarantines: 0,
        }
    }
}

/// What a plugin looks like from outside, for status and telemetry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub version: String,
    pub content_hash: String,
    pub quarantined: bool,
    pub consecutive_failures: u32,
    pub memory_bytes: usize,
}

/// The loaded plugins and the runtime they share.
pub struct PluginRegistry {
    runtime: Arc<PluginRuntime>,
    slots: BTreeMap<String, Slot>,
    failures: BTreeMap<String, LoadFailure>,
    /// The content hash and settings of the latest version of each plugin that failed to load.
    failed_versions: BTreeMap<String, (String, String)>,
    quarantine_after: u32,
}

/// The plugin files of `dir` (`*.wasm`), sorted, with the plugin name (file stem) of each.
pub fn plugin_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file()
            && let Some(name) = plugin_name(&path)
        {
            files.push((name, path));
        }
    }
    files.sort();
    Ok(files)
}

/// The plugin name of a path (`NAME.wasm`), or `None` for any other file.
pub fn plugin_name(path: &Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    let name = path.file_stem()?.to_string_lossy().into_owned();
    (!name.is_empty() && !name.starts_with('.')).then_some(name)
}

impl PluginRegistry {
    /// An empty registry over `runtime`.
    pub fn new(runtime: Arc<PluginRuntime>, quarantine_after: u32) -> Self {
        PluginRegistry {
            runtime,
            slots: BTreeMap::new(),
            failures: BTreeMap::new(),
            failed_versions: BTreeMap::new(),
            quarantine_after: quarantine_after.max(1),
        }
    }

    /// Loads every plugin in `config.dir`. A file that fails to load is logged and
    /// recorded; it never stops the others. A missing directory means no plugins.
    pub fn load_dir(runtime: Arc<PluginRuntime>, config: &PluginsConfig) -> Self {
        let mut registry = PluginRegistry::new(runtime, config.quarantine_after);
        let files = match plugin_files(&config.dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(dir = %config.dir.display(), "no plugins loaded: cannot read the plugin directory: {e}");
                return registry;
            }
        };
        for (name, path) in files {
            let settings = config.settings_json(&name);
            let loaded = PluginInstance::load(&registry.runtime, &path, &name, settings.clone());
            if !registry.apply_load(&name, &path, loaded)
                && let Ok(bytes) = std::fs::read(&path)
            {
                // Logged once: a rescan of the same file says nothing more.
                let hash = super::cache::content_hash(&bytes);
                registry.remember_failed(&name, hash, settings);
            }
        }
        // Startup may wait for the disk: the next start should find every entry.
        registry.runtime.cache.finish_writes();
        for name in config.settings.keys() {
            if !registry.slots.contains_key(name) && !registry.failures.contains_key(name) {
                tracing::warn!(plugin = %name, dir = %config.dir.display(), "settings given for plugin `{name}` but there is no {name}.wasm in the plugin directory");
            }
        }
        registry
    }

    /// Installs a loaded plugin, or records why it did not load (keeping any running
    /// version). Returns whether the plugin was installed.
    pub fn apply_load(
        &mut self,
        name: &str,
        path: &Path,
        loaded: Result<PluginInstance, LoadError>,
    ) -> bool {
        match loaded {
            Ok(instance) => {
                let info = instance.info();
                tracing::info!(plugin = name, version = %info.version, interests = ?info.interests, "plugin loaded");
                self.install(instance);
                true
            }
            Err(error) => {
                if self.slots.contains_key(name) {
                    tracing::error!(
                        plugin = name,
                        cause = error.cause(),
                        "{error}; the running version stays"
                    );
                } else {
                    tracing::error!(plugin = name, cause = error.cause(), "{error}");
                }
                self.failures.insert(
                    name.to_owned(),
                    LoadFailure {
                        name: name.to_owned(),
                        path: path.to_owned(),
                        error,
                    },
                );
                false
            }
        }
    }

    /// Puts `instance` in place of any plugin of the same name; it inherits that plugin's state.
    pub fn install(&mut self, mut instance: PluginInstance) {
        let name = instance.name().to_owned();
        if let Some(mut old) = self.slots.remove(&name) {
            instance.adopt_state(old.instance.take_state());
        }
        self.failures.remove(&name);
        self.failed_versions.remove(&name);
        self.slots.insert(name, Slot::new(instance));
    }

    /// Unloads plugin `name`; returns whether it was loaded.
    pub fn remove(&mut self, name: &str) -> bool {
        self.failures.remove(name);
        self.failed_versions.remove(name);
        self.slots.remove(name).is_some()
    }

    /// The content hash and settings of plugin `name` as loaded, if it is.
    pub fn loaded_as(&self, name: &str) -> Option<(&str, &str)> {
        self.slots
            .get(name)
            .map(|s| (s.instance.content_hash(), s.instance.settings_json()))
    }

    /// Remembers that the version of plugin `name` with `content_hash` and `settings`
    /// failed to load (and was logged), so the same version is not loaded and logged again.
    pub fn remember_failed(&mut self, name: &str, content_hash: String, settings: String) {
        self.failed_versions
            .insert(name.to_owned(), (content_hash, settings));
    }

    /// The content hash and settings of the latest version of plugin `name` that failed to load.
    pub fn failed_as(&self, name: &str) -> Option<(&str, &str)> {
        self.failed_versions
            .get(name)
            .map(|(hash, settings)| (hash.as_str(), settings.as_str()))
    }

    /// Names of the loaded plugins.
    pub fn names(&self) -> Vec<String> {
        self.slots.keys().cloned().collect()
    }

    /// Number of loaded plugins (quarantined ones included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no plugin is loaded.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The files that failed to load (latest failure per name).
    pub fn failures(&self) -> impl Iterator<Item = &LoadFailure> {
        self.failures.values()
    }

    /// Status of every loaded plugin.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        let now = Instant::now();
        self.slots
            .iter()
            .map(|(name, slot)| PluginStatus {
                name: name.clone(),
                version: slot.instance.info().version.clone(),
                content_hash: slot.instance.content_hash().to_owned(),
                quarantined: slot.quarantined_until.is_some_and(|until| until > now),
                consecutive_failures: slot.consecutive_failures,
                memory_bytes: slot.instance.memory_bytes(),
            })
            .collect()
    }

    /// Evaluates `batch` with every plugin not in quarantine, one after the other. A
    /// failing plugin is reported in its [`Evaluation`] and the others go on.
    pub fn evaluate(&mut self, batch: &Batch) -> Vec<Evaluation> {
        let quarantine_after = self.quarantine_after;
        let mut evaluations = Vec::new();
        for (name, slot) in &mut self.slots {
            let now = Instant::now();
            if slot.quarantined_until.is_some_and(|until| until > now) {
                continue;
            }
            let started = Instant::now();
            let outcome = slot.instance.evaluate(batch);
            let mut quarantined_for = None;
            match &outcome {
                Ok(_) => {
                    slot.consecutive_failures = 0;
                    if slot.quarantined_until.take().is_some() {
                        tracing::info!(plugin = %name, "plugin left quarantine: its evaluation succeeded");
                    }
                }
                Err(_) => {
                    slot.consecutive_failures += 1;
                    // A plugin on probation after a quarantine goes straight back in.
                    if slot.consecutive_failures >= quarantine_after
                        || slot.quarantined_until.is_some()
                    {
                        let period = QUARANTINE_MIN
                            .saturating_mul(1u32 << slot.quarantines.min(10))
                            .min(QUARANTINE_MAX);
                        slot.quarantines += 1;
                        slot.quarantined_until = Some(Instant::now() + period);
                        quarantined_for = Some(period);
                    }
                }
            }
            evaluations.push(Evaluation {
                plugin: name.clone(),
                duration: started.elapsed(),
                outcome,
                quarantined_for,
            });
        }
        evaluations
    }

    /// The runtime the plugins share.
    pub fn runtime(&self) -> &Arc<PluginRuntime> {
        &self.runtime
    }
}
