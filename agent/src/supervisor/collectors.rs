//! The collector tasks: one per collector, each running rounds on its interval and
//! handing every batch to the pipeline. A task told to stop finishes its round in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::collect::{Collector, Round};
use crate::pipeline::Pipeline;
use crate::status::StatusBoard;
use crate::sync::LockExt;
use crate::telemetry::Event;

/// A running collector: told to stop through `stop`, finished when `handle` is.
struct CollectorTask {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// Completes once `stop` turns true (or its sender is gone).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The running collector tasks, by collector name.
pub(super) struct CollectorTasks {
    pipeline: Arc<Pipeline>,
    board: Arc<StatusBoard>,
    running: Mutex<HashMap<String, CollectorTask>>,
    /// Turns true once to stop every task.
    all_stop: watch::Receiver<bool>,
}

impl CollectorTasks {
    pub(super) fn new(
        pipeline: Arc<Pipeline>,
        board: Arc<StatusBoard>,
        all_stop: watch::Receiver<bool>,
    ) -> Self {
        CollectorTasks {
            pipeline,
            board,
            running: Mutex::default(),
            all_stop,
        }
    }

    /// Runs `collector` on its interval in a task of its own, in place of any running
    /// collector of the same name.
    pub(super) fn spawn(&self, mut collector: Box<dyn Collector>) {
        let name = collector.name().to_owned();
        self.board.collector_added(&name);
        let (stop, mut own_stop) = watch::channel(false);
        let mut all_stop = self.all_stop.clone();
        let pipeline = self.pipeline.clone();
        let board = self.board.clone();
        let handle = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(collector.interval());
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped(&mut own_stop) => break,
                    _ = stopped(&mut all_stop) => break,
                }
                round(&pipeline, &board, collector.as_mut()).await;
            }
        });
        if let Some(old) = self
            .running
            .locked()
            .insert(name, CollectorTask { stop, handle })
        {
            let _ = old.stop.send(true);
        }
    }

    /// Stops collector `name` (its round in flight finishes); returns whether it ran.
    pub(super) fn stop(&self, name: &str) -> bool {
        match self.running.locked().remove(name) {
            Some(old) => {
                let _ = old.stop.send(true);
                true
            }
            None => false,
        }
    }

    /// Tells every task to stop and hands back their handles, to wait for.
    pub(super) fn stop_all(&self) -> Vec<(String, JoinHandle<()>)> {
        self.running
            .locked()
            .drain()
            .map(|(name, task)| {
                let _ = task.stop.send(true);
                (name, task.handle)
            })
            .collect()
    }
}

/// Runs one collection round of `collector` through the pipeline.
pub(super) async fn round(
    pipeline: &Arc<Pipeline>,
    board: &StatusBoard,
    collector: &mut dyn Collector,
) {
    let started = Instant::now();
    match collector.collect().await {
        Ok(Round {
            batch,
            failure: None,
        }) => {
            pipeline.count(Event::Collected {
                collector: collector.name(),
                duration: started.elapsed(),
                points: batch.len(),
            });
            board.collector_succeeded(collector.name(), SystemTime::now());
            pipeline.process(batch).await;
        }
        // The source is down: a failed round (the collector logs once per outage),
        // whose batch (`<kind>.up = 0`) is still exported and evaluated.
        Ok(Round {
            batch,
            failure: Some(error),
        }) => {
            pipeline.count(Event::CollectFailed {
                collector: collector.name(),
            });
            board.collector_failed(collector.name(), SystemTime::now(), error);
            pipeline.process(batch).await;
        }
        Err(error) => {
            tracing::warn!(collector = collector.name(), "{error}");
            pipeline.count(Event::CollectFailed {
                collector: collector.name(),
            });
            board.collector_failed(collector.name(), SystemTime::now(), error.to_string());
            pipeline.record_self_telemetry();
        }
    }
}
