//! `[receive.otlp]`: the OTLP receiver applications send their metrics to (gRPC and
//! HTTP/protobuf). Off by default, on loopback by default; a bearer token is read from an
//! environment variable or a file, never written in the config text.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::TlsServerConfig;

/// `[receive]`: inputs that applications push data to.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiveConfig {
    pub otlp: OtlpReceiveConfig,
}

/// `[receive.otlp]`: the OTLP metrics receiver.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpReceiveConfig {
    pub enabled: bool,
    /// Where OTLP/gRPC is served (`MetricsService/Export`); absent: no gRPC.
    pub grpc_listen: Option<SocketAddr>,
    /// Where OTLP/HTTP is served (`POST /v1/metrics`, protobuf or JSON); absent: no HTTP.
    pub http_listen: Option<SocketAddr>,
    /// Environment variable holding the bearer token senders must present.
    pub token_env: Option<String>,
    /// File holding that token (trailing newline ignored; relative to the config file).
    pub token_file: Option<PathBuf>,
    /// Largest request accepted (after decompression); larger ones are refused
    /// (`RESOURCE_EXHAUSTED` / `413`).
    pub max_request_bytes: usize,
    /// Received requests waiting for the pipeline at most; past this, senders are told to
    /// retry later (`UNAVAILABLE` / `503`).
    pub max_pending_requests: usize,
    /// `[receive.otlp.tls]`: serve both transports over TLS (absent = plain).
    pub tls: Option<TlsServerConfig>,
}

impl Default for OtlpReceiveConfig {
    fn default() -> Self {
        OtlpReceiveConfig {
            enabled: false,
            grpc_listen: Some(SocketAddr::from(([127, 0, 0, 1], 4317))),
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 4318))),
            token_env: None,
            token_file: None,
            max_request_bytes: 4 * 1024 * 1024,
            max_pending_requests: 64,
            tls: None,
        }
    }
}

impl OtlpReceiveConfig {
    /// The bearer token `token_env` or `token_file` points at, if any.
    pub fn token(&self) -> Result<Option<crate::secret::Secret>, String> {
        crate::secret::from_env_or_file(
            "token",
            self.token_env.as_deref(),
            self.token_file.as_deref(),
        )
    }

    /// The field at fault and what is wrong with it (fields relative to `receive.otlp`).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.token_env.is_some() && self.token_file.is_some() {
            return Err(("token_env", "and token_file: give one, not both".to_owned()));
        }
        if !(1024..=256 * 1024 * 1024).contains(&self.max_request_bytes) {
            return Err((
                "max_request_bytes",
                "must be between 1024 and 268435456 (256 MiB)".to_owned(),
            ));
        }
        if self.max_pending_requests == 0 {
            return Err(("max_pending_requests", "must be at least 1".to_owned()));
        }
        if self.enabled && self.grpc_listen.is_none() && self.http_listen.is_none() {
            return Err((
                "enabled",
                "is true but neither grpc_listen nor http_listen is set: set one".to_owned(),
            ));
        }
        if let (Some(grpc), Some(http)) = (self.grpc_listen, self.http_listen)
            && grpc == http
            && grpc.port() != 0
        {
            return Err((
                "http_listen",
                format!("is {http}, the same as grpc_listen: give each its own port"),
            ));
        }
        Ok(())
    }

    /// The file paths, to resolve them against the config file's directory.
    pub fn files_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        self.token_file
            .iter_mut()
            .chain(self.tls.iter_mut().flat_map(TlsServerConfig::files_mut))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn off_and_on_loopback_by_default_and_checked() {
        let config = Config::parse("", "t").unwrap();
        let otlp = &config.receive.otlp;
        assert!(!otlp.enabled);
        assert!(otlp.grpc_listen.unwrap().ip().is_loopback());
        assert_eq!(otlp.http_listen.unwrap().port(), 4318);
        let on = Config::parse(
            "[receive.otlp]\nenabled = true\ngrpc_listen = \"127.0.0.1:14317\"\ntoken_env = \"T\"\nmax_request_bytes = 65536\n",
            "t",
        )
        .unwrap();
        assert_eq!(on.receive.otlp.grpc_listen.unwrap().port(), 14317);
        let error = Config::parse(
            "[receive.otlp]\ntoken_env = \"T\"\ntoken_file = \"/t\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("receive.otlp.token_env"), "{error}");
        let error = Config::parse("[receive.otlp]\ntoken = \"s3cret\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("token"),
            "inline secrets are refused: {error}"
        );
        let error = Config::parse("[receive.otlp]\nmax_request_bytes = 10\n", "t")
            .unwrap_err()
            .to_string();
        assert!(error.contains("max_request_bytes"), "{error}");
    }
}
