//! OTLP export of batches (metrics) and alert events (log records), gRPC or HTTP/protobuf.
//!
//! Every batch is kept whole as it is recorded, with the start times of its cumulative
//! series, so every collected sample leaves the host stamped with its collection time,
//! however the collection and export intervals relate. An export tick ([`OtlpExporter::snapshot`])
//! moves what was recorded since the previous tick into the queue as one group;
//! [`OtlpExporter::send`] sends each group as one request (split above
//! [`MAX_REQUEST_POINTS`]), then the queued log records, oldest first. A failed request
//! leaves its data queued for the next attempt; a full queue (or a full tick, for an
//! export interval far longer than the collection interval) drops its oldest batches
//! and counts their datapoints.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::ExportError;
use super::proto::{self, StampedBatch};
use super::queue::{BoundedQueue, QueueStats, Taken};
use super::start_time::StartTimes;
use super::store::LatestValues;
use super::transport::{Rejection, Transport};
use crate::alert::AlertEvent;
use crate::config::{ExportConfig, ExportSettings};
use crate::model::Batch;
use crate::sync::LockExt;

/// Log records sent in one request at most.
const LOG_CHUNK: usize = 512;
/// Datapoints in one metrics request at most (a batch is never split, so a single
/// larger batch goes alone): keeps requests well below receivers' message size limits.
pub const MAX_REQUEST_POINTS: u64 = 8192;

pub use crate::telemetry::ExportStats;

/// A batch waiting in the queue, with the export tick that queued it.
struct Queued {
    group: u64,
    stamped: StampedBatch,
}

/// The metric queue, the batches recorded since the last tick, and their start times.
struct MetricQueue {
    /// Batches of past ticks, ready to send.
    queue: BoundedQueue<Queued>,
    /// Batches recorded since the last tick (bounded like the queue).
    tick: BoundedQueue<StampedBatch>,
    start_times: StartTimes,
    /// Export ticks so far: the group the next tick's batches get.
    ticks: u64,
}

impl MetricQueue {
    fn new(capacity: u64) -> Self {
        MetricQueue {
            queue: BoundedQueue::new(capacity),
            tick: BoundedQueue::new(capacity),
            start_times: StartTimes::default(),
            ticks: 0,
        }
    }

    /// Moves the batches recorded since the last tick into the queue as one group.
    fn close_tick(&mut self) {
        let group = self.ticks;
        self.ticks += 1;
        while let Some((stamped, weight)) = self.tick.take() {
            self.queue.push(Queued { group, stamped }, weight);
        }
    }

    /// Takes the oldest group's batches out, up to [`MAX_REQUEST_POINTS`], with their
    /// weights.
    fn take_request(&mut self) -> Vec<(Queued, u64)> {
        let mut taken: Vec<(Queued, u64)> = Vec::new();
        let mut points = 0;
        while let Some(front) = self.queue.front() {
            let group = taken.first().map_or(front.group, |(q, _)| q.group);
            let weight = front.stamped.batch.len() as u64;
            if front.group != group || (!taken.is_empty() && points + weight > MAX_REQUEST_POINTS) {
                break;
            }
            let Some(entry) = self.queue.take() else {
                break;
            };
            points += entry.1;
            taken.push(entry);
        }
        taken
    }
}

/// Sends metrics and alert events to an OTLP endpoint, and keeps the latest value of
/// every series for `/metrics` and the status page.
pub struct OtlpExporter {
    /// Where each signal goes, for messages.
    endpoints: Endpoints,
    resource: Resource,
    latest: LatestValues,
    /// The clients; swapped when a reload finds other TLS files ([`Self::reload_tls`]).
    transport: Option<ArcSwap<Transport>>,
    /// The export settings the exporter was built with (TLS aside, a change needs a restart).
    settings: ExportSettings,
    metrics: Mutex<MetricQueue>,
    logs: Mutex<BoundedQueue<LogRecord>>,
    /// The last partial rejection reported, so each distinct one is logged once.
    last_rejection: Mutex<Option<String>>,
}

/// The URL of each signal.
struct Endpoints {
    metrics: String,
    logs: String,
}

impl OtlpExporter {
    /// Sets up the OTLP clients of both signals from `config.settings`; `host` and the
    /// environment's resource attributes go into the resource. Must be called inside a
    /// Tokio runtime (the gRPC client needs one). Nothing is connected yet: an
    /// unreachable endpoint shows up as export warnings, not here.
    pub fn new(config: &ExportConfig, host: &str) -> Result<Self, ExportError> {
        let transport = Transport::new(&config.settings)?;
        let endpoints = Endpoints {
            metrics: config.settings.metrics.url.clone(),
            logs: config.settings.logs.url.clone(),
        };
        Ok(Self::build(endpoints, host, config, Some(transport)))
    }

    /// An exporter that sends nothing (`export.otlp.enabled = false`); it still keeps
    /// the latest values.
    pub fn disabled(config: &ExportConfig, host: &str) -> Self {
        let endpoints = Endpoints {
            metrics: "(export disabled)".to_owned(),
            logs: "(export disabled)".to_owned(),
        };
        Self::build(endpoints, host, config, None)
    }

    fn build(
        endpoints: Endpoints,
        host: &str,
        config: &ExportConfig,
        transport: Option<Transport>,
    ) -> Self {
        OtlpExporter {
            endpoints,
            resource: proto::resource(&config.settings.resource_attributes(host)),
            latest: LatestValues::default(),
            transport: transport.map(ArcSwap::from_pointee),
            settings: config.settings.clone(),
            metrics: Mutex::new(MetricQueue::new(config.queue.max_metric_points)),
            logs: Mutex::new(BoundedQueue::new(config.queue.max_log_records)),
            last_rejection: Mutex::new(None),
        }
    }

    /// The latest values of every series (what `/metrics` shows).
    pub fn latest(&self) -> &LatestValues {
        &self.latest
    }

    /// Makes `batch` the latest values of its source and queues all its datapoints, with
    /// its collection time, for the next export tick (the batch is shared, not copied).
    pub fn record(&self, batch: &Arc<Batch>) {
        self.latest.replace(batch);
        if self.transport.is_none() || batch.is_empty() {
            return;
        }
        let mut metrics = self.metrics.locked();
        // A received batch carries its sender's start times.
        let starts = if batch.received.is_some() {
            Vec::new()
        } else {
            metrics.start_times.observe(batch)
        };
        let stamped = StampedBatch {
            batch: batch.clone(),
            starts,
        };
        metrics.tick.push(stamped, batch.len() as u64);
    }

    /// Queues an alert event as an OTLP log record (event name `vigil.alert`).
    pub fn emit_alert(&self, event: &AlertEvent) {
        if self.transport.is_none() {
            return;
        }
        self.logs.locked().push(proto::alert_record(event), 1);
    }

    /// Queues a tuning decision as an OTLP log record (event name `vigil.tuning.decision`).
    pub fn emit_decision(&self, decision: &crate::tuning::decision::Decision) {
        if self.transport.is_none() {
            return;
        }
        self.logs.locked().push(proto::decision_record(decision), 1);
    }

    /// An export tick: what was recorded since the previous one is queued, to go out
    /// with the next [`Self::send`] as one request.
    pub fn snapshot(&self) {
        self.metrics.locked().close_tick();
    }

    /// Sends what is queued, oldest first: one metrics request per tick, then log
    /// records. Stops at the first failed request (its data stays queued) and reports it.
    pub async fn send(&self) -> Result<(), ExportError> {
        let Some(transport) = &self.transport else {
            return Ok(());
        };
        let transport = transport.load_full();
        // What is taken out goes back into its queue if this future is dropped mid-request.
        loop {
            let entries = self.metrics.locked().take_request();
            let taken = Taken::settle_later(&self.metrics, |m| &mut m.queue, entries);
            if taken.is_empty() {
                break;
            }
            let batches: Vec<&StampedBatch> =
                taken.entries().iter().map(|(q, _)| &q.stamped).collect();
            match transport.send_metrics(&self.resource, &batches).await {
                Ok(rejection) => {
                    taken.sent();
                    self.report_rejection(&self.endpoints.metrics, rejection);
                }
                Err(reason) => {
                    taken.failed();
                    return Err(self.failure("metrics", &self.endpoints.metrics, reason));
                }
            }
        }
        loop {
            let taken = Taken::take(&self.logs, LOG_CHUNK);
            if taken.is_empty() {
                break;
            }
            let chunk: Vec<LogRecord> = taken.entries().iter().map(|(r, _)| r.clone()).collect();
            match transport
                .send_logs(proto::logs_request(&self.resource, chunk))
                .await
            {
                Ok(rejection) => {
                    taken.sent();
                    self.report_rejection(&self.endpoints.logs, rejection);
                }
                Err(reason) => {
                    taken.failed();
                    return Err(self.failure("logs", &self.endpoints.logs, reason));
                }
            }
        }
        Ok(())
    }

    /// Reads the TLS files of each signal's TLS settings in `new` (the export settings of a
    /// reloaded config) and, if they or the settings differ from those in use, switches to
    /// new clients built with them; the next request uses them. True if it switched.
    /// Nothing changes for plain `http://` endpoints or when the files are unusable (the
    /// error says why).
    pub fn reload_tls(&self, new: &ExportSettings) -> Result<bool, ExportError> {
        let Some(transport) = &self.transport else {
            return Ok(false);
        };
        let mut settings = self.settings.clone();
        settings.metrics.tls = new.metrics.tls.clone();
        settings.logs.tls = new.logs.tls.clone();
        let loaded = Transport::load_tls(&settings)?;
        let fingerprints = [0, 1].map(|i| loaded[i].as_ref().map(|l| l.fingerprint));
        if fingerprints == transport.load().tls_fingerprints() {
            return Ok(false);
        }
        transport.store(Arc::new(Transport::with_tls(&settings, loaded)?));
        Ok(true)
    }

    /// Logs a partial rejection once per distinct message: the receiver took the request
    /// and will not take the rejected part again, so it is not retried.
    fn report_rejection(&self, endpoint: &str, rejection: Rejection) {
        let Some(message) = rejection else {
            return;
        };
        let mut last = self.last_rejection.locked();
        if last.as_deref() == Some(message.as_str()) {
            tracing::debug!("OTLP receiver {endpoint}: {message}");
        } else {
            tracing::warn!(
                "the OTLP receiver at {endpoint} accepted a request but rejected part of it: {message} (logged once per distinct message)"
            );
            *last = Some(message);
        }
    }

    fn failure(&self, signal: &'static str, endpoint: &str, reason: String) -> ExportError {
        ExportError::Send {
            signal,
            endpoint: endpoint.to_owned(),
            reason,
        }
    }

    /// Whether nothing waits to be sent.
    pub fn is_drained(&self) -> bool {
        let metrics = {
            let m = self.metrics.locked();
            m.queue.is_empty() && m.tick.is_empty()
        };
        metrics && self.logs.locked().is_empty()
    }

    /// Drops what is still queued (shutdown past its deadline); returns the metric
    /// datapoints and log records dropped.
    pub fn drop_unsent(&self) -> (u64, u64) {
        let metrics = {
            let mut m = self.metrics.locked();
            m.queue.drop_all() + m.tick.drop_all()
        };
        let logs = self.logs.locked().drop_all();
        (metrics, logs)
    }

    /// The queues' totals.
    pub fn stats(&self) -> ExportStats {
        ExportStats {
            metrics: {
                let m = self.metrics.locked();
                let (queued, tick) = (m.queue.stats(), m.tick.stats());
                QueueStats {
                    queued: queued.queued + tick.queued,
                    dropped: queued.dropped + tick.dropped,
                    ..queued
                }
            },
            logs: self.logs.locked().stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BatchBuilder, MetricDesc, MetricKind, attrs};

    /// A queue that recorded batches of `points` datapoints, closing a tick where the
    /// group number changes.
    fn queue_with(batches: &[(u64, usize)]) -> MetricQueue {
        let m = MetricDesc::new("m", "1", MetricKind::Gauge, "");
        let mut queue = MetricQueue::new(u64::MAX);
        for (group, points) in batches {
            while queue.ticks < *group {
                queue.close_tick();
            }
            let mut b = BatchBuilder::new("s", "h");
            for i in 0..*points {
                b.point(&m, attrs([("i", &i.to_string())]), 1.0);
            }
            let batch = b.build();
            let starts = vec![None; batch.len()];
            let stamped = StampedBatch {
                batch: std::sync::Arc::new(batch),
                starts,
            };
            queue.tick.push(stamped, *points as u64);
        }
        queue
    }

    fn sizes(taken: &[(Queued, u64)]) -> Vec<u64> {
        taken.iter().map(|(_, w)| *w).collect()
    }

    #[test]
    fn a_request_holds_one_closed_tick_and_no_more_than_the_limit() {
        // Ticks 0 and 1 are closed, tick 2 is open.
        let big = MAX_REQUEST_POINTS as usize / 2 + 1;
        let mut q = queue_with(&[(0, 3), (0, 4), (1, big), (1, big), (2, 5)]);
        assert_eq!(sizes(&q.take_request()), [3, 4], "tick 0 alone");
        assert_eq!(
            sizes(&q.take_request()),
            [big as u64],
            "tick 1 split at the limit"
        );
        assert_eq!(sizes(&q.take_request()), [big as u64]);
        assert!(q.take_request().is_empty(), "the open tick waits");
        q.close_tick();
        assert_eq!(sizes(&q.take_request()), [5]);
    }
}
