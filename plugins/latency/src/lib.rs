//! `latency`: request-latency percentiles and the server-error ratio of an application's
//! HTTP metrics, judged per series (route, method, ... : every attribute but the status code).
//!
//! - From request-duration histograms (defaults: the OpenTelemetry semantic convention
//!   `http.server.request.duration` and the Prometheus habit `http_request_duration_seconds`)
//!   it estimates p50/p95/p99 (and every configured percentile) of the requests between
//!   batches, as Prometheus' `histogram_quantile` does, and fires `latency-pNN` when a
//!   configured percentile is above its target.
//! - From the same histograms' counts split by status code (`http.response.status_code`,
//!   `code` or `status`), or from request counters (`http_requests_total`), it fires
//!   `error-ratio` when 5xx answers / all requests is above its target.
//!
//! A series is judged once a window of at least `min_requests` requests is complete (see
//! [`window`]); the verdict holds until the next window. Findings carry the rule's `for`,
//! so the host fires the alert once the condition held that long and resolves it when the
//! verdict falls below the target. The windows are kept in the host's key/value state and
//! survive an instance restart. Settings: see [`settings`] and the README.

mod quantile;
mod rule;
mod settings;
mod window;

#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use vigil_plugin_kit::Frame;
use vigil_plugin_kit::bindings::vigil::plugin::host;
use vigil_plugin_kit::bindings::{Batch, Finding, Guest, PluginInfo};
use vigil_plugin_kit::policy::{settings_once, warn_once};

use rule::Store;
use settings::Settings;

/// The settings, parsed once per instance (new settings start a new instance).
fn settings() -> Result<&'static Settings, String> {
    static SETTINGS: OnceLock<Result<Settings, String>> = OnceLock::new();
    settings_once(&SETTINGS, Settings::parse)
}

/// The host's key/value state.
struct HostStore;

impl Store for HostStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        host::state_get(key)
    }

    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        host::state_set(key, value)
    }
}

struct Latency;

impl Guest for Latency {
    fn describe() -> Result<PluginInfo, String> {
        Ok(PluginInfo {
            name: "latency".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            interests: settings()?.interests(),
        })
    }

    fn evaluate(batch: Batch) -> Result<Vec<Finding>, String> {
        let frame = Frame::new(batch)?;
        let outcome = rule::evaluate(&frame, settings()?, &mut HostStore);
        for warning in &outcome.warnings {
            warn_once(&warning.key, &warning.message);
        }
        Ok(outcome.findings)
    }
}

vigil_plugin_kit::bindings::export!(Latency with_types_in vigil_plugin_kit::bindings);
