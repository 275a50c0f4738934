//! The supervisor stage: owns the running tasks (collectors, export loop, file watch),
//! the current config and the stop signal. It starts the stages, applies reloads
//! (restarting only the collectors whose config changed) and stops everything
//! gracefully within `agent.shutdown_timeout`.

mod collectors;
mod exports;
pub mod intervals;
mod receiver;
mod reloads;
mod settle;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::collectors::CollectorTasks;
use crate::collect::Collector;
use crate::config::Config;
use crate::export::store::Family;
use crate::pipeline::{Pipeline, StartError, host_name};
use crate::status::{AgentStatus, ExportStatus, StatusBoard, StatusSource, TuningStatus};
use crate::sync::LockExt;
use crate::telemetry::Event;
use crate::tuning::{DecisionSink, TuningEngine, TuningHandle};
use crate::watch::Change;

/// The running agent: its stages and tasks.
pub struct Supervisor {
    host: String,
    config_path: Option<PathBuf>,
    config: Mutex<Config>,
    pipeline: Arc<Pipeline>,
    board: Arc<StatusBoard>,
    collectors: CollectorTasks,
    /// Set once to stop collectors and the export loop.
    stop: watch::Sender<bool>,
    /// The last config reload failure reported, so it is reported once.
    config_failures: crate::reload::FailureMemory,
    /// The tuning engine (its task runs until the last handle is gone).
    tuning: TuningHandle,
    /// Called with every config a reload read successfully, changed or not.
    config_hooks: Mutex<Vec<ConfigHook>>,
}

/// Something outside the supervisor that reacts to every config read at a reload (e.g.
/// the status endpoint re-reading its certificate files).
pub type ConfigHook = Box<dyn Fn(&Config) + Send + Sync>;

impl Supervisor {
    /// Builds the pipeline (export, plugin runtime compiling with `compiler`,
    /// Alertmanager) and the collectors. Must run inside Tokio. No plugin is loaded yet:
    /// [`Supervisor::run_until`] loads them in the background (the status endpoint
    /// answers meanwhile), [`Supervisor::load_plugins`] loads them and waits. The
    /// collectors are returned to be run by [`Supervisor::run_until`] or
    /// [`Supervisor::run_once`].
    pub async fn start(
        config: &Config,
        config_path: Option<&Path>,
        compiler: crate::plugin::Compiler,
    ) -> Result<(Arc<Supervisor>, Vec<Box<dyn Collector>>), StartError> {
        let host = host_name(config);
        let board = Arc::new(StatusBoard::default());
        let intervals = Arc::new(intervals::CollectorIntervals::default());
        // Decisions become OTLP log records; the pipeline (which owns the exporter) is
        // built after the engine, so the sink finds it through a late-set weak reference.
        let exporter_of: Arc<OnceLock<Weak<Pipeline>>> = Arc::default();
        let sink: DecisionSink = {
            let exporter_of = exporter_of.clone();
            Arc::new(move |decision| {
                if let Some(pipeline) = exporter_of.get().and_then(Weak::upgrade) {
                    pipeline.emit_decision(decision);
                }
            })
        };
        let engine = TuningEngine::new(
            config,
            Some(intervals.clone() as Arc<dyn crate::tuning::CollectorIntervals>),
            Some(sink),
        );
        let tuning = engine.handle();
        let pipeline = Arc::new(
            Pipeline::build(config, &host, board.clone(), compiler, tuning.clone()).await?,
        );
        let _ = exporter_of.set(Arc::downgrade(&pipeline));
        tokio::spawn(engine.run());
        let collectors = crate::collect::build_all(config, &host)?;
        for collector in &collectors {
            board.collector_added(collector.name());
        }
        let stop = watch::channel(false).0;
        let supervisor = Arc::new(Supervisor {
            collectors: CollectorTasks::new(
                pipeline.clone(),
                board.clone(),
                stop.subscribe(),
                intervals,
            ),
            tuning,
            host,
            config_path: config_path.map(Path::to_owned),
            config: Mutex::new(config.clone()),
            pipeline,
            board,
            stop,
            config_failures: Default::default(),
            config_hooks: Mutex::new(Vec::new()),
        });
        Ok((supervisor, collectors))
    }

    /// Calls `hook` with every config a reload reads successfully, even an unchanged one.
    pub fn on_config_read(&self, hook: ConfigHook) {
        self.config_hooks.locked().push(hook);
    }

    /// The pipeline batches pass through.
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// Loads every plugin of the plugin directory and waits until all are loaded (or failed).
    pub async fn load_plugins(&self) {
        let plugins = self.plugins_config();
        self.pipeline.load_plugins(&plugins).await;
    }

    fn shutdown_timeout(&self) -> Duration {
        self.config.locked().agent.shutdown_timeout
    }

    /// Collects one round from every collector, evaluates, exports and flushes.
    pub async fn run_once(self: &Arc<Self>, collectors: &mut [Box<dyn Collector>]) {
        for collector in collectors.iter_mut() {
            collectors::round(&self.pipeline, &self.board, collector.as_mut()).await;
        }
        let deadline = Instant::now() + self.shutdown_timeout();
        self.pipeline.plugins_idle_until(deadline).await;
        self.decide_proposals_until(deadline).await;
        exports::snapshot(&self.pipeline);
        tokio::join!(
            exports::deliver_until(&self.pipeline, &self.board, deadline),
            self.pipeline.deliver_alerts_until(deadline)
        );
    }

    /// Runs every collector on its interval, applies file changes (when watching) and
    /// `reload` requests (SIGHUP, `POST /reload`), until `stop` completes; then stops
    /// gracefully: collectors finish their round in flight, and everything queued is
    /// sent within `agent.shutdown_timeout`.
    pub async fn run_until(
        self: &Arc<Self>,
        collectors: Vec<Box<dyn Collector>>,
        mut reload: tokio::sync::mpsc::UnboundedReceiver<()>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        for collector in collectors {
            self.collectors.spawn(collector);
        }
        let (intervals, hint, watching, plugin_dir) = {
            let c = self.config.locked();
            (
                (c.export.settings.interval, c.export.queue.max_backoff),
                exports::first_failure_hint(&c),
                c.plugins.watch,
                c.plugins.dir.clone(),
            )
        };
        let exports = exports::spawn(
            self.pipeline.clone(),
            self.board.clone(),
            intervals,
            hint,
            self.stop.subscribe(),
        );
        let receiving = {
            let config = self.config.locked().clone();
            receiver::start(
                &config,
                &self.host,
                self.pipeline.clone(),
                self.stop.subscribe(),
            )
            .await
        };
        if !plugin_dir.exists() {
            // The embedded default's /var/lib/vigil/plugins on a machine without the package.
            tracing::info!(
                "plugin directory {} does not exist: running without plugins; create it, put plugins in it and restart vigil (or set [plugins] dir)",
                plugin_dir.display()
            );
        }
        let (changes_tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
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
        let reloads = reloads::Reloads::start(self);
        // The plugin directory loads in the background: plugins compile while the
        // status endpoint answers and collectors run; a file change seen meanwhile is
        // applied after it.
        reloads.load_plugins();
        crate::service::notify_ready();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(change) = changes.recv() => reloads.apply(change),
                Some(()) = reload.recv() => {
                    tracing::info!("reload requested");
                    reloads.request();
                }
            }
        }
        drop(reloads);
        self.stop_gracefully(exports, receiving).await;
    }

    /// The current `[plugins]` section.
    fn plugins_config(&self) -> crate::config::PluginsConfig {
        self.config.locked().plugins.clone()
    }

    /// Loads (or unloads) the plugin file at `path` with its configured settings.
    pub async fn reload_plugin_file(&self, path: &Path) {
        let settings = crate::plugin::registry::plugin_name(path)
            .map(|name| self.config.locked().plugins.settings_json(&name))
            .unwrap_or_else(|| "{}".to_owned());
        self.pipeline.reload_plugin(path, settings).await;
    }

    /// Applies one watched change at once (the running agent queues them on its reload
    /// workers instead).
    pub async fn apply(self: &Arc<Self>, change: Change) {
        match change {
            Change::Plugin(path) => self.reload_plugin_file(&path).await,
            Change::Config => {
                self.reload_config().await;
            }
        }
    }

    /// Reads the config file again. An invalid file changes nothing (the error is
    /// logged); a valid one is applied: changed collectors restart, plugins whose
    /// settings changed are reloaded, and the TLS files are read again (clients and the
    /// status endpoint switch to changed ones, also when the config text is the same).
    /// Other export and plugin-limit changes need a restart.
    pub async fn reload_config(self: &Arc<Self>) -> bool {
        let Some(path) = self.config_path.clone() else {
            return false;
        };
        let new = match crate::reload::read_config(&path).await {
            Ok(new) => new,
            Err((refused, key)) => {
                if self.config_failures.is_new(key) {
                    match &refused {
                        crate::reload::ReloadRefused::Empty(_) => tracing::warn!("{refused}"),
                        crate::reload::ReloadRefused::Invalid(_) => tracing::error!("{refused}"),
                    }
                    self.pipeline.count(Event::ConfigReloaded { ok: false });
                }
                return false;
            }
        };
        self.config_failures.forget();
        self.pipeline.reload_tls(&new);
        for hook in self.config_hooks.locked().iter() {
            hook(&new);
        }
        let old = std::mem::replace(&mut *self.config.locked(), new.clone());
        if old == new {
            return true;
        }
        self.pipeline.count(Event::ConfigReloaded { ok: true });
        if crate::reload::needs_restart(&old, &new) {
            tracing::warn!(
                "config changes to [agent], [export], [http], [receive] or plugin limits take effect after a restart"
            );
        }
        for name in crate::reload::changed_collectors(&old, &new) {
            self.restart_collector(&name, &new);
        }
        self.pipeline
            .apply_plugin_config(&old.plugins, &new.plugins)
            .await;
        if old.tuning != new.tuning || old.collect != new.collect {
            self.tuning.update(&new);
        }
        tracing::info!(config = %path.display(), "config reloaded");
        true
    }

    /// Stops collector `name` (its round in flight finishes) and starts it again with
    /// its part of `config`, if it is still configured. Only that collector is rebuilt.
    fn restart_collector(&self, name: &str, config: &Config) {
        let rebuilt = crate::collect::build_named(config, &self.host, name);
        self.collectors.stop(name, rebuilt.is_none());
        match rebuilt {
            Some(Ok(collector)) => {
                tracing::info!(collector = name, "collector restarted with its new config");
                self.collectors.spawn(collector);
            }
            Some(Err(error)) => {
                tracing::error!(collector = name, "cannot restart collector: {error}");
                self.board.collector_removed(name);
            }
            None => {
                tracing::info!(
                    collector = name,
                    "collector stopped: it is no longer configured"
                );
                self.board.collector_removed(name);
            }
        }
    }

    /// Stops collectors and the export loop (rounds in flight finish), then sends
    /// everything queued before the shutdown deadline.
    async fn stop_gracefully(
        self: &Arc<Self>,
        exports: JoinHandle<()>,
        receiving: Option<JoinHandle<()>>,
    ) {
        let timeout = self.shutdown_timeout();
        let deadline = Instant::now() + timeout;
        crate::service::notify_stopping();
        tracing::info!(
            "stopping: finishing rounds in flight, then sending what is queued (deadline {timeout:?})"
        );
        let _ = self.stop.send(true);
        let mut tasks = self.collectors.stop_all();
        tasks.push(("export".to_owned(), exports));
        tasks.extend(receiving.map(|task| ("OTLP receiver".to_owned(), task)));
        for (name, mut handle) in tasks {
            if tokio::time::timeout_at(deadline, &mut handle)
                .await
                .is_err()
            {
                tracing::warn!(task = %name, "still busy at the shutdown deadline; abandoned");
                handle.abort();
            }
        }
        self.pipeline.plugins_idle_until(deadline).await;
        self.decide_proposals_until(deadline).await;
        exports::snapshot(&self.pipeline);
        tokio::join!(
            exports::deliver_until(&self.pipeline, &self.board, deadline),
            self.pipeline.deliver_alerts_until(deadline)
        );
        tracing::info!("stopped");
    }

    /// Waits until the tuning engine decided every proposal made so far, or `deadline` passes.
    async fn decide_proposals_until(&self, deadline: Instant) {
        if tokio::time::timeout_at(deadline, self.tuning.flush())
            .await
            .is_err()
        {
            tracing::warn!(
                "tuning proposals still undecided at the shutdown deadline; abandoned (nothing was applied for them)"
            );
        }
    }
}

impl StatusSource for Supervisor {
    fn status(&self) -> AgentStatus {
        let (endpoint, protocol, tuning_config) = {
            let c = self.config.locked();
            (
                c.export.settings.metrics.url.clone(),
                c.export.settings.metrics.protocol.as_str().to_owned(),
                c.tuning.clone(),
            )
        };
        let last_export = self.board.last_export();
        let plugins = self.pipeline.plugin_statuses();
        let tuning = TuningStatus::new(&tuning_config, &plugins, self.tuning.stats());
        AgentStatus {
            host: self.host.clone(),
            version: env!("CARGO_PKG_VERSION"),
            started_at: Some(self.board.started_at()),
            ready: self.board.is_ready(),
            collectors: self.board.collectors(),
            plugins,
            plugins_loading: self.pipeline.plugins_loading(),
            plugin_load_failures: self.pipeline.plugin_load_failures(),
            firing_alerts: self.pipeline.firing_alerts(),
            export: ExportStatus {
                endpoint,
                protocol,
                healthy: last_export.as_ref().map(Result::is_ok),
                last_error: last_export.and_then(Result::err),
                queue: self.pipeline.exporter().stats(),
            },
            tuning,
            sparklines: self.board.sparklines(),
        }
    }

    fn is_ready(&self) -> bool {
        self.board.is_ready()
    }

    fn metric_families(&self) -> Vec<Family> {
        self.pipeline.exporter().latest().families()
    }
}
