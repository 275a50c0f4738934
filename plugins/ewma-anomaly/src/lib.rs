//! `ewma-anomaly`: flags a value far from its series' exponentially weighted moving average.
//!
//! The reference implementation of the rule every plugin language implements identically
//! (the Python, JavaScript and C versions live under `plugins/python`, `plugins/js` and
//! `plugins/c`; `tests/all/e2e_languages.rs` checks they agree). Settings (JSON):
//!
//! ```toml
//! [plugins.settings.ewma-anomaly]
//! metric = "system.cpu.utilization"  # required
//! alpha = 0.3                         # smoothing, 0 < alpha <= 1
//! k = 3.0                             # how many standard deviations count as anomalous, > 0
//! warmup = 5                          # values seen before a series can be anomalous, >= 1
//! severity = "warning"                # info | warning | critical
//! for_ms = 0                          # how long it must hold before firing
//! ```
//!
//! Per series the host's key/value state keeps 24 bytes under `ewma/SOURCE/KEY`: mean,
//! variance and count as little-endian f64.

mod rule;

use std::cell::RefCell;
use std::collections::HashMap;

pub use vigil_plugin_kit::bindings;

use bindings::vigil::plugin::host;
use bindings::vigil::plugin::types::{SeriesTable, Severity};
use bindings::{Batch, Finding, Guest, PluginInfo};
use rule::{Ewma, Settings};

struct EwmaAnomaly;

thread_local! {
    /// The series table last given for each source.
    static TABLES: RefCell<HashMap<String, SeriesTable>> = RefCell::new(HashMap::new());
}

/// The settings, parsed from `host::config()`.
fn settings() -> Result<Settings, String> {
    Settings::parse(&host::config())
}

fn severity(name: &str) -> Severity {
    match name {
        "info" => Severity::Info,
        "critical" => Severity::Critical,
        _ => Severity::Warning,
    }
}

impl Guest for EwmaAnomaly {
    fn describe() -> Result<PluginInfo, String> {
        let settings = settings()?;
        Ok(PluginInfo {
            name: "ewma-anomaly".into(),
            version: "0.1.0".into(),
            interests: vec![settings.metric],
        })
    }

    fn evaluate(mut batch: Batch) -> Result<Vec<Finding>, String> {
        let settings = settings()?;
        if let Some(table) = batch.table.take() {
            TABLES.with_borrow_mut(|t| t.insert(batch.source.clone(), table));
        }
        TABLES.with_borrow(|tables| {
            let table = tables
                .get(&batch.source)
                .ok_or_else(|| format!("no series table for source {}", batch.source))?;
            let Some(wanted) = table.metrics.iter().position(|m| m.name == settings.metric) else {
                return Ok(Vec::new());
            };
            let mut findings = Vec::new();
            for (series, &x) in table.series.iter().zip(&batch.values) {
                if series.metric as usize != wanted || !x.is_finite() {
                    continue;
                }
                let key = series
                    .attributes
                    .iter()
                    .map(|a| format!("{}={}", a.key, a.value))
                    .collect::<Vec<_>>()
                    .join(",");
                let state_key = format!("ewma/{}/{}", batch.source, key);
                let previous = host::state_get(&state_key).and_then(|b| Ewma::from_bytes(&b));
                let (next, anomalous) = match previous {
                    None => (Ewma::first(x), false),
                    Some(ewma) => ewma.update(x, &settings),
                };
                host::state_set(&state_key, &next.to_bytes())?;
                if anomalous {
                    findings.push(Finding {
                        rule: "ewma-anomaly".into(),
                        key,
                        severity: severity(&settings.severity),
                        summary: format!("{} is outside its usual range", settings.metric),
                        value: Some(x),
                        labels: Vec::new(),
                        for_ms: settings.for_ms,
                    });
                }
            }
            Ok(findings)
        })
    }
}

bindings::export!(EwmaAnomaly with_types_in bindings);
