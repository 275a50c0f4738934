//! The PostgreSQL advisor end to end, each test on a private PostgreSQL of its own
//! (pg_stat_statements preloaded, autovacuum off so dead rows stay until vigil acts): the
//! maintenance metrics, the pg-advisor policy (built from source) proposing VACUUM and an
//! index, the index verified with HypoPG, created concurrently in enforce mode and dropped
//! by `vigil actions revert`, and a useless index refused.

use sqlx::{Connection, PgConnection, Row};
use vigil_testkit::agent::{Workspace, output_text, run_to_end};
use vigil_testkit::otlp::{OtlpReceiver, Point, Received};
use vigil_testkit::plugins::PG_ADVISOR;
use vigil_testkit::postgres::PrivatePostgres;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// Runs `vigil run --once` with `extra` config and returns what the receiver got.
async fn run_once(receiver: &OtlpReceiver, ws: &Workspace, extra: &str) -> Received {
    vigil_testkit::agent::run_once(VIGIL, receiver, ws, extra)
        .await
        .0
}

/// The newest point of `metric` for table `table` (and `state`, when given).
fn table_point(
    received: &Received,
    metric: &str,
    table: &str,
    state: Option<&str>,
) -> Option<Point> {
    received.latest_points(metric).into_iter().find(|p| {
        p.attributes
            .get("postgresql.table.name")
            .map(String::as_str)
            == Some(table)
            && state.is_none_or(|s| p.attributes.get("state").map(String::as_str) == Some(s))
    })
}

/// Dead rows, rows changed since ANALYZE and the vacuum/analyze counts and ages of a table,
/// as pg_stat_user_tables has them, before and after a VACUUM ANALYZE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_metrics_follow_pg_stat_user_tables() {
    let pg = PrivatePostgres::start();
    let mut conn = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    for sql in [
        "CREATE TABLE bloated AS SELECT g AS id, g % 10 AS grp FROM generate_series(1, 2000) g",
        "UPDATE bloated SET grp = grp + 1 WHERE id <= 500",
        "DELETE FROM bloated WHERE id > 1500",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    // Table statistics reach shared memory at most once a second unless forced.
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut conn)
        .await
        .unwrap();

    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let extra = format!(
        "[[collect.postgres]]\nname = \"own\"\nurl = \"{}\"\n",
        pg.url()
    );
    let received = run_once(&receiver, &ws, &extra).await;
    let dead = table_point(&received, "postgresql.rows", "bloated", Some("dead"))
        .unwrap_or_else(|| panic!("{:?}", received.latest_points("postgresql.rows")));
    assert_eq!(dead.value, 1000.0, "500 updated + 500 deleted rows");
    let live = table_point(&received, "postgresql.rows", "bloated", Some("live")).unwrap();
    assert_eq!(live.value, 1500.0);
    let changed = table_point(
        &received,
        "postgresql.table.modifications_since_analyze",
        "bloated",
        None,
    )
    .unwrap();
    assert_eq!(
        changed.value, 3000.0,
        "2000 inserted + 500 updated + 500 deleted"
    );
    assert_eq!(
        table_point(&received, "postgresql.table.vacuum.count", "bloated", None)
            .unwrap()
            .value,
        0.0
    );
    assert!(
        table_point(&received, "postgresql.table.vacuum.age", "bloated", None).is_none(),
        "never vacuumed: no age"
    );

    sqlx::query("VACUUM (ANALYZE) bloated")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut conn)
        .await
        .unwrap();
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let received = run_once(&receiver, &ws, &extra).await;
    let dead = table_point(&received, "postgresql.rows", "bloated", Some("dead")).unwrap();
    assert_eq!(dead.value, 0.0);
    for metric in [
        "postgresql.table.vacuum.count",
        "postgresql.table.analyze.count",
    ] {
        assert_eq!(
            table_point(&received, metric, "bloated", None)
                .unwrap()
                .value,
            1.0,
            "{metric}"
        );
    }
    let age = table_point(&received, "postgresql.table.vacuum.age", "bloated", None).unwrap();
    assert!(age.value >= 0.0 && age.value < 3600.0, "{age:?}");
    assert_eq!(
        table_point(
            &received,
            "postgresql.table.modifications_since_analyze",
            "bloated",
            None
        )
        .unwrap()
        .value,
        0.0
    );
}

async fn execute(conn: &mut PgConnection, statements: &[&str]) {
    for sql in statements {
        sqlx::query(sql)
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// A workspace with the pg-advisor policy, a config collecting `pg` as instance `own`, the
/// audit file `actions.jsonl`, the policy in enforce mode and `allow` (TOML).
fn advisor_workspace(
    receiver: &OtlpReceiver,
    pg: &PrivatePostgres,
    allow: &str,
) -> (Workspace, std::path::PathBuf) {
    let ws = Workspace::new().unwrap();
    ws.add_plugin("pg-advisor", PG_ADVISOR).unwrap();
    let extra = format!(
        "[[collect.postgres]]\nname = \"own\"\nurl = \"{}\"\n\
         [tuning]\naudit_file = \"actions.jsonl\"\n\
         [tuning.policies.pg-advisor]\nmode = \"enforce\"\n{allow}",
        pg.url()
    );
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, receiver.protocol, "10s", &extra))
        .unwrap();
    (ws, config)
}

/// `vigil run --once --config CONFIG`, which must succeed.
fn run_agent_once(config: &std::path::Path) -> String {
    let output = run_to_end(
        VIGIL,
        &["run", "--once", "--config", config.to_str().unwrap()],
    )
    .unwrap();
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    text
}

/// The audited decisions (`vigil actions list --json`), one JSON object each.
fn decisions(config: &std::path::Path) -> Vec<serde_json::Value> {
    let output = run_to_end(
        VIGIL,
        &[
            "actions",
            "list",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ],
    )
    .unwrap();
    assert!(output.status.success(), "{}", output_text(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn decision<'a>(
    rows: &'a [serde_json::Value],
    parameter: &str,
    value: &str,
) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["parameter"] == parameter && r["value"] == value)
        .unwrap_or_else(|| panic!("no {parameter} {value} decision in {rows:#?}"))
}

/// Dead rows of table `bloated`, as pg_stat_user_tables has them.
async fn dead(conn: &mut PgConnection) -> f64 {
    sqlx::query("SELECT n_dead_tup::float8 FROM pg_stat_user_tables WHERE relname = 'bloated'")
        .fetch_one(conn)
        .await
        .unwrap()
        .get::<f64, _>(0)
}

/// How many indexes named `vigil_idx_orders_customer_id` exist.
async fn exists(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_indexes WHERE indexname = 'vigil_idx_orders_customer_id'",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

/// Dead rows made by updates and deletes: the advisor proposes VACUUM, the gate (enforce,
/// allowlisted) runs it, and the dead rows are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bloat_is_vacuumed_and_dead_rows_fall() {
    let pg = PrivatePostgres::start();
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    execute(
        &mut conn,
        &[
            "CREATE SCHEMA app",
            "CREATE TABLE app.bloated AS SELECT g AS id, g % 10 AS grp FROM generate_series(1, 5000) g",
            "UPDATE app.bloated SET grp = grp + 1 WHERE id <= 2000",
            "DELETE FROM app.bloated WHERE id > 4000",
            "SELECT pg_stat_force_next_flush()",
        ],
    )
    .await;
    assert_eq!(dead(&mut conn).await, 3000.0);

    let receiver = OtlpReceiver::grpc().await.unwrap();
    let (_ws, config) = advisor_workspace(
        &receiver,
        &pg,
        "[[tuning.allow]]\ntarget = \"postgres-maintenance\"\ninstance = \"own\"\nparameter = \"vacuum\"\ntables = [\"app.*\"]\n",
    );
    let log = run_agent_once(&config);
    let rows = decisions(&config);
    let vacuum = decision(&rows, "vacuum", "app.bloated");
    assert_eq!(
        vacuum["target"], "postgres-maintenance",
        "{vacuum:#}\n{log}"
    );
    assert_eq!(vacuum["status"], "applied", "{vacuum:#}\n{log}");
    assert_eq!(vacuum["before"], "3000 dead rows, 4000 live", "{vacuum:#}");
    assert_eq!(vacuum["after"], "0 dead rows, 4000 live", "{vacuum:#}");
    assert_eq!(dead(&mut conn).await, 0.0);
}

/// A missing index and a workload that scans for it: the advisor proposes the index,
/// `vigil advise` shows the verified cost drop, enforce mode creates it concurrently and
/// the statement's plan uses it, `vigil actions revert` drops it; an index on a column
/// that selects half the table is refused for too small a reduction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_index_is_created_used_and_reverted_and_a_useless_one_refused() {
    let pg = PrivatePostgres::start();
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    execute(
        &mut conn,
        &[
            "CREATE EXTENSION pg_stat_statements",
            "CREATE EXTENSION hypopg",
            "CREATE SCHEMA app",
            "CREATE TABLE app.orders (id serial PRIMARY KEY, customer_id int, status int, note text)",
            "INSERT INTO app.orders (customer_id, status, note) SELECT g % 5000, g % 2, 'n' FROM generate_series(1, 100000) g",
            "ANALYZE app.orders",
        ],
    )
    .await;
    for i in 0..20 {
        sqlx::query("SELECT * FROM app.orders WHERE customer_id = $1")
            .bind(i)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        sqlx::query("SELECT count(*) FROM app.orders WHERE status = $1")
            .bind(i % 2)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    }

    let receiver = OtlpReceiver::grpc().await.unwrap();
    let (_ws, config) = advisor_workspace(
        &receiver,
        &pg,
        "[[tuning.allow]]\ntarget = \"postgres-maintenance\"\ninstance = \"own\"\nparameter = \"create-index\"\ntables = [\"app.*\"]\ncooldown = \"0s\"\n\
         [[tuning.allow]]\ntarget = \"postgres-maintenance\"\ninstance = \"own\"\nparameter = \"drop-index\"\ntables = [\"app.*\"]\n",
    );

    // What the advisor proposes now, verified, nothing applied.
    let advise = run_to_end(
        VIGIL,
        &[
            "advise",
            "postgres",
            "--instance",
            "own",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ],
    )
    .unwrap();
    let text = output_text(&advise);
    assert!(advise.status.success(), "{text}");
    let advice: Vec<serde_json::Value> = String::from_utf8_lossy(&advise.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |object: &str| {
        advice
            .iter()
            .find(|a| a["operation"] == "create-index" && a["object"] == object)
            .unwrap_or_else(|| panic!("no index proposal on {object}: {text}"))
    };
    let good = find("app.orders (customer_id)");
    assert_eq!(good["status"], "would apply", "{good:#}");
    assert!(good["reduction"].as_f64().unwrap() > 0.9, "{good:#}");
    assert!(
        good["cost_after"].as_f64().unwrap() < good["cost_before"].as_f64().unwrap(),
        "{good:#}"
    );
    let useless = find("app.orders (status)");
    assert_eq!(useless["status"], "refused", "{useless:#}");
    assert!(
        useless["detail"]
            .as_str()
            .unwrap()
            .contains("the minimum is 50 %"),
        "{useless:#}"
    );
    let table = run_to_end(
        VIGIL,
        &[
            "advise",
            "postgres",
            "--instance",
            "own",
            "--config",
            config.to_str().unwrap(),
        ],
    )
    .unwrap();
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.starts_with("OPERATION"), "{table}");
    assert!(table.contains("app.orders (customer_id)"), "{table}");
    assert_eq!(exists(&mut conn).await, 0, "advise applies nothing");

    let log = run_agent_once(&config);
    let rows = decisions(&config);
    let created = decision(&rows, "create-index", "app.orders (customer_id)");
    assert_eq!(created["status"], "applied", "{created:#}\n{log}");
    assert_eq!(
        created["after"], "app.vigil_idx_orders_customer_id",
        "{created:#}"
    );
    let v = &created["verification"];
    assert!(
        v["cost_after"].as_f64().unwrap() < v["cost_before"].as_f64().unwrap() * 0.5,
        "{created:#}"
    );
    let refused = decision(&rows, "create-index", "app.orders (status)");
    assert_eq!(refused["status"], "refused", "{refused:#}");

    let valid: bool = sqlx::query_scalar(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'app.vigil_idx_orders_customer_id'::regclass",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(valid);
    let plan: Vec<String> =
        sqlx::query_scalar("EXPLAIN SELECT * FROM app.orders WHERE customer_id = 42")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert!(
        plan.join("\n").contains("vigil_idx_orders_customer_id"),
        "{plan:#?}"
    );

    let id = created["id"].to_string();
    let revert = run_to_end(
        VIGIL,
        &[
            "actions",
            "revert",
            &id,
            "--config",
            config.to_str().unwrap(),
        ],
    )
    .unwrap();
    assert!(revert.status.success(), "{}", output_text(&revert));
    assert_eq!(exists(&mut conn).await, 0, "the revert dropped the index");
}
