//! The collector tasks: one per collector, each running rounds on its interval and
//! handing every batch to the pipeline. A task told to stop finishes its round in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::intervals::CollectorIntervals;
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
    /// Each collector's interval, which a tuning action may change while it runs.
    intervals: Arc<CollectorIntervals>,
}

impl CollectorTasks {
    pub(super) fn new(
        pipeline: Arc<Pipeline>,
        board: Arc<StatusBoard>,
        all_stop: watch::Receiver<bool>,
        intervals: Arc<CollectorIntervals>,
    ) -> Self {
        CollectorTasks {
            pipeline,
            board,
            running: Mutex::default(),
            all_stop,
            intervals,
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
        let mut interval = self.intervals.follow(&name, collector.interval());
        let handle = tokio::spawn(async move {
            let mut ticker = new_ticker(*interval.borrow_and_update(), false);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped(&mut own_stop) => break,
                    _ = stopped(&mut all_stop) => break,
                    changed = interval.changed() => {
                        if changed.is_err() {
                            // Its interval was forgotten: the collector left the config.
                            break;
                        }
                        // A new interval counts from now.
                        ticker = new_ticker(*interval.borrow_and_update(), true);
                        continue;
                    }
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
    /// `removed`: it left the config, so its interval override goes too.
    pub(super) fn stop(&self, name: &str, removed: bool) -> bool {
        if removed {
            self.intervals.forget(name);
        }
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

/// A ticker every `period`; its first tick at once, or one period from now when `delayed`.
fn new_ticker(period: std::time::Duration, delayed: bool) -> tokio::time::Interval {
    let mut ticker = if delayed {
        tokio::time::interval_at(tokio::time::Instant::now() + period, period)
    } else {
        tokio::time::interval(period)
    };
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
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
        }
    }
}
