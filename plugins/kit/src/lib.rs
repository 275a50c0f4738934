//! What every first-party Rust plugin shares: the guest bindings of the
//! `vigil:plugin/alert-rule` world and helpers to read batches and build findings.
//!
//! A plugin implements [`bindings::Guest`] and exports it with
//! `vigil_plugin_kit::bindings::export!(MyRule with_types_in vigil_plugin_kit::bindings);`.

/// Guest bindings of the vigil:plugin/alert-rule world.
pub mod bindings {
    #![allow(clippy::too_many_arguments)] // generated code
    wit_bindgen::generate!({ world: "alert-rule", path: "../../wit/v0.1.0", pub_export_macro: true });
}

use bindings::vigil::plugin::host;
use bindings::vigil::plugin::types::{Attribute, Batch, Finding, Severity};

/// Parses the plugin's settings (JSON from `host::config()`) into `T`, with an error naming the plugin.
pub fn settings<T: serde::de::DeserializeOwned>(plugin: &str) -> Result<T, String> {
    serde_json::from_str(&host::config()).map_err(|e| format!("invalid {plugin} settings: {e}"))
}

/// One datapoint of a batch.
pub struct Point<'a> {
    pub metric: &'a str,
    pub attributes: &'a [Attribute],
    pub value: f64,
}

impl Point<'_> {
    /// The value of attribute `key`, or "".
    pub fn attr(&self, key: &str) -> &str {
        self.attributes
            .iter()
            .find(|a| a.key == key)
            .map_or("", |a| a.value.as_str())
    }
}

/// Every datapoint of `batch`.
pub fn points(batch: &Batch) -> impl Iterator<Item = Point<'_>> {
    batch.series.iter().zip(&batch.values).filter_map(|(s, v)| {
        Some(Point {
            metric: &batch.metrics.get(s.metric as usize)?.name,
            attributes: &s.attributes,
            value: *v,
        })
    })
}

/// The datapoints of metric `name`.
pub fn points_of<'a>(batch: &'a Batch, name: &'a str) -> impl Iterator<Item = Point<'a>> + 'a {
    points(batch).filter(move |p| p.metric == name)
}

/// Parses a severity name (`info`, `warning`, `critical`).
pub fn severity(name: &str) -> Result<Severity, String> {
    match name {
        "info" => Ok(Severity::Info),
        "warning" => Ok(Severity::Warning),
        "critical" => Ok(Severity::Critical),
        other => Err(format!(
            "severity {other:?} is not one of info, warning, critical"
        )),
    }
}

/// Builds a finding with labels from `(key, value)` pairs.
pub fn finding(
    rule: &str,
    key: String,
    severity: Severity,
    summary: String,
    value: f64,
    labels: &[(&str, String)],
) -> Finding {
    Finding {
        rule: rule.to_owned(),
        key,
        severity,
        summary,
        value: Some(value),
        labels: labels
            .iter()
            .map(|(k, v)| Attribute {
                key: (*k).to_owned(),
                value: v.clone(),
            })
            .collect(),
        for_ms: 0,
    }
}

/// Reads the JSON state kept under `key` in the host's key/value store (`fresh()` when
/// there is none or it no longer parses), lets `advance` update it, and stores it back.
/// The state outlives restarts and new versions of the plugin.
pub fn update_state<T: serde::Serialize + serde::de::DeserializeOwned>(
    key: &str,
    fresh: impl FnOnce() -> T,
    advance: impl FnOnce(&mut T),
) -> Result<T, String> {
    let state = host::state_get(key).and_then(|bytes| serde_json::from_slice::<T>(&bytes).ok());
    let state = match state {
        Some(mut state) => {
            advance(&mut state);
            state
        }
        None => fresh(),
    };
    host::state_set(key, &serde_json::to_vec(&state).map_err(|e| e.to_string())?)?;
    Ok(state)
}
