//! Sending OTLP requests: gRPC with the generated tonic clients of `opentelemetry-proto`,
//! HTTP/protobuf with `reqwest`. Each signal has its own client, built from its own
//! [`SignalSettings`] (protocol, URL, timeout, headers as gRPC metadata, gzip, TLS). An
//! `https://` URL is reached over TLS set up by `crate::tls` from the signal's TLS settings.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::Channel;

use opentelemetry_proto::tonic::resource::v1::Resource;

use super::ExportError;
use super::gzip::Gzip;
use super::proto::{self, StampedBatch};
use super::wire;
use crate::config::{Compression, ExportSettings, OtlpProtocol, SignalSettings};
use crate::tls::{ClientCertAsked, Fingerprint, Loaded};

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
    /// Both boxed: each is large (the gRPC channel; the HTTP side's gzip compressor state).
    Grpc(Box<Grpc>),
    Http(Box<Http>),
}

/// A lazily connected gRPC channel. After a failed connection the channel reports that
/// failure once more on the next call, even if the receiver is up by then, so a request
/// failing with `Unavailable` is tried once more at once.
struct Grpc {
    channel: Channel,
    metadata: MetadataMap,
    gzip: bool,
    tls: Option<Fingerprint>,
    /// Set when the receiver asks for a client certificate none is configured for.
    cert_asked: ClientCertAsked,
}

/// HTTP/protobuf: a POST of the encoded request to the signal's URL.
struct Http {
    client: reqwest::Client,
    url: String,
    headers: reqwest::header::HeaderMap,
    /// The compressor, when requests are gzipped.
    gzip: Option<Gzip>,
    tls: Option<Fingerprint>,
    /// Set when the receiver asks for a client certificate none is configured for.
    cert_asked: ClientCertAsked,
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

/// Whether the signal's URL is reached over TLS.
fn is_https(settings: &SignalSettings) -> bool {
    settings
        .url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// The answer to `request` from the `Export` call of `$client` (a generated gRPC client of
/// a signal's service) over `grpc`'s channel, gzipped if configured, tried once more when
/// it fails as `Unavailable`; `?` on a failure, described. (A macro: the generated clients
/// share no trait.)
macro_rules! grpc_export {
    ($grpc:expr, $client:ident, $request:expr) => {{
        let grpc = $grpc;
        retry_unavailable(|| {
            let mut client = $client::new(grpc.channel.clone());
            if grpc.gzip {
                client = client
                    .send_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Gzip);
            }
            let request = grpc.request($request.clone());
            async move { client.export(request).await }
        })
        .await
        .map_err(|status| grpc.describe(status))?
        .into_inner()
    }};
}

impl Transport {
    /// The clients for `settings` (TLS files read now). Nothing is connected yet (an
    /// unreachable endpoint shows up as failed requests, not here); gRPC needs a Tokio
    /// runtime.
    pub fn new(settings: &ExportSettings) -> Result<Self, ExportError> {
        Self::with_tls(settings, Self::load_tls(settings)?)
    }

    /// The TLS client configs of both signals (their files read now); `None` for a
    /// signal whose URL is plain `http://`.
    pub fn load_tls(settings: &ExportSettings) -> Result<SignalTls, ExportError> {
        let (m, l) = (&settings.metrics, &settings.logs);
        let metrics = Client::load_tls(m)?;
        // Both signals usually share one TLS setup: its files are read (and an
        // `insecure_skip_verify` warned about) once.
        let shared = m.tls == l.tls && m.protocol == l.protocol && is_https(m) == is_https(l);
        let logs = match &metrics {
            Some(loaded) if shared => Some(Loaded {
                config: loaded.config.clone(),
                fingerprint: loaded.fingerprint,
                cert_asked: loaded.cert_asked.clone(),
            }),
            _ => Client::load_tls(l)?,
        };
        Ok([metrics, logs])
    }

    /// What the TLS clients were built from (None: plain http), metrics then logs.
    pub fn tls_fingerprints(&self) -> [Option<Fingerprint>; 2] {
        [self.metrics.tls_fingerprint(), self.logs.tls_fingerprint()]
    }

    /// The clients for `settings` with `tls` from [`Transport::load_tls`].
    pub fn with_tls(settings: &ExportSettings, tls: SignalTls) -> Result<Self, ExportError> {
        let [metrics, logs] = tls;
        Ok(Transport {
            metrics: Client::with_tls(&settings.metrics, metrics)?,
            logs: Client::with_tls(&settings.logs, logs)?,
        })
    }

    /// Sends one metrics request holding every point of `batches` under `resource`
    /// ([`proto::metrics_request`]); an error says why it was not accepted.
    pub async fn send_metrics(
        &self,
        resource: &Resource,
        batches: &[&StampedBatch],
    ) -> Result<Rejection, String> {
        let response: ExportMetricsServiceResponse = match &self.metrics {
            Client::Grpc(grpc) => {
                let request = proto::metrics_request(resource, batches.iter().copied());
                grpc_export!(grpc, MetricsServiceClient, request)
            }
            // Encoded straight from the batches: no message built per point.
            Client::Http(http) => {
                http.post(wire::metrics_request(resource, batches.iter().copied()))
                    .await?
            }
        };
        self.metrics.accepted();
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
            Client::Grpc(grpc) => grpc_export!(grpc, LogsServiceClient, request),
            Client::Http(http) => http.post(request.encode_to_vec()).await?,
        };
        self.logs.accepted();
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

/// The loaded TLS client config of each signal (metrics, logs); `None` for plain http.
pub type SignalTls = [Option<Loaded<rustls::ClientConfig>>; 2];

impl Client {
    /// The TLS client config of `settings` (its files read now), if its URL is `https://`.
    fn load_tls(
        settings: &SignalSettings,
    ) -> Result<Option<Loaded<rustls::ClientConfig>>, ExportError> {
        if !is_https(settings) {
            return Ok(None);
        }
        let alpn: &[&[u8]] = match settings.protocol {
            // The gRPC connector offers h2 itself.
            OtlpProtocol::Grpc => &[],
            OtlpProtocol::HttpProtobuf => &[b"http/1.1"],
        };
        crate::tls::client_config("export.otlp.tls", &settings.tls, alpn)
            .map(Some)
            .map_err(|e| setup_error(settings, e.to_string()))
    }

    /// The client of one signal, as its settings say, with `tls` from [`Client::load_tls`].
    fn with_tls(
        settings: &SignalSettings,
        tls: Option<Loaded<rustls::ClientConfig>>,
    ) -> Result<Self, ExportError> {
        let fingerprint = tls.as_ref().map(|t| t.fingerprint);
        let cert_asked = tls
            .as_ref()
            .map(|t| t.cert_asked.clone())
            .unwrap_or_default();
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
                let endpoint = Channel::from_shared(settings.url.clone())
                    .map_err(|e| setup_error(settings, format!("not a usable gRPC URL: {e}")))?
                    .timeout(settings.timeout)
                    .connect_timeout(settings.timeout);
                // tonic's own TLS features stay off: TLS is the connector's job.
                let channel = match tls {
                    Some(tls) => endpoint.connect_with_connector_lazy(crate::tls::grpc_connector(
                        tls.config,
                        settings.timeout,
                    )),
                    None => endpoint.connect_lazy(),
                };
                Ok(Client::Grpc(Box::new(Grpc {
                    channel,
                    metadata,
                    gzip,
                    tls: fingerprint,
                    cert_asked,
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
                let client = crate::tls::http_client(tls.map(|t| t.config), settings.timeout)
                    .map_err(|e| setup_error(settings, e))?;
                Ok(Client::Http(Box::new(Http {
                    client,
                    url: settings.url.clone(),
                    headers,
                    gzip: gzip.then(Gzip::default),
                    tls: fingerprint,
                    cert_asked,
                })))
            }
        }
    }

    fn tls_fingerprint(&self) -> Option<Fingerprint> {
        match self {
            Client::Grpc(grpc) => grpc.tls,
            Client::Http(http) => http.tls,
        }
    }

    /// After an accepted request: a client certificate a receiver asked for before was
    /// optional, so it explains no later failure.
    fn accepted(&self) {
        match self {
            Client::Grpc(grpc) => grpc.cert_asked.take(),
            Client::Http(http) => http.cert_asked.take(),
        };
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
    /// POSTs `body`, an encoded protobuf request (gzipped if configured), and decodes
    /// the answer.
    async fn post<R: Message + Default>(&self, mut body: Vec<u8>) -> Result<R, String> {
        let mut request = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
        if let Some(gzip) = &self.gzip {
            body = gzip
                .compress(&body)
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
