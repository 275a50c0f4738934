//! The test file as written (TOML), read with the line of every error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::fixture::{BatchFixture, PointFixture, SettingFixture};
use crate::model::Severity;

/// A whole test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The plugin component, relative to the test file.
    pub plugin: Spanned<String>,
    /// The plugin's name in the agent (default: the file stem).
    #[serde(default)]
    pub name: Option<String>,
    /// Settings the plugin sees (`host.config()`), over `[plugins.settings.NAME]` of the config.
    #[serde(default)]
    pub settings: Option<toml::Table>,
    /// When `at = "0s"` is (RFC 3339); default 2026-01-01T00:00:00Z.
    #[serde(default)]
    pub start: Option<Spanned<String>>,
    #[serde(default)]
    pub cases: Vec<Spanned<CaseSpec>>,
}

/// One case: steps run in order on a fresh plugin instance and a fresh alert book.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseSpec {
    pub name: String,
    #[serde(default)]
    pub steps: Vec<Spanned<StepSpec>>,
}

/// One batch handed to the plugin, and what must hold after it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Time since the case's start (`"30s"`, `"2m"`); never earlier than the step before.
    pub at: Spanned<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub points: Option<Vec<PointFixture>>,
    /// A batch fixture (JSON), relative to the test file.
    #[serde(default)]
    pub batch_file: Option<Spanned<String>>,
    /// Tuning policies: the alerts firing (kept for the next steps until set again).
    #[serde(default)]
    pub firing: Option<Vec<FiringSpec>>,
    /// Tuning policies: the settings' current values (kept for the next steps until set again).
    #[serde(default)]
    pub current_settings: Option<Vec<SettingFixture>>,
    /// The evaluation must fail with an error containing this text.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub findings: Option<Vec<FindingExpect>>,
    #[serde(default)]
    pub alerts: Option<Vec<AlertExpect>>,
    #[serde(default)]
    pub proposals: Option<Vec<ProposalExpect>>,
}

/// An alert a tuning policy is shown as firing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiringSpec {
    pub plugin: String,
    pub rule: String,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub severity: Option<Severity>,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub value: Option<f64>,
    /// How long it has been firing at the step's time (default `"0s"`).
    #[serde(default, rename = "for")]
    pub firing_for: Option<String>,
}

/// An expected finding; `rule` and `key` identify it, the other fields are checked when given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingExpect {
    pub rule: String,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub severity: Option<Severity>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub value: Option<f64>,
    /// Largest difference from `value` that still matches (default 1e-9).
    #[serde(default)]
    pub tolerance: Option<f64>,
    /// Every label, exactly.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "for")]
    pub hold_for: Option<String>,
}

/// Where an expected alert is; a resolved alert is simply not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpectedState {
    Pending,
    Firing,
}

/// An expected alert of the book after a step; `rule` and `key` identify it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertExpect {
    pub rule: String,
    #[serde(default)]
    pub key: String,
    pub state: ExpectedState,
    #[serde(default)]
    pub severity: Option<Severity>,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub tolerance: Option<f64>,
}

/// An expected proposal (in the order the policy answered); fields are checked when given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalExpect {
    /// `TARGET INSTANCE PARAMETER`, e.g. `"redis cache maxmemory"` (or `action = ...`).
    #[serde(default, alias = "action")]
    pub setting: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    /// The gate's verdict: `would-apply`, `dry-run`, `refused` or `unchanged`.
    #[serde(default)]
    pub verdict: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Text the gate's reason must contain.
    #[serde(default)]
    pub verdict_reason_contains: Option<String>,
}

/// A test file that cannot be run: `file:line: what`.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct BrokenFile {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl BrokenFile {
    /// An error at byte `offset` of `text` (the file's contents).
    pub fn at(file: &Path, text: &str, offset: Option<usize>, message: impl Into<String>) -> Self {
        BrokenFile {
            file: file.to_owned(),
            line: offset.map(|o| line_of(text, o)),
            message: message.into(),
        }
    }
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Parses the test file `text` read from `file`.
pub fn parse(file: &Path, text: &str) -> Result<TestFile, BrokenFile> {
    toml::from_str::<TestFile>(text).map_err(|e| {
        let message = e.message().trim_end().to_owned();
        BrokenFile::at(file, text, e.span().map(|s| s.start), message)
    })
}

/// Parses a duration such as `"30s"` or `"1m 30s"`.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration (write e.g. \"30s\" or \"2m\"): {e}"))
}

impl StepSpec {
    /// The batch of this step: inline `points` or `batch_file` (relative to `dir`).
    pub fn batch(&self, dir: &Path) -> Result<BatchFixture, String> {
        match (&self.points, &self.batch_file) {
            (Some(_), Some(_)) => Err("give either points or batch_file, not both".into()),
            (None, None) => Err("no batch: give points = [...] or batch_file = \"...\"".into()),
            (Some(points), None) => {
                let fixture = BatchFixture {
                    source: self.source.clone().unwrap_or_else(|| "fixture".into()),
                    host: self.host.clone().unwrap_or_else(|| "fixture-host".into()),
                    points: points
                        .iter()
                        .map(|p| PointFixture {
                            metric: p.metric.clone(),
                            unit: p.unit.clone(),
                            kind: p.kind,
                            attributes: p.attributes.clone(),
                            value: p.value,
                            histogram: p.histogram.clone(),
                        })
                        .collect(),
                };
                fixture.check()?;
                Ok(fixture)
            }
            (None, Some(file)) => {
                if self.source.is_some() || self.host.is_some() {
                    return Err(
                        "source and host go in the batch file when batch_file is used".into(),
                    );
                }
                let path = dir.join(file.get_ref());
                let json = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read batch_file {}: {e}", path.display()))?;
                BatchFixture::parse(&json, &path.display().to_string())
            }
        }
    }

    /// The batch files this step reads, relative to `dir`.
    pub fn batch_path(&self, dir: &Path) -> Option<PathBuf> {
        self.batch_file.as_ref().map(|f| dir.join(f.get_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"plugin = "p.wasm"

[settings]
metric = "m"

[[cases]]
name = "one"

[[cases.steps]]
at = "30s"
points = [{ metric = "m", value = 1.0 }]
findings = [{ rule = "r", value = 1.0, tolerance = 0.1 }]
alerts = [{ rule = "r", state = "firing" }]
"#;

    #[test]
    fn a_file_parses_with_the_lines_of_its_steps() {
        let parsed = parse(Path::new("t.toml"), FILE).unwrap();
        assert_eq!(parsed.plugin.get_ref(), "p.wasm");
        let step = &parsed.cases[0].get_ref().steps[0];
        assert_eq!(
            line_of(FILE, step.span().start),
            9,
            "the [[cases.steps]] line"
        );
        assert_eq!(
            duration(step.get_ref().at.get_ref()),
            Ok(Duration::from_secs(30))
        );
        let batch = step.get_ref().batch(Path::new(".")).unwrap();
        assert_eq!(batch.points.len(), 1);
        assert_eq!(
            step.get_ref().alerts.as_ref().unwrap()[0].state,
            ExpectedState::Firing
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let broken = FILE.replace("state = \"firing\"", "state = \"resolved\"");
        let error = parse(Path::new("t.toml"), &broken).unwrap_err().to_string();
        assert!(error.starts_with("t.toml:13: "), "{error}");
        assert!(error.contains("resolved"), "{error}");
        let error = parse(Path::new("t.toml"), "plugin = 1\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("t.toml:1: "), "{error}");
        assert!(duration("30 parsecs").unwrap_err().contains("30 parsecs"));
    }

    #[test]
    fn a_step_has_exactly_one_batch() {
        let both = FILE.replace("points =", "batch_file = \"b.json\"\npoints =");
        let parsed = parse(Path::new("t.toml"), &both).unwrap();
        let step = parsed.cases[0].get_ref().steps[0].get_ref();
        assert!(step.batch(Path::new(".")).unwrap_err().contains("not both"));
        let none = FILE.replace("points = [{ metric = \"m\", value = 1.0 }]\n", "");
        let parsed = parse(Path::new("t.toml"), &none).unwrap();
        let step = parsed.cases[0].get_ref().steps[0].get_ref();
        assert!(step.batch(Path::new(".")).unwrap_err().contains("no batch"));
        let missing = FILE.replace(
            "points = [{ metric = \"m\", value = 1.0 }]",
            "batch_file = \"nope.json\"",
        );
        let parsed = parse(Path::new("t.toml"), &missing).unwrap();
        let step = parsed.cases[0].get_ref().steps[0].get_ref();
        assert!(
            step.batch(Path::new("/nonexistent"))
                .unwrap_err()
                .contains("nope.json")
        );
    }
}
