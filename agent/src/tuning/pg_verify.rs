//! Verifying an index proposal before the gate decides it, the way Dexter does: the index
//! is created hypothetically with HypoPG, and the statements the proposal names are
//! EXPLAINed with and without it. The statements are the normalized texts of
//! `pg_stat_statements` (constants replaced by `$n`), so their generic plans are compared:
//! `PREPARE` (parameter types inferred by the server) and `EXPLAIN EXECUTE` with NULLs under
//! `plan_cache_mode = force_generic_plan`. Nothing is executed and nothing is created:
//! hypothetical indexes live in this session only, and `hypopg_reset()` clears them.

use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::{Executor, Row};

use super::action::Maintenance;
use super::pg_maintenance::create_index_statement;

/// The planner's cost of the named statements without and with the proposed index.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Verification {
    /// Sum of the statements' total costs without the index.
    pub cost_before: f64,
    /// The same with the index (hypothetically).
    pub cost_after: f64,
    /// Per statement: query id, cost before, cost after.
    pub statements: Vec<(String, f64, f64)>,
}

impl Verification {
    /// The share of the cost the index removes (0 when it removes none or adds some).
    pub fn reduction(&self) -> f64 {
        if self.cost_before <= 0.0 {
            return 0.0;
        }
        (1.0 - self.cost_after / self.cost_before).max(0.0)
    }
}

/// The name of the prepared statement verification uses on its own connection.
const PREPARED: &str = "vigil_verify";

/// Verifies index `name` of `m` on `conn` (a connection of its own). `Err` says why it
/// cannot be verified: HypoPG is not installed, a statement is unknown or cannot be planned.
pub async fn verify(
    conn: &mut PgConnection,
    m: &Maintenance,
    name: &str,
) -> Result<Verification, String> {
    if m.statements.is_empty() {
        return Err("the proposal names no statements to EXPLAIN".into());
    }
    let hypopg: Option<String> =
        sqlx::query_scalar("SELECT extversion::text FROM pg_extension WHERE extname = 'hypopg'")
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| format!("cannot read pg_extension: {e}"))?;
    if hypopg.is_none() {
        return Err(
            "the hypopg extension is not installed in this database (install the package, e.g. postgresql-15-hypopg, then CREATE EXTENSION hypopg)".into(),
        );
    }
    let mut texts = Vec::new();
    for id in &m.statements {
        texts.push((id.clone(), statement_text(conn, id).await?));
    }
    conn.execute("SET plan_cache_mode = force_generic_plan")
        .await
        .map_err(|e| format!("cannot set plan_cache_mode: {e}"))?;
    let mut before = Vec::new();
    for (id, text) in &texts {
        before.push(
            generic_cost(conn, text)
                .await
                .map_err(|e| format!("statement {id}: {e}"))?,
        );
    }
    let create = create_index_statement(conn, m, name, false)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query("SELECT * FROM hypopg_create_index($1)")
        .bind(&create)
        .execute(&mut *conn)
        .await
        .map_err(|e| format!("hypopg_create_index failed: {e}"))?;
    let mut after = Vec::new();
    let mut outcome = Ok(());
    for (id, text) in &texts {
        match generic_cost(conn, text).await {
            Ok(cost) => after.push(cost),
            Err(e) => {
                outcome = Err(format!("statement {id}: {e}"));
                break;
            }
        }
    }
    let _ = conn.execute("SELECT hypopg_reset()").await;
    outcome?;
    Ok(Verification {
        cost_before: before.iter().sum(),
        cost_after: after.iter().sum(),
        statements: texts
            .into_iter()
            .zip(before.into_iter().zip(after))
            .map(|((id, _), (b, a))| (id, b, a))
            .collect(),
    })
}

/// The normalized text of statement `id` in this database, from pg_stat_statements.
async fn statement_text(conn: &mut PgConnection, id: &str) -> Result<String, String> {
    let id: i64 = id
        .parse()
        .map_err(|_| format!("{id:?} is not a pg_stat_statements query id"))?;
    sqlx::query_scalar(
        "SELECT query FROM pg_stat_statements
         WHERE queryid = $1 AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
         LIMIT 1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| format!("cannot read pg_stat_statements: {e}"))?
    .ok_or_else(|| {
        format!("statement {id} is not in pg_stat_statements for this database (reset, or evicted)")
    })
}

/// The total cost of the generic plan of `text`: PREPAREd, EXPLAINed with NULL for every
/// parameter, DEALLOCATEd.
async fn generic_cost(conn: &mut PgConnection, text: &str) -> Result<f64, String> {
    // The text is the server's own (pg_stat_statements), never a plugin's. It goes through
    // the extended protocol (one statement only); PREPARE takes only SELECT, INSERT,
    // UPDATE, DELETE, MERGE and VALUES, and EXPLAIN without ANALYZE runs nothing.
    sqlx::query(&format!("PREPARE {PREPARED} AS {text}"))
        .persistent(false)
        .execute(&mut *conn)
        .await
        .map_err(|e| format!("cannot PREPARE it: {e}"))?;
    let params: i32 = sqlx::query_scalar(
        "SELECT coalesce(cardinality(parameter_types), 0) FROM pg_prepared_statements WHERE name = $1",
    )
    .bind(PREPARED)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| format!("cannot read pg_prepared_statements: {e}"))?;
    let args = if params == 0 {
        String::new()
    } else {
        format!("({})", vec!["NULL"; params as usize].join(", "))
    };
    // EXPLAIN's column is `json`, whose wire form is its text.
    let plan = sqlx::query(&format!("EXPLAIN (FORMAT JSON) EXECUTE {PREPARED}{args}"))
        .persistent(false)
        .fetch_one(&mut *conn)
        .await
        .and_then(|row| row.try_get_unchecked::<String, _>(0));
    let _ = conn
        .execute(format!("DEALLOCATE {PREPARED}").as_str())
        .await;
    let plan = plan.map_err(|e| format!("cannot EXPLAIN it: {e}"))?;
    let plan: serde_json::Value =
        serde_json::from_str(&plan).map_err(|e| format!("EXPLAIN gave no JSON: {e}"))?;
    plan.get(0)
        .and_then(|p| p.get("Plan"))
        .and_then(|p| p.get("Total Cost"))
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| "EXPLAIN gave no total cost".to_owned())
}
