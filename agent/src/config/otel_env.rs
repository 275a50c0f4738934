//! The OpenTelemetry environment variables, resolved once per config load into the
//! settings each exported signal (metrics, logs) uses, with where each value came from.
//!
//! Precedence of every exporter setting: the per-signal variable
//! (`OTEL_EXPORTER_OTLP_METRICS_*`, `OTEL_EXPORTER_OTLP_LOGS_*`) > the general one
//! (`OTEL_EXPORTER_OTLP_*`) > `[export.otlp]` of the config file > the default. An empty
//! variable counts as unset; a bad value is an error naming the variable.
//!
//! Endpoints follow the OTLP exporter specification: for `http/protobuf` a general
//! endpoint (variable, file or default) is a base URL that gets `/v1/metrics` or
//! `/v1/logs` appended, while a per-signal endpoint is used as is; gRPC uses either as is.
//!
//! The resource: vigil's own attributes (`service.name = vigil`, `service.version`,
//! `host.name`), overridden or extended by `OTEL_RESOURCE_ATTRIBUTES`, and
//! `service.name` by `OTEL_SERVICE_NAME` above all.

use std::path::PathBuf;
use std::time::Duration;

use super::headers::Headers;
use super::kv_list;
use super::tls::TlsClientConfig;
use super::{Compression, OtlpConfig, OtlpProtocol};

/// Lowest `OTEL_METRIC_EXPORT_INTERVAL` accepted, as for `export.otlp.interval`.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// A signal vigil exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Batches and self-telemetry.
    Metrics,
    /// Alert events and tuning decisions.
    Logs,
}

impl Signal {
    /// `metrics` or `logs`: the signal's name in the OTLP HTTP path and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    fn env_name(self) -> &'static str {
        match self {
            Signal::Metrics => "METRICS",
            Signal::Logs => "LOGS",
        }
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// This environment variable.
    Env(String),
    /// This key of the config file, set to something other than its default.
    File(&'static str),
    /// The default (also when the file sets the default value).
    Default,
    /// vigil itself (its own resource attributes).
    Agent,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Env(var) => f.write_str(var),
            Origin::File(key) => write!(f, "config {key}"),
            Origin::Default => f.write_str("default"),
            Origin::Agent => f.write_str("vigil"),
        }
    }
}

/// Where each value of a [`SignalSettings`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalOrigins {
    pub protocol: Origin,
    pub endpoint: Origin,
    pub headers: Origin,
    pub timeout: Origin,
    pub compression: Origin,
    pub ca_file: Origin,
    pub cert_file: Origin,
    pub key_file: Origin,
}

/// How one signal is exported.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalSettings {
    pub signal: Signal,
    pub protocol: OtlpProtocol,
    /// Where requests go: the full URL for HTTP (`.../v1/metrics`), the server for gRPC.
    pub url: String,
    /// Request headers (gRPC metadata); their values are never shown.
    pub headers: Headers,
    /// Time limit of one request.
    pub timeout: Duration,
    pub compression: Compression,
    /// `ca_file`, `cert_file` and `key_file` from `CERTIFICATE`, `CLIENT_CERTIFICATE` and
    /// `CLIENT_KEY`; `insecure_skip_verify` from the file only.
    pub tls: TlsClientConfig,
    pub origins: SignalOrigins,
}

/// One resource attribute with its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceAttribute {
    pub key: String,
    pub value: String,
    pub origin: Origin,
}

/// The effective export settings: both signals, the export interval and the resource
/// attributes the environment adds.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSettings {
    pub metrics: SignalSettings,
    pub logs: SignalSettings,
    /// How often metrics are sent (`OTEL_METRIC_EXPORT_INTERVAL` > `export.otlp.interval`).
    pub interval: Duration,
    pub interval_origin: Origin,
    /// `OTEL_RESOURCE_ATTRIBUTES` then `OTEL_SERVICE_NAME`, one entry per key (the last wins).
    env_resource: Vec<ResourceAttribute>,
}

/// A variable with a value vigil cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable} {problem}")]
pub struct EnvError {
    pub variable: String,
    pub problem: String,
}

impl Default for ExportSettings {
    /// The settings of the default `[export.otlp]` with no variable set.
    fn default() -> Self {
        match ExportSettings::resolve(&OtlpConfig::default(), |_| None) {
            Ok(settings) => settings,
            // Only a variable's value can fail to resolve, and none is read here.
            Err(e) => unreachable!("default export settings: {e}"),
        }
    }
}

impl ExportSettings {
    /// Resolves the settings of both signals from `file` and the variables `env` returns.
    pub fn resolve(
        file: &OtlpConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, EnvError> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let (interval, interval_origin) = pick(
            found(&env, "OTEL_METRIC_EXPORT_INTERVAL"),
            parse_interval,
            (file.interval, "export.otlp.interval"),
            OtlpConfig::default().interval,
        )?;
        Ok(ExportSettings {
            metrics: resolve_signal(file, &env, Signal::Metrics)?,
            logs: resolve_signal(file, &env, Signal::Logs)?,
            interval,
            interval_origin,
            env_resource: resolve_resource(&env)?,
        })
    }

    /// Both signals' settings.
    pub fn signals(&self) -> [&SignalSettings; 2] {
        [&self.metrics, &self.logs]
    }

    /// The exported resource's attributes: vigil's own (`service.name`,
    /// `service.version`, `host.name` = `host`), each replaced by an environment
    /// attribute of the same key, then the other environment attributes in order.
    pub fn resource_attributes(&self, host: &str) -> Vec<ResourceAttribute> {
        let own = [
            ("service.name", "vigil"),
            ("service.version", env!("CARGO_PKG_VERSION")),
            ("host.name", host),
        ];
        let mut attributes: Vec<ResourceAttribute> = own
            .into_iter()
            .map(|(key, value)| ResourceAttribute {
                key: key.to_owned(),
                value: value.to_owned(),
                origin: Origin::Agent,
            })
            .collect();
        for attribute in &self.env_resource {
            match attributes.iter_mut().find(|a| a.key == attribute.key) {
                Some(existing) => *existing = attribute.clone(),
                None => attributes.push(attribute.clone()),
            }
        }
        attributes
    }
}

/// A set variable: its name and value.
type Found = Option<(String, String)>;

fn found(env: &impl Fn(&str) -> Option<String>, name: &str) -> Found {
    env(name).map(|value| (name.to_owned(), value))
}

/// `OTEL_EXPORTER_OTLP_{SIGNAL}_{name}` if set, else `OTEL_EXPORTER_OTLP_{name}`; the
/// flag says whether it is the per-signal one.
fn exporter_var(
    env: &impl Fn(&str) -> Option<String>,
    signal: Signal,
    name: &str,
) -> Option<(String, String, bool)> {
    let per_signal = format!("OTEL_EXPORTER_OTLP_{}_{name}", signal.env_name());
    if let Some(value) = env(&per_signal) {
        return Some((per_signal, value, true));
    }
    let general = format!("OTEL_EXPORTER_OTLP_{name}");
    env(&general).map(|value| (general, value, false))
}

/// The variable's value parsed with `parse`, else the file's value (origin: its key
/// unless it equals `default`).
fn pick<T: PartialEq>(
    var: Found,
    parse: impl FnOnce(&str) -> Result<T, String>,
    (file, key): (T, &'static str),
    default: T,
) -> Result<(T, Origin), EnvError> {
    if let Some((variable, value)) = var {
        return match parse(value.trim()) {
            Ok(parsed) => Ok((parsed, Origin::Env(variable))),
            Err(problem) => Err(EnvError { variable, problem }),
        };
    }
    let origin = if file == default {
        Origin::Default
    } else {
        Origin::File(key)
    };
    Ok((file, origin))
}

fn signal_var(env: &impl Fn(&str) -> Option<String>, signal: Signal, name: &str) -> Found {
    exporter_var(env, signal, name).map(|(var, value, _)| (var, value))
}

fn resolve_signal(
    file: &OtlpConfig,
    env: &impl Fn(&str) -> Option<String>,
    signal: Signal,
) -> Result<SignalSettings, EnvError> {
    let default = OtlpConfig::default();
    let (protocol, protocol_origin) = pick(
        signal_var(env, signal, "PROTOCOL"),
        parse_protocol,
        (file.protocol, "export.otlp.protocol"),
        default.protocol,
    )?;
    let (url, endpoint_origin) = resolve_url(file, env, signal, protocol)?;
    let (headers, headers_origin) = pick(
        signal_var(env, signal, "HEADERS"),
        parse_headers,
        (file.headers.clone(), "export.otlp.headers"),
        default.headers.clone(),
    )?;
    let (timeout, timeout_origin) = pick(
        signal_var(env, signal, "TIMEOUT"),
        parse_timeout,
        (file.timeout, "export.otlp.timeout"),
        default.timeout,
    )?;
    let (compression, compression_origin) = pick(
        signal_var(env, signal, "COMPRESSION"),
        parse_compression,
        (file.compression, "export.otlp.compression"),
        default.compression,
    )?;
    let path = |var| signal_var(env, signal, var);
    let (ca_file, ca_origin) = pick(
        path("CERTIFICATE"),
        parse_path,
        (file.tls.ca_file.clone(), "export.otlp.tls.ca_file"),
        None,
    )?;
    let (cert_file, cert_origin) = pick(
        path("CLIENT_CERTIFICATE"),
        parse_path,
        (file.tls.cert_file.clone(), "export.otlp.tls.cert_file"),
        None,
    )?;
    let (key_file, key_origin) = pick(
        path("CLIENT_KEY"),
        parse_path,
        (file.tls.key_file.clone(), "export.otlp.tls.key_file"),
        None,
    )?;
    Ok(SignalSettings {
        signal,
        protocol,
        url,
        headers,
        timeout,
        compression,
        tls: TlsClientConfig {
            ca_file,
            cert_file,
            key_file,
            insecure_skip_verify: file.tls.insecure_skip_verify,
        },
        origins: SignalOrigins {
            protocol: protocol_origin,
            endpoint: endpoint_origin,
            headers: headers_origin,
            timeout: timeout_origin,
            compression: compression_origin,
            ca_file: ca_origin,
            cert_file: cert_origin,
            key_file: key_origin,
        },
    })
}

/// The signal's URL: a per-signal endpoint as is; a general one (variable, file or the
/// protocol's default) as a base that HTTP appends `/v1/{signal}` to.
fn resolve_url(
    file: &OtlpConfig,
    env: &impl Fn(&str) -> Option<String>,
    signal: Signal,
    protocol: OtlpProtocol,
) -> Result<(String, Origin), EnvError> {
    let (base, origin) = match exporter_var(env, signal, "ENDPOINT") {
        Some((variable, value, per_signal)) => {
            let value = value.trim().to_owned();
            if let Err(problem) = check_endpoint(&value) {
                return Err(EnvError { variable, problem });
            }
            if per_signal {
                return Ok((value, Origin::Env(variable)));
            }
            (value, Origin::Env(variable))
        }
        None => match &file.endpoint {
            Some(endpoint) => (endpoint.clone(), Origin::File("export.otlp.endpoint")),
            None => (protocol.default_endpoint().to_owned(), Origin::Default),
        },
    };
    let url = match protocol {
        OtlpProtocol::Grpc => base,
        OtlpProtocol::HttpProtobuf => {
            format!("{}/v1/{}", base.trim_end_matches('/'), signal.as_str())
        }
    };
    Ok((url, origin))
}

fn check_endpoint(value: &str) -> Result<(), String> {
    let usable = url::Url::parse(value)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
    if usable {
        Ok(())
    } else {
        Err(format!(
            "is {value:?}, which is not an http:// or https:// URL with a host; write it like \"http://collector:4317\" (gRPC) or \"http://collector:4318\" (http/protobuf)"
        ))
    }
}

fn parse_protocol(value: &str) -> Result<OtlpProtocol, String> {
    OtlpProtocol::parse(value).ok_or_else(|| {
        let json = if value == "http/json" {
            " (vigil does not send OTLP as JSON)"
        } else {
            ""
        };
        format!("is {value:?}{json}; supported values are \"grpc\" and \"http/protobuf\"")
    })
}

fn parse_headers(value: &str) -> Result<Headers, String> {
    Headers::from_pairs(kv_list::parse(value)?)
}

fn parse_timeout(value: &str) -> Result<Duration, String> {
    match value.parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "is {value:?}; write the time limit of one request in milliseconds, a whole number of at least 1 (e.g. 10000 for 10 s)"
        )),
    }
}

fn parse_interval(value: &str) -> Result<Duration, String> {
    match value.parse::<u64>() {
        Ok(ms) if Duration::from_millis(ms) >= MIN_INTERVAL => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "is {value:?}; write the export interval in milliseconds, a whole number of at least {} (e.g. 10000 for 10 s)",
            MIN_INTERVAL.as_millis()
        )),
    }
}

fn parse_compression(value: &str) -> Result<Compression, String> {
    match value.to_ascii_lowercase().as_str() {
        "gzip" => Ok(Compression::Gzip),
        "none" => Ok(Compression::None),
        _ => Err(format!(
            "is {value:?}; supported values are \"gzip\" and \"none\""
        )),
    }
}

fn parse_path(value: &str) -> Result<Option<PathBuf>, String> {
    Ok(Some(PathBuf::from(value)))
}

/// `OTEL_RESOURCE_ATTRIBUTES`, then `OTEL_SERVICE_NAME` as `service.name`.
fn resolve_resource(
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<ResourceAttribute>, EnvError> {
    let mut attributes: Vec<ResourceAttribute> = Vec::new();
    let mut set = |key: String, value: String, variable: &str| {
        let attribute = ResourceAttribute {
            key,
            value,
            origin: Origin::Env(variable.to_owned()),
        };
        match attributes.iter_mut().find(|a| a.key == attribute.key) {
            Some(existing) => *existing = attribute,
            None => attributes.push(attribute),
        }
    };
    const ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
    if let Some(text) = env(ATTRIBUTES) {
        let pairs = kv_list::parse(&text).map_err(|problem| EnvError {
            variable: ATTRIBUTES.to_owned(),
            problem,
        })?;
        for (key, value) in pairs {
            set(key, value, ATTRIBUTES);
        }
    }
    const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
    if let Some(name) = env(SERVICE_NAME) {
        set(
            "service.name".to_owned(),
            name.trim().to_owned(),
            SERVICE_NAME,
        );
    }
    Ok(attributes)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn file(toml_text: &str) -> OtlpConfig {
        toml::from_str(toml_text).unwrap()
    }

    fn resolve(file: &OtlpConfig, vars: &[(&str, &str)]) -> Result<ExportSettings, EnvError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ExportSettings::resolve(file, |name| vars.get(name).cloned())
    }

    fn env(var: &str) -> Origin {
        Origin::Env(var.to_owned())
    }

    /// One exporter variable: its name, the file text that sets it, a value for the
    /// general and one for the per-signal variable, and how a signal's settings show
    /// it with its origin.
    struct Case {
        name: &'static str,
        file: &'static str,
        general: &'static str,
        per_signal: &'static str,
        shown: fn(&SignalSettings) -> (String, Origin),
    }

    fn path_text(path: &Option<PathBuf>) -> String {
        path.as_ref()
            .map_or("-".to_owned(), |p| p.display().to_string())
    }

    const CASES: &[Case] = &[
        Case {
            name: "PROTOCOL",
            file: "protocol = \"http/protobuf\"",
            general: "grpc",
            per_signal: "http/protobuf",
            shown: |s| (s.protocol.as_str().to_owned(), s.origins.protocol.clone()),
        },
        Case {
            name: "ENDPOINT",
            file: "endpoint = \"http://file:4317\"",
            general: "http://general:4317",
            per_signal: "https://signal:4317/custom",
            shown: |s| (s.url.clone(), s.origins.endpoint.clone()),
        },
        Case {
            name: "HEADERS",
            file: "headers = { a = \"file\" }",
            general: "a=general",
            per_signal: "b=signal",
            shown: |s| {
                let text: Vec<String> = s.headers.iter().map(|(k, v)| format!("{k}={v}")).collect();
                (text.join(","), s.origins.headers.clone())
            },
        },
        Case {
            name: "TIMEOUT",
            file: "timeout = \"3s\"",
            general: "2000",
            per_signal: "1500",
            shown: |s| (format!("{:?}", s.timeout), s.origins.timeout.clone()),
        },
        Case {
            name: "COMPRESSION",
            file: "compression = \"none\"",
            general: "gzip",
            per_signal: "none",
            shown: |s| {
                (
                    s.compression.as_str().to_owned(),
                    s.origins.compression.clone(),
                )
            },
        },
        Case {
            name: "CERTIFICATE",
            file: "tls = { ca_file = \"/file/ca.pem\" }",
            general: "/general/ca.pem",
            per_signal: "/signal/ca.pem",
            shown: |s| (path_text(&s.tls.ca_file), s.origins.ca_file.clone()),
        },
        Case {
            name: "CLIENT_CERTIFICATE",
            file: "tls = { cert_file = \"/file/cert.pem\" }",
            general: "/general/cert.pem",
            per_signal: "/signal/cert.pem",
            shown: |s| (path_text(&s.tls.cert_file), s.origins.cert_file.clone()),
        },
        Case {
            name: "CLIENT_KEY",
            file: "tls = { key_file = \"/file/key.pem\" }",
            general: "/general/key.pem",
            per_signal: "/signal/key.pem",
            shown: |s| (path_text(&s.tls.key_file), s.origins.key_file.clone()),
        },
    ];

    /// Per-signal variable > general variable > config file > default, for every
    /// exporter variable and both signals; a per-signal variable leaves the other
    /// signal alone.
    #[test]
    fn precedence_of_every_exporter_variable() {
        let default_file = OtlpConfig::default();
        for case in CASES {
            let set_file = file(case.file);
            let general = format!("OTEL_EXPORTER_OTLP_{}", case.name);
            let defaults = resolve(&default_file, &[]).unwrap();
            let from_file = resolve(&set_file, &[]).unwrap();
            let from_general = resolve(&set_file, &[(&general, case.general)]).unwrap();
            for (signal, other) in [
                (Signal::Metrics, Signal::Logs),
                (Signal::Logs, Signal::Metrics),
            ] {
                let pick = |s: &ExportSettings, which: Signal| {
                    (case.shown)(if which == Signal::Metrics {
                        &s.metrics
                    } else {
                        &s.logs
                    })
                };
                let per_signal = format!("OTEL_EXPORTER_OTLP_{}_{}", signal.env_name(), case.name);
                let both = resolve(
                    &set_file,
                    &[(&general, case.general), (&per_signal, case.per_signal)],
                )
                .unwrap();
                let (default_value, origin) = pick(&defaults, signal);
                assert_eq!(origin, Origin::Default, "{}: {default_value}", case.name);
                let (file_value, origin) = pick(&from_file, signal);
                assert!(
                    matches!(origin, Origin::File(_)),
                    "{}: {origin:?}",
                    case.name
                );
                assert_ne!(file_value, default_value, "{}", case.name);
                let (general_value, origin) = pick(&from_general, signal);
                assert_eq!(origin, env(&general), "{}", case.name);
                assert_ne!(general_value, file_value, "{}", case.name);
                let (signal_value, origin) = pick(&both, signal);
                assert_eq!(origin, env(&per_signal), "{}", case.name);
                assert_ne!(signal_value, general_value, "{}", case.name);
                assert_eq!(
                    pick(&both, other),
                    (general_value.clone(), env(&general)),
                    "{}: {per_signal} is for {} only",
                    case.name,
                    signal.as_str()
                );
            }
        }
    }

    #[test]
    fn http_appends_the_signal_path_to_a_general_endpoint_only() {
        let http = file("protocol = \"http/protobuf\"");
        let s = resolve(&http, &[]).unwrap();
        assert_eq!(s.metrics.url, "http://localhost:4318/v1/metrics");
        assert_eq!(s.logs.url, "http://localhost:4318/v1/logs");
        let s = resolve(
            &file("protocol = \"http/protobuf\"\nendpoint = \"http://c:9/base/\""),
            &[],
        )
        .unwrap();
        assert_eq!(s.metrics.url, "http://c:9/base/v1/metrics");
        assert_eq!(
            s.metrics.origins.endpoint,
            Origin::File("export.otlp.endpoint")
        );
        let s = resolve(
            &http,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://g:4318/"),
                ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://l:4318/ingest"),
            ],
        )
        .unwrap();
        assert_eq!(s.metrics.url, "http://g:4318/v1/metrics");
        assert_eq!(
            s.logs.url, "http://l:4318/ingest",
            "a per-signal endpoint is used as is"
        );
        // The protocol decides per signal, and so does the default endpoint.
        let s = resolve(
            &OtlpConfig::default(),
            &[("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")],
        )
        .unwrap();
        assert_eq!(s.metrics.url, "http://localhost:4318/v1/metrics");
        assert_eq!(s.logs.url, "http://localhost:4317");
        let s = resolve(
            &OtlpConfig::default(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://g:4317")],
        )
        .unwrap();
        assert_eq!(
            s.metrics.url, "http://g:4317",
            "gRPC uses a general endpoint as is"
        );
    }

    #[test]
    fn export_interval_precedence() {
        let var = "OTEL_METRIC_EXPORT_INTERVAL";
        let s = resolve(&OtlpConfig::default(), &[]).unwrap();
        assert_eq!(
            (s.interval, s.interval_origin),
            (Duration::from_secs(10), Origin::Default)
        );
        let set = file("interval = \"3s\"");
        let s = resolve(&set, &[]).unwrap();
        assert_eq!(
            (s.interval, s.interval_origin),
            (Duration::from_secs(3), Origin::File("export.otlp.interval"))
        );
        let s = resolve(&set, &[(var, "1500")]).unwrap();
        assert_eq!(
            (s.interval, s.interval_origin),
            (Duration::from_millis(1500), env(var))
        );
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let s = resolve(
            &file("timeout = \"3s\""),
            &[
                ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", ""),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", " "),
                ("OTEL_SERVICE_NAME", ""),
            ],
        )
        .unwrap();
        assert_eq!(s.metrics.timeout, Duration::from_secs(3));
        assert_eq!(s.resource_attributes("h")[0].value, "vigil");
    }

    #[test]
    fn headers_are_percent_decoded() {
        let s = resolve(
            &OtlpConfig::default(),
            &[(
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=a%2Cb%3Dc, Tenant = blue%20team",
            )],
        )
        .unwrap();
        let headers: Vec<(&str, &str)> = s.logs.headers.iter().collect();
        assert_eq!(headers, [("Tenant", "blue team"), ("api-key", "a,b=c")]);
        assert_eq!(s.logs.headers.masked(), "Tenant=****,api-key=****");
    }

    #[test]
    fn resource_attributes_override_vigils_own_and_service_name_wins() {
        let s = resolve(
            &OtlpConfig::default(),
            &[
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=prod,service.name=from-attributes,team=a%2Cb,host.name=node-7",
                ),
                ("OTEL_SERVICE_NAME", "checkout-host"),
            ],
        )
        .unwrap();
        let attributes: Vec<(String, String, Origin)> = s
            .resource_attributes("web-1")
            .into_iter()
            .map(|a| (a.key, a.value, a.origin))
            .collect();
        let a = |k: &str, v: &str, o: Origin| (k.to_owned(), v.to_owned(), o);
        assert_eq!(
            attributes,
            [
                a("service.name", "checkout-host", env("OTEL_SERVICE_NAME")),
                a("service.version", env!("CARGO_PKG_VERSION"), Origin::Agent),
                a("host.name", "node-7", env("OTEL_RESOURCE_ATTRIBUTES")),
                a(
                    "deployment.environment",
                    "prod",
                    env("OTEL_RESOURCE_ATTRIBUTES")
                ),
                a("team", "a,b", env("OTEL_RESOURCE_ATTRIBUTES")),
            ]
        );
        let own = resolve(&OtlpConfig::default(), &[])
            .unwrap()
            .resource_attributes("web-1");
        let own: Vec<(&str, &str)> = own
            .iter()
            .map(|a| (a.key.as_str(), a.value.as_str()))
            .collect();
        assert_eq!(
            own,
            [
                ("service.name", "vigil"),
                ("service.version", env!("CARGO_PKG_VERSION")),
                ("host.name", "web-1"),
            ]
        );
    }

    /// Every variable vigil parses refuses a bad value with one error naming it; a
    /// header's value is never repeated.
    #[test]
    fn bad_values_name_their_variable() {
        let bad = [
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "http/json",
                "does not send OTLP as JSON",
            ),
            (
                "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
                "thrift",
                "\"grpc\" and \"http/protobuf\"",
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317", "http://"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "ftp://c:21",
                "http://",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,secretvalue", "entry 2"),
            (
                "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
                "bad name=secretvalue",
                "\"bad name\"",
            ),
            (
                "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
                "k=secret%0Avalue",
                "\"k\"",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "milliseconds"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "0", "milliseconds"),
            (
                "OTEL_EXPORTER_OTLP_COMPRESSION",
                "zstd",
                "\"gzip\" and \"none\"",
            ),
            (
                "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION",
                "br",
                "\"gzip\" and \"none\"",
            ),
            ("OTEL_METRIC_EXPORT_INTERVAL", "50", "at least 100"),
            ("OTEL_RESOURCE_ATTRIBUTES", "a=1,b", "entry 2"),
            ("OTEL_RESOURCE_ATTRIBUTES", "a=%zz", "%25"),
        ];
        for (variable, value, hint) in bad {
            let err = resolve(&OtlpConfig::default(), &[(variable, value)]).unwrap_err();
            assert_eq!(err.variable, variable, "{value}");
            assert!(err.problem.contains(hint), "{variable}={value}: {err}");
            assert!(!err.problem.contains("secret"), "{variable}: {err}");
        }
    }
}
