//! Sending OTLP requests: gRPC with the generated tonic clients of `opentelemetry-proto`,
//! HTTP/protobuf with `reqwest`. Both signals share the endpoint, timeout, headers
//! (gRPC metadata) and gzip compression of `[export.otlp]`. An `https://` endpoint is
//! reached over TLS set up by `crate::tls` from `[export.otlp.tls]`.

use std::io::Write;

use flate2::Compression as GzLevel;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::Channel;

use super::ExportError;
use crate::config::{Compression, OtlpConfig, OtlpProtocol};
use crate::tls::{ClientCertAsked, Fingerprint, Loaded};

/// What the receiver said about a request it accepted: `None` when it took everything,
/// else why it rejected part of it (the OTLP partial success).
pub type Rejection = Option<String>;

/// The OTLP clients of both signals.
pub enum Transport {
    /// Boxed: the tonic clients are much larger than the HTTP side.
    Grpc(Box<Grpc>),
    Http(Http),
}

/// gRPC clients over one lazily connected channel. After a failed connection the channel
/// reports that failure once more on the next call, even if the receiver is up by then,
/// so a request failing with `Unavailable` is tried once more at once.
pub struct Grpc {
    metrics: MetricsServiceClient<Channel>,
    logs: LogsServiceClient<Channel>,
    metadata: MetadataMap,
    tls: Option<Fingerprint>,
    /// Set when the receiver asks for a client certificate none is configured for.
    cert_asked: ClientCertAsked,
}

/// HTTP/protobuf: a POST of the encoded request to `/v1/metrics` or `/v1/logs`.
pub struct Http {
    client: reqwest::Client,
    metrics_url: String,
    logs_url: String,
    headers: reqwest::header::HeaderMap,
    gzip: bool,
    tls: Option<Fingerprint>,
    /// Set when the receiver asks for a client certificate none is configured for.
    cert_asked: ClientCertAsked,
}

/// The URL of one signal: gRPC uses the endpoint as is; HTTP appends `/v1/{signal}`.
fn signal_url(config: &OtlpConfig, signal: &str) -> String {
    let base = config.effective_endpoint();
    match config.protocol {
        OtlpProtocol::Grpc => base,
        OtlpProtocol::HttpProtobuf => format!("{}/v1/{signal}", base.trim_end_matches('/')),
    }
}

fn setup_error(config: &OtlpConfig, reason: String) -> ExportError {
    ExportError::Setup {
        signal: "metrics and logs",
        endpoint: config.effective_endpoint(),
        reason,
    }
}

fn bad_header(key: &str, error: impl std::fmt::Display) -> String {
    format!("export.otlp.headers has {key:?}, which is not a valid header: {error}")
}

/// Whether the endpoint is reached over TLS.
fn is_https(config: &OtlpConfig) -> bool {
    config
        .effective_endpoint()
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

impl Transport {
    /// The clients for `config`. Nothing is connected yet (an unreachable endpoint shows
    /// up as failed requests, not here); gRPC needs a Tokio runtime.
    pub fn new(config: &OtlpConfig) -> Result<Self, ExportError> {
        Self::with_tls(config, Self::load_tls(config)?)
    }

    /// The TLS client config of `config` (its files read now), if the endpoint is `https://`.
    pub fn load_tls(
        config: &OtlpConfig,
    ) -> Result<Option<Loaded<rustls::ClientConfig>>, ExportError> {
        if !is_https(config) {
            return Ok(None);
        }
        let alpn: &[&[u8]] = match config.protocol {
            // The gRPC connector offers h2 itself.
            OtlpProtocol::Grpc => &[],
            OtlpProtocol::HttpProtobuf => &[b"http/1.1"],
        };
        crate::tls::client_config("export.otlp.tls", &config.tls, alpn)
            .map(Some)
            .map_err(|e| setup_error(config, e.to_string()))
    }

    /// What the TLS client was built from (None: plain http).
    pub fn tls_fingerprint(&self) -> Option<Fingerprint> {
        match self {
            Transport::Grpc(grpc) => grpc.tls,
            Transport::Http(http) => http.tls,
        }
    }

    /// The clients for `config` with `tls` from [`Transport::load_tls`].
    pub fn with_tls(
        config: &OtlpConfig,
        tls: Option<Loaded<rustls::ClientConfig>>,
    ) -> Result<Self, ExportError> {
        let fingerprint = tls.as_ref().map(|t| t.fingerprint);
        let cert_asked = tls
            .as_ref()
            .map(|t| t.cert_asked.clone())
            .unwrap_or_default();
        let gzip = matches!(config.compression, Compression::Gzip);
        match config.protocol {
            OtlpProtocol::Grpc => {
                let mut metadata = MetadataMap::new();
                for (key, value) in &config.headers {
                    let name = MetadataKey::from_bytes(key.to_ascii_lowercase().as_bytes())
                        .map_err(|e| setup_error(config, bad_header(key, e)))?;
                    let value = MetadataValue::try_from(value.as_str())
                        .map_err(|e| setup_error(config, bad_header(key, e)))?;
                    metadata.insert(name, value);
                }
                let endpoint = Channel::from_shared(signal_url(config, "metrics"))
                    .map_err(|e| setup_error(config, format!("not a usable gRPC URL: {e}")))?
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout);
                // tonic's own TLS features stay off: TLS is the connector's job.
                let channel = match tls {
                    Some(tls) => endpoint.connect_with_connector_lazy(crate::tls::grpc_connector(
                        tls.config,
                        config.timeout,
                    )),
                    None => endpoint.connect_lazy(),
                };
                let mut metrics = MetricsServiceClient::new(channel.clone());
                let mut logs = LogsServiceClient::new(channel);
                if gzip {
                    metrics = metrics
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                    logs = logs
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                Ok(Transport::Grpc(Box::new(Grpc {
                    metrics,
                    logs,
                    metadata,
                    tls: fingerprint,
                    cert_asked,
                })))
            }
            OtlpProtocol::HttpProtobuf => {
                let mut headers = reqwest::header::HeaderMap::new();
                for (key, value) in &config.headers {
                    let name = reqwest::header::HeaderName::from_bytes(key.as_bytes())
                        .map_err(|e| setup_error(config, bad_header(key, e)))?;
                    let value = reqwest::header::HeaderValue::from_str(value)
                        .map_err(|e| setup_error(config, bad_header(key, e)))?;
                    headers.insert(name, value);
                }
                let tls_config = match tls {
                    Some(tls) => tls.config,
                    None => crate::tls::plain_client_config()
                        .map_err(|e| setup_error(config, e.to_string()))?,
                };
                let client = reqwest::Client::builder()
                    .tls_backend_preconfigured(tls_config)
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout)
                    .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| {
                        setup_error(config, format!("cannot build the HTTP client: {e}"))
                    })?;
                Ok(Transport::Http(Http {
                    client,
                    metrics_url: signal_url(config, "metrics"),
                    logs_url: signal_url(config, "logs"),
                    headers,
                    gzip,
                    tls: fingerprint,
                    cert_asked,
                }))
            }
        }
    }

    /// After an accepted request: a client certificate a receiver asked for before was
    /// optional, so it explains no later failure.
    fn accepted(&self) {
        match self {
            Transport::Grpc(grpc) => grpc.cert_asked.take(),
            Transport::Http(http) => http.cert_asked.take(),
        };
    }

    /// Sends one metrics request; an error says why it was not accepted.
    pub async fn send_metrics(
        &self,
        request: ExportMetricsServiceRequest,
    ) -> Result<Rejection, String> {
        let response: ExportMetricsServiceResponse = match self {
            Transport::Grpc(grpc) => retry_unavailable(|| {
                let (mut client, request) = (grpc.metrics.clone(), grpc.request(request.clone()));
                async move { client.export(request).await }
            })
            .await
            .map_err(|status| grpc.describe(status))?
            .into_inner(),
            Transport::Http(http) => http.post(&http.metrics_url, &request).await?,
        };
        self.accepted();
        Ok(response
            .partial_success
            .filter(|p| p.rejected_data_points > 0 || !p.error_message.is_empty())
            .map(|p| {
                format!(
                    "{} datapoints rejected: {}",
                    p.rejected_data_points, p.error_message
                )
            }))
    }

    /// Sends one logs request; an error says why it was not accepted.
    pub async fn send_logs(&self, request: ExportLogsServiceRequest) -> Result<Rejection, String> {
        let response: ExportLogsServiceResponse = match self {
            Transport::Grpc(grpc) => retry_unavailable(|| {
                let (mut client, request) = (grpc.logs.clone(), grpc.request(request.clone()));
                async move { client.export(request).await }
            })
            .await
            .map_err(|status| grpc.describe(status))?
            .into_inner(),
            Transport::Http(http) => http.post(&http.logs_url, &request).await?,
        };
        self.accepted();
        Ok(response
            .partial_success
            .filter(|p| p.rejected_log_records > 0 || !p.error_message.is_empty())
            .map(|p| {
                format!(
                    "{} log records rejected: {}",
                    p.rejected_log_records, p.error_message
                )
            }))
    }
}

fn status_text(status: &tonic::Status) -> String {
    let mut text = format!("gRPC {:?}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        let causes = super::error_chain(source);
        if !text.contains(&causes) {
            text.push_str(&format!(" ({causes})"));
        }
    }
    text
}

/// `text`, and what to do when it is a failed TLS check.
fn with_tls_hint(text: String, cert_asked: &ClientCertAsked) -> String {
    match crate::tls::hint("export.otlp.tls", &text, cert_asked) {
        Some(hint) => format!("{text} ({hint})"),
        None => text,
    }
}

impl Grpc {
    /// Why a call failed, and what to do about a TLS problem.
    fn describe(&self, status: tonic::Status) -> String {
        with_tls_hint(status_text(&status), &self.cert_asked)
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = self.metadata.clone();
        request
    }
}

impl Http {
    /// POSTs `message` as protobuf (gzipped if configured) and decodes the answer.
    async fn post<R: Message + Default>(
        &self,
        url: &str,
        message: &impl Message,
    ) -> Result<R, String> {
        let mut body = message.encode_to_vec();
        let mut request = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
        if self.gzip {
            let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), GzLevel::fast());
            encoder
                .write_all(&body)
                .and_then(|()| encoder.try_finish())
                .map_err(|e| format!("cannot gzip the request: {e}"))?;
            body = encoder
                .finish()
                .map_err(|e| format!("cannot gzip the request: {e}"))?;
            request = request.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| with_tls_hint(super::error_chain(&e), &self.cert_asked))?;
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let text: String = text.trim().chars().take(300).collect();
            return Err(format!("HTTP {status}: {text}"));
        }
        // An empty or undecodable body of a 2xx answer means everything was accepted.
        Ok(R::decode(bytes).unwrap_or_default())
    }
}

/// Makes a gRPC call, and once more at once if it fails as `Unavailable`: a lazily
/// connected channel reports an old connection failure one more time after the receiver
/// is back.
async fn retry_unavailable<T, F, Fut>(mut call: F) -> Result<tonic::Response<T>, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match call().await {
        Err(status) if status.code() == tonic::Code::Unavailable => {
            tracing::debug!("retrying at once: {}", status_text(&status));
            call().await
        }
        other => other,
    }
}
