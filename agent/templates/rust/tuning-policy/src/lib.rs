//! `{{name}}`: a vigil tuning policy (world `tuning-policy` of `vigil:plugin`, see wit/).
//!
//! When a series of `metric` is above `limit`, proposes running the batch's collector every
//! `interval_ms` (unless it already does). Nothing happens by itself: the agent's gate
//! (`[[tuning.allow]]`, rate limits, dry-run) decides. Settings, from the agent config's
//! `[plugins.settings.{{name}}]` (seen here as JSON by `host::config()`): `metric`, `limit`
//! and `interval_ms` (all required).

wit_bindgen::generate!({ world: "tuning-policy", path: "wit" });

use std::cell::RefCell;
use std::collections::HashMap;

use vigil::plugin::host;
use vigil::plugin::types::{Action, IntervalChange, SeriesTable, SettingTarget};

struct Policy;

struct Settings {
    metric: String,
    limit: f64,
    interval_ms: u64,
}

thread_local! {
    /// The series table last sent for each source (the host sends one only when it changed).
    static TABLES: RefCell<HashMap<String, SeriesTable>> = RefCell::new(HashMap::new());
}

fn settings() -> Result<Settings, String> {
    let json: serde_json::Value =
        serde_json::from_str(&host::config()).map_err(|e| format!("settings are not JSON: {e}"))?;
    Ok(Settings {
        metric: json["metric"]
            .as_str()
            .ok_or("setting metric is required (a metric name)")?
            .to_owned(),
        limit: json["limit"].as_f64().ok_or("setting limit is required (a number)")?,
        interval_ms: json["interval_ms"]
            .as_u64()
            .ok_or("setting interval_ms is required (milliseconds)")?,
    })
}

impl Guest for Policy {
    fn describe() -> Result<PluginInfo, String> {
        Ok(PluginInfo {
            name: "{{name}}".into(),
            version: "0.1.0".into(),
            interests: vec![settings()?.metric],
        })
    }

    fn propose(
        mut batch: Batch,
        _firing: Vec<FiringAlert>,
        current: Vec<CurrentSetting>,
    ) -> Result<Vec<Proposal>, String> {
        let s = settings()?;
        if let Some(table) = batch.table.take() {
            TABLES.with_borrow_mut(|t| t.insert(batch.source.clone(), table));
        }
        let hot = TABLES.with_borrow(|tables| {
            let table = tables
                .get(&batch.source)
                .ok_or_else(|| format!("no series table for source {}", batch.source))?;
            let wanted = table.metrics.iter().position(|m| m.name == s.metric);
            Ok::<bool, String>(
                table
                    .series
                    .iter()
                    .zip(&batch.values)
                    .any(|(series, &value)| Some(series.metric as usize) == wanted && value > s.limit),
            )
        })?;
        let target = s.interval_ms.to_string();
        let already = current.iter().any(|c| {
            c.target == SettingTarget::Collector
                && c.instance == batch.source
                && c.parameter == "interval-ms"
                && c.value == target
        });
        if !hot || already {
            return Ok(Vec::new());
        }
        Ok(vec![Proposal {
            action: Action::CollectorInterval(IntervalChange {
                collector: batch.source.clone(),
                interval_ms: s.interval_ms,
            }),
            reason: format!("{} is above its limit", s.metric),
            revert_if: None,
        }])
    }
}

export!(Policy);
