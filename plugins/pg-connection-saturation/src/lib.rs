//! `pg-connection-saturation`: fires when client connections to a PostgreSQL server
//! reach a share of `max_connections`.
//!
//! Settings: `max_ratio` (default 0.8), `severity` (default `warning`).

use serde::Deserialize;
use vigil_plugin_kit::bindings::{Batch, Finding, Guest, PluginInfo};
use vigil_plugin_kit::{finding, points_of, settings, severity};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_ratio")]
    max_ratio: f64,
    #[serde(default = "default_severity")]
    severity: String,
}

fn default_ratio() -> f64 {
    0.8
}
fn default_severity() -> String {
    "warning".into()
}

struct Saturation;

impl Guest for Saturation {
    fn describe() -> Result<PluginInfo, String> {
        let s: Settings = settings("pg-connection-saturation")?;
        severity(&s.severity)?;
        Ok(PluginInfo {
            name: "pg-connection-saturation".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            interests: vec![
                "postgresql.connection.count".into(),
                "postgresql.connection.max".into(),
            ],
        })
    }

    fn evaluate(batch: Batch) -> Result<Vec<Finding>, String> {
        let batch = vigil_plugin_kit::Frame::new(batch)?;
        let s: Settings = settings("pg-connection-saturation")?;
        let mut findings = Vec::new();
        for count in points_of(&batch, "postgresql.connection.count") {
            let instance = count.attr("vigil.instance");
            let Some(max) = points_of(&batch, "postgresql.connection.max")
                .find(|m| m.attr("vigil.instance") == instance)
            else {
                continue;
            };
            if max.value <= 0.0 {
                continue;
            }
            let ratio = count.value / max.value;
            if ratio >= s.max_ratio {
                findings.push(finding(
                    "pg-connection-saturation",
                    format!("instance={instance}"),
                    severity(&s.severity)?,
                    format!(
                        "PostgreSQL {instance}: {} of {} connections in use ({:.1}%)",
                        count.value,
                        max.value,
                        ratio * 100.0
                    ),
                    ratio,
                    &[
                        ("vigil.instance", instance.to_owned()),
                        ("connections", count.value.to_string()),
                        ("max_connections", max.value.to_string()),
                    ],
                ));
            }
        }
        Ok(findings)
    }
}

vigil_plugin_kit::bindings::export!(Saturation with_types_in vigil_plugin_kit::bindings);
