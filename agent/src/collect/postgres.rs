//! PostgreSQL metrics with `sqlx`, named like the OpenTelemetry Collector's
//! postgresql receiver where one exists (`postgresql.backends`, `postgresql.commits`, ...).
//!
//! Every query casts numbers to `float8` and names to `text`, so rows decode uniformly.

use std::str::FromStr;

use futures_util::TryStreamExt;
use sqlx::Either;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};

use super::server::{
    Identity, Scraper, ServerCollector, SetupError, instance_password, sql_connection,
};
use crate::config::InstanceConfig;
use crate::model::{Attributes, BatchBuilder, MetricDesc, MetricKind};

use MetricKind::{Counter, Gauge, UpDownCounter};

/// Longest normalized query text kept as an attribute.
pub const MAX_QUERY_TEXT: usize = 256;

/// Builds the collector of one PostgreSQL instance.
pub fn collector(
    config: &InstanceConfig,
    host: String,
) -> Result<ServerCollector<PostgresScraper>, SetupError> {
    let mut options = PgConnectOptions::from_str(&config.url)
        .map_err(|e| SetupError::url("postgres", config, e))?;
    if let Some(secret) = instance_password("postgres", config)? {
        options = options.password(secret.expose());
    }
    options = options.application_name("vigil");
    let who = Identity::new("postgresql", config, 5432);
    Ok(ServerCollector::new(
        PostgresScraper {
            options,
            connection: None,
            top_n: config.top_n() as i64,
            statements_note_given: false,
            round: None,
        },
        who,
        config,
        host,
    ))
}

/// Reads one PostgreSQL server (cluster-wide views, plus per-table views of the connected database).
pub struct PostgresScraper {
    options: PgConnectOptions,
    connection: Option<PgConnection>,
    top_n: i64,
    statements_note_given: bool,
    /// The round's request for the server version last seen.
    round: Option<RoundSql>,
}

fn num(row: &PgRow, column: &str) -> Option<f64> {
    row.try_get::<Option<f64>, _>(column).ok().flatten()
}

fn text(row: &PgRow, column: &str) -> String {
    row.try_get::<Option<String>, _>(column)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Adds a point of `metric` with `attrs` when `column` of `row` holds a number.
fn emit(
    batch: &mut BatchBuilder,
    row: &PgRow,
    column: &str,
    metric: &MetricDesc,
    attrs: Attributes,
) {
    if let Some(v) = num(row, column) {
        batch.point(metric, attrs, v);
    }
}

/// The attributes of a per-table series (`row` has `schema` and `tbl`).
fn table_attributes(who: &Identity, db: &str, row: &PgRow) -> Attributes {
    who.with(&[
        ("db.namespace", db),
        ("postgresql.schema.name", &text(row, "schema")),
        ("postgresql.table.name", &text(row, "tbl")),
    ])
}

/// `server_version_num` from which pg_stat_wal exists.
const WAL_VIEW_SINCE: u32 = 140000;
/// `server_version_num` from which checkpoints are in pg_stat_checkpointer.
const CHECKPOINTER_VIEW_SINCE: u32 = 170000;

const CONNECTIONS_SQL: &str = "SELECT (SELECT setting::float8 FROM pg_settings WHERE name = 'max_connections') AS max_connections,
                    (SELECT count(*)::float8 FROM pg_stat_activity WHERE backend_type = 'client backend') AS connections";
const LOCKS_SQL: &str =
    "SELECT mode::text AS mode, count(*)::float8 AS n FROM pg_locks GROUP BY mode";
const REPLICATION_SQL: &str = "SELECT coalesce(application_name, '')::text AS app, coalesce(client_addr::text, 'local') AS addr,
                    extract(epoch FROM replay_lag)::float8 AS replay_lag,
                    (pg_current_wal_lsn() - replay_lsn)::float8 AS replay_bytes
             FROM pg_stat_replication";
const CHECKPOINTER_SQL: &str = "SELECT num_timed::float8 AS timed, num_requested::float8 AS requested, buffers_written::float8 AS buffers_checkpoint,
                    write_time::float8 AS write_time, sync_time::float8 AS sync_time FROM pg_stat_checkpointer";
const BGWRITER_SQL: &str = "SELECT checkpoints_timed::float8 AS timed, checkpoints_req::float8 AS requested, buffers_checkpoint::float8 AS buffers_checkpoint,
                    checkpoint_write_time::float8 AS write_time, checkpoint_sync_time::float8 AS sync_time FROM pg_stat_bgwriter";
const WAL_SQL: &str =
    "SELECT wal_records::float8 AS records, wal_bytes::float8 AS bytes FROM pg_stat_wal";
const DATABASES_SQL: &str = "SELECT d.datname::text AS db, d.numbackends::float8 AS backends,
                    d.xact_commit::float8 AS commits, d.xact_rollback::float8 AS rollbacks,
                    d.blks_read::float8 AS blks_read, d.blks_hit::float8 AS blks_hit,
                    d.tup_returned::float8 AS returned, d.tup_fetched::float8 AS fetched,
                    d.tup_inserted::float8 AS inserted, d.tup_updated::float8 AS updated,
                    d.tup_deleted::float8 AS deleted, d.deadlocks::float8 AS deadlocks,
                    d.temp_files::float8 AS temp_files, d.temp_bytes::float8 AS temp_bytes,
                    CASE WHEN has_database_privilege(d.datname, 'CONNECT')
                         THEN pg_database_size(d.datid)::float8 END AS size
             FROM pg_stat_database d WHERE d.datname IS NOT NULL";
const CURRENT_DATABASE_SQL: &str = "SELECT current_database()::text AS db";
/// `{top_n}` is replaced by the configured number of tables.
const TABLES_SQL: &str =
    "SELECT schemaname::text AS schema, relname::text AS tbl, seq_scan::float8 AS seq_scan,
                    seq_tup_read::float8 AS seq_tup_read, coalesce(idx_scan, 0)::float8 AS idx_scan,
                    pg_total_relation_size(relid)::float8 AS size
             FROM pg_stat_user_tables ORDER BY seq_tup_read DESC, relname LIMIT {top_n}";
/// `{top_n}` is replaced by the configured number of tables.
const MAINTENANCE_SQL: &str = "WITH picked AS ((SELECT relid FROM pg_stat_user_tables ORDER BY n_dead_tup DESC, relname LIMIT {top_n})
                             UNION
                             (SELECT relid FROM pg_stat_user_tables ORDER BY n_mod_since_analyze DESC, relname LIMIT {top_n}))
             SELECT schemaname::text AS schema, relname::text AS tbl,
                    n_live_tup::float8 AS live, n_dead_tup::float8 AS dead,
                    n_mod_since_analyze::float8 AS mod_since_analyze,
                    vacuum_count::float8 AS vacuum_count, autovacuum_count::float8 AS autovacuum_count,
                    analyze_count::float8 AS analyze_count, autoanalyze_count::float8 AS autoanalyze_count,
                    extract(epoch FROM now() - greatest(last_vacuum, last_autovacuum))::float8 AS vacuum_age,
                    extract(epoch FROM now() - greatest(last_analyze, last_autoanalyze))::float8 AS analyze_age
             FROM pg_stat_user_tables WHERE relid IN (SELECT relid FROM picked)";
/// `{top_n}` is replaced by the configured number of indexes.
const INDEXES_SQL: &str =
    "SELECT s.schemaname::text AS schema, s.relname::text AS tbl, s.indexrelname::text AS idx,
                    s.idx_scan::float8 AS scans, pg_relation_size(s.indexrelid)::float8 AS size,
                    (NOT i.indisunique AND s.idx_scan = 0)::int::float8 AS unused
             FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
             ORDER BY pg_relation_size(s.indexrelid) DESC, s.indexrelname LIMIT {top_n}";
const EXTENSION_SQL: &str =
    "SELECT extname::text FROM pg_extension WHERE extname = 'pg_stat_statements'";

/// The statements of one round, named, in the order the sections read their results.
fn round_statements(version: u32, top_n: i64) -> Vec<(&'static str, String)> {
    let checkpoints = if version >= CHECKPOINTER_VIEW_SINCE {
        CHECKPOINTER_SQL
    } else {
        BGWRITER_SQL
    };
    let limited = |sql: &str| sql.replace("{top_n}", &top_n.to_string());
    let mut statements = vec![
        ("connection counts", CONNECTIONS_SQL.to_owned()),
        ("pg_locks", LOCKS_SQL.to_owned()),
        ("pg_stat_replication", REPLICATION_SQL.to_owned()),
        ("checkpoints", checkpoints.to_owned()),
    ];
    if version >= WAL_VIEW_SINCE {
        statements.push(("pg_stat_wal", WAL_SQL.to_owned()));
    }
    statements.extend([
        ("pg_stat_database", DATABASES_SQL.to_owned()),
        ("current_database", CURRENT_DATABASE_SQL.to_owned()),
        ("pg_stat_user_tables", limited(TABLES_SQL)),
        (
            "pg_stat_user_tables (maintenance)",
            limited(MAINTENANCE_SQL),
        ),
        ("pg_stat_user_indexes", limited(INDEXES_SQL)),
        ("pg_extension", EXTENSION_SQL.to_owned()),
    ]);
    statements
}

/// One round's statements as the one request that sends them, kept between rounds (it
/// changes only with the server version).
struct RoundSql {
    version: u32,
    /// What each statement reads, in order.
    names: Vec<&'static str>,
    /// The statements, `;`-separated.
    sql: String,
}

impl RoundSql {
    fn new(version: u32, top_n: i64) -> Self {
        Self::of(version, &round_statements(version, top_n))
    }

    /// The request sending `statements` (named) in order.
    fn of(version: u32, statements: &[(&'static str, String)]) -> Self {
        RoundSql {
            version,
            names: statements.iter().map(|(what, _)| *what).collect(),
            sql: statements
                .iter()
                .map(|(_, sql)| sql.as_str())
                .collect::<Vec<_>>()
                .join(";\n"),
        }
    }
}

/// The result sets of one round's statements, taken in the order they were sent.
struct Results {
    sets: std::iter::Peekable<std::vec::IntoIter<(&'static str, Vec<PgRow>)>>,
}

impl Results {
    /// The rows of the next statement, which must be `what`.
    fn rows(&mut self, what: &str) -> Result<Vec<PgRow>, String> {
        match self.sets.next() {
            Some((name, rows)) if name == what => Ok(rows),
            other => Err(format!(
                "query of {what} failed: the round's results came in another order (next: {:?})",
                other.map(|(name, _)| name)
            )),
        }
    }

    /// The one row of the next statement, `what`.
    fn row(&mut self, what: &str) -> Result<PgRow, String> {
        self.rows(what)?
            .into_iter()
            .next()
            .ok_or_else(|| format!("query of {what} failed: it returned no row"))
    }

    /// The first row of the next statement, `what`, if it returned any.
    fn optional(&mut self, what: &str) -> Result<Option<PgRow>, String> {
        Ok(self.rows(what)?.into_iter().next())
    }

    /// The one row of the next statement if it is `what`: for a statement that
    /// [`round_statements`] sends only to some server versions.
    fn row_if_sent(&mut self, what: &str) -> Result<Option<PgRow>, String> {
        match self.sets.peek() {
            Some((name, _)) if *name == what => self.row(what).map(Some),
            _ => Ok(None),
        }
    }
}

/// Runs `statements` as one request (the simple query protocol: one round trip instead of
/// one per statement) and returns their result sets in order. The server runs them in
/// one implicit transaction: the first failure stops the round and is reported by name.
async fn fetch_round(conn: &mut PgConnection, round: &RoundSql) -> Result<Results, String> {
    let statements = &round.names;
    let mut stream = sqlx::raw_sql(&round.sql).fetch_many(&mut *conn);
    let mut sets = Vec::with_capacity(statements.len());
    let mut rows = Vec::new();
    while let Some(item) = stream.try_next().await.map_err(|e| {
        let what = statements
            .get(sets.len())
            .map_or("a statement", |what| what);
        format!("query of {what} failed: {e}")
    })? {
        match item {
            Either::Left(_done) => sets.push(std::mem::take(&mut rows)),
            Either::Right(row) => rows.push(row),
        }
    }
    if sets.len() != statements.len() {
        return Err(format!(
            "the server answered {} of the round's {} statements",
            sets.len(),
            statements.len()
        ));
    }
    let named: Vec<_> = statements.iter().copied().zip(sets).collect();
    Ok(Results {
        sets: named.into_iter().peekable(),
    })
}

impl PostgresScraper {
    fn database_stats(
        results: &mut Results,
        batch: &mut BatchBuilder,
        who: &Identity,
    ) -> Result<(), String> {
        let rows = results.rows("pg_stat_database")?;
        let metrics = [
            (
                "backends",
                MetricDesc::new(
                    "postgresql.backends",
                    "1",
                    UpDownCounter,
                    "Backends connected to a database",
                ),
            ),
            (
                "commits",
                MetricDesc::new("postgresql.commits", "1", Counter, "Committed transactions"),
            ),
            (
                "rollbacks",
                MetricDesc::new(
                    "postgresql.rollbacks",
                    "1",
                    Counter,
                    "Rolled back transactions",
                ),
            ),
            (
                "blks_read",
                MetricDesc::new(
                    "postgresql.blks_read",
                    "{block}",
                    Counter,
                    "Blocks read from disk (buffer cache misses)",
                ),
            ),
            (
                "blks_hit",
                MetricDesc::new(
                    "postgresql.blks_hit",
                    "{block}",
                    Counter,
                    "Blocks found in the buffer cache",
                ),
            ),
            (
                "returned",
                MetricDesc::new(
                    "postgresql.tup_returned",
                    "{tup_returned}",
                    Counter,
                    "Rows returned by queries",
                ),
            ),
            (
                "fetched",
                MetricDesc::new(
                    "postgresql.tup_fetched",
                    "{tup_fetched}",
                    Counter,
                    "Rows fetched by queries",
                ),
            ),
            (
                "inserted",
                MetricDesc::new(
                    "postgresql.tup_inserted",
                    "{tup_inserted}",
                    Counter,
                    "Rows inserted",
                ),
            ),
            (
                "updated",
                MetricDesc::new(
                    "postgresql.tup_updated",
                    "{tup_updated}",
                    Counter,
                    "Rows updated",
                ),
            ),
            (
                "deleted",
                MetricDesc::new(
                    "postgresql.tup_deleted",
                    "{tup_deleted}",
                    Counter,
                    "Rows deleted",
                ),
            ),
            (
                "deadlocks",
                MetricDesc::new(
                    "postgresql.deadlocks",
                    "{deadlock}",
                    Counter,
                    "Deadlocks detected",
                ),
            ),
            (
                "temp_files",
                MetricDesc::new(
                    "postgresql.temp_files",
                    "{temp_file}",
                    Counter,
                    "Temporary files created",
                ),
            ),
            (
                "temp_bytes",
                MetricDesc::new(
                    "postgresql.temp.io",
                    "By",
                    Counter,
                    "Bytes written to temporary files",
                ),
            ),
            (
                "size",
                MetricDesc::new("postgresql.db_size", "By", UpDownCounter, "Database size"),
            ),
        ];
        for row in &rows {
            let attrs = who.with(&[("db.namespace", &text(row, "db"))]);
            for (column, metric) in &metrics {
                emit(batch, row, column, metric, attrs.clone());
            }
        }
        Ok(())
    }

    fn server_stats(
        results: &mut Results,
        batch: &mut BatchBuilder,
        who: &Identity,
    ) -> Result<(), String> {
        let row = results.row("connection counts")?;
        let base = who.attributes();
        emit(
            batch,
            &row,
            "max_connections",
            &MetricDesc::new(
                "postgresql.connection.max",
                "{connections}",
                Gauge,
                "max_connections",
            ),
            base.clone(),
        );
        emit(
            batch,
            &row,
            "connections",
            &MetricDesc::new(
                "postgresql.connection.count",
                "{connection}",
                UpDownCounter,
                "Client connections to the server",
            ),
            base.clone(),
        );

        let locks = results.rows("pg_locks")?;
        let lock_metric = MetricDesc::new(
            "postgresql.database.locks",
            "{lock}",
            Gauge,
            "Locks held or awaited, by mode",
        );
        for row in &locks {
            batch.point(
                &lock_metric,
                who.with(&[("mode", &text(row, "mode"))]),
                num(row, "n").unwrap_or(0.0),
            );
        }

        let replicas = results.rows("pg_stat_replication")?;
        let lag = MetricDesc::new(
            "postgresql.replication.lag",
            "s",
            Gauge,
            "Replay lag of a replica",
        );
        let lag_bytes = MetricDesc::new(
            "postgresql.replication.data_delay",
            "By",
            Gauge,
            "WAL not yet replayed by a replica",
        );
        for row in &replicas {
            let attrs = who.with(&[
                ("postgresql.replica.application", &text(row, "app")),
                ("postgresql.replica.address", &text(row, "addr")),
            ]);
            emit(batch, row, "replay_lag", &lag, attrs.clone());
            emit(batch, row, "replay_bytes", &lag_bytes, attrs);
        }

        let row = results.row("checkpoints")?;
        let count = MetricDesc::new(
            "postgresql.bgwriter.checkpoint.count",
            "{checkpoints}",
            Counter,
            "Checkpoints, by type",
        );
        let duration = MetricDesc::new(
            "postgresql.bgwriter.duration",
            "ms",
            Counter,
            "Time spent writing and syncing checkpoints",
        );
        let writes = MetricDesc::new(
            "postgresql.bgwriter.buffers.writes",
            "{buffers}",
            Counter,
            "Buffers written by checkpoints",
        );
        for (column, kind) in [("timed", "scheduled"), ("requested", "requested")] {
            emit(batch, &row, column, &count, who.with(&[("type", kind)]));
        }
        for (column, kind) in [("write_time", "write"), ("sync_time", "sync")] {
            emit(batch, &row, column, &duration, who.with(&[("type", kind)]));
        }
        emit(
            batch,
            &row,
            "buffers_checkpoint",
            &writes,
            who.with(&[("source", "checkpoints")]),
        );
        if let Some(row) = results.row_if_sent("pg_stat_wal")? {
            emit(
                batch,
                &row,
                "bytes",
                &MetricDesc::new("postgresql.wal.bytes", "By", Counter, "WAL generated"),
                base.clone(),
            );
            emit(
                batch,
                &row,
                "records",
                &MetricDesc::new(
                    "postgresql.wal.records",
                    "{record}",
                    Counter,
                    "WAL records generated",
                ),
                base,
            );
        }
        Ok(())
    }

    fn table_stats(
        results: &mut Results,
        batch: &mut BatchBuilder,
        who: &Identity,
    ) -> Result<(), String> {
        let db = text(&results.row("current_database")?, "db");
        let tables = results.rows("pg_stat_user_tables")?;
        let metrics = [
            (
                "seq_scan",
                MetricDesc::new(
                    "postgresql.sequential_scans",
                    "{sequential_scan}",
                    Counter,
                    "Sequential scans of a table",
                ),
            ),
            (
                "seq_tup_read",
                MetricDesc::new(
                    "postgresql.table.seq_rows_read",
                    "{row}",
                    Counter,
                    "Rows read by sequential scans of a table",
                ),
            ),
            (
                "idx_scan",
                MetricDesc::new(
                    "postgresql.table.index_scans",
                    "{index_scan}",
                    Counter,
                    "Index scans on a table",
                ),
            ),
            (
                "size",
                MetricDesc::new(
                    "postgresql.table.size",
                    "By",
                    UpDownCounter,
                    "Table size with indexes and TOAST",
                ),
            ),
        ];
        for row in &tables {
            let attrs = table_attributes(who, &db, row);
            for (column, metric) in &metrics {
                emit(batch, row, column, metric, attrs.clone());
            }
        }
        Self::maintenance_stats(results, batch, who, &db)?;

        let indexes = results.rows("pg_stat_user_indexes")?;
        let scans = MetricDesc::new(
            "postgresql.index.scans",
            "{scans}",
            Counter,
            "Scans of an index",
        );
        let size = MetricDesc::new("postgresql.index.size", "By", UpDownCounter, "Index size");
        let unused = MetricDesc::new(
            "postgresql.index.unused",
            "1",
            Gauge,
            "1 for a non-unique index never scanned since stats reset",
        );
        for row in &indexes {
            let attrs = who.with(&[
                ("db.namespace", &db),
                ("postgresql.schema.name", &text(row, "schema")),
                ("postgresql.table.name", &text(row, "tbl")),
                ("postgresql.index.name", &text(row, "idx")),
            ]);
            for (column, metric) in [("scans", &scans), ("size", &size), ("unused", &unused)] {
                emit(batch, row, column, metric, attrs.clone());
            }
        }
        Ok(())
    }

    /// What VACUUM and ANALYZE decisions need, for the top N tables by dead rows plus the
    /// top N by rows changed since the last ANALYZE (at most 2 * top_n tables).
    fn maintenance_stats(
        results: &mut Results,
        batch: &mut BatchBuilder,
        who: &Identity,
        db: &str,
    ) -> Result<(), String> {
        let tables = results.rows("pg_stat_user_tables (maintenance)")?;
        let metrics = [
            (
                "mod_since_analyze",
                MetricDesc::new(
                    "postgresql.table.modifications_since_analyze",
                    "{row}",
                    UpDownCounter,
                    "Rows inserted, updated or deleted since the table was last analyzed",
                ),
            ),
            (
                "vacuum_count",
                MetricDesc::new(
                    "postgresql.table.vacuum.count",
                    "{vacuums}",
                    Counter,
                    "Manual VACUUMs of a table",
                ),
            ),
            (
                "autovacuum_count",
                MetricDesc::new(
                    "postgresql.table.autovacuum.count",
                    "{vacuums}",
                    Counter,
                    "Autovacuum runs on a table",
                ),
            ),
            (
                "analyze_count",
                MetricDesc::new(
                    "postgresql.table.analyze.count",
                    "{analyzes}",
                    Counter,
                    "Manual ANALYZEs of a table",
                ),
            ),
            (
                "autoanalyze_count",
                MetricDesc::new(
                    "postgresql.table.autoanalyze.count",
                    "{analyzes}",
                    Counter,
                    "Autoanalyze runs on a table",
                ),
            ),
            (
                "vacuum_age",
                MetricDesc::new(
                    "postgresql.table.vacuum.age",
                    "s",
                    Gauge,
                    "Seconds since the table was last vacuumed (by hand or autovacuum); absent when never",
                ),
            ),
            (
                "analyze_age",
                MetricDesc::new(
                    "postgresql.table.analyze.age",
                    "s",
                    Gauge,
                    "Seconds since the table was last analyzed (by hand or autoanalyze); absent when never",
                ),
            ),
        ];
        let rows_metric = MetricDesc::new(
            "postgresql.rows",
            "{row}",
            UpDownCounter,
            "Live and dead rows of a table",
        );
        for row in &tables {
            let attrs = table_attributes(who, db, row);
            for (column, metric) in &metrics {
                emit(batch, row, column, metric, attrs.clone());
            }
            for (column, state) in [("live", "live"), ("dead", "dead")] {
                if let Some(v) = num(row, column) {
                    let mut a = attrs.clone();
                    a.push(("state".into(), state.into()));
                    batch.point(&rows_metric, a, v);
                }
            }
        }
        Ok(())
    }

    async fn statement_stats(
        &mut self,
        installed: bool,
        batch: &mut BatchBuilder,
        who: &Identity,
    ) -> Result<(), String> {
        let top_n = self.top_n;
        let Some(conn) = self.connection.as_mut() else {
            return Ok(());
        };
        let statements = if installed {
            sqlx::query(
                "(SELECT queryid::text AS id, left(query, $2)::text AS query, calls::float8 AS calls,
                         total_exec_time::float8 AS total_ms, mean_exec_time::float8 AS mean_ms
                  FROM pg_stat_statements ORDER BY mean_exec_time DESC LIMIT $1)
                 UNION
                 (SELECT queryid::text, left(query, $2)::text, calls::float8, total_exec_time::float8, mean_exec_time::float8
                  FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT $1)",
            )
            .bind(top_n)
            .bind(MAX_QUERY_TEXT as i32)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| e.to_string())
        } else {
            Err("the extension is not installed in this database".to_owned())
        };
        let statements = match statements {
            Ok(rows) => rows,
            Err(reason) => {
                if !self.statements_note_given {
                    self.statements_note_given = true;
                    tracing::info!(instance = %who.name, "{who}: slow-query metrics are off: pg_stat_statements is unavailable ({reason}). To enable them: set shared_preload_libraries = 'pg_stat_statements' in postgresql.conf, restart PostgreSQL, then run CREATE EXTENSION pg_stat_statements; in the database vigil connects to");
                }
                return Ok(());
            }
        };
        let calls = MetricDesc::new(
            "postgresql.query.calls",
            "{call}",
            Counter,
            "Calls of a normalized statement",
        );
        let total = MetricDesc::new(
            "postgresql.query.total_time",
            "s",
            Counter,
            "Total execution time of a normalized statement",
        );
        let mean = MetricDesc::new(
            "postgresql.query.mean_time",
            "s",
            Gauge,
            "Mean execution time of a normalized statement",
        );
        for row in &statements {
            let attrs = who.with(&[
                ("postgresql.query.id", &text(row, "id")),
                ("db.query.text", &text(row, "query")),
            ]);
            emit(batch, row, "calls", &calls, attrs.clone());
            if let Some(v) = num(row, "total_ms") {
                batch.point(&total, attrs.clone(), v / 1000.0);
            }
            if let Some(v) = num(row, "mean_ms") {
                batch.point(&mean, attrs, v / 1000.0);
            }
        }
        Ok(())
    }
}

impl Scraper for PostgresScraper {
    async fn scrape<'a>(
        &'a mut self,
        batch: &'a mut BatchBuilder,
        who: &'a Identity,
    ) -> Result<(), String> {
        let conn = sql_connection(&mut self.connection, &self.options).await?;
        let version = conn.server_version_num().unwrap_or(0);
        let round = match self.round.take() {
            Some(round) if round.version == version => round,
            _ => RoundSql::new(version, self.top_n),
        };
        let round = self.round.insert(round);
        let mut results = fetch_round(conn, round).await?;
        Self::server_stats(&mut results, batch, who)?;
        Self::database_stats(&mut results, batch, who)?;
        Self::table_stats(&mut results, batch, who)?;
        let installed = results.optional("pg_extension")?.is_some();
        self.statement_stats(installed, batch, who).await
    }

    fn disconnect(&mut self) {
        self.connection = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    /// The machine's PostgreSQL (trust auth), as the README's set-up starts it.
    async fn connect() -> PgConnection {
        PgConnection::connect("postgres://postgres@127.0.0.1:5432/test")
            .await
            .expect("PostgreSQL at 127.0.0.1:5432 (./dev setup starts it)")
    }

    #[tokio::test]
    async fn a_round_is_split_into_its_statements_results_in_order() {
        let mut conn = connect().await;
        let statements = [
            (
                "two rows",
                "SELECT x::float8 AS n FROM generate_series(1, 2) x".to_owned(),
            ),
            ("no row", "SELECT 1::float8 AS n WHERE false".to_owned()),
            (
                "one row",
                "SELECT 'a'::text AS name, 2.5::float8 AS n".to_owned(),
            ),
        ];
        let mut results = fetch_round(&mut conn, &RoundSql::of(0, &statements))
            .await
            .unwrap();
        let two: Vec<_> = results
            .rows("two rows")
            .unwrap()
            .iter()
            .map(|r| num(r, "n"))
            .collect();
        assert_eq!(two, [Some(1.0), Some(2.0)]);
        assert!(results.optional("no row").unwrap().is_none());
        let one = results.row("one row").unwrap();
        assert_eq!(
            (text(&one, "name"), num(&one, "n")),
            ("a".to_owned(), Some(2.5))
        );
        assert!(results.rows("one row").is_err(), "no fourth result");
    }

    #[tokio::test]
    async fn a_failing_statement_is_named_and_the_connection_stays_usable() {
        let mut conn = connect().await;
        let statements = [
            ("first", "SELECT 1::float8 AS n".to_owned()),
            (
                "the missing view",
                "SELECT * FROM vigil_no_such_view".to_owned(),
            ),
            ("last", "SELECT 3::float8 AS n".to_owned()),
        ];
        let error = fetch_round(&mut conn, &RoundSql::of(0, &statements))
            .await
            .err()
            .unwrap();
        assert!(
            error.starts_with("query of the missing view failed:"),
            "{error}"
        );
        assert!(error.contains("vigil_no_such_view"), "{error}");
        let again = [("again", "SELECT 4::float8 AS n".to_owned())];
        let mut results = fetch_round(&mut conn, &RoundSql::of(0, &again))
            .await
            .unwrap();
        assert_eq!(num(&results.row("again").unwrap(), "n"), Some(4.0));
    }

    #[tokio::test]
    async fn every_statement_of_a_round_runs_on_this_server() {
        let mut conn = connect().await;
        let version = conn.server_version_num().unwrap();
        let mut results = fetch_round(&mut conn, &RoundSql::new(version, 5))
            .await
            .unwrap();
        let config: InstanceConfig =
            toml::from_str("name = \"main\"\nurl = \"postgres://postgres@127.0.0.1:5432/test\"")
                .unwrap();
        let who = Identity::new("postgresql", &config, 5432);
        let mut batch = BatchBuilder::new("postgres:main", "h");
        PostgresScraper::server_stats(&mut results, &mut batch, &who).unwrap();
        PostgresScraper::database_stats(&mut results, &mut batch, &who).unwrap();
        PostgresScraper::table_stats(&mut results, &mut batch, &who).unwrap();
        assert!(results.optional("pg_extension").is_ok());
        let batch = batch.build();
        let names: Vec<&str> = batch.metrics.iter().map(|m| m.name.as_str()).collect();
        // This server (>= 14) has pg_stat_wal: the section sent only to such servers is read.
        assert!(version >= WAL_VIEW_SINCE, "{version}");
        for metric in [
            "postgresql.connection.max",
            "postgresql.wal.bytes",
            "postgresql.backends",
        ] {
            assert!(names.contains(&metric), "{metric} missing from {names:?}");
        }
    }
}
