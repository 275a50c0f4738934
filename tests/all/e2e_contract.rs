//! End to end: the plugin contract versions the agent accepts, a plugin built against the
//! previous version, and a guest's own error message and output reaching the user.

use std::time::{Duration, Instant};

use vigil_testkit::agent::{
    AgentProcess, Workspace, findings_printed, output_text, plugin_test, run_to_end,
};
use vigil_testkit::otlp::OtlpReceiver;
use vigil_testkit::plugins::{CONTRACT_V0_1, MISBEHAVE};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/fixtures/memory-high.json"
);
const PANIC: &str =
    "[plugins.settings.rule]\nmode = \"panic\"\nmessage = \"rule table has no column 'p99'\"\n";

#[test]
fn the_agent_lists_the_contract_versions_it_loads() {
    let output = run_to_end(VIGIL, &["plugin", "versions"]).unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "vigil:plugin@0.2.0\nvigil:plugin@0.1.0\n"
    );
}

#[test]
fn a_plugin_built_against_contract_0_1_still_fires() {
    let ws = Workspace::new().unwrap();
    let config = ws
        .write_config(
            "[plugins.settings.legacy]\nmetric = \"system.memory.utilization\"\nlimit = 0.9\n",
        )
        .unwrap();
    let plugin = ws.add_plugin("legacy", CONTRACT_V0_1).unwrap();
    let output = plugin_test(VIGIL, &plugin, FIXTURE, &config).unwrap();
    let findings = findings_printed(&output);
    assert_eq!(findings.len(), 1, "{}", output_text(&output));
    assert_eq!(findings[0]["rule"], "legacy-above");
    assert_eq!(findings[0]["value"], 0.95);
    assert_eq!(findings[0]["labels"]["system.memory.state"], "used");
}

#[test]
fn plugin_test_shows_a_guest_panic_and_its_output() {
    let ws = Workspace::new().unwrap();
    let config = ws.write_config(PANIC).unwrap();
    let plugin = ws.add_plugin("rule", MISBEHAVE).unwrap();
    let output = plugin_test(VIGIL, &plugin, FIXTURE, &config).unwrap();
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("plugin output:"), "{stderr}");
    assert!(stderr.contains("misbehave: about to panic"), "{stderr}");
    assert!(
        stderr.contains("rule table has no column 'p99'"),
        "{stderr}"
    );
    assert!(stderr.contains("trapped"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_panic_message_reaches_the_agent_log() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("rule", MISBEHAVE).unwrap();
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, "grpc", "300ms", PANIC))
        .unwrap();
    let mut agent = AgentProcess::start(VIGIL, &config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agent.log().contains("rule table has no column 'p99'") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = agent.log();
    // The warning about the trap, with the lines that belong to it (up to the next record).
    let warning = log
        .find("plugin rule: trapped")
        .map(|at| {
            let rest = &log[at..];
            let end = rest
                .find("\n\u{1b}[2m20")
                .or_else(|| rest.find("\n20"))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .unwrap_or_else(|| panic!("no warning about the trap:\n{log}"));
    assert!(
        warning.contains("rule table has no column 'p99'"),
        "the guest's message belongs to the warning:\n{log}"
    );
    assert!(log.contains("unreachable"), "the trap is named:\n{log}");
    assert!(agent.is_running());
}
