//! Sending OTLP requests: gRPC with the generated tonic clients of `opentelemetry-proto`,
//! HTTP/protobuf with `reqwest`. Each signal has its own client, built from its own
//! [`SignalSettings`] (protocol, URL, timeout, headers as gRPC metadata, gzip, TLS).

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
use crate::config::{Compression, ExportSettings, OtlpProtocol, SignalSettings};

/// What the receiver said about a request it accepted: `None` when it took everything,
/// else why it rejected part of it (the OTLP partial success).
pub type Rejection = Option<String>;

/// The OTLP clients of both signals.
pub struct Transport {
    metrics: Client,
    logs: Client,
}

/// The client of one signal.
enum Client {
    /// Boxed: the gRPC side is much larger than the HTTP side.
    Grpc(Box<Grpc>),
    Http(Http),
}

/// A lazily connected gRPC channel. After a failed connection the channel reports that
/// failure once more on the next call, even if the receiver is up by then, so a request
/// failing with `Unavailable` is tried once more at once.
struct Grpc {
    channel: Channel,
    metadata: MetadataMap,
    gzip: bool,
}

/// HTTP/protobuf: a POST of the encoded request to the signal's URL.
struct Http {
    client: reqwest::Client,
    url: String,
    headers: reqwest::header::HeaderMap,
    gzip: bool,
}

fn setup_error(settings: &SignalSettings, reason: String) -> ExportError {
    ExportError::Setup {
        signal: settings.signal.as_str(),
        endpoint: settings.url.clone(),
        reason,
    }
}

/// Names the header and where the headers came from, never the value.
fn bad_header(settings: &SignalSettings, key: &str, error: impl std::fmt::Display) -> String {
    format!(
        "the headers from {} have {key:?}, which is not a valid header: {error}",
        settings.origins.headers
    )
}

impl Transport {
    /// The clients for `settings`. Nothing is connected yet (an unreachable endpoint
    /// shows up as failed requests, not here); gRPC needs a Tokio runtime.
    pub fn new(settings: &ExportSettings) -> Result<Self, ExportError> {
        Ok(Transport {
            metrics: Client::new(&settings.metrics)?,
            logs: Client::new(&settings.logs)?,
        })
    }

    /// Sends one metrics request; an error says why it was not accepted.
    pub async fn send_metrics(
        &self,
        request: ExportMetricsServiceRequest,
    ) -> Result<Rejection, String> {
        let response: ExportMetricsServiceResponse = match &self.metrics {
            Client::Grpc(grpc) => retry_unavailable(|| {
                let mut client = MetricsServiceClient::new(grpc.channel.clone());
                if grpc.gzip {
                    client = client
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                let request = grpc.request(request.clone());
                async move { client.export(request).await }
            })
            .await?
            .into_inner(),
            Client::Http(http) => http.post(&request).await?,
        };
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
        let response: ExportLogsServiceResponse = match &self.logs {
            Client::Grpc(grpc) => retry_unavailable(|| {
                let mut client = LogsServiceClient::new(grpc.channel.clone());
                if grpc.gzip {
                    client = client
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                let request = grpc.request(request.clone());
                async move { client.export(request).await }
            })
            .await?
            .into_inner(),
            Client::Http(http) => http.post(&request).await?,
        };
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

fn status_text(status: tonic::Status) -> String {
    let source = std::error::Error::source(&status)
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    format!("gRPC {:?}: {}{source}", status.code(), status.message())
}

impl Client {
    /// The client of one signal, as its settings say.
    fn new(settings: &SignalSettings) -> Result<Self, ExportError> {
        let gzip = matches!(settings.compression, Compression::Gzip);
        match settings.protocol {
            OtlpProtocol::Grpc => {
                let mut metadata = MetadataMap::new();
                for (key, value) in settings.headers.iter() {
                    let name = MetadataKey::from_bytes(key.to_ascii_lowercase().as_bytes())
                        .map_err(|e| setup_error(settings, bad_header(settings, key, e)))?;
                    let value = MetadataValue::try_from(value)
                        .map_err(|e| setup_error(settings, bad_header(settings, key, e)))?;
                    metadata.insert(name, value);
                }
                let channel = Channel::from_shared(settings.url.clone())
                    .map_err(|e| setup_error(settings, format!("not a usable gRPC URL: {e}")))?
                    .timeout(settings.timeout)
                    .connect_timeout(settings.timeout)
                    .connect_lazy();
                Ok(Client::Grpc(Box::new(Grpc {
                    channel,
                    metadata,
                    gzip,
                })))
            }
            OtlpProtocol::HttpProtobuf => {
                let mut headers = reqwest::header::HeaderMap::new();
                for (key, value) in settings.headers.iter() {
                    let name = reqwest::header::HeaderName::from_bytes(key.as_bytes())
                        .map_err(|e| setup_error(settings, bad_header(settings, key, e)))?;
                    let value = reqwest::header::HeaderValue::from_str(value)
                        .map_err(|e| setup_error(settings, bad_header(settings, key, e)))?;
                    headers.insert(name, value);
                }
                let client = reqwest::Client::builder()
                    .timeout(settings.timeout)
                    .connect_timeout(settings.timeout)
                    .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| {
                        setup_error(settings, format!("cannot build the HTTP client: {e}"))
                    })?;
                Ok(Client::Http(Http {
                    client,
                    url: settings.url.clone(),
                    headers,
                    gzip,
                }))
            }
        }
    }
}

impl Grpc {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = self.metadata.clone();
        request
    }
}

impl Http {
    /// POSTs `message` as protobuf (gzipped if configured) and decodes the answer.
    async fn post<R: Message + Default>(&self, message: &impl Message) -> Result<R, String> {
        let mut body = message.encode_to_vec();
        let mut request = self
            .client
            .post(&self.url)
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
        let response = request.body(body).send().await.map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        })?;
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
/// is back. The error says why the call was not accepted.
async fn retry_unavailable<T, F, Fut>(mut call: F) -> Result<tonic::Response<T>, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match call().await {
        Err(status) if status.code() == tonic::Code::Unavailable => {
            tracing::debug!("retrying at once: {}", status_text(status));
            call().await.map_err(status_text)
        }
        other => other.map_err(status_text),
    }
}
