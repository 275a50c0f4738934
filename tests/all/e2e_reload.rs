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

/// An agent running the threshold plugin as `rule` with the memory rule, once that rule fired.
async fn start_with_firing_rule() -> (OtlpReceiver, Workspace, AgentProcess) {
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
    (receiver, ws, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_files_are_swapped_refused_and_removed_while_running() {
    let (receiver, ws, agent) = start_with_firing_rule().await;

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

    // The same plugin, now trapping on every batch.
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

// ---- Bounded side effects of reloads (issue 10): writes only, coalesced, one line per failure ----

/// Lines of the agent log that contain `needle`.
fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// `vigil.config.reloads{result}` as last exported.
fn config_reloads(r: &Received, result: &str) -> f64 {
    r.latest_points("vigil.config.reloads")
        .iter()
        .filter(|p| p.attributes.get("result").map(String::as_str) == Some(result))
        .map(|p| p.value)
        .sum()
}

/// Waits until `more` further export requests have arrived: a window of agent activity
/// measured in the agent's own rounds, not in wall time.
async fn exports_go_on(receiver: &OtlpReceiver, more: usize) -> Received {
    let now = receiver.received().metrics.len();
    let (ok, r) = receiver
        .wait_for(WAIT, |r| r.metrics.len() >= now + more)
        .await;
    assert!(ok, "the agent stopped exporting");
    r
}

/// Counts opens of one file, seen through inotify (the test's own watch on the file).
struct OpenCounter {
    _watcher: notify::RecommendedWatcher,
    opens: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl OpenCounter {
    fn new(path: &std::path::Path) -> Self {
        use notify::Watcher;
        use notify::event::{AccessKind, EventKind};
        let opens = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = opens.clone();
        let mut watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
            if let Ok(e) = e
                && matches!(e.kind, EventKind::Access(AccessKind::Open(_)))
            {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .unwrap();
        watcher
            .watch(path, notify::RecursiveMode::NonRecursive)
            .unwrap();
        OpenCounter {
            _watcher: watcher,
            opens,
        }
    }

    fn take(&self) -> usize {
        self.opens.swap(0, std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_config_reload_the_config_file_is_left_alone() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let agent = start(&ws, &receiver, "").await;
    exports_go_on(&receiver, 2).await;
    let config = ws.dir.path().join("agent.toml");
    let opens = OpenCounter::new(&config);

    // An edit: a new system interval.
    ws.write_config(&ws.config_for(&receiver.endpoint, "grpc", "250ms", ""))
        .unwrap();
    let (ok, _) = receiver
        .wait_for(WAIT, |r| config_reloads(r, "ok") >= 1.0)
        .await;
    assert!(ok, "the edit is applied:\n{}", agent.log());
    // Quiet from here on: 5 s during which nothing writes the config file.
    opens.take();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let reopened = opens.take();
    assert!(
        reopened <= 1,
        "the agent opened its config file {reopened} times in 5 s after a reload:\n{}",
        agent.log()
    );
    let r = exports_go_on(&receiver, 2).await;
    assert_eq!(config_reloads(&r, "ok"), 1.0, "one edit, one reload");
    assert_eq!(
        lines_with(&agent.log(), "config reloaded"),
        1,
        "{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_refused_with_one_line() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let agent = start(&ws, &receiver, "").await;
    exports_go_on(&receiver, 2).await;

    ws.write_config("[collect.system]\nintervall = \"1s\"\n")
        .unwrap();
    let (ok, _) = receiver
        .wait_for(WAIT, |_| agent.log().contains("config reload refused"))
        .await;
    assert!(ok, "{}", agent.log());
    // At 300 ms per export, 10 exports are 3 s of the agent running with the bad file.
    let r = exports_go_on(&receiver, 10).await;
    let log = agent.log();
    assert_eq!(
        lines_with(&log, "config reload refused"),
        1,
        "one refusal line for one bad file:\n{log}"
    );
    assert!(log.contains("unknown field `intervall`"), "{log}");
    assert_eq!(config_reloads(&r, "error"), 1.0);
}

/// Writes `bytes` over the plugin file in two halves with a pause between, like a slow copy.
fn write_in_two_halves(path: &std::path::Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let half = bytes.len() / 2;
    file.write_all(&bytes[..half]).unwrap();
    file.flush().unwrap();
    file.sync_data().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    file.write_all(&bytes[half..]).unwrap();
    file.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_written_in_two_halves_loads_once_without_an_error() {
    let (receiver, ws, agent) = start_with_firing_rule().await;

    let path = ws.plugins().join("rule.wasm");
    let misbehave = std::fs::read(MISBEHAVE).unwrap();
    tokio::task::spawn_blocking(move || write_in_two_halves(&path, &misbehave))
        .await
        .unwrap();
    let (ok, _) = receiver
        .wait_for(WAIT, |r| {
            !records_of(r, "misbehave-ok", "firing").is_empty()
        })
        .await;
    assert!(ok, "the new version evaluates:\n{}", agent.log());
    let r = exports_go_on(&receiver, 5).await;
    let log = agent.log();
    assert_eq!(lines_with(&log, "ERROR"), 0, "no error line:\n{log}");
    assert_eq!(
        lines_with(&log, "plugin loaded"),
        2,
        "loaded at start, then once more:\n{log}"
    );
    assert_eq!(counter(&r, "vigil.plugin.reloads", "rule"), 1.0);
    assert_eq!(counter(&r, "vigil.plugin.load_failures", "rule"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_wrong_world_file_gives_one_error_and_the_old_version_runs_on() {
    let (receiver, ws, agent) = start_with_firing_rule().await;

    let good = std::fs::read(THRESHOLD).unwrap();
    for (failures, bad, message) in [
        (
            1.0,
            good[..good.len() / 3].to_vec(),
            "not a valid WebAssembly component",
        ),
        (
            2.0,
            std::fs::read(WRONG_WORLD).unwrap(),
            "does not implement the vigil:plugin/alert-rule world",
        ),
    ] {
        ws.write_plugin("rule", &bad).unwrap();
        let (ok, r) = receiver
            .wait_for(WAIT, |r| {
                counter(r, "vigil.plugin.load_failures", "rule") >= failures
            })
            .await;
        assert!(ok, "{}", agent.log());
        let evaluations = counter(&r, "vigil.plugin.evaluations", "rule");
        let (ok, r) = receiver
            .wait_for(WAIT, |r| {
                counter(r, "vigil.plugin.evaluations", "rule") >= evaluations + 10.0
            })
            .await;
        assert!(ok, "the old version keeps evaluating:\n{}", agent.log());
        assert!(records_of(&r, "memory-in-use", "resolved").is_empty());
        let log = agent.log();
        assert_eq!(
            lines_with(&log, message),
            1,
            "one error line for one bad file:\n{log}"
        );
        assert_eq!(lines_with(&log, "ERROR"), failures as usize, "{log}");
        assert_eq!(counter(&r, "vigil.plugin.load_failures", "rule"), failures);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compile_cache_stays_under_its_limit() {
    use sha2::Digest;
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("rule", THRESHOLD).unwrap();
    // A 1 MiB limit.
    let text = ws
        .config_for(&receiver.endpoint, "grpc", "300ms", MEMORY_RULE)
        .replace(
            "cache_dir = \"cache\"",
            "cache_dir = \"cache\"\ncache_max_mib = 1",
        );
    let config = ws.write_config(&text).unwrap();
    let agent = AgentProcess::start(VIGIL, &config).unwrap();
    let (ok, _) = receiver
        .wait_for(WAIT, |r| {
            !records_of(r, "memory-in-use", "firing").is_empty()
        })
        .await;
    assert!(ok, "{}", agent.log());
    let cache = ws.dir.path().join("cache");
    let cache_bytes = || -> u64 {
        std::fs::read_dir(&cache)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    let cached = |hash: &str| {
        std::fs::read_dir(&cache).is_ok_and(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with(hash))
        })
    };
    let versions = 12;
    let mut hashes = Vec::new();
    for i in 1..=versions {
        let bytes = new_version(THRESHOLD, &format!("v{i}"));
        ws.write_plugin("rule", &bytes).unwrap();
        let (ok, _) = receiver
            .wait_for(WAIT, |r| {
                counter(r, "vigil.plugin.reloads", "rule") >= i as f64
            })
            .await;
        assert!(ok, "version {i} loads:\n{}", agent.log());
        let hash: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // Its entry is written in the background, then older ones are evicted.
        let started = std::time::Instant::now();
        let has_entry = || cached(&hash);
        while !(has_entry() && cache_bytes() <= 1 << 20) && started.elapsed() < WAIT {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(has_entry(), "version {i} is cached");
        assert!(
            cache_bytes() <= 1 << 20,
            "after {i} versions the cache holds {} bytes, over its 1 MiB limit",
            cache_bytes()
        );
        hashes.push(hash);
    }
    assert!(
        !cached(&hashes[0]),
        "the least recently used entry was evicted: {} bytes now",
        cache_bytes()
    );
    assert!(
        agent.log().lines().all(|l| !l.contains("ERROR")),
        "{}",
        agent.log()
    );
}

/// `vigil.collector.rounds` of `collector` as last exported.
fn rounds_of(r: &Received, collector: &str) -> f64 {
    r.latest_points("vigil.collector.rounds")
        .iter()
        .filter(|p| p.attributes.get("vigil.collector").map(String::as_str) == Some(collector))
        .map(|p| p.value)
        .sum()
}

/// Asserts that `collector` runs at most one more round while the agent exports 10 more times.
async fn assert_stalled(receiver: &OtlpReceiver, collector: &str, agent: &AgentProcess) {
    // The round started by the restart may land after this first look.
    let before = rounds_of(&exports_go_on(receiver, 2).await, collector);
    let after = rounds_of(&exports_go_on(receiver, 10).await, collector);
    assert!(
        after <= before + 1.0,
        "{collector} went on at its old interval ({before} -> {after} rounds):\n{}",
        agent.log()
    );
}

/// Asserts that `collector` goes on collecting (5 more rounds).
async fn assert_collecting(receiver: &OtlpReceiver, collector: &str, agent: &AgentProcess) {
    let before = rounds_of(&receiver.received(), collector);
    let (ok, _) = receiver
        .wait_for(WAIT, |r| rounds_of(r, collector) >= before + 5.0)
        .await;
    assert!(ok, "{collector} stopped collecting:\n{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_post_reload_and_vigil_reload_apply_the_config() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let addr = vigil_testkit::agent::free_local_addr().unwrap();
    // Not watching: only the requests below can reload the config.
    let config_with = |interval: &str| {
        ws.config_for(
            &receiver.endpoint,
            "grpc",
            "300ms",
            &format!("[http]\nlisten = \"{addr}\"\n"),
        )
        .replace(
            "[collect.system]\ninterval = \"300ms\"",
            &format!("[collect.system]\ninterval = \"{interval}\""),
        )
        .replace(
            "cache_dir = \"cache\"",
            "cache_dir = \"cache\"\nwatch = false",
        )
    };
    let config = ws.write_config(&config_with("300ms")).unwrap();
    let agent = AgentProcess::start(VIGIL, &config).unwrap();
    assert_collecting(&receiver, "system", &agent).await;

    let requests: [(&str, &str); 3] = [
        ("SIGHUP", "1h"),
        ("POST /reload", "300ms"),
        ("vigil reload", "1h"),
    ];
    for (done, (how, interval)) in requests.into_iter().enumerate() {
        ws.write_config(&config_with(interval)).unwrap();
        match how {
            "SIGHUP" => {
                let status = std::process::Command::new("kill")
                    .args(["-HUP", &agent.id().to_string()])
                    .status()
                    .unwrap();
                assert!(status.success());
            }
            "POST /reload" => {
                let answer = vigil_testkit::http::request(addr, "POST", "/reload", None)
                    .await
                    .unwrap();
                assert_eq!(answer.status, 202, "{}", answer.body);
            }
            _ => {
                let output = vigil_testkit::agent::vigil(VIGIL)
                    .args(["reload", "--config"])
                    .arg(&config)
                    .output()
                    .unwrap();
                assert!(
                    output.status.success(),
                    "{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        let (ok, _) = receiver
            .wait_for(WAIT, |r| config_reloads(r, "ok") >= (done + 1) as f64)
            .await;
        assert!(ok, "{how} reloads the config:\n{}", agent.log());
        if interval == "1h" {
            assert_stalled(&receiver, "system", &agent).await;
        } else {
            assert_collecting(&receiver, "system", &agent).await;
        }
        assert_eq!(
            config_reloads(&receiver.received(), "ok"),
            (done + 1) as f64,
            "{how}: one reload per request"
        );
    }
    assert_eq!(
        lines_with(&agent.log(), "collector restarted"),
        3,
        "{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_restarts_only_the_collector_it_touches() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let redis = |b_interval: &str| {
        format!(
            "[[collect.redis]]\nname = \"a\"\nurl = \"redis://127.0.0.1:6379\"\ninterval = \"300ms\"\n\
             [[collect.redis]]\nname = \"b\"\nurl = \"redis://127.0.0.1:6379\"\ninterval = \"{b_interval}\"\n"
        )
    };
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, "grpc", "300ms", &redis("300ms")))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &config).unwrap();
    assert_collecting(&receiver, "redis:a", &agent).await;
    assert_collecting(&receiver, "redis:b", &agent).await;

    ws.write_config(&ws.config_for(&receiver.endpoint, "grpc", "300ms", &redis("1h")))
        .unwrap();
    let (ok, _) = receiver
        .wait_for(WAIT, |r| config_reloads(r, "ok") >= 1.0)
        .await;
    assert!(ok, "{}", agent.log());
    assert_stalled(&receiver, "redis:b", &agent).await;
    assert_collecting(&receiver, "redis:a", &agent).await;
    let log = agent.log();
    let restarts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("collector restarted"))
        .collect();
    assert_eq!(restarts.len(), 1, "{log}");
    assert!(restarts[0].contains("redis:b"), "{log}");
}
