//! `redis-hit-ratio`: fires when a Redis instance's keyspace hit ratio, over the
//! lookups since the previous batch, falls below a threshold.
//!
//! Settings: `min_ratio` (default 0.9), `min_lookups` (lookups in the window needed
//! to judge, default 100), `severity` (default `warning`). The previous counters are
//! kept in the host's key/value state, so they survive a restart of the instance.

use serde::Deserialize;
use vigil_plugin_kit::bindings::vigil::plugin::host;
use vigil_plugin_kit::bindings::{Batch, Finding, Guest, PluginInfo};
use vigil_plugin_kit::{finding, points_of, settings, severity};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_ratio")]
    min_ratio: f64,
    #[serde(default = "default_lookups")]
    min_lookups: f64,
    #[serde(default = "default_severity")]
    severity: String,
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
        let s: Settings = settings("redis-hit-ratio")?;
        let mut findings = Vec::new();
        for hits in points_of(&batch, "redis.keyspace.hits") {
            let instance = hits.attr("vigil.instance").to_owned();
            let Some(misses) = points_of(&batch, "redis.keyspace.misses")
                .find(|m| m.attr("vigil.instance") == instance)
            else {
                continue;
            };
            let state_key = format!("prev:{instance}");
            let previous = host::state_get(&state_key)
                .and_then(|bytes| serde_json::from_slice::<(f64, f64)>(&bytes).ok());
            host::state_set(
                &state_key,
                &serde_json::to_vec(&(hits.value, misses.value)).unwrap_or_default(),
            )?;
            let Some((prev_hits, prev_misses)) = previous else {
                continue;
            };
            // A restarted server resets its counters: start a new window.
            let (dh, dm) = (hits.value - prev_hits, misses.value - prev_misses);
            if dh < 0.0 || dm < 0.0 || dh + dm < s.min_lookups {
                continue;
            }
            let ratio = dh / (dh + dm);
            if ratio < s.min_ratio {
                findings.push(finding(
                    "redis-hit-ratio",
                    format!("instance={instance}"),
                    severity(&s.severity)?,
                    format!("Redis {instance}: cache hit ratio {:.1}% ({dh} hits, {dm} misses since the last batch) is below {:.1}%", ratio * 100.0, s.min_ratio * 100.0),
                    ratio,
                    &[("vigil.instance", instance.clone()), ("hits", dh.to_string()), ("misses", dm.to_string())],
                ));
            }
        }
        Ok(findings)
    }
}

vigil_plugin_kit::bindings::export!(HitRatio with_types_in vigil_plugin_kit::bindings);
