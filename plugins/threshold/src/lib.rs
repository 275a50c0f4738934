//! `threshold`: the first-party alert rule that compares metric values with a limit.
//!
//! Settings (`[plugins.NAME.settings]` in the agent config, seen here as JSON):
//!
//! ```toml
//! [[plugins.threshold.settings.rules]]
//! name = "high-memory"                     # the alert's rule name
//! metric = "system.memory.utilization"     # metric to watch
//! op = ">"                                 # one of > >= < <= == !=
//! value = 0.9                              # the limit
//! for = "1m"                               # how long it must hold before firing (default 0s)
//! severity = "warning"                     # info | warning | critical (default warning)
//! match = { "system.memory.state" = "used" } # optional: only series with these attributes
//! ```

mod rule;

use rule::{Rule, Settings};

/// Guest bindings of the vigil:plugin/alert-rule world.
mod bindings {
    #![allow(clippy::too_many_arguments)] // generated code
    wit_bindgen::generate!({ world: "alert-rule", path: "../../wit/v0.1.0", pub_export_macro: true });
}

use bindings::{Batch, Finding, PluginInfo};
use bindings::{Guest, vigil};

use vigil::plugin::host;

struct Threshold;

/// The settings, parsed once per instance (a reload starts a new instance).
fn settings() -> Result<&'static Settings, String> {
    static SETTINGS: std::sync::OnceLock<Result<Settings, String>> = std::sync::OnceLock::new();
    SETTINGS
        .get_or_init(|| Settings::parse(&host::config()))
        .as_ref()
        .map_err(Clone::clone)
}

impl Guest for Threshold {
    fn describe() -> Result<PluginInfo, String> {
        let settings = settings()?;
        let mut interests: Vec<String> = settings.rules.iter().map(|r| r.metric.clone()).collect();
        interests.sort();
        interests.dedup();
        Ok(PluginInfo {
            name: "threshold".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            interests,
        })
    }

    fn evaluate(batch: Batch) -> Result<Vec<Finding>, String> {
        let settings = settings()?;
        Ok(settings
            .rules
            .iter()
            .flat_map(|rule| findings_for(rule, &batch))
            .collect())
    }
}

/// Every series of `batch` that breaks `rule`, as findings.
fn findings_for<'a>(rule: &'a Rule, batch: &'a Batch) -> impl Iterator<Item = Finding> + 'a {
    let metric = batch.metrics.iter().position(|m| m.name == rule.metric);
    batch
        .series
        .iter()
        .zip(batch.values.iter().copied())
        .filter(move |(series, _)| Some(series.metric as usize) == metric)
        .filter(|(series, _)| rule.matches(&series.attributes))
        .filter(|(_, value)| rule.breached_by(*value))
        .map(|(series, value)| rule.finding(&series.attributes, value))
}

bindings::export!(Threshold with_types_in bindings);
