//! The pipeline stage: turns each batch into exports, alert events and tuning proposals.
//!
//! ```text
//! batch ─> publish (export queue, /metrics, sparklines)
//!       ├> tuning (automatic-revert watches)
//!       └> plugins ─> alert rules ─> findings ─> alert book ─> alert events ─> OTLP logs, Alertmanager
//!                  └> tuning policies (+ firing alerts, current settings) ─> proposals ─> tuning gate
//! ```
//!
//! It owns the plugin set, the alert book and the sinks, and holds a handle on the tuning
//! engine; it knows nothing about where batches come from (the supervisor's collector
//! tasks) or when they are sent (the supervisor's export loop).

mod plugins;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::alert::{Alert, AlertBook, AlertEvent};
use crate::config::Config;
use crate::export::alertmanager::{AlertmanagerError, AlertmanagerSink};
use crate::export::debug::DebugExporter;
use crate::export::{ExportError, OtlpExporter};
use crate::model::Batch;
use crate::plugin::{
    Compiler, Evaluation, Output, PluginRegistry, PluginRuntime, PluginStatus, PolicyInputs,
};
use crate::status::StatusBoard;
use crate::sync::LockExt;
use crate::telemetry::{Event, PluginGauges, SelfTelemetry};
use crate::tuning::TuningHandle;

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

/// The host name: configured, or the machine's.
pub fn host_name(config: &Config) -> String {
    config
        .agent
        .host
        .clone()
        .or_else(|| sysinfo::System::host_name().ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Plugins, alert state and sinks: everything a batch passes through.
pub struct Pipeline {
    host: String,
    /// The plugin set: read without a lock, each plugin evaluating in its own lane.
    plugins: PluginRegistry,
    alerts: Mutex<AlertBook>,
    /// Where tuning policies' proposals go, and where their current settings come from.
    tuning: TuningHandle,
    exporter: OtlpExporter,
    /// `[export.debug]`: batches, alert events and decisions printed to stdout.
    debug: Option<DebugExporter>,
    /// Delivery of firing and resolved alerts to Alertmanager, when configured.
    alertmanager: Option<AlertmanagerSink>,
    telemetry: Mutex<SelfTelemetry>,
    board: Arc<StatusBoard>,
    /// Held while one plugin file is loaded and swapped in.
    plugin_loads: tokio::sync::Mutex<()>,
    /// Plugin files a directory scan has yet to load.
    plugins_loading: AtomicUsize,
}

impl Pipeline {
    /// Sets up export, the plugin runtime (compiling with `compiler`) with no plugin
    /// loaded yet, and starts the Alertmanager sink; tuning policies' proposals go to
    /// `tuning` ([`TuningHandle::disabled`] drops them). Must run inside Tokio.
    /// [`Pipeline::load_plugins`] loads the plugin directory.
    pub async fn build(
        config: &Config,
        host: &str,
        board: Arc<StatusBoard>,
        compiler: Compiler,
        tuning: TuningHandle,
    ) -> Result<Pipeline, StartError> {
        let exporter = if config.export.otlp.enabled {
            OtlpExporter::new(&config.export, host)?
        } else {
            OtlpExporter::disabled(&config.export, host)
        };
        let runtime = PluginRuntime::from_config(&config.plugins)
            .map_err(|e| StartError::Runtime(e.to_string()))?
            .with_compiler(compiler);
        let registry = PluginRegistry::new(Arc::new(runtime), config.plugins.quarantine_after);
        let telemetry = Mutex::new(SelfTelemetry::default());
        let alertmanager = match &config.export.alertmanager {
            Some(am) => {
                let generator_url = am.generator_url.clone().unwrap_or_else(|| {
                    if config.http.enabled {
                        let scheme = if config.http.tls.is_some() {
                            "https"
                        } else {
                            "http"
                        };
                        format!("{scheme}://{host}:{}/", config.http.listen.port())
                    } else {
                        format!("http://{host}/")
                    }
                });
                Some(AlertmanagerSink::start(am, host, generator_url)?)
            }
            None => None,
        };
        Ok(Pipeline {
            host: host.to_owned(),
            plugins: registry,
            alerts: Mutex::new(AlertBook::default()),
            tuning,
            exporter,
            debug: config
                .export
                .debug
                .as_ref()
                .map(|debug| DebugExporter::stdout(debug.verbosity)),
            alertmanager,
            telemetry,
            board,
            plugin_loads: tokio::sync::Mutex::new(()),
            plugins_loading: AtomicUsize::new(0),
        })
    }

    /// Exports `batch`, shows it to the tuning engine's automatic-revert watches, and
    /// hands it to every plugin; returns without waiting for them. Each plugin evaluates
    /// it in its own lane: an alert rule's findings become alert events, a tuning
    /// policy's proposals go to the tuning engine, as soon as it is done
    /// ([`Pipeline::plugins_idle`] waits for all of them).
    pub async fn process(self: &Arc<Self>, batch: Batch) {
        self.take_in(batch);
    }

    /// Like [`Pipeline::process`] for each of `batches` (received from an application).
    pub async fn process_all(self: &Arc<Self>, batches: Vec<Batch>) {
        for batch in batches {
            self.take_in(batch);
        }
    }

    /// Exports `batch`, shows it to the tuning watches and hands it to every plugin.
    fn take_in(self: &Arc<Self>, batch: Batch) {
        let batch = Arc::new(batch);
        self.publish(&batch);
        self.tuning.observe(&batch);
        let pipeline = self.clone();
        let handler: Arc<crate::plugin::lane::Handler> =
            Arc::new(move |evaluation, batch: &Batch| pipeline.evaluated(evaluation, batch));
        let inputs = Arc::new(self.policy_inputs());
        self.plugins.dispatch(&batch, &inputs, &handler);
    }

    /// What tuning policies are shown beside the next batch: the alerts firing now and
    /// the allowlisted settings' current values (nothing while no policy is loaded).
    fn policy_inputs(&self) -> PolicyInputs {
        if !self.plugins.has_policies() {
            return PolicyInputs::default();
        }
        PolicyInputs {
            firing: self.firing_alerts().into(),
            settings: self.tuning.settings(),
        }
    }

    /// Completes once every batch handed to the plugins so far was evaluated (or skipped).
    pub async fn plugins_idle(&self) {
        self.plugins.idle().await;
    }

    /// Waits until the plugins evaluated every batch handed to them, or `deadline` passes.
    pub async fn plugins_idle_until(&self, deadline: tokio::time::Instant) {
        if tokio::time::timeout_at(deadline, self.plugins_idle())
            .await
            .is_err()
        {
            tracing::warn!("plugins still evaluating at the shutdown deadline; abandoned");
        }
    }

    /// Counts one plugin's evaluation of `batch` and turns its findings into alert events,
    /// or hands its proposals to the tuning engine.
    fn evaluated(&self, evaluation: Evaluation, batch: &Batch) {
        if !matches!(evaluation.outcome, Ok(None)) {
            self.count(Event::PluginEvaluated {
                plugin: &evaluation.plugin,
                duration: evaluation.duration,
                ok: evaluation.outcome.is_ok(),
            });
        }
        let findings = match evaluation.outcome {
            Ok(None) => return,
            Ok(Some(Output::Findings(findings))) => findings,
            Ok(Some(Output::Proposals(proposals))) => {
                if !proposals.is_empty() {
                    tracing::debug!(plugin = %evaluation.plugin, proposals = proposals.len(), "tuning policy proposed actions");
                    self.tuning.submit(proposals);
                }
                return;
            }
            Err(error) => {
                // A plugin failing batch after batch is logged once per run of failures
                // (its first); the rest are counted, and logged at debug.
                if evaluation.failures_in_a_row <= 1 {
                    tracing::warn!(plugin = %evaluation.plugin, cause = error.cause(), "{error}");
                } else {
                    tracing::debug!(plugin = %evaluation.plugin, cause = error.cause(), failures_in_a_row = evaluation.failures_in_a_row, "{error}");
                }
                self.count(Event::PluginFailed {
                    plugin: &evaluation.plugin,
                    cause: error.cause(),
                });
                if let Some(period) = evaluation.quarantined_for {
                    tracing::warn!(plugin = %evaluation.plugin, cause = error.cause(), "plugin {} quarantined for {period:?} after {} failures in a row (the last: {}); its alerts are resolved with reason \"plugin quarantined\"", evaluation.plugin, evaluation.failures_in_a_row, error.cause());
                    self.count(Event::PluginQuarantined {
                        plugin: &evaluation.plugin,
                    });
                    self.release_alerts(&evaluation.plugin, "plugin quarantined");
                }
                return;
            }
        };
        let events = self.alerts.locked().apply(
            &evaluation.plugin,
            &batch.source,
            &findings,
            batch.timestamp,
        );
        self.emit_alerts(&events);
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
            if let Some(debug) = &self.debug {
                debug.alert(event);
            }
            if let Some(alertmanager) = &self.alertmanager {
                alertmanager.send(event);
            }
        }
    }

    /// Resolves every alert of `plugin` with `reason` (the plugin was removed or quarantined).
    fn release_alerts(&self, plugin: &str, reason: &str) {
        let events = self
            .alerts
            .locked()
            .release_plugin(plugin, reason, SystemTime::now());
        self.emit_alerts(&events);
    }

    /// Waits until every Alertmanager accepted the alerts sent so far, or `deadline`
    /// passes; a warning names those still behind.
    pub async fn deliver_alerts_until(&self, deadline: tokio::time::Instant) {
        let Some(alertmanager) = &self.alertmanager else {
            return;
        };
        let behind = alertmanager.flush(deadline).await;
        if !behind.is_empty() {
            tracing::warn!(
                "shutdown deadline reached: alerts not delivered to Alertmanager {}",
                behind.join(", ")
            );
        }
    }

    /// Counts a self-telemetry event.
    pub fn count(&self, event: Event<'_>) {
        self.telemetry.locked().emit(event);
    }

    /// Publishes the self-telemetry totals as a batch (source `vigil`), the tuning
    /// engine's counts included when one runs. Once per export tick
    /// (`supervisor::exports::snapshot`), like an OpenTelemetry SDK's periodic reader:
    /// one sample of each total per export, not one per collected batch or evaluation.
    pub fn record_self_telemetry(&self) {
        let firing = self.alerts.locked().firing_by_severity().to_vec();
        let plugins: Vec<PluginGauges> = self
            .plugin_statuses()
            .into_iter()
            .map(|p| PluginGauges {
                name: p.name,
                quarantined: p.quarantined,
                memory_bytes: p.memory_bytes,
            })
            .collect();
        let alertmanagers = self
            .alertmanager
            .as_ref()
            .map(AlertmanagerSink::stats)
            .unwrap_or_default();
        let tuning = self.tuning.is_enabled().then(|| self.tuning.stats());
        // Built and published under the lock: two callers publish their totals in the
        // order they read them (a counter must never seem to go down).
        let telemetry = self.telemetry.locked();
        let batch = telemetry.batch(
            &self.host,
            &firing,
            &plugins,
            &alertmanagers,
            tuning.as_ref(),
        );
        self.publish(&Arc::new(batch));
        drop(telemetry);
    }

    /// Publishes the export queues' totals (source `vigil.export`).
    pub fn record_export_telemetry(&self) {
        let batch = crate::telemetry::export_batch(&self.host, &self.exporter.stats());
        self.publish(&Arc::new(batch));
    }

    /// Publishes one of the agent's own batches (a stage's totals, say): exported and
    /// shown like any batch, not evaluated by plugins.
    pub fn publish_own(&self, batch: Batch) {
        self.publish(&Arc::new(batch));
    }

    /// Makes `batch` the latest values for export and `/metrics`, and samples it for
    /// the status page's sparklines.
    fn publish(&self, batch: &Arc<Batch>) {
        self.exporter.record(batch);
        if let Some(debug) = &self.debug {
            debug.batch(batch);
        }
        self.board.record_history(batch);
    }

    /// Reads the TLS files of `config`'s OTLP and Alertmanager sections again (at a
    /// reload); a client whose files or settings changed is rebuilt, one line says so.
    /// Unusable files are reported and change nothing.
    pub fn reload_tls(&self, config: &Config) {
        match self.exporter.reload_tls(&config.export.settings) {
            Ok(true) => tracing::info!(
                "[export.otlp.tls] files changed: OTLP export uses them from the next request"
            ),
            Ok(false) => {}
            Err(e) => tracing::error!("{e}; OTLP export keeps its current TLS settings"),
        }
        if let (Some(sink), Some(am)) = (&self.alertmanager, &config.export.alertmanager) {
            match sink.reload_tls(&am.tls) {
                Ok(true) => tracing::info!(
                    "[export.alertmanager.tls] files changed: Alertmanager delivery uses them from the next request"
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!("{e}; Alertmanager delivery keeps its current TLS settings")
                }
            }
        }
    }

    /// Exports a tuning decision (an OTLP log record; printed by `[export.debug]`).
    pub fn emit_decision(&self, decision: &crate::tuning::decision::Decision) {
        self.exporter.emit_decision(decision);
        if let Some(debug) = &self.debug {
            debug.decision(decision);
        }
    }

    /// The OTLP exporter (its queue is sent by the supervisor's export loop).
    pub fn exporter(&self) -> &OtlpExporter {
        &self.exporter
    }

    /// Status of every loaded plugin.
    pub fn plugin_statuses(&self) -> Vec<PluginStatus> {
        self.plugins.statuses()
    }

    /// Plugin files a directory scan has yet to load (they compile meanwhile).
    pub fn plugins_loading(&self) -> usize {
        self.plugins_loading.load(Ordering::Relaxed)
    }

    /// The plugin files that failed to load, with why.
    pub fn plugin_load_failures(&self) -> std::collections::BTreeMap<String, String> {
        self.plugins
            .failures()
            .iter()
            .map(|f| (f.name.clone(), f.error.to_string()))
            .collect()
    }

    /// The alerts firing now.
    pub fn firing_alerts(&self) -> Vec<Alert> {
        self.alerts.locked().firing().cloned().collect()
    }

    /// Successful evaluations of `plugin` so far.
    pub fn evaluations(&self, plugin: &str) -> u64 {
        self.telemetry.locked().evaluations(plugin)
    }

    /// The plugin directory's path for plugin `name`.
    fn plugin_path(dir: &std::path::Path, name: &str) -> PathBuf {
        dir.join(format!("{name}.wasm"))
    }
}
