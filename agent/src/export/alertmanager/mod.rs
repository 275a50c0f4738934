//! Delivery of alerts to Prometheus Alertmanager (`POST /api/v2/alerts`).
//!
//! [`AlertmanagerSink::send`] never blocks: it hands the alert to one task per configured
//! Alertmanager. Each task keeps the alerts firing now, posts a change at once, posts every
//! firing alert again each `resend_interval` (Alertmanager resolves an alert it has not heard
//! of for its `resolve_timeout`), and posts a resolved alert with `endsAt` until it is
//! delivered (for [`RESOLVED_RETENTION`] at most). A failing Alertmanager is retried with
//! exponential back-off of its own, so a dead one never delays the others, evaluation or
//! the OTLP export.

mod auth;
mod delivery;
mod payload;

use crate::sync::LockExt;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::alert::AlertEvent;
use crate::config::{AlertmanagerConfig, TlsClientConfig};
use crate::tls::{Fingerprint, Loaded};
use auth::Auth;
use delivery::{Message, Target, Update};

pub use delivery::{DeliveryStats, RESOLVED_RETENTION};
pub use payload::{AlertTemplate, PostableAlert, sanitize_label_name};

/// Why the Alertmanager sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertmanagerError {
    #[error("{0}")]
    Secret(String),
    #[error("export.alertmanager.urls has {url:?}, which is not a usable URL: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot set up the HTTP client for Alertmanager: {0}")]
    Client(String),
    #[error("cannot set up TLS for Alertmanager: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Hands alert events to one delivery task per Alertmanager.
#[derive(Debug)]
pub struct AlertmanagerSink {
    template: AlertTemplate,
    targets: Vec<(String, mpsc::UnboundedSender<Message>)>,
    stats: Vec<(String, Arc<Mutex<DeliveryStats>>)>,
    /// The client every delivery task posts with; replaced when the TLS files change.
    client: Arc<ArcSwap<HttpClient>>,
    /// What the client's TLS was built from (None: no `https://` URL).
    tls: Mutex<Option<Fingerprint>>,
    /// The settings the client is built with (TLS aside, a change needs a restart).
    config: AlertmanagerConfig,
}

impl AlertmanagerSink {
    /// Starts one delivery task per URL of `config` (must run inside Tokio). Alerts carry
    /// `instance = host` and `generatorURL = generator_url`; [`Self::stats`] tells how
    /// delivery goes.
    pub fn start(
        config: &AlertmanagerConfig,
        host: &str,
        generator_url: String,
    ) -> Result<Self, AlertmanagerError> {
        let auth = Auth::from_config(config)?;
        let tls = load_tls(config)?;
        let fingerprint = tls.as_ref().map(|t| t.fingerprint);
        let client = Arc::new(ArcSwap::from_pointee(http_client(config, tls)?));
        let mut targets = Vec::new();
        let mut stats = Vec::new();
        for url in &config.urls {
            let endpoint = alerts_endpoint(url)?;
            let (tx, rx) = mpsc::unbounded_channel();
            let counts = Arc::new(Mutex::new(DeliveryStats::default()));
            let target = Target::new(
                url.clone(),
                endpoint,
                client.clone(),
                auth.clone(),
                counts.clone(),
                config.resend_interval,
            );
            stats.push((url.clone(), counts));
            tokio::spawn(target.run(rx));
            targets.push((url.clone(), tx));
        }
        Ok(AlertmanagerSink {
            template: AlertTemplate::new(config, host, generator_url),
            targets,
            stats,
            client,
            tls: Mutex::new(fingerprint),
            config: config.clone(),
        })
    }

    /// Reads the TLS files of `tls` (the `[export.alertmanager.tls]` of a reloaded config)
    /// and, if they or the settings differ from those in use, switches every delivery task
    /// to a client built with them. True if it switched. Nothing changes without an
    /// `https://` URL or when the files are unusable (the error says why).
    pub fn reload_tls(&self, tls: &TlsClientConfig) -> Result<bool, AlertmanagerError> {
        let config = AlertmanagerConfig {
            tls: tls.clone(),
            ..self.config.clone()
        };
        let Some(loaded) = load_tls(&config)? else {
            return Ok(false);
        };
        let mut current = self.tls.locked();
        if *current == Some(loaded.fingerprint) {
            return Ok(false);
        }
        let fingerprint = loaded.fingerprint;
        self.client
            .store(Arc::new(http_client(&config, Some(loaded))?));
        *current = Some(fingerprint);
        Ok(true)
    }

    /// Each Alertmanager's delivery totals so far, by URL as configured.
    pub fn stats(&self) -> Vec<(String, DeliveryStats)> {
        self.stats
            .iter()
            .map(|(url, stats)| {
                let stats = stats.locked().clone();
                (url.clone(), stats)
            })
            .collect()
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

/// The HTTP client of the delivery tasks.
#[derive(Debug)]
struct HttpClient {
    client: reqwest::Client,
    /// Set when an Alertmanager asks for a client certificate none is configured for.
    cert_asked: crate::tls::ClientCertAsked,
}

/// The TLS client config for `config`, if one of its URLs is `https://` (files read now).
fn load_tls(
    config: &AlertmanagerConfig,
) -> Result<Option<Loaded<rustls::ClientConfig>>, AlertmanagerError> {
    let https = config.urls.iter().any(|url| {
        url.get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    });
    if !https {
        return Ok(None);
    }
    Ok(Some(crate::tls::client_config(
        "export.alertmanager.tls",
        &config.tls,
        &[b"http/1.1"],
    )?))
}

/// The HTTP client of every delivery task, with `tls` (plain http only without it).
fn http_client(
    config: &AlertmanagerConfig,
    tls: Option<Loaded<rustls::ClientConfig>>,
) -> Result<HttpClient, AlertmanagerError> {
    let (tls, cert_asked) = match tls {
        Some(tls) => (Some(tls.config), tls.cert_asked),
        None => (None, Default::default()),
    };
    let client = crate::tls::http_client(tls, config.timeout).map_err(AlertmanagerError::Client)?;
    Ok(HttpClient { client, cert_asked })
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
}
