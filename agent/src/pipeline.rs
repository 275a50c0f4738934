//! Wires the stages together: collectors -> plugins -> alert state machine -> exporter,
//! and applies changes while running: plugin files and the config file are reloaded
//! between evaluations, and a bad file never replaces a good one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::task::AbortHandle;

use crate::alert::{AlertBook, AlertEvent};
use crate::collect::Collector;
use crate::collect::system::SystemCollector;
use crate::config::Config;
use crate::export::alertmanager::{AlertmanagerError, AlertmanagerSink};
use crate::export::{ExportError, OtlpExporter};
use crate::model::Batch;
use crate::plugin::registry::{plugin_files, plugin_name};
use crate::plugin::{PluginInstance, PluginRegistry, PluginRuntime};
use crate::telemetry::{Event, SelfTelemetry};
use crate::watch::Change;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("cannot start the plugin runtime: {0}")]
    Runtime(String),
    #[error(transparent)]
    Collect(#[from] crate::collect::CollectError),
    #[error(transparent)]
    Alertmanager(#[from] AlertmanagerError),
}

/// The running agent's shared stages.
pub struct Agent {
    host: String,
    config_path: Option<PathBuf>,
    config: Mutex<Config>,
    exporter: OtlpExporter,
    /// Delivery of firing and resolved alerts to Alertmanager, when configured.
    alertmanager: Option<AlertmanagerSink>,
    registry: Mutex<PluginRegistry>,
    alerts: Mutex<AlertBook>,
    telemetry: Arc<Mutex<SelfTelemetry>>,
    collectors: Mutex<HashMap<String, AbortHandle>>,
}

/// The host name: configured, or the machine's.
pub fn host_name(config: &Config) -> String {
    config
        .agent
        .host
        .clone()
        .or_else(|| sysinfo::System::host_name().ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn setup_error(message: String) -> StartError {
    StartError::Collect(crate::collect::CollectError::Failed {
        collector: "setup".into(),
        message,
    })
}

/// Every collector `config` asks for, by name.
pub fn build_collectors(
    config: &Config,
    host: &str,
) -> Result<Vec<Box<dyn Collector>>, StartError> {
    let mut collectors: Vec<Box<dyn Collector>> = Vec::new();
    if config.collect.system.enabled {
        collectors.push(Box::new(SystemCollector::new(
            config.collect.system.clone(),
            host.to_owned(),
        )?));
    }
    for instance in &config.collect.postgres {
        collectors.push(Box::new(
            crate::collect::postgres::collector(instance, host.to_owned()).map_err(setup_error)?,
        ));
    }
    for instance in &config.collect.mysql {
        collectors.push(Box::new(
            crate::collect::mysql::collector(instance, host.to_owned()).map_err(setup_error)?,
        ));
    }
    for instance in &config.collect.redis {
        collectors.push(Box::new(
            crate::collect::redis::collector(instance, host.to_owned()).map_err(setup_error)?,
        ));
    }
    Ok(collectors)
}

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
    /// Sets up export, loads the plugins and builds the collectors. Must run inside Tokio.
    pub async fn start(
        config: &Config,
        config_path: Option<&Path>,
    ) -> Result<(Arc<Agent>, Vec<Box<dyn Collector>>), StartError> {
        let host = host_name(config);
        let exporter = if config.export.otlp.enabled {
            OtlpExporter::new(&config.export.otlp, &host)?
        } else {
            OtlpExporter::disabled()
        };
        let plugins_config = config.plugins.clone();
        let registry = tokio::task::spawn_blocking(move || {
            let runtime = PluginRuntime::from_config(&plugins_config)
                .map_err(|e| StartError::Runtime(e.to_string()))?;
            Ok::<_, StartError>(PluginRegistry::load_dir(Arc::new(runtime), &plugins_config))
        })
        .await
        .map_err(|e| StartError::Runtime(e.to_string()))??;

        let mut telemetry = SelfTelemetry::default();
        for failure in registry.failures() {
            telemetry.emit(Event::PluginLoadFailed {
                plugin: &failure.name,
                cause: failure.error.cause(),
            });
        }
        let telemetry = Arc::new(Mutex::new(telemetry));
        let alertmanager = match &config.export.alertmanager {
            Some(am) => {
                let generator_url = am
                    .generator_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{host}/"));
                Some(AlertmanagerSink::start(
                    am,
                    &host,
                    generator_url,
                    telemetry.clone(),
                )?)
            }
            None => None,
        };
        let collectors = build_collectors(config, &host)?;
        let agent = Arc::new(Agent {
            host,
            config_path: config_path.map(Path::to_owned),
            config: Mutex::new(config.clone()),
            exporter,
            alertmanager,
            registry: Mutex::new(registry),
            alerts: Mutex::new(AlertBook::default()),
            telemetry,
            collectors: Mutex::new(HashMap::new()),
        });
        Ok((agent, collectors))
    }

    /// Runs one collection round of `collector` through the pipeline.
    pub async fn tick(self: &Arc<Self>, collector: &mut dyn Collector) {
        let started = Instant::now();
        match collector.collect().await {
            Ok(batch) => {
                self.count(Event::Collected {
                    collector: collector.name(),
                    duration: started.elapsed(),
                    points: batch.len(),
                });
                self.process(batch).await;
            }
            Err(error) => {
                tracing::warn!(collector = collector.name(), "{error}");
                self.count(Event::CollectFailed {
                    collector: collector.name(),
                });
                self.record_self_telemetry();
            }
        }
    }

    /// Exports `batch`, evaluates it with every plugin and turns findings into alert events.
    pub async fn process(self: &Arc<Self>, batch: Batch) {
        self.exporter.record(&batch);
        let agent = self.clone();
        let batch = Arc::new(batch);
        let for_plugins = batch.clone();
        let evaluations = tokio::task::spawn_blocking(move || match agent.registry.lock() {
            Ok(mut registry) => registry.evaluate(&for_plugins),
            Err(_) => Vec::new(),
        })
        .await
        .unwrap_or_default();

        for evaluation in evaluations {
            self.exporter
                .record_evaluation(&evaluation.plugin, evaluation.duration);
            let findings = match evaluation.outcome {
                Ok(None) => continue,
                Ok(Some(findings)) => findings,
                Err(error) => {
                    tracing::warn!(plugin = %evaluation.plugin, cause = error.cause(), "{error}");
                    self.count(Event::PluginFailed {
                        plugin: &evaluation.plugin,
                        cause: error.cause(),
                    });
                    if let Some(period) = evaluation.quarantined_for {
                        tracing::warn!(plugin = %evaluation.plugin, "plugin {} quarantined for {period:?} after repeated failures; its alerts are resolved with reason \"plugin quarantined\"", evaluation.plugin);
                        self.count(Event::PluginQuarantined {
                            plugin: &evaluation.plugin,
                        });
                        self.release_alerts(&evaluation.plugin, "plugin quarantined");
                    }
                    continue;
                }
            };
            self.count(Event::PluginEvaluated {
                plugin: &evaluation.plugin,
                duration: evaluation.duration,
            });
            let events = match self.alerts.lock() {
                Ok(mut book) => book.apply(
                    &evaluation.plugin,
                    &batch.source,
                    &findings,
                    batch.timestamp,
                ),
                Err(_) => Vec::new(),
            };
            self.emit_alerts(&events);
        }
        self.record_self_telemetry();
    }

    fn emit_alerts(&self, events: &[AlertEvent]) {
        for event in events {
            tracing::info!(
                plugin = %event.alert.key.plugin,
                rule = %event.alert.key.rule,
                key = %event.alert.key.key,
                state = event.transition.as_str(),
                reason = event.reason.as_deref().unwrap_or(""),
                "alert {}: {}",
                event.transition.as_str(),
                event.alert.summary
            );
            self.exporter.emit_alert(event);
            if let Some(alertmanager) = &self.alertmanager {
                alertmanager.send(event);
            }
        }
    }

    fn release_alerts(&self, plugin: &str, reason: &str) {
        let events = match self.alerts.lock() {
            Ok(mut book) => book.release_plugin(plugin, reason, SystemTime::now()),
            Err(_) => Vec::new(),
        };
        self.emit_alerts(&events);
    }

    fn count(&self, event: Event<'_>) {
        if let Ok(mut telemetry) = self.telemetry.lock() {
            telemetry.emit(event);
        }
    }

    fn record_self_telemetry(&self) {
        let firing = self
            .alerts
            .lock()
            .map(|book| book.firing_by_severity().to_vec())
            .unwrap_or_default();
        let plugins = self
            .registry
            .lock()
            .map(|r| r.statuses())
            .unwrap_or_default();
        let batch = match self.telemetry.lock() {
            Ok(telemetry) => telemetry.batch(&self.host, &firing, &plugins),
            Err(_) => return,
        };
        self.exporter.record(&batch);
    }

    /// Successful evaluations of `plugin` so far.
    pub fn evaluations(&self, plugin: &str) -> u64 {
        self.telemetry
            .lock()
            .map(|t| t.evaluations(plugin))
            .unwrap_or(0)
    }

    /// Status of every loaded plugin (version, content hash, quarantine, memory).
    pub fn plugin_statuses(&self) -> Vec<crate::plugin::PluginStatus> {
        self.registry
            .lock()
            .map(|r| r.statuses())
            .unwrap_or_default()
    }

    /// Loads the plugin file at `path` (added or changed) and swaps it in; a file that
    /// is gone unloads its plugin. A file that fails to load leaves the running version
    /// in place. Returns whether anything changed.
    pub async fn reload_plugin(self: &Arc<Self>, path: &Path) -> bool {
        let Some(name) = plugin_name(path) else {
            return false;
        };
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
        let unchanged = self
            .registry
            .lock()
            .map(|r| r.loaded_as(&name) == Some((hash.as_str(), settings.as_str())))
            .unwrap_or(false);
        if unchanged {
            return false;
        }
        let runtime = match self.registry.lock() {
            Ok(r) => r.runtime().clone(),
            Err(_) => return false,
        };
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
        let installed = self
            .registry
            .lock()
            .map(|mut r| r.apply_load(&name, path, loaded))
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

    fn restart_collector(self: &Arc<Self>, name: &str, config: &Config) {
        if let Ok(mut running) = self.collectors.lock()
            && let Some(handle) = running.remove(name)
        {
            handle.abort();
        }
        let collectors = match build_collectors(config, &self.host) {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(collector = name, "cannot restart collector: {error}");
                return;
            }
        };
        match collectors.into_iter().find(|c| c.name() == name) {
            Some(collector) => {
                tracing::info!(collector = name, "collector restarted with its new config");
                self.spawn_collector(collector);
            }
            None => tracing::info!(
                collector = name,
                "collector stopped: it is no longer configured"
            ),
        }
    }

    /// Runs `collector` on its interval in a task of its own.
    pub fn spawn_collector(self: &Arc<Self>, mut collector: Box<dyn Collector>) {
        let agent = self.clone();
        let name = collector.name().to_owned();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(collector.interval());
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                agent.tick(collector.as_mut()).await;
            }
        });
        if let Ok(mut running) = self.collectors.lock()
            && let Some(old) = running.insert(name, task.abort_handle())
        {
            old.abort();
        }
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

    /// Sends everything buffered now; a failure is a warning, never fatal.
    pub async fn flush(self: &Arc<Self>) {
        if let Err(error) = self.try_flush().await {
            tracing::warn!("{error}");
        }
    }

    async fn try_flush(self: &Arc<Self>) -> Result<(), String> {
        let agent = self.clone();
        match tokio::task::spawn_blocking(move || agent.exporter.flush()).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(format!("export task failed: {e}")),
        }
    }

    /// Exports every `interval`: one warning when export starts failing, one message when it recovers.
    fn spawn_exports(
        self: &Arc<Self>,
        interval: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let agent = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            let mut failing = false;
            loop {
                ticker.tick().await;
                match agent.try_flush().await {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("OTLP export works again");
                    }
                    Ok(()) => {}
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!(
                            "{error}; retrying every {interval:?}, this is reported once per outage"
                        );
                    }
                    Err(error) => tracing::debug!("{error}"),
                }
            }
        })
    }

    /// Stops export (what could not be sent was reported by the last flush).
    pub async fn shutdown(self: &Arc<Self>) {
        let agent = self.clone();
        let result = tokio::task::spawn_blocking(move || agent.exporter.shutdown()).await;
        if let Ok(Err(error)) = result {
            tracing::debug!("{error}");
        }
    }

    /// Collects one round from every collector, evaluates, exports and flushes.
    pub async fn run_once(self: &Arc<Self>, collectors: &mut [Box<dyn Collector>]) {
        for collector in collectors.iter_mut() {
            self.tick(collector.as_mut()).await;
        }
        self.flush().await;
        self.shutdown().await;
    }

    /// Runs every collector on its interval, applies file changes (when watching) and
    /// `reload` requests (SIGHUP), until `stop` completes; then flushes.
    pub async fn run_until(
        self: &Arc<Self>,
        collectors: Vec<Box<dyn Collector>>,
        mut reload: tokio::sync::mpsc::UnboundedReceiver<()>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        for collector in collectors {
            self.spawn_collector(collector);
        }
        let export_interval = self
            .config
            .lock()
            .map(|c| c.export.otlp.interval)
            .unwrap_or(std::time::Duration::from_secs(10));
        let exports = self.spawn_exports(export_interval);
        let (changes_tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
        let (watching, plugin_dir) = match self.config.lock() {
            Ok(c) => (c.plugins.watch, c.plugins.dir.clone()),
            Err(_) => (false, PathBuf::new()),
        };
        let _watch = if watching {
            match crate::watch::watch(&plugin_dir, self.config_path.as_deref(), changes_tx) {
                Ok(watch) => Some(watch),
                Err(e) => {
                    tracing::warn!("hot reload is off: {e}");
                    None
                }
            }
        } else {
            None
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(change) = changes.recv() => self.apply(change).await,
                Some(()) = reload.recv() => {
                    tracing::info!("reload requested");
                    self.reload_config().await;
                    self.rescan_plugins().await;
                }
            }
        }
        tracing::info!("stopping: flushing export");
        exports.abort();
        if let Ok(mut running) = self.collectors.lock() {
            for (_, handle) in running.drain() {
                handle.abort();
            }
        }
        self.flush().await;
        self.shutdown().await;
    }
}
