//! End to end: plugins that loop, trap, exhaust memory, return garbage or fail, and
//! files that are truncated or of the wrong world, next to a good plugin. The agent
//! keeps exporting, the good plugin keeps firing, and every failure is counted.

use std::time::{Duration, Instant};

use vigil_testkit::agent::{AgentProcess, Workspace, free_local_addr, memory_rule};
use vigil_testkit::http::request;
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
    ws.add_plugin("describe-trap", MISBEHAVE).unwrap();
    settings.push_str("[plugins.settings.describe-trap]\nmode = \"trap\"\nwhen = \"describe\"\n");
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
        ("describe-trap", "describe"),
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

/// The value of counter `metric` for the point whose `attribute` is `value`, in the
/// latest export that carries the metric.
fn counter_of(received: &Received, metric: &str, attribute: &str, value: &str) -> f64 {
    received
        .latest_points(metric)
        .iter()
        .find(|p| p.attributes.get(attribute).map(String::as_str) == Some(value))
        .map_or(0.0, |p| p.value)
}

/// What the test follows, read from one copy of the OTLP output.
#[derive(Debug, Clone, Copy)]
struct Progress {
    system_rounds: f64,
    redis_rounds: f64,
    threshold_evaluations: f64,
    slow_deadlines: f64,
}

impl Progress {
    fn of(received: &Received) -> Self {
        Progress {
            system_rounds: counter_of(
                received,
                "vigil.collector.rounds",
                "vigil.collector",
                "system",
            ),
            redis_rounds: counter_of(
                received,
                "vigil.collector.rounds",
                "vigil.collector",
                "redis:side",
            ),
            threshold_evaluations: evaluations(received, "threshold"),
            slow_deadlines: counter(received, "vigil.plugin.errors", "slow", "deadline"),
        }
    }
}

/// A plugin that burns its whole CPU deadline (2 s) on every batch delays only itself:
/// `/status` answers at once throughout, the redis collector keeps its 1 s interval,
/// and the threshold plugin evaluates every system batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_plugin_delays_only_itself() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("threshold", THRESHOLD).unwrap();
    ws.add_plugin("slow", MISBEHAVE).unwrap();
    let addr = free_local_addr().unwrap();
    let config = ws
        .write_config(&format!(
            r#"
[agent]
shutdown_timeout = "3s"

[collect.system]
interval = "1s"

[[collect.redis]]
name = "side"
url = "redis://127.0.0.1:6379"
interval = "1s"

[plugins]
dir = "plugins"
cache_dir = "cache"
deadline = "2s"
memory_limit_mib = 32
quarantine_after = 1000000

[plugins.settings.slow]
mode = "loop"

{}

[export.otlp]
protocol = "grpc"
endpoint = "{}"
interval = "500ms"
timeout = "2s"

[http]
listen = "{addr}"
"#,
            memory_rule("memory-in-use", 0.0, "warning"),
            receiver.endpoint
        ))
        .unwrap();
    let mut agent = AgentProcess::start(VIGIL, &config).unwrap();

    // The slow plugin has burnt its deadline at least once: it is busy on every batch now.
    let (busy, _) = receiver
        .wait_for(Duration::from_secs(60), |r| {
            let p = Progress::of(r);
            p.slow_deadlines >= 1.0 && p.redis_rounds >= 1.0 && p.threshold_evaluations >= 1.0
        })
        .await;
    assert!(busy, "the plugins never ran:\n{}", agent.log());

    // Watch for a while (several of the slow plugin's deadlines), asking /status all along.
    let before = Progress::of(&receiver.received());
    let watch_start = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut answers = 0;
    while watch_start.elapsed() < Duration::from_secs(8) {
        let asked = Instant::now();
        let answer = request(addr, "GET", "/status", None).await.unwrap();
        let took = asked.elapsed();
        assert_eq!(answer.status, 200, "{}", answer.body);
        slowest = slowest.max(took);
        answers += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let watched = watch_start.elapsed().as_secs_f64();
    // The counters of the last export of the window (sent every 500 ms).
    let (_, received) = receiver
        .wait_for(Duration::from_secs(5), |r| {
            Progress::of(r).system_rounds > before.system_rounds
        })
        .await;
    let after = Progress::of(&received);
    let log = agent.log();

    // Every check is made, so a failure shows all that went wrong.
    let mut problems = Vec::new();
    // (a) /status shares no lock with plugin calls: no answer waited for the 2 s deadline.
    if slowest >= Duration::from_millis(500) {
        problems.push(format!(
            "/status took {slowest:?} (slowest of {answers}) while a plugin ran for its 2 s deadline"
        ));
    }
    // (b) Both collectors keep their 1 s interval (at least half the rounds, to allow
    // for a loaded machine; a collector waiting behind the slow plugin makes one
    // round per 2 to 4 s).
    let redis_rounds = after.redis_rounds - before.redis_rounds;
    let system_rounds = after.system_rounds - before.system_rounds;
    for (collector, rounds) in [("redis", redis_rounds), ("system", system_rounds)] {
        if rounds < watched / 2.0 {
            problems.push(format!(
                "{collector} made {rounds} rounds in {watched:.1} s at a 1 s interval"
            ));
        }
    }
    // (c) The threshold plugin evaluated every system batch (it wants nothing from
    // redis), give or take the batches in flight at either end.
    let evaluated = after.threshold_evaluations - before.threshold_evaluations;
    if evaluated < system_rounds - 2.0 {
        problems.push(format!(
            "threshold evaluated {evaluated} of {system_rounds} system batches"
        ));
    }
    // The slow plugin was busy all along.
    if after.slow_deadlines - before.slow_deadlines < 2.0 {
        problems.push(format!(
            "the slow plugin did not keep burning its deadline: {before:?} -> {after:?}"
        ));
    }
    eprintln!(
        "watched {watched:.1} s: /status slowest {slowest:?} of {answers}; rounds redis {redis_rounds}, system {system_rounds}; threshold evaluations {evaluated}"
    );
    assert!(problems.is_empty(), "{problems:#?}\nagent log:\n{log}");
    assert_eq!(
        counter_of(
            &received,
            "vigil.plugin.quarantines",
            "vigil.plugin",
            "slow"
        ),
        0.0
    );
    assert!(agent.is_running());
}

/// What `/status` says about plugin `name`: (quarantined, failures in a row).
async fn plugin_status(addr: std::net::SocketAddr, name: &str) -> Option<(bool, u64)> {
    let answer = request(addr, "GET", "/status", None).await.ok()?;
    let status: serde_json::Value = serde_json::from_str(&answer.body).ok()?;
    let plugin = status["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?
        .clone();
    Some((
        plugin["quarantined"].as_bool()?,
        plugin["consecutive_failures"].as_u64()?,
    ))
}

/// Polls `/status` until plugin `name` is in the state `want` says; returns when it was seen.
async fn until_plugin(
    addr: std::net::SocketAddr,
    name: &str,
    agent: &AgentProcess,
    want: impl Fn(bool, u64) -> bool,
) -> std::time::Instant {
    let started = std::time::Instant::now();
    let mut last = None;
    loop {
        let now = std::time::Instant::now();
        last = plugin_status(addr, name).await.or(last);
        if let Some((quarantined, failures)) = last
            && want(quarantined, failures)
        {
            return now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "plugin {name} never reached the state; last seen (quarantined, failures) {last:?}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The README's quarantine schedule: after `plugins.quarantine_after` (default 3) failures
/// in a row a plugin is suspended for 5 s; a failure on its first try after that sends it
/// back for twice as long (10 s); one success ends it, and its alert fires again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_lasts_5s_doubles_on_the_next_failure_and_ends_with_a_success() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("flaky", MISBEHAVE).unwrap();
    let http = free_local_addr().unwrap();
    let settings = format!(
        "[plugins.settings.flaky]\nmode = \"flaky\"\nfailures = 4\n\n[http]\nlisten = \"{http}\"\n"
    );
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, "grpc", "200ms", &settings))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &config).unwrap();

    // Failures 1 to 3: quarantined.
    let first = until_plugin(http, "flaky", &agent, |q, failures| q && failures == 3).await;
    // Not called while quarantined: the 4th failure (its first try after) comes 5 s later
    // (less the time between the quarantine and this test seeing it).
    let second = until_plugin(http, "flaky", &agent, |q, failures| q && failures == 4).await;
    let gap = second - first;
    assert!(
        gap >= Duration::from_millis(4500),
        "tried again {gap:?} into a 5 s quarantine\n{}",
        agent.log()
    );
    // The 5th evaluation succeeds, 10 s after the 4th failure.
    let recovered = until_plugin(http, "flaky", &agent, |q, failures| !q && failures == 0).await;
    let gap = recovered - second;
    assert!(
        gap >= Duration::from_millis(9500),
        "tried again {gap:?} into the second quarantine, which doubles to 10 s\n{}",
        agent.log()
    );

    let log = agent.log();
    let periods: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("plugin flaky quarantined for"))
        .collect();
    assert_eq!(periods.len(), 2, "{log}");
    assert!(periods[0].contains("quarantined for 5s"), "{log}");
    assert!(periods[1].contains("quarantined for 10s"), "{log}");
    assert!(log.contains("plugin left quarantine"), "{log}");

    // Telemetry agrees: two quarantines, four errors, out of quarantine, and the alert of
    // the recovered plugin fires again.
    let of_flaky = |r: &Received, metric: &str| {
        r.latest_points(metric)
            .iter()
            .filter(|p| p.attributes.get("vigil.plugin").map(String::as_str) == Some("flaky"))
            .map(|p| p.value)
            .sum::<f64>()
    };
    let (ok, r) = receiver
        .wait_for(Duration::from_secs(30), |r| {
            of_flaky(r, "vigil.plugin.quarantines") == 2.0
                && of_flaky(r, "vigil.plugin.quarantined") == 0.0
                && !r.latest_points("vigil.plugin.quarantined").is_empty()
                && r.records().iter().any(|x| {
                    x.attributes.get("vigil.alert.rule").map(String::as_str) == Some("misbehave-ok")
                        && x.attributes.get("vigil.alert.state").map(String::as_str)
                            == Some("firing")
                })
        })
        .await;
    assert!(
        ok,
        "quarantines {:?}, quarantined {:?}\n{}",
        r.latest_points("vigil.plugin.quarantines"),
        r.latest_points("vigil.plugin.quarantined"),
        agent.log()
    );
    assert_eq!(
        counter(&r, "vigil.plugin.errors", "flaky", "plugin-error"),
        4.0
    );
}
