//! `redis-hit-ratio`: fires when a Redis instance's keyspace hit ratio, over a window
//! of at least `min_lookups` lookups, is below a threshold.
//!
//! A window spans as many batches as it takes to see `min_lookups` lookups: a quiet
//! batch neither fires nor resolves the alert, it only extends the window (no
//! flapping). The verdict of the last complete window holds until the next one; a
//! window that stays incomplete for `stale_after_s` drops it (too quiet to judge).
//! A counter that goes down (server restart) starts a new window.
//!
//! Settings: `min_ratio` (default 0.9), `min_lookups` (default 100), `stale_after_s`
//! (default 600), `severity` (default `warning`). The window is kept in the host's
//! key/value state, so it survives a restart of the instance.

use serde::{Deserialize, Serialize};
use vigil_plugin_kit::bindings::vigil::plugin::host;
use vigil_plugin_kit::bindings::{Batch, Finding, Guest, PluginInfo};
use vigil_plugin_kit::{finding, points_of, settings, severity, update_state};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_ratio")]
    min_ratio: f64,
    #[serde(default = "default_lookups")]
    min_lookups: f64,
    #[serde(default = "default_stale")]
    stale_after_s: f64,
    #[serde(default = "default_severity")]
    severity: String,
}

fn default_stale() -> f64 {
    600.0
}

/// A window of lookups of one instance, as kept in the host's state.
#[derive(Serialize, Deserialize)]
struct Window {
    /// Hits and misses when the window began.
    base: (f64, f64),
    /// When the window began (host time, ns).
    started_ns: u64,
    /// Hits and misses in the last batch (to see a counter reset).
    last: (f64, f64),
    /// Hit ratio, hits and misses of the last complete window, when it was too low.
    low: Option<(f64, f64, f64)>,
}

impl Window {
    fn new(counters: (f64, f64), now: u64) -> Self {
        Window {
            base: counters,
            started_ns: now,
            last: counters,
            low: None,
        }
    }

    /// Takes the counters of a new batch; judges the window once it holds enough lookups.
    fn advance(&mut self, counters: (f64, f64), now: u64, s: &Settings) {
        if counters.0 < self.last.0 || counters.1 < self.last.1 {
            // A restarted server counts from zero: a new window, the verdict stands.
            self.base = counters;
            self.started_ns = now;
        }
        self.last = counters;
        let (hits, misses) = (counters.0 - self.base.0, counters.1 - self.base.1);
        if hits + misses >= s.min_lookups {
            let ratio = hits / (hits + misses);
            self.low = (ratio < s.min_ratio).then_some((ratio, hits, misses));
            self.base = counters;
            self.started_ns = now;
        } else if now.saturating_sub(self.started_ns) as f64 / 1e9 >= s.stale_after_s {
            self.low = None;
        }
    }
}

fn default_ratio() -> f64 {
    0.9
}
fn default_lookups() -> f64 {
    100.0
}
fn default_severity() -> String {
    "warning".into()
}

struct HitRatio;

impl Guest for HitRatio {
    fn describe() -> Result<PluginInfo, String> {
        let s: Settings = settings("redis-hit-ratio")?;
        severity(&s.severity)?;
        Ok(PluginInfo {
            name: "redis-hit-ratio".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            interests: vec!["redis.keyspace.hits".into(), "redis.keyspace.misses".into()],
        })
    }

    fn evaluate(batch: Batch) -> Result<Vec<Finding>, String> {
        let batch = vigil_plugin_kit::Frame::new(batch)?;
        let s: Settings = settings("redis-hit-ratio")?;
        let mut findings = Vec::new();
        for hits in points_of(&batch, "redis.keyspace.hits") {
            let instance = hits.attr("vigil.instance").to_owned();
            let Some(misses) = points_of(&batch, "redis.keyspace.misses")
                .find(|m| m.attr("vigil.instance") == instance)
            else {
                continue;
            };
            let state_key = format!("window:{instance}");
            let now = host::now_ns();
            let counters = (hits.value, misses.value);
            let window = update_state(
                &state_key,
                || Window::new(counters, now),
                |window: &mut Window| window.advance(counters, now, &s),
            )?;
            if let Some((ratio, dh, dm)) = window.low {
                findings.push(finding(
                    "redis-hit-ratio",
                    format!("instance={instance}"),
                    severity(&s.severity)?,
                    format!("Redis {instance}: cache hit ratio {:.1}% ({dh} hits, {dm} misses in the last window of {} lookups or more) is below {:.1}%", ratio * 100.0, s.min_lookups, s.min_ratio * 100.0),
                    ratio,
                    &[("vigil.instance", instance.clone()), ("hits", dh.to_string()), ("misses", dm.to_string())],
                ));
            }
        }
        Ok(findings)
    }
}

vigil_plugin_kit::bindings::export!(HitRatio with_types_in vigil_plugin_kit::bindings);
