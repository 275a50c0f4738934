//! Every plugin of the plugin directory, loaded together and evaluated batch by batch.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::instance::PluginInstance;
use super::runtime::PluginRuntime;
use super::{EvalError, LoadError};
use crate::config::PluginsConfig;
use crate::model::{Batch, Finding};

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
}

/// The loaded plugins and the runtime they share.
pub struct PluginRegistry {
    runtime: PluginRuntime,
    plugins: Vec<PluginInstance>,
    failures: Vec<LoadFailure>,
}

/// The plugin files of `dir` (`*.wasm`), sorted, with the plugin name (file stem) of each.
pub fn plugin_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((name, path));
        }
    }
    files.sort();
    Ok(files)
}

impl PluginRegistry {
    /// Loads every plugin in `config.dir`. A file that fails to load is logged and
    /// recorded; it never stops the others. A missing directory means no plugins.
    pub fn load_dir(runtime: PluginRuntime, config: &PluginsConfig) -> Self {
        let mut registry = PluginRegistry {
            runtime,
            plugins: Vec::new(),
            failures: Vec::new(),
        };
        let files = match plugin_files(&config.dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(dir = %config.dir.display(), "no plugins loaded: cannot read the plugin directory: {e}");
                return registry;
            }
        };
        for (name, path) in files {
            registry.load_one(&name, &path, config.settings_json(&name));
        }
        for name in config.settings.keys() {
            if !registry.plugins.iter().any(|p| p.name() == name)
                && !registry.failures.iter().any(|f| &f.name == name)
            {
                tracing::warn!(plugin = %name, dir = %config.dir.display(), "settings given for plugin `{name}` but there is no {name}.wasm in the plugin directory");
            }
        }
        registry
    }

    /// Loads one plugin file, recording the failure if it does not load.
    pub fn load_one(&mut self, name: &str, path: &Path, settings_json: String) {
        match PluginInstance::load(&self.runtime, path, name, settings_json) {
            Ok(plugin) => {
                let info = plugin.info();
                tracing::info!(plugin = name, version = %info.version, interests = ?info.interests, "plugin loaded");
                self.plugins.push(plugin);
            }
            Err(error) => {
                tracing::error!(plugin = name, cause = error.cause(), "{error}");
                self.failures.push(LoadFailure {
                    name: name.to_owned(),
                    path: path.to_owned(),
                    error,
                });
            }
        }
    }

    /// The loaded plugins.
    pub fn plugins(&self) -> &[PluginInstance] {
        &self.plugins
    }

    /// The files that failed to load.
    pub fn failures(&self) -> &[LoadFailure] {
        &self.failures
    }

    /// Evaluates `batch` with every plugin, one after the other. A failing plugin is
    /// reported in its [`Evaluation`] and the others go on.
    pub fn evaluate(&mut self, batch: &Batch) -> Vec<Evaluation> {
        self.plugins
            .iter_mut()
            .map(|plugin| {
                let started = Instant::now();
                let outcome = plugin.evaluate(batch);
                Evaluation {
                    plugin: plugin.name().to_owned(),
                    duration: started.elapsed(),
                    outcome,
                }
            })
            .collect()
    }

    /// The runtime the plugins share.
    pub fn runtime(&self) -> &PluginRuntime {
        &self.runtime
    }
}
