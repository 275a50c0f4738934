//! End to end against the real PostgreSQL, MariaDB and Redis on this machine: known
//! traffic is generated, the agent collects, and the exported values are checked
//! against what the servers report; the example plugins built from source fire;
//! a Redis the test starts itself is stopped and started again.

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::Duration;

use sqlx::{Connection, Row};
use vigil_testkit::agent::{AgentProcess, Workspace, free_local_addr, plugin_test, vigil};
use vigil_testkit::http::get_until;
use vigil_testkit::otlp::{OtlpReceiver, Received, Record};
use vigil_testkit::plugins::{
    PG_CONNECTION_SATURATION, PG_SEQSCAN, PG_SLOW_QUERY, REDIS_HIT_RATIO,
};
use vigil_testkit::postgres::PrivatePostgres;
use vigil_testkit::redis::{OwnRedis, free_port};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
const REDIS_URL: &str = "redis://127.0.0.1:6379";
const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";

fn redis_info() -> HashMap<String, f64> {
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_connection().unwrap();
    let text: String = redis::cmd("INFO").arg("stats").query(&mut conn).unwrap();
    text.lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

/// The newest value of `metric` for `instance` (under load one request may hold only
/// another instance's batch).
fn value(received: &Received, metric: &str, instance: &str) -> Option<f64> {
    received
        .newest_point(metric, &[("vigil.instance", instance)])
        .map(|p| p.value)
}

fn firing<'a>(records: &'a [Record], rule: &str) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| {
            r.attributes.get("vigil.alert.rule").map(String::as_str) == Some(rule)
                && r.attributes["vigil.alert.state"] == "firing"
        })
        .collect()
}

/// Runs `vigil run --once` with `config` and returns what the receiver got and the agent's stderr.
async fn run_once(receiver: &OtlpReceiver, ws: &Workspace, extra: &str) -> (Received, String) {
    vigil_testkit::agent::run_once(VIGIL, receiver, ws, extra).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_metrics_match_info() {
    let before = redis_info();
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_connection().unwrap();
    let key = format!("vigil-test-{}", std::process::id());
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("v")
        .query(&mut conn)
        .unwrap();
    for _ in 0..200 {
        let _: Option<String> = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
    }
    for i in 0..300 {
        let _: Option<String> = redis::cmd("GET")
            .arg(format!("{key}-missing-{i}"))
            .query(&mut conn)
            .unwrap();
    }
    let _: () = redis::cmd("DEL").arg(&key).query(&mut conn).unwrap();

    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let (received, _) = run_once(
        &receiver,
        &ws,
        &format!("[[collect.redis]]\nname = \"main\"\nurl = \"{REDIS_URL}\"\n"),
    )
    .await;
    let after = redis_info();

    for (metric, field, generated) in [
        ("redis.keyspace.hits", "keyspace_hits", 200.0),
        ("redis.keyspace.misses", "keyspace_misses", 300.0),
    ] {
        let exported =
            value(&received, metric, "main").unwrap_or_else(|| panic!("{metric} missing"));
        assert!(
            exported >= before[field] + generated && exported <= after[field],
            "{metric}: {} + {generated} <= {exported} <= {}",
            before[field],
            after[field]
        );
    }
    assert_eq!(value(&received, "redis.up", "main"), Some(1.0));
    assert!(value(&received, "redis.clients.connected", "main").unwrap() >= 1.0);
    assert!(value(&received, "redis.memory.used", "main").unwrap() > 0.0);
    let calls = received.latest_points("redis.cmd.calls");
    let get = calls
        .iter()
        .find(|p| p.attributes.get("cmd").map(String::as_str) == Some("get"))
        .expect("GET command stats");
    assert!(get.value >= 500.0);
    let up = &received.latest_points("redis.up")[0];
    assert_eq!(up.attributes["db.system"], "redis");
    assert_eq!(up.attributes["server.port"], "6379");
    assert_eq!(up.attributes["server.address"], "127.0.0.1");
}

fn alert_records<'a>(records: &'a [Record], rule: &str, state: &str) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| {
            r.attributes.get("vigil.alert.rule").map(String::as_str) == Some(rule)
                && r.attributes["vigil.alert.state"] == state
        })
        .collect()
}

/// Successful rounds of collector `name` in the latest export.
fn rounds(received: &Received, name: &str) -> f64 {
    received
        .latest_points("vigil.collector.rounds")
        .iter()
        .find(|p| p.attributes["vigil.collector"] == name)
        .map_or(0.0, |p| p.value)
}

/// `count` GETs of `key` on `conn` (hits when the key exists, misses when not).
fn gets(conn: &mut redis::Connection, key: &str, count: usize) {
    for _ in 0..count {
        let _: Option<String> = redis::cmd("GET").arg(key).query(conn).unwrap();
    }
}

/// Issue 10: the rule resolved and fired again whenever one batch had fewer than
/// `min_lookups` lookups. A burst of misses fires it; quiet batches with a few hits keep
/// it firing; a burst of hits resolves it. A private redis-server keeps other traffic out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hit_ratio_fires_on_misses_holds_through_quiet_batches_and_resolves_on_hits() {
    let own = OwnRedis::start(free_port());
    let url = format!("redis://127.0.0.1:{}", own.port);
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("redis-hit-ratio", REDIS_HIT_RATIO).unwrap();
    let extra = format!(
        "[[collect.redis]]\nname = \"cache\"\nurl = \"{url}\"\ninterval = \"500ms\"\n[plugins.settings.redis-hit-ratio]\nmin_ratio = 0.9\nmin_lookups = 500\n"
    );
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, "grpc", "500ms", &extra))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &config).unwrap();
    // Plugins load in the background: the burst below must reach a loaded plugin.
    let (started, _) = receiver
        .wait_for(Duration::from_secs(20), |r| {
            value(r, "redis.up", "cache") == Some(1.0)
                && r.latest_points("vigil.plugin.memory")
                    .iter()
                    .any(|p| p.attributes["vigil.plugin"] == "redis-hit-ratio")
        })
        .await;
    assert!(started, "{}", agent.log());

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let _: () = redis::cmd("SET")
        .arg("present")
        .arg("v")
        .query(&mut conn)
        .unwrap();
    gets(&mut conn, "absent", 2000);
    let (fired, received) = receiver
        .wait_for(Duration::from_secs(20), |r| {
            !firing(&r.records(), "redis-hit-ratio").is_empty()
        })
        .await;
    assert!(fired, "no hit-ratio alert; log:\n{}", agent.log());
    let records = received.records();
    let alert = firing(&records, "redis-hit-ratio")[0];
    assert_eq!(alert.attributes["vigil.alert.key"], "instance=cache");
    assert!(
        alert.attributes["vigil.alert.value"]
            .parse::<f64>()
            .unwrap()
            < 0.9
    );
    assert!(alert.body.contains("cache hit ratio"), "{}", alert.body);

    // Quiet batches: a few hits each, far fewer lookups than a window needs.
    let rounds_at_start = rounds(&received, "redis:cache");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while rounds(&receiver.received(), "redis:cache") < rounds_at_start + 8.0 {
        assert!(std::time::Instant::now() < deadline, "{}", agent.log());
        gets(&mut conn, "present", 5);
        tokio::time::sleep(Duration::from_millis(200)).await; // a trickle, not a wait
    }
    let records = receiver.received().records();
    assert!(
        alert_records(&records, "redis-hit-ratio", "resolved").is_empty(),
        "a quiet batch resolved the alert: {records:?}"
    );
    assert_eq!(firing(&records, "redis-hit-ratio").len(), 1, "{records:?}");

    // Enough lookups, nearly all hits: the next window resolves it.
    gets(&mut conn, "present", 2000);
    let (resolved, _) = receiver
        .wait_for(Duration::from_secs(20), |r| {
            !alert_records(&r.records(), "redis-hit-ratio", "resolved").is_empty()
        })
        .await;
    assert!(resolved, "not resolved by hits; log:\n{}", agent.log());
}

async fn pg() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(PG_URL).await.unwrap()
}

async fn pg_number(sql: &str) -> f64 {
    let mut conn = pg().await;
    let v: f64 = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_metrics_match_pg_stat_and_plugins_fire() {
    let table = format!("vigil_seqscan_{}", std::process::id());
    let mut conn = pg().await;
    sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE TABLE {table} (id int, v int)"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!(
        "INSERT INTO {table} SELECT g, g % 100 FROM generate_series(1, 5000) g"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    for i in 0..30 {
        let _: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE v = $1"))
            .bind(i)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap(); // a closing backend flushes its statistics
    let seq_sql = format!(
        "SELECT coalesce((SELECT seq_scan::float8 FROM pg_stat_user_tables WHERE relname = '{table}'), 0)"
    );
    for _ in 0..50 {
        if pg_number(&seq_sql).await >= 30.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let commits_sql = "SELECT xact_commit::float8 FROM pg_stat_database WHERE datname = 'test'";
    let commits_before = pg_number(commits_sql).await;

    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("pg-connection-saturation", PG_CONNECTION_SATURATION)
        .unwrap();
    ws.add_plugin("pg-slow-query", PG_SLOW_QUERY).unwrap();
    let extra = format!(
        "[[collect.postgres]]\nname = \"main\"\nurl = \"{PG_URL}\"\ntop_n = 1000\n\
         [plugins.settings.pg-connection-saturation]\nmax_ratio = 0.0\n"
    );
    let (received, log) = run_once(&receiver, &ws, &extra).await;
    let seq_after = pg_number(&seq_sql).await;
    let commits_after = pg_number(commits_sql).await;

    assert_eq!(
        value(&received, "postgresql.up", "main"),
        Some(1.0),
        "{log}"
    );
    let scans = received.latest_points("postgresql.sequential_scans");
    let ours = scans
        .iter()
        .find(|p| p.attributes.get("postgresql.table.name") == Some(&table))
        .expect("our table is reported");
    assert_eq!(
        ours.value, seq_after,
        "sequential scans match pg_stat_user_tables"
    );
    assert!(ours.value >= 30.0);
    assert_eq!(ours.attributes["db.namespace"], "test");
    let rows = received.latest_points("postgresql.table.seq_rows_read");
    let rows = rows
        .iter()
        .find(|p| p.attributes.get("postgresql.table.name") == Some(&table))
        .unwrap();
    assert_eq!(
        rows.value,
        ours.value * 5000.0,
        "every scan read the whole table"
    );

    let commits = received.latest_points("postgresql.commits");
    let test_db = commits
        .iter()
        .find(|p| p.attributes["db.namespace"] == "test")
        .unwrap();
    assert!(
        test_db.value >= commits_before && test_db.value <= commits_after,
        "{commits_before} <= {} <= {commits_after}",
        test_db.value
    );
    // Named like the OpenTelemetry Collector's postgresql receiver (its dashboards work).
    assert_eq!(test_db.unit, "1", "postgresql.commits unit");
    let locks = received.latest_points("postgresql.database.locks");
    assert!(
        !locks.is_empty() && locks.iter().all(|p| p.attributes.contains_key("mode")),
        "{locks:?}"
    );
    let max = value(&received, "postgresql.connection.max", "main").unwrap();
    assert_eq!(
        max,
        pg_number("SELECT setting::float8 FROM pg_settings WHERE name = 'max_connections'").await
    );
    assert!(value(&received, "postgresql.connection.count", "main").unwrap() >= 1.0);
    assert!(!received.latest_points("postgresql.db_size").is_empty());
    assert!(
        !received
            .latest_points("postgresql.bgwriter.checkpoint.count")
            .is_empty()
    );

    let records = received.records();
    let saturation = firing(&records, "pg-connection-saturation");
    assert_eq!(saturation.len(), 1);
    assert!(
        saturation[0].attributes["vigil.alert.summary"].contains(&format!("of {max} connections"))
    );

    // pg_stat_statements is not preloaded here: one clear message says how to enable it.
    assert_eq!(
        log.matches("pg_stat_statements is unavailable").count(),
        1,
        "{log}"
    );
    assert!(log.contains("shared_preload_libraries"), "{log}");

    let mut conn = pg().await;
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// Issue 10: `pg-seqscan` judged lifetime totals, so its alert could never resolve.
/// Sequential scans of a table of the test's own fire it; when they stop, it resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_seqscan_fires_while_scans_run_and_resolves_when_they_stop() {
    let table = format!("vigil_seqscan_stop_{}", std::process::id());
    let mut conn = pg().await;
    sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!(
        "CREATE TABLE {table} AS SELECT g AS id, g % 100 AS v FROM generate_series(1, 5000) g"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("pg-seqscan", PG_SEQSCAN).unwrap();
    let extra = format!(
        "[[collect.postgres]]\nname = \"main\"\nurl = \"{PG_URL}\"\ninterval = \"500ms\"\ntop_n = 1000\n\
         [plugins.settings.pg-seqscan]\nmin_seq_scans = 10\nmin_rows_per_scan = 4000\nwindow_s = 2\n"
    );
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, "grpc", "500ms", &extra))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &config).unwrap();

    // Load: batches of sequential scans, each on a connection closed after it (a
    // closing backend flushes its statistics), until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, table) = (stop.clone(), table.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut conn = pg().await;
                for i in 0..10 {
                    let _: i64 =
                        sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE v = $1"))
                            .bind(i)
                            .fetch_one(&mut conn)
                            .await
                            .unwrap();
                }
                conn.close().await.unwrap();
            }
        })
    };
    let ours = |records: &[Record], state: &str| {
        records
            .iter()
            .filter(|r| {
                r.attributes.get("vigil.alert.rule").map(String::as_str) == Some("pg-seqscan-heavy")
                    && r.attributes["vigil.alert.state"] == state
                    && r.attributes["vigil.alert.key"].contains(&table)
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    let (fired, received) = receiver
        .wait_for(Duration::from_secs(60), |r| {
            !ours(&r.records(), "firing").is_empty()
        })
        .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    assert!(
        fired,
        "no seq-scan alert for {table}; log:\n{}",
        agent.log()
    );
    let alert = &ours(&received.records(), "firing")[0];
    assert_eq!(alert.attributes["vigil.alert.label.rows_per_scan"], "5000");
    assert!(
        alert.attributes["vigil.alert.summary"].contains("reading 5000 rows each"),
        "{:?}",
        alert.attributes
    );

    let (resolved, received) = receiver
        .wait_for(Duration::from_secs(60), |r| {
            !ours(&r.records(), "resolved").is_empty()
        })
        .await;
    let mut conn = pg().await;
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(
        resolved,
        "the alert did not resolve after the scans stopped: {:?}\n{}",
        ours(&received.records(), "firing"),
        agent.log()
    );
}

#[test]
fn slow_query_plugin_reports_statements_over_the_limit() {
    let ws = Workspace::new().unwrap();
    let plugin = ws.add_plugin("pg-slow-query", PG_SLOW_QUERY).unwrap();
    let config = ws
        .write_config("[plugins.settings.pg-slow-query]\nmax_mean_ms = 50\nmin_calls = 10\n")
        .unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/fixtures/pg-statements.json"
    );
    let output = plugin_test(VIGIL, &plugin, fixture, &config).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let findings: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let findings = findings.as_array().unwrap();
    assert_eq!(
        findings.len(),
        1,
        "only the slow statement with enough calls: {findings:?}"
    );
    assert_eq!(findings[0]["labels"]["postgresql.query.id"], "42");
    assert_eq!(findings[0]["value"], 120.0);
}

async fn mysql_status(name: &str) -> f64 {
    let mut conn = sqlx::MySqlConnection::connect(MYSQL_URL).await.unwrap();
    let row = sqlx::query(&format!("SHOW GLOBAL STATUS LIKE '{name}'"))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let v: String = row.try_get(1).unwrap();
    conn.close().await.unwrap();
    v.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_metrics_match_show_global_status() {
    let before = mysql_status("Queries").await;
    let mut conn = sqlx::MySqlConnection::connect(MYSQL_URL).await.unwrap();
    for _ in 0..50 {
        let _: i64 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();

    let receiver = OtlpReceiver::http().await.unwrap();
    let ws = Workspace::new().unwrap();
    // A second instance whose login is refused: down, one warning, and its password never shown.
    let extra = format!(
        "[[collect.mysql]]\nname = \"maria\"\nurl = \"{MYSQL_URL}\"\n\
         [[collect.mysql]]\nname = \"denied\"\nurl = \"mysql://vigil_no_such_user@127.0.0.1:3306/test\"\npassword_file = \"{}\"\n",
        ws.dir.path().join("secret").display()
    );
    std::fs::write(ws.dir.path().join("secret"), "pw-4711-never-shown\n").unwrap();
    let (received, log) = run_once(&receiver, &ws, &extra).await;
    assert_eq!(value(&received, "mysql.up", "denied"), Some(0.0), "{log}");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("mysql denied"))
            .count(),
        1,
        "{log}"
    );
    assert!(log.contains("Access denied"), "{log}");
    assert!(!log.contains("pw-4711-never-shown"), "{log}");
    assert!(!format!("{:?}", received.metrics).contains("pw-4711-never-shown"));
    let after = mysql_status("Queries").await;

    assert_eq!(value(&received, "mysql.up", "maria"), Some(1.0), "{log}");
    let queries = value(&received, "mysql.query.count", "maria").unwrap();
    assert!(
        queries >= before + 50.0 && queries <= after,
        "{before} + 50 <= {queries} <= {after}"
    );
    let mut conn = sqlx::MySqlConnection::connect(MYSQL_URL).await.unwrap();
    let row = sqlx::query("SHOW GLOBAL VARIABLES LIKE 'innodb_buffer_pool_size'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let pool: String = row.try_get(1).unwrap();
    assert_eq!(
        value(&received, "mysql.buffer_pool.limit", "maria"),
        Some(pool.parse().unwrap())
    );
    let threads = received.latest_points("mysql.threads");
    assert!(
        threads
            .iter()
            .any(|p| p.attributes["kind"] == "connected" && p.value >= 1.0)
    );
    assert!(!received.latest_points("mysql.row_operations").is_empty());
    assert!(!received.latest_points("mysql.locks").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_going_down_and_up_is_tracked_without_disturbing_others() {
    let own = OwnRedis::start(free_port());
    let port = own.port;
    // A "server" that accepts connections and never answers: must time out, not stall the rest.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();

    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let extra = format!(
        "[[collect.redis]]\nname = \"main\"\nurl = \"{REDIS_URL}\"\ninterval = \"300ms\"\n\
         [[collect.redis]]\nname = \"flaky\"\nurl = \"redis://127.0.0.1:{port}\"\ninterval = \"300ms\"\ntimeout = \"1s\"\n\
         [[collect.redis]]\nname = \"silent\"\nurl = \"redis://127.0.0.1:{silent_port}\"\ninterval = \"300ms\"\ntimeout = \"500ms\"\n"
    );
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, "grpc", "300ms", &extra))
        .unwrap();
    let mut agent = AgentProcess::start(VIGIL, &config).unwrap();

    let up = |r: &Received, name: &str| value(r, "redis.up", name);
    let (ok, r) = receiver
        .wait_for(Duration::from_secs(20), |r| {
            up(r, "flaky") == Some(1.0)
                && up(r, "main") == Some(1.0)
                && up(r, "silent") == Some(0.0)
        })
        .await;
    assert!(ok, "{:?}\n{}", r.latest_points("redis.up"), agent.log());

    drop(own);
    let (ok, r) = receiver
        .wait_for(Duration::from_secs(20), |r| up(r, "flaky") == Some(0.0))
        .await;
    assert!(ok, "{:?}\n{}", r.latest_points("redis.up"), agent.log());
    assert_eq!(
        up(&r, "main"),
        Some(1.0),
        "the other instance is unaffected"
    );
    let rounds_during_outage = r.latest_points("vigil.collector.rounds");
    let system_rounds = rounds_during_outage
        .iter()
        .find(|p| p.attributes["vigil.collector"] == "system")
        .unwrap()
        .value;

    let _again = OwnRedis::start(port);
    let (ok, r) = receiver
        .wait_for(Duration::from_secs(30), |r| up(r, "flaky") == Some(1.0))
        .await;
    assert!(
        ok,
        "no recovery: {:?}\n{}",
        r.latest_points("redis.up"),
        agent.log()
    );
    let system_rounds_after = r
        .latest_points("vigil.collector.rounds")
        .iter()
        .find(|p| p.attributes["vigil.collector"] == "system")
        .unwrap()
        .value;
    assert!(
        system_rounds_after > system_rounds,
        "system collection kept going"
    );
    assert!(agent.is_running());

    let log = agent.log();
    let flaky_warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("redis flaky"))
        .count();
    assert_eq!(flaky_warnings, 1, "one warning per outage:\n{log}");
    assert!(
        log.contains("redis flaky") && log.contains("reachable again"),
        "{log}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("redis silent"))
            .count(),
        1,
        "{log}"
    );
    drop(silent);
}

/// The `/status` entry of collector `name` (the endpoint has no token here).
async fn collector_status(
    addr: std::net::SocketAddr,
    name: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let entry = |body: &str| {
        serde_json::from_str::<serde_json::Value>(body)
            .map(|v| v["collectors"][name].clone())
            .unwrap_or(serde_json::Value::Null)
    };
    let answer = get_until(addr, "/status", None, Duration::from_secs(40), |a| {
        a.status == 200 && done(&entry(&a.body))
    })
    .await
    .unwrap();
    entry(&answer.body)
}

fn number(entry: &serde_json::Value, field: &str) -> u64 {
    entry[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {entry}"))
}

/// The start time of the cumulative series `metric` of instance `instance` (or of the
/// point whose `vigil.collector` is `instance`), in the latest export that has it.
fn start_of(received: &Received, metric: &str, key: &str, value: &str) -> Option<(u64, f64)> {
    received
        .latest_points(metric)
        .iter()
        .find(|p| p.attributes.get(key).map(String::as_str) == Some(value))
        .map(|p| (p.start_time_unix_nano, p.value))
}

/// Issue 10: during an outage `/status` said `"up": true, "failures": 0` and
/// `vigil.collector.errors` was never exported; a restarted server kept the old start
/// time of its cumulative series. A private redis-server is killed, then started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_down_on_status_and_its_restart_starts_new_series() {
    let own = OwnRedis::start(free_port());
    let port = own.port;
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let addr = free_local_addr().unwrap();
    let extra = format!(
        "[[collect.redis]]\nname = \"flaky\"\nurl = \"redis://127.0.0.1:{port}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n\
         [http]\nlisten = \"{addr}\"\n"
    );
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, "grpc", "500ms", &extra))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &config).unwrap();
    let name = "redis:flaky";

    // Traffic, so the server's command counter is well above what it restarts at.
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_connection().unwrap();
    for _ in 0..300 {
        let _: String = redis::cmd("PING").query(&mut conn).unwrap();
    }
    drop(conn);
    let (ok, before) = receiver
        .wait_for(Duration::from_secs(30), |r| {
            start_of(r, "redis.commands.processed", "vigil.instance", "flaky")
                .is_some_and(|(_, v)| v >= 300.0)
                && start_of(r, "vigil.collector.rounds", "vigil.collector", name).is_some()
        })
        .await;
    assert!(ok, "{}", agent.log());
    let (commands_start, commands_before) = start_of(
        &before,
        "redis.commands.processed",
        "vigil.instance",
        "flaky",
    )
    .unwrap();
    let (rounds_start, _) =
        start_of(&before, "vigil.collector.rounds", "vigil.collector", name).unwrap();
    let up = collector_status(addr, name, |c| c["up"] == true).await;
    assert_eq!(up["up"], true, "{up}\n{}", agent.log());
    assert_eq!(number(&up, "failures"), 0, "{up}");

    drop(own);
    // Rounds that succeeded by the time the server is dead: at most the one in flight
    // may still finish well, the next one must report the outage.
    let rounds_at_kill = number(&collector_status(addr, name, |_| true).await, "rounds");
    let down = collector_status(addr, name, |c| c["up"] == false).await;
    assert_eq!(down["up"], false, "{down}\n{}", agent.log());
    assert!(number(&down, "failures") >= 1, "{down}");
    assert!(
        number(&down, "rounds") <= rounds_at_kill + 1,
        "the outage shows within two rounds: {down} (rounds at the kill: {rounds_at_kill})"
    );
    let error = down["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("redis flaky") && error.contains("unreachable"),
        "{down}"
    );
    assert!(down["last_error_at"].is_string(), "{down}");

    // Through OTLP: the failed rounds are counted, and redis.up = 0 is still exported.
    let (ok, r) = receiver
        .wait_for(Duration::from_secs(30), |r| {
            value(r, "redis.up", "flaky") == Some(0.0)
                && start_of(r, "vigil.collector.errors", "vigil.collector", name)
                    .is_some_and(|(_, v)| v >= 1.0)
        })
        .await;
    assert!(
        ok,
        "up {:?}, errors {:?}\n{}",
        r.latest_points("redis.up"),
        r.latest_points("vigil.collector.errors"),
        agent.log()
    );

    let _again = OwnRedis::start(port);
    let failures_at_restart = number(&collector_status(addr, name, |_| true).await, "failures");
    let back = collector_status(addr, name, |c| c["up"] == true).await;
    assert_eq!(back["up"], true, "{back}\n{}", agent.log());
    assert!(
        number(&back, "failures") <= failures_at_restart + 1,
        "the recovery shows within two rounds: {back} (failures at the restart: {failures_at_restart})"
    );
    assert!(back["last_success"].is_string(), "{back}");

    // The restarted server's counters began again: a new start time for its series,
    // while the agent's own counters keep theirs.
    let (ok, after) = receiver
        .wait_for(Duration::from_secs(30), |r| {
            value(r, "redis.up", "flaky") == Some(1.0)
                && start_of(r, "redis.commands.processed", "vigil.instance", "flaky")
                    .is_some_and(|(_, v)| v < commands_before)
        })
        .await;
    assert!(ok, "{}", agent.log());
    let (commands_start_after, commands_after) = start_of(
        &after,
        "redis.commands.processed",
        "vigil.instance",
        "flaky",
    )
    .unwrap();
    assert!(
        commands_start_after > commands_start,
        "redis.commands.processed went from {commands_before} to {commands_after}, start time {commands_start} -> {commands_start_after}"
    );
    let (rounds_start_after, _) =
        start_of(&after, "vigil.collector.rounds", "vigil.collector", name).unwrap();
    assert_eq!(
        rounds_start_after, rounds_start,
        "vigil's own series did not restart"
    );
    assert_eq!(
        agent.log().matches("went down (server restart?)").count(),
        1,
        "{}",
        agent.log()
    );
}

#[test]
fn check_rejects_a_bad_dsn() {
    let ws = Workspace::new().unwrap();
    let config = ws
        .write_config("[[collect.postgres]]\nname = \"db\"\nurl = \"postgres://vigil:s3cret@db:notaport/app\"\n")
        .unwrap();
    let output = vigil(VIGIL)
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        text.contains("collect.postgres[0].url") && text.contains("is not a valid postgres URL"),
        "{text}"
    );
    assert!(
        !text.contains("s3cret"),
        "the password must not be printed: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_statements_from_pg_stat_statements_fire_the_plugin() {
    let own = PrivatePostgres::start();
    let mut conn = sqlx::PgConnection::connect(&own.url()).await.unwrap();
    sqlx::query("CREATE EXTENSION pg_stat_statements")
        .execute(&mut conn)
        .await
        .unwrap();
    for _ in 0..12 {
        sqlx::query("SELECT pg_sleep(0.06)")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    for _ in 0..20 {
        sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();

    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("pg-slow-query", PG_SLOW_QUERY).unwrap();
    let extra = format!(
        "[[collect.postgres]]\nname = \"own\"\nurl = \"{}\"\n[plugins.settings.pg-slow-query]\nmax_mean_ms = 50\nmin_calls = 10\n",
        own.url()
    );
    let (received, log) = run_once(&receiver, &ws, &extra).await;
    assert!(!log.contains("pg_stat_statements is unavailable"), "{log}");

    let means = received.latest_points("postgresql.query.mean_time");
    let sleep = means
        .iter()
        .find(|p| p.attributes["db.query.text"].contains("pg_sleep"))
        .unwrap_or_else(|| panic!("no pg_sleep statement in {means:?}"));
    assert!(
        sleep.value >= 0.06 && sleep.value < 1.0,
        "mean {} s",
        sleep.value
    );
    let calls = received.latest_points("postgresql.query.calls");
    let sleep_calls = calls
        .iter()
        .find(|p| p.attributes["postgresql.query.id"] == sleep.attributes["postgresql.query.id"])
        .unwrap();
    assert_eq!(sleep_calls.value, 12.0);

    let records = received.records();
    let slow = firing(&records, "pg-slow-query");
    assert_eq!(slow.len(), 1, "only the slow statement fires: {slow:?}");
    assert!(slow[0].attributes["vigil.alert.label.db.query.text"].contains("pg_sleep"));
}

/// `top_n` is honoured: PostgreSQL reports that many tables, Redis that many commands;
/// MySQL/MariaDB has no per-object metrics, so `vigil check` refuses a `top_n` there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_n_limits_per_object_series_and_is_refused_for_mysql() {
    let tables: Vec<String> = (0..3)
        .map(|i| format!("vigil_top_n_{i}_{}", std::process::id()))
        .collect();
    let mut conn = pg().await;
    for table in &tables {
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {table} AS SELECT g AS id FROM generate_series(1, 10) g"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut redis_conn = client.get_connection().unwrap();
    let _: String = redis::cmd("PING").query(&mut redis_conn).unwrap();
    let _: Option<String> = redis::cmd("GET")
        .arg("vigil-top-n")
        .query(&mut redis_conn)
        .unwrap();

    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let extra = format!(
        "[[collect.postgres]]\nname = \"main\"\nurl = \"{PG_URL}\"\ntop_n = 1\n\
         [[collect.redis]]\nname = \"main\"\nurl = \"{REDIS_URL}\"\ntop_n = 2\n"
    );
    let (received, log) = run_once(&receiver, &ws, &extra).await;
    for table in &tables {
        sqlx::query(&format!("DROP TABLE {table}"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let scanned = received.latest_points("postgresql.sequential_scans");
    assert_eq!(scanned.len(), 1, "top_n = 1 table: {scanned:?}\n{log}");
    let commands: std::collections::BTreeSet<_> = received
        .latest_points("redis.cmd.calls")
        .iter()
        .map(|p| p.attributes["cmd"].clone())
        .collect();
    assert_eq!(commands.len(), 2, "top_n = 2 commands: {commands:?}");

    let config = ws
        .write_config(&format!(
            "[[collect.mysql]]\nname = \"maria\"\nurl = \"{MYSQL_URL}\"\ntop_n = 5\n"
        ))
        .unwrap();
    let output = vigil(VIGIL)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("collect.mysql[0].top_n") && text.contains("not supported"),
        "{text}"
    );
}

/// A MariaDB user of the test's own, dropped when this guard is.
struct MariaUser(String);

impl Drop for MariaUser {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::MySqlConnection::connect(MYSQL_URL).await {
                    let _ = sqlx::query(&format!("DROP USER IF EXISTS '{name}'@'%'"))
                        .execute(&mut conn)
                        .await;
                }
            })
        })
        .join();
    }
}

/// A password login that really checks the password (MariaDB, `mysql_native_password`;
/// PostgreSQL here trusts every local login, so it could not tell): the password from
/// `password_env` logs in, a wrong one from `password_file` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_login_succeeds_and_a_wrong_password_is_refused() {
    let user = MariaUser(format!("vigil_pw_{}", std::process::id()));
    let password = format!("pw-{}-right", std::process::id());
    let mut conn = sqlx::MySqlConnection::connect(MYSQL_URL).await.unwrap();
    sqlx::query(&format!("DROP USER IF EXISTS '{}'@'%'", user.0))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!(
        "CREATE USER '{}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{password}')",
        user.0
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    std::fs::write(ws.dir.path().join("wrong"), "pw-wrong\n").unwrap();
    let url = format!("mysql://{}@127.0.0.1:3306/", user.0);
    let extra = format!(
        "[[collect.mysql]]\nname = \"right\"\nurl = \"{url}\"\npassword_env = \"VIGIL_TEST_DB_PASSWORD\"\n\
         [[collect.mysql]]\nname = \"wrong\"\nurl = \"{url}\"\npassword_file = \"{}\"\n",
        ws.dir.path().join("wrong").display()
    );
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, "grpc", "10s", &extra))
        .unwrap();
    let output = tokio::task::spawn_blocking(move || {
        vigil(VIGIL)
            .env("VIGIL_TEST_DB_PASSWORD", password)
            .args(["run", "--once", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let received = receiver.received();
    assert_eq!(value(&received, "mysql.up", "right"), Some(1.0), "{log}");
    assert!(
        value(&received, "mysql.uptime", "right").is_some_and(|v| v > 0.0),
        "the logged-in round read the server's status\n{log}"
    );
    assert_eq!(value(&received, "mysql.up", "wrong"), Some(0.0), "{log}");
    assert!(
        log.contains("mysql wrong") && log.contains("Access denied"),
        "{log}"
    );
    assert!(
        !log.contains("pw-wrong") && !log.contains("-right"),
        "{log}"
    );
}
