//! The plugin's settings (JSON from `host.config()`, i.e. `[plugins.settings.latency]`),
//! parsed and checked; every error names the setting at fault.

use serde::Deserialize;
use vigil_plugin_kit::bindings::vigil::plugin::types::Severity;

/// A latency rule: fires when the `percentile` of a series exceeds `max_seconds`.
#[derive(Debug, Clone, PartialEq)]
pub struct PercentileRule {
    /// 0 < percentile < 100, e.g. 95.
    pub percentile: f64,
    pub max_seconds: f64,
    pub for_ms: u64,
    pub severity: Severity,
    /// The rule's name in findings: `latency-p95`.
    pub name: String,
}

/// The error-ratio rule: fires when server errors / requests exceeds `max`.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRatioRule {
    pub max: f64,
    pub for_ms: u64,
    pub severity: Severity,
}

/// The checked settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Histogram metrics of request durations.
    pub metrics: Vec<String>,
    /// Counter metrics of requests (split by status code), for the error ratio only.
    pub request_counters: Vec<String>,
    /// Attributes holding the HTTP status code, the first present wins.
    pub status_attributes: Vec<String>,
    /// Attributes a series is judged by (`None`: all but the status attributes).
    pub group_by: Option<Vec<String>>,
    /// Requests a window must hold before it is judged.
    pub min_requests: f64,
    /// A window still incomplete after this long drops its verdict; series not seen for
    /// this long are forgotten.
    pub stale_after_ns: u64,
    /// Most series kept per source and metric.
    pub max_series: usize,
    pub percentiles: Vec<PercentileRule>,
    pub error_ratio: Option<ErrorRatioRule>,
}

impl Settings {
    /// Every percentile the plugin estimates: the configured ones and p50, p95, p99 (shown
    /// as labels of every finding), ascending, without repeats.
    pub fn estimated_percentiles(&self) -> Vec<f64> {
        let mut all: Vec<f64> = [50.0, 95.0, 99.0]
            .into_iter()
            .chain(self.percentiles.iter().map(|r| r.percentile))
            .collect();
        all.sort_by(f64::total_cmp);
        all.dedup();
        all
    }

    /// Every metric the plugin reads (its interests).
    pub fn interests(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for name in self.metrics.iter().chain(&self.request_counters) {
            if !all.contains(name) {
                all.push(name.clone());
            }
        }
        all
    }

    /// Parses and checks the settings JSON (`{}` or empty: the defaults).
    pub fn parse(json: &str) -> Result<Settings, String> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let raw: Raw =
            serde_json::from_str(json).map_err(|e| format!("invalid latency settings: {e}"))?;
        raw.check()
            .map_err(|e| format!("invalid latency settings: {e}"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default = "default_metrics")]
    metrics: Vec<String>,
    #[serde(default = "default_counters")]
    request_counters: Vec<String>,
    #[serde(default = "default_status_attributes")]
    status_attributes: Vec<String>,
    #[serde(default)]
    group_by: Option<Vec<String>>,
    #[serde(default = "default_min_requests")]
    min_requests: f64,
    #[serde(default = "default_stale_after")]
    stale_after: String,
    #[serde(default = "default_max_series")]
    max_series: usize,
    #[serde(default = "default_percentiles")]
    percentiles: Vec<RawPercentile>,
    #[serde(default)]
    error_ratio: RawErrorRatio,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPercentile {
    percentile: f64,
    max: String,
    #[serde(default = "default_for", rename = "for")]
    for_: String,
    #[serde(default = "default_severity")]
    severity: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawErrorRatio {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_max_ratio")]
    max: f64,
    #[serde(default = "default_for", rename = "for")]
    for_: String,
    #[serde(default = "default_severity")]
    severity: String,
}

impl Default for RawErrorRatio {
    fn default() -> Self {
        RawErrorRatio {
            enabled: true,
            max: default_max_ratio(),
            for_: default_for(),
            severity: default_severity(),
        }
    }
}

fn default_metrics() -> Vec<String> {
    vec![
        "http.server.request.duration".into(),
        "http_request_duration_seconds".into(),
    ]
}
fn default_counters() -> Vec<String> {
    vec!["http_requests_total".into()]
}
fn default_status_attributes() -> Vec<String> {
    vec![
        "http.response.status_code".into(),
        "code".into(),
        "status".into(),
    ]
}
fn default_min_requests() -> f64 {
    100.0
}
fn default_stale_after() -> String {
    "10m".into()
}
fn default_max_series() -> usize {
    500
}
fn default_percentiles() -> Vec<RawPercentile> {
    vec![RawPercentile {
        percentile: 95.0,
        max: "200ms".into(),
        for_: default_for(),
        severity: default_severity(),
    }]
}
fn yes() -> bool {
    true
}
fn default_max_ratio() -> f64 {
    0.01
}
fn default_for() -> String {
    "1m".into()
}
fn default_severity() -> String {
    "warning".into()
}

/// A duration setting (`200ms`, `1.5s` is not accepted: write `1500ms`).
fn duration(setting: &str, text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{setting} = {text:?}: {e} (write e.g. 200ms, 1s or 1m)"))
}

fn millis(setting: &str, text: &str) -> Result<u64, String> {
    let d = duration(setting, text)?;
    u64::try_from(d.as_millis()).map_err(|_| format!("{setting} = {text:?} is too long"))
}

fn severity(setting: &str, name: &str) -> Result<Severity, String> {
    vigil_plugin_kit::severity(name).map_err(|e| format!("{setting}: {e}"))
}

fn names(setting: &str, list: &[String]) -> Result<(), String> {
    match list.iter().find(|n| n.trim().is_empty()) {
        Some(_) => Err(format!("{setting} holds an empty name")),
        None => Ok(()),
    }
}

impl Raw {
    fn check(self) -> Result<Settings, String> {
        names("metrics", &self.metrics)?;
        names("request_counters", &self.request_counters)?;
        names("status_attributes", &self.status_attributes)?;
        if let Some(group_by) = &self.group_by {
            names("group_by", group_by)?;
        }
        if self.metrics.is_empty() && self.request_counters.is_empty() {
            return Err(
                "metrics and request_counters are both empty: name at least one metric".into(),
            );
        }
        if !(self.min_requests.is_finite() && self.min_requests >= 1.0) {
            return Err(format!(
                "min_requests = {} must be at least 1",
                self.min_requests
            ));
        }
        let stale_after = duration("stale_after", &self.stale_after)?;
        if stale_after.is_zero() {
            return Err("stale_after must be above 0".into());
        }
        if self.max_series == 0 {
            return Err("max_series must be at least 1".into());
        }
        let mut percentiles = Vec::new();
        for (i, p) in self.percentiles.into_iter().enumerate() {
            let at = format!("percentiles[{i}]");
            if !(p.percentile > 0.0 && p.percentile < 100.0) {
                return Err(format!(
                    "{at}.percentile = {} must be above 0 and below 100 (e.g. 95)",
                    p.percentile
                ));
            }
            let max = duration(&format!("{at}.max"), &p.max)?;
            percentiles.push(PercentileRule {
                percentile: p.percentile,
                max_seconds: max.as_secs_f64(),
                for_ms: millis(&format!("{at}.for"), &p.for_)?,
                severity: severity(&format!("{at}.severity"), &p.severity)?,
                name: format!("latency-p{}", p.percentile),
            });
        }
        let error_ratio = if self.error_ratio.enabled {
            let e = self.error_ratio;
            if !(e.max >= 0.0 && e.max < 1.0) {
                return Err(format!(
                    "error_ratio.max = {} must be at least 0 and below 1 (0.01 is 1 %)",
                    e.max
                ));
            }
            Some(ErrorRatioRule {
                max: e.max,
                for_ms: millis("error_ratio.for", &e.for_)?,
                severity: severity("error_ratio.severity", &e.severity)?,
            })
        } else {
            None
        };
        Ok(Settings {
            metrics: self.metrics,
            request_counters: self.request_counters,
            status_attributes: self.status_attributes,
            group_by: self.group_by,
            min_requests: self.min_requests,
            stale_after_ns: u64::try_from(stale_after.as_nanos()).unwrap_or(u64::MAX),
            max_series: self.max_series,
            percentiles,
            error_ratio,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_watch_both_conventions_with_p95_and_the_error_ratio() {
        let s = Settings::parse("{}").unwrap();
        assert_eq!(
            s.metrics,
            [
                "http.server.request.duration",
                "http_request_duration_seconds"
            ]
        );
        assert_eq!(s.request_counters, ["http_requests_total"]);
        assert_eq!(
            s.status_attributes,
            ["http.response.status_code", "code", "status"]
        );
        assert_eq!(s.percentiles.len(), 1);
        assert_eq!(s.percentiles[0].name, "latency-p95");
        assert!((s.percentiles[0].max_seconds - 0.2).abs() < 1e-12);
        assert_eq!(s.percentiles[0].for_ms, 60_000);
        assert_eq!(s.error_ratio.as_ref().map(|e| e.max), Some(0.01));
        assert_eq!(s.estimated_percentiles(), [50.0, 95.0, 99.0]);
        assert_eq!(Settings::parse("").unwrap(), s);
    }

    #[test]
    fn configured_rules_are_parsed() {
        let s = Settings::parse(
            r#"{"percentiles": [{"percentile": 99.9, "max": "1s", "for": "0s", "severity": "critical"}],
                "error_ratio": {"enabled": false}, "min_requests": 10, "group_by": ["http.route"]}"#,
        )
        .unwrap();
        assert_eq!(s.percentiles[0].name, "latency-p99.9");
        assert_eq!(s.percentiles[0].max_seconds, 1.0);
        assert_eq!(s.percentiles[0].for_ms, 0);
        assert_eq!(s.percentiles[0].severity, Severity::Critical);
        assert_eq!(s.error_ratio, None);
        assert_eq!(s.group_by, Some(vec!["http.route".to_owned()]));
        assert_eq!(s.estimated_percentiles(), [50.0, 95.0, 99.0, 99.9]);
    }

    #[test]
    fn bad_settings_name_the_setting() {
        for (json, says) in [
            (
                r#"{"percentiles": [{"percentile": 100, "max": "1s"}]}"#,
                "percentiles[0].percentile",
            ),
            (
                r#"{"percentiles": [{"percentile": 95, "max": "fast"}]}"#,
                "percentiles[0].max",
            ),
            (
                r#"{"percentiles": [{"percentile": 95, "max": "1s", "severity": "bad"}]}"#,
                "percentiles[0].severity",
            ),
            (r#"{"error_ratio": {"max": 1.5}}"#, "error_ratio.max"),
            (r#"{"error_ratio": {"for": "soon"}}"#, "error_ratio.for"),
            (r#"{"min_requests": 0}"#, "min_requests"),
            (r#"{"stale_after": "0s"}"#, "stale_after"),
            (r#"{"max_series": 0}"#, "max_series"),
            (
                r#"{"metrics": [], "request_counters": []}"#,
                "metrics and request_counters",
            ),
            (r#"{"metrics": [""]}"#, "metrics holds an empty name"),
            (r#"{"unknown": 1}"#, "unknown field `unknown`"),
            ("[1]", "invalid latency settings"),
        ] {
            let error = Settings::parse(json).unwrap_err();
            assert!(error.contains(says), "{json}: {error}");
            assert!(error.starts_with("invalid latency settings"), "{error}");
        }
    }
}
