//! The OTLP receiver's task: batches received from applications go through the pipeline
//! in arrival order, and the receiver's totals are published every export interval
//! (source `vigil.receive`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::collectors::stopped;
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::receive::OtlpReceiver;

/// Starts `[receive.otlp]` when it is enabled: listening, and a task handing what it
/// receives to `pipeline` until `stop` turns true. A receiver that cannot start is
/// logged; the agent runs on without it.
pub(super) async fn start(
    config: &Config,
    host: &str,
    pipeline: Arc<Pipeline>,
    stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    let settings = &config.receive.otlp;
    if !settings.enabled {
        return None;
    }
    let (sink, batches) = mpsc::channel(settings.max_pending_requests);
    let receiver = match OtlpReceiver::start(settings, host, sink, stop.clone()).await {
        Ok(receiver) => receiver,
        Err(e) => {
            tracing::error!("{e}; running without the OTLP receiver");
            return None;
        }
    };
    let listening: Vec<String> = [("grpc", receiver.grpc_addr), ("http", receiver.http_addr)]
        .into_iter()
        .filter_map(|(transport, addr)| addr.map(|a| format!("OTLP/{transport} on {a}")))
        .collect();
    tracing::info!("receiving application metrics: {}", listening.join(", "));
    let interval = config.export.settings.interval;
    Some(tokio::spawn(run(
        receiver,
        batches,
        pipeline,
        host.to_owned(),
        interval,
        stop,
    )))
}

async fn run(
    receiver: OtlpReceiver,
    mut batches: mpsc::Receiver<Vec<crate::model::Batch>>,
    pipeline: Arc<Pipeline>,
    host: String,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = batches.recv() => match received {
                Some(received) => pipeline.process_all(received).await,
                None => break,
            },
            _ = ticker.tick() => {
                let totals = receiver.totals();
                pipeline.publish_own(crate::telemetry::receive_batch(&host, &totals));
            }
            _ = stopped(&mut stop) => break,
        }
    }
    // What was received before the stop still goes through.
    batches.close();
    while let Some(received) = batches.recv().await {
        pipeline.process_all(received).await;
    }
    pipeline.publish_own(crate::telemetry::receive_batch(&host, &receiver.totals()));
}
