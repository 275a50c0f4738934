//! What every database and cache collector shares: the instance's identity and
//! attributes, its password, a per-round timeout, and health: a server that is down
//! yields `<kind>.up = 0` and a failed round (seen on `/status` and in
//! `vigil.collector.errors`), one warning per outage (not one per round), a new try
//! every round, and one message when it is back.

use std::future::Future;
use std::time::{Duration, Instant};

use super::{CollectError, CollectFuture, Collector, Round};
use crate::config::InstanceConfig;
use crate::model::{Attributes, BatchBuilder, MetricDesc, MetricKind};

pub use crate::secret::Secret;

/// Why a server collector could not be built (nothing is connected yet). Each names
/// the kind and instance; none repeats the URL or the password.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{kind} {name}: invalid url: {reason}")]
    Url {
        kind: &'static str,
        name: String,
        reason: String,
    },
    #[error("{kind} {name}: {reason}")]
    Password {
        kind: &'static str,
        name: String,
        reason: String,
    },
    #[error("{kind} {name}: {reason}")]
    Client {
        kind: &'static str,
        name: String,
        reason: String,
    },
}

impl SetupError {
    /// The URL of `config` did not parse for `kind`'s driver.
    pub fn url(kind: &'static str, config: &InstanceConfig, reason: impl ToString) -> Self {
        SetupError::Url {
            kind,
            name: config.name.clone(),
            reason: reason.to_string(),
        }
    }
}

/// Reads the password of instance `config` of `kind`, if it has one.
pub fn instance_password(
    kind: &'static str,
    config: &InstanceConfig,
) -> Result<Option<Secret>, SetupError> {
    password(config).map_err(|reason| SetupError::Password {
        kind,
        name: config.name.clone(),
        reason,
    })
}

/// Reads the password an instance config points at, if any.
pub fn password(config: &InstanceConfig) -> Result<Option<Secret>, String> {
    crate::secret::from_env_or_file(
        "password",
        config.password_env.as_deref(),
        config.password_file.as_deref(),
    )
}

/// Who a server is: kind, name and address, as attributes on every series.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `postgresql`, `mysql`, `redis` or `prometheus` (the metric prefix of `up`; for
    /// a database also the `db.system` value).
    pub system: &'static str,
    pub name: String,
    pub address: String,
    pub port: u16,
    /// Whether it is a database (its series carry `db.system`).
    pub database: bool,
}

impl Identity {
    /// The identity of an instance of `system`, read from its URL.
    pub fn new(system: &'static str, config: &InstanceConfig, default_port: u16) -> Self {
        let (address, port, _) = super::dsn::describe(&config.url, default_port);
        Identity {
            system,
            name: config.name.clone(),
            address,
            port,
            database: true,
        }
    }

    /// The attributes every series of this server carries.
    pub fn attributes(&self) -> Attributes {
        let system = self
            .database
            .then(|| ("db.system".to_owned(), self.system.to_owned()));
        system
            .into_iter()
            .chain([
                ("server.address".into(), self.address.clone()),
                ("server.port".into(), self.port.to_string()),
                ("vigil.instance".into(), self.name.clone()),
            ])
            .collect()
    }

    /// These attributes plus `extra`.
    pub fn with(&self, extra: &[(&str, &str)]) -> Attributes {
        let mut a = self.attributes();
        a.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        a
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} ({}:{})",
            self.system, self.name, self.address, self.port
        )
    }
}

/// A server's reachability: whether the last attempt reached it, since when it is
/// down and why.
///
/// A down server is tried again every round: no more often than when it is up, each
/// try bounded by the collect timeout, and a server that is back is seen by the next
/// round (no back-off that would hide a recovery for longer than the interval).
#[derive(Debug, Default)]
pub struct Health {
    down_since: Option<Instant>,
    last_error: Option<String>,
}

impl Health {
    /// Whether the server answered the last attempt.
    pub fn is_up(&self) -> bool {
        self.down_since.is_none()
    }

    /// Why the last attempt failed, while the server is down.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Records a good round; says so once when the server comes back.
    pub fn succeeded(&mut self, who: &Identity) {
        if let Some(since) = self.down_since.take() {
            tracing::info!(instance = %who.name, "{who} is reachable again after {:.1?}", since.elapsed());
        }
        self.last_error = None;
    }

    /// Records a failed round; warns once per outage.
    pub fn failed(&mut self, who: &Identity, reason: &str, now: Instant) {
        if self.down_since.is_none() {
            self.down_since = Some(now);
            tracing::warn!(instance = %who.name, "{who} is unreachable: {reason}; reporting {}.up = 0 and trying again every round", who.system);
        } else {
            tracing::debug!(instance = %who.name, "{who} still unreachable: {reason}");
        }
        self.last_error = Some(format!("{who} is unreachable: {reason}"));
    }
}

/// The open connection in `slot`, connecting with `options` first if there is none.
pub async fn sql_connection<'a, C: sqlx::Connection>(
    slot: &'a mut Option<C>,
    options: &C::Options,
) -> Result<&'a mut C, String> {
    if slot.is_none() {
        *slot = Some(
            C::connect_with(options)
                .await
                .map_err(|e| format!("cannot connect: {e}"))?,
        );
    }
    slot.as_mut().ok_or_else(|| "no connection".to_owned())
}

/// The part that differs per server kind: connecting and reading metrics.
pub trait Scraper: Send + 'static {
    /// Reads one round of metrics into `batch`, connecting first if needed.
    fn scrape<'a>(
        &'a mut self,
        batch: &'a mut BatchBuilder,
        who: &'a Identity,
    ) -> impl Future<Output = Result<(), String>> + Send + 'a;

    /// Drops the connection after a failure, so the next round reconnects.
    fn disconnect(&mut self);
}

/// A collector for one server: a [`Scraper`] with timeout, health and the `up` metric.
pub struct ServerCollector<S> {
    scraper: S,
    who: Identity,
    source: String,
    host: String,
    interval: Duration,
    timeout: Duration,
    health: Health,
    up: MetricDesc,
}

impl<S: Scraper> ServerCollector<S> {
    /// A collector of `scraper` for the server `who`, configured by `config`.
    pub fn new(scraper: S, who: Identity, config: &InstanceConfig, host: String) -> Self {
        let kind = match who.system {
            "postgresql" => "postgres",
            other => other,
        };
        ServerCollector {
            source: format!("{kind}:{}", who.name),
            up: MetricDesc::new(
                &format!("{}.up", who.system),
                "1",
                MetricKind::Gauge,
                "1 when the last round reached the server, 0 when not",
            ),
            scraper,
            who,
            host,
            interval: config.interval,
            timeout: config.timeout,
            health: Health::default(),
        }
    }

    /// Collects one round: the batch (always with `<kind>.up`) and, when the server
    /// was not reached, why.
    async fn round(&mut self) -> (BatchBuilder, Option<String>) {
        let now = Instant::now();
        let mut batch = BatchBuilder::new(self.source.clone(), self.host.clone());
        let result =
            tokio::time::timeout(self.timeout, self.scraper.scrape(&mut batch, &self.who)).await;
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(reason)) => Some(reason),
            Err(_) => Some(format!(
                "no answer within {:?} (collect timeout)",
                self.timeout
            )),
        };
        match failure {
            None => self.health.succeeded(&self.who),
            Some(reason) => {
                self.scraper.disconnect();
                self.health.failed(&self.who, &reason, now);
                batch = BatchBuilder::new(self.source.clone(), self.host.clone());
            }
        }
        let up = if self.health.is_up() { 1.0 } else { 0.0 };
        batch.point(&self.up, self.who.attributes(), up);
        (batch, self.health.last_error().map(str::to_owned))
    }
}

impl<S: Scraper> Collector for ServerCollector<S> {
    fn name(&self) -> &str {
        &self.source
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn collect(&mut self) -> CollectFuture<'_> {
        Box::pin(async move {
            let (batch, failure) = self.round().await;
            Ok::<_, CollectError>(Round {
                batch: batch.build(),
                failure,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_outage_is_down_until_a_success() {
        let who = Identity {
            system: "redis",
            name: "r".into(),
            address: "127.0.0.1".into(),
            port: 1,
            database: true,
        };
        let mut health = Health::default();
        assert!(health.is_up());
        health.failed(&who, "refused", Instant::now());
        health.failed(&who, "still refused", Instant::now());
        assert!(!health.is_up());
        assert_eq!(
            health.last_error(),
            Some("redis r (127.0.0.1:1) is unreachable: still refused")
        );
        health.succeeded(&who);
        assert!(health.is_up());
        assert_eq!(health.last_error(), None);
    }
}
