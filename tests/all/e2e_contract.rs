//! End to end: the plugin contract versions the agent accepts, plugins built against the
//! previous versions, tuning policies beside alert rules, and a guest's own error message
//! and output reaching the user.

use std::time::{Duration, Instant};

use vigil_testkit::agent::{
    AgentProcess, Workspace, findings_printed, free_local_addr, memory_rule, output_text,
    plugin_test, run_to_end,
};
use vigil_testkit::http::get_until;
use vigil_testkit::otlp::{OtlpReceiver, Received};
use vigil_testkit::plugins::{
    CONTRACT_V0_1, CONTRACT_V0_2, CONTRACT_V0_3, ECHO_POLICY, MISBEHAVE, THRESHOLD,
};

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
        "vigil:plugin@0.4.0 (alert-rule, tuning-policy)\nvigil:plugin@0.3.0 (alert-rule, tuning-policy)\nvigil:plugin@0.2.0 (alert-rule)\nvigil:plugin@0.1.0 (alert-rule)\n"
    );
}

/// The legacy threshold rule at `plugin` (built against an older contract) fires once on
/// the fixture, with the finding's rule, value and labels intact.
fn assert_legacy_plugin_fires(plugin: &str) {
    let ws = Workspace::new().unwrap();
    let config = ws
        .write_config(
            "[plugins.settings.legacy]\nmetric = \"system.memory.utilization\"\nlimit = 0.9\n",
        )
        .unwrap();
    let plugin = ws.add_plugin("legacy", plugin).unwrap();
    let output = plugin_test(VIGIL, &plugin, FIXTURE, &config).unwrap();
    let findings = findings_printed(&output);
    assert_eq!(findings.len(), 1, "{}", output_text(&output));
    assert_eq!(findings[0]["rule"], "legacy-above");
    assert_eq!(findings[0]["value"], 0.95);
    assert_eq!(findings[0]["labels"]["system.memory.state"], "used");
}

#[test]
fn a_plugin_built_against_contract_0_2_still_fires() {
    assert_legacy_plugin_fires(CONTRACT_V0_2);
}

/// Settings of the echo policy proposing a Redis change (watched for an automatic
/// revert) and a collector interval.
const ECHO_SETTINGS: &str = r#"
[[plugins.settings.POLICY.proposals]]
action = "redis-config-set"
instance = "cache"
parameter = "maxmemory"
value = "256mb"
reason = "evictions rising"
revert_if = { metric = "redis.keys.evicted", attributes = { db = "0" }, worse = "rises", limit = 10.0, window_ms = 60000 }

[[plugins.settings.POLICY.proposals]]
action = "collector-interval"
collector = "system"
interval_ms = 30000
reason = "host CPU saturated"
"#;

#[test]
fn plugin_test_prints_a_policys_proposals_one_per_line() {
    assert_policy_proposals_printed(ECHO_POLICY);
}

/// A tuning policy built against 0.3.0 (the echo policy's code on wit/v0.3.0) still loads,
/// and its proposals reach the gate like 0.4.0 ones.
#[test]
fn a_policy_built_against_contract_0_3_still_proposes() {
    assert_policy_proposals_printed(CONTRACT_V0_3);
}

/// The echo policy at `plugin`, with [`ECHO_SETTINGS`], proposes the Redis change (with its
/// automatic revert) and the collector interval, printed one JSON object per line.
fn assert_policy_proposals_printed(plugin: &str) {
    let ws = Workspace::new().unwrap();
    let config = ws
        .write_config(&ECHO_SETTINGS.replace("POLICY", "tune"))
        .unwrap();
    let plugin = ws.add_plugin("tune", plugin).unwrap();
    let output = plugin_test(VIGIL, &plugin, FIXTURE, &config).unwrap();
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let redis = &lines[0];
    assert_eq!(redis["policy"], "tune");
    assert_eq!(redis["action"]["target"], "redis");
    assert_eq!(redis["action"]["instance"], "cache");
    assert_eq!(redis["action"]["parameter"], "maxmemory");
    assert_eq!(redis["action"]["value"], "256mb");
    assert_eq!(redis["reason"], "evictions rising");
    assert_eq!(redis["revert_if"]["metric"], "redis.keys.evicted");
    assert_eq!(redis["revert_if"]["limit"], 10.0);
    assert_eq!(redis["revert_if"]["window"], "1m");
    let interval = &lines[1];
    assert_eq!(interval["action"]["target"], "collector");
    assert_eq!(interval["action"]["parameter"], "interval-ms");
    assert_eq!(interval["action"]["value"], "30000");
    assert!(interval["revert_if"].is_null());
}

fn plugin_counter(received: &Received, metric: &str, plugin: &str, cause: Option<&str>) -> f64 {
    received
        .latest_points(metric)
        .iter()
        .find(|p| {
            p.attributes.get("vigil.plugin").map(String::as_str) == Some(plugin)
                && cause
                    .is_none_or(|c| p.attributes.get("error.type").map(String::as_str) == Some(c))
        })
        .map_or(0.0, |p| p.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_run_beside_alert_rules_and_bad_ones_are_counted_and_quarantined() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("threshold", THRESHOLD).unwrap();
    ws.add_plugin("tune", ECHO_POLICY).unwrap();
    ws.add_plugin("flood", ECHO_POLICY).unwrap();
    ws.add_plugin("crash", ECHO_POLICY).unwrap();
    let addr = free_local_addr().unwrap();
    // `flood` answers its first proposal 1000 times (100 000 would exhaust its 32 MiB first), `crash` traps.
    let settings = format!(
        "{}\n{}\n[plugins.settings.flood]\ncount = 1000\n{}\n[plugins.settings.crash]\nmode = \"trap\"\n\n[http]\nlisten = \"{addr}\"\n",
        memory_rule("memory-in-use", 0.0, "warning"),
        ECHO_SETTINGS.replace("POLICY", "tune"),
        ECHO_SETTINGS.replace("POLICY", "flood"),
    );
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, "grpc", "300ms", &settings))
        .unwrap();
    let mut agent = AgentProcess::start(VIGIL, &config).unwrap();

    let (done, received) = receiver
        .wait_for(Duration::from_secs(60), |r| {
            plugin_counter(r, "vigil.plugin.evaluations", "tune", None) >= 3.0
                && plugin_counter(r, "vigil.plugin.errors", "flood", Some("invalid-output")) >= 3.0
                && plugin_counter(r, "vigil.plugin.errors", "crash", Some("trap")) >= 3.0
        })
        .await;
    assert!(done, "policies not evaluated and counted:\n{}", agent.log());
    assert!(agent.is_running());
    // The alert rule kept firing beside them.
    assert!(
        received.records().iter().any(|r| {
            r.attributes.get("vigil.alert.rule").map(String::as_str) == Some("memory-in-use")
        }),
        "{}",
        agent.log()
    );

    // /status tells the kinds apart; the bad policies go to quarantine (each for a while,
    // then on probation until their next failure), the good ones never.
    let mut seen_quarantined = std::collections::BTreeSet::new();
    let answer = get_until(addr, "/status", None, Duration::from_secs(20), |a| {
        let Ok(status) = serde_json::from_str::<serde_json::Value>(&a.body) else {
            return false;
        };
        for p in status["plugins"].as_array().into_iter().flatten() {
            if p["quarantined"] == true {
                seen_quarantined.insert(p["name"].as_str().unwrap_or_default().to_owned());
            }
        }
        seen_quarantined.contains("flood") && seen_quarantined.contains("crash")
    })
    .await
    .unwrap();
    assert_eq!(
        seen_quarantined.into_iter().collect::<Vec<_>>(),
        ["crash", "flood"],
        "{}",
        answer.body
    );
    let status: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let plugin = |name: &str| {
        status["plugins"]
            .as_array()
            .and_then(|plugins| plugins.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no plugin {name} in {status:#}"))
    };
    for (name, kind) in [
        ("threshold", "alert-rule"),
        ("tune", "tuning-policy"),
        ("flood", "tuning-policy"),
        ("crash", "tuning-policy"),
    ] {
        let p = plugin(name);
        assert_eq!(p["kind"], kind, "{name}: {p:#}");
        assert_eq!(p["contract"], "0.4.0", "{name}: {p:#}");
    }
    assert_eq!(plugin("tune")["consecutive_failures"], 0, "{status:#}");
    // Each bad policy's run of failures is logged once (the rest are counted), and its
    // quarantine says why.
    let log = agent.log();
    assert_eq!(
        log.matches("plugin flood: returned invalid output").count(),
        1,
        "{log}"
    );
    assert!(log.contains("1000 proposals; the limit is 100"), "{log}");
    assert_eq!(log.matches("plugin crash: trapped").count(), 1, "{log}");
    assert!(log.contains("trapping as asked"), "{log}");
    assert!(
        log.contains("plugin crash quarantined for 5s after 3 failures in a row (the last: trap)"),
        "{log}"
    );
}

#[test]
fn a_plugin_built_against_contract_0_1_still_fires() {
    assert_legacy_plugin_fires(CONTRACT_V0_1);
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
