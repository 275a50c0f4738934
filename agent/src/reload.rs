//! Changes while running: plugin files and the config file are reloaded between
//! evaluations, and a bad file never replaces a good one.

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::pipeline::Agent;
use crate::plugin::PluginInstance;
use crate::plugin::registry::{plugin_files, plugin_name};
use crate::telemetry::Event;
use crate::watch::Change;

/// Names of the collectors whose configuration differs between `old` and `new`
/// (added, removed or changed).
pub fn changed_collectors(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    if old.collect.system != new.collect.system {
        changed.push("system".to_owned());
    }
    for (kind, a, b) in [
        ("postgres", &old.collect.postgres, &new.collect.postgres),
        ("mysql", &old.collect.mysql, &new.collect.mysql),
        ("redis", &old.collect.redis, &new.collect.redis),
    ] {
        let names = a
            .iter()
            .chain(b.iter())
            .map(|i| i.name.clone())
            .collect::<std::collections::BTreeSet<_>>();
        for name in names {
            if a.iter().find(|i| i.name == name) != b.iter().find(|i| i.name == name) {
                changed.push(format!("{kind}:{name}"));
            }
        }
    }
    changed
}

/// The content of a file once it stops changing: editors and tools write in steps, and
/// a half-written config must never be applied. `None` when the file stays empty or unreadable.
async fn settled_text(path: &Path) -> Option<String> {
    const SETTLE: std::time::Duration = std::time::Duration::from_millis(50);
    let mut last = tokio::fs::read_to_string(path).await.ok();
    for _ in 0..40 {
        tokio::time::sleep(SETTLE).await;
        let now = tokio::fs::read_to_string(path).await.ok();
        if now == last {
            return now.filter(|t| !t.trim().is_empty());
        }
        last = now;
    }
    None
}

impl Agent {
    /// Loads the plugin file at `path` (added or changed) and swaps it in; a file that
    /// is gone unloads its plugin. A file that fails to load leaves the running version
    /// in place. Returns whether anything changed.
    pub async fn reload_plugin(self: &Arc<Self>, path: &Path) -> bool {
        let Some(name) = plugin_name(path) else {
            return false;
        };
        if !path.exists() {
            let removed = self.registry.remove(&name);
            if removed {
                tracing::info!(plugin = %name, "plugin file removed: plugin unloaded; its alerts are resolved with reason \"plugin removed\"");
                self.count(Event::PluginReloaded { plugin: &name });
                self.release_alerts(&name, "plugin removed");
            }
            return removed;
        }
        let settings = self
            .config
            .lock()
            .map(|c| c.plugins.settings_json(&name))
            .unwrap_or_else(|_| "{}".into());
        let Ok(bytes) = std::fs::read(path) else {
            return false;
        };
        let hash = crate::plugin::cache::content_hash(&bytes);
        let unchanged = self.registry.loaded_as(&name) == Some((hash, settings.clone()));
        if unchanged {
            return false;
        }
        let runtime = self.registry.runtime().clone();
        let (load_path, load_name) = (path.to_owned(), name.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            PluginInstance::from_bytes(&runtime, &load_path, &load_name, settings, &bytes)
        })
        .await;
        let Ok(loaded) = loaded else { return false };
        if let Err(error) = &loaded {
            self.count(Event::PluginLoadFailed {
                plugin: &name,
                cause: error.cause(),
            });
        }
        let installed = self.registry.apply_load(&name, path, loaded);
        if installed {
            self.count(Event::PluginReloaded { plugin: &name });
        }
        installed
    }

    /// Brings the loaded plugins in line with the plugin directory: new and changed
    /// files are loaded, plugins whose file is gone are unloaded.
    pub async fn rescan_plugins(self: &Arc<Self>) {
        let dir = match self.config.lock() {
            Ok(c) => c.plugins.dir.clone(),
            Err(_) => return,
        };
        let files = plugin_files(&dir).unwrap_or_default();
        let loaded = self.registry.names();
        for name in loaded {
            if !files.iter().any(|(n, _)| *n == name) {
                self.reload_plugin(&dir.join(format!("{name}.wasm"))).await;
            }
        }
        for (_, path) in files {
            self.reload_plugin(&path).await;
        }
    }

    /// Reads the config file again. An invalid file changes nothing (the error is
    /// logged); a valid one is applied: changed collectors restart, plugins whose
    /// settings changed are reloaded. Export and plugin-limit changes need a restart.
    pub async fn reload_config(self: &Arc<Self>) -> bool {
        let Some(path) = self.config_path.clone() else {
            return false;
        };
        let Some(text) = settled_text(&path).await else {
            tracing::warn!(config = %path.display(), "config file is empty or unreadable; ignored (the running config stays)");
            self.count(Event::ConfigReloaded { ok: false });
            return false;
        };
        let parsed = Config::from_file_text(&path, &text)
            .and_then(|mut c| c.apply_otel_env(|k| std::env::var(k).ok()).map(|()| c));
        let new = match parsed {
            Ok(new) => new,
            Err(error) => {
                tracing::error!("config reload refused, the running config stays: {error}");
                self.count(Event::ConfigReloaded { ok: false });
                return false;
            }
        };
        let old = match self.config.lock() {
            Ok(mut current) => std::mem::replace(&mut *current, new.clone()),
            Err(_) => return false,
        };
        if old == new {
            return true;
        }
        self.count(Event::ConfigReloaded { ok: true });
        if old.export != new.export
            || old.plugins.deadline != new.plugins.deadline
            || old.plugins.memory_limit_mib != new.plugins.memory_limit_mib
            || old.plugins.max_findings != new.plugins.max_findings
            || old.agent != new.agent
        {
            tracing::warn!(
                "config changes to [agent], [export] or plugin limits take effect after a restart"
            );
        }
        for name in changed_collectors(&old, &new) {
            self.restart_collector(&name, &new);
        }
        if old.plugins.dir != new.plugins.dir {
            self.rescan_plugins().await;
        } else {
            let names: std::collections::BTreeSet<&String> = old
                .plugins
                .settings
                .keys()
                .chain(new.plugins.settings.keys())
                .collect();
            for name in names {
                if old.plugins.settings.get(name) != new.plugins.settings.get(name) {
                    let path = new.plugins.dir.join(format!("{name}.wasm"));
                    if path.exists() {
                        tracing::info!(plugin = %name, "plugin settings changed: reloading the plugin");
                        self.reload_plugin(&path).await;
                    }
                }
            }
        }
        tracing::info!(config = %path.display(), "config reloaded");
        true
    }

    /// Applies one watched change.
    pub async fn apply(self: &Arc<Self>, change: Change) {
        match change {
            Change::Plugin(path) => {
                self.reload_plugin(&path).await;
            }
            Change::Config => {
                self.reload_config().await;
            }
        }
    }
}
