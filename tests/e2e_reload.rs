//! End to end, with the agent running: plugin files replaced, broken, removed; plugin
//! state kept across a reload; config changes applied to what changed only; a broken
//! config refused; a failing plugin quarantined and its alerts resolved.

use std::time::Duration;

use vigil_testkit::agent::{AgentProcess, Workspace};
use vigil_testkit::otlp::{OtlpReceiver, Received, Record};
use vigil_testkit::plugins::{MISBEHAVE, THRESHOLD, WRONG_WORLD};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
const WAIT: Duration = Duration::from_secs(20);

const MEMORY_RULE: &str = r#"
[[plugins.settings.rule.rules]]
name = "memory-in-use"
metric = "system.memory.utilization"
op = ">="
value = 0.0
match = { "system.memory.state" = "used" }
"#;

fn records_of(r: &Received, rule: &str, state: &str) -> Vec<Record> {
    r.records()
        .into_iter()
        .filter(|x| {
            x.attributes.get("vigil.alert.rule").map(String::as_str) == Some(rule)
                && x.attributes["vigil.alert.state"] == state
        })
        .collect()
}

fn counter(r: &Received, metric: &str, plugin: &str) -> f64 {
    r.latest_points(metric)
        .iter()
        .filter(|p| p.attributes.get("vigil.plugin").map(String::as_str) == Some(plugin))
        .map(|p| p.value)
        .sum()
}

/// The component at `path` with a custom section appended: a new file version that behaves the same.
fn new_version(path: &str, tag: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let name = b"vigil-test";
    let payload = tag.as_bytes();
    let size = 1 + name.len() + payload.len();
    assert!(size < 128 && name.len() < 128);
    bytes.extend_from_slice(&[0x00, size as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    bytes
}

async fn start(ws: &Workspace, receiver: &OtlpReceiver, extra: &str) -> AgentProcess {
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, "grpc", "300ms", extra))
        .unwrap();
    AgentProcess::start(VIGIL, &config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_files_are_swapped_refused_and_removed_while_running() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("rule", THRESHOLD).unwrap();
    let agent = start(&ws, &receiver, MEMORY_RULE).await;
    let (ok, _) = receiver
        .wait_for(WAIT, |r| {
            !records_of(r, "memory-in-use", "firing").is_empty()
        })
        .await;
    assert!(ok, "{}", agent.log());

    // A truncated file and a component of the wrong world over the good one: refused, old version keeps firing.
    let good = std::fs::read(THRESHOLD).unwrap();
    ws.write_plugin("rule", &good[..good.len() / 3]).unwrap();
    let (ok, _) = receiver
        .wait_for(WAIT, |r| {
            counter(r, "vigil.plugin.load_failures", "rule") >= 1.0
        })
        .await;
    assert!(ok, "{}", agent.log());
    ws.add_plugin("rule", WRONG_WORLD).unwrap();
    let (ok, r) = receiver
        .wait_for(WAIT, |r| {
            counter(r, "vigil.plugin.load_failures", "rule") >= 2.0
        })
        .await;
    assert!(ok, "{}", agent.log());
    let evaluations = counter(&r, "vigil.plugin.evaluations", "rule");
    let (ok, r) = receiver
        .wait_for(WAIT, |r| {
            counter(r, "vigil.plugin.evaluations", "rule") >= evaluations + 3.0
        })
        .await;
    assert!(ok, "the old version must keep evaluating:\n{}", agent.log());
    assert!(
        records_of(&r, "memory-in-use", "resolved").is_empty(),
        "the old version kept its alert firing"
    );
    let log = agent.log();
    assert!(
        log.contains("rule.wasm: not a valid WebAssembly component")
            && log.contains("the running version stays"),
        "{log}"
    );
    assert!(
        log.contains("does not implement the vigil:plugin/alert-rule world"),
        "{log}"
    );

    // A new version with other findings: swapped in, its findings fire, the old version's alert resolves.
    ws.add_plugin("rule", MISBEHAVE).unwrap();
    let (ok, _) = receiver
        .wait_for(WAIT, |r| {
            !records_of(r, "misbehave-ok", "firing").is_empty()
                && !records_of(r, "memory-in-use", "resolved").is_empty()
                && counter(r, "vigil.plugin.reloads", "rule") >= 1.0
        })
        .await;
    assert!(ok, "{}", agent.log());

    // Removed: unloaded, its alert resolved with the reason.
    std::fs::remove_file(ws.plugins().join("rule.wasm")).unwrap();
    let (ok, r) = receiver
        .wait_for(WAIT, |r| {
            !records_of(r, "misbehave-ok", "resolved").is_empty()
        })
        .await;
    assert!(ok, "{}", agent.log());
    let resolved = &records_of(&r, "misbehave-ok", "resolved")[0];
    assert_eq!(resolved.attributes["vigil.alert.reason"], "plugin removed");
    let (ok, _) = receiver
        .wait_for(WAIT, |r| {
            r.latest_points("vigil.plugins.loaded")
                .first()
                .map(|p| p.value)
                == Some(0.0)
        })
        .await;
    assert!(ok);

    // Compiled components were cached by content hash.
    let cached = std::fs::read_dir(ws.dir.path().join("cache"))
        .unwrap()
        .count();
    assert!(cached >= 2, "{cached} cache entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_state_survives_a_reload() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("counter", MISBEHAVE).unwrap();
    let agent = start(
        &ws,
        &receiver,
        "[plugins.settings.counter]\nmode = \"count\"\n",
    )
    .await;
    let count = |r: &Received| {
        records_of(r, "count", "firing")
            .iter()
            .filter_map(|x| {
                x.attributes["vigil.alert.key"]
                    .strip_prefix("n=")
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .max()
            .unwrap_or(0)
    };
    let (ok, r) = receiver.wait_for(WAIT, |r| count(r) >= 3).await;
    assert!(ok, "{}", agent.log());
    let before = count(&r);
    ws.write_plugin("counter", &new_version(MISBEHAVE, "v2"))
        .unwrap();
    let (ok, r) = receiver
        .wait_for(WAIT, |r| {
            counter(r, "vigil.plugin.reloads", "counter") >= 1.0
        })
        .await;
    assert!(ok, "{}", agent.log());
    let at_reload = count(&r);
    let (ok, r) = receiver.wait_for(WAIT, |r| count(r) >= at_reload + 2).await;
    assert!(ok, "{}", agent.log());
    // Counting went on from where the old version was: no alert with a small n after the reload.
    let keys: Vec<u64> = records_of(&r, "count", "firing")
        .iter()
        .filter_map(|x| {
            x.attributes["vigil.alert.key"]
                .strip_prefix("n=")
                .and_then(|n| n.parse().ok())
        })
        .collect();
    assert!(before >= 3);
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        keys.len(),
        "each count fired once: the state never restarted: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_apply_to_what_changed_and_bad_configs_are_refused() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("rule", THRESHOLD).unwrap();
    ws.add_plugin("other", MISBEHAVE).unwrap();
    let redis = "[[collect.redis]]\nname = \"cache\"\nurl = \"redis://127.0.0.1:6379\"\ninterval = \"300ms\"\n";
    let agent = start(&ws, &receiver, &format!("{redis}{MEMORY_RULE}")).await;
    let (ok, _) = receiver
        .wait_for(WAIT, |r| {
            !records_of(r, "memory-in-use", "firing").is_empty()
        })
        .await;
    assert!(ok, "{}", agent.log());

    // Change the Redis interval and the rule's threshold (now it can never hold).
    let changed_rule = MEMORY_RULE.replace("value = 0.0", "value = 2.0");
    let redis_changed = redis.replace("interval = \"300ms\"", "interval = \"400ms\"");
    ws.write_config(&ws.config_for(
        &receiver.endpoint,
        "grpc",
        "300ms",
        &format!("{redis_changed}{changed_rule}"),
    ))
    .unwrap();
    let (ok, _) = receiver
        .wait_for(WAIT, |r| {
            !records_of(r, "memory-in-use", "resolved").is_empty()
        })
        .await;
    assert!(
        ok,
        "the new threshold must reach the plugin:\n{}",
        agent.log()
    );
    let log = agent.log();
    assert!(
        log.contains("collector restarted") && log.contains("redis:cache"),
        "{log}"
    );
    assert_eq!(
        log.matches("collector restarted").count(),
        1,
        "only the Redis collector restarts:\n{log}"
    );
    assert!(log.contains("plugin settings changed"), "{log}");
    assert_eq!(
        log.matches("plugin settings changed").count(),
        1,
        "only the plugin whose settings changed reloads:\n{log}"
    );

    // A config with an error: refused, the running one keeps working.
    ws.write_config("[collect.system]\nintervall = \"1s\"\n")
        .unwrap();
    let (ok, r) = receiver
        .wait_for(WAIT, |_| agent.log().contains("config reload refused"))
        .await;
    assert!(ok, "{}", agent.log());
    let rounds = |r: &Received| {
        r.latest_points("vigil.collector.rounds")
            .iter()
            .find(|p| p.attributes["vigil.collector"] == "redis:cache")
            .map_or(0.0, |p| p.value)
    };
    let before = rounds(&r);
    let (ok, _) = receiver.wait_for(WAIT, |r| rounds(r) >= before + 3.0).await;
    assert!(
        ok,
        "collection goes on under the old config:\n{}",
        agent.log()
    );
    assert!(agent.log().contains("unknown field `intervall`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plugin_is_quarantined_and_its_alerts_resolved() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("flaky", MISBEHAVE).unwrap();
    let agent = start(&ws, &receiver, "[plugins.settings.flaky]\nmode = \"ok\"\n").await;
    let (ok, _) = receiver
        .wait_for(WAIT, |r| {
            !records_of(r, "misbehave-ok", "firing").is_empty()
        })
        .await;
    assert!(ok, "{}", agent.log());

    // The same plugin, now trapping on every batch (but passing the dry run).
    let config = ws.dir.path().join("agent.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("mode = \"ok\"", "mode = \"trap\"");
    std::fs::write(&config, text).unwrap();
    let (ok, r) = receiver
        .wait_for(WAIT, |r| {
            !records_of(r, "misbehave-ok", "resolved").is_empty()
                && counter(r, "vigil.plugin.quarantined", "flaky") == 1.0
        })
        .await;
    assert!(ok, "{}", agent.log());
    let resolved = &records_of(&r, "misbehave-ok", "resolved")[0];
    assert_eq!(
        resolved.attributes["vigil.alert.reason"],
        "plugin quarantined"
    );
    let errors = |r: &Received| counter(r, "vigil.plugin.errors", "flaky");
    assert_eq!(errors(&r), 3.0, "quarantined after 3 consecutive failures");
    // While quarantined (5 s) it is not called.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(errors(&receiver.received()), 3.0);
    assert!(agent.log().contains("quarantined for 5s"));
}
