//! `pg-slow-query`: fires for each normalized statement whose mean execution time
//! (from pg_stat_statements) is above a threshold.
//!
//! Settings: `max_mean_ms` (default 50), `min_calls` (default 10), `severity` (default `warning`).

use serde::Deserialize;
use vigil_plugin_kit::bindings::{Batch, Finding, Guest, PluginInfo};
use vigil_plugin_kit::{finding, points_of, settings, severity};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_mean")]
    max_mean_ms: f64,
    #[serde(default = "default_calls")]
    min_calls: f64,
    #[serde(default = "default_severity")]
    severity: String,
}

fn default_mean() -> f64 {
    50.0
}
fn default_calls() -> f64 {
    10.0
}
fn default_severity() -> String {
    "warning".into()
}

struct SlowQuery;

impl Guest for SlowQuery {
    fn describe() -> Result<PluginInfo, String> {
        let s: Settings = settings("pg-slow-query")?;
        severity(&s.severity)?;
        Ok(PluginInfo {
            name: "pg-slow-query".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            interests: vec![
                "postgresql.query.mean_time".into(),
                "postgresql.query.calls".into(),
            ],
        })
    }

    fn evaluate(batch: Batch) -> Result<Vec<Finding>, String> {
        let batch = vigil_plugin_kit::Frame::new(batch)?;
        let s: Settings = settings("pg-slow-query")?;
        let mut findings = Vec::new();
        for mean in points_of(&batch, "postgresql.query.mean_time") {
            let id = mean.attr("postgresql.query.id");
            let instance = mean.attr("vigil.instance");
            let calls = points_of(&batch, "postgresql.query.calls")
                .find(|c| {
                    c.attr("postgresql.query.id") == id && c.attr("vigil.instance") == instance
                })
                .map_or(0.0, |c| c.value);
            let mean_ms = mean.value * 1000.0;
            if calls >= s.min_calls && mean_ms > s.max_mean_ms {
                let text = mean.attr("db.query.text");
                findings.push(finding(
                    "pg-slow-query",
                    format!("instance={instance},query={id}"),
                    severity(&s.severity)?,
                    format!("PostgreSQL {instance}: mean {mean_ms:.1} ms over {calls} calls (limit {} ms): {text}", s.max_mean_ms),
                    mean_ms,
                    &[("vigil.instance", instance.to_owned()), ("postgresql.query.id", id.to_owned()), ("db.query.text", text.to_owned()), ("calls", calls.to_string())],
                ));
            }
        }
        Ok(findings)
    }
}

vigil_plugin_kit::bindings::export!(SlowQuery with_types_in vigil_plugin_kit::bindings);
