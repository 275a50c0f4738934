//! MySQL/MariaDB variables: `SET GLOBAL p = ?` (the value bound: a number as a number,
//! anything else as a string), read back from `@@GLOBAL.p`.
//!
//! Variables that are not dynamic are refused: MariaDB says so in
//! `information_schema.SYSTEM_VARIABLES` (checked before anything is done); elsewhere the
//! server's own error (`ER_INCORRECT_GLOBAL_LOCAL_VAR`, read-only) becomes the refusal.

use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlRow};
use sqlx::{Connection, Row};

use super::target::{BoxFuture, Reading, TargetError, connect, within};
use super::units;
use crate::config::InstanceConfig;
use crate::tuning::action::Target;
use crate::tuning::decision::Restore;

/// MySQL's "unknown system variable".
const ER_UNKNOWN_SYSTEM_VARIABLE: &str = "1193";
/// MySQL's "is a SESSION variable" / "is a read only variable".
const ER_INCORRECT_GLOBAL_LOCAL_VAR: &str = "1238";

fn options(config: &InstanceConfig) -> Result<MySqlConnectOptions, TargetError> {
    let url = config.url.replacen("mariadb://", "mysql://", 1);
    let mut options = MySqlConnectOptions::from_str(&url)
        .map_err(|e| TargetError::Failed(format!("invalid url: {e}")))?;
    if let Some(secret) = crate::collect::server::password(config).map_err(TargetError::Failed)? {
        options = options.password(secret.expose());
    }
    Ok(options)
}

/// MySQL variable names: lower-case letters, digits, `_` and `.` (component variables).
fn check_name(parameter: &str) -> Result<(), TargetError> {
    let ok = !parameter.is_empty()
        && parameter.len() <= 128
        && parameter
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(TargetError::Refused(format!(
            "{parameter:?} is not a MySQL variable name ([a-z0-9_.]+)"
        )))
    }
}

fn text(row: &MySqlRow, index: usize) -> Option<String> {
    match row.try_get::<Option<String>, _>(index) {
        Ok(value) => value,
        Err(_) => row
            .try_get::<Option<Vec<u8>>, _>(index)
            .ok()
            .flatten()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
    }
}

fn server_error(e: sqlx::Error, what: &str) -> TargetError {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = db.message().to_owned();
            if code == ER_INCORRECT_GLOBAL_LOCAL_VAR {
                TargetError::Refused(format!(
                    "the variable is not dynamic or has no global value: {message}"
                ))
            } else {
                TargetError::Refused(format!("the server refused it: {message}"))
            }
        }
        other => TargetError::Failed(format!("{what} failed: {other}")),
    }
}

async fn global_value(conn: &mut MySqlConnection, parameter: &str) -> Result<String, TargetError> {
    let row = sqlx::query(&format!("SELECT CAST(@@GLOBAL.{parameter} AS CHAR)"))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db)
                if db.code().as_deref() == Some(ER_UNKNOWN_SYSTEM_VARIABLE) =>
            {
                TargetError::Refused(format!("the server has no variable named {parameter:?}"))
            }
            _ => server_error(e, "reading @@GLOBAL"),
        })?;
    text(&row, 0).ok_or_else(|| {
        TargetError::Refused(format!(
            "{parameter} has no global value (NULL), so it could not be restored exactly"
        ))
    })
}

async fn read_with(conn: &mut MySqlConnection, parameter: &str) -> Result<Reading, TargetError> {
    // MariaDB: the variable's scope and whether it is read-only.
    let described = sqlx::query(
        "SELECT CAST(READ_ONLY AS CHAR), CAST(VARIABLE_SCOPE AS CHAR)
         FROM information_schema.SYSTEM_VARIABLES WHERE VARIABLE_NAME = ?",
    )
    .bind(parameter.to_ascii_uppercase())
    .fetch_optional(&mut *conn)
    .await;
    let refusal = match described {
        Ok(Some(row)) => {
            let read_only = text(&row, 0).unwrap_or_default();
            let scope = text(&row, 1).unwrap_or_default();
            if read_only.eq_ignore_ascii_case("YES") {
                Some(format!(
                    "{parameter} is read-only on this server (not dynamic): it changes only with a restart"
                ))
            } else if scope.eq_ignore_ascii_case("SESSION ONLY") {
                Some(format!(
                    "{parameter} is a session-only variable: there is no global value to set"
                ))
            } else {
                None
            }
        }
        Ok(None) => {
            return Err(TargetError::Refused(format!(
                "the server has no variable named {parameter:?}"
            )));
        }
        // MySQL has no such table: the SET's own error tells.
        Err(_) => None,
    };
    let value = match &refusal {
        Some(_) => global_value(conn, parameter).await.unwrap_or_default(),
        None => global_value(conn, parameter).await?,
    };
    Ok(Reading {
        restore: Restore::Set(value.clone()),
        value,
        pg_unit: None,
        refusal,
    })
}

/// The current global value of `parameter`.
pub fn read<'a>(
    config: &'a InstanceConfig,
    parameter: &'a str,
) -> BoxFuture<'a, Result<Reading, TargetError>> {
    Box::pin(async move {
        check_name(parameter)?;
        let options = options(config)?;
        within(config.timeout, async {
            let mut conn = connect::<MySqlConnection>(&options).await?;
            let reading = read_with(&mut conn, parameter).await;
            let _ = conn.close().await;
            reading
        })
        .await
    })
}

/// `SET GLOBAL parameter = value`, then `@@GLOBAL.parameter` read back. A number with a
/// `K`/`M`/`G` suffix is sent as the plain number (SET takes no suffixes).
pub fn set<'a>(
    config: &'a InstanceConfig,
    parameter: &'a str,
    value: &'a str,
) -> BoxFuture<'a, Result<String, TargetError>> {
    Box::pin(async move {
        check_name(parameter)?;
        let options = options(config)?;
        let statement = format!("SET GLOBAL {parameter} = ?");
        within(config.timeout, async {
            let mut conn = connect::<MySqlConnection>(&options).await?;
            let query = sqlx::query(&statement);
            let query = match units::parse(Target::Mysql, value, None) {
                Some(n) if n.fract() == 0.0 && n >= 0.0 && n < u64::MAX as f64 => {
                    query.bind(n as u64)
                }
                Some(n) if n.fract() == 0.0 && n < 0.0 && n > i64::MIN as f64 => {
                    query.bind(n as i64)
                }
                Some(n) => query.bind(n),
                None => query.bind(value.to_owned()),
            };
            query
                .execute(&mut conn)
                .await
                .map_err(|e| server_error(e, "SET GLOBAL"))?;
            let after = global_value(&mut conn, parameter).await;
            let _ = conn.close().await;
            after
        })
        .await
    })
}
