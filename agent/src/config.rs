//! The agent's configuration: TOML parsed into typed, validated structs.
//!
//! Unknown keys are errors (a typo never silently means "default"), durations are
//! written as text (`"10s"`, `"250ms"`), and [`Config::default_embedded`] is the
//! configuration `vigil run` uses when no file is given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The configuration compiled into the binary.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid config {origin}: `{field}` {problem}")]
    Invalid {
        origin: String,
        field: String,
        problem: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub collect: CollectConfig,
    #[serde(default)]
    pub plugins: PluginsConfig,
    #[serde(default)]
    pub export: ExportConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub tuning: TuningConfig,
    #[serde(default)]
    pub receive: ReceiveConfig,
}

/// `[http]`: the health, status and `/metrics` endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub enabled: bool,
    /// Address to listen on; keep it on loopback unless a token is set.
    pub listen: std::net::SocketAddr,
    /// Environment variable holding a bearer token required by `/status`, `/metrics`
    /// and `/reload` (`/healthz`, `/readyz` and the page itself stay open).
    pub token_env: Option<String>,
    /// File holding that token.
    pub token_file: Option<PathBuf>,
    /// Connections served at once; further ones wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Time a client has to send a request's headers; also how long an idle keep-alive
    /// connection stays open.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time a client has to send a request's body.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Largest request body accepted; larger ones are answered `413`.
    pub max_body_bytes: u64,
    /// `[http.tls]`: serve https instead of http (absent = plain http).
    pub tls: Option<TlsServerConfig>,
}

impl HttpConfig {
    /// The bearer token `token_env` or `token_file` points at, if any.
    pub fn token(&self) -> Result<Option<crate::secret::Secret>, String> {
        crate::secret::from_env_or_file(
            "token",
            self.token_env.as_deref(),
            self.token_file.as_deref(),
        )
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9464)),
            token_env: None,
            token_file: None,
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            tls: None,
        }
    }
}

/// `[agent]`: identity of this agent.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Host name reported with every batch; defaults to the machine's host name.
    pub host: Option<String>,
    /// On SIGTERM/SIGINT: how long to wait for rounds in flight and to send what is queued.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            host: None,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// `[collect]`: the collectors.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CollectConfig {
    #[serde(default)]
    pub system: SystemCollectorConfig,
    /// `[[collect.postgres]]`: PostgreSQL servers.
    #[serde(default)]
    pub postgres: Vec<InstanceConfig>,
    /// `[[collect.mysql]]`: MySQL / MariaDB servers.
    #[serde(default)]
    pub mysql: Vec<InstanceConfig>,
    /// `[[collect.redis]]`: Redis servers.
    #[serde(default)]
    pub redis: Vec<InstanceConfig>,
    /// `[[collect.prometheus]]`: applications' Prometheus `/metrics` endpoints.
    #[serde(default)]
    pub prometheus: Vec<InstanceConfig>,
}

/// The kinds of server vigil collects from: the one table every part of the agent
/// (config validation, collector building, reload, `vigil check`) reads, so a new kind
/// is one variant here plus its collector module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServerKind {
    Postgres,
    Mysql,
    Redis,
    /// An application's Prometheus `/metrics` endpoint (the text exposition format).
    Prometheus,
}

impl ServerKind {
    /// Every kind, in config order.
    pub const ALL: [ServerKind; 4] = [
        ServerKind::Postgres,
        ServerKind::Mysql,
        ServerKind::Redis,
        ServerKind::Prometheus,
    ];

    /// The config table (`[[collect.KEY]]`) and source prefix (`KEY:NAME`).
    pub fn key(self) -> &'static str {
        match self {
            ServerKind::Postgres => "postgres",
            ServerKind::Mysql => "mysql",
            ServerKind::Redis => "redis",
            ServerKind::Prometheus => "prometheus",
        }
    }

    /// URL schemes its connection URL may use.
    pub fn schemes(self) -> &'static [&'static str] {
        match self {
            ServerKind::Postgres => &["postgres", "postgresql"],
            ServerKind::Mysql => &["mysql", "mariadb"],
            ServerKind::Redis => &["redis"],
            ServerKind::Prometheus => &["http", "https"],
        }
    }

    /// The port used when the URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            ServerKind::Postgres => 5432,
            ServerKind::Mysql => 3306,
            ServerKind::Redis => 6379,
            ServerKind::Prometheus => 80,
        }
    }

    /// A URL to show in error messages.
    pub fn example_url(self) -> &'static str {
        match self {
            ServerKind::Postgres => "postgres://user@127.0.0.1:5432/dbname",
            ServerKind::Mysql => "mysql://user@127.0.0.1:3306/dbname",
            ServerKind::Redis => "redis://127.0.0.1:6379/0",
            ServerKind::Prometheus => "http://127.0.0.1:8000/metrics",
        }
    }

    /// Checks the options only some kinds take: a scrape target takes a bearer token and
    /// TLS settings but no password or `top_n`; a server the other way round. The error
    /// names the field (relative to the instance) and what to do.
    pub fn check_options(self, instance: &InstanceConfig) -> Result<(), (String, String)> {
        let fail = |field: &str, problem: String| Err((field.to_owned(), problem));
        let key = self.key();
        if self == ServerKind::Prometheus {
            if instance.password_env.is_some() || instance.password_file.is_some() {
                return fail("password_env", "is not used by a Prometheus endpoint; send a token with bearer_token_env or bearer_token_file".into());
            }
            if instance.top_n.is_some() {
                return fail("top_n", "is not used by a Prometheus endpoint (every exposed series is collected); remove it".into());
            }
            if instance.bearer_token_env.is_some() && instance.bearer_token_file.is_some() {
                return fail(
                    "bearer_token_env",
                    "takes bearer_token_env or bearer_token_file, not both".into(),
                );
            }
            if let Some(tls) = &instance.tls {
                tls.validate()
                    .map_err(|(field, problem)| (format!("tls.{field}"), problem))?;
            }
            return Ok(());
        }
        if instance.bearer_token_env.is_some() || instance.bearer_token_file.is_some() {
            return fail(
                "bearer_token_env",
                format!(
                    "is for [[collect.prometheus]] only; a {key} server takes password_env or password_file"
                ),
            );
        }
        if instance.tls.is_some() {
            return fail(
                "tls",
                format!("is for [[collect.prometheus]] only; set TLS options for {key} in its url"),
            );
        }
        Ok(())
    }

    /// The source name of instance `name` (`postgres:main`): names its batches and its collector.
    pub fn source(self, name: &str) -> String {
        format!("{}:{name}", self.key())
    }

    /// Checks the shape of a connection URL (scheme, host, port). The error never
    /// repeats the URL, which may hold a password; each driver parses it fully when
    /// its collector is built.
    pub fn check_url(self, url: &str) -> Result<(), String> {
        let example = self.example_url();
        let kind = self.key();
        let parsed = url::Url::parse(url)
            .map_err(|e| format!("is not a valid {kind} URL ({e}); write it like {example}"))?;
        if !self.schemes().contains(&parsed.scheme()) {
            return Err(format!(
                "is not a {kind} URL (wrong scheme); write it like {example}"
            ));
        }
        if !parsed.has_host() {
            return Err(format!("names no host; write it like {example}"));
        }
        Ok(())
    }
}

/// One database or cache server to collect from.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Name of the instance, unique per kind; it names the source (`redis:NAME`) and the `vigil.instance` attribute.
    pub name: String,
    /// Connection URL, e.g. `postgres://vigil@127.0.0.1:5432/postgres`, `mysql://root@127.0.0.1:3306/test`,
    /// `redis://127.0.0.1:6379`. Keep the password out of it: use `password_env` or `password_file`.
    pub url: String,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// How often to collect.
    #[serde(default = "ten_seconds", with = "humantime_serde")]
    pub interval: Duration,
    /// Time limit of one collection round; a slower server counts as down for that round.
    #[serde(default = "five_seconds", with = "humantime_serde")]
    pub timeout: Duration,
    /// How many tables, indexes, statements or commands the per-object metrics cover
    /// (largest first; default 10). PostgreSQL and Redis only: MySQL has no per-object
    /// metrics, so a `top_n` there is refused rather than silently ignored.
    #[serde(default)]
    pub top_n: Option<usize>,
    /// Environment variable holding a bearer token sent with every scrape (Prometheus only).
    pub bearer_token_env: Option<String>,
    /// File holding that token (trailing newline ignored; Prometheus only).
    pub bearer_token_file: Option<PathBuf>,
    /// `tls`: how an `https://` endpoint is checked (Prometheus only).
    pub tls: Option<TlsClientConfig>,
}

impl InstanceConfig {
    /// How many objects the per-object metrics cover.
    pub fn top_n(&self) -> usize {
        self.top_n.unwrap_or(DEFAULT_TOP_N)
    }
}

impl CollectConfig {
    /// The configured instances of `kind`.
    pub fn instances(&self, kind: ServerKind) -> &[InstanceConfig] {
        match kind {
            ServerKind::Postgres => &self.postgres,
            ServerKind::Mysql => &self.mysql,
            ServerKind::Redis => &self.redis,
            ServerKind::Prometheus => &self.prometheus,
        }
    }

    /// The source name of the collector `name` names: `system` (when enabled), a source
    /// name (`redis:main`), or an instance name that only one kind uses.
    pub fn collector_source(&self, name: &str) -> Option<String> {
        if name == crate::collect::SYSTEM {
            return self.system.enabled.then(|| name.to_owned());
        }
        let mut found = self.servers().filter_map(|(kind, instance)| {
            let source = kind.source(&instance.name);
            (instance.name == name || source == name).then_some(source)
        });
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }

    /// Every configured instance, to change (the config file's directory resolves its files).
    fn instances_mut(&mut self) -> impl Iterator<Item = &mut InstanceConfig> {
        self.postgres
            .iter_mut()
            .chain(self.mysql.iter_mut())
            .chain(self.redis.iter_mut())
            .chain(self.prometheus.iter_mut())
    }

    /// Every configured server with its kind.
    pub fn servers(&self) -> impl Iterator<Item = (ServerKind, &InstanceConfig)> {
        ServerKind::ALL
            .into_iter()
            .flat_map(move |kind| self.instances(kind).iter().map(move |i| (kind, i)))
    }
}

impl std::fmt::Debug for InstanceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceConfig")
            .field("name", &self.name)
            .field("url", &"<redacted>")
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("top_n", &self.top_n)
            .field("bearer_token_env", &self.bearer_token_env)
            .field("bearer_token_file", &self.bearer_token_file)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `[collect.system]`: host metrics from the operating system.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SystemCollectorConfig {
    pub enabled: bool,
    /// How often to collect.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Also report per-core CPU utilization.
    pub per_cpu: bool,
}

impl Default for SystemCollectorConfig {
    fn default() -> Self {
        SystemCollectorConfig {
            enabled: true,
            interval: Duration::from_secs(10),
            per_cpu: true,
        }
    }
}

/// `[plugins]`: where plugins live and the limits every plugin runs under.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Directory scanned for `*.wasm` components; a plugin's name is its file stem.
    pub dir: PathBuf,
    /// CPU-time budget of one call into a plugin.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// Linear-memory cap of one plugin instance, in MiB.
    pub memory_limit_mib: u64,
    /// Most findings one evaluation may return; more is treated as a faulty plugin.
    pub max_findings: usize,
    /// Per-plugin settings, handed to the plugin as JSON: `[plugins.settings.NAME]`.
    pub settings: BTreeMap<String, toml::Table>,
    /// Where compiled plugins are cached (by content hash); `""` turns the cache off.
    pub cache_dir: PathBuf,
    /// Most MiB the compile cache may hold; past it the least recently used entries are removed.
    pub cache_max_mib: u64,
    /// Consecutive failed evaluations after which a plugin is quarantined.
    pub quarantine_after: u32,
    /// Watch the plugin directory and the config file and apply changes while running.
    pub watch: bool,
    /// Memory limit, in MiB, of the short-lived child process that compiles a plugin
    /// (`vigil run`, `check` and `plugin test` compile outside the agent). An
    /// interpreter-sized component (Python, JavaScript) needs a few hundred MiB.
    pub compile_memory_mib: u64,
    /// Wall-clock time the compiler child may take for one plugin before it is killed.
    #[serde(with = "humantime_serde")]
    pub compile_timeout: Duration,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: PathBuf::from("/var/lib/vigil/plugins"),
            deadline: Duration::from_millis(250),
            memory_limit_mib: 64,
            max_findings: 1000,
            settings: BTreeMap::new(),
            cache_dir: PathBuf::from("/var/cache/vigil/plugins"),
            cache_max_mib: 256,
            quarantine_after: 3,
            watch: true,
            compile_memory_mib: 1024,
            compile_timeout: Duration::from_secs(60),
        }
    }
}

impl PluginsConfig {
    /// The settings of plugin `name` as a JSON object (`{}` when it has none).
    pub fn settings_json(&self, name: &str) -> String {
        self.settings
            .get(name)
            .and_then(|table| serde_json::to_string(table).ok())
            .unwrap_or_else(|| "{}".to_owned())
    }
}

mod headers;
mod kv_list;
mod otel_env;
mod receive;
mod tls;
mod tuning;

pub use headers::Headers;
pub use otel_env::{
    EnvError, ExportSettings, Origin, ResourceAttribute, Signal, SignalOrigins, SignalSettings,
};
pub use receive::{OtlpReceiveConfig, ReceiveConfig};
pub use tls::{TlsClientConfig, TlsServerConfig};
pub use tuning::{AllowEntry, Limit, PolicyConfig, PolicyMode, TuningConfig};

/// `[export]`: where data goes.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    #[serde(default)]
    pub otlp: OtlpConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    /// `[export.alertmanager]`: also deliver alerts to Prometheus Alertmanager (absent = off).
    #[serde(default)]
    pub alertmanager: Option<AlertmanagerConfig>,
    /// What OTLP export uses: `[export.otlp]` with the OpenTelemetry environment
    /// variables applied ([`Config::apply_otel_env`]), per signal.
    #[serde(skip)]
    pub settings: ExportSettings,
    /// `[export.debug]`: also print batches, alert events and tuning decisions to stdout
    /// (absent = off).
    #[serde(default)]
    pub debug: Option<DebugExportConfig>,
}

/// `[export.debug]`: what the debug exporter prints (the OpenTelemetry Collector's
/// `debug` exporter is the model).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DebugExportConfig {
    pub verbosity: Verbosity,
}

/// How much the debug exporter prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    /// One line per batch (source, counts), alert event and tuning decision.
    #[default]
    Basic,
    /// Also one line per datapoint: metric, attributes, value.
    Normal,
    /// Also each datapoint's unit, kind and collection time, and every field of alert
    /// events and decisions.
    Detailed,
}

/// `[export.queue]`: what is kept while the collector cannot be reached.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Metric datapoints kept unsent at most (whole batches are dropped oldest first).
    pub max_metric_points: u64,
    /// Log records (alert events) kept unsent at most (oldest dropped first).
    pub max_log_records: u64,
    /// Longest wait between retries after failed exports (the wait doubles per failure,
    /// starting at the export interval).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_metric_points: 100_000,
            max_log_records: 10_000,
            max_backoff: Duration::from_secs(120),
        }
    }
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    /// Parses the spec's protocol names (`OTEL_EXPORTER_OTLP_PROTOCOL`).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "grpc" => Some(OtlpProtocol::Grpc),
            "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
            _ => None,
        }
    }

    /// The spec's name of the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }

    /// The collector's default endpoint for this protocol.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "http://localhost:4317",
            OtlpProtocol::HttpProtobuf => "http://localhost:4318",
        }
    }
}

/// Payload compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
}

impl Compression {
    /// The name the config and `OTEL_EXPORTER_OTLP_COMPRESSION` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
        }
    }
}

/// `[export.otlp]`: the OTLP exporter.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    pub enabled: bool,
    /// `grpc` or `http/protobuf`. This and every key below is overridden by the
    /// OpenTelemetry variables (see [`ExportSettings`]): use `export.settings`.
    pub protocol: OtlpProtocol,
    /// Base endpoint (for HTTP, `/v1/metrics` and `/v1/logs` are appended).
    pub endpoint: Option<String>,
    /// How often metrics are sent.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Time limit of one export request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub compression: Compression,
    /// Extra request headers (e.g. an API key); never logged.
    pub headers: Headers,
    /// `[export.otlp.tls]`: how the receiver is checked when the endpoint is `https://`.
    #[serde(default)]
    pub tls: TlsClientConfig,
}

/// `[export.alertmanager]`: firing and resolved alerts posted to Alertmanager's v2 API.
///
/// It holds no secret itself (only where to read one), so its `Debug` output is safe to log.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URLs of the Alertmanagers; every one is sent every alert (an HA cluster).
    pub urls: Vec<String>,
    /// Time limit of one request.
    #[serde(default = "five_seconds", with = "humantime_serde")]
    pub timeout: Duration,
    /// How often firing alerts are posted again; keep it below Alertmanager's `resolve_timeout` (5m).
    #[serde(default = "one_minute", with = "humantime_serde")]
    pub resend_interval: Duration,
    /// Labels added to every alert (a label the alert already has is kept).
    #[serde(default)]
    pub extra_labels: BTreeMap<String, String>,
    /// The alerts' `generatorURL`; defaults to the status page, `http://HOST:PORT/` with the
    /// port of `[http] listen` (`http://HOST/` when `[http]` is off).
    pub generator_url: Option<String>,
    /// Environment variable holding a bearer token.
    pub bearer_token_env: Option<String>,
    /// File holding a bearer token (trailing newline ignored; relative to the config file).
    pub bearer_token_file: Option<PathBuf>,
    /// HTTP basic authentication.
    pub basic_auth: Option<BasicAuthConfig>,
    /// `[export.alertmanager.tls]`: how `https://` Alertmanagers are checked.
    #[serde(default)]
    pub tls: TlsClientConfig,
}

/// `basic_auth = { username = "...", password_env = "..." }`: the password comes from the
/// environment or a file, never from the config itself.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    pub username: String,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            enabled: true,
            protocol: OtlpProtocol::Grpc,
            endpoint: None,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            compression: Compression::Gzip,
            headers: Headers::default(),
            tls: TlsClientConfig::default(),
        }
    }
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn one_minute() -> Duration {
    Duration::from_secs(60)
}
/// Objects the per-object metrics cover when `top_n` is not set.
const DEFAULT_TOP_N: usize = 10;

impl Config {
    /// The embedded default configuration.
    pub fn default_embedded() -> Result<Config, ConfigError> {
        Config::parse(EMBEDDED_DEFAULT, "(embedded default)")
    }

    /// Reads and validates a config file. Relative plugin and cache directories are
    /// taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_file_text(path, &text)
    }

    /// Parses the text of the config file at `path` (as [`Config::load`] does).
    pub fn from_file_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut config = Config::parse(text, &path.display().to_string())?;
        if let Some(base) = path.parent() {
            let alertmanager = config.export.alertmanager.as_mut();
            let am_files = alertmanager.into_iter().flat_map(|am| {
                [
                    am.bearer_token_file.as_mut(),
                    am.basic_auth
                        .as_mut()
                        .and_then(|b| b.password_file.as_mut()),
                ]
                .into_iter()
                .flatten()
                .chain(am.tls.files_mut())
            });
            let http_files = config.http.token_file.iter_mut().chain(
                config
                    .http
                    .tls
                    .iter_mut()
                    .flat_map(TlsServerConfig::files_mut),
            );
            let instance_files = config.collect.instances_mut().flat_map(|instance| {
                instance
                    .bearer_token_file
                    .as_mut()
                    .into_iter()
                    .chain(instance.tls.iter_mut().flat_map(TlsClientConfig::files_mut))
            });
            for file in http_files
                .chain(am_files)
                .chain(config.receive.otlp.files_mut())
                .chain(config.export.otlp.tls.files_mut())
                .chain(instance_files)
            {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
            if config.tuning.audit_file.is_relative() {
                config.tuning.audit_file = base.join(&config.tuning.audit_file);
            }
            for dir in [&mut config.plugins.dir, &mut config.plugins.cache_dir] {
                if dir.is_relative() && !dir.as_os_str().is_empty() {
                    *dir = base.join(&*dir);
                }
            }
        }
        Ok(config)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        config.validate(origin)?;
        config.apply_otel_env(|_| None)?;
        Ok(config)
    }

    /// Loads `path`, or the embedded default when there is none.
    pub fn load_or_default(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(path) => Config::load(path),
            None => Config::default_embedded(),
        }
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, problem: &str| ConfigError::Invalid {
            origin: origin.to_owned(),
            field: field.to_owned(),
            problem: problem.to_owned(),
        };
        if self.collect.system.interval < Duration::from_millis(100) {
            return Err(invalid("collect.system.interval", "must be at least 100ms"));
        }
        for kind in ServerKind::ALL {
            let mut names = std::collections::HashSet::new();
            for (i, instance) in self.collect.instances(kind).iter().enumerate() {
                let field = format!("collect.{}[{i}]", kind.key());
                if instance.name.is_empty() || !names.insert(instance.name.as_str()) {
                    return Err(invalid(
                        &format!("{field}.name"),
                        "must be non-empty and unique per kind",
                    ));
                }
                if let Err(problem) = kind.check_url(&instance.url) {
                    return Err(invalid(&format!("{field}.url"), &problem));
                }
                if let Err((field_name, problem)) = kind.check_options(instance) {
                    return Err(invalid(&format!("{field}.{field_name}"), &problem));
                }
                if kind == ServerKind::Mysql && instance.top_n.is_some() {
                    return Err(invalid(
                        &format!("{field}.top_n"),
                        "is not supported for MySQL/MariaDB (it has no per-object metrics); remove it",
                    ));
                }
                if instance.interval < Duration::from_millis(100) || instance.timeout.is_zero() {
                    return Err(invalid(
                        &field,
                        "needs interval >= 100ms and a non-zero timeout",
                    ));
                }
                if instance.password_env.is_some() && instance.password_file.is_some() {
                    return Err(invalid(
                        &field,
                        "takes password_env or password_file, not both",
                    ));
                }
            }
        }
        if self.plugins.deadline < Duration::from_millis(1) {
            return Err(invalid("plugins.deadline", "must be at least 1ms"));
        }
        if !(1..=4096).contains(&self.plugins.memory_limit_mib) {
            return Err(invalid(
                "plugins.memory_limit_mib",
                "must be between 1 and 4096",
            ));
        }
        if !(64..=65_536).contains(&self.plugins.compile_memory_mib) {
            return Err(invalid(
                "plugins.compile_memory_mib",
                "must be between 64 and 65536",
            ));
        }
        if self.plugins.compile_timeout < Duration::from_secs(1) {
            return Err(invalid("plugins.compile_timeout", "must be at least 1s"));
        }
        if self.plugins.quarantine_after == 0 {
            return Err(invalid("plugins.quarantine_after", "must be at least 1"));
        }
        if self.plugins.max_findings == 0 {
            return Err(invalid("plugins.max_findings", "must be at least 1"));
        }
        if self.export.otlp.interval < Duration::from_millis(100) {
            return Err(invalid("export.otlp.interval", "must be at least 100ms"));
        }
        if let Err((field, problem)) = self.receive.otlp.validate() {
            return Err(invalid(&format!("receive.otlp.{field}"), &problem));
        }
        if self.http.token_env.is_some() && self.http.token_file.is_some() {
            return Err(invalid("http", "takes token_env or token_file, not both"));
        }
        if !(1..=65_536).contains(&self.http.max_connections) {
            return Err(invalid(
                "http.max_connections",
                "must be between 1 and 65536",
            ));
        }
        if self.http.header_timeout < Duration::from_millis(100)
            || self.http.body_timeout < Duration::from_millis(100)
        {
            return Err(invalid(
                "http",
                "header_timeout and body_timeout must be at least 100ms",
            ));
        }
        if self.export.queue.max_metric_points == 0 || self.export.queue.max_log_records == 0 {
            return Err(invalid(
                "export.queue",
                "max_metric_points and max_log_records must be at least 1",
            ));
        }
        if let Some(endpoint) = &self.export.otlp.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(invalid(
                "export.otlp.endpoint",
                "must be an http:// or https:// URL, e.g. \"http://localhost:4317\"",
            ));
        }
        if let Err(problem) = self.export.otlp.headers.check() {
            return Err(invalid("export.otlp.headers", &problem));
        }
        self.export
            .otlp
            .tls
            .validate()
            .map_err(|(field, problem)| invalid(&format!("export.otlp.tls.{field}"), &problem))?;
        if let Some(am) = &self.export.alertmanager {
            am.tls.validate().map_err(|(field, problem)| {
                invalid(&format!("export.alertmanager.tls.{field}"), &problem)
            })?;
            am.validate().map_err(|(field, problem)| {
                invalid(&format!("export.alertmanager.{field}"), &problem)
            })?;
        }
        self.tuning
            .validate(&self.collect)
            .map_err(|(field, problem)| invalid(&format!("tuning.{field}"), &problem))?;
        Ok(())
    }

    /// Resolves `export.settings` from `[export.otlp]` and the OpenTelemetry variables
    /// `env` returns (see [`ExportSettings`]); a bad value is an error naming its variable.
    pub fn apply_otel_env(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        self.export.settings =
            ExportSettings::resolve(&self.export.otlp, env).map_err(|e| ConfigError::Invalid {
                origin: "(environment)".to_owned(),
                field: e.variable,
                problem: e.problem,
            })?;
        Ok(())
    }
}

impl AlertmanagerConfig {
    /// Label names Alertmanager accepts: `[a-zA-Z_][a-zA-Z0-9_]*`.
    pub fn is_label_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    /// The field at fault and what is wrong with it.
    fn validate(&self) -> Result<(), (String, String)> {
        let fail = |field: &str, problem: &str| Err((field.to_owned(), problem.to_owned()));
        if self.urls.is_empty() {
            return fail(
                "urls",
                "must list at least one Alertmanager, e.g. [\"http://127.0.0.1:9093\"]",
            );
        }
        for (i, url) in self.urls.iter().enumerate() {
            if !is_http_url(url) {
                return fail(
                    &format!("urls[{i}]"),
                    "must be an http:// or https:// URL with a host and no credentials (use basic_auth), e.g. \"http://127.0.0.1:9093\"",
                );
            }
        }
        if let Some(url) = &self.generator_url
            && !is_http_url(url)
        {
            return fail("generator_url", "must be an http:// or https:// URL");
        }
        if self.timeout.is_zero() {
            return fail("timeout", "must be more than 0s");
        }
        if self.resend_interval < Duration::from_secs(1) {
            return fail("resend_interval", "must be at least 1s");
        }
        for (name, value) in &self.extra_labels {
            if !Self::is_label_name(name) {
                return fail(
                    "extra_labels",
                    &format!("has {name:?}, which is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
                );
            }
            if value.is_empty() {
                return fail("extra_labels", &format!("has an empty value for {name:?}"));
            }
        }
        let auths = [
            self.bearer_token_env.is_some(),
            self.bearer_token_file.is_some(),
            self.basic_auth.is_some(),
        ];
        if auths.iter().filter(|set| **set).count() > 1 {
            return fail(
                "basic_auth",
                "takes one of bearer_token_env, bearer_token_file and basic_auth, not several",
            );
        }
        if let Some(basic) = &self.basic_auth {
            if basic.username.is_empty() {
                return fail("basic_auth.username", "must not be empty");
            }
            if basic.password_env.is_some() == basic.password_file.is_some() {
                return fail(
                    "basic_auth",
                    "takes exactly one of password_env and password_file",
                );
            }
        }
        Ok(())
    }
}

/// Whether `url` parses as an http(s) URL with a host and without credentials in it.
fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.has_host()
            && u.username().is_empty()
            && u.password().is_none()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked_without_repeating_them() {
        assert!(
            ServerKind::Postgres
                .check_url("postgres://u@127.0.0.1:5432/test")
                .is_ok()
        );
        assert!(
            ServerKind::Mysql
                .check_url("mysql://root@127.0.0.1:3306/test")
                .is_ok()
        );
        assert!(
            ServerKind::Redis
                .check_url("redis://127.0.0.1:6379/0")
                .is_ok()
        );
        let err = ServerKind::Postgres
            .check_url("postgres://u:secret@host:notaport/db")
            .unwrap_err();
        assert!(
            err.contains("postgres://user@127.0.0.1:5432/dbname"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
        assert!(ServerKind::Redis.check_url("http://127.0.0.1").is_err());
        let config = Config::parse(
            "[[collect.redis]]\nname = \"a\"\nurl = \"redis://127.0.0.1\"\n[[collect.postgres]]\nname = \"b\"\nurl = \"postgres://127.0.0.1/x\"\n",
            "x",
        )
        .unwrap();
        let servers: Vec<String> = config
            .collect
            .servers()
            .map(|(kind, i)| kind.source(&i.name))
            .collect();
        assert_eq!(servers, ["postgres:b", "redis:a"]);
    }

    #[test]
    fn a_prometheus_endpoint_takes_a_token_and_tls_and_refuses_server_options() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        let config = Config::from_file_text(
            &path,
            "[[collect.prometheus]]\nname = \"shop\"\nurl = \"https://127.0.0.1:8443/metrics\"\nbearer_token_file = \"token\"\ntls = { ca_file = \"ca.pem\" }\n",
        )
        .unwrap();
        let shop = &config.collect.prometheus[0];
        assert_eq!(
            shop.bearer_token_file.as_deref(),
            Some(dir.path().join("token").as_path())
        );
        let ca = shop.tls.as_ref().and_then(|t| t.ca_file.clone());
        assert_eq!(
            ca,
            Some(dir.path().join("ca.pem")),
            "relative to the config file"
        );
        assert_eq!(
            config.collect.collector_source("shop").as_deref(),
            Some("prometheus:shop")
        );
        for (text, field) in [
            (
                "[[collect.prometheus]]\nname = \"a\"\nurl = \"http://h/metrics\"\npassword_env = \"X\"\n",
                "collect.prometheus[0].password_env",
            ),
            (
                "[[collect.prometheus]]\nname = \"a\"\nurl = \"http://h/metrics\"\ntop_n = 3\n",
                "collect.prometheus[0].top_n",
            ),
            (
                "[[collect.prometheus]]\nname = \"a\"\nurl = \"redis://h\"\n",
                "collect.prometheus[0].url",
            ),
            (
                "[[collect.prometheus]]\nname = \"a\"\nurl = \"http://h/metrics\"\ntls = { cert_file = \"c.pem\" }\n",
                "collect.prometheus[0].tls.key_file",
            ),
            (
                "[[collect.redis]]\nname = \"a\"\nurl = \"redis://h\"\nbearer_token_env = \"X\"\n",
                "collect.redis[0].bearer_token_env",
            ),
            (
                "[[collect.postgres]]\nname = \"a\"\nurl = \"postgres://h/x\"\ntls = {}\n",
                "collect.postgres[0].tls",
            ),
        ] {
            let err = Config::parse(text, "x").unwrap_err().to_string();
            assert!(err.contains(&format!("`{field}`")), "{text}: {err}");
        }
    }

    #[test]
    fn embedded_default_parses() {
        let config = Config::default_embedded().unwrap();
        assert!(config.collect.system.enabled);
        assert_eq!(config.collect.system.interval, Duration::from_secs(10));
        assert_eq!(config.export.otlp.protocol, OtlpProtocol::Grpc);
        assert_eq!(config.export.settings.metrics.url, "http://localhost:4317");
        assert_eq!(config.export.settings.logs.url, "http://localhost:4317");
    }

    #[test]
    fn typo_is_an_error_with_its_location() {
        let err = Config::parse("[collect.system]\nintervall = \"5s\"\n", "agent.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("agent.toml"), "{err}");
        assert!(err.contains("intervall"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_duration_is_an_error() {
        let err = Config::parse("[plugins]\ndeadline = \"soon\"\n", "x.toml").unwrap_err();
        assert!(err.to_string().contains("deadline"), "{err}");
    }

    #[test]
    fn otel_env_overrides_the_file_and_a_bad_value_names_its_variable() {
        let mut config = Config::parse(
            "[export.otlp]\nprotocol = \"grpc\"\nendpoint = \"http://a:4317\"\n",
            "x",
        )
        .unwrap();
        config
            .apply_otel_env(|k| match k {
                "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".into()),
                "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://b:4318".into()),
                _ => None,
            })
            .unwrap();
        let metrics = &config.export.settings.metrics;
        assert_eq!(metrics.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(metrics.url, "http://b:4318/v1/metrics");
        assert_eq!(
            config.export.otlp.protocol,
            OtlpProtocol::Grpc,
            "the file stays"
        );
        let err = config
            .apply_otel_env(|k| (k == "OTEL_EXPORTER_OTLP_PROTOCOL").then(|| "http/json".into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`OTEL_EXPORTER_OTLP_PROTOCOL`") && err.contains("http/json"),
            "{err}"
        );
        let err = Config::parse("[export.otlp]\nheaders = { \"a b\" = \"v\" }\n", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`export.otlp.headers`"), "{err}");
    }

    #[test]
    fn plugin_settings_become_json() {
        let config = Config::parse(
            "[plugins.settings.threshold]\nrules = [{ name = \"r\", value = 1.5 }]\n",
            "x",
        )
        .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&config.plugins.settings_json("threshold")).unwrap();
        assert_eq!(json["rules"][0]["value"], 1.5);
        assert_eq!(config.plugins.settings_json("other"), "{}");
    }

    #[test]
    fn alertmanager_section_is_checked() {
        let config = Config::parse(
            "[export.alertmanager]\nurls = [\"http://127.0.0.1:9093\", \"https://am2:9093/\"]\nresend_interval = \"30s\"\nextra_labels = { team = \"ops\" }\nbearer_token_env = \"AM_TOKEN\"\n",
            "x",
        )
        .unwrap();
        let am = config.export.alertmanager.unwrap();
        assert_eq!(am.urls.len(), 2);
        assert_eq!(am.timeout, Duration::from_secs(5));
        assert_eq!(am.resend_interval, Duration::from_secs(30));
        assert!(
            Config::default_embedded()
                .unwrap()
                .export
                .alertmanager
                .is_none()
        );
        for (text, field) in [
            ("urls = []", "urls"),
            ("urls = [\"127.0.0.1:9093\"]", "urls[0]"),
            ("urls = [\"http://a\", \"http://u:p@b\"]", "urls[1]"),
            (
                "urls = [\"http://a\"]\nextra_labels = { \"a.b\" = \"x\" }",
                "extra_labels",
            ),
            (
                "urls = [\"http://a\"]\nresend_interval = \"0s\"",
                "resend_interval",
            ),
            (
                "urls = [\"http://a\"]\nbasic_auth = { username = \"u\" }",
                "basic_auth",
            ),
            (
                "urls = [\"http://a\"]\nbearer_token_env = \"T\"\nbearer_token_file = \"/t\"",
                "basic_auth",
            ),
        ] {
            let err = Config::parse(&format!("[export.alertmanager]\n{text}\n"), "x")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("`export.alertmanager.{field}`")),
                "{text}: {err}"
            );
        }
        let err = Config::parse(
            "[export.alertmanager]\nurls = [\"http://a\"]\nbearer_token = \"s3cret\"\n",
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("bearer_token"),
            "inline secrets are refused: {err}"
        );
    }
}
