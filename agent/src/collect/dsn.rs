//! Connection URLs: checked with each driver's own parser, described without secrets.

use std::str::FromStr;

/// Checks `url` for a collector of `kind` (`postgres`, `mysql`, `redis`). The error
/// never repeats the URL (it may hold a password).
pub fn check(kind: &str, url: &str) -> Result<(), String> {
    let example = match kind {
        "postgres" => "postgres://user@127.0.0.1:5432/dbname",
        "mysql" => "mysql://user@127.0.0.1:3306/dbname",
        _ => "redis://127.0.0.1:6379/0",
    };
    let parsed = match kind {
        "postgres" if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            sqlx::postgres::PgConnectOptions::from_str(url)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        "mysql" if url.starts_with("mysql://") || url.starts_with("mariadb://") => {
            sqlx::mysql::MySqlConnectOptions::from_str(&url.replacen("mariadb://", "mysql://", 1))
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        "redis" if url.starts_with("redis://") => redis::Client::open(url)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        _ => Err("wrong scheme".to_owned()),
    };
    parsed
        .map_err(|reason| format!("is not a valid {kind} URL ({reason}); write it like {example}"))
}

/// Host, port and database of a URL, for attributes and messages (never the password).
pub fn describe(url: &str, default_port: u16) -> (String, u16, Option<String>) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || host_port.starts_with('[') => {
            (h.to_owned(), p.parse().unwrap_or(default_port))
        }
        _ => (host_port.to_owned(), default_port),
    };
    let database = path.trim_start_matches('/');
    let host = if host.is_empty() {
        "localhost".to_owned()
    } else {
        host
    };
    (
        host,
        port,
        (!database.is_empty()).then(|| database.to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_by_their_driver() {
        assert!(check("postgres", "postgres://u@127.0.0.1:5432/test").is_ok());
        assert!(check("mysql", "mysql://root@127.0.0.1:3306/test").is_ok());
        assert!(check("redis", "redis://127.0.0.1:6379/0").is_ok());
        let err = check("postgres", "postgres://u:secret@host:notaport/db").unwrap_err();
        assert!(
            err.contains("postgres://user@127.0.0.1:5432/dbname"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
        assert!(check("redis", "http://127.0.0.1").is_err());
    }

    #[test]
    fn description_has_no_password() {
        assert_eq!(
            describe("postgres://u:pw@db.example:6543/app?sslmode=disable", 5432),
            ("db.example".into(), 6543, Some("app".into()))
        );
        assert_eq!(
            describe("redis://127.0.0.1", 6379),
            ("127.0.0.1".into(), 6379, None)
        );
    }
}
