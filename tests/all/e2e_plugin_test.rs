//! End to end: `vigil plugin test FILE.toml` runs test files (cases of timed steps) on a
//! plugin built from source: PASS/FAIL per case, a diff naming the step and the field
//! of a failed expectation, exit codes 0/1/2, policies' proposals with the gate's
//! verdicts, and `--watch` running again after an edit.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use vigil_testkit::agent::{Workspace, output_text, vigil};
use vigil_testkit::plugins::{AGENT_INTERVAL, ECHO_POLICY, LATENCY, THRESHOLD};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// A config whose compile cache is in the workspace.
const CONFIG: &str = "[plugins]\ndir = \"plugins\"\ncache_dir = \"cache\"\n";

/// `threshold` with one rule that must hold a minute before it fires.
const THRESHOLD_HEADER: &str = r#"
plugin = "plugins/threshold.wasm"

[[settings.rules]]
name = "high-memory"
metric = "system.memory.utilization"
op = ">"
value = 0.9
for = "1m"
severity = "critical"
match = { "system.memory.state" = "used" }
"#;

/// A step at `at` with memory in use at `used`, and what it expects (TOML lines).
fn memory_step(at: &str, used: f64, expect: &str) -> String {
    format!(
        r#"
[[cases.steps]]
at = "{at}"
source = "system"
points = [
  {{ metric = "system.memory.utilization", attributes = {{ "system.memory.state" = "used" }}, value = {used:?} }},
  {{ metric = "system.memory.utilization", attributes = {{ "system.memory.state" = "free" }}, value = {free:?} }},
]
{expect}
"#,
        free = 1.0 - used
    )
}

const KEY: &str = "system.memory.state=used";

/// A case: pending at 0s and 30s, firing at 60s (the `for` minute), resolved at 90s.
fn pending_firing_resolved(firing_state_at_60s: &str) -> String {
    let alert = |state: &str| {
        format!(r#"alerts = [{{ rule = "high-memory", key = "{KEY}", state = "{state}" }}]"#)
    };
    [
        "\n[[cases]]\nname = \"pending, then firing after the for minute, then resolved\"\n".to_owned(),
        memory_step(
            "0s",
            0.95,
            &format!(
                "findings = [{{ rule = \"high-memory\", key = \"{KEY}\", severity = \"critical\", value = 0.95, for = \"1m\" }}]\n{}",
                alert("pending")
            ),
        ),
        memory_step("30s", 0.96, &alert("pending")),
        memory_step(
            "60s",
            0.9700001,
            &format!(
                "findings = [{{ rule = \"high-memory\", key = \"{KEY}\", value = 0.97, tolerance = 0.001 }}]\n{}",
                alert(firing_state_at_60s)
            ),
        ),
        memory_step("90s", 0.5, "findings = []\nalerts = []"),
    ]
    .concat()
}

/// A workspace with `threshold.wasm`, `agent.toml` and the test file `name` holding `text`.
fn workspace_with(name: &str, text: &str) -> (Workspace, PathBuf, PathBuf) {
    let ws = Workspace::new().unwrap();
    ws.add_plugin("threshold", THRESHOLD).unwrap();
    let config = ws.write_config(CONFIG).unwrap();
    let file = ws.dir.path().join(name);
    std::fs::write(&file, text).unwrap();
    (ws, config, file)
}

/// Runs `vigil plugin test ARGS --config CONFIG` with debug logs.
fn plugin_test(args: &[&Path], config: &Path) -> Output {
    vigil(VIGIL)
        .args(["plugin", "test"])
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info,vigil=debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_passing_file_walks_an_alert_through_pending_firing_and_resolved() {
    let spike = [
        "\n[[cases]]\nname = \"a spike shorter than the for minute never fires\"\n".to_owned(),
        memory_step(
            "0s",
            0.99,
            &format!(r#"alerts = [{{ rule = "high-memory", key = "{KEY}", state = "pending" }}]"#),
        ),
        memory_step("59s", 0.2, "alerts = []"),
    ]
    .concat();
    let text = format!(
        "{THRESHOLD_HEADER}{}{spike}",
        pending_firing_resolved("firing")
    );
    let (ws, config, file) = workspace_with("memory.toml", &text);

    let output = plugin_test(&[&file], &config);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{}", output_text(&output));
    assert!(
        out.contains("PASS pending, then firing after the for minute, then resolved"),
        "{out}"
    );
    assert!(
        out.contains("PASS a spike shorter than the for minute never fires"),
        "{out}"
    );
    assert!(out.contains("2 passed, 0 failed"), "{out}");
    // Compiled once into the config's cache; the next run loads it from there.
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("cache=Miss"), "{err}");
    let again = plugin_test(&[&file], &config);
    assert_eq!(again.status.code(), Some(0), "{}", output_text(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("cache=Hit") && !err.contains("cache=Miss"),
        "{err}"
    );
    assert!(ws.dir.path().join("cache").is_dir());
}

#[test]
fn without_a_config_compiled_plugins_are_cached_in_the_users_cache() {
    let text = format!("{THRESHOLD_HEADER}{}", pending_firing_resolved("firing"));
    let (ws, _config, file) = workspace_with("memory.toml", &text);
    let xdg = ws.dir.path().join("xdg");
    let run = || {
        vigil(VIGIL)
            .args(["plugin", "test"])
            .arg(&file)
            .env("XDG_CACHE_HOME", &xdg)
            .env("RUST_LOG", "info,vigil=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let first = run();
    assert_eq!(first.status.code(), Some(0), "{}", output_text(&first));
    let entries: Vec<_> = std::fs::read_dir(xdg.join("vigil/plugins"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "{}", output_text(&first));
    let again = run();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("cache=Hit") && !err.contains("cache=Miss"),
        "{err}"
    );
}

#[test]
fn a_failed_expectation_exits_1_with_a_diff_naming_the_step_and_the_field() {
    // At 60s the alert fires, but this file expects it still pending; the second file
    // (given with --tests) expects the wrong severity.
    let text = format!("{THRESHOLD_HEADER}{}", pending_firing_resolved("pending"));
    let (ws, config, file) = workspace_with("wrong-state.toml", &text);
    let severity = [
        THRESHOLD_HEADER.to_owned(),
        "\n[[cases]]\nname = \"severity\"\n".to_owned(),
        memory_step(
            "0s",
            0.95,
            &format!(
                "findings = [{{ rule = \"high-memory\", key = \"{KEY}\", severity = \"warning\" }}]"
            ),
        ),
    ]
    .concat();
    let second = ws.dir.path().join("wrong-severity.toml");
    std::fs::write(&second, severity).unwrap();

    let output = vigil(VIGIL)
        .args(["plugin", "test", "--tests"])
        .args([&file, &second])
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
    assert!(
        out.contains("FAIL pending, then firing after the for minute, then resolved"),
        "{out}"
    );
    assert!(out.contains("step 3 (at 60s): alerts differ"), "{out}");
    assert!(out.contains("-    \"state\": \"pending\"\n"), "{out}");
    assert!(out.contains("+    \"state\": \"firing\"\n"), "{out}");
    // The steps that held are not reported.
    let first_file = out.split("wrong-severity.toml").next().unwrap();
    assert!(
        !first_file.contains("step 1 ") && !first_file.contains("step 4 "),
        "{out}"
    );
    assert!(out.contains("FAIL severity"), "{out}");
    assert!(out.contains("step 1 (at 0s): findings differ"), "{out}");
    assert!(out.contains("-    \"severity\": \"warning\"\n"), "{out}");
    assert!(out.contains("+    \"severity\": \"critical\"\n"), "{out}");
    assert!(out.contains("0 passed, 2 failed"), "{out}");
}

#[test]
fn a_broken_file_exits_2_with_its_line() {
    // A field no step has.
    let text = format!(
        "{THRESHOLD_HEADER}\n[[cases]]\nname = \"x\"\n[[cases.steps]]\nat = \"0s\"\npointz = []\n"
    );
    let line = text.lines().position(|l| l == "pointz = []").unwrap() + 1;
    let (ws, config, file) = workspace_with("broken.toml", &text);
    let output = plugin_test(&[&file], &config);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{}", output_text(&output));
    assert!(
        err.contains(&format!("{}:{line}:", file.display())),
        "line {line}: {err}"
    );
    assert!(err.contains("pointz"), "{err}");

    // A step earlier than the one before: the line of that step.
    let text = format!(
        "{THRESHOLD_HEADER}{}{}",
        "\n[[cases]]\nname = \"x\"\n",
        [memory_step("30s", 0.5, ""), memory_step("10s", 0.5, "")].concat()
    );
    let line = text.lines().position(|l| l == "at = \"10s\"").unwrap();
    let back = ws.dir.path().join("backwards.toml");
    std::fs::write(&back, &text).unwrap();
    let output = plugin_test(&[&back], &config);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{}", output_text(&output));
    // The line of the step's `[[cases.steps]]` header.
    assert!(
        err.contains(&format!("{}:{line}:", back.display())),
        "line {line}: {err}"
    );
    assert!(err.contains("earlier than the step before"), "{err}");

    // A plugin that is not there.
    let missing = ws.dir.path().join("missing.toml");
    std::fs::write(&missing, "\nplugin = \"plugins/nope.wasm\"\n").unwrap();
    let output = plugin_test(&[&missing], &config);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{}", output_text(&output));
    assert!(
        err.contains(&format!("{}:2:", missing.display())) && err.contains("nope.wasm"),
        "{err}"
    );
}

#[test]
fn a_policy_case_checks_proposals_and_the_gates_verdicts() {
    let ws = Workspace::new().unwrap();
    ws.add_plugin("echo", ECHO_POLICY).unwrap();
    let config = ws
        .write_config(&format!(
            "{CONFIG}[[collect.redis]]\nname = \"cache\"\nurl = \"redis://127.0.0.1:6379\"\n\
             [tuning]\naudit_file = \"actions.jsonl\"\n\
             [tuning.policies.echo]\nmode = \"enforce\"\n\
             [[tuning.allow]]\ntarget = \"redis\"\ninstance = \"cache\"\nparameter = \"maxmemory-samples\"\nmin = 1\nmax = 10\n"
        ))
        .unwrap();
    let echo = r#"
plugin = "plugins/echo.wasm"

[settings]
interests = ["test.*"]
proposals = [
  { action = "redis-config-set", instance = "cache", parameter = "maxmemory-samples", value = "7", reason = "sample more" },
  { action = "redis-config-set", instance = "cache", parameter = "maxmemory-samples", value = "70", reason = "too far" },
  { action = "redis-config-set", instance = "other", parameter = "maxmemory-samples", value = "7", reason = "not allowed" },
]

[[cases]]
name = "echoed proposals and their verdicts"

[[cases.steps]]
at = "0s"
points = [{ metric = "test.load", value = 1.0 }]
proposals = [
  { setting = "redis cache maxmemory-samples", value = "7", reason = "sample more", verdict = "would-apply" },
  { setting = "redis cache maxmemory-samples", value = "70", verdict = "refused" },
  { setting = "redis other maxmemory-samples", verdict = "refused", verdict_reason_contains = "allowlist" },
]

[[cases.steps]]
at = "10s"
points = [{ metric = "other.metric", value = 1.0 }]
proposals = []
"#;
    // `inputs` answers one proposal per firing alert and per current setting.
    let inputs = r#"
plugin = "plugins/echo.wasm"

[settings]
mode = "inputs"

[[cases]]
name = "what the policy is shown"

[[cases.steps]]
at = "0s"
points = [{ metric = "test.load", value = 1.0 }]
current_settings = [{ target = "redis", instance = "cache", parameter = "maxmemory-samples", value = "5" }]
proposals = [{ setting = "redis cache maxmemory-samples", value = "5", reason = "current redis", verdict = "unchanged" }]

[[cases.steps]]
at = "30s"
points = [{ metric = "test.load", value = 2.0 }]
firing = [{ plugin = "threshold", rule = "high-memory", key = "k", value = 0.95, for = "5m" }]
proposals = [
  { setting = "redis firing high-memory", value = "k", verdict = "refused" },
  { setting = "redis cache maxmemory-samples", value = "5", verdict = "dry-run" },
]
"#;
    let first = ws.dir.path().join("echo.toml");
    std::fs::write(&first, echo).unwrap();
    let second = ws.dir.path().join("inputs.toml");
    std::fs::write(&second, inputs).unwrap();

    let output = vigil(VIGIL)
        .args(["plugin", "test", "--tests"])
        .args([&first, &second])
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
    assert!(
        out.contains("PASS echoed proposals and their verdicts"),
        "{out}"
    );
    // The last expectation is wrong on purpose: the current setting stays in force at
    // 30s and the policy enforces, so the same value is `unchanged`, not `dry-run`.
    assert!(out.contains("FAIL what the policy is shown"), "{out}");
    assert!(out.contains("step 2 (at 30s): proposals differ"), "{out}");
    assert!(out.contains("-    \"verdict\": \"dry-run\"\n"), "{out}");
    assert!(out.contains("+    \"verdict\": \"unchanged\"\n"), "{out}");
    assert!(!out.contains("step 1 "), "{out}");
    // Previews audit nothing.
    assert!(!ws.dir.path().join("actions.jsonl").exists());
}

/// Lines the child prints (stdout and stderr), as they come.
fn lines_of(child: &mut Child) -> Receiver<String> {
    let (tx, rx) = channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send(line);
        }
    });
    rx
}

/// Collects one `--watch` report: lines until both its summary (`N passed, M failed`, on
/// stdout) and the `watching` line (stderr) came; the two streams are read by separate
/// threads, so either may arrive first.
fn until_report(rx: &Receiver<String>, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen: Vec<String> = Vec::new();
    let done = |seen: &[String]| {
        seen.iter().any(|l| l.ends_with(" failed")) && seen.iter().any(|l| l.contains("watching"))
    };
    while !done(&seen) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    assert!(
        done(&seen),
        "no whole report within {timeout:?}; saw:\n{}",
        seen.join("\n")
    );
    seen
}

/// Kills the watching child when the test ends, even when it fails.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn watch_runs_again_once_after_each_edit() {
    let text = format!("{THRESHOLD_HEADER}{}", pending_firing_resolved("firing"));
    let (_ws, config, file) = workspace_with("watched.toml", &text);
    let mut child = vigil(VIGIL)
        .args(["plugin", "test", "--watch"])
        .arg(&file)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut child);
    let _child = Killed(child);
    let first = until_report(&rx, Duration::from_secs(60));
    assert!(first.iter().any(|l| l == "1 passed, 0 failed"), "{first:?}");

    // An edit that breaks an expectation: one new report, failing.
    std::fs::write(
        &file,
        text.replace("state = \"firing\"", "state = \"pending\""),
    )
    .unwrap();
    let second = until_report(&rx, Duration::from_secs(30));
    assert!(
        second.iter().any(|l| l == "0 passed, 1 failed"),
        "{second:?}"
    );
    assert!(
        second
            .iter()
            .any(|l| l.contains("step 3 (at 60s): alerts differ")),
        "{second:?}"
    );
    let reports = second.iter().filter(|l| l.ends_with(" failed")).count();
    assert_eq!(reports, 1, "{second:?}");
    // Nothing more without a change (no busy loop).
    std::thread::sleep(Duration::from_millis(700));
    let idle: Vec<String> = rx.try_iter().collect();
    assert!(idle.is_empty(), "{idle:?}");

    // Fixed again: passes.
    std::fs::write(&file, &text).unwrap();
    let third = until_report(&rx, Duration::from_secs(30));
    assert!(third.iter().any(|l| l == "1 passed, 0 failed"), "{third:?}");
}

#[test]
fn the_example_test_files_pass() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let (ws, config, _) = workspace_with("unused.toml", "");
    let mut files = Vec::new();
    for (name, built, plugin) in [
        ("threshold", "threshold.wasm", THRESHOLD),
        ("agent-interval", "agent_interval.wasm", AGENT_INTERVAL),
        ("latency", "latency.wasm", LATENCY),
    ] {
        let text = std::fs::read_to_string(format!("{examples}/tests/{name}.toml")).unwrap();
        let relative = format!("\"../../target/plugins/{built}\"");
        assert!(text.contains(&relative), "{name}: {relative}");
        let text = text
            .replace(&relative, &format!("{plugin:?}"))
            .replace("\"../fixtures/", &format!("\"{examples}/fixtures/"));
        let file = ws.dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, text).unwrap();
        files.push(file);
    }
    let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let output = plugin_test(&files, &config);
    assert_eq!(output.status.code(), Some(0), "{}", output_text(&output));
    assert!(
        stdout(&output).contains("6 passed, 0 failed"),
        "{}",
        output_text(&output)
    );
}
