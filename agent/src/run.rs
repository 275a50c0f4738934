//! Running the agent: a task per collector, the export loop with retry and back-off,
//! and the graceful stop (rounds in flight finish, the queue is flushed within the
//! shutdown deadline).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::collect::Collector;
use crate::config::Config;
use crate::pipeline::{Agent, build_collectors};

/// Wait between delivery attempts while shutting down.
const SHUTDOWN_RETRY: Duration = Duration::from_millis(200);

/// A running collector: told to stop through `stop`, finished when `handle` is.
pub struct CollectorTask {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// Completes once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl Agent {
    /// Runs `collector` on its interval in a task of its own; a round in flight when it
    /// is told to stop still finishes (its batch is evaluated and queued).
    pub fn spawn_collector(self: &Arc<Self>, mut collector: Box<dyn Collector>) {
        let agent = self.clone();
        let name = collector.name().to_owned();
        let (stop, mut own_stop) = watch::channel(false);
        let mut agent_stop = self.stop.subscribe();
        let handle = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(collector.interval());
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped(&mut own_stop) => break,
                    _ = stopped(&mut agent_stop) => break,
                }
                agent.tick(collector.as_mut()).await;
            }
        });
        if let Ok(mut running) = self.collectors.lock()
            && let Some(old) = running.insert(name, CollectorTask { stop, handle })
        {
            let _ = old.stop.send(true);
        }
    }

    /// Stops the collector `name` (its round in flight finishes) and starts it again
    /// with its part of `config`, if it is still configured.
    pub(crate) fn restart_collector(self: &Arc<Self>, name: &str, config: &Config) {
        if let Ok(mut running) = self.collectors.lock()
            && let Some(old) = running.remove(name)
        {
            let _ = old.stop.send(true);
        }
        let collectors = match build_collectors(config, &self.host) {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(collector = name, "cannot restart collector: {error}");
                return;
            }
        };
        match collectors.into_iter().find(|c| c.name() == name) {
            Some(collector) => {
                tracing::info!(collector = name, "collector restarted with its new config");
                self.spawn_collector(collector);
            }
            None => tracing::info!(
                collector = name,
                "collector stopped: it is no longer configured"
            ),
        }
    }

    /// An export tick: queues the export totals as of now and closes the tick, so what
    /// was collected since the previous one goes out with the next send.
    fn snapshot(&self) {
        self.record_export_telemetry();
        self.exporter.snapshot();
    }

    /// Sends what is queued; remembers the outcome for `/status`.
    async fn send_queued(&self) -> Result<(), String> {
        let result = self.exporter.send().await.map_err(|e| e.to_string());
        if let Ok(mut health) = self.export_health.lock() {
            *health = Some(result.clone());
        }
        result
    }

    /// Every `interval`: close the tick (see [`Self::snapshot`]), then send the queue,
    /// unless a failure put the next attempt further off (the wait doubles per failed
    /// attempt, up to `max_backoff`). One warning per outage, one message on recovery.
    fn spawn_exports(
        self: &Arc<Self>,
        interval: Duration,
        max_backoff: Duration,
    ) -> JoinHandle<()> {
        let agent = self.clone();
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            let mut backoff = interval;
            let mut next_attempt = Instant::now();
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped(&mut stop) => break,
                }
                agent.snapshot();
                if Instant::now() < next_attempt {
                    continue;
                }
                match agent.send_queued().await {
                    Ok(()) => {
                        if failing {
                            failing = false;
                            tracing::info!("OTLP export works again; the queued data was sent");
                        }
                        backoff = interval;
                    }
                    Err(error) => {
                        if !failing {
                            failing = true;
                            tracing::warn!(
                                "{error}; retrying with back-off up to {max_backoff:?}, this is reported once per outage"
                            );
                        } else {
                            tracing::debug!("{error}");
                        }
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(max_backoff);
                    }
                }
            }
        })
    }

    /// Sends what is queued, retrying until `deadline`; whatever is still queued then
    /// is dropped, counted and reported.
    pub async fn deliver_until(self: &Arc<Self>, deadline: Instant) {
        let mut last_error = None;
        loop {
            match self.send_queued().await {
                Ok(()) if self.exporter.is_drained() => return,
                Ok(()) => {}
                Err(error) => last_error = Some(error),
            }
            if Instant::now() + SHUTDOWN_RETRY >= deadline {
                break;
            }
            tokio::time::sleep(SHUTDOWN_RETRY).await;
        }
        let (points, records) = self.exporter.drop_unsent();
        if points + records > 0 {
            tracing::warn!(
                "shutdown deadline reached: {points} metric datapoints and {records} log records were not sent{}",
                last_error.map(|e| format!(" ({e})")).unwrap_or_default()
            );
        }
    }

    fn shutdown_timeout(&self) -> Duration {
        self.config
            .lock()
            .map(|c| c.agent.shutdown_timeout)
            .unwrap_or(Duration::from_secs(10))
    }

    /// Collects one round from every collector, evaluates, exports and flushes.
    pub async fn run_once(self: &Arc<Self>, collectors: &mut [Box<dyn Collector>]) {
        for collector in collectors.iter_mut() {
            self.tick(collector.as_mut()).await;
        }
        self.snapshot();
        let deadline = Instant::now() + self.shutdown_timeout();
        tokio::join!(
            self.deliver_until(deadline),
            self.deliver_alerts_until(deadline)
        );
    }

    /// Runs every collector on its interval, applies file changes (when watching) and
    /// `reload` requests (SIGHUP, `POST /reload`), until `stop` completes; then stops
    /// gracefully: collectors finish their round in flight, and everything queued is
    /// sent within `agent.shutdown_timeout`.
    pub async fn run_until(
        self: &Arc<Self>,
        collectors: Vec<Box<dyn Collector>>,
        mut reload: tokio::sync::mpsc::UnboundedReceiver<()>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        for collector in collectors {
            self.spawn_collector(collector);
        }
        let (interval, max_backoff) = self
            .config
            .lock()
            .map(|c| (c.export.otlp.interval, c.export.queue.max_backoff))
            .unwrap_or((Duration::from_secs(10), Duration::from_secs(120)));
        let exports = self.spawn_exports(interval, max_backoff);
        let (changes_tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
        let (watching, plugin_dir) = match self.config.lock() {
            Ok(c) => (c.plugins.watch, c.plugins.dir.clone()),
            Err(_) => (false, std::path::PathBuf::new()),
        };
        let _watch = if watching {
            match crate::watch::watch(&plugin_dir, self.config_path.as_deref(), changes_tx) {
                Ok(watch) => Some(watch),
                Err(e) => {
                    tracing::warn!("hot reload is off: {e}");
                    None
                }
            }
        } else {
            None
        };
        crate::service::notify_ready();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(change) = changes.recv() => self.apply(change).await,
                Some(()) = reload.recv() => {
                    tracing::info!("reload requested");
                    self.reload_config().await;
                    self.rescan_plugins().await;
                }
            }
        }
        self.stop_gracefully(exports).await;
    }

    /// Stops collectors and the export loop (rounds in flight finish), then sends
    /// everything queued before the shutdown deadline.
    async fn stop_gracefully(self: &Arc<Self>, exports: JoinHandle<()>) {
        let timeout = self.shutdown_timeout();
        let deadline = Instant::now() + timeout;
        crate::service::notify_stopping();
        tracing::info!(
            "stopping: finishing rounds in flight, then sending what is queued (deadline {timeout:?})"
        );
        let _ = self.stop.send(true);
        let mut tasks: Vec<(String, JoinHandle<()>)> = self
            .collectors
            .lock()
            .map(|mut running| {
                running
                    .drain()
                    .map(|(name, task)| {
                        let _ = task.stop.send(true);
                        (name, task.handle)
                    })
                    .collect()
            })
            .unwrap_or_default();
        tasks.push(("export".to_owned(), exports));
        for (name, mut handle) in tasks {
            if tokio::time::timeout_at(deadline, &mut handle)
                .await
                .is_err()
            {
                tracing::warn!(task = %name, "still busy at the shutdown deadline; abandoned");
                handle.abort();
            }
        }
        self.snapshot();
        tokio::join!(
            self.deliver_until(deadline),
            self.deliver_alerts_until(deadline)
        );
        tracing::info!("stopped");
    }
}
