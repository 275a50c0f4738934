//! Test fixture: an alert rule built against `vigil:plugin@0.2.0` (wit/v0.2.0), to prove the
//! agent still loads the previous contract. It reports `legacy-above` for every series of
//! `metric` whose value is above `limit`, keyed by the series' attributes.
//!
//! Settings: `{"metric": "system.memory.utilization", "limit": 0.5}`.
//!
//! In 0.2.0 a batch carries its series table only when it changed: the fixture keeps the
//! last table of each source, as every 0.2.0 plugin must.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde::Deserialize;

/// Guest bindings of the vigil:plugin@0.2.0 alert-rule world.
mod bindings {
    #![allow(clippy::too_many_arguments)] // generated code
    wit_bindgen::generate!({ world: "alert-rule", path: "../../wit/v0.2.0" });
}

use bindings::vigil::plugin::host;
use bindings::vigil::plugin::types::{SeriesTable, Severity};
use bindings::{Batch, Finding, Guest, PluginInfo};

#[derive(Deserialize)]
struct Settings {
    metric: String,
    limit: f64,
}

fn settings() -> Result<Settings, String> {
    serde_json::from_str(&host::config())
        .map_err(|e| format!("invalid contract-v0-2 settings: {e}"))
}

thread_local! {
    /// The series table last given for each source.
    static TABLES: RefCell<HashMap<String, Rc<SeriesTable>>> = RefCell::new(HashMap::new());
}

/// The table `batch` belongs to: the one it carries (kept for its source), else the kept one.
fn table_of(batch: &mut Batch) -> Result<Rc<SeriesTable>, String> {
    match batch.table.take() {
        Some(table) => {
            let table = Rc::new(table);
            TABLES.with_borrow_mut(|t| t.insert(batch.source.clone(), table.clone()));
            Ok(table)
        }
        None => TABLES
            .with_borrow(|t| t.get(&batch.source).cloned())
            .filter(|t| t.id == batch.table_id)
            .ok_or_else(|| {
                format!(
                    "no series table {} kept for source {:?}",
                    batch.table_id, batch.source
                )
            }),
    }
}

struct Legacy;

impl Guest for Legacy {
    fn describe() -> Result<PluginInfo, String> {
        Ok(PluginInfo {
            name: "contract-v0-2".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            interests: vec![settings()?.metric],
        })
    }

    fn evaluate(mut batch: Batch) -> Result<Vec<Finding>, String> {
        let settings = settings()?;
        let table = table_of(&mut batch)?;
        let Some(metric) = table.metrics.iter().position(|m| m.name == settings.metric) else {
            return Ok(Vec::new());
        };
        Ok(table
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
