//! End to end: `vigil check` and `vigil plugin test` on good and bad inputs, and
//! `vigil run` with its embedded default config.

use std::time::Duration;

use vigil_testkit::agent::{
    AgentProcess, Workspace, findings_printed, output_text, plugin_test, run_to_end,
};
use vigil_testkit::otlp::OtlpReceiver;
use vigil_testkit::plugins::{ALL, ECHO_POLICY, THRESHOLD};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

const RULE: &str = vigil_testkit::agent::THRESHOLD_HIGH_MEMORY;

#[test]
fn check_accepts_a_good_config_and_plugin() {
    let ws = Workspace::new().unwrap();
    ws.add_plugin("threshold", THRESHOLD).unwrap();
    let config = ws
        .write_config(&format!("[plugins]\ndir = \"plugins\"\n{RULE}"))
        .unwrap();
    let output = run_to_end(VIGIL, &["check", "--config", config.to_str().unwrap()]).unwrap();
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("plugin threshold") && text.contains("system.memory.utilization"),
        "{text}"
    );
}

/// `[tuning]` as `vigil check` sees it: each plugin's kind, and warnings (not errors)
/// for an audit file that cannot be written and policy sections naming no policy.
#[test]
fn check_shows_plugin_kinds_and_warns_about_tuning_that_cannot_work() {
    let ws = Workspace::new().unwrap();
    ws.add_plugin("threshold", THRESHOLD).unwrap();
    ws.add_plugin("echo", ECHO_POLICY).unwrap();
    // A file where the audit file's directory should be: the agent cannot create it.
    std::fs::write(ws.dir.path().join("blocker"), "").unwrap();
    let tuning = |audit_file: &str| {
        format!(
            r#"[plugins]
dir = "plugins"
{RULE}
[tuning]
audit_file = "{audit_file}"

[tuning.policies.echo]
mode = "enforce"

[tuning.policies.ghost]
mode = "enforce"

[tuning.policies.threshold]
mode = "dry-run"

[[tuning.allow]]
target = "collector"
instance = "system"
parameter = "interval-ms"
min = "1s"
max = "1m"
"#
        )
    };
    let check = |audit_file: &str| {
        let config = ws.write_config(&tuning(audit_file)).unwrap();
        let output = run_to_end(VIGIL, &["check", "--config", config.to_str().unwrap()]).unwrap();
        let text = output_text(&output);
        assert!(output.status.success(), "warnings only: {text}");
        text
    };
    let text = check("blocker/audit/actions.jsonl");
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{text}"))
            .to_owned()
    };
    assert!(
        line("plugin threshold").contains(": alert-rule threshold"),
        "{text}"
    );
    assert!(
        line("plugin echo").contains(": tuning-policy echo"),
        "{text}"
    );
    let audit = line("audit file");
    assert!(
        audit.starts_with("warning: ")
            && audit.contains("blocker/audit/actions.jsonl")
            && audit.contains("blocker is not a directory")
            && audit.contains("nothing will be applied until"),
        "{text}"
    );
    let ghost = line("[tuning.policies.ghost]");
    assert!(
        ghost.starts_with("warning: ") && ghost.contains("no ghost.wasm"),
        "{text}"
    );
    let rule = line("[tuning.policies.threshold]");
    assert!(
        rule.starts_with("warning: ") && rule.contains("is an alert rule"),
        "{text}"
    );
    assert!(!text.contains("[tuning.policies.echo]"), "{text}");

    // A writable place (its directory is created by the agent): no audit warning.
    let text = check("audit/actions.jsonl");
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok: tuning: 1 [[tuning.allow]] entry")
                && l.contains("audit/actions.jsonl")),
        "{text}"
    );
    assert!(!text.contains("cannot be written"), "{text}");
    assert!(
        !ws.dir.path().join("audit").exists(),
        "check creates nothing"
    );
}

#[test]
fn check_names_the_line_of_a_typo() {
    let ws = Workspace::new().unwrap();
    let config = ws
        .write_config("[collect.system]\nenabled = true\nintervall = \"5s\"\n")
        .unwrap();
    let output = run_to_end(VIGIL, &["check", "--config", config.to_str().unwrap()]).unwrap();
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("agent.toml"), "{text}");
    assert!(text.contains("line 3"), "{text}");
    assert!(text.contains("unknown field `intervall`"), "{text}");
}

#[test]
fn check_rejects_a_bad_plugin_by_name() {
    let ws = Workspace::new().unwrap();
    let good = std::fs::read(THRESHOLD).unwrap();
    ws.write_plugin("broken", &good[..1000]).unwrap();
    let config = ws.write_config("[plugins]\ndir = \"plugins\"\n").unwrap();
    let output = run_to_end(VIGIL, &["check", "--config", config.to_str().unwrap()]).unwrap();
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("broken.wasm") && text.contains("not a valid WebAssembly component"),
        "{text}"
    );
}

#[test]
fn check_reports_invalid_plugin_settings() {
    let ws = Workspace::new().unwrap();
    ws.add_plugin("threshold", THRESHOLD).unwrap();
    let config = ws
        .write_config("[plugins]\ndir = \"plugins\"\n[[plugins.settings.threshold.rules]]\nname = \"r\"\nmetric = \"m\"\nop = \"~\"\nvalue = 1\n")
        .unwrap();
    let output = run_to_end(VIGIL, &["check", "--config", config.to_str().unwrap()]).unwrap();
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("invalid threshold settings") && text.contains("threshold.wasm"),
        "{text}"
    );
}

#[test]
fn plugin_test_prints_findings_as_json() {
    let ws = Workspace::new().unwrap();
    let config = ws.write_config(RULE).unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/fixtures/memory-high.json"
    );
    // The plugin's name (file stem) picks its settings: copy it to threshold.wasm.
    let plugin = ws.add_plugin("threshold", THRESHOLD).unwrap();
    let output = plugin_test(VIGIL, &plugin, fixture, &config).unwrap();
    let findings = findings_printed(&output);
    assert_eq!(findings.len(), 1, "{}", output_text(&output));
    assert_eq!(findings[0]["rule"], "high-memory");
    assert_eq!(findings[0]["value"], 0.95);
    assert_eq!(findings[0]["labels"]["system.memory.state"], "used");
}

#[test]
fn every_built_plugin_is_used_by_a_test() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/all");
    let sources: String = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    for (name, _) in ALL {
        assert!(
            sources.contains(name),
            "plugin constant {name} is used by no test"
        );
    }
}

/// The README's first set-up command: `vigil run` with no config runs the embedded
/// default (system metrics over OTLP/gRPC); the standard OTLP variable points it at a receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_a_config_uses_the_embedded_default_and_exports_system_metrics() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let agent = AgentProcess::spawn(
        VIGIL,
        &["run"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str())],
        &ws.dir.path().join("default.log"),
    )
    .unwrap();
    // The default exports every 10 s.
    let (exported, received) = receiver
        .wait_for(Duration::from_secs(40), |r| {
            ["system.cpu.utilization", "system.memory.usage"]
                .iter()
                .all(|name| r.metric_names().contains(*name))
        })
        .await;
    assert!(
        exported,
        "metrics {:?}\n{}",
        received.metric_names(),
        agent.log()
    );
    let resource = received.resource_attributes();
    assert_eq!(
        resource.get("service.name").map(String::as_str),
        Some("vigil")
    );
    assert!(resource.contains_key("host.name"), "{resource:?}");
}
