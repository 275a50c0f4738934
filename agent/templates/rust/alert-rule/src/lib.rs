//! `{{name}}`: a vigil alert rule (world `alert-rule` of `vigil:plugin`, see wit/).
//!
//! Reports every series of `metric` whose value is above `limit`. Settings, from the agent
//! config's `[plugins.settings.{{name}}]` (seen here as JSON by `host::config()`):
//! `metric` (required), `limit` (required), `severity` (info | warning | critical; default warning).

wit_bindgen::generate!({ world: "alert-rule", path: "wit" });

use std::cell::RefCell;
use std::collections::HashMap;

use vigil::plugin::host;
use vigil::plugin::types::{SeriesTable, Severity};

struct Rule;

struct Settings {
    metric: String,
    limit: f64,
    severity: Severity,
}

thread_local! {
    /// The series table last sent for each source (the host sends one only when it changed).
    static TABLES: RefCell<HashMap<String, SeriesTable>> = RefCell::new(HashMap::new());
}

fn settings() -> Result<Settings, String> {
    let json: serde_json::Value =
        serde_json::from_str(&host::config()).map_err(|e| format!("settings are not JSON: {e}"))?;
    let metric = json["metric"]
        .as_str()
        .ok_or("setting metric is required (a metric name)")?
        .to_owned();
    let limit = json["limit"].as_f64().ok_or("setting limit is required (a number)")?;
    let severity = match json["severity"].as_str().unwrap_or("warning") {
        "info" => Severity::Info,
        "warning" => Severity::Warning,
        "critical" => Severity::Critical,
        _ => return Err("setting severity must be info, warning or critical".into()),
    };
    Ok(Settings { metric, limit, severity })
}

impl Guest for Rule {
    fn describe() -> Result<PluginInfo, String> {
        let s = settings()?;
        Ok(PluginInfo {
            name: "{{name}}".into(),
            version: "0.1.0".into(),
            interests: vec![s.metric],
        })
    }

    fn evaluate(mut batch: Batch) -> Result<Vec<Finding>, String> {
        let s = settings()?;
        if let Some(table) = batch.table.take() {
            TABLES.with_borrow_mut(|t| t.insert(batch.source.clone(), table));
        }
        TABLES.with_borrow(|tables| {
            let table = tables
                .get(&batch.source)
                .ok_or_else(|| format!("no series table for source {}", batch.source))?;
            let Some(wanted) = table.metrics.iter().position(|m| m.name == s.metric) else {
                return Ok(Vec::new());
            };
            let mut findings = Vec::new();
            for (series, &value) in table.series.iter().zip(&batch.values) {
                let above = value > s.limit;
                if series.metric as usize != wanted || !above {
                    continue;
                }
                let key = series
                    .attributes
                    .iter()
                    .map(|a| format!("{}={}", a.key, a.value))
                    .collect::<Vec<_>>()
                    .join(",");
                findings.push(Finding {
                    rule: "{{name}}".into(),
                    key,
                    severity: s.severity,
                    summary: format!("{} is above its limit", s.metric),
                    value: Some(value),
                    labels: Vec::new(),
                    for_ms: 0,
                });
            }
            Ok(findings)
        })
    }
}

export!(Rule);
