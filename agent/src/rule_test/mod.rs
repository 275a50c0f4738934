//! `vigil plugin test FILE.toml`: unit tests for plugins, like `promtool test rules`.
//!
//! A test file names a plugin and lists cases. Each case runs its steps in order on a
//! fresh plugin instance (fresh state) and a fresh alert book; each step hands the plugin
//! one batch at the step's time (`at`, from the case's start), so `for` durations and the
//! plugin's state are exercised, and then checks what the step expects:
//!
//! ```toml
//! plugin = "../../target/plugins/threshold.wasm"  # relative to this file
//! # name = "threshold"              # the plugin's name in the agent (default: the file stem)
//! # start = "2026-01-01T00:00:00Z"  # the time of at = "0s" (this is the default)
//!
//! # What the plugin sees as host.config(): these keys replace the same keys of
//! # [plugins.settings.NAME] in the --config file (when one is given).
//! [[settings.rules]]
//! name = "high-memory"
//! metric = "system.memory.utilization"
//! op = ">"
//! value = 0.9
//! for = "1m"
//!
//! [[cases]]
//! name = "high memory fires after a minute, then resolves"
//!
//! [[cases.steps]]
//! at = "0s"
//! source = "system"    # an inline batch: source, host and points as in a batch fixture
//! points = [{ metric = "system.memory.utilization", value = 0.95 }]
//! findings = [{ rule = "high-memory", key = "", severity = "warning", value = 0.95, for = "1m" }]
//! alerts = [{ rule = "high-memory", state = "pending" }]
//!
//! [[cases.steps]]
//! at = "60s"
//! batch_file = "batches/still-high.json"  # or a batch fixture (JSON), relative to this file
//! alerts = [{ rule = "high-memory", state = "firing" }]
//!
//! [[cases.steps]]
//! at = "90s"
//! source = "system"
//! points = [{ metric = "system.memory.utilization", value = 0.5 }]
//! findings = []
//! alerts = []          # resolved: no longer listed
//! ```
//!
//! `examples/tests/` holds commented examples (an alert rule and a tuning policy).
//!
//! Expectations, each checked only when the step gives it:
//! - `findings = [...]`: exactly these findings (any order). `rule` and `key` (default `""`)
//!   identify one; `severity`, `summary`, `value` (within `tolerance`, default 1e-9),
//!   `labels` (all of them) and `for` are checked when given.
//! - `alerts = [...]`: exactly these alerts are pending or firing after the step
//!   (`rule`, `key`, `state` = `pending` | `firing`, optional `severity`, `value`,
//!   `tolerance`); a resolved or cancelled alert is absent.
//! - `proposals = [...]` (tuning policies): exactly these proposals, in order, each with
//!   optional `setting` (or `action`: `"redis cache maxmemory"`), `value`, `reason`, `verdict` (the gate's
//!   verdict under the `--config` file's `[tuning]`: `would-apply`, `dry-run`, `refused`,
//!   `unchanged`) and `verdict_reason_contains`.
//! - `error = "text"`: the call must fail with an error containing the text.
//!
//! Tuning policies are shown `firing = [{ plugin, rule, key, severity, value, for }]`
//! (`for`: how long it has been firing) and `current_settings = [{ target, instance,
//! parameter, value }]`; both stay in force for the later steps of the case until a step
//! sets them again.
//!
//! As in the agent, a batch with nothing the plugin is interested in is not handed to it
//! (its alerts stay as they are), and a failed call changes no alert. The plugin is
//! compiled once per content into the compile cache (the config's `[plugins] cache_dir`,
//! or `~/.cache/vigil/plugins` without `--config`), so re-runs start at once.

mod diff;
mod run;
mod spec;
mod watch;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use run::{CaseReport, FileReport, Runner, StepFailure};
pub use spec::BrokenFile;
pub use watch::{WatchError, watch_and_rerun, watched_paths};

/// What a run of test files came to, as an exit code: 0 all passed, 1 a case failed,
/// 2 a file could not be run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed = 0,
    Failed = 1,
    Broken = 2,
}

/// Runs every file in `files` and prints `PASS case` / `FAIL case` (with a diff per
/// failed step) to `out`, and what keeps a file from running to `err`.
pub fn run_files(
    runner: &Runner<'_>,
    files: &[PathBuf],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<Verdict> {
    let mut verdict = Verdict::Passed;
    let (mut passed, mut failed) = (0, 0);
    for file in files {
        match runner.run_file(file) {
            Ok(report) => {
                print_report(&report, out)?;
                passed += report.cases.iter().filter(|c| c.passed()).count();
                failed += report.cases.iter().filter(|c| !c.passed()).count();
                if !report.passed() && verdict == Verdict::Passed {
                    verdict = Verdict::Failed;
                }
            }
            Err(broken) => {
                writeln!(err, "error: {broken}")?;
                verdict = Verdict::Broken;
            }
        }
    }
    writeln!(out, "{passed} passed, {failed} failed")?;
    out.flush()?;
    Ok(verdict)
}

/// Prints one file's cases.
pub fn print_report(report: &FileReport, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{}", report.file.display())?;
    for case in &report.cases {
        if case.passed() {
            writeln!(out, "PASS {}", case.name)?;
            continue;
        }
        writeln!(out, "FAIL {}", case.name)?;
        for failure in &case.failures {
            writeln!(
                out,
                "  step {} (at {}): {}",
                failure.step, failure.at, failure.what
            )?;
            for line in failure.detail.lines() {
                writeln!(out, "    {line}")?;
            }
        }
    }
    Ok(())
}

/// Where compiled plugins are cached when no config says: `$XDG_CACHE_HOME/vigil/plugins`,
/// else `~/.cache/vigil/plugins` (none when neither is known).
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| Path::new(&h).join(".cache"))
        })?;
    Some(base.join("vigil").join("plugins"))
}

/// Whether `arg` names a test file (rather than a plugin): it ends in `.toml`.
pub fn is_test_file(arg: &Path) -> bool {
    arg.extension().is_some_and(|e| e == "toml")
}
