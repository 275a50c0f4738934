//! Runs the cases of a test file: each on a fresh plugin instance and a fresh alert
//! book, step by step at the step's time, and compares what came out with what the
//! step expects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use super::spec::{
    self, AlertExpect, BrokenFile, ExpectedState, FindingExpect, ProposalExpect, StepSpec, TestFile,
};
use crate::alert::{Alert, AlertBook, AlertKey, AlertState, Transition};
use crate::config::Config;
use crate::fixture::BatchFixture;
use crate::model::{Finding, Severity};
use crate::plugin::{Output, PluginInstance, PluginKind, PluginRuntime, PolicyInputs};
use crate::tuning::{CurrentSetting, Proposal, TuningEngine};

/// Default tolerance of an expected value.
const TOLERANCE: f64 = 1e-9;

/// When `at = "0s"` is unless the file says (`start`).
const DEFAULT_START: &str = "2026-01-01T00:00:00Z";

/// What running one test file found.
#[derive(Debug)]
pub struct FileReport {
    pub file: PathBuf,
    pub cases: Vec<CaseReport>,
}

impl FileReport {
    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.cases.iter().all(CaseReport::passed)
    }
}

/// One case's result: passed when no step failed.
#[derive(Debug)]
pub struct CaseReport {
    pub name: String,
    pub failures: Vec<StepFailure>,
}

impl CaseReport {
    /// Whether every step held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// One expectation of one step that did not hold.
#[derive(Debug)]
pub struct StepFailure {
    /// 1-based.
    pub step: usize,
    /// The step's `at`, as written.
    pub at: String,
    /// What failed: `findings differ`, `alerts differ`, `proposals differ`, `error`, `proposals`.
    pub what: &'static str,
    /// A diff of expected and actual, or a message.
    pub detail: String,
}

/// Runs test files against plugins on one plugin runtime (and its compile cache).
pub struct Runner<'a> {
    runtime: &'a PluginRuntime,
    config: &'a Config,
}

/// A step ready to run.
struct Step<'s> {
    spec: &'s StepSpec,
    at: Duration,
    batch: BatchFixture,
    firing: Option<Vec<Alert>>,
    settings: Option<Vec<CurrentSetting>>,
}

impl<'a> Runner<'a> {
    /// A runner loading plugins on `runtime`, with the plugin settings and tuning gate of `config`.
    pub fn new(runtime: &'a PluginRuntime, config: &'a Config) -> Self {
        Runner { runtime, config }
    }

    /// Reads and runs the test file at `file`. `Err`: the file cannot be run (unreadable,
    /// not valid, its plugin or a batch file missing or not loading).
    pub fn run_file(&self, file: &Path) -> Result<FileReport, BrokenFile> {
        let text = std::fs::read_to_string(file).map_err(|e| BrokenFile {
            file: file.to_owned(),
            line: None,
            message: format!("cannot read the test file: {e}"),
        })?;
        let parsed = spec::parse(file, &text)?;
        let broken = |span: std::ops::Range<usize>, message: String| {
            BrokenFile::at(file, &text, Some(span.start), message)
        };
        let dir = file.parent().unwrap_or(Path::new("."));
        let start = match &parsed.start {
            Some(s) => humantime::parse_rfc3339_weak(s.get_ref()).map_err(|e| {
                broken(
                    s.span(),
                    format!("start {:?} is not an RFC 3339 time: {e}", s.get_ref()),
                )
            })?,
            None => {
                humantime::parse_rfc3339(DEFAULT_START).map_err(|e| broken(0..0, e.to_string()))?
            }
        };
        let plugin_path = dir.join(parsed.plugin.get_ref());
        let bytes = std::fs::read(&plugin_path).map_err(|e| {
            broken(
                parsed.plugin.span(),
                format!("cannot read plugin {}: {e}; build it first or fix the path (relative to the test file)", plugin_path.display()),
            )
        })?;
        let name = parsed.name.clone().unwrap_or_else(|| {
            plugin_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let settings_json = self.settings_json(&parsed, &name);
        let load = || {
            PluginInstance::from_bytes(
                self.runtime,
                &plugin_path,
                &name,
                settings_json.clone(),
                &bytes,
            )
            .map_err(|e| broken(parsed.plugin.span(), e.to_string()))
        };
        if parsed.cases.is_empty() {
            return Err(broken(
                parsed.plugin.span(),
                "no cases: add [[cases]] with name = \"...\" and [[cases.steps]]".into(),
            ));
        }
        let first = load()?;
        let kind = first.kind();
        let mut cases = Vec::new();
        for case in &parsed.cases {
            let mut steps = Vec::new();
            let mut last = Duration::ZERO;
            for step in &case.get_ref().steps {
                let ready = prepare(step.get_ref(), dir, kind, last)
                    .map_err(|message| broken(step.span(), message))?;
                last = ready.at;
                steps.push(ready);
            }
            if steps.is_empty() {
                return Err(broken(
                    case.span(),
                    format!("case {:?} has no steps", case.get_ref().name),
                ));
            }
            cases.push((case.get_ref().name.clone(), steps));
        }
        let mut first = Some(first);
        let mut reports = Vec::new();
        for (case_name, steps) in cases {
            let instance = match first.take() {
                Some(instance) => instance,
                None => load()?,
            };
            reports.push(CaseReport {
                name: case_name,
                failures: self.run_case(instance, start, &steps),
            });
        }
        Ok(FileReport {
            file: file.to_owned(),
            cases: reports,
        })
    }

    /// `[plugins.settings.NAME]` of the config with the test file's `settings` over it.
    fn settings_json(&self, parsed: &TestFile, name: &str) -> String {
        let mut settings: Map<String, Value> =
            serde_json::from_str(&self.config.plugins.settings_json(name)).unwrap_or_default();
        if let Some(table) = &parsed.settings {
            for (key, value) in table {
                if let Ok(value) = serde_json::to_value(value) {
                    settings.insert(key.clone(), value);
                }
            }
        }
        Value::Object(settings).to_string()
    }

    fn run_case(
        &self,
        mut instance: PluginInstance,
        start: SystemTime,
        steps: &[Step<'_>],
    ) -> Vec<StepFailure> {
        let mut book = AlertBook::default();
        let mut pending: BTreeMap<AlertKey, Alert> = BTreeMap::new();
        let mut judge: Option<Judge> = None;
        let mut inputs = PolicyInputs::default();
        let mut settings: Vec<CurrentSetting> = Vec::new();
        let mut failures = Vec::new();
        for (index, step) in steps.iter().enumerate() {
            let now = start + step.at;
            let mut fail = |what: &'static str, detail: String| {
                failures.push(StepFailure {
                    step: index + 1,
                    at: step.spec.at.get_ref().clone(),
                    what,
                    detail,
                })
            };
            if let Some(firing) = &step.firing {
                inputs.firing = firing
                    .iter()
                    .cloned()
                    .map(|mut a| {
                        // `for`: how long before the step it started firing.
                        let since = now.checked_sub(a.hold_for).unwrap_or(now);
                        a.hold_for = Duration::ZERO;
                        a.active_since = since;
                        a.firing_since = Some(since);
                        a
                    })
                    .collect::<Vec<_>>()
                    .into();
            }
            if let Some(current) = &step.settings {
                settings.clone_from(current);
                inputs.settings = settings.clone().into();
            }
            let mut batch = step.batch.to_batch();
            batch.timestamp = now;
            let outcome = instance.run(&batch, &inputs);
            let outcome = match (outcome, &step.spec.error) {
                (Err(e), Some(wanted)) => {
                    let text = e.to_string();
                    if !text.contains(wanted.as_str()) {
                        fail(
                            "error",
                            format!("expected an error containing {wanted:?}, got: {text}"),
                        );
                    }
                    continue;
                }
                (Err(e), None) => {
                    let output = instance
                        .last_output()
                        .map(|o| format!("\nplugin output:\n{}", o.trim_end()))
                        .unwrap_or_default();
                    fail("error", format!("the plugin failed: {e}{output}"));
                    continue;
                }
                (Ok(_), Some(wanted)) => {
                    fail(
                        "error",
                        format!(
                            "expected an error containing {wanted:?}, but the plugin succeeded"
                        ),
                    );
                    continue;
                }
                (Ok(outcome), None) => outcome,
            };
            match outcome {
                Some(Output::Findings(findings)) => {
                    let events = book.apply(instance.name(), &batch.source, &findings, now);
                    track_pending(&mut pending, &events, &findings);
                    if let Some(expected) = &step.spec.findings {
                        compare(
                            "findings differ",
                            expected_findings(expected),
                            actual_findings(expected, &findings),
                            &mut fail,
                        );
                    }
                    self.check_alerts(step, &book, &pending, &mut fail);
                }
                None if instance.kind() == PluginKind::AlertRule => {
                    if let Some(expected) = &step.spec.findings {
                        compare(
                            "findings differ",
                            expected_findings(expected),
                            actual_findings(expected, &[]),
                            &mut fail,
                        );
                    }
                    self.check_alerts(step, &book, &pending, &mut fail);
                }
                Some(Output::Proposals(proposals)) => {
                    let Some(expected) = &step.spec.proposals else {
                        continue;
                    };
                    if judge.is_none() {
                        match Judge::new(self.config) {
                            Ok(new) => judge = Some(new),
                            Err(e) => {
                                fail("proposals", e);
                                continue;
                            }
                        }
                    }
                    let Some(judge) = judge.as_mut() else {
                        continue;
                    };
                    let actual: Vec<Value> = proposals
                        .into_iter()
                        .map(|p| judge.judge(p, &settings))
                        .collect();
                    compare(
                        "proposals differ",
                        expected_proposals(expected),
                        project_proposals(expected, &actual),
                        &mut fail,
                    );
                }
                None => {
                    if let Some(expected) = &step.spec.proposals {
                        compare(
                            "proposals differ",
                            expected_proposals(expected),
                            Vec::new(),
                            &mut fail,
                        );
                    }
                }
            }
        }
        failures
    }

    fn check_alerts(
        &self,
        step: &Step<'_>,
        book: &AlertBook,
        pending: &BTreeMap<AlertKey, Alert>,
        fail: &mut impl FnMut(&'static str, String),
    ) {
        let Some(expected) = &step.spec.alerts else {
            return;
        };
        let mut alerts: Vec<&Alert> = book.firing().chain(pending.values()).collect();
        alerts.sort_by(|a, b| (&a.key.rule, &a.key.key).cmp(&(&b.key.rule, &b.key.key)));
        compare(
            "alerts differ",
            expected_alerts(expected),
            actual_alerts(expected, &alerts),
            fail,
        );
    }
}

/// The tuning gate of the config, previewing verdicts (no server asked, nothing audited).
struct Judge {
    gate: TuningEngine,
    runtime: tokio::runtime::Runtime,
}

impl Judge {
    fn new(config: &Config) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime to judge proposals: {e}"))?;
        Ok(Judge {
            gate: TuningEngine::offline(config),
            runtime,
        })
    }

    /// `proposal` and the gate's verdict on it, as compared with expectations.
    fn judge(&mut self, proposal: Proposal, settings: &[CurrentSetting]) -> Value {
        let decision = self
            .runtime
            .block_on(self.gate.preview(proposal.clone(), settings));
        json!({
            "setting": proposal.action.setting.to_string(),
            "value": proposal.action.value,
            "verdict": decision.verdict.as_str(),
            "reason": proposal.reason,
            "verdict_reason": decision.verdict_reason,
        })
    }
}

/// Checks a step against the plugin's world and resolves its times, batch and inputs.
fn prepare<'s>(
    step: &'s StepSpec,
    dir: &Path,
    kind: PluginKind,
    last: Duration,
) -> Result<Step<'s>, String> {
    let at = spec::duration(step.at.get_ref()).map_err(|e| format!("at: {e}"))?;
    if at < last {
        return Err(format!(
            "at = {:?} is earlier than the step before ({}): steps go forward in time",
            step.at.get_ref(),
            humantime::format_duration(last)
        ));
    }
    let batch = step.batch(dir)?;
    match kind {
        PluginKind::AlertRule => {
            if step.proposals.is_some() || step.firing.is_some() || step.current_settings.is_some()
            {
                return Err("proposals, firing and current_settings are for tuning policies; this plugin is an alert rule".into());
            }
        }
        PluginKind::TuningPolicy => {
            if step.findings.is_some() || step.alerts.is_some() {
                return Err("findings and alerts are for alert rules; this plugin is a tuning policy (expect proposals)".into());
            }
        }
    }
    for finding in step.findings.iter().flatten() {
        if let Some(d) = &finding.hold_for {
            spec::duration(d).map_err(|e| format!("finding {:?} for: {e}", finding.rule))?;
        }
    }
    let firing = match &step.firing {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|f| {
                    let firing_for = match &f.firing_for {
                        Some(d) => spec::duration(d)
                            .map_err(|e| format!("firing {:?} for: {e}", f.rule))?,
                        None => Duration::ZERO,
                    };
                    // hold_for carries `for` until the step's time is known.
                    Ok(Alert {
                        key: AlertKey {
                            plugin: f.plugin.clone(),
                            rule: f.rule.clone(),
                            key: f.key.clone(),
                        },
                        source: "test".into(),
                        state: AlertState::Firing,
                        severity: f.severity.unwrap_or(Severity::Warning),
                        summary: f.summary.clone(),
                        value: f.value,
                        labels: Vec::new(),
                        hold_for: firing_for,
                        active_since: SystemTime::UNIX_EPOCH,
                        firing_since: None,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?,
        ),
    };
    let settings = step
        .current_settings
        .as_ref()
        .map(|list| list.iter().cloned().map(CurrentSetting::from).collect());
    Ok(Step {
        spec: step,
        at,
        batch,
        firing,
        settings,
    })
}

/// Keeps the pending alerts (the book lists only firing ones) from the events of a step,
/// with the values of the findings that keep them pending.
fn track_pending(
    pending: &mut BTreeMap<AlertKey, Alert>,
    events: &[crate::alert::AlertEvent],
    findings: &[Finding],
) {
    for event in events {
        match event.transition {
            Transition::Pending => {
                pending.insert(event.alert.key.clone(), event.alert.clone());
            }
            Transition::Firing | Transition::Cancelled | Transition::Resolved => {
                pending.remove(&event.alert.key);
            }
        }
    }
    for finding in findings {
        for alert in pending.values_mut() {
            if alert.key.rule == finding.rule && alert.key.key == finding.key {
                alert.severity = finding.severity;
                alert.value = finding.value;
            }
        }
    }
}

/// Compares expected and actual lists; on a difference, reports a diff of their pretty JSON.
fn compare(
    what: &'static str,
    expected: Vec<Value>,
    actual: Vec<Value>,
    fail: &mut impl FnMut(&'static str, String),
) {
    let (expected, actual) = (Value::Array(expected), Value::Array(actual));
    if expected != actual {
        let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
        fail(
            what,
            super::diff::unified(&pretty(&expected), &pretty(&actual)),
        );
    }
}

/// `actual` as the expectation would have written it when it is within `tolerance`.
fn number(expected: f64, tolerance: Option<f64>, actual: Option<f64>) -> Value {
    match actual {
        Some(a) if (a - expected).abs() <= tolerance.unwrap_or(TOLERANCE) => json!(expected),
        other => plain(other),
    }
}

/// An actual value shown as it is.
fn plain(actual: Option<f64>) -> Value {
    match actual {
        Some(a) if a.is_finite() => json!(a),
        Some(a) => json!(a.to_string()),
        None => Value::Null,
    }
}

fn severity(s: Severity) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

fn canonical_duration(text: &str) -> String {
    spec::duration(text).map_or_else(
        |_| text.to_owned(),
        |d| humantime::format_duration(d).to_string(),
    )
}

fn expected_findings(expected: &[FindingExpect]) -> Vec<Value> {
    let mut list: Vec<&FindingExpect> = expected.iter().collect();
    list.sort_by(|a, b| (&a.rule, &a.key).cmp(&(&b.rule, &b.key)));
    list.into_iter()
        .map(|e| {
            let mut m = Map::new();
            m.insert("rule".into(), json!(e.rule));
            m.insert("key".into(), json!(e.key));
            if let Some(s) = e.severity {
                m.insert("severity".into(), severity(s));
            }
            if let Some(s) = &e.summary {
                m.insert("summary".into(), json!(s));
            }
            if let Some(v) = e.value {
                m.insert("value".into(), json!(v));
            }
            if let Some(l) = &e.labels {
                m.insert("labels".into(), json!(l));
            }
            if let Some(d) = &e.hold_for {
                m.insert("for".into(), json!(canonical_duration(d)));
            }
            Value::Object(m)
        })
        .collect()
}

/// The findings, each shown with the fields its expectation checks (all when none expects it).
fn actual_findings(expected: &[FindingExpect], findings: &[Finding]) -> Vec<Value> {
    let mut list: Vec<&Finding> = findings.iter().collect();
    list.sort_by(|a, b| (&a.rule, &a.key).cmp(&(&b.rule, &b.key)));
    list.into_iter()
        .map(|f| {
            let e = expected.iter().find(|e| e.rule == f.rule && e.key == f.key);
            let all = e.is_none();
            let mut m = Map::new();
            m.insert("rule".into(), json!(f.rule));
            m.insert("key".into(), json!(f.key));
            if all || e.is_some_and(|e| e.severity.is_some()) {
                m.insert("severity".into(), severity(f.severity));
            }
            if all || e.is_some_and(|e| e.summary.is_some()) {
                m.insert("summary".into(), json!(f.summary));
            }
            match e.and_then(|e| e.value.map(|v| (v, e.tolerance))) {
                Some((v, tolerance)) => {
                    m.insert("value".into(), number(v, tolerance, f.value));
                }
                None if all => {
                    m.insert("value".into(), plain(f.value));
                }
                None => {}
            }
            if all || e.is_some_and(|e| e.labels.is_some()) {
                let labels: BTreeMap<&str, &str> = f
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                m.insert("labels".into(), json!(labels));
            }
            if all || e.is_some_and(|e| e.hold_for.is_some()) {
                m.insert(
                    "for".into(),
                    json!(humantime::format_duration(f.hold_for).to_string()),
                );
            }
            Value::Object(m)
        })
        .collect()
}

fn state(s: ExpectedState) -> &'static str {
    match s {
        ExpectedState::Pending => "pending",
        ExpectedState::Firing => "firing",
    }
}

fn expected_alerts(expected: &[AlertExpect]) -> Vec<Value> {
    let mut list: Vec<&AlertExpect> = expected.iter().collect();
    list.sort_by(|a, b| (&a.rule, &a.key).cmp(&(&b.rule, &b.key)));
    list.into_iter()
        .map(|e| {
            let mut m = Map::new();
            m.insert("rule".into(), json!(e.rule));
            m.insert("key".into(), json!(e.key));
            m.insert("state".into(), json!(state(e.state)));
            if let Some(s) = e.severity {
                m.insert("severity".into(), severity(s));
            }
            if let Some(v) = e.value {
                m.insert("value".into(), json!(v));
            }
            Value::Object(m)
        })
        .collect()
}

fn actual_alerts(expected: &[AlertExpect], alerts: &[&Alert]) -> Vec<Value> {
    alerts
        .iter()
        .map(|a| {
            let e = expected
                .iter()
                .find(|e| e.rule == a.key.rule && e.key == a.key.key);
            let all = e.is_none();
            let mut m = Map::new();
            m.insert("rule".into(), json!(a.key.rule));
            m.insert("key".into(), json!(a.key.key));
            let state = match a.state {
                AlertState::Pending => "pending",
                AlertState::Firing => "firing",
            };
            m.insert("state".into(), json!(state));
            if all || e.is_some_and(|e| e.severity.is_some()) {
                m.insert("severity".into(), severity(a.severity));
            }
            match e.and_then(|e| e.value.map(|v| (v, e.tolerance))) {
                Some((v, tolerance)) => {
                    m.insert("value".into(), number(v, tolerance, a.value));
                }
                None if all => {
                    m.insert("value".into(), plain(a.value));
                }
                None => {}
            }
            Value::Object(m)
        })
        .collect()
}

fn expected_proposals(expected: &[ProposalExpect]) -> Vec<Value> {
    expected
        .iter()
        .map(|e| {
            let mut m = Map::new();
            let fields = [
                ("setting", &e.setting),
                ("value", &e.value),
                ("verdict", &e.verdict),
                ("reason", &e.reason),
                ("verdict_reason_contains", &e.verdict_reason_contains),
            ];
            for (name, value) in fields {
                if let Some(v) = value {
                    m.insert(name.into(), json!(v));
                }
            }
            Value::Object(m)
        })
        .collect()
}

/// The proposals (in order), each shown with the fields the expectation at its place checks.
fn project_proposals(expected: &[ProposalExpect], actual: &[Value]) -> Vec<Value> {
    actual
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let Some(e) = expected.get(i) else {
                return a.clone();
            };
            let mut m = Map::new();
            let checked = [
                ("setting", e.setting.is_some()),
                ("value", e.value.is_some()),
                ("verdict", e.verdict.is_some()),
                ("reason", e.reason.is_some()),
            ];
            for (name, wanted) in checked {
                if wanted {
                    m.insert(name.into(), a[name].clone());
                }
            }
            if let Some(text) = &e.verdict_reason_contains {
                let reason = a["verdict_reason"].as_str().unwrap_or_default();
                if reason.contains(text.as_str()) {
                    m.insert("verdict_reason_contains".into(), json!(text));
                } else {
                    m.insert("verdict_reason".into(), json!(reason));
                }
            }
            Value::Object(m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(value: f64) -> Finding {
        Finding {
            rule: "r".into(),
            key: "k".into(),
            severity: Severity::Critical,
            summary: "s".into(),
            value: Some(value),
            labels: vec![("a".into(), "b".into())],
            hold_for: Duration::from_secs(60),
        }
    }

    fn expect(value: f64, tolerance: Option<f64>) -> FindingExpect {
        FindingExpect {
            rule: "r".into(),
            key: "k".into(),
            severity: None,
            summary: None,
            value: Some(value),
            tolerance,
            labels: None,
            hold_for: Some("60s".into()),
        }
    }

    #[test]
    fn findings_are_shown_with_the_fields_expected_and_values_within_tolerance_match() {
        let expected = [expect(0.95, Some(0.01))];
        let actual = actual_findings(&expected, &[finding(0.951)]);
        assert_eq!(expected_findings(&expected), actual);
        assert_eq!(
            actual[0],
            json!({"rule": "r", "key": "k", "value": 0.95, "for": "1m"})
        );
        let far = actual_findings(&[expect(0.95, None)], &[finding(0.951)]);
        assert_eq!(far[0]["value"], json!(0.951));
        // A finding nobody expected is shown whole.
        let unexpected = actual_findings(&[], &[finding(1.0)]);
        assert_eq!(unexpected[0]["severity"], "critical");
        assert_eq!(unexpected[0]["labels"], json!({"a": "b"}));
    }

    #[test]
    fn a_difference_is_reported_as_a_diff() {
        let mut failures = Vec::new();
        let mut fail = |what: &'static str, detail: String| failures.push((what, detail));
        compare(
            "findings differ",
            vec![json!({"a": 1})],
            vec![json!({"a": 2})],
            &mut fail,
        );
        compare(
            "findings differ",
            vec![json!({"a": 1})],
            vec![json!({"a": 1})],
            &mut fail,
        );
        assert_eq!(failures.len(), 1);
        assert!(
            failures[0].1.contains("-    \"a\": 1\n+    \"a\": 2\n"),
            "{}",
            failures[0].1
        );
    }
}
