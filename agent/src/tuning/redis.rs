//! Redis settings: `CONFIG GET` and `CONFIG SET` on a configured instance, with its
//! password and within its timeout.

use super::target::{BoxFuture, Reading, TargetError, within};
use crate::config::InstanceConfig;
use crate::tuning::decision::Restore;

async fn connection(config: &InstanceConfig) -> Result<redis::aio::MultiplexedConnection, String> {
    let mut info: redis::ConnectionInfo =
        redis::IntoConnectionInfo::into_connection_info(config.url.as_str())
            .map_err(|e| format!("invalid url: {e}"))?;
    if let Some(secret) = crate::collect::server::password(config)? {
        let settings = info.redis_settings().clone().set_password(secret.expose());
        info = info.set_redis_settings(settings);
    }
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("cannot connect: {e}"))
}

async fn config_get(
    conn: &mut redis::aio::MultiplexedConnection,
    parameter: &str,
) -> Result<String, TargetError> {
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(parameter)
        .query_async(conn)
        .await
        .map_err(|e| TargetError::Failed(format!("CONFIG GET {parameter} failed: {e}")))?;
    reply
        .chunks(2)
        .find(|pair| pair[0] == parameter)
        .or_else(|| reply.chunks(2).next())
        .and_then(|pair| pair.get(1).cloned())
        .ok_or_else(|| {
            TargetError::Refused(format!("this Redis has no setting named {parameter:?}"))
        })
}

/// An error reply means Redis refused the change (nothing changed); anything else failed.
fn set_error(parameter: &str, e: redis::RedisError) -> TargetError {
    match e.kind() {
        redis::ErrorKind::Server(_) | redis::ErrorKind::Extension => {
            TargetError::Refused(format!("Redis refused CONFIG SET {parameter}: {e}"))
        }
        _ => TargetError::Failed(format!("CONFIG SET {parameter} failed: {e}")),
    }
}

/// The current value of `parameter`.
pub fn read<'a>(
    config: &'a InstanceConfig,
    parameter: &'a str,
) -> BoxFuture<'a, Result<Reading, TargetError>> {
    Box::pin(async move {
        within(config.timeout, async {
            let mut conn = connection(config).await.map_err(TargetError::Failed)?;
            let value = config_get(&mut conn, parameter).await?;
            Ok(Reading {
                restore: Restore::Set(value.clone()),
                value,
                pg_unit: None,
                refusal: None,
            })
        })
        .await
    })
}

/// `CONFIG SET parameter value`, then the value read back.
pub fn set<'a>(
    config: &'a InstanceConfig,
    parameter: &'a str,
    value: &'a str,
) -> BoxFuture<'a, Result<String, TargetError>> {
    Box::pin(async move {
        within(config.timeout, async {
            let mut conn = connection(config).await.map_err(TargetError::Failed)?;
            redis::cmd("CONFIG")
                .arg("SET")
                .arg(parameter)
                .arg(value)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| set_error(parameter, e))?;
            config_get(&mut conn, parameter).await
        })
        .await
    })
}
