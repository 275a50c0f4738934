//! Parsing and checking of threshold rules.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::bindings::vigil::plugin::types::{Attribute, Finding, Severity};

/// The plugin's settings: a list of rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub rules: Vec<Rule>,
}

impl Settings {
    /// Parses the JSON settings the host hands over, with an error that says what to fix.
    pub fn parse(json: &str) -> Result<Settings, String> {
        let settings: Settings =
            serde_json::from_str(json).map_err(|e| format!("invalid threshold settings: {e}"))?;
        if settings.rules.is_empty() {
            return Err("threshold settings need at least one [[rules]] entry".into());
        }
        for rule in &settings.rules {
            rule.validate()?;
        }
        Ok(settings)
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

/// Severity as written in the settings.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    #[default]
    Warning,
    Critical,
}

/// One rule: a metric, a comparison and a limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub metric: String,
    pub op: Op,
    pub value: f64,
    #[serde(rename = "for", default)]
    pub for_duration: Option<String>,
    #[serde(default)]
    pub severity: Level,
    #[serde(rename = "match", default)]
    pub attributes: BTreeMap<String, String>,
}

impl Rule {
    fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.metric.is_empty() {
            return Err("every threshold rule needs a non-empty `name` and `metric`".into());
        }
        if !self.value.is_finite() {
            return Err(format!(
                "rule `{}`: `value` must be a finite number",
                self.name
            ));
        }
        self.for_ms().map(|_| ())
    }

    /// The `for` duration in milliseconds.
    fn for_ms(&self) -> Result<u64, String> {
        let Some(text) = &self.for_duration else {
            return Ok(0);
        };
        humantime::parse_duration(text)
            .map(|d: Duration| d.as_millis() as u64)
            .map_err(|e| {
                format!(
                    "rule `{}`: invalid `for` = {text:?}: {e} (use e.g. \"30s\", \"5m\")",
                    self.name
                )
            })
    }

    /// Whether a series with these attributes is one the rule watches.
    pub fn matches(&self, attributes: &[Attribute]) -> bool {
        self.attributes.iter().all(|(key, wanted)| {
            attributes
                .iter()
                .any(|a| &a.key == key && &a.value == wanted)
        })
    }

    /// Calls `hit(i, value)` for every `values[i]` that breaks the rule. The operator is
    /// matched once per slice, so each value costs one comparison.
    pub fn scan(&self, values: &[f64], mut hit: impl FnMut(usize, f64)) {
        fn each(values: &[f64], breaks: impl Fn(f64) -> bool, hit: &mut impl FnMut(usize, f64)) {
            for (i, &value) in values.iter().enumerate() {
                if breaks(value) {
                    hit(i, value);
                }
            }
        }
        let limit = self.value;
        match self.op {
            Op::Gt => each(values, |v| v > limit, &mut hit),
            Op::Ge => each(values, |v| v >= limit, &mut hit),
            Op::Lt => each(values, |v| v < limit, &mut hit),
            Op::Le => each(values, |v| v <= limit, &mut hit),
            Op::Eq => each(values, |v| v == limit, &mut hit),
            Op::Ne => each(values, |v| v != limit, &mut hit),
        }
    }

    /// The finding for a series that breaks the rule.
    pub fn finding(&self, attributes: &[Attribute], value: f64) -> Finding {
        let key = attributes
            .iter()
            .map(|a| format!("{}={}", a.key, a.value))
            .collect::<Vec<_>>()
            .join(",");
        let mut labels = attributes.to_vec();
        labels.push(Attribute {
            key: "metric".into(),
            value: self.metric.clone(),
        });
        Finding {
            rule: self.name.clone(),
            summary: format!(
                "{}{{{key}}} = {value} {} {}",
                self.metric,
                self.op.symbol(),
                self.value
            ),
            key,
            severity: match self.severity {
                Level::Info => Severity::Info,
                Level::Warning => Severity::Warning,
                Level::Critical => Severity::Critical,
            },
            value: Some(value),
            labels,
            for_ms: self.for_ms().unwrap_or(0),
        }
    }
}
