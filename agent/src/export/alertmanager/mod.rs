//! Delivery of alerts to Prometheus Alertmanager (`POST /api/v2/alerts`).
//!
//! [`AlertmanagerSink::send`] never blocks: it hands the alert to one task per configured
//! Alertmanager. Each task keeps the alerts firing now, posts a change at once, posts every
//! firing alert again each `resend_interval` (Alertmanager resolves an alert it has not heard
//! of for its `resolve_timeout`), and posts a resolved alert with `endsAt` until it is
//! delivered (for [`RESOLVED_RETENTION`] at most). A failing Alertmanager is retried with
//! exponential back-off of its own, so a dead one never delays the others, evaluation or
//! the OTLP export.

mod payload;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::alert::{AlertEvent, AlertKey};
use crate::config::AlertmanagerConfig;
use crate::secret::{self, Secret};
use crate::telemetry::{Event, SelfTelemetry};

pub use payload::{AlertTemplate, PostableAlert, sanitize_label_name};

/// First pause after a failed post; it doubles with every further failure.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest pause between retries (shorter when `resend_interval` is).
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a resolved alert is retried; by then Alertmanager has resolved it by itself
/// (after its `resolve_timeout`, 5m by default, without a re-send).
pub const RESOLVED_RETENTION: Duration = Duration::from_secs(15 * 60);
/// Most alerts in one request.
const BATCH_SIZE: usize = 64;

/// Why the Alertmanager sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertmanagerError {
    #[error("{0}")]
    Secret(String),
    #[error("export.alertmanager.urls has {url:?}, which is not a usable URL: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot set up the HTTP client for Alertmanager: {0}")]
    Client(String),
}

/// How requests authenticate.
#[derive(Debug, Clone)]
enum Auth {
    None,
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

impl Auth {
    /// Reads the configured token or password (once, at start).
    fn from_config(config: &AlertmanagerConfig) -> Result<Auth, AlertmanagerError> {
        let token = secret::from_env_or_file(
            "export.alertmanager.bearer_token",
            config.bearer_token_env.as_deref(),
            config.bearer_token_file.as_deref(),
        )
        .map_err(AlertmanagerError::Secret)?;
        if let Some(token) = token {
            return Ok(Auth::Bearer(token));
        }
        let Some(basic) = &config.basic_auth else {
            return Ok(Auth::None);
        };
        let password = secret::from_env_or_file(
            "export.alertmanager.basic_auth.password",
            basic.password_env.as_deref(),
            basic.password_file.as_deref(),
        )
        .map_err(AlertmanagerError::Secret)?
        .ok_or_else(|| {
            AlertmanagerError::Secret(
                "export.alertmanager.basic_auth needs password_env or password_file".to_owned(),
            )
        })?;
        Ok(Auth::Basic {
            username: basic.username.clone(),
            password,
        })
    }

    fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token.expose()),
            Auth::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose()))
            }
        }
    }
}

/// A change for the delivery tasks.
#[derive(Debug)]
enum Update {
    Firing(AlertKey, PostableAlert),
    Resolved(AlertKey, PostableAlert),
}

/// What a delivery task receives.
#[derive(Debug)]
enum Message {
    Update(Arc<Update>),
    /// Answer once everything received before has been delivered.
    Flush(oneshot::Sender<()>),
}

/// Hands alert events to one delivery task per Alertmanager.
#[derive(Debug)]
pub struct AlertmanagerSink {
    template: AlertTemplate,
    targets: Vec<(String, mpsc::UnboundedSender<Message>)>,
}

impl AlertmanagerSink {
    /// Starts one delivery task per URL of `config` (must run inside Tokio). Alerts carry
    /// `instance = host` and `generatorURL = generator_url`; delivery is counted in `telemetry`.
    pub fn start(
        config: &AlertmanagerConfig,
        host: &str,
        generator_url: String,
        telemetry: Arc<Mutex<SelfTelemetry>>,
    ) -> Result<Self, AlertmanagerError> {
        let auth = Auth::from_config(config)?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AlertmanagerError::Client(e.to_string()))?;
        let backoff_max = config.resend_interval.min(BACKOFF_MAX);
        let mut targets = Vec::new();
        for url in &config.urls {
            let endpoint = alerts_endpoint(url)?;
            let (tx, rx) = mpsc::unbounded_channel();
            let target = Target {
                url: url.clone(),
                endpoint,
                client: client.clone(),
                auth: auth.clone(),
                telemetry: telemetry.clone(),
                resend_interval: config.resend_interval,
                backoff_max,
                firing: BTreeMap::new(),
                resolved: BTreeMap::new(),
            };
            tokio::spawn(target.run(rx));
            targets.push((url.clone(), tx));
        }
        Ok(AlertmanagerSink {
            template: AlertTemplate::new(config, host, generator_url),
            targets,
        })
    }

    /// Queues a firing or resolved alert for every Alertmanager; other transitions are
    /// ignored. Never blocks.
    pub fn send(&self, event: &AlertEvent) {
        let Some(alert) = self.template.alert(event) else {
            return;
        };
        let key = event.alert.key.clone();
        let update = Arc::new(if alert.ends_at.is_some() {
            Update::Resolved(key, alert)
        } else {
            Update::Firing(key, alert)
        });
        for (_, target) in &self.targets {
            // A closed channel means the runtime is shutting down; nothing left to deliver to.
            let _ = target.send(Message::Update(update.clone()));
        }
    }

    /// Waits until every Alertmanager accepted what was sent before, or `deadline` passes
    /// (at shutdown and after `--once`); returns the URLs still behind.
    pub async fn flush(&self, deadline: Instant) -> Vec<String> {
        let mut waiting = Vec::new();
        for (url, target) in &self.targets {
            let (tx, rx) = oneshot::channel();
            if target.send(Message::Flush(tx)).is_ok() {
                waiting.push((url, rx));
            }
        }
        let mut behind = Vec::new();
        for (url, rx) in waiting {
            if !matches!(tokio::time::timeout_at(deadline, rx).await, Ok(Ok(()))) {
                behind.push(url.clone());
            }
        }
        behind
    }
}

/// `BASE/api/v2/alerts`, keeping any path prefix of `base` (e.g. behind a proxy).
fn alerts_endpoint(base: &str) -> Result<reqwest::Url, AlertmanagerError> {
    let with_slash = if base.ends_with('/') {
        base.to_owned()
    } else {
        format!("{base}/")
    };
    reqwest::Url::parse(&with_slash)
        .and_then(|u| u.join("api/v2/alerts"))
        .map_err(|e| AlertmanagerError::Url {
            url: base.to_owned(),
            reason: e.to_string(),
        })
}

/// A failed post: the `error.type` it is counted under and what to tell the operator.
#[derive(Debug)]
struct Failure {
    cause: &'static str,
    message: String,
}

/// Delivery to one Alertmanager.
struct Target {
    url: String,
    endpoint: reqwest::Url,
    client: reqwest::Client,
    auth: Auth,
    telemetry: Arc<Mutex<SelfTelemetry>>,
    resend_interval: Duration,
    backoff_max: Duration,
    /// Alerts firing now, as last posted.
    firing: BTreeMap<AlertKey, PostableAlert>,
    /// Resolved alerts not yet delivered, with when to give up on them.
    resolved: BTreeMap<AlertKey, (PostableAlert, Instant)>,
}

impl Target {
    async fn run(mut self, mut messages: mpsc::UnboundedReceiver<Message>) {
        let mut due = false;
        let mut next_resend = Instant::now() + self.resend_interval;
        let mut next_try = Instant::now();
        let mut backoff: Option<Duration> = None;
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
            self.resolved
                .retain(|_, (_, until)| *until > Instant::now());
            match self.post_all().await {
                Ok(sent) => {
                    due = false;
                    self.report_pending(0);
                    for done in flushes.drain(..) {
                        let _ = done.send(());
                    }
                    if backoff.take().is_some() {
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
                    self.count(Event::AlertmanagerFailed {
                        url: &self.url,
                        cause: failure.cause,
                    });
                    let pause = match backoff {
                        None => {
                            tracing::warn!(
                                alertmanager = %self.url,
                                cause = failure.cause,
                                "cannot deliver alerts to Alertmanager {}: {}; retrying with back-off (up to {:?}), reported once per outage",
                                self.url,
                                failure.message,
                                self.backoff_max
                            );
                            BACKOFF_MIN.min(self.backoff_max)
                        }
                        Some(last) => {
                            tracing::debug!(alertmanager = %self.url, "{}", failure.message);
                            (last * 2).min(self.backoff_max)
                        }
                    };
                    backoff = Some(pause);
                    next_try = Instant::now() + pause;
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
                let until = Instant::now() + RESOLVED_RETENTION;
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
            self.count(Event::AlertmanagerSent {
                url: &self.url,
                alerts: chunk.len(),
            });
        }
        self.resolved.clear();
        Ok(total)
    }

    async fn post(&self, alerts: &[&PostableAlert]) -> Result<(), Failure> {
        if alerts.is_empty() {
            return Ok(());
        }
        let request = self.client.post(self.endpoint.clone()).json(alerts);
        let response = self.auth.apply(request).send().await.map_err(|e| {
            let cause = if e.is_timeout() { "timeout" } else { "connect" };
            Failure {
                cause,
                message: format!("{e} (is Alertmanager running and reachable there?)"),
            }
        })?;
        let status = response.status();
        if status.is_success() {
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
        self.count(Event::AlertmanagerPending {
            url: &self.url,
            alerts,
        });
    }

    fn count(&self, event: Event<'_>) {
        if let Ok(mut telemetry) = self.telemetry.lock() {
            telemetry.emit(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keeps_a_path_prefix() {
        assert_eq!(
            alerts_endpoint("http://127.0.0.1:9093").unwrap().as_str(),
            "http://127.0.0.1:9093/api/v2/alerts"
        );
        assert_eq!(
            alerts_endpoint("https://am.example/prefix/")
                .unwrap()
                .as_str(),
            "https://am.example/prefix/api/v2/alerts"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "hunter2\n").unwrap();
        let config: AlertmanagerConfig = toml::from_str(&format!(
            "urls = [\"http://a\"]\nbasic_auth = {{ username = \"vigil\", password_file = {:?} }}\n",
            file.display().to_string()
        ))
        .unwrap();
        let auth = Auth::from_config(&config).unwrap();
        let text = format!("{auth:?}");
        assert!(
            !text.contains("hunter2") && text.contains("vigil"),
            "{text}"
        );
        let Auth::Basic { password, .. } = auth else {
            panic!("{text}")
        };
        assert_eq!(password.expose(), "hunter2");
    }

    #[test]
    fn missing_secret_says_what_to_set() {
        let config: AlertmanagerConfig = toml::from_str(
            "urls = [\"http://a\"]\nbearer_token_env = \"VIGIL_TEST_SURELY_UNSET_TOKEN\"\n",
        )
        .unwrap();
        let err = Auth::from_config(&config).unwrap_err().to_string();
        assert!(err.contains("VIGIL_TEST_SURELY_UNSET_TOKEN"), "{err}");
    }
}
