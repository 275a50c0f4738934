//! End to end: plugins that loop, trap, exhaust memory, return garbage or fail, and
//! files that are truncated or of the wrong world, next to a good plugin. The agent
//! keeps exporting, the good plugin keeps firing, and every failure is counted.

use std::time::Duration;

use vigil_testkit::agent::{AgentProcess, Workspace};
use vigil_testkit::otlp::{OtlpReceiver, Received};
use vigil_testkit::plugins::{MISBEHAVE, THRESHOLD, WRONG_WORLD};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// (plugin name, misbehave mode, when, the error.type it must be counted under)
const BAD_EVALUATIONS: &[(&str, &str, &str)] = &[
    ("loop", "loop", "deadline"),
    ("trap", "trap", "trap"),
    ("oom", "oom", "memory"),
    ("garbage", "garbage", "invalid-output"),
    ("flood", "flood", "invalid-output"),
    ("fail", "fail", "plugin-error"),
];

fn counter(received: &Received, metric: &str, plugin: &str, cause: &str) -> f64 {
    received
        .latest_points(metric)
        .iter()
        .find(|p| {
            p.attributes.get("vigil.plugin").map(String::as_str) == Some(plugin)
                && p.attributes.get("error.type").map(String::as_str) == Some(cause)
        })
        .map_or(0.0, |p| p.value)
}

fn evaluations(received: &Received, plugin: &str) -> f64 {
    received
        .latest_points("vigil.plugin.evaluations")
        .iter()
        .find(|p| p.attributes.get("vigil.plugin").map(String::as_str) == Some(plugin))
        .map_or(0.0, |p| p.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plugins_are_isolated_and_counted() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("threshold", THRESHOLD).unwrap();
    let mut settings = String::from(
        r#"
[[plugins.settings.threshold.rules]]
name = "memory-in-use"
metric = "system.memory.utilization"
op = ">="
value = 0.0
match = { "system.memory.state" = "used" }
"#,
    );
    for (name, mode, _) in BAD_EVALUATIONS {
        ws.add_plugin(name, MISBEHAVE).unwrap();
        settings.push_str(&format!("[plugins.settings.{name}]\nmode = \"{mode}\"\n"));
    }
    // Files that must be refused at load time.
    ws.add_plugin("describe-loop", MISBEHAVE).unwrap();
    settings.push_str("[plugins.settings.describe-loop]\nmode = \"loop\"\nwhen = \"describe\"\n");
    ws.add_plugin("dry-run-trap", MISBEHAVE).unwrap();
    settings.push_str("[plugins.settings.dry-run-trap]\nmode = \"trap\"\nwhen = \"always\"\n");
    ws.add_plugin("wrong-world", WRONG_WORLD).unwrap();
    let good = std::fs::read(THRESHOLD).unwrap();
    ws.write_plugin("truncated", &good[..good.len() / 2])
        .unwrap();
    ws.write_plugin("not-wasm", b"this is not a component")
        .unwrap();

    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, "grpc", "500ms", &settings))
        .unwrap();
    let mut agent = AgentProcess::start(VIGIL, &config).unwrap();

    let (done, received) = receiver
        .wait_for(Duration::from_secs(60), |r| {
            evaluations(r, "threshold") >= 4.0
                && BAD_EVALUATIONS
                    .iter()
                    .all(|(name, _, cause)| counter(r, "vigil.plugin.errors", name, cause) >= 2.0)
        })
        .await;
    let counts: Vec<_> = BAD_EVALUATIONS
        .iter()
        .map(|(name, _, cause)| {
            (
                name,
                cause,
                counter(&received, "vigil.plugin.errors", name, cause),
            )
        })
        .collect();
    assert!(
        done,
        "bad plugins not counted as expected: {counts:?}\nagent log:\n{}",
        agent.log()
    );
    assert!(agent.is_running(), "the agent must survive its plugins");

    // Refused at load, each with its cause.
    for (name, cause) in [
        ("describe-loop", "describe"),
        ("dry-run-trap", "dry-run"),
        ("wrong-world", "wrong-world"),
        ("truncated", "compile"),
        ("not-wasm", "compile"),
    ] {
        assert_eq!(
            counter(&received, "vigil.plugin.load_failures", name, cause),
            1.0,
            "{name}"
        );
    }
    assert_eq!(received.latest_points("vigil.plugins.loaded")[0].value, 7.0);

    // The good plugin kept firing and the system metrics kept flowing.
    let firing = received.records().into_iter().filter(|r| {
        r.attributes.get("vigil.alert.rule").map(String::as_str) == Some("memory-in-use")
            && r.attributes["vigil.alert.state"] == "firing"
    });
    assert_eq!(firing.count(), 1);
    let still_firing = received.latest_points("vigil.alerts.firing");
    assert_eq!(still_firing.iter().map(|p| p.value).sum::<f64>(), 1.0);
    let exports_with_memory = received
        .metrics
        .iter()
        .filter(|r| format!("{r:?}").contains("system.memory.usage"))
        .count();
    assert!(
        exports_with_memory >= 3,
        "only {exports_with_memory} exports carried system metrics"
    );

    // Each failure was logged with the plugin and the cause.
    let log = agent.log();
    for (name, _, _) in BAD_EVALUATIONS {
        assert!(
            log.contains(&format!("plugin {name}:")),
            "no log line for {name}:\n{log}"
        );
    }
    assert!(log.contains("exceeded its CPU deadline"), "{log}");
    assert!(log.contains("exceeded its memory limit"), "{log}");
    assert!(
        log.contains("does not implement the vigil:plugin/alert-rule world"),
        "{log}"
    );
}
