//! One task per Alertmanager: it keeps the alerts firing now, posts changes at once and
//! everything again each `resend_interval`, and retries failures with back-off of its own.

use crate::sync::LockExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::HttpClient;
use super::auth::Auth;
use super::payload::PostableAlert;
use crate::alert::AlertKey;
use crate::backoff::Backoff;

/// First pause after a failed post; it doubles with every further failure.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest pause between retries (shorter when `resend_interval` is).
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a resolved alert is retried; by then Alertmanager has resolved it by itself
/// (after its `resolve_timeout`, 5m by default, without a re-send).
pub const RESOLVED_RETENTION: Duration = Duration::from_secs(15 * 60);
/// Most alerts in one request.
const BATCH_SIZE: usize = 64;

pub use crate::telemetry::DeliveryStats;

/// A change for the delivery tasks.
#[derive(Debug)]
pub(super) enum Update {
    Firing(AlertKey, PostableAlert),
    Resolved(AlertKey, PostableAlert),
}

/// What a delivery task receives.
#[derive(Debug)]
pub(super) enum Message {
    Update(Arc<Update>),
    /// Answer once everything received before has been delivered.
    Flush(oneshot::Sender<()>),
}

/// A failed post: the `error.type` it is counted under and what to tell the operator.
#[derive(Debug)]
pub(super) struct Failure {
    cause: &'static str,
    message: String,
}

/// Delivery to one Alertmanager.
pub(super) struct Target {
    url: String,
    endpoint: reqwest::Url,
    /// Shared by the sink's tasks; the sink swaps it when the TLS files change.
    client: Arc<ArcSwap<HttpClient>>,
    auth: Auth,
    stats: Arc<Mutex<DeliveryStats>>,
    resend_interval: Duration,
    backoff_max: Duration,
    /// How long a resolved alert is retried: [`RESOLVED_RETENTION`] (shorter in tests).
    resolved_retention: Duration,
    /// Alerts firing now, as last posted.
    firing: BTreeMap<AlertKey, PostableAlert>,
    /// Resolved alerts not yet delivered, with when to give up on them.
    resolved: BTreeMap<AlertKey, (PostableAlert, Instant)>,
}

impl Target {
    /// Delivers until the sink is dropped.
    pub(super) async fn run(mut self, mut messages: mpsc::UnboundedReceiver<Message>) {
        let mut due = false;
        let mut next_resend = Instant::now() + self.resend_interval;
        let mut next_try = Instant::now();
        let mut backoff = Backoff::new(BACKOFF_MIN.min(self.backoff_max), self.backoff_max);
        let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
        loop {
            let wake = if due { next_try } else { next_resend };
            tokio::select! {
                message = messages.recv() => {
                    let Some(message) = message else { break };
                    let mut next = Some(message);
                    while let Some(message) = next {
                        match message {
                            Message::Update(update) => {
                                self.apply(&update);
                                due = true;
                            }
                            Message::Flush(done) if due => flushes.push(done),
                            Message::Flush(done) => {
                                let _ = done.send(());
                            }
                        }
                        next = messages.try_recv().ok();
                    }
                }
                () = tokio::time::sleep_until(wake) => due = true,
            }
            if !due || Instant::now() < next_try {
                continue;
            }
            let before = self.resolved.len();
            self.resolved
                .retain(|_, (_, until)| *until > Instant::now());
            let expired = before - self.resolved.len();
            if expired > 0 {
                tracing::warn!(
                    alertmanager = %self.url,
                    "{expired} resolved alerts were not accepted by Alertmanager {} within {:?} and are given up; Alertmanager resolves them itself after its resolve_timeout",
                    self.url,
                    self.resolved_retention
                );
                self.count(|s| s.dropped += expired as u64);
            }
            match self.post_all().await {
                Ok(sent) => {
                    due = false;
                    self.report_pending(0);
                    for done in flushes.drain(..) {
                        let _ = done.send(());
                    }
                    if backoff.succeeded().is_some() {
                        tracing::info!(
                            alertmanager = %self.url,
                            "Alertmanager {} accepts alerts again ({sent} delivered)",
                            self.url
                        );
                    }
                    next_resend = Instant::now() + self.resend_interval;
                }
                Err(failure) => {
                    self.report_pending(self.firing.len() + self.resolved.len());
                    self.count(|s| *s.failed.entry(failure.cause).or_default() += 1);
                    let failed = backoff.failed(Instant::now().into_std());
                    if failed.first {
                        tracing::warn!(
                            alertmanager = %self.url,
                            cause = failure.cause,
                            "cannot deliver alerts to Alertmanager {}: {}; retrying with back-off (up to {:?}), reported once per outage",
                            self.url,
                            failure.message,
                            self.backoff_max
                        );
                    } else {
                        tracing::debug!(alertmanager = %self.url, "{}", failure.message);
                    }
                    next_try = Instant::now() + failed.retry_in;
                }
            }
        }
    }

    fn apply(&mut self, update: &Update) {
        match update {
            Update::Firing(key, alert) => {
                self.resolved.remove(key);
                self.firing.insert(key.clone(), alert.clone());
            }
            Update::Resolved(key, alert) => {
                self.firing.remove(key);
                let until = Instant::now() + self.resolved_retention;
                self.resolved.insert(key.clone(), (alert.clone(), until));
            }
        }
    }

    /// Posts every firing and every undelivered resolved alert; returns how many.
    async fn post_all(&mut self) -> Result<usize, Failure> {
        let alerts: Vec<&PostableAlert> = self
            .firing
            .values()
            .chain(self.resolved.values().map(|(alert, _)| alert))
            .collect();
        let total = alerts.len();
        for chunk in alerts.chunks(BATCH_SIZE) {
            self.post(chunk).await?;
            self.count(|s| s.sent += chunk.len() as u64);
        }
        self.resolved.clear();
        Ok(total)
    }

    async fn post(&self, alerts: &[&PostableAlert]) -> Result<(), Failure> {
        if alerts.is_empty() {
            return Ok(());
        }
        let http = self.client.load_full();
        let request = http.client.post(self.endpoint.clone()).json(alerts);
        let response = self.auth.apply(request).send().await.map_err(|e| {
            let cause = if e.is_timeout() { "timeout" } else { "connect" };
            let text = crate::export::error_chain(&e);
            let hint = crate::tls::hint("export.alertmanager.tls", &text, &http.cert_asked)
                .unwrap_or_else(|| "is Alertmanager running and reachable there?".to_owned());
            Failure {
                cause,
                message: format!("{text} ({hint})"),
            }
        })?;
        let status = response.status();
        if status.is_success() {
            // A client certificate asked for before was optional.
            http.cert_asked.take();
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        let body: String = body.trim().chars().take(300).collect();
        let (cause, hint) = if status.is_client_error() {
            (
                "status_4xx",
                "check the URL, the credentials and that it serves the v2 API",
            )
        } else {
            ("status_5xx", "Alertmanager reported a problem of its own")
        };
        Err(Failure {
            cause,
            message: format!("{} answered {status}: {body} ({hint})", self.endpoint),
        })
    }

    /// Sets the gauge of alerts waiting for this Alertmanager to accept them.
    fn report_pending(&self, alerts: usize) {
        self.count(|s| s.pending = alerts);
    }

    fn count(&self, update: impl FnOnce(&mut DeliveryStats)) {
        update(&mut self.stats.locked());
    }
}

impl Target {
    /// A task's state for `url` (posting to `endpoint`), before it runs; it counts its
    /// deliveries in `stats`.
    pub(super) fn new(
        url: String,
        endpoint: reqwest::Url,
        client: Arc<ArcSwap<HttpClient>>,
        auth: Auth,
        stats: Arc<Mutex<DeliveryStats>>,
        resend_interval: Duration,
    ) -> Self {
        Target {
            url,
            endpoint,
            client,
            auth,
            stats,
            resend_interval,
            backoff_max: resend_interval.min(BACKOFF_MAX),
            resolved_retention: RESOLVED_RETENTION,
            firing: BTreeMap::new(),
            resolved: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dropped(stats: &Mutex<DeliveryStats>) -> f64 {
        stats.lock().unwrap().dropped as f64
    }

    fn failures(stats: &Mutex<DeliveryStats>) -> f64 {
        stats.lock().unwrap().failed.values().sum::<u64>() as f64
    }

    /// A resolved alert an Alertmanager never accepts is retried for the retention
    /// ([`RESOLVED_RETENTION`], 15 minutes; 2 s here), then given up and counted as dropped.
    #[tokio::test]
    async fn a_resolved_alert_is_retried_for_the_retention_then_dropped_and_counted() {
        assert_eq!(
            RESOLVED_RETENTION,
            Duration::from_secs(15 * 60),
            "the README says 15 min"
        );
        let retention = Duration::from_secs(2);
        // A port nothing listens on: every post fails at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let telemetry = Arc::new(Mutex::new(DeliveryStats::default()));
        let mut target = Target::new(
            url.clone(),
            reqwest::Url::parse(&format!("{url}/api/v2/alerts")).unwrap(),
            Arc::new(ArcSwap::from_pointee(HttpClient {
                client: reqwest::Client::builder()
                    .tls_backend_preconfigured(crate::tls::plain_client_config().unwrap())
                    .build()
                    .unwrap(),
                cert_asked: Default::default(),
            })),
            Auth::None,
            telemetry.clone(),
            Duration::from_secs(1),
        );
        target.resolved_retention = retention;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(target.run(rx));
        let key = AlertKey {
            plugin: "p".into(),
            rule: "r".into(),
            key: String::new(),
        };
        let alert = PostableAlert {
            labels: BTreeMap::from([("alertname".to_owned(), "r".to_owned())]),
            annotations: BTreeMap::new(),
            starts_at: "2026-01-01T00:00:00Z".into(),
            ends_at: Some("2026-01-01T00:01:00Z".into()),
            generator_url: "http://h/".into(),
        };
        let sent = Instant::now();
        tx.send(Message::Update(Arc::new(Update::Resolved(key, alert))))
            .unwrap();

        let mut failed_while_retained = false;
        while dropped(&telemetry) == 0.0 {
            assert!(sent.elapsed() < Duration::from_secs(60), "never given up");
            failed_while_retained |= failures(&telemetry) >= 2.0;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let given_up = sent.elapsed();
        assert_eq!(dropped(&telemetry), 1.0);
        assert!(given_up >= retention, "given up after {given_up:?}");
        assert!(failed_while_retained, "retried while retained");
        drop(tx);
        task.await.unwrap();
    }
}
