//! Connection URLs described without secrets: the host, port and database every series
//! of a server carries. (The shape of a URL is checked with the config, see
//! [`crate::config::ServerKind::check_url`]; each driver parses it fully.)

/// Host, port and database of a URL, for attributes and messages (never the password).
/// A URL that does not parse is described as `localhost` on `default_port`.
pub fn describe(url: &str, default_port: u16) -> (String, u16, Option<String>) {
    let Ok(parsed) = url::Url::parse(url) else {
        return ("localhost".to_owned(), default_port, None);
    };
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .unwrap_or("localhost")
        .to_owned();
    let port = parsed.port().unwrap_or(default_port);
    let database = parsed.path().trim_start_matches('/');
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
    fn description_has_no_password() {
        assert_eq!(
            describe("postgres://u:pw@db.example:6543/app?sslmode=disable", 5432),
            ("db.example".into(), 6543, Some("app".into()))
        );
        assert_eq!(
            describe("redis://127.0.0.1", 6379),
            ("127.0.0.1".into(), 6379, None)
        );
        assert_eq!(
            describe("mysql://root@[::1]/test", 3306),
            ("[::1]".into(), 3306, Some("test".into()))
        );
    }
}
