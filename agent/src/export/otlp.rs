//! OTLP export with `opentelemetry-otlp`: metrics through observable instruments
//! reading [`LatestValues`], alert events as log records. gRPC or HTTP/protobuf.
//!
//! Nothing is sent as it is produced: each export tick takes a snapshot of every
//! metric into a bounded queue, log records go into a second one, and [`OtlpExporter::send`]
//! delivers both oldest first. A failed request leaves its data queued for the next
//! attempt; a full queue drops its oldest data and counts it.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord, Logger, LoggerProvider, Severity as LogSeverity};
use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{
    LogBatch, LogExporter as _, LogProcessor, SdkLogRecord, SdkLogger, SdkLoggerProvider,
};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider, Temporality};

use super::ExportError;
use super::queue::{BoundedQueue, QueueStats, Taken};
use super::store::{LatestValues, MeterKey};
use crate::alert::{AlertEvent, Transition};
use crate::config::{Compression, ExportConfig, OtlpConfig, OtlpProtocol};
use crate::model::{Batch, MetricDesc, MetricKind, Severity};

/// Log records sent in one request at most.
const LOG_CHUNK: usize = 512;

/// A log record as queued: the record and the scope it was emitted in.
type QueuedLog = (SdkLogRecord, InstrumentationScope);

/// The queues' totals per signal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportStats {
    pub metrics: QueueStats,
    pub logs: QueueStats,
}

/// Sends metrics and alert events to an OTLP endpoint.
pub struct OtlpExporter {
    endpoint: String,
    evaluation_duration: opentelemetry::metrics::Histogram<f64>,
    latest: Arc<LatestValues>,
    meter: Meter,
    meter_provider: SdkMeterProvider,
    logger_provider: SdkLoggerProvider,
    logger: SdkLogger,
    reader: SharedReader,
    transport: Option<Transport>,
    metrics: Mutex<BoundedQueue<ResourceMetrics>>,
    logs: Arc<Mutex<BoundedQueue<QueuedLog>>>,
}

/// The OTLP clients of both signals.
struct Transport {
    metrics: opentelemetry_otlp::MetricExporter,
    logs: opentelemetry_otlp::LogExporter,
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

/// The metric reader the meter provider collects through; the exporter keeps a handle
/// to take snapshots on its own schedule.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: std::sync::Weak<opentelemetry_sdk::metrics::Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: opentelemetry_sdk::metrics::InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// Puts every emitted log record into the log queue.
#[derive(Debug)]
struct QueueingProcessor(Arc<Mutex<BoundedQueue<QueuedLog>>>);

impl LogProcessor for QueueingProcessor {
    fn emit(&self, record: &mut SdkLogRecord, scope: &InstrumentationScope) {
        if let Ok(mut queue) = self.0.lock() {
            queue.push((record.clone(), scope.clone()), 1);
        }
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
}

/// Datapoints in a metric snapshot: what a dropped snapshot loses.
fn datapoints(rm: &ResourceMetrics) -> u64 {
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    fn count<T>(data: &MetricData<T>) -> usize {
        match data {
            MetricData::Gauge(g) => g.data_points().count(),
            MetricData::Sum(s) => s.data_points().count(),
            MetricData::Histogram(h) => h.data_points().count(),
            MetricData::ExponentialHistogram(h) => h.data_points().count(),
        }
    }
    rm.scope_metrics()
        .flat_map(|sm| sm.metrics())
        .map(|m| match m.data() {
            AggregatedMetrics::F64(d) => count(d),
            AggregatedMetrics::U64(d) => count(d),
            AggregatedMetrics::I64(d) => count(d),
        } as u64)
        .sum()
}

impl OtlpExporter {
    /// Sets up metric and log exporters for `config`; `host` goes into the resource.
    /// Must be called inside a Tokio runtime (the gRPC client needs one). Nothing is
    /// connected yet: an unreachable endpoint shows up as export warnings, not here.
    pub fn new(config: &ExportConfig, host: &str) -> Result<Self, ExportError> {
        let otlp = &config.otlp;
        let metrics = build_exporter!(
            opentelemetry_otlp::MetricExporter::builder(),
            otlp,
            "metrics"
        );
        let mut logs = build_exporter!(opentelemetry_otlp::LogExporter::builder(), otlp, "logs");
        logs.set_resource(&resource(host));
        Ok(Self::build(
            otlp.effective_endpoint(),
            host,
            config,
            Some(Transport { metrics, logs }),
        ))
    }

    /// An exporter that sends nothing (`export.otlp.enabled = false`).
    pub fn disabled(config: &ExportConfig, host: &str) -> Self {
        Self::build("(export disabled)".to_owned(), host, config, None)
    }

    fn build(
        endpoint: String,
        host: &str,
        config: &ExportConfig,
        transport: Option<Transport>,
    ) -> Self {
        let reader = SharedReader(Arc::new(
            ManualReader::builder()
                .with_temporality(Temporality::Cumulative)
                .build(),
        ));
        let meter_provider = SdkMeterProvider::builder()
            .with_resource(resource(host))
            .with_reader(reader.clone())
            .build();
        let logs = Arc::new(Mutex::new(BoundedQueue::new(config.queue.max_log_records)));
        let mut logger_provider = SdkLoggerProvider::builder().with_resource(resource(host));
        if transport.is_some() {
            logger_provider = logger_provider.with_log_processor(QueueingProcessor(logs.clone()));
        }
        let logger_provider = logger_provider.build();
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
            meter_provider,
            logger_provider,
            logger,
            reader,
            transport,
            metrics: Mutex::new(BoundedQueue::new(config.queue.max_metric_points)),
            logs,
        }
    }

    /// The latest values of every series (what `/metrics` shows).
    pub fn latest(&self) -> &LatestValues {
        &self.latest
    }

    /// Makes `batch` the latest values of its source; they go out with the next export.
    pub fn record(&self, batch: &Batch) {
        for (metric, key) in self.latest.replace(batch) {
            self.register(&metric, key);
        }
    }

    /// The meter of `key`: the shared one, or the one of a source's epoch after a
    /// counter reset (its instruments start their sums anew).
    fn meter_for(&self, key: &MeterKey) -> Meter {
        match key {
            None => self.meter.clone(),
            Some((source, epoch)) => self.meter_provider.meter_with_scope(
                InstrumentationScope::builder("vigil")
                    .with_attributes([
                        KeyValue::new("vigil.collector", source.clone()),
                        KeyValue::new("vigil.series.epoch", i64::from(*epoch)),
                    ])
                    .build(),
            ),
        }
    }

    /// Registers an observable instrument for `metric` in the meter of `key`.
    fn register(&self, metric: &MetricDesc, key: MeterKey) {
        let latest = self.latest.clone();
        let name = metric.name.clone();
        let meter = self.meter_for(&key);
        let callback = move |observer: &dyn opentelemetry::metrics::AsyncInstrument<f64>| {
            latest.for_each(&name, &key, |value, attributes| {
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
                meter
                    .f64_observable_gauge(name)
                    .with_unit(unit)
                    .with_description(description)
                    .with_callback(callback)
                    .build();
            }
            MetricKind::Counter => {
                meter
                    .f64_observable_counter(name)
                    .with_unit(unit)
                    .with_description(description)
                    .with_callback(callback)
                    .build();
            }
            MetricKind::UpDownCounter => {
                meter
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

    /// Takes a snapshot of every metric into the queue (nothing when export is off).
    pub fn snapshot(&self) {
        if self.transport.is_none() {
            return;
        }
        let mut rm = ResourceMetrics::default();
        if let Err(error) = self.reader.collect(&mut rm) {
            tracing::debug!("metric collection failed: {error}");
            return;
        }
        let points = datapoints(&rm);
        if points == 0 {
            return;
        }
        if let Ok(mut queue) = self.metrics.lock() {
            queue.push(rm, points);
        }
    }

    /// Sends what is queued, oldest first: metric snapshots, then log records. Stops at
    /// the first failed request (its data stays queued) and reports it. Cancel-safe: a
    /// request abandoned midway (dropped future) leaves its data queued.
    pub async fn send(&self) -> Result<(), ExportError> {
        let Some(transport) = &self.transport else {
            return Ok(());
        };
        // What is taken out goes back into its queue if this future is dropped mid-request.
        loop {
            let taken = Taken::take(&self.metrics, 1);
            let Some((rm, _)) = taken.entries().first() else {
                break;
            };
            match transport.metrics.export(rm).await {
                Ok(()) => taken.sent(),
                Err(e) => {
                    taken.failed();
                    return Err(self.failure("metrics", e));
                }
            }
        }
        loop {
            let taken = Taken::take(&self.logs, LOG_CHUNK);
            if taken.is_empty() {
                break;
            }
            let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
                taken.entries().iter().map(|((r, s), _)| (r, s)).collect();
            let result = transport.logs.export(LogBatch::new(&refs)).await;
            drop(refs);
            match result {
                Ok(()) => taken.sent(),
                Err(e) => {
                    taken.failed();
                    return Err(self.failure("logs", e));
                }
            }
        }
        Ok(())
    }

    fn failure(&self, signal: &'static str, error: impl std::fmt::Display) -> ExportError {
        ExportError::Send {
            signal,
            endpoint: self.endpoint.clone(),
            reason: error.to_string(),
        }
    }

    /// Whether nothing waits to be sent.
    pub fn is_drained(&self) -> bool {
        let metrics = self.metrics.lock().map(|q| q.is_empty()).unwrap_or(true);
        metrics && self.logs.lock().map(|q| q.is_empty()).unwrap_or(true)
    }

    /// Drops what is still queued (shutdown past its deadline); returns the metric
    /// datapoints and log records dropped.
    pub fn drop_unsent(&self) -> (u64, u64) {
        let metrics = self.metrics.lock().map(|mut q| q.drop_all()).unwrap_or(0);
        let logs = self.logs.lock().map(|mut q| q.drop_all()).unwrap_or(0);
        (metrics, logs)
    }

    /// The queues' totals.
    pub fn stats(&self) -> ExportStats {
        ExportStats {
            metrics: self.metrics.lock().map(|q| q.stats()).unwrap_or_default(),
            logs: self.logs.lock().map(|q| q.stats()).unwrap_or_default(),
        }
    }

    /// Stops the providers and clients; send what is queued first.
    pub fn shutdown(&self) {
        let _ = self.meter_provider.shutdown();
        let _ = self.logger_provider.shutdown();
        if let Some(transport) = &self.transport {
            let _ = transport.metrics.shutdown();
            let _ = transport.logs.shutdown();
        }
    }
}

fn resource(host: &str) -> Resource {
    Resource::builder()
        .with_service_name("vigil")
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("host.name", host.to_owned()),
        ])
        .build()
}
