//! End to end: tuning decisions made by the engine against the real PostgreSQL, MariaDB
//! and Redis, then `vigil actions list` and `vigil actions revert` (the real binary) on
//! the audit file they left. Every setting changed here is one no other test reads, and a
//! guard restores it on drop.

use std::path::Path;
use std::process::Output;
use std::time::SystemTime;

use vigil::config::Config;
use vigil::tuning::{Action, Proposal, Target, TuningEngine, Verdict};
use vigil_testkit::agent::{Workspace, output_text, run_to_end};
use vigil_testkit::servers::{
    MYSQL_URL, MysqlGuard, PG_URL, PgGuard, REDIS_URL, RedisGuard, mysql_get, pg_auto_conf,
    pg_show, redis_get, redis_set,
};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// Writes a config with the three servers, the audit file `actions.jsonl` beside it and
/// `extra`; returns it loaded as the binary loads it.
fn write_config(ws: &Workspace, extra: &str) -> (std::path::PathBuf, Config) {
    let path = ws
        .write_config(&format!(
            r#"
[collect.system]
enabled = false
[[collect.redis]]
name = "main"
url = "{REDIS_URL}"
[[collect.postgres]]
name = "pg"
url = "{PG_URL}"
[[collect.mysql]]
name = "db"
url = "{MYSQL_URL}"
[tuning]
audit_file = "actions.jsonl"
[tuning.policies.p]
mode = "enforce"
{extra}
"#
        ))
        .unwrap();
    let config = Config::load(&path).unwrap();
    (path, config)
}

fn proposal(target: Target, instance: &str, parameter: &str, value: &str) -> Proposal {
    Proposal {
        policy: "p".into(),
        action: Action::new(target, instance, parameter, value),
        reason: "e2e".into(),
        revert_if: None,
        proposed_at: SystemTime::now(),
    }
}

/// `vigil actions ARGS --config CONFIG` (the real binary), run to its end.
pub(crate) fn actions(config: &Path, args: &[&str]) -> Output {
    let mut full = vec!["actions"];
    full.extend_from_slice(args);
    full.extend(["--config", config.to_str().unwrap()]);
    run_to_end(VIGIL, &full).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_revert_restores_postgres_exactly() {
    let name = "autovacuum_vacuum_cost_limit";
    let _guard = PgGuard::save(PG_URL, name).await;
    let had_entry = pg_auto_conf(PG_URL, name).await;
    let before = pg_show(PG_URL, name).await;
    let target = if before == "750" { "751" } else { "750" };
    let ws = Workspace::new().unwrap();
    let (path, config) = write_config(
        &ws,
        &format!(
            "[[tuning.allow]]\ntarget = \"postgres\"\ninstance = \"pg\"\nparameter = \"{name}\"\nmin = -1\nmax = 10000\n"
        ),
    );
    let mut engine = TuningEngine::new(&config, None, None);
    let d = engine
        .decide(proposal(Target::Postgres, "pg", name, target))
        .await;
    assert_eq!(d.verdict, Verdict::Applied, "{}", d.verdict_reason);
    assert_eq!(pg_show(PG_URL, name).await, target);
    assert_eq!(pg_auto_conf(PG_URL, name).await.as_deref(), Some(target));
    let id = d.id.unwrap().to_string();

    let list = actions(&path, &["list"]);
    let text = output_text(&list);
    assert!(list.status.success(), "{text}");
    assert!(
        text.contains(&format!("postgres pg {name} = {target}"))
            && text.contains("applied")
            && text.contains(&format!("{before} -> {target}")),
        "{text}"
    );

    let revert = actions(&path, &["revert", &id]);
    let text = output_text(&revert);
    assert!(revert.status.success(), "{text}");
    assert!(text.contains(&format!("reverted decision {id}")), "{text}");
    assert_eq!(pg_show(PG_URL, name).await, before, "the value before");
    assert_eq!(
        pg_auto_conf(PG_URL, name).await,
        had_entry,
        "postgresql.auto.conf as it was"
    );

    let again = actions(&path, &["revert", &id]);
    let text = output_text(&again);
    assert!(!again.status.success(), "{text}");
    assert!(text.contains("already reverted"), "{text}");

    let json = actions(&path, &["list", "--json"]);
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "the change and its revert: {rows:?}");
    assert_eq!(rows[0]["status"], "applied");
    assert_eq!(rows[0]["before"], before.as_str());
    assert_eq!(rows[0]["reverted_by"], rows[1]["id"]);
    assert_eq!(rows[1]["kind"], "revert");
    assert_eq!(rows[1]["reverts"], rows[0]["id"]);
    assert_eq!(rows[1]["status"], "applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_revert_refuses_a_setting_changed_since_unless_forced() {
    let name = "hash-max-listpack-entries";
    let _guard = RedisGuard::save(REDIS_URL, name);
    let before = redis_get(REDIS_URL, name);
    let n: u64 = before.parse().unwrap();
    let ws = Workspace::new().unwrap();
    let (path, config) = write_config(
        &ws,
        &format!(
            "[[tuning.allow]]\ntarget = \"redis\"\ninstance = \"main\"\nparameter = \"{name}\"\nmin = 1\nmax = 100000\n"
        ),
    );
    let mut engine = TuningEngine::new(&config, None, None);
    let d = engine
        .decide(proposal(Target::Redis, "main", name, &(n + 2).to_string()))
        .await;
    assert_eq!(d.verdict, Verdict::Applied, "{}", d.verdict_reason);
    let id = d.id.unwrap().to_string();
    // Someone else changes it afterwards.
    redis_set(REDIS_URL, name, &(n + 5).to_string());
    let refused = actions(&path, &["revert", &id]);
    let text = output_text(&refused);
    assert!(!refused.status.success(), "{text}");
    assert!(
        text.contains("changed since") && text.contains("--force"),
        "{text}"
    );
    assert_eq!(
        redis_get(REDIS_URL, name),
        (n + 5).to_string(),
        "left alone"
    );
    let forced = actions(&path, &["revert", &id, "--force"]);
    let text = output_text(&forced);
    assert!(forced.status.success(), "{text}");
    assert_eq!(redis_get(REDIS_URL, name), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_revert_restores_a_mysql_variable() {
    let name = "delayed_queue_size";
    let _guard = MysqlGuard::save(MYSQL_URL, name).await;
    let before = mysql_get(MYSQL_URL, name).await;
    let target = if before == "2000" { "2001" } else { "2000" };
    let ws = Workspace::new().unwrap();
    let (path, config) = write_config(
        &ws,
        &format!(
            "[[tuning.allow]]\ntarget = \"mysql\"\ninstance = \"db\"\nparameter = \"{name}\"\nmin = 1\nmax = \"4K\"\n"
        ),
    );
    let mut engine = TuningEngine::new(&config, None, None);
    let d = engine
        .decide(proposal(Target::Mysql, "db", name, target))
        .await;
    assert_eq!(d.verdict, Verdict::Applied, "{}", d.verdict_reason);
    assert_eq!(mysql_get(MYSQL_URL, name).await, target);
    let revert = actions(&path, &["revert", &d.id.unwrap().to_string()]);
    assert!(revert.status.success(), "{}", output_text(&revert));
    assert_eq!(mysql_get(MYSQL_URL, name).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_list_reads_past_a_torn_line_and_filters_by_time() {
    let ws = Workspace::new().unwrap();
    let (path, config) = write_config(
        &ws,
        "[[tuning.allow]]\ntarget = \"redis\"\ninstance = \"main\"\nparameter = \"lfu-log-factor\"\nvalues = [\"1\"]\n",
    );
    let mut engine = TuningEngine::new(&config, None, None);
    // Refused without touching the server: not on the allowlist, not an allowed value.
    engine
        .decide(proposal(Target::Redis, "main", "hz", "20"))
        .await;
    engine
        .decide(proposal(Target::Redis, "main", "lfu-log-factor", "3"))
        .await;
    let audit = config.tuning.audit_file.clone();
    // A crash mid-write left half a line.
    let mut text = std::fs::read_to_string(&audit).unwrap();
    text.push_str("{\"id\":3,\"time\":\"2026-11-");
    std::fs::write(&audit, &text).unwrap();

    let list = actions(&path, &["list"]);
    let out = output_text(&list);
    assert!(list.status.success(), "{out}");
    assert!(
        out.contains("redis main hz = 20") && out.contains("not on the allowlist"),
        "{out}"
    );
    assert!(out.contains("not one of the allowed values"), "{out}");
    let future = actions(&path, &["list", "--since", "2099-01-01T00:00:00Z"]);
    assert!(
        output_text(&future).contains("(no decisions)"),
        "{}",
        output_text(&future)
    );
    let recent = actions(&path, &["list", "--since", "1h", "--json"]);
    assert_eq!(String::from_utf8_lossy(&recent.stdout).lines().count(), 2);

    // The next writer cuts the torn line and continues the ids.
    let mut restarted = TuningEngine::new(&config, None, None);
    let d = restarted
        .decide(proposal(Target::Redis, "main", "maxmemory", "1gb"))
        .await;
    assert_eq!(d.id, Some(3));
    let lines = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(lines.lines().count(), 3, "{lines}");
    assert!(
        lines
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );

    let bad = actions(&path, &["list", "--since", "yesterday"]);
    assert!(!bad.status.success());
    assert!(output_text(&bad).contains("RFC 3339"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_changes_cannot_be_reverted_from_the_cli() {
    let ws = Workspace::new().unwrap();
    let (path, _) = write_config(&ws, "");
    let audit = ws.dir.path().join("actions.jsonl");
    std::fs::write(
        &audit,
        "{\"id\":1,\"time\":\"2026-11-26T09:00:00.000Z\",\"status\":\"applying\",\"kind\":\"proposal\",\"policy\":\"p\",\"target\":\"collector\",\"instance\":\"system\",\"parameter\":\"interval-ms\",\"value\":\"30000\",\"before\":\"10000\",\"restore\":{\"set\":\"10000\"}}\n{\"id\":1,\"time\":\"2026-11-26T09:00:00.001Z\",\"status\":\"applied\",\"after\":\"30000\"}\n{\"id\":2,\"time\":\"2026-11-26T09:01:00.000Z\",\"status\":\"applying\",\"kind\":\"proposal\",\"policy\":\"p\",\"target\":\"redis\",\"instance\":\"main\",\"parameter\":\"hz\",\"value\":\"20\",\"before\":\"10\",\"restore\":{\"set\":\"10\"}}\n",
    )
    .unwrap();
    let out = actions(&path, &["revert", "1"]);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("return to the configured interval when the agent restarts"),
        "{text}"
    );
    // Killed between `applying` and its outcome: shown as such, and not revertable blindly.
    let list = actions(&path, &["list"]);
    let text = output_text(&list);
    assert!(
        text.contains("unknown (the agent stopped while applying)"),
        "{text}"
    );
    let unknown = actions(&path, &["revert", "2"]);
    let text = output_text(&unknown);
    assert!(!unknown.status.success(), "{text}");
    assert!(
        text.contains("is not an applied change") && text.contains("--force"),
        "{text}"
    );
    let missing = actions(&path, &["revert", "9"]);
    assert!(output_text(&missing).contains("there is no decision 9"));
}
