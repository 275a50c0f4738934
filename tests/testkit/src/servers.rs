//! The machine's real Redis, PostgreSQL and MariaDB for tests that read or change their
//! settings: their URLs, reads of a setting as the server shows it, and guards that put a
//! setting back when dropped (also when the test fails).
//!
//! Every function takes the server's URL, so the same helpers serve a redis-server of the
//! test's own ([`crate::redis::OwnRedis`]) or another database. They panic with what failed:
//! they are for tests.

use std::future::Future;

use sqlx::{Connection, Row};

/// The machine's shared Redis.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The machine's PostgreSQL (user `postgres`, database `postgres`).
pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The machine's MariaDB (user `root`, database `test`).
pub const MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// Runs `work` to completion on a runtime of its own in another thread (for guards, which
/// cannot await, and may drop inside a test's runtime).
pub fn block_on<T: Send + 'static, F: Future<Output = T>>(
    work: impl FnOnce() -> F + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread tokio runtime")
            .block_on(work())
    })
    .join()
    .expect("the block_on thread finished")
}

/// A new connection to the Redis at `url`.
pub fn redis_conn(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("cannot connect to Redis at {url}: {e}"))
}

/// `CONFIG GET name` on the Redis at `url`.
pub fn redis_get(url: &str, name: &str) -> String {
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query(&mut redis_conn(url))
        .unwrap_or_else(|e| panic!("CONFIG GET {name} at {url}: {e}"));
    reply
        .get(1)
        .cloned()
        .unwrap_or_else(|| panic!("Redis at {url} has no setting {name}: {reply:?}"))
}

/// `CONFIG SET name value` on the Redis at `url`.
pub fn redis_set(url: &str, name: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(&mut redis_conn(url))
        .unwrap_or_else(|e| panic!("CONFIG SET {name} {value} at {url}: {e}"));
}

/// A Redis setting, put back as it was when saved on drop.
pub struct RedisGuard {
    url: String,
    name: String,
    original: String,
}

impl RedisGuard {
    /// Remembers `name`'s value on the Redis at `url`.
    pub fn save(url: &str, name: &str) -> Self {
        RedisGuard {
            url: url.to_owned(),
            name: name.to_owned(),
            original: redis_get(url, name),
        }
    }
}

impl Drop for RedisGuard {
    fn drop(&mut self) {
        redis_set(&self.url, &self.name, &self.original);
    }
}

async fn pg(url: &str) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {url}: {e}"))
}

/// `current_setting(name)` on the PostgreSQL at `url` (a new connection sees reloads).
pub async fn pg_show(url: &str, name: &str) -> String {
    sqlx::query("SELECT current_setting($1)")
        .bind(name)
        .fetch_one(&mut pg(url).await)
        .await
        .unwrap_or_else(|e| panic!("current_setting({name}): {e}"))
        .get::<String, _>(0)
}

/// The postgresql.auto.conf entry of `name` on the PostgreSQL at `url`, if any.
pub async fn pg_auto_conf(url: &str, name: &str) -> Option<String> {
    sqlx::query("SELECT setting FROM pg_file_settings WHERE name = $1 AND sourcefile LIKE '%postgresql.auto.conf'")
        .bind(name)
        .fetch_optional(&mut pg(url).await)
        .await
        .unwrap_or_else(|e| panic!("pg_file_settings of {name}: {e}"))
        .map(|row| row.get::<String, _>(0))
}

/// A PostgreSQL parameter whose postgresql.auto.conf entry (or its absence) is put back,
/// and the configuration reloaded, on drop.
pub struct PgGuard {
    url: String,
    name: String,
    entry: Option<String>,
}

impl PgGuard {
    /// Remembers `name`'s postgresql.auto.conf entry on the PostgreSQL at `url`.
    pub async fn save(url: &str, name: &str) -> Self {
        PgGuard {
            url: url.to_owned(),
            name: name.to_owned(),
            entry: pg_auto_conf(url, name).await,
        }
    }
}

impl Drop for PgGuard {
    fn drop(&mut self) {
        let (url, name, entry) = (self.url.clone(), self.name.clone(), self.entry.clone());
        block_on(move || async move {
            let mut conn = pg(&url).await;
            let sql = match entry {
                Some(v) => format!("ALTER SYSTEM SET {name} = '{}'", v.replace('\'', "''")),
                None => format!("ALTER SYSTEM RESET {name}"),
            };
            sqlx::raw_sql(&sql)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            sqlx::raw_sql("SELECT pg_reload_conf()")
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("pg_reload_conf(): {e}"));
        });
    }
}

async fn mysql(url: &str) -> sqlx::MySqlConnection {
    sqlx::MySqlConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to MySQL at {url}: {e}"))
}

/// `@@GLOBAL.name` on the MySQL/MariaDB at `url`, as text.
pub async fn mysql_get(url: &str, name: &str) -> String {
    let row = sqlx::query(&format!("SELECT CAST(@@GLOBAL.{name} AS CHAR)"))
        .fetch_one(&mut mysql(url).await)
        .await
        .unwrap_or_else(|e| panic!("@@GLOBAL.{name}: {e}"));
    row.try_get::<String, _>(0)
        .unwrap_or_else(|_| String::from_utf8_lossy(&row.get::<Vec<u8>, _>(0)).into_owned())
}

/// A MySQL/MariaDB global variable, put back as it was when saved on drop.
pub struct MysqlGuard {
    url: String,
    name: String,
    original: String,
}

impl MysqlGuard {
    /// Remembers `@@GLOBAL.name` on the MySQL/MariaDB at `url`.
    pub async fn save(url: &str, name: &str) -> Self {
        MysqlGuard {
            url: url.to_owned(),
            name: name.to_owned(),
            original: mysql_get(url, name).await,
        }
    }
}

impl Drop for MysqlGuard {
    fn drop(&mut self) {
        let (url, name, original) = (self.url.clone(), self.name.clone(), self.original.clone());
        block_on(move || async move {
            let sql = format!("SET GLOBAL {name} = {original}");
            sqlx::raw_sql(&sql)
                .execute(&mut mysql(&url).await)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        });
    }
}
