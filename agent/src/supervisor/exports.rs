//! The export loop: every export interval a snapshot goes into the queue and the queue
//! is sent, backing off after failures (one warning per outage, the first of them with
//! a hint on what to do, one message on recovery); at shutdown, delivery retries until
//! the deadline and counts what is left.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::collectors::stopped;
use crate::backoff::Backoff;
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::status::StatusBoard;

/// Wait between delivery attempts while shutting down.
const SHUTDOWN_RETRY: Duration = Duration::from_millis(200);

/// An export tick: queues the agent's own totals and the export totals as of now and
/// closes the tick, so what was collected since the previous one goes out with the next
/// send.
pub(super) fn snapshot(pipeline: &Pipeline) {
    pipeline.record_self_telemetry();
    pipeline.record_export_telemetry();
    pipeline.exporter().snapshot();
}

/// Sends what is queued; remembers the outcome for `/status`.
async fn send_queued(pipeline: &Pipeline, board: &StatusBoard) -> Result<(), String> {
    let result = pipeline.exporter().send().await.map_err(|e| e.to_string());
    board.export_attempted(result.clone());
    result
}

/// What a newcomer can do when the first export fails (no collector listening at the
/// endpoint, typically): start one, point vigil at one, print the data instead, or look
/// at the status page.
pub(super) fn first_failure_hint(config: &Config) -> String {
    // Metrics are what a newcomer looks for; their settings include the OTEL_* variables.
    let metrics = &config.export.settings.metrics;
    let port = url::Url::parse(&metrics.url)
        .ok()
        .and_then(|url| url.port_or_known_default())
        .map_or_else(|| "its port".to_owned(), |port| port.to_string());
    let protocol = match metrics.protocol {
        crate::config::OtlpProtocol::Grpc => "grpc",
        crate::config::OtlpProtocol::HttpProtobuf => "http",
    };
    let status_page = if config.http.enabled {
        format!(
            ", or open the status page at {}://{}/",
            if config.http.tls.is_some() {
                "https"
            } else {
                "http"
            },
            config.http.listen
        )
    } else {
        String::new()
    };
    // Not suggested when it is on already.
    let debug = if config.export.debug.is_none() {
        ", print what is collected on stdout by adding `[export.debug]` with `verbosity = \"normal\"` \
         to a config file (vigil run --config FILE)"
    } else {
        ""
    };
    format!(
        ". To see the data: start an OpenTelemetry Collector with an otlp receiver ({protocol}) on port {port} \
         (e.g. `otelcol` with receivers.otlp.protocols.{protocol}.endpoint = \"localhost:{port}\"), \
         point vigil at yours with OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:{port} (or `endpoint` in [export.otlp])\
         {debug}{status_page}"
    )
}

/// Every `interval`: snapshot the metrics into the queue, then send the queue, unless
/// a failure put the next attempt further off (the wait doubles per failed attempt,
/// from `interval` up to `max_backoff`). The first failure's warning ends with `hint`.
pub(super) fn spawn(
    pipeline: Arc<Pipeline>,
    board: Arc<StatusBoard>,
    (interval, max_backoff): (Duration, Duration),
    hint: String,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut hint = Some(hint);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut backoff = Backoff::new(interval, max_backoff);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopped(&mut stop) => break,
            }
            snapshot(&pipeline);
            if !backoff.ready(Instant::now().into_std()) {
                continue;
            }
            match send_queued(&pipeline, &board).await {
                Ok(()) => {
                    if backoff.succeeded().is_some() {
                        tracing::info!("OTLP export works again; the queued data was sent");
                    }
                }
                Err(error) => {
                    if backoff.failed(Instant::now().into_std()).first {
                        tracing::warn!(
                            "{error}; retrying with back-off up to {max_backoff:?}, this is reported once per outage{}",
                            hint.take().unwrap_or_default()
                        );
                    } else {
                        tracing::debug!("{error}");
                    }
                }
            }
        }
    })
}

/// Sends what is queued, retrying until `deadline`; whatever is still queued then is
/// dropped, counted and reported. A request still waiting for its answer at the
/// deadline is abandoned (its data stays queued, so it is counted as dropped too).
pub(super) async fn deliver_until(pipeline: &Pipeline, board: &StatusBoard, deadline: Instant) {
    let mut last_error = None;
    loop {
        match tokio::time::timeout_at(deadline, send_queued(pipeline, board)).await {
            Ok(Ok(())) if pipeline.exporter().is_drained() => return,
            Ok(Ok(())) => {}
            Ok(Err(error)) => last_error = Some(error),
            Err(_) => {
                last_error =
                    Some("an export request was still unanswered at the deadline".to_owned());
                break;
            }
        }
        if Instant::now() + SHUTDOWN_RETRY >= deadline {
            break;
        }
        tokio::time::sleep(SHUTDOWN_RETRY).await;
    }
    let (points, records) = pipeline.exporter().drop_unsent();
    if points + records > 0 {
        tracing::warn!(
            "shutdown deadline reached: {points} metric datapoints and {records} log records were not sent{}",
            last_error.map(|e| format!(" ({e})")).unwrap_or_default()
        );
    }
}
