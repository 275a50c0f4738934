//! `[[collect.prometheus]]`: an application's Prometheus `/metrics` endpoint, scraped
//! every interval into a batch of source `prometheus:NAME` whose metrics are named as
//! exposed (see [`page`]), each series with its labels plus `vigil.instance = NAME`.
//!
//! It is a server like the databases ([`ServerCollector`]): a target that does not answer,
//! answers with an error status or with a page that is not in the text format gives
//! `prometheus.up = 0`, a failed round (counted in `vigil.collector.errors`, shown on
//! `/status`), one warning per outage and a new try every round.

mod page;

use std::collections::HashSet;
use std::time::Instant;

use super::server::{Identity, Scraper, ServerCollector, SetupError};
use crate::config::InstanceConfig;
use crate::model::{Attributes, BatchBuilder};
use crate::secret::Secret;

const KIND: &str = "prometheus";

/// Largest page read (a bound on the memory of one scrape).
pub const MAX_PAGE_BYTES: usize = 32 * 1024 * 1024;

/// Builds the collector of one `[[collect.prometheus]]` target (reads its token and TLS
/// files; connects to nothing yet).
pub fn collector(
    config: &InstanceConfig,
    host: String,
) -> Result<ServerCollector<PrometheusScraper>, SetupError> {
    let setup = |reason: String| SetupError::Client {
        kind: KIND,
        name: config.name.clone(),
        reason,
    };
    let url = reqwest::Url::parse(&config.url).map_err(|e| SetupError::url(KIND, config, e))?;
    let token = crate::secret::from_env_or_file(
        "bearer_token",
        config.bearer_token_env.as_deref(),
        config.bearer_token_file.as_deref(),
    )
    .map_err(|reason| SetupError::Password {
        kind: KIND,
        name: config.name.clone(),
        reason,
    })?;
    let tls = match (&config.tls, url.scheme()) {
        (None, "http") => None,
        (settings, _) => {
            let settings = settings.clone().unwrap_or_default();
            let loaded =
                crate::tls::client_config("collect.prometheus.tls", &settings, &[b"http/1.1"])
                    .map_err(|e| setup(e.to_string()))?;
            Some(loaded.config)
        }
    };
    let client = crate::tls::http_client(tls, config.timeout).map_err(setup)?;
    let who = Identity {
        system: KIND,
        name: config.name.clone(),
        address: url.host_str().unwrap_or("localhost").to_owned(),
        port: url.port_or_known_default().unwrap_or(80),
        database: false,
    };
    Ok(ServerCollector::new(
        PrometheusScraper {
            client,
            extra: vec![("vigil.instance".into(), config.name.clone())],
            url,
            token,
            warned: HashSet::new(),
        },
        who,
        config,
        host,
    ))
}

/// Scrapes one endpoint.
pub struct PrometheusScraper {
    client: reqwest::Client,
    url: reqwest::Url,
    token: Option<Secret>,
    /// Attributes added to every scraped series.
    extra: Attributes,
    /// Skipped histograms already warned about.
    warned: HashSet<String>,
}

/// Most skipped histograms warned about per target (a bound on the log).
const MAX_WARNED: usize = 64;

impl PrometheusScraper {
    /// The page's text, at most [`MAX_PAGE_BYTES`].
    async fn fetch(&self) -> Result<String, String> {
        let mut request = self.client.get(self.url.clone()).header(
            reqwest::header::ACCEPT,
            "text/plain;version=0.0.4;q=1,*/*;q=0.1",
        );
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let mut response = request.send().await.map_err(|e| {
            format!(
                "cannot scrape {}: {}",
                self.url,
                crate::export::error_chain(&e)
            )
        })?;
        let status = response.status();
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 | 403 => " (check bearer_token_env / bearer_token_file)",
                404 => " (check the path of the url, usually /metrics)",
                _ => "",
            };
            return Err(format!("{} answered {status}{hint}", self.url));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            format!(
                "cannot read {}: {}",
                self.url,
                crate::export::error_chain(&e)
            )
        })? {
            if body.len() + chunk.len() > MAX_PAGE_BYTES {
                return Err(format!(
                    "the page at {} is larger than {} MiB; vigil reads at most that much",
                    self.url,
                    MAX_PAGE_BYTES / (1024 * 1024)
                ));
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| format!("the page at {} is not UTF-8 text", self.url))
    }
}

impl Scraper for PrometheusScraper {
    async fn scrape<'a>(
        &'a mut self,
        batch: &'a mut BatchBuilder,
        _: &'a Identity,
    ) -> Result<(), String> {
        let started = Instant::now();
        let text = self.fetch().await?;
        let families = page::parse(&text).map_err(|e| format!("{}: {e}", self.url))?;
        let added = page::add_to_batch(&families, batch, &self.extra)
            .map_err(|e| format!("{}: {e}", self.url))?;
        for skipped in added.skipped {
            if self.warned.len() < MAX_WARNED && self.warned.insert(skipped.clone()) {
                tracing::warn!(url = %self.url, "skipping histogram {skipped} (said once per series)");
            }
        }
        tracing::trace!(url = %self.url, points = added.points, elapsed = ?started.elapsed(), "scraped");
        Ok(())
    }

    fn disconnect(&mut self) {}
}
