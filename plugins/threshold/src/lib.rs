//! `threshold`: the first-party alert rule that compares metric values with a limit.
//!
//! Settings (`[plugins.settings.NAME]` in the agent config, NAME being the file's stem;
//! the plugin sees them as JSON):
//!
//! ```toml
//! [[plugins.settings.threshold.rules]]
//! name = "high-memory"                     # the alert's rule name
//! metric = "system.memory.utilization"     # metric to watch
//! op = ">"                                 # one of > >= < <= == !=
//! value = 0.9                              # the limit
//! for = "1m"                               # how long it must hold before firing (default 0s)
//! severity = "warning"                     # info | warning | critical (default warning)
//! match = { "system.memory.state" = "used" } # optional: only series with these attributes
//! ```

mod rule;

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;

use rule::{Rule, Settings};
use vigil_plugin_kit::Frame;
pub use vigil_plugin_kit::bindings;

use bindings::vigil::plugin::host;
use bindings::{Batch, Finding, Guest, PluginInfo};

struct Threshold;

/// The settings, parsed once per instance (a reload starts a new instance).
fn settings() -> Result<&'static Settings, String> {
    static SETTINGS: std::sync::OnceLock<Result<Settings, String>> = std::sync::OnceLock::new();
    SETTINGS
        .get_or_init(|| Settings::parse(&host::config()))
        .as_ref()
        .map_err(Clone::clone)
}

/// For one series table: per rule, the series it watches (its metric and attributes match)
/// as runs of consecutive indexes (a metric's series are usually all adjacent). Worked out
/// once per table, so a batch costs one comparison per watched value.
struct Plan {
    table_id: u64,
    watched: Vec<Vec<Range<usize>>>,
}

impl Plan {
    fn new(rules: &[Rule], frame: &Frame) -> Plan {
        let watched = rules
            .iter()
            .map(|rule| {
                let Some(metric) = frame.metric_index(&rule.metric) else {
                    return Vec::new();
                };
                let mut runs: Vec<Range<usize>> = Vec::new();
                let series = frame.table.series.iter().take(frame.batch.values.len());
                for (i, s) in series.enumerate() {
                    if s.metric != metric || !rule.matches(&s.attributes) {
                        continue;
                    }
                    match runs.last_mut() {
                        Some(run) if run.end == i => run.end += 1,
                        _ => runs.push(i..i + 1),
                    }
                }
                runs
            })
            .collect();
        Plan {
            table_id: frame.table.id,
            watched,
        }
    }
}

thread_local! {
    /// The plan for each source's current table.
    static PLANS: RefCell<HashMap<String, Plan>> = RefCell::new(HashMap::new());
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
        let frame = Frame::new(batch)?;
        PLANS.with_borrow_mut(|plans| {
            let plan = match plans.get_mut(&frame.batch.source) {
                Some(plan) if plan.table_id == frame.table.id => plan,
                _ => {
                    let plan = Plan::new(&settings.rules, &frame);
                    plans.insert(frame.batch.source.clone(), plan);
                    plans
                        .get_mut(&frame.batch.source)
                        .ok_or("plan just stored")?
                }
            };
            let values = &frame.batch.values;
            let mut findings = Vec::new();
            for (rule, watched) in settings.rules.iter().zip(&plan.watched) {
                for run in watched {
                    let Some(run_values) = values.get(run.clone()) else {
                        continue;
                    };
                    rule.scan(run_values, |offset, value| {
                        let series = &frame.table.series[run.start + offset];
                        findings.push(rule.finding(&series.attributes, value));
                    });
                }
            }
            Ok(findings)
        })
    }
}

bindings::export!(Threshold with_types_in bindings);
