//! Test fixture: an alert rule built against `vigil:plugin@0.1.0` (wit/v0.1.0), to prove the
//! agent still loads the previous contract. It reports `legacy-above` for every series of
//! `metric` whose value is above `limit`, keyed by the series' attributes.
//!
//! Settings: `{"metric": "system.memory.utilization", "limit": 0.5}`.

use serde::Deserialize;

/// Guest bindings of the vigil:plugin@0.1.0 alert-rule world.
mod bindings {
    #![allow(clippy::too_many_arguments)] // generated code
    wit_bindgen::generate!({ world: "alert-rule", path: "../../wit/v0.1.0" });
}

use bindings::vigil::plugin::host;
use bindings::vigil::plugin::types::Severity;
use bindings::{Batch, Finding, Guest, PluginInfo};

#[derive(Deserialize)]
struct Settings {
    metric: String,
    limit: f64,
}

fn settings() -> Result<Settings, String> {
    serde_json::from_str(&host::config())
        .map_err(|e| format!("invalid contract-v0-1 settings: {e}"))
}

struct Legacy;

impl Guest for Legacy {
    fn describe() -> Result<PluginInfo, String> {
        Ok(PluginInfo {
            name: "contract-v0-1".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            interests: vec![settings()?.metric],
        })
    }

    fn evaluate(batch: Batch) -> Result<Vec<Finding>, String> {
        let settings = settings()?;
        let Some(metric) = batch.metrics.iter().position(|m| m.name == settings.metric) else {
            return Ok(Vec::new());
        };
        Ok(batch
            .series
            .iter()
            .zip(&batch.values)
            .filter(|(s, v)| s.metric as usize == metric && **v > settings.limit)
            .map(|(s, v)| Finding {
                rule: "legacy-above".into(),
                key: s
                    .attributes
                    .iter()
                    .map(|a| format!("{}={}", a.key, a.value))
                    .collect::<Vec<_>>()
                    .join(","),
                severity: Severity::Warning,
                summary: format!("{} = {v} > {}", settings.metric, settings.limit),
                value: Some(*v),
                labels: s.attributes.clone(),
                for_ms: 0,
            })
            .collect())
    }
}

bindings::export!(Legacy with_types_in bindings);
