//! Wires the stages together: collectors -> plugins -> alert state machine -> exporter.
//! Reloading lives in [`crate::reload`], running and stopping in [`crate::run`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::alert::{AlertBook, AlertEvent};
use crate::collect::Collector;
use crate::collect::system::SystemCollector;
use crate::config::Config;
use crate::export::alertmanager::{AlertmanagerError, AlertmanagerSink};
use crate::export::{ExportError, OtlpExporter};
use crate::model::Batch;
use crate::plugin::{PluginRegistry, PluginRuntime};
use crate::run::CollectorTask;
use crate::status::{AgentStatus, CollectorStatus, ExportStatus, History};
use crate::telemetry::{Event, SelfTelemetry};

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
    pub(crate) host: String,
    pub(crate) config_path: Option<PathBuf>,
    pub(crate) config: Mutex<Config>,
    pub(crate) exporter: OtlpExporter,
    /// Delivery of firing and resolved alerts to Alertmanager, when configured.
    pub(crate) alertmanager: Option<AlertmanagerSink>,
    pub(crate) registry: Mutex<PluginRegistry>,
    pub(crate) alerts: Mutex<AlertBook>,
    pub(crate) telemetry: Mutex<SelfTelemetry>,
    pub(crate) collectors: Mutex<HashMap<String, CollectorTask>>,
    pub(crate) collector_status: Mutex<BTreeMap<String, CollectorStatus>>,
    pub(crate) history: Mutex<History>,
    /// Last export attempt: `None` before the first, else its error if it failed.
    pub(crate) export_health: Mutex<Option<Result<(), String>>>,
    pub(crate) started_at: SystemTime,
    /// Set once to stop collectors and the export loop.
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
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

impl Agent {
    /// Sets up export, loads the plugins and builds the collectors. Must run inside Tokio.
    pub async fn start(
        config: &Config,
        config_path: Option<&Path>,
    ) -> Result<(Arc<Agent>, Vec<Box<dyn Collector>>), StartError> {
        let host = host_name(config);
        let exporter = if config.export.otlp.enabled {
            OtlpExporter::new(&config.export, &host)?
        } else {
            OtlpExporter::disabled(&config.export, &host)
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
        let telemetry = Mutex::new(telemetry);
        let alertmanager = match &config.export.alertmanager {
            Some(am) => {
                let generator_url = am.generator_url.clone().unwrap_or_else(|| {
                    if config.http.enabled {
                        format!("http://{host}:{}/", config.http.listen.port())
                    } else {
                        format!("http://{host}/")
                    }
                });
                Some(AlertmanagerSink::start(am, &host, generator_url)?)
            }
            None => None,
        };
        let collectors = build_collectors(config, &host)?;
        let collector_status = collectors
            .iter()
            .map(|c| (c.name().to_owned(), CollectorStatus::default()))
            .collect();
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
            collector_status: Mutex::new(collector_status),
            history: Mutex::new(History::default()),
            export_health: Mutex::new(None),
            started_at: SystemTime::now(),
            stop: tokio::sync::watch::channel(false).0,
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
                self.set_collector_status(collector.name(), |s| s.succeeded(SystemTime::now()));
                self.process(batch).await;
            }
            Err(error) => {
                tracing::warn!(collector = collector.name(), "{error}");
                self.count(Event::CollectFailed {
                    collector: collector.name(),
                });
                self.set_collector_status(collector.name(), |s| {
                    s.failed(SystemTime::now(), error.to_string())
                });
                self.record_self_telemetry();
            }
        }
    }

    /// Exports `batch`, evaluates it with every plugin and turns findings into alert events.
    pub async fn process(self: &Arc<Self>, batch: Batch) {
        self.publish(&batch);
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
            if !matches!(evaluation.outcome, Ok(None)) {
                self.count(Event::PluginEvaluated {
                    plugin: &evaluation.plugin,
                    duration: evaluation.duration,
                    ok: evaluation.outcome.is_ok(),
                });
            }
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

    /// Waits until every Alertmanager accepted the alerts sent so far, or `deadline`
    /// passes; a warning names those still behind.
    pub(crate) async fn deliver_alerts_until(&self, deadline: tokio::time::Instant) {
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

    pub(crate) fn release_alerts(&self, plugin: &str, reason: &str) {
        let events = match self.alerts.lock() {
            Ok(mut book) => book.release_plugin(plugin, reason, SystemTime::now()),
            Err(_) => Vec::new(),
        };
        self.emit_alerts(&events);
    }

    pub(crate) fn count(&self, event: Event<'_>) {
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
        let alertmanagers = self
            .alertmanager
            .as_ref()
            .map(AlertmanagerSink::stats)
            .unwrap_or_default();
        let batch = match self.telemetry.lock() {
            Ok(telemetry) => telemetry.batch(&self.host, &firing, &plugins, &alertmanagers),
            Err(_) => return,
        };
        self.publish(&batch);
    }

    /// Makes `batch` the latest values for export and `/metrics`, and samples it for
    /// the status page's sparklines.
    fn publish(&self, batch: &Batch) {
        self.exporter.record(batch);
        if let Ok(mut history) = self.history.lock() {
            history.record(batch);
        }
    }

    /// Records the export queues' totals (source `vigil.export`).
    pub(crate) fn record_export_telemetry(&self) {
        let batch = crate::telemetry::export_batch(&self.host, &self.exporter.stats());
        self.publish(&batch);
    }

    fn set_collector_status(&self, name: &str, update: impl FnOnce(&mut CollectorStatus)) {
        if let Ok(mut statuses) = self.collector_status.lock() {
            update(statuses.entry(name.to_owned()).or_default());
        }
    }

    /// Whether every collector has finished a round (successful or not).
    pub fn is_ready(&self) -> bool {
        self.collector_status
            .lock()
            .map(|s| s.values().all(|c| c.rounds + c.failures > 0))
            .unwrap_or(false)
    }

    /// Everything `/status` shows.
    pub fn status(&self) -> AgentStatus {
        let (endpoint, protocol) = self
            .config
            .lock()
            .map(|c| {
                (
                    c.export.otlp.effective_endpoint(),
                    c.export.otlp.protocol.as_str().to_owned(),
                )
            })
            .unwrap_or_default();
        let export_health = self.export_health.lock().ok().and_then(|h| h.clone());
        let (plugins, plugin_load_failures) = self
            .registry
            .lock()
            .map(|r| {
                let failures = r
                    .failures()
                    .map(|f| (f.name.clone(), f.error.to_string()))
                    .collect();
                (r.statuses(), failures)
            })
            .unwrap_or_default();
        AgentStatus {
            host: self.host.clone(),
            version: env!("CARGO_PKG_VERSION"),
            started_at: Some(self.started_at),
            ready: self.is_ready(),
            collectors: self
                .collector_status
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default(),
            plugins,
            plugin_load_failures,
            firing_alerts: self
                .alerts
                .lock()
                .map(|b| b.firing().cloned().collect())
                .unwrap_or_default(),
            export: ExportStatus {
                endpoint,
                protocol,
                healthy: export_health.as_ref().map(Result::is_ok),
                last_error: export_health.and_then(Result::err),
                queue: self.exporter.stats(),
            },
            sparklines: self
                .history
                .lock()
                .map(|h| h.sparklines())
                .unwrap_or_default(),
        }
    }

    /// The latest value of every series, for `/metrics`.
    pub fn latest_values(&self) -> &crate::export::store::LatestValues {
        self.exporter.latest()
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
}
