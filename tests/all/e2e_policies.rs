//! End to end: tuning policies built from plugins/ running in the real agent. An example
//! policy changes a real (private) Redis through the gate, the decisions reach the OTLP
//! receiver and the audit file, the trail survives `kill -9` and a restart, and
//! `vigil actions revert` restores the value; reloading a policy while its proposals are in
//! flight neither loses a decision nor makes one twice; garbage is decided once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_testkit::agent::{AgentProcess, Workspace, output_text, run_to_end};
use vigil_testkit::otlp::OtlpReceiver;
use vigil_testkit::plugins::{AGENT_INTERVAL, ECHO_POLICY, PG_WORK_MEM, REDIS_MEMORY};
use vigil_testkit::redis::OwnRedis;
use vigil_testkit::servers::{pg_show, redis_conn, redis_get, redis_set};

use crate::e2e_tuning::actions;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// Writes 1 KiB values to 20 000 keys round and round until dropped: past `maxmemory`,
/// every write evicts.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(url: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut conn = redis_conn(url);
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let value = vec![b'x'; 1024];
            let mut i = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let _: Result<(), _> = redis::cmd("SET")
                    .arg(format!("k{}", i % 20_000))
                    .arg(&value)
                    .query(&mut conn);
                i += 1;
                if i.is_multiple_of(200) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The decisions `vigil actions list --json` shows.
fn listed(config: &Path) -> Vec<Value> {
    let output = actions(config, &["list", "--json"]);
    assert!(output.status.success(), "{}", output_text(&output));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(rows)) => rows,
        _ => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect(),
    }
}

fn field<'a>(row: &'a Value, key: &str) -> &'a str {
    row[key].as_str().unwrap_or_default()
}

/// Polls `done` every 100 ms until it holds or `timeout` passes.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

/// `text` without terminal colour codes (`ESC [ ... m`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The decision ids the agent logged (`tuning decision: ...` lines with `id=N`).
fn logged_decision_ids(log: &str) -> Vec<u64> {
    plain(log)
        .lines()
        .filter(|l| l.contains("tuning decision"))
        .filter_map(|l| {
            let start = l.find("id=")? + 3;
            let digits: String = l[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_changes_redis_through_the_gate_and_its_trail_survives_kill_9() {
    let redis = OwnRedis::start_free();
    let url = redis.url();
    redis_set(&url, "maxmemory", "2097152");
    redis_set(&url, "maxmemory-policy", "allkeys-random");
    let writer = Writer::start(&url);

    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("redis-memory", REDIS_MEMORY).unwrap();
    let extra = format!(
        r#"
[[collect.redis]]
name = "tuned"
url = "{url}"
interval = "400ms"

[plugins.settings.redis-memory]
instance = "tuned"
evictions_per_s = 1
for_batches = 2
step = "2mb"
max = "64mb"

[tuning]
audit_file = "actions.jsonl"
settings_refresh = "1s"

[tuning.policies.redis-memory]
mode = "enforce"

[[tuning.allow]]
target = "redis"
instance = "tuned"
parameter = "maxmemory"
min = "1mb"
max = "64mb"
max_step = "4mb"
max_changes = 1
per = "1h"
cooldown = "1s"
"#
    );
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, "grpc", "400ms", &extra))
        .unwrap();
    let mut agent = AgentProcess::start(VIGIL, &config).unwrap();

    // Evictions make the policy propose 2 MiB more; the gate lets exactly that through.
    let applied = wait_until(Duration::from_secs(40), || {
        redis_get(&url, "maxmemory") == "4194304"
    });
    assert!(applied, "maxmemory not raised; agent log:\n{}", agent.log());
    // The writer fills the new limit too: the next step is refused by the rate limit.
    let rate_limited = wait_until(Duration::from_secs(30), || {
        listed(&config)
            .iter()
            .any(|r| field(r, "status") == "refused" && field(r, "verdict").contains("rate"))
    });
    assert!(
        rate_limited,
        "no rate-limit refusal: {:?}\n{}",
        listed(&config),
        agent.log()
    );
    assert_eq!(
        redis_get(&url, "maxmemory"),
        "4194304",
        "refused means unchanged"
    );

    // Every audited decision is also an OTLP log record.
    let (exported, received) = receiver
        .wait_for(Duration::from_secs(10), |r| {
            r.records().iter().any(|rec| {
                rec.event_name == "vigil.tuning.decision"
                    && rec
                        .attributes
                        .get("vigil.tuning.verdict")
                        .map(String::as_str)
                        == Some("applied")
            })
        })
        .await;
    assert!(exported, "no decision record: {:?}", received.records());
    let record = received
        .records()
        .into_iter()
        .find(|r| r.event_name == "vigil.tuning.decision")
        .unwrap();
    assert_eq!(record.attributes["vigil.tuning.policy"], "redis-memory");
    assert_eq!(record.attributes["vigil.tuning.before"], "2097152");
    assert_eq!(record.attributes["vigil.tuning.after"], "4194304");

    // kill -9 mid-run: every decision it logged is in the trail, also after a restart.
    let logged = logged_decision_ids(&agent.log());
    assert!(logged.len() >= 2, "{}", agent.log());
    std::process::Command::new("kill")
        .args(["-KILL", &agent.id().to_string()])
        .status()
        .unwrap();
    let _ = agent.wait_exit(Duration::from_secs(5));
    drop(writer);
    let mut agent = AgentProcess::start(VIGIL, &config).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent.is_running(), "{}", agent.log());
    let rows = listed(&config);
    let ids: Vec<u64> = rows.iter().filter_map(|r| r["id"].as_u64()).collect();
    for id in &logged {
        assert!(ids.contains(id), "decision {id} lost: {rows:?}");
    }
    let change = rows
        .iter()
        .find(|r| field(r, "status") == "applied")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(field(change, "before"), "2097152");
    assert_eq!(field(change, "after"), "4194304");
    assert_eq!(field(change, "policy"), "redis-memory");

    // The operator undoes it: the exact previous value, audited as a revert.
    drop(agent);
    let id = change["id"].as_u64().unwrap().to_string();
    let reverted = actions(&config, &["revert", &id]);
    assert!(reverted.status.success(), "{}", output_text(&reverted));
    assert_eq!(redis_get(&url, "maxmemory"), "2097152");
    let rows = listed(&config);
    assert!(
        rows.iter()
            .any(|r| field(r, "kind") == "revert" && r["reverts"].as_u64() == change["id"].as_u64()),
        "{rows:?}"
    );
}

/// An `echo-policy` proposing the collector interval `interval_ms` (dry-run), and a
/// second copy, `garbage`, proposing a change on an instance that does not exist.
fn echo_config(ws: &Workspace, endpoint: &str, interval_ms: u64) -> std::path::PathBuf {
    let extra = format!(
        r#"
[plugins.settings.echo]
interests = ["system.*"]
proposals = [{{ action = "collector-interval", collector = "system", interval_ms = {interval_ms}, reason = "step" }}]

[plugins.settings.garbage]
interests = ["system.*"]
proposals = [{{ action = "redis-config-set", instance = "nowhere", parameter = "maxmemory", value = "1gb", reason = "garbage" }}]

[tuning]
audit_file = "actions.jsonl"

[[tuning.allow]]
target = "collector"
instance = "system"
parameter = "interval-ms"
min = "100ms"
max = "1h"
"#
    );
    ws.write_config(&ws.config_for(endpoint, "grpc", "200ms", &extra))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_a_policy_in_flight_loses_no_decision_and_makes_none_twice() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("echo", ECHO_POLICY).unwrap();
    ws.add_plugin("garbage", ECHO_POLICY).unwrap();
    let config = echo_config(&ws, &receiver.endpoint, 1000);
    let agent = AgentProcess::start(VIGIL, &config).unwrap();
    let decided = |value: &str| {
        listed(&config)
            .iter()
            .filter(|r| field(r, "policy") == "echo" && field(r, "value") == value)
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(30), || decided("1000") == 1),
        "{}",
        agent.log()
    );
    // New settings while batches and proposals are in flight: each reload swaps the
    // policy's instance; every value it proposed is decided once.
    let values: Vec<u64> = (1..=6).map(|i| 1000 + i * 100).collect();
    for value in &values {
        echo_config(&ws, &receiver.endpoint, *value);
        std::thread::sleep(Duration::from_millis(250));
    }
    let last = values.last().unwrap().to_string();
    assert!(
        wait_until(Duration::from_secs(20), || decided(&last) == 1),
        "the last value was never decided: {:?}\n{}",
        listed(&config),
        agent.log()
    );
    // Let several more batches propose the same thing.
    std::thread::sleep(Duration::from_secs(2));
    let rows = listed(&config);
    let mut per_value: BTreeMap<String, usize> = BTreeMap::new();
    for row in rows.iter().filter(|r| field(r, "policy") == "echo") {
        assert_eq!(field(row, "status"), "dry-run", "{row}");
        *per_value.entry(field(row, "value").to_owned()).or_default() += 1;
    }
    assert!(
        per_value.values().all(|n| *n == 1),
        "a decision made twice: {per_value:?}"
    );
    assert_eq!(per_value.get("1000"), Some(&1));
    assert_eq!(per_value.get(last.as_str()), Some(&1));

    // Garbage proposed on every batch (an instance that does not exist) is one refusal,
    // audited and logged once.
    let garbage: Vec<&Value> = rows
        .iter()
        .filter(|r| field(r, "policy") == "garbage")
        .collect();
    assert_eq!(garbage.len(), 1, "{garbage:?}");
    assert_eq!(field(garbage[0], "status"), "refused");
    assert!(
        field(garbage[0], "verdict").contains("nowhere"),
        "{:?}",
        garbage[0]
    );
    let log = agent.log();
    let logged = log
        .lines()
        .filter(|l| l.contains("tuning decision") && l.contains("nowhere"))
        .count();
    assert_eq!(logged, 1, "{log}");
}

#[test]
fn plugin_test_prints_each_proposal_with_the_gates_verdict_and_touches_nothing() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/fixtures");
    let ws = Workspace::new().unwrap();
    let plugin = ws.add_plugin("agent-interval", AGENT_INTERVAL).unwrap();
    let run = |mode: &str, max_step: &str| {
        let config = ws
            .write_config(&format!(
                "[plugins.settings.agent-interval]\nfor_batches = 1\n\
                 [tuning]\naudit_file = \"actions.jsonl\"\n\
                 [tuning.policies.agent-interval]\nmode = \"{mode}\"\n\
                 [[tuning.allow]]\ntarget = \"collector\"\ninstance = \"system\"\n\
                 parameter = \"interval-ms\"\nmin = \"5s\"\nmax = \"60s\"\nmax_step = \"{max_step}\"\n"
            ))
            .unwrap();
        let output = run_to_end(
            VIGIL,
            &[
                "plugin",
                "test",
                plugin.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--batch",
                &format!("{fixtures}/cpu-busy.json"),
                "--firing",
                &format!("{fixtures}/firing.json"),
                "--settings",
                &format!("{fixtures}/settings.json"),
            ],
        )
        .unwrap();
        assert!(output.status.success(), "{}", output_text(&output));
        let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{}", output_text(&output));
        lines.into_iter().next().unwrap()
    };
    // Host CPU at 97 %, the system collector every 10 s: back off to 20 s.
    let dry = run("dry-run", "30s");
    assert_eq!(dry["action"]["value"], "20000");
    assert_eq!(dry["before"], "10000");
    assert_eq!(dry["verdict"], "dry-run", "{dry}");
    let enforced = run("enforce", "30s");
    assert_eq!(enforced["verdict"], "would-apply", "{enforced}");
    // The same proposal beyond the largest step the operator allows is refused, with why.
    let narrow = run("enforce", "5s");
    assert_eq!(narrow["verdict"], "refused", "{narrow}");
    assert!(
        narrow["verdict_reason"].as_str().unwrap().contains("step"),
        "{narrow}"
    );
    assert!(
        !ws.plugins()
            .parent()
            .unwrap()
            .join("actions.jsonl")
            .exists(),
        "plugin test audits nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_change_reverts_itself_when_the_watched_metric_gets_worse() {
    let redis = OwnRedis::start_free();
    let url = redis.url();
    let before = redis_get(&url, "maxmemory-samples");
    assert_ne!(before, "7");
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("sampler", ECHO_POLICY).unwrap();
    // The change asks to be undone when more than 6 clients connect within a minute.
    let extra = format!(
        r#"
[[collect.redis]]
name = "own"
url = "{url}"
interval = "300ms"

[plugins.settings.sampler]
interests = ["redis.*"]
proposals = [{{ action = "redis-config-set", instance = "own", parameter = "maxmemory-samples", value = "7", reason = "sample more keys", revert_if = {{ metric = "redis.clients.connected", worse = "rises", limit = 6, window_ms = 60000 }} }}]

[tuning]
audit_file = "actions.jsonl"
settings_refresh = "1s"

[tuning.policies.sampler]
mode = "enforce"

[[tuning.allow]]
target = "redis"
instance = "own"
parameter = "maxmemory-samples"
min = 1
max = 10
max_changes = 1
per = "1h"
"#
    );
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, "grpc", "300ms", &extra))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &config).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || redis_get(
            &url,
            "maxmemory-samples"
        ) == "7"),
        "not applied: {}",
        agent.log()
    );
    // Things get worse: ten more clients.
    let crowd: Vec<redis::Connection> = (0..10).map(|_| redis_conn(&url)).collect();
    assert!(
        wait_until(Duration::from_secs(20), || {
            redis_get(&url, "maxmemory-samples") == before
        }),
        "not reverted: {:?}\n{}",
        listed(&config),
        agent.log()
    );
    drop(crowd);
    let rows = listed(&config);
    let change = rows
        .iter()
        .find(|r| field(r, "kind") == "proposal" && r["reverted_by"].is_u64())
        .unwrap_or_else(|| panic!("{rows:?}"));
    let revert = rows
        .iter()
        .find(|r| field(r, "kind") == "auto-revert")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(revert["reverts"], change["id"]);
    assert_eq!(field(revert, "status"), "applied");
    assert_eq!(field(revert, "value"), before);
    assert!(
        field(revert, "reason").contains("redis.clients.connected"),
        "{revert}"
    );
    // The policy keeps proposing the change: the rate limit holds it off.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(redis_get(&url, "maxmemory-samples"), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_dry_run_a_policy_changes_nothing_and_the_trail_says_what_would_have() {
    use sqlx::Connection;
    const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
    let before = pg_show(PG_URL, "work_mem").await;
    // Queries that spill to temporary files (this session's own small work_mem).
    let stop = Arc::new(AtomicBool::new(false));
    let spilling = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(PG_URL).await.unwrap();
                sqlx::raw_sql("SET work_mem = '64kB'")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    sqlx::raw_sql(
                        "SELECT g FROM generate_series(1, 100000) g ORDER BY g DESC LIMIT 1",
                    )
                    .execute(&mut conn)
                    .await
                    .unwrap();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        })
    };
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("pg-work-mem", PG_WORK_MEM).unwrap();
    let extra = format!(
        r#"
[[collect.postgres]]
name = "spilling"
url = "{PG_URL}"
interval = "1s"

[plugins.settings.pg-work-mem]
for_batches = 2
temp_files_per_min = 1

[tuning]
audit_file = "actions.jsonl"
settings_refresh = "1s"

[[tuning.allow]]
target = "postgres"
instance = "spilling"
parameter = "work_mem"
min = "1MB"
max = "1GB"
"#
    );
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, "grpc", "1s", &extra))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &config).unwrap();
    let decided = wait_until(Duration::from_secs(40), || {
        listed(&config)
            .iter()
            .any(|r| field(r, "policy") == "pg-work-mem")
    });
    stop.store(true, Ordering::Relaxed);
    spilling.join().unwrap();
    assert!(decided, "no decision: {}", agent.log());
    let rows = listed(&config);
    let row = rows
        .iter()
        .find(|r| field(r, "policy") == "pg-work-mem")
        .unwrap();
    assert_eq!(field(row, "status"), "dry-run", "{row}");
    assert_eq!(field(row, "parameter"), "work_mem");
    assert_eq!(field(row, "before"), before, "{row}");
    assert!(field(row, "verdict").contains("would set"), "{row}");
    // Nothing changed on the server.
    assert_eq!(pg_show(PG_URL, "work_mem").await, before);
}
