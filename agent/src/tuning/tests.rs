//! The engine against the real Redis, PostgreSQL and MariaDB of this machine. Every
//! setting a test changes is one no other test reads, and a guard puts it back on drop
//! (also when the test fails).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::audit::{self, Status};
use super::*;
use crate::config::{self, Config};
use crate::model::{BatchBuilder, MetricDesc, MetricKind, attrs};
use vigil_testkit::servers::{
    MYSQL_URL, MysqlGuard, PG_URL, PgGuard, REDIS_URL, RedisGuard, mysql_get, pg_auto_conf,
    pg_show, redis_get,
};

fn config(audit: &Path, extra: &str) -> Config {
    Config::parse(
        &format!(
            r#"
[[collect.redis]]
name = "main"
url = "{REDIS_URL}"
timeout = "5s"
[[collect.postgres]]
name = "pg"
url = "{PG_URL}"
timeout = "5s"
[[collect.mysql]]
name = "db"
url = "{MYSQL_URL}"
timeout = "5s"
[tuning]
audit_file = "{}"
{extra}
"#,
            audit.display()
        ),
        "test.toml",
    )
    .unwrap()
}

fn proposal(
    policy: &str,
    target: Target,
    instance: &str,
    parameter: &str,
    value: &str,
) -> Proposal {
    Proposal {
        policy: policy.into(),
        action: Action::new(target, instance, parameter, value),
        reason: format!("test wants {parameter} = {value}"),
        revert_if: None,
        proposed_at: SystemTime::now(),
    }
}

fn redis(parameter: &str, value: &str) -> Proposal {
    proposal("p", Target::Redis, "main", parameter, value)
}

fn postgres(parameter: &str, value: &str) -> Proposal {
    proposal("p", Target::Postgres, "pg", parameter, value)
}

fn mysql(parameter: &str, value: &str) -> Proposal {
    proposal("p", Target::Mysql, "db", parameter, value)
}

fn audit_lines(path: &Path) -> Vec<audit::Entry> {
    audit::read_entries(path).unwrap().0
}

fn audit_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("actions.jsonl")
}

/// Drops the last handle of a running engine and waits (up to 5 s) for its task to end.
async fn stop(handle: TuningHandle, task: tokio::task::JoinHandle<()>) {
    drop(handle);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the engine stops within 5 s of its last handle")
        .expect("the engine's task did not panic");
}

#[tokio::test]
async fn redis_enforce_applies_reads_back_audits_and_dedups() {
    let _guard = RedisGuard::save(REDIS_URL, "lfu-log-factor");
    let before = redis_get(REDIS_URL, "lfu-log-factor");
    let target = if before == "12" { "13" } else { "12" };
    let dir = tempfile::tempdir().unwrap();
    let path = audit_path(&dir);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink_seen = seen.clone();
    let sink: DecisionSink =
        Arc::new(move |d: &Decision| sink_seen.lock().unwrap().push(d.clone()));
    let mut engine = TuningEngine::new(
        &config(
            &path,
            "[tuning.policies.p]\nmode = \"enforce\"\n[[tuning.allow]]\ntarget = \"redis\"\ninstance = \"main\"\nparameter = \"lfu-log-factor\"\nmin = 1\nmax = 20\nmax_step = 5\ncooldown = \"0s\"\n",
        ),
        None,
        Some(sink),
    );
    let d = engine.decide(redis("lfu-log-factor", target)).await;
    assert_eq!(d.verdict, Verdict::Applied, "{}", d.verdict_reason);
    assert_eq!(d.before.as_deref(), Some(before.as_str()));
    assert_eq!(d.after.as_deref(), Some(target));
    assert_eq!(
        redis_get(REDIS_URL, "lfu-log-factor"),
        target,
        "read back from the server"
    );
    let lines = audit_lines(&path);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].status, Status::Applying);
    assert_eq!(lines[0].before.as_deref(), Some(before.as_str()));
    assert_eq!(lines[0].mode, Some(config::PolicyMode::Enforce));
    assert_eq!(lines[1].status, Status::Applied);
    assert_eq!(lines[1].after.as_deref(), Some(target));
    assert_eq!(seen.lock().unwrap().len(), 1, "the sink saw the decision");
    let attributes = seen.lock().unwrap()[0].attributes();
    for (key, value) in [
        ("vigil.tuning.verdict", "applied"),
        ("vigil.tuning.parameter", "lfu-log-factor"),
        ("vigil.tuning.before", before.as_str()),
        ("vigil.tuning.id", "1"),
    ] {
        assert!(
            attributes.contains(&(key, value.to_owned())),
            "{key}: {attributes:?}"
        );
    }

    // The same proposal again: unchanged, audited once; then 1000 repeats: nothing more.
    let d = engine.decide(redis("lfu-log-factor", target)).await;
    assert_eq!(d.verdict, Verdict::Unchanged);
    for _ in 0..1000 {
        let d = engine.decide(redis("lfu-log-factor", target)).await;
        assert!(d.repeat && !d.audited());
    }
    assert_eq!(audit_lines(&path).len(), 3);
    assert_eq!(seen.lock().unwrap().len(), 2);
    let stats = engine.handle().stats();
    assert_eq!(stats.repeats, 1000);
    assert_eq!(stats.decisions["p"]["applied"], 1);
    assert_eq!(stats.decisions["p"]["unchanged"], 1);
}

#[tokio::test]
async fn dry_run_changes_nothing_and_audits_what_would_have() {
    let _guard = RedisGuard::save(REDIS_URL, "lfu-decay-time");
    let before = redis_get(REDIS_URL, "lfu-decay-time");
    let target = if before == "7" { "8" } else { "7" };
    let dir = tempfile::tempdir().unwrap();
    let path = audit_path(&dir);
    let mut engine = TuningEngine::new(
        &config(
            &path,
            "[[tuning.allow]]\ntarget = \"redis\"\ninstance = \"main\"\nparameter = \"lfu-decay-time\"\nmin = 0\nmax = 60\n",
        ),
        None,
        None,
    );
    let d = engine.decide(redis("lfu-decay-time", target)).await;
    assert_eq!(d.verdict, Verdict::DryRun);
    assert_eq!(
        redis_get(REDIS_URL, "lfu-decay-time"),
        before,
        "nothing changed"
    );
    let lines = audit_lines(&path);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].status, Status::DryRun);
    let verdict = lines[0].verdict.clone().unwrap();
    assert!(
        verdict.contains(&format!(
            "would set redis main lfu-decay-time from {before} to {target}"
        )),
        "{verdict}"
    );
    assert_eq!(lines[0].mode, Some(config::PolicyMode::DryRun));
}

#[tokio::test]
async fn refusals_name_their_reasons() {
    let _guard = RedisGuard::save(REDIS_URL, "proto-max-bulk-len");
    let bulk = redis_get(REDIS_URL, "proto-max-bulk-len");
    let _flush_guard = RedisGuard::save(REDIS_URL, "lazyfree-lazy-user-flush");
    let flush = redis_get(REDIS_URL, "lazyfree-lazy-user-flush");
    let _insert_guard = MysqlGuard::save(MYSQL_URL, "delayed_insert_limit").await;
    let insert_limit = mysql_get(MYSQL_URL, "delayed_insert_limit").await;
    let shared_buffers = pg_show(PG_URL, "shared_buffers").await;
    let dir = tempfile::tempdir().unwrap();
    let path = audit_path(&dir);
    let mut engine = TuningEngine::new(
        &config(
            &path,
            r#"
[tuning.policies.p]
mode = "enforce"
[[tuning.allow]]
target = "redis"
instance = "main"
parameter = "proto-max-bulk-len"
min = "256mb"
max = "1gb"
max_step = "64mb"
[[tuning.allow]]
target = "postgres"
instance = "pg"
parameter = "shared_buffers"
min = "16MB"
max = "1GB"
[[tuning.allow]]
target = "mysql"
instance = "db"
parameter = "innodb_page_size"
values = ["8192"]
[[tuning.allow]]
target = "redis"
instance = "main"
parameter = "lfu-log-factor"
values = ["11"]
policies = ["someone-else"]
[[tuning.allow]]
target = "redis"
instance = "main"
parameter = "lazyfree-lazy-user-flush"
values = ["maybe"]
[[tuning.allow]]
target = "mysql"
instance = "db"
parameter = "delayed_insert_limit"
values = ["lots"]
"#,
        ),
        None,
        None,
    );
    let cases = [
        (
            redis("hz", "20"),
            "not on the allowlist: no [[tuning.allow]] entry for redis main hz",
        ),
        (
            proposal("p", Target::Redis, "other", "proto-max-bulk-len", "512mb"),
            "not on the allowlist",
        ),
        (redis("lfu-log-factor", "11"), "lists other policies"),
        (
            redis("proto-max-bulk-len", "2gb"),
            "outside the allowed range 256mb..1gb",
        ),
        (
            redis("proto-max-bulk-len", "lots"),
            "is not a number in redis units",
        ),
        (
            redis("proto-max-bulk-len", "1gb"),
            "larger step than max_step = 64mb",
        ),
        (
            postgres("shared_buffers", "256MB"),
            "needs a server restart",
        ),
        (mysql("innodb_page_size", "8192"), "read-only"),
        (
            redis("lazyfree-lazy-user-flush", "maybe"),
            "Redis refused CONFIG SET lazyfree-lazy-user-flush",
        ),
        (
            mysql("delayed_insert_limit", "lots"),
            "the server refused it: Incorrect argument type",
        ),
    ];
    for (p, expected) in cases {
        let action = p.action.to_string();
        let d = engine.decide(p).await;
        assert_eq!(
            d.verdict,
            Verdict::Refused,
            "{action}: {}",
            d.verdict_reason
        );
        assert!(
            d.verdict_reason.contains(expected),
            "{action}: {}",
            d.verdict_reason
        );
        assert!(d.audited(), "{action}");
    }
    assert_eq!(redis_get(REDIS_URL, "proto-max-bulk-len"), bulk);
    assert_eq!(pg_show(PG_URL, "shared_buffers").await, shared_buffers);
    let rows = audit::fold(audit_lines(&path));
    assert_eq!(rows.len(), 10);
    assert!(rows.iter().all(|r| r.outcome == Status::Refused));
    // The servers' refusals came after `applying` was audited: two lines per decision.
    assert_eq!(audit_lines(&path).len(), 12);
    assert_eq!(redis_get(REDIS_URL, "lazyfree-lazy-user-flush"), flush);
    assert_eq!(
        mysql_get(MYSQL_URL, "delayed_insert_limit").await,
        insert_limit
    );
}

/// Policy `p` enforced, and `set-max-intset-entries` allowed to change twice an hour.
const INTSET_TWICE_AN_HOUR: &str = r#"
[tuning.policies.p]
mode = "enforce"
[[tuning.allow]]
target = "redis"
instance = "main"
parameter = "set-max-intset-entries"
min = 1
max = 100000
max_changes = 2
per = "1h"
cooldown = "0s"
"#;

#[tokio::test]
async fn rate_limit_and_cooldown_hold() {
    let _intset = RedisGuard::save(REDIS_URL, "set-max-intset-entries");
    let _zset = RedisGuard::save(REDIS_URL, "zset-max-listpack-entries");
    let intset: i64 = redis_get(REDIS_URL, "set-max-intset-entries")
        .parse()
        .unwrap();
    let zset: i64 = redis_get(REDIS_URL, "zset-max-listpack-entries")
        .parse()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = audit_path(&dir);
    let mut engine = TuningEngine::new(
        &config(
            &path,
            &format!(
                r#"{INTSET_TWICE_AN_HOUR}
[[tuning.allow]]
target = "redis"
instance = "main"
parameter = "zset-max-listpack-entries"
min = 1
max = 100000
cooldown = "2s"
"#
            ),
        ),
        None,
        None,
    );
    let set = |n: i64| redis("set-max-intset-entries", &n.to_string());
    assert_eq!(
        engine.decide(set(intset + 1)).await.verdict,
        Verdict::Applied
    );
    assert_eq!(
        engine.decide(set(intset + 2)).await.verdict,
        Verdict::Applied
    );
    let d = engine.decide(set(intset + 3)).await;
    assert_eq!(d.verdict, Verdict::Refused);
    assert!(
        d.verdict_reason.starts_with("rate limit: 2 changes"),
        "{}",
        d.verdict_reason
    );
    assert_eq!(
        redis_get(REDIS_URL, "set-max-intset-entries"),
        (intset + 2).to_string()
    );
    // A restarted engine remembers the changes in the audit file.
    let mut restarted = TuningEngine::new(&config(&path, INTSET_TWICE_AN_HOUR), None, None);
    let d = restarted.decide(set(intset + 3)).await;
    assert!(
        d.verdict_reason.starts_with("rate limit"),
        "{}",
        d.verdict_reason
    );

    let zset_to = |n: i64| redis("zset-max-listpack-entries", &n.to_string());
    assert_eq!(
        engine.decide(zset_to(zset + 1)).await.verdict,
        Verdict::Applied
    );
    let d = engine.decide(zset_to(zset + 2)).await;
    assert_eq!(d.verdict, Verdict::Refused);
    assert!(
        d.verdict_reason.starts_with("cool-down"),
        "{}",
        d.verdict_reason
    );
    assert_eq!(
        redis_get(REDIS_URL, "zset-max-listpack-entries"),
        (zset + 1).to_string()
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let d = engine.decide(zset_to(zset + 2)).await;
    assert_eq!(d.verdict, Verdict::Applied, "{}", d.verdict_reason);
    assert_eq!(
        redis_get(REDIS_URL, "zset-max-listpack-entries"),
        (zset + 2).to_string()
    );
}

#[tokio::test]
async fn postgres_change_and_exact_revert() {
    let _guard = PgGuard::save(PG_URL, "vacuum_cost_limit").await;
    let had_entry = pg_auto_conf(PG_URL, "vacuum_cost_limit").await;
    let before = pg_show(PG_URL, "vacuum_cost_limit").await;
    let target = if before == "333" { "334" } else { "333" };
    let dir = tempfile::tempdir().unwrap();
    let path = audit_path(&dir);
    let config = config(
        &path,
        "[tuning.policies.p]\nmode = \"enforce\"\n[[tuning.allow]]\ntarget = \"postgres\"\ninstance = \"pg\"\nparameter = \"vacuum_cost_limit\"\nmin = 1\nmax = 10000\n",
    );
    let mut engine = TuningEngine::new(&config, None, None);
    let d = engine.decide(postgres("vacuum_cost_limit", target)).await;
    assert_eq!(d.verdict, Verdict::Applied, "{}", d.verdict_reason);
    assert_eq!(d.after.as_deref(), Some(target));
    assert_eq!(
        pg_show(PG_URL, "vacuum_cost_limit").await,
        target,
        "a new connection sees it"
    );
    assert_eq!(
        pg_auto_conf(PG_URL, "vacuum_cost_limit").await.as_deref(),
        Some(target)
    );
    let id = d.id.unwrap();
    let revert = cli::revert_decision(&config, id, false).await.unwrap();
    assert_eq!(
        revert.verdict,
        Verdict::Applied,
        "{}",
        revert.verdict_reason
    );
    assert_eq!(pg_show(PG_URL, "vacuum_cost_limit").await, before);
    assert_eq!(
        pg_auto_conf(PG_URL, "vacuum_cost_limit").await,
        had_entry,
        "auto.conf as it was"
    );
    let again = cli::revert_decision(&config, id, false).await.unwrap_err();
    assert!(again.contains("already reverted"), "{again}");
}

#[tokio::test]
async fn mysql_set_global_and_read_back() {
    let _guard = MysqlGuard::save(MYSQL_URL, "max_error_count").await;
    let before = mysql_get(MYSQL_URL, "max_error_count").await;
    let target = if before == "100" { "101" } else { "100" };
    let dir = tempfile::tempdir().unwrap();
    let path = audit_path(&dir);
    let config = config(
        &path,
        "[tuning.policies.p]\nmode = \"enforce\"\n[[tuning.allow]]\ntarget = \"mysql\"\ninstance = \"db\"\nparameter = \"max_error_count\"\nmin = 0\nmax = 1000\n",
    );
    let mut engine = TuningEngine::new(&config, None, None);
    let d = engine.decide(mysql("max_error_count", target)).await;
    assert_eq!(d.verdict, Verdict::Applied, "{}", d.verdict_reason);
    assert_eq!(mysql_get(MYSQL_URL, "max_error_count").await, target);
    let revert = cli::revert_decision(&config, d.id.unwrap(), false)
        .await
        .unwrap();
    assert_eq!(
        revert.verdict,
        Verdict::Applied,
        "{}",
        revert.verdict_reason
    );
    assert_eq!(mysql_get(MYSQL_URL, "max_error_count").await, before);
}

#[tokio::test]
async fn an_unwritable_audit_file_stops_every_change() {
    let _guard = RedisGuard::save(REDIS_URL, "stream-node-max-entries");
    let before = redis_get(REDIS_URL, "stream-node-max-entries");
    let dir = tempfile::tempdir().unwrap();
    // The audit "file" is a directory.
    let mut engine = TuningEngine::new(
        &config(
            dir.path(),
            "[tuning.policies.p]\nmode = \"enforce\"\n[[tuning.allow]]\ntarget = \"redis\"\ninstance = \"main\"\nparameter = \"stream-node-max-entries\"\nmin = 1\nmax = 100000\n",
        ),
        None,
        None,
    );
    let target = if before == "200" { "201" } else { "200" };
    let d = engine
        .decide(redis("stream-node-max-entries", target))
        .await;
    assert_eq!(d.verdict, Verdict::Refused);
    assert!(
        d.verdict_reason.contains("cannot write the audit file"),
        "{}",
        d.verdict_reason
    );
    assert!(
        d.verdict_reason.contains("tuning.audit_file"),
        "{}",
        d.verdict_reason
    );
    assert_eq!(redis_get(REDIS_URL, "stream-node-max-entries"), before);
}

#[tokio::test]
async fn collector_intervals_and_automatic_revert() {
    let dir = tempfile::tempdir().unwrap();
    let path = audit_path(&dir);
    let intervals = Arc::new(MemoryIntervals::new([("system", Duration::from_secs(10))]));
    let config = config(
        &path,
        r#"
[tuning.policies.backoff]
mode = "enforce"
[[tuning.allow]]
target = "collector"
instance = "system"
parameter = "interval-ms"
min = "5s"
max = "60s"
cooldown = "0s"
"#,
    );
    let engine = TuningEngine::new(&config, Some(intervals.clone()), None);
    let handle = engine.handle();
    let task = tokio::spawn(engine.run());
    let mut p = proposal(
        "backoff",
        Target::Collector,
        "system",
        "interval-ms",
        "30000",
    );
    p.revert_if = Some(RevertCondition {
        metric: "system.cpu.utilization".into(),
        attributes: vec![("state".into(), "user".into())],
        worse: Direction::Rises,
        limit: 0.9,
        window: Duration::from_secs(60),
    });
    let d = handle.decide(p).await.unwrap();
    assert_eq!(d.verdict, Verdict::Applied, "{}", d.verdict_reason);
    assert_eq!(intervals.current("system"), Some(Duration::from_secs(30)));
    assert!(handle.settings().iter().any(|s| s.value == "30000"));
    assert_eq!(handle.stats().watching, 1);

    let cpu = MetricDesc::new("system.cpu.utilization", "1", MetricKind::Gauge, "");
    let batch = |user: f64, other: f64| {
        let mut b = BatchBuilder::new("system", "h");
        b.point(&cpu, attrs([("state", "user")]), user);
        b.point(&cpu, attrs([("state", "idle")]), other);
        b.build()
    };
    handle.observe(&batch(0.5, 0.95));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        intervals.current("system"),
        Some(Duration::from_secs(30)),
        "not worse yet"
    );
    handle.observe(&batch(0.97, 0.0));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while intervals.current("system") != Some(Duration::from_secs(10)) {
        assert!(std::time::Instant::now() < deadline, "no automatic revert");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The revert is audited as its own decision, before and after the change's.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rows = audit::fold(audit_lines(&path));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].reverted_by, Some(rows[1].entry.id));
    let revert = &rows[1].entry;
    assert_eq!(revert.kind, Some(DecisionKind::AutoRevert));
    assert_eq!(revert.reverts, Some(rows[0].entry.id));
    assert_eq!(rows[1].outcome, Status::Applied);
    let reason = revert.reason.clone().unwrap();
    assert!(
        reason.starts_with("system.cpu.utilization rose to 0.970 (limit 0.9)"),
        "{reason}"
    );
    assert_eq!(handle.stats().watching, 0);
    stop(handle, task).await;
}

#[tokio::test]
async fn previews_touch_nothing_and_audit_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = audit_path(&dir);
    let mut engine = TuningEngine::offline(&config(
        &path,
        "[tuning.policies.p]\nmode = \"enforce\"\n[[tuning.allow]]\ntarget = \"redis\"\ninstance = \"main\"\nparameter = \"maxmemory\"\nmin = \"64mb\"\nmax = \"1gb\"\nmax_step = \"128mb\"\n",
    ));
    let known = [CurrentSetting {
        setting: redis("maxmemory", "0").action.setting,
        value: "268435456".into(),
    }];
    let d = engine.preview(redis("maxmemory", "300mb"), &known).await;
    assert_eq!(d.verdict, Verdict::WouldApply, "{}", d.verdict_reason);
    let d = engine.preview(redis("maxmemory", "512mb"), &known).await;
    assert!(
        d.verdict_reason.contains("max_step"),
        "{}",
        d.verdict_reason
    );
    let d = engine.preview(redis("hz", "20"), &[]).await;
    assert_eq!(d.verdict, Verdict::Refused);
    // An offline engine never applies: decide() is a preview too.
    let d = engine.decide(redis("maxmemory", "300mb")).await;
    assert_eq!(d.verdict, Verdict::WouldApply, "{}", d.verdict_reason);
    assert!(
        d.verdict_reason.contains("from its current value"),
        "{}",
        d.verdict_reason
    );
    assert!(!path.exists(), "nothing audited");
}

#[tokio::test]
async fn a_watch_that_ends_quietly_keeps_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = audit_path(&dir);
    let intervals = Arc::new(MemoryIntervals::new([("system", Duration::from_secs(10))]));
    let config = config(
        &path,
        "[tuning.policies.backoff]\nmode = \"enforce\"\n[[tuning.allow]]\ntarget = \"collector\"\ninstance = \"system\"\nparameter = \"interval-ms\"\nmin = \"5s\"\nmax = \"60s\"\n",
    );
    let engine = TuningEngine::new(&config, Some(intervals.clone()), None);
    let handle = engine.handle();
    let task = tokio::spawn(engine.run());
    let mut p = proposal("backoff", Target::Collector, "system", "interval-ms", "20s");
    p.revert_if = Some(RevertCondition {
        metric: "system.cpu.utilization".into(),
        attributes: vec![],
        worse: Direction::Rises,
        limit: 0.9,
        window: Duration::from_secs(1),
    });
    let d = handle.decide(p).await.unwrap();
    assert_eq!(d.verdict, Verdict::Applied, "{}", d.verdict_reason);
    let cpu = MetricDesc::new("system.cpu.utilization", "1", MetricKind::Gauge, "");
    let mut b = BatchBuilder::new("system", "h");
    b.point(&cpu, attrs([("state", "user")]), 0.2);
    handle.observe(&b.build());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let kept = loop {
        let rows = audit::fold(audit_lines(&path));
        if let Some(kept) = rows[0].kept.clone() {
            break kept;
        }
        assert!(std::time::Instant::now() < deadline, "no kept line");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(kept.contains("did not get worse"), "{kept}");
    assert_eq!(intervals.current("system"), Some(Duration::from_secs(20)));
    assert_eq!(handle.stats().watching, 0);
    stop(handle, task).await;
}

#[tokio::test]
async fn garbage_floods_are_counted_not_audited() {
    let dir = tempfile::tempdir().unwrap();
    let path = audit_path(&dir);
    let engine = TuningEngine::new(
        &config(&path, "max_decisions_per_minute = 20\n"),
        None,
        None,
    );
    let handle = engine.handle();
    // Before the engine runs its queue fills: the rest is dropped and counted.
    for i in 0..(engine::QUEUE + 6) {
        handle.submit(vec![redis("hz", &i.to_string())]);
    }
    assert_eq!(handle.stats().dropped, 6);
    let task = tokio::spawn(engine.run());
    // A decision through the same queue returns once everything before it is decided.
    handle
        .decide(proposal("other", Target::Redis, "main", "hz", "1"))
        .await
        .unwrap();
    let garbage: Vec<Proposal> = (0..100_000)
        .map(|i| {
            proposal(
                "junk",
                Target::Redis,
                &format!("nope-{i}"),
                "x",
                &"v".repeat(256),
            )
        })
        .collect();
    handle.submit(garbage);
    let last = handle
        .decide(proposal("other", Target::Redis, "main", "hz", "1"))
        .await
        .unwrap();
    assert_eq!(last.verdict, Verdict::Refused);
    assert!(last.repeat, "the same verdict as the first time");
    let stats = handle.stats();
    assert_eq!(stats.dropped, 6);
    assert_eq!(stats.decisions["junk"]["refused"], 20);
    assert_eq!(
        stats.throttled,
        (engine::QUEUE as u64 - 20) + (100_000 - 20)
    );
    // The queued "p" proposals: 20 audited, the rest throttled too.
    assert_eq!(stats.decisions["p"]["refused"], 20);
    let lines = audit_lines(&path);
    assert_eq!(lines.len(), 20 + 20 + 1);
    stop(handle, task).await;
}

#[tokio::test]
async fn a_reloaded_config_applies_to_the_next_decision() {
    let dir = tempfile::tempdir().unwrap();
    let path = audit_path(&dir);
    let engine = TuningEngine::new(&config(&path, ""), None, None);
    let handle = engine.handle();
    let task = tokio::spawn(engine.run());
    let d = handle.decide(redis("hz", "11")).await.unwrap();
    assert!(
        d.verdict_reason.starts_with("not on the allowlist"),
        "{}",
        d.verdict_reason
    );
    assert!(handle.settings().is_empty());
    handle.update(&config(
        &path,
        "[[tuning.allow]]\ntarget = \"redis\"\ninstance = \"main\"\nparameter = \"hz\"\nmin = 1\nmax = 500\n",
    ));
    let d = handle.decide(redis("hz", "11")).await.unwrap();
    let hz = redis_get(REDIS_URL, "hz");
    if hz == "11" {
        assert_eq!(d.verdict, Verdict::Unchanged);
    } else {
        assert_eq!(d.verdict, Verdict::DryRun, "{}", d.verdict_reason);
    }
    // The allowlisted setting is read for policies after the reload.
    let settings = handle.settings();
    assert_eq!(settings.len(), 1);
    assert_eq!(settings[0].setting.parameter, "hz");
    assert_eq!(settings[0].value, hz);
    stop(handle, task).await;
}
