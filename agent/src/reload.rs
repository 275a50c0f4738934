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

/// The config file's text, read once (the watcher reports a file once it has been quiet).
/// `None` when the file is empty or unreadable.
async fn config_text(path: &Path) -> Option<String> {
    tokio::fs::read_to_string(path)
        .await
        .ok()
        .filter(|t| !t.trim().is_empty())
}

/// What identifies one failure of one version of the config: the same text failing the
/// same way is logged once.
fn failure_key(text: &str, error: &str) -> String {
    format!(
        "{}:{error}",
        crate::plugin::cache::content_hash(text.as_bytes())
    )
}

impl Agent {
    /// Loads the plugin file at `path` (added or changed) and swaps it in; a file that
    /// is gone unloads its plugin. A file that fails to load leaves the running version
    /// in place. Returns whether anything changed.
    pub async fn reload_plugin(self: &Arc<Self>, path: &Path) -> bool {
        let Some(name) = plugin_name(path) else {
            return false;
        };
        let _one_at_a_time = self.plugin_loads.lock().await;
        if !path.exists() {
            let removed = self
                .registry
                .lock()
                .map(|mut r| r.remove(&name))
                .unwrap_or(false);
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
        // Loaded already, or failed already (and said so): nothing new to do or to log.
        let seen = self
            .registry
            .lock()
            .map(|r| {
                let version = Some((hash.as_str(), settings.as_str()));
                r.loaded_as(&name) == version || r.failed_as(&name) == version
            })
            .unwrap_or(false);
        if seen {
            return false;
        }
        let runtime = match self.registry.lock() {
            Ok(r) => r.runtime().clone(),
            Err(_) => return false,
        };
        let (load_path, load_name, load_settings) =
            (path.to_owned(), name.clone(), settings.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            PluginInstance::from_bytes(&runtime, &load_path, &load_name, load_settings, &bytes)
        })
        .await;
        let Ok(loaded) = loaded else { return false };
        if let Err(error) = &loaded {
            self.count(Event::PluginLoadFailed {
                plugin: &name,
                cause: error.cause(),
            });
        }
        let installed = self
            .registry
            .lock()
            .map(|mut r| {
                let failed = loaded.is_err();
                let installed = r.apply_load(&name, path, loaded);
                if failed {
                    r.remember_failed(&name, hash, settings);
                }
                installed
            })
            .unwrap_or(false);
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
        let loaded = self.registry.lock().map(|r| r.names()).unwrap_or_default();
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
        let Some(text) = config_text(&path).await else {
            if self.first_config_failure(failure_key("", "empty")) {
                tracing::warn!(config = %path.display(), "config file is empty or unreadable; ignored (the running config stays)");
                self.count(Event::ConfigReloaded { ok: false });
            }
            return false;
        };
        let parsed = Config::from_file_text(&path, &text)
            .and_then(|mut c| c.apply_otel_env(|k| std::env::var(k).ok()).map(|()| c));
        let new = match parsed {
            Ok(new) => new,
            Err(error) => {
                if self.first_config_failure(failure_key(&text, &error.to_string())) {
                    tracing::error!("config reload refused, the running config stays: {error}");
                    self.count(Event::ConfigReloaded { ok: false });
                }
                return false;
            }
        };
        self.forget_config_failure();
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

    /// Whether the config failure `key` is new (and so to be logged); remembers it.
    fn first_config_failure(&self, key: String) -> bool {
        self.config_failure
            .lock()
            .map(|mut last| last.replace(key.clone()) != Some(key))
            .unwrap_or(true)
    }

    /// Forgets the last config failure: the next one is logged even if it is the same.
    pub fn forget_config_failure(&self) {
        if let Ok(mut last) = self.config_failure.lock() {
            *last = None;
        }
    }

    /// Starts the reload workers: one for the config, one for plugin files, so a slow
    /// config reload never delays a plugin change and the other way round.
    pub fn start_reloads(self: &Arc<Self>) -> Reloads {
        let (config_tx, mut config_rx) = tokio::sync::mpsc::unbounded_channel::<ConfigJob>();
        let (plugins_tx, mut plugins_rx) = tokio::sync::mpsc::unbounded_channel::<PluginJob>();
        let agent = self.clone();
        let rescan = plugins_tx.clone();
        let config = tokio::spawn(async move {
            while let Some(job) = config_rx.recv().await {
                match job {
                    ConfigJob::Changed => {
                        agent.reload_config().await;
                    }
                    ConfigJob::Requested => {
                        // Asked for explicitly: a failure is logged again even if it is the same.
                        agent.forget_config_failure();
                        agent.reload_config().await;
                        let _ = rescan.send(PluginJob::Rescan);
                    }
                }
            }
        });
        let agent = self.clone();
        let plugins = tokio::spawn(async move {
            while let Some(job) = plugins_rx.recv().await {
                match job {
                    PluginJob::File(path) => {
                        agent.reload_plugin(&path).await;
                    }
                    PluginJob::Rescan => agent.rescan_plugins().await,
                }
            }
        });
        Reloads {
            config: config_tx,
            plugins: plugins_tx,
            tasks: [config, plugins],
        }
    }
}

/// Work for the config reload worker.
enum ConfigJob {
    /// The watcher saw the file change.
    Changed,
    /// SIGHUP, `POST /reload` or `vigil reload`: reload, then rescan the plugin directory.
    Requested,
}

/// Work for the plugin reload worker.
enum PluginJob {
    File(std::path::PathBuf),
    Rescan,
}

/// The running reload workers; dropping this stops them.
pub struct Reloads {
    config: tokio::sync::mpsc::UnboundedSender<ConfigJob>,
    plugins: tokio::sync::mpsc::UnboundedSender<PluginJob>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Reloads {
    /// Queues one watched change for its worker.
    pub fn apply(&self, change: Change) {
        // A worker only stops when the agent stops: nothing to do then.
        match change {
            Change::Plugin(path) => {
                let _ = self.plugins.send(PluginJob::File(path));
            }
            Change::Config => {
                let _ = self.config.send(ConfigJob::Changed);
            }
        }
    }

    /// Queues a requested reload (config, then a rescan of the plugin directory).
    pub fn request(&self) {
        let _ = self.config.send(ConfigJob::Requested);
    }
}

impl Drop for Reloads {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
