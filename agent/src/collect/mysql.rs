//! MySQL and MariaDB metrics with `sqlx` from `SHOW GLOBAL STATUS`, `SHOW GLOBAL VARIABLES`
//! and the replica status, named like the OpenTelemetry Collector's mysql receiver.

use std::collections::HashMap;
use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlRow};
use sqlx::{Column, Row};

use super::server::{
    Identity, Scraper, ServerCollector, SetupError, instance_password, sql_connection,
};
use crate::config::InstanceConfig;
use crate::model::{BatchBuilder, MetricDesc, MetricKind};

use MetricKind::{Counter, Gauge, UpDownCounter};

/// Builds the collector of one MySQL/MariaDB instance.
pub fn collector(
    config: &InstanceConfig,
    host: String,
) -> Result<ServerCollector<MysqlScraper>, SetupError> {
    let url = config.url.replacen("mariadb://", "mysql://", 1);
    let mut options =
        MySqlConnectOptions::from_str(&url).map_err(|e| SetupError::url("mysql", config, e))?;
    if let Some(secret) = instance_password("mysql", config)? {
        options = options.password(secret.expose());
    }
    let who = Identity::new("mysql", config, 3306);
    Ok(ServerCollector::new(
        MysqlScraper {
            options,
            connection: None,
        },
        who,
        config,
        host,
    ))
}

/// Reads one MySQL/MariaDB server.
pub struct MysqlScraper {
    options: MySqlConnectOptions,
    connection: Option<MySqlConnection>,
}

/// One exported status value. `variable` may read `A|B`: the first of the variables
/// the server has (MySQL and MariaDB name some differently).
struct Status {
    variable: &'static str,
    metric: &'static str,
    unit: &'static str,
    kind: MetricKind,
    attribute: Option<(&'static str, &'static str)>,
    description: &'static str,
}

const fn status(
    variable: &'static str,
    metric: &'static str,
    unit: &'static str,
    kind: MetricKind,
    attribute: Option<(&'static str, &'static str)>,
    description: &'static str,
) -> Status {
    Status {
        variable,
        metric,
        unit,
        kind,
        attribute,
        description,
    }
}

const STATUS: &[Status] = &[
    status(
        "Threads_connected",
        "mysql.threads",
        "{thread}",
        UpDownCounter,
        Some(("kind", "connected")),
        "Threads by state",
    ),
    status(
        "Threads_running",
        "mysql.threads",
        "{thread}",
        UpDownCounter,
        Some(("kind", "running")),
        "Threads by state",
    ),
    status(
        "Threads_cached",
        "mysql.threads",
        "{thread}",
        UpDownCounter,
        Some(("kind", "cached")),
        "Threads by state",
    ),
    status(
        "Connections",
        "mysql.connection.count",
        "{connection}",
        Counter,
        None,
        "Connection attempts",
    ),
    status(
        "Max_used_connections",
        "mysql.connection.max_used",
        "{connection}",
        Gauge,
        None,
        "Most connections at once since start",
    ),
    status(
        "Aborted_clients",
        "mysql.connection.errors",
        "{error}",
        Counter,
        Some(("error", "aborted_clients")),
        "Aborted connections",
    ),
    status(
        "Aborted_connects",
        "mysql.connection.errors",
        "{error}",
        Counter,
        Some(("error", "aborted_connects")),
        "Aborted connections",
    ),
    status(
        "Queries",
        "mysql.query.count",
        "{query}",
        Counter,
        None,
        "Statements executed, including stored programs",
    ),
    status(
        "Questions",
        "mysql.query.client.count",
        "{query}",
        Counter,
        None,
        "Statements sent by clients",
    ),
    status(
        "Slow_queries",
        "mysql.query.slow.count",
        "{query}",
        Counter,
        None,
        "Queries slower than long_query_time",
    ),
    status(
        "Com_select",
        "mysql.commands",
        "{command}",
        Counter,
        Some(("command", "select")),
        "Statements by command",
    ),
    status(
        "Com_insert",
        "mysql.commands",
        "{command}",
        Counter,
        Some(("command", "insert")),
        "Statements by command",
    ),
    status(
        "Com_update",
        "mysql.commands",
        "{command}",
        Counter,
        Some(("command", "update")),
        "Statements by command",
    ),
    status(
        "Com_delete",
        "mysql.commands",
        "{command}",
        Counter,
        Some(("command", "delete")),
        "Statements by command",
    ),
    status(
        "Innodb_buffer_pool_read_requests",
        "mysql.buffer_pool.read_requests",
        "{request}",
        Counter,
        None,
        "Logical reads from the InnoDB buffer pool",
    ),
    status(
        "Innodb_buffer_pool_reads",
        "mysql.buffer_pool.reads",
        "{read}",
        Counter,
        None,
        "Reads the buffer pool could not serve (went to disk)",
    ),
    status(
        "Innodb_buffer_pool_bytes_data",
        "mysql.buffer_pool.usage",
        "By",
        UpDownCounter,
        Some(("status", "data")),
        "Bytes in the buffer pool",
    ),
    status(
        "Innodb_buffer_pool_bytes_dirty",
        "mysql.buffer_pool.usage",
        "By",
        UpDownCounter,
        Some(("status", "dirty")),
        "Bytes in the buffer pool",
    ),
    status(
        "Innodb_buffer_pool_pages_total",
        "mysql.buffer_pool.pages",
        "{page}",
        UpDownCounter,
        Some(("kind", "total")),
        "Buffer pool pages",
    ),
    status(
        "Innodb_buffer_pool_pages_free",
        "mysql.buffer_pool.pages",
        "{page}",
        UpDownCounter,
        Some(("kind", "free")),
        "Buffer pool pages",
    ),
    status(
        "Innodb_buffer_pool_pages_data",
        "mysql.buffer_pool.pages",
        "{page}",
        UpDownCounter,
        Some(("kind", "data")),
        "Buffer pool pages",
    ),
    status(
        "Innodb_rows_read|Rows_read",
        "mysql.row_operations",
        "{row}",
        Counter,
        Some(("operation", "read")),
        "InnoDB row operations",
    ),
    status(
        "Innodb_rows_inserted|Handler_write",
        "mysql.row_operations",
        "{row}",
        Counter,
        Some(("operation", "inserted")),
        "InnoDB row operations",
    ),
    status(
        "Innodb_rows_updated|Handler_update",
        "mysql.row_operations",
        "{row}",
        Counter,
        Some(("operation", "updated")),
        "InnoDB row operations",
    ),
    status(
        "Innodb_rows_deleted|Handler_delete",
        "mysql.row_operations",
        "{row}",
        Counter,
        Some(("operation", "deleted")),
        "InnoDB row operations",
    ),
    status(
        "Table_locks_immediate",
        "mysql.locks",
        "{lock}",
        Counter,
        Some(("kind", "immediate")),
        "Table locks",
    ),
    status(
        "Table_locks_waited",
        "mysql.locks",
        "{lock}",
        Counter,
        Some(("kind", "waited")),
        "Table locks",
    ),
    status(
        "Uptime",
        "mysql.uptime",
        "s",
        Counter,
        None,
        "Time since the server started",
    ),
];

/// Reads a two-column `SHOW` result into `name -> value`.
async fn show(conn: &mut MySqlConnection, sql: &str) -> Result<HashMap<String, String>, String> {
    let rows = sqlx::query(sql)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| format!("{sql} failed: {e}"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some((
                r.try_get::<String, _>(0).ok()?,
                r.try_get::<String, _>(1).ok()?,
            ))
        })
        .collect())
}

fn column_text(row: &MySqlRow, name: &str) -> Option<String> {
    let index = row.columns().iter().position(|c| c.name() == name)?;
    row.try_get::<Option<String>, _>(index)
        .ok()
        .flatten()
        .or_else(|| {
            row.try_get::<Option<i64>, _>(index)
                .ok()
                .flatten()
                .map(|v| v.to_string())
        })
        .or_else(|| {
            row.try_get::<Option<u64>, _>(index)
                .ok()
                .flatten()
                .map(|v| v.to_string())
        })
}

impl Scraper for MysqlScraper {
    async fn scrape<'a>(
        &'a mut self,
        batch: &'a mut BatchBuilder,
        who: &'a Identity,
    ) -> Result<(), String> {
        let conn = sql_connection(&mut self.connection, &self.options).await?;
        let status = show(conn, "SHOW GLOBAL STATUS").await?;
        let variables = show(conn, "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('max_connections', 'innodb_buffer_pool_size')").await?;

        for entry in STATUS {
            let found = entry.variable.split('|').find_map(|v| status.get(v));
            if let Some(value) = found.and_then(|v| v.parse::<f64>().ok()) {
                let attrs = match entry.attribute {
                    Some(pair) => who.with(&[pair]),
                    None => who.attributes(),
                };
                batch.point(
                    &MetricDesc::new(entry.metric, entry.unit, entry.kind, entry.description),
                    attrs,
                    value,
                );
            }
        }
        for (variable, metric, kind) in [
            ("max_connections", "mysql.connection.max", Gauge),
            (
                "innodb_buffer_pool_size",
                "mysql.buffer_pool.limit",
                UpDownCounter,
            ),
        ] {
            if let Some(v) = variables.get(variable).and_then(|v| v.parse::<f64>().ok()) {
                let unit = if kind == Gauge { "{connection}" } else { "By" };
                batch.point(
                    &MetricDesc::new(metric, unit, kind, variable),
                    who.attributes(),
                    v,
                );
            }
        }

        // Replica lag when this server replicates from a source (MariaDB and MySQL both accept SLAVE).
        let replica = sqlx::query("SHOW SLAVE STATUS")
            .fetch_optional(&mut *conn)
            .await;
        if let Ok(Some(row)) = replica
            && let Some(lag) =
                column_text(&row, "Seconds_Behind_Master").and_then(|v| v.parse::<f64>().ok())
        {
            batch.point(
                &MetricDesc::new(
                    "mysql.replica.time_behind_source",
                    "s",
                    Gauge,
                    "Replication lag",
                ),
                who.attributes(),
                lag,
            );
        }
        Ok(())
    }

    fn disconnect(&mut self) {
        self.connection = None;
    }
}
