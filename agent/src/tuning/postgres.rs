//! PostgreSQL parameters: `ALTER SYSTEM SET p = 'v'` (or `RESET`) then `pg_reload_conf()`,
//! never inside a transaction, read back in a new connection once the reload took.
//!
//! A reading records whether `postgresql.auto.conf` had an entry for the parameter, so a
//! revert is exact: `ALTER SYSTEM RESET` when it had none, else `SET` to that entry.
//! Parameters whose context is `postmaster` or `internal` are refused.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};

use super::action::is_parameter_name;
use super::target::{BoxFuture, Reading, TargetError, connect, within};
use super::units;
use crate::config::InstanceConfig;
use crate::tuning::action::Target;
use crate::tuning::decision::Restore;

/// How long to wait for a reload to show in new connections.
const RELOAD_WAIT: Duration = Duration::from_secs(3);

fn options(config: &InstanceConfig) -> Result<PgConnectOptions, TargetError> {
    let mut options = PgConnectOptions::from_str(&config.url)
        .map_err(|e| TargetError::Failed(format!("invalid url: {e}")))?;
    if let Some(secret) = crate::collect::server::password(config).map_err(TargetError::Failed)? {
        options = options.password(secret.expose());
    }
    Ok(options.application_name("vigil-tuning"))
}

fn check_name(parameter: &str) -> Result<(), TargetError> {
    if is_parameter_name(parameter) {
        Ok(())
    } else {
        Err(TargetError::Refused(format!(
            "{parameter:?} is not a parameter name ([a-z0-9_.-]+)"
        )))
    }
}

/// `value` as a SQL string literal (quotes doubled). Backslashes and control characters
/// are refused rather than escaped.
fn literal(value: &str) -> Result<String, TargetError> {
    if value.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(TargetError::Refused(
            "the value holds a backslash or a control character, which vigil does not pass to ALTER SYSTEM".into(),
        ));
    }
    Ok(format!("'{}'", value.replace('\'', "''")))
}

async fn read_with(conn: &mut PgConnection, parameter: &str) -> Result<Reading, TargetError> {
    let row = sqlx::query(
        "SELECT current_setting(s.name)::text AS shown, s.unit::text AS unit, s.context::text AS context,
                (SELECT f.setting::text FROM pg_file_settings f
                  WHERE f.name = s.name AND f.sourcefile LIKE '%postgresql.auto.conf'
                  ORDER BY f.seqno DESC LIMIT 1) AS auto
         FROM pg_settings s WHERE s.name = $1",
    )
    .bind(parameter)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| {
        TargetError::Failed(format!(
            "cannot read {parameter} from pg_settings and pg_file_settings: {e} (the user needs superuser or pg_read_all_settings)"
        ))
    })?
    .ok_or_else(|| TargetError::Refused(format!("PostgreSQL has no parameter named {parameter:?}")))?;
    let text = |column: &str| row.try_get::<Option<String>, _>(column).ok().flatten();
    let context = text("context").unwrap_or_default();
    let refusal = match context.as_str() {
        "postmaster" => Some(format!(
            "{parameter} needs a server restart (pg_settings.context = postmaster); vigil only changes parameters a reload applies"
        )),
        "internal" => Some(format!(
            "{parameter} cannot be changed (pg_settings.context = internal)"
        )),
        _ => None,
    };
    Ok(Reading {
        value: text("shown").unwrap_or_default(),
        pg_unit: text("unit"),
        restore: match text("auto") {
            Some(entry) => Restore::Set(entry),
            None => Restore::Reset,
        },
        refusal,
    })
}

/// The current value of `parameter`, its unit, and whether `postgresql.auto.conf` has it.
pub fn read<'a>(
    config: &'a InstanceConfig,
    parameter: &'a str,
) -> BoxFuture<'a, Result<Reading, TargetError>> {
    Box::pin(async move {
        check_name(parameter)?;
        let options = options(config)?;
        within(config.timeout, read_new(&options, parameter)).await
    })
}

/// Reads `parameter` on a connection of its own (only new connections see a reload).
async fn read_new(options: &PgConnectOptions, parameter: &str) -> Result<Reading, TargetError> {
    let mut conn = connect::<PgConnection>(options).await?;
    let reading = read_with(&mut conn, parameter).await;
    let _ = conn.close().await;
    reading
}

/// Runs `statement` (an ALTER SYSTEM) and `pg_reload_conf()` on a connection of its own,
/// unless the parameter needs a restart; returns the parameter's unit.
async fn alter(
    options: &PgConnectOptions,
    parameter: &str,
    statement: &str,
) -> Result<Option<String>, TargetError> {
    use sqlx::Executor;
    let mut conn = connect::<PgConnection>(options).await?;
    let reading = read_with(&mut conn, parameter).await?;
    if let Some(refusal) = reading.refusal {
        return Err(TargetError::Refused(refusal));
    }
    // A plain &str runs through the simple query protocol: no transaction block.
    conn.execute(statement).await.map_err(|e| match e {
        sqlx::Error::Database(db) => {
            TargetError::Refused(format!("PostgreSQL refused it: {}", db.message()))
        }
        other => TargetError::Failed(format!("ALTER SYSTEM failed: {other}")),
    })?;
    conn.execute("SELECT pg_reload_conf()").await.map_err(|e| {
        TargetError::Failed(format!(
            "ALTER SYSTEM is done but pg_reload_conf() failed: {e}; reload the server to apply it"
        ))
    })?;
    let _ = conn.close().await;
    Ok(reading.pg_unit)
}

/// `ALTER SYSTEM SET parameter = value` (`restore` = `Set`) or `ALTER SYSTEM RESET
/// parameter` (`Reset`), then `pg_reload_conf()`; returns the value new connections see
/// once it is `expect` (or the last one read, after a few seconds).
pub fn set<'a>(
    config: &'a InstanceConfig,
    parameter: &'a str,
    restore: &'a Restore,
    expect: &'a str,
) -> BoxFuture<'a, Result<String, TargetError>> {
    Box::pin(async move {
        check_name(parameter)?;
        let statement = match restore {
            Restore::Set(value) => format!("ALTER SYSTEM SET {parameter} = {}", literal(value)?),
            Restore::Reset => format!("ALTER SYSTEM RESET {parameter}"),
            Restore::DropIndex { .. } | Restore::Nothing => {
                return Err(TargetError::Refused(format!(
                    "{parameter} is a setting; {restore:?} restores a maintenance operation"
                )));
            }
        };
        let options = options(config)?;
        let unit = within(config.timeout, alter(&options, parameter, &statement)).await?;
        // The postmaster reloads asynchronously: read in new connections until it shows.
        let started = tokio::time::Instant::now();
        loop {
            let now = within(config.timeout, read_new(&options, parameter)).await?;
            if units::same_value(Target::Postgres, &now.value, expect, unit.as_deref())
                || started.elapsed() >= RELOAD_WAIT
            {
                return Ok(now.value);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_double_quotes_and_refuse_escapes() {
        assert_eq!(literal("64MB").unwrap(), "'64MB'");
        assert_eq!(literal("a'b").unwrap(), "'a''b'");
        assert!(literal("a\\'b").is_err());
        assert!(literal("a\nb").is_err());
        assert!(check_name("work_mem").is_ok());
        assert!(check_name("work_mem; DROP TABLE x").is_err());
    }
}
