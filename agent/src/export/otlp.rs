//! OTLP export with `opentelemetry-otlp`: metrics through observable instruments
//! reading [`LatestValues`], alert events as log records. gRPC or HTTP/protobuf.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use opentelemetry::KeyValue;
use opentelemetry::logs::{AnyValue, LogRecord, Logger, LoggerProvider, Severity as LogSeverity};
use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{
    BatchConfigBuilder, BatchLogProcessor, SdkLogger, SdkLoggerProvider,
};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use super::ExportError;
use super::store::LatestValues;
use crate::alert::{AlertEvent, Transition};
use crate::config::{Compression, OtlpConfig, OtlpProtocol};
use crate::model::{Batch, MetricDesc, MetricKind, Severity};

/// Sends metrics and alert events to an OTLP endpoint.
pub struct OtlpExporter {
    endpoint: String,
    evaluation_duration: opentelemetry::metrics::Histogram<f64>,
    latest: Arc<LatestValues>,
    meter: Meter,
    registered: Mutex<HashSet<String>>,
    meter_provider: SdkMeterProvider,
    logger_provider: SdkLoggerProvider,
    logger: SdkLogger,
}

/// The URL of one signal: gRPC uses the endpoint as is; HTTP appends `/v1/{signal}`.
fn signal_url(config: &OtlpConfig, signal: &str) -> String {
    let base = config.effective_endpoint();
    match config.protocol {
        OtlpProtocol::Grpc => base,
        OtlpProtocol::HttpProtobuf => format!("{}/v1/{signal}", base.trim_end_matches('/')),
    }
}

fn compression(config: &OtlpConfig) -> Option<opentelemetry_otlp::Compression> {
    match config.compression {
        Compression::None => None,
        Compression::Gzip => Some(opentelemetry_otlp::Compression::Gzip),
    }
}

fn grpc_metadata(config: &OtlpConfig) -> tonic::metadata::MetadataMap {
    let mut map = tonic::metadata::MetadataMap::new();
    for (key, value) in &config.headers {
        if let (Ok(key), Ok(value)) = (
            key.to_ascii_lowercase()
                .parse::<tonic::metadata::MetadataKey<_>>(),
            value.parse(),
        ) {
            map.insert(key, value);
        }
    }
    map
}

/// Builds an exporter of one signal with the transport, endpoint, timeout,
/// compression and headers of `config`.
macro_rules! build_exporter {
    ($builder:expr, $config:expr, $signal:literal) => {{
        let config: &OtlpConfig = $config;
        let url = signal_url(config, $signal);
        let setup_error = |e: opentelemetry_otlp::ExporterBuildError| ExportError::Setup {
            signal: $signal,
            endpoint: url.clone(),
            reason: e.to_string(),
        };
        match config.protocol {
            OtlpProtocol::Grpc => {
                let mut b = $builder
                    .with_tonic()
                    .with_endpoint(url.clone())
                    .with_timeout(config.timeout)
                    .with_metadata(grpc_metadata(config));
                if let Some(c) = compression(config) {
                    b = b.with_compression(c);
                }
                b.build().map_err(setup_error)?
            }
            OtlpProtocol::HttpProtobuf => {
                let mut b = $builder
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(url.clone())
                    .with_timeout(config.timeout)
                    .with_headers(config.headers.clone().into_iter().collect());
                if let Some(c) = compression(config) {
                    b = b.with_compression(c);
                }
                b.build().map_err(setup_error)?
            }
        }
    }};
}

impl OtlpExporter {
    /// Sets up metric and log exporters for `config`; `host` goes into the resource.
    /// Must be called inside a Tokio runtime (the gRPC client needs one). Nothing is
    /// connected yet: an unreachable endpoint shows up as export warnings, not here.
    pub fn new(config: &OtlpConfig, host: &str) -> Result<Self, ExportError> {
        let resource = Resource::builder()
            .with_service_name("vigil")
            .with_attributes([
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("host.name", host.to_owned()),
            ])
            .build();

        let metric_exporter = build_exporter!(
            opentelemetry_otlp::MetricExporter::builder(),
            config,
            "metrics"
        );
        // The agent drives exports itself (see `Agent::run_until`) so that it sees every
        // failure; the reader's own timer is only a backstop.
        let reader = PeriodicReader::builder(metric_exporter)
            .with_interval(std::time::Duration::from_secs(24 * 3600))
            .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(reader)
            .build();

        let log_exporter =
            build_exporter!(opentelemetry_otlp::LogExporter::builder(), config, "logs");
        let processor = BatchLogProcessor::builder(log_exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(std::time::Duration::from_millis(200))
                    .build(),
            )
            .build();
        let logger_provider = SdkLoggerProvider::builder()
            .with_resource(resource)
            .with_log_processor(processor)
            .build();

        Ok(Self::from_providers(
            config.effective_endpoint(),
            meter_provider,
            logger_provider,
        ))
    }

    /// An exporter over already-built providers (used by `new` and by tests with in-memory exporters).
    pub fn from_providers(
        endpoint: String,
        meter_provider: SdkMeterProvider,
        logger_provider: SdkLoggerProvider,
    ) -> Self {
        let meter = meter_provider.meter("vigil");
        let logger = logger_provider.logger("vigil");
        let evaluation_duration = meter
            .f64_histogram("vigil.plugin.evaluation.duration")
            .with_unit("s")
            .with_description("Duration of one plugin evaluation")
            .with_boundaries(vec![
                0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
            ])
            .build();
        OtlpExporter {
            endpoint,
            evaluation_duration,
            latest: Arc::new(LatestValues::default()),
            meter,
            registered: Mutex::new(HashSet::new()),
            meter_provider,
            logger_provider,
            logger,
        }
    }

    /// An exporter that sends nothing (`export.otlp.enabled = false`).
    pub fn disabled() -> Self {
        Self::from_providers(
            "(export disabled)".to_owned(),
            SdkMeterProvider::builder().build(),
            SdkLoggerProvider::builder().build(),
        )
    }

    /// Makes `batch` the latest values of its source; they go out with the next export.
    pub fn record(&self, batch: &Batch) {
        for metric in &batch.metrics {
            self.register(metric);
        }
        self.latest.replace(batch);
    }

    /// Registers an observable instrument for `metric` the first time it is seen.
    fn register(&self, metric: &MetricDesc) {
        let Ok(mut registered) = self.registered.lock() else {
            return;
        };
        if !registered.insert(metric.name.clone()) {
            return;
        }
        let latest = self.latest.clone();
        let name = metric.name.clone();
        let callback = move |observer: &dyn opentelemetry::metrics::AsyncInstrument<f64>| {
            latest.for_each(&name, |value, attributes| {
                observer.observe(value, attributes)
            });
        };
        let (name, unit, description) = (
            metric.name.clone(),
            metric.unit.clone(),
            metric.description.clone(),
        );
        match metric.kind {
            MetricKind::Gauge => {
                self.meter
                    .f64_observable_gauge(name)
                    .with_unit(unit)
                    .with_description(description)
                    .with_callback(callback)
                    .build();
            }
            MetricKind::Counter => {
                self.meter
                    .f64_observable_counter(name)
                    .with_unit(unit)
                    .with_description(description)
                    .with_callback(callback)
                    .build();
            }
            MetricKind::UpDownCounter => {
                self.meter
                    .f64_observable_up_down_counter(name)
                    .with_unit(unit)
                    .with_description(description)
                    .with_callback(callback)
                    .build();
            }
        }
    }

    /// Records how long one evaluation by `plugin` took.
    pub fn record_evaluation(&self, plugin: &str, duration: std::time::Duration) {
        self.evaluation_duration.record(
            duration.as_secs_f64(),
            &[KeyValue::new("vigil.plugin", plugin.to_owned())],
        );
    }

    /// Sends an alert event as an OTLP log record (event name `vigil.alert`).
    pub fn emit_alert(&self, event: &AlertEvent) {
        let alert = &event.alert;
        let mut record = self.logger.create_log_record();
        record.set_event_name("vigil.alert");
        record.set_timestamp(event.at);
        record.set_observed_timestamp(SystemTime::now());
        let (number, text) = match (event.transition, alert.severity) {
            (Transition::Resolved | Transition::Cancelled, _) => (LogSeverity::Info, "INFO"),
            (_, Severity::Info) => (LogSeverity::Info, "INFO"),
            (_, Severity::Warning) => (LogSeverity::Warn, "WARN"),
            (_, Severity::Critical) => (LogSeverity::Error, "ERROR"),
        };
        record.set_severity_number(number);
        record.set_severity_text(text);
        record.set_body(AnyValue::from(format!(
            "alert {} {}: {}",
            alert.key.rule,
            event.transition.as_str(),
            alert.summary
        )));
        record.add_attribute("vigil.alert.state", event.transition.as_str());
        record.add_attribute("vigil.alert.rule", alert.key.rule.clone());
        record.add_attribute("vigil.alert.key", alert.key.key.clone());
        record.add_attribute("vigil.alert.severity", alert.severity.as_str());
        record.add_attribute("vigil.alert.summary", alert.summary.clone());
        record.add_attribute("vigil.alert.source", alert.source.clone());
        record.add_attribute("vigil.plugin", alert.key.plugin.clone());
        if let Some(reason) = &event.reason {
            record.add_attribute("vigil.alert.reason", reason.clone());
        }
        if let Some(value) = alert.value {
            record.add_attribute("vigil.alert.value", value);
        }
        for (key, value) in &alert.labels {
            record.add_attribute(format!("vigil.alert.label.{key}"), value.clone());
        }
        self.logger.emit(record);
    }

    /// Sends everything now. Blocking: call it off the async runtime's worker threads.
    pub fn flush(&self) -> Result<(), ExportError> {
        let metrics = self.meter_provider.force_flush();
        let logs = self.logger_provider.force_flush();
        metrics.and(logs).map_err(|e| ExportError::Flush {
            endpoint: self.endpoint.clone(),
            reason: e.to_string(),
        })
    }

    /// Flushes and stops the exporters. Blocking.
    pub fn shutdown(&self) -> Result<(), ExportError> {
        let metrics = self.meter_provider.shutdown();
        let logs = self.logger_provider.shutdown();
        metrics.and(logs).map_err(|e| ExportError::Flush {
            endpoint: self.endpoint.clone(),
            reason: e.to_string(),
        })
    }
}
