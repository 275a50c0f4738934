//! What every first-party Rust plugin shares: the guest bindings of the
//! `vigil:plugin@0.4.0` worlds and helpers to read batches (a [`Frame`] pairs a batch with
//! the series table the host sent earlier), build findings, and write tuning policies.
//!
//! - An alert rule implements [`bindings::Guest`] and exports it with
//!   `vigil_plugin_kit::bindings::export!(MyRule with_types_in vigil_plugin_kit::bindings);`.
//! - A tuning policy implements [`policy_bindings::Guest`] and exports it with
//!   `vigil_plugin_kit::export_policy!(MyPolicy);`; [`policy`] has its helpers.
//! - [`units`] parses sizes and durations, [`counter`] computes counter rates between
//!   batches and streaks of batches; both are pure and tested natively
//!   (`cargo test -p vigil-plugin-kit` in plugins/).
//!
//! Both worlds' bindings live here and share one copy of the `types` and `host`
//! interfaces. The kit's own custom sections describe imports only (`pub_export_macro`);
//! the world a plugin implements is the one whose export macro it calls.

/// Guest bindings of the vigil:plugin/alert-rule world (and the shared `types` and `host`).
pub mod bindings {
    #![allow(clippy::too_many_arguments)] // generated code
    wit_bindgen::generate!({
        world: "alert-rule",
        path: "../../wit",
        pub_export_macro: true,
        // Lets plugins compare proposals and findings in their tests.
        additional_derives: [PartialEq],
    });
}

/// Guest bindings of the vigil:plugin/tuning-policy world; its types and host functions
/// are those of [`bindings`].
pub mod policy_bindings {
    #![allow(clippy::too_many_arguments)] // generated code
    wit_bindgen::generate!({
        world: "tuning-policy",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_policy",
        default_bindings_module: "vigil_plugin_kit::policy_bindings",
        with: {
            "vigil:plugin/types@0.4.0": crate::bindings::vigil::plugin::types,
            "vigil:plugin/host@0.4.0": crate::bindings::vigil::plugin::host,
        },
    });
}

/// Exports a tuning policy: `vigil_plugin_kit::export_policy!(MyPolicy);` where `MyPolicy`
/// implements [`policy_bindings::Guest`].
pub use policy_bindings::export_policy;

pub mod counter;
pub mod policy;
pub mod units;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bindings::vigil::plugin::host;
use bindings::vigil::plugin::types::{Attribute, Batch, Finding, Histogram, SeriesTable, Severity};

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

impl<'a> Point<'a> {
    /// The value of attribute `key`, or "".
    pub fn attr(&self, key: &str) -> &'a str {
        attr(self.attributes, key)
    }
}

/// The configured instance a series belongs to: its `vigil.instance` attribute (every
/// server collector sets it), else the source's name after `kind:` (`redis:main` → `main`),
/// else the source itself.
pub fn instance<'a>(source: &'a str, attributes: &'a [Attribute]) -> &'a str {
    match attr(attributes, "vigil.instance") {
        "" => source.split_once(':').map_or(source, |(_, name)| name),
        name => name,
    }
}

/// The value of attribute `key` in `attributes`, or "".
pub fn attr<'a>(attributes: &'a [Attribute], key: &str) -> &'a str {
    attributes
        .iter()
        .find(|a| a.key == key)
        .map_or("", |a| a.value.as_str())
}

thread_local! {
    /// The series table last given for each source (the host sends a table only when it changed).
    static TABLES: RefCell<HashMap<String, Rc<SeriesTable>>> = RefCell::new(HashMap::new());
}

/// A batch with the series table its values belong to.
pub struct Frame {
    pub table: Rc<SeriesTable>,
    pub batch: Batch,
}

impl Frame {
    /// Takes a batch from the host: keeps its table for the source when it carries one,
    /// else pairs it with the table kept for the source.
    pub fn new(mut batch: Batch) -> Result<Frame, String> {
        let table = match batch.table.take() {
            Some(table) => {
                let table = Rc::new(table);
                TABLES.with_borrow_mut(|t| t.insert(batch.source.clone(), table.clone()));
                table
            }
            None => TABLES
                .with_borrow(|t| t.get(&batch.source).cloned())
                .filter(|t| t.id == batch.table_id)
                .ok_or_else(|| {
                    format!(
                        "no series table {} kept for source {:?}: the host sends a table with the first batch of each source",
                        batch.table_id, batch.source
                    )
                })?,
        };
        if batch.values.len() > table.series.len() {
            return Err(format!(
                "batch of {:?} has {} values for {} series",
                batch.source,
                batch.values.len(),
                table.series.len()
            ));
        }
        Ok(Frame { table, batch })
    }

    /// The index of metric `name` in the table.
    pub fn metric_index(&self, name: &str) -> Option<u32> {
        self.table
            .metrics
            .iter()
            .position(|m| m.name == name)
            .map(|i| i as u32)
    }

    /// Every scalar datapoint.
    pub fn points(&self) -> impl Iterator<Item = Point<'_>> {
        self.table
            .series
            .iter()
            .zip(&self.batch.values)
            .filter_map(|(s, v)| {
                Some(Point {
                    metric: &self.table.metrics.get(s.metric as usize)?.name,
                    attributes: &s.attributes,
                    value: *v,
                })
            })
    }

    /// The histogram points with their series' metric name and attributes.
    pub fn histograms(&self) -> impl Iterator<Item = (&str, &[Attribute], &Histogram)> {
        self.batch.histograms.iter().filter_map(|h| {
            let series = self.table.series.get(h.series as usize)?;
            let metric = self.table.metrics.get(series.metric as usize)?;
            Some((metric.name.as_str(), series.attributes.as_slice(), h))
        })
    }
}

/// The datapoints of metric `name`.
pub fn points_of<'a>(frame: &'a Frame, name: &'a str) -> impl Iterator<Item = Point<'a>> + 'a {
    frame.points().filter(move |p| p.metric == name)
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
