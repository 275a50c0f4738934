//! Wires the stages together: collectors -> plugins -> alert state machine -> exporter.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::alert::AlertBook;
use crate::collect::Collector;
use crate::collect::system::SystemCollector;
use crate::config::Config;
use crate::export::{ExportError, OtlpExporter};
use crate::model::Batch;
use crate::plugin::{PluginLimits, PluginRegistry, PluginRuntime};
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
}

/// The running agent's shared stages.
pub struct Agent {
    host: String,
    exporter: OtlpExporter,
    registry: Mutex<PluginRegistry>,
    alerts: Mutex<AlertBook>,
    telemetry: Mutex<SelfTelemetry>,
}

/// One collector per configured PostgreSQL, MySQL and Redis instance.
fn server_collectors(config: &Config, host: &str) -> Result<Vec<Box<dyn Collector>>, StartError> {
    let mut collectors: Vec<Box<dyn Collector>> = Vec::new();
    let setup = |message: String| {
        StartError::Collect(crate::collect::CollectError::Failed {
            collector: "setup".into(),
            message,
        })
    };
    for instance in &config.collect.postgres {
        collectors.push(Box::new(
            crate::collect::postgres::collector(instance, host.to_owned()).map_err(setup)?,
        ));
    }
    for instance in &config.collect.mysql {
        collectors.push(Box::new(
            crate::collect::mysql::collector(instance, host.to_owned()).map_err(setup)?,
        ));
    }
    for instance in &config.collect.redis {
        collectors.push(Box::new(
            crate::collect::redis::collector(instance, host.to_owned()).map_err(setup)?,
        ));
    }
    Ok(collectors)
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

impl Agent {
    /// Sets up export, loads the plugins and builds the collectors. Must run inside Tokio.
    pub async fn start(
        config: &Config,
    ) -> Result<(Arc<Agent>, Vec<Box<dyn Collector>>), StartError> {
        let host = host_name(config);
        let exporter = if config.export.otlp.enabled {
            OtlpExporter::new(&config.export.otlp, &host)?
        } else {
            OtlpExporter::disabled()
        };
        let plugins_config = config.plugins.clone();
        let registry = tokio::task::spawn_blocking(move || {
            let runtime = PluginRuntime::new(PluginLimits::from_config(&plugins_config))
                .map_err(|e| StartError::Runtime(e.to_string()))?;
            Ok::<_, StartError>(PluginRegistry::load_dir(runtime, &plugins_config))
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

        let mut collectors: Vec<Box<dyn Collector>> = Vec::new();
        if config.collect.system.enabled {
            collectors.push(Box::new(SystemCollector::new(
                config.collect.system.clone(),
                host.clone(),
            )?));
        }
        collectors.extend(server_collectors(config, &host)?);
        let agent = Arc::new(Agent {
            host,
            exporter,
            registry: Mutex::new(registry),
            alerts: Mutex::new(AlertBook::default()),
            telemetry: Mutex::new(telemetry),
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
            let findings = match evaluation.outcome {
                Ok(None) => continue,
                Ok(Some(findings)) => findings,
                Err(error) => {
                    tracing::warn!(plugin = %evaluation.plugin, cause = error.cause(), "{error}");
                    self.count(Event::PluginFailed {
                        plugin: &evaluation.plugin,
                        cause: error.cause(),
                    });
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
            for event in events {
                tracing::info!(
                    plugin = %event.alert.key.plugin,
                    rule = %event.alert.key.rule,
                    key = %event.alert.key.key,
                    state = event.transition.as_str(),
                    "alert {}: {}",
                    event.transition.as_str(),
                    event.alert.summary
                );
                self.exporter.emit_alert(&event);
            }
        }
        self.record_self_telemetry();
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
        let loaded = self.registry.lock().map(|r| r.plugins().len()).unwrap_or(0);
        let batch = match self.telemetry.lock() {
            Ok(telemetry) => telemetry.batch(&self.host, &firing, loaded),
            Err(_) => return,
        };
        self.exporter.record(&batch);
    }

    /// Sends everything buffered now; a failure is a warning, never fatal.
    pub async fn flush(self: &Arc<Self>) {
        let agent = self.clone();
        let result = tokio::task::spawn_blocking(move || agent.exporter.flush()).await;
        if let Ok(Err(error)) = result {
            tracing::warn!("{error}");
        }
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

    /// Runs every collector on its interval until `stop` completes, then flushes.
    pub async fn run_until(
        self: &Arc<Self>,
        collectors: Vec<Box<dyn Collector>>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        for mut collector in collectors {
            let agent = self.clone();
            tasks.spawn(async move {
                let mut ticker = tokio::time::interval(collector.interval());
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    agent.tick(collector.as_mut()).await;
                }
            });
        }
        stop.await;
        tracing::info!("stopping: flushing export");
        tasks.abort_all();
        self.flush().await;
        self.shutdown().await;
    }
}
