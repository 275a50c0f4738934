//! PostgreSQL maintenance operations: `VACUUM (ANALYZE)` and `ANALYZE` of one table,
//! `CREATE INDEX CONCURRENTLY` of a `vigil_idx_` index and `DROP INDEX CONCURRENTLY` of one.
//!
//! Every statement is built by the server from bound names (`format('%I', ...)`), never by
//! pasting plugin output into SQL; tables and columns are looked up in the catalog first.
//! Each runs on a connection of its own, outside any transaction, under the allowlist
//! entry's `statement_timeout` and `lock_timeout`. An index proposal is verified first
//! ([`super::pg_verify`]).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor, Row};

use super::action::{Maintenance, MaintenanceOp};
use super::decision::Restore;
use super::pg_verify::{self, Verification};
use super::target::{Reading, TargetError, connect, within};
use crate::config::{AllowEntry, InstanceConfig};

/// The name prefix of every index vigil creates; only such indexes are ever dropped.
pub const INDEX_PREFIX: &str = "vigil_idx_";
/// Longest PostgreSQL identifier.
const MAX_IDENTIFIER: usize = 63;

/// What the gate learns about a maintenance proposal before deciding it.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The state before, as audited in `before` (and whether there is anything to do).
    pub reading: Reading,
    /// Nothing to do (no dead rows, no change since ANALYZE, the index exists): why.
    pub unchanged: Option<String>,
    /// An index proposal's hypothetical verification, or why it could not be verified
    /// (`None` for other operations).
    pub verification: Option<Result<Verification, String>>,
}

fn options(config: &InstanceConfig) -> Result<PgConnectOptions, TargetError> {
    let mut options = PgConnectOptions::from_str(&config.url)
        .map_err(|e| TargetError::Failed(format!("invalid url: {e}")))?;
    if let Some(secret) = crate::collect::server::password(config).map_err(TargetError::Failed)? {
        options = options.password(secret.expose());
    }
    Ok(options.application_name("vigil-maintenance"))
}

fn failed(what: &str) -> impl Fn(sqlx::Error) -> TargetError + '_ {
    move |e| match e {
        sqlx::Error::Database(db) => {
            TargetError::Refused(format!("PostgreSQL refused {what}: {}", db.message()))
        }
        other => TargetError::Failed(format!("{what} failed: {other}")),
    }
}

/// The name vigil gives an index on `table` over `columns`: `vigil_idx_TABLE_COL_COL`,
/// lower-case letters, digits and `_` only, cut to 63 bytes with a hash of the full name
/// when longer (so two proposals never share a name by the cut).
pub fn index_name(table: &str, columns: &[String]) -> String {
    use std::hash::{Hash, Hasher};
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut name = format!("{INDEX_PREFIX}{}", clean(table));
    for column in columns {
        name.push('_');
        name.push_str(&clean(column));
    }
    if name.len() <= MAX_IDENTIFIER {
        return name;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (table, columns).hash(&mut hasher);
    let suffix = format!("_{:08x}", hasher.finish() as u32);
    name.truncate(MAX_IDENTIFIER - suffix.len());
    name + &suffix
}

/// Sets the entry's timeouts on `conn` (bound values, session-wide).
async fn set_timeouts(conn: &mut PgConnection, entry: &AllowEntry) -> Result<(), TargetError> {
    sqlx::query(
        "SELECT set_config('statement_timeout', $1, false), set_config('lock_timeout', $2, false)",
    )
    .bind(format!("{}ms", entry.statement_timeout.as_millis()))
    .bind(format!("{}ms", entry.lock_timeout.as_millis()))
    .execute(&mut *conn)
    .await
    .map_err(failed("setting statement_timeout and lock_timeout"))?;
    Ok(())
}

/// Dead rows, live rows and rows changed since ANALYZE of a table that exists.
async fn table_state(
    conn: &mut PgConnection,
    m: &Maintenance,
) -> Result<(f64, f64, f64), TargetError> {
    let row = sqlx::query(
        "SELECT n_dead_tup::float8 AS dead, n_live_tup::float8 AS live,
                n_mod_since_analyze::float8 AS changed
         FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2",
    )
    .bind(&m.schema)
    .bind(&m.name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(failed("reading pg_stat_user_tables"))?
    .ok_or_else(|| {
        TargetError::Refused(format!(
            "there is no table {}.{} in the instance's database",
            m.schema, m.name
        ))
    })?;
    let get = |c: &str| row.try_get::<f64, _>(c).unwrap_or(0.0);
    Ok((get("dead"), get("live"), get("changed")))
}

/// An existing valid index on the table whose leading columns are `columns`, if any.
async fn covering_index(
    conn: &mut PgConnection,
    m: &Maintenance,
) -> Result<Option<String>, TargetError> {
    sqlx::query_scalar(
        "SELECT i.indexrelid::regclass::text
         FROM pg_index i
         JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = $1 AND t.relname = $2 AND i.indisvalid
           AND (SELECT array_agg(a.attname::text ORDER BY k.ord)
                FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                WHERE k.ord <= cardinality($3::text[])) = $3::text[]
         LIMIT 1",
    )
    .bind(&m.schema)
    .bind(&m.name)
    .bind(&m.columns)
    .fetch_optional(&mut *conn)
    .await
    .map_err(failed("reading pg_index"))
}

/// Refuses unless every column of the proposal exists on the table.
async fn check_columns(conn: &mut PgConnection, m: &Maintenance) -> Result<(), TargetError> {
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT c FROM unnest($3::text[]) c
         WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a
                           JOIN pg_class t ON t.oid = a.attrelid
                           JOIN pg_namespace n ON n.oid = t.relnamespace
                           WHERE n.nspname = $1 AND t.relname = $2 AND a.attname = c
                             AND a.attnum > 0 AND NOT a.attisdropped)",
    )
    .bind(&m.schema)
    .bind(&m.name)
    .bind(&m.columns)
    .fetch_all(&mut *conn)
    .await
    .map_err(failed("reading pg_attribute"))?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(TargetError::Refused(format!(
            "{}.{} has no column {}",
            m.schema,
            m.name,
            missing.join(", ")
        )))
    }
}

/// The `CREATE INDEX` statement for `m` named `name`, built by the server from bound names.
pub async fn create_index_statement(
    conn: &mut PgConnection,
    m: &Maintenance,
    name: &str,
    concurrently: bool,
) -> Result<String, TargetError> {
    sqlx::query_scalar(
        "SELECT format('CREATE INDEX %s %I ON %I.%I (%s)', $1::text, $2::text, $3::text, $4::text,
                       (SELECT string_agg(quote_ident(c), ', ' ORDER BY o)
                        FROM unnest($5::text[]) WITH ORDINALITY u(c, o)))",
    )
    .bind(if concurrently { "CONCURRENTLY" } else { "" })
    .bind(name)
    .bind(&m.schema)
    .bind(&m.name)
    .bind(&m.columns)
    .fetch_one(&mut *conn)
    .await
    .map_err(failed("building the CREATE INDEX statement"))
}

/// Reads what the gate needs about `m` on `config`'s server, verifying an index proposal
/// hypothetically (`min_reduction` of the named statements' cost, from the allowlist entry).
pub async fn inspect(
    config: &InstanceConfig,
    entry: &AllowEntry,
    m: &Maintenance,
) -> Result<Inspection, TargetError> {
    let options = options(config)?;
    within(config.timeout.max(Duration::from_secs(30)), async {
        let mut conn = connect::<PgConnection>(&options).await?;
        let result = inspect_on(&mut conn, entry, m).await;
        let _ = conn.close().await;
        result
    })
    .await
}

async fn inspect_on(
    conn: &mut PgConnection,
    entry: &AllowEntry,
    m: &Maintenance,
) -> Result<Inspection, TargetError> {
    let plain = |value: String, restore: Restore| Reading {
        value,
        pg_unit: None,
        restore,
        refusal: None,
    };
    match m.op {
        MaintenanceOp::Vacuum => {
            let (dead, live, _) = table_state(conn, m).await?;
            Ok(Inspection {
                reading: plain(format!("{dead} dead rows, {live} live"), Restore::Nothing),
                unchanged: (dead == 0.0).then(|| format!("{} has no dead rows", m.object())),
                verification: None,
            })
        }
        MaintenanceOp::Analyze => {
            let (_, _, changed) = table_state(conn, m).await?;
            Ok(Inspection {
                reading: plain(
                    format!("{changed} rows changed since the last ANALYZE"),
                    Restore::Nothing,
                ),
                unchanged: (changed == 0.0)
                    .then(|| format!("{} has not changed since its last ANALYZE", m.object())),
                verification: None,
            })
        }
        MaintenanceOp::CreateIndex => {
            table_state(conn, m).await?;
            check_columns(conn, m).await?;
            let name = index_name(&m.name, &m.columns);
            let restore = Restore::DropIndex {
                schema: m.schema.clone(),
                index: name.clone(),
            };
            if let Some(existing) = covering_index(conn, m).await? {
                return Ok(Inspection {
                    reading: plain(format!("indexed by {existing}"), restore),
                    unchanged: Some(format!(
                        "{} is already indexed on ({}) by {existing}",
                        m.object(),
                        m.columns.join(", ")
                    )),
                    verification: None,
                });
            }
            let mut reading = plain("no such index".into(), restore);
            let verification = pg_verify::verify(conn, m, &name).await;
            if let Ok(v) = &verification
                && v.reduction() < entry.min_cost_reduction
            {
                reading.refusal = Some(format!(
                    "the index would cut the planner's cost of the statements by {:.0} % ({:.1} -> {:.1}); the minimum is {:.0} % (min_cost_reduction)",
                    v.reduction() * 100.0,
                    v.cost_before,
                    v.cost_after,
                    entry.min_cost_reduction * 100.0
                ));
            }
            Ok(Inspection {
                reading,
                unchanged: None,
                verification: Some(verification),
            })
        }
        MaintenanceOp::DropIndex => {
            if !m.name.starts_with(INDEX_PREFIX) {
                return Err(TargetError::Refused(format!(
                    "{} was not created by vigil (its name does not start with {INDEX_PREFIX}); vigil drops only its own indexes",
                    m.object()
                )));
            }
            let table: Option<String> = sqlx::query_scalar(
                "SELECT t.relname::text FROM pg_index i
                 JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2",
            )
            .bind(&m.schema)
            .bind(&m.name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(failed("reading pg_index"))?;
            let restore = Restore::Nothing;
            Ok(match table {
                Some(table) => {
                    let mut reading = plain(format!("exists on {}.{table}", m.schema), restore);
                    if !entry.covers_table(&m.schema, &table) {
                        reading.refusal = Some(format!(
                            "{} is on {}.{table}, which the allowlist entry's tables do not cover",
                            m.object(),
                            m.schema
                        ));
                    }
                    Inspection {
                        reading,
                        unchanged: None,
                        verification: None,
                    }
                }
                None => Inspection {
                    reading: plain("no such index".into(), restore),
                    unchanged: Some(format!("there is no index {}", m.object())),
                    verification: None,
                },
            })
        }
    }
}

/// Runs `m` on `config`'s server (the gate passed); returns the state after, as audited.
pub async fn run(
    config: &InstanceConfig,
    entry: &AllowEntry,
    m: &Maintenance,
) -> Result<String, TargetError> {
    let options = options(config)?;
    // The server's statement_timeout bounds the work; this only guards a hung connection.
    let limit = entry.statement_timeout + entry.lock_timeout + config.timeout;
    within(limit, async {
        let mut conn = connect::<PgConnection>(&options).await?;
        let result = run_on(&mut conn, entry, m).await;
        let _ = conn.close().await;
        result
    })
    .await
}

async fn run_on(
    conn: &mut PgConnection,
    entry: &AllowEntry,
    m: &Maintenance,
) -> Result<String, TargetError> {
    set_timeouts(conn, entry).await?;
    match m.op {
        MaintenanceOp::Vacuum | MaintenanceOp::Analyze => {
            let template = if m.op == MaintenanceOp::Vacuum {
                "VACUUM (ANALYZE) %I.%I"
            } else {
                "ANALYZE %I.%I"
            };
            let statement: String = sqlx::query_scalar("SELECT format($1, $2::text, $3::text)")
                .bind(template)
                .bind(&m.schema)
                .bind(&m.name)
                .fetch_one(&mut *conn)
                .await
                .map_err(failed("building the statement"))?;
            // A plain &str runs through the simple query protocol: no transaction block.
            conn.execute(statement.as_str())
                .await
                .map_err(failed(&statement))?;
            let (dead, live, changed) = table_state(conn, m).await?;
            Ok(if m.op == MaintenanceOp::Vacuum {
                format!("{dead} dead rows, {live} live")
            } else {
                format!("{changed} rows changed since the last ANALYZE")
            })
        }
        MaintenanceOp::CreateIndex => {
            let name = index_name(&m.name, &m.columns);
            let statement = create_index_statement(conn, m, &name, true).await?;
            if let Err(e) = conn.execute(statement.as_str()).await {
                // A failed CREATE INDEX CONCURRENTLY leaves an invalid index behind.
                let _ = drop_index(conn, &m.schema, &name).await;
                return Err(failed(&statement)(e));
            }
            Ok(format!("{}.{name}", m.schema))
        }
        MaintenanceOp::DropIndex => {
            drop_index(conn, &m.schema, &m.name).await?;
            Ok("dropped".into())
        }
    }
}

/// `DROP INDEX CONCURRENTLY IF EXISTS schema.index` of a `vigil_idx_` index.
async fn drop_index(conn: &mut PgConnection, schema: &str, index: &str) -> Result<(), TargetError> {
    if !index.starts_with(INDEX_PREFIX) {
        return Err(TargetError::Refused(format!(
            "{schema}.{index} was not created by vigil; vigil drops only its own indexes"
        )));
    }
    let statement: String = sqlx::query_scalar(
        "SELECT format('DROP INDEX CONCURRENTLY IF EXISTS %I.%I', $1::text, $2::text)",
    )
    .bind(schema)
    .bind(index)
    .fetch_one(&mut *conn)
    .await
    .map_err(failed("building the DROP INDEX statement"))?;
    conn.execute(statement.as_str())
        .await
        .map_err(failed(&statement))?;
    Ok(())
}

/// Drops index `schema`.`index` (a `vigil_idx_` one) on `config`'s server: the revert of
/// a created index. Returns the state after, as audited.
pub async fn revert_index(
    config: &InstanceConfig,
    schema: &str,
    index: &str,
    lock_timeout: Duration,
) -> Result<String, TargetError> {
    let options = options(config)?;
    within(
        config.timeout + lock_timeout + Duration::from_secs(600),
        async {
            let mut conn = connect::<PgConnection>(&options).await?;
            sqlx::query("SELECT set_config('lock_timeout', $1, false)")
                .bind(format!("{}ms", lock_timeout.as_millis()))
                .execute(&mut conn)
                .await
                .map_err(failed("setting lock_timeout"))?;
            let result = drop_index(&mut conn, schema, index).await;
            let _ = conn.close().await;
            result.map(|()| "dropped".to_owned())
        },
    )
    .await
}

/// Whether index `schema`.`index` exists on `config`'s server.
pub async fn index_exists(
    config: &InstanceConfig,
    schema: &str,
    index: &str,
) -> Result<bool, TargetError> {
    let options = options(config)?;
    within(config.timeout, async {
        let mut conn = connect::<PgConnection>(&options).await?;
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'i'",
        )
        .bind(schema)
        .bind(index)
        .fetch_optional(&mut conn)
        .await
        .map_err(failed("reading pg_class"))?;
        let _ = conn.close().await;
        Ok(found.is_some())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_are_prefixed_clean_and_at_most_63_bytes() {
        let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            index_name("orders", &cols(&["customer_id", "status"])),
            "vigil_idx_orders_customer_id_status"
        );
        assert_eq!(
            index_name("Odd Name\"; x", &cols(&["a"])),
            "vigil_idx_odd_name___x_a"
        );
        let long = index_name(&"t".repeat(60), &cols(&["a", "b"]));
        assert_eq!(long.len(), 63);
        assert!(long.starts_with(INDEX_PREFIX));
        assert_ne!(long, index_name(&"t".repeat(60), &cols(&["a", "c"])));
    }
}
