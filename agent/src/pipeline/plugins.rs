//! Plugin files while running: a new or changed file is loaded outside the plugin
//! set's lock and swapped in between evaluations; a file that fails to load never
//! replaces a running version; a removed file unloads its plugin.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Pipeline;
use crate::config::PluginsConfig;
use crate::plugin::PluginInstance;
use crate::plugin::registry::{plugin_files, plugin_name};
use crate::telemetry::Event;

impl Pipeline {
    /// Loads the plugin file at `path` (added or changed) with `settings` (JSON) and
    /// swaps it in; a file that is gone unloads its plugin. Returns whether anything changed.
    pub async fn reload_plugin(self: &Arc<Self>, path: &Path, settings: String) -> bool {
        self.load_file(path, settings, true).await
    }

    /// [`Pipeline::reload_plugin`]; an installed version counts as a reload when
    /// `count_reload` (not when the plugin directory is loaded at start).
    async fn load_file(
        self: &Arc<Self>,
        path: &Path,
        settings: String,
        count_reload: bool,
    ) -> bool {
        let Some(name) = plugin_name(path) else {
            return false;
        };
        // Loads never overlap: the last one always sees the latest file and settings.
        let _one_at_a_time = self.plugin_loads.lock().await;
        if !path.exists() {
            return self.unload_plugin(&name);
        }
        let Ok(bytes) = std::fs::read(path) else {
            return false;
        };
        let hash = crate::plugin::cache::content_hash(&bytes);
        // Loaded already, or failed already (and said so): nothing new to do or to log.
        let version = Some((hash.clone(), settings.clone()));
        if self.plugins.loaded_as(&name) == version || self.plugins.failed_as(&name) == version {
            return false;
        }
        let runtime = self.plugins.runtime().clone();
        let (load_path, load_name, load_settings) =
            (path.to_owned(), name.clone(), settings.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            PluginInstance::from_bytes(&runtime, &load_path, &load_name, load_settings, &bytes)
        })
        .await;
        crate::resident::release_freed_memory();
        let Ok(loaded) = loaded else { return false };
        if let Err(error) = &loaded {
            self.count(Event::PluginLoadFailed {
                plugin: &name,
                cause: error.cause(),
            });
        }
        let failed = loaded.is_err();
        let installed = self.plugins.apply_load(&name, path, loaded);
        if failed {
            self.plugins.remember_failed(&name, hash, settings);
        }
        if installed && count_reload {
            self.count(Event::PluginReloaded { plugin: &name });
        }
        installed
    }

    /// Unloads plugin `name` and resolves its alerts; returns whether it was loaded.
    fn unload_plugin(&self, name: &str) -> bool {
        let removed = self.plugins.remove(name);
        if removed {
            tracing::info!(plugin = %name, "plugin file removed: plugin unloaded; its alerts are resolved with reason \"plugin removed\"");
            self.count(Event::PluginReloaded { plugin: name });
            self.release_alerts(name, "plugin removed");
        }
        removed
    }

    /// Brings the loaded plugins in line with `config.dir`: new and changed files are
    /// loaded, plugins whose file is gone are unloaded.
    pub async fn rescan_plugins(self: &Arc<Self>, config: &PluginsConfig) {
        let files = plugin_files(&config.dir).unwrap_or_default();
        self.scan(config, files, true).await;
    }

    /// Loads every plugin of `config.dir` (at start, while the agent already answers
    /// `/status`): like a rescan, and a warning names each plugin whose settings have no
    /// file. A file that fails to load is logged and never stops the others.
    pub async fn load_plugins(self: &Arc<Self>, config: &PluginsConfig) {
        let files = match plugin_files(&config.dir) {
            Ok(files) => files,
            // A directory that does not exist yet is said once, at start, by the supervisor.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(dir = %config.dir.display(), "no plugin directory: {e}");
                return;
            }
            Err(e) => {
                tracing::warn!(dir = %config.dir.display(), "no plugins loaded: cannot read the plugin directory: {e}");
                return;
            }
        };
        self.scan(config, files, false).await;
        // In-process compilation writes the cache in the background: the next start
        // should find every entry.
        let runtime = self.plugins.runtime().clone();
        let _ = tokio::task::spawn_blocking(move || runtime.cache().finish_writes()).await;
        let (loaded, failed) = (self.plugins.names(), self.plugins.failures());
        for name in config.settings.keys() {
            if !loaded.contains(name) && !failed.iter().any(|f| f.name == *name) {
                tracing::warn!(plugin = %name, dir = %config.dir.display(), "settings given for plugin `{name}` but there is no {name}.wasm in the plugin directory");
            }
        }
        tracing::info!(
            loaded = loaded.len(),
            failed = failed.len(),
            dir = %config.dir.display(),
            "plugin directory loaded"
        );
    }

    /// Unloads the plugins whose file is not in `files`, then loads each file that is
    /// new or changed, counting the files still to do for `/status`. Versions
    /// installed count as reloads when `count_reloads`.
    async fn scan(
        self: &Arc<Self>,
        config: &PluginsConfig,
        files: Vec<(String, PathBuf)>,
        count_reloads: bool,
    ) {
        let loaded = self.plugins.names();
        for name in loaded {
            if !files.iter().any(|(n, _)| *n == name) {
                self.unload_plugin(&name);
            }
        }
        self.plugins_loading
            .fetch_add(files.len(), Ordering::Relaxed);
        for (name, path) in files {
            self.load_file(&path, config.settings_json(&name), count_reloads)
                .await;
            self.plugins_loading.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Applies a changed `[plugins]` section: a new directory is rescanned; otherwise
    /// each plugin whose settings changed is reloaded with its new settings.
    pub async fn apply_plugin_config(self: &Arc<Self>, old: &PluginsConfig, new: &PluginsConfig) {
        if old.dir != new.dir {
            self.rescan_plugins(new).await;
            return;
        }
        let names: std::collections::BTreeSet<&String> =
            old.settings.keys().chain(new.settings.keys()).collect();
        for name in names {
            if old.settings.get(name) != new.settings.get(name) {
                let path = Self::plugin_path(&new.dir, name);
                if path.exists() {
                    tracing::info!(plugin = %name, "plugin settings changed: reloading the plugin");
                    self.reload_plugin(&path, new.settings_json(name)).await;
                }
            }
        }
    }
}
