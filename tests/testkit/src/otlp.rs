//! An in-process OTLP receiver: the real protobuf decoders of `opentelemetry-proto`
//! behind a tonic gRPC server or a hyper HTTP/protobuf server, on 127.0.0.1.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{HistogramDataPoint, metric, number_data_point};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;

/// Everything the receiver has decoded so far.
#[derive(Debug, Default, Clone)]
pub struct Received {
    pub metrics: Vec<ExportMetricsServiceRequest>,
    pub logs: Vec<ExportLogsServiceRequest>,
    /// When each of `metrics` arrived, Unix nanoseconds.
    pub metrics_arrived: Vec<u64>,
    /// The headers (gRPC metadata) of every request that arrived, in order: names in lower
    /// case, values as lossy UTF-8.
    pub headers: Vec<BTreeMap<String, String>>,
    /// Why TLS handshakes failed (TLS receivers only), e.g. no client certificate.
    pub handshake_failures: Vec<String>,
}

/// How a metric's points were encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    Gauge,
    /// A sum; `monotonic` tells counters from up-down counters.
    Sum {
        monotonic: bool,
    },
    Other,
}

/// One decoded datapoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub name: String,
    pub unit: String,
    pub kind: DataKind,
    pub attributes: BTreeMap<String, String>,
    pub value: f64,
    /// When the value was collected (Unix nanoseconds).
    pub time_unix_nano: u64,
    /// Since when a cumulative sum counts (Unix nanoseconds; 0 when not given).
    pub start_time_unix_nano: u64,
}

/// One metrics export request, summarized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub points: usize,
    pub earliest_unix_nanos: u64,
    /// When the request arrived at the receiver.
    pub arrived_unix_nanos: u64,
}

fn unix_nanos_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One decoded log record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub event_name: String,
    pub severity_number: i32,
    pub severity_text: String,
    pub body: String,
    pub attributes: BTreeMap<String, String>,
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

fn header_map(headers: &hyper::HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

impl Received {
    /// The values header `name` had in the requests received, one per request that carried it.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter_map(|h| h.get(&name).cloned())
            .collect()
    }

    /// The latest value of every series of metric `name`: from the most recent export
    /// request that has it, the newest point of each attribute set (a request may carry
    /// several points per series, one per collection).
    pub fn latest_points(&self, name: &str) -> Vec<Point> {
        for request in self.metrics.iter().rev() {
            let points = points_of(request, name);
            if !points.is_empty() {
                return newest_per_series(points);
            }
        }
        Vec::new()
    }

    /// The newest point of metric `name`, over every request received, whose attributes
    /// include each pair of `labels` (each source's batches travel in requests of their own,
    /// so the latest request need not have the series asked for).
    pub fn newest_point(&self, name: &str, labels: &[(&str, &str)]) -> Option<Point> {
        self.metrics
            .iter()
            .flat_map(|request| points_of(request, name))
            .filter(|p| has_labels(&p.attributes, labels))
            .max_by_key(|p| p.time_unix_nano)
    }

    /// The newest histogram point of metric `name`, over every request received, whose
    /// attributes include each pair of `labels`.
    pub fn newest_histogram(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<HistogramDataPoint> {
        self.metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .filter(|m| m.name == name)
            .filter_map(|m| match &m.data {
                Some(metric::Data::Histogram(h)) => Some(&h.data_points),
                _ => None,
            })
            .flatten()
            .filter(|p| has_labels(&attributes(&p.attributes), labels))
            .max_by_key(|p| p.time_unix_nano)
            .cloned()
    }

    /// Every point of metric `name` in each metrics request, in arrival order (one entry
    /// per request, empty where a request does not have it).
    pub fn points_per_request(&self, name: &str) -> Vec<Vec<Point>> {
        self.metrics.iter().map(|r| points_of(r, name)).collect()
    }

    /// Names of every metric received.
    pub fn metric_names(&self) -> std::collections::BTreeSet<String> {
        self.metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .map(|m| m.name.clone())
            .collect()
    }

    /// Resource attributes of the first metrics request.
    pub fn resource_attributes(&self) -> BTreeMap<String, String> {
        self.metrics
            .first()
            .and_then(|r| r.resource_metrics.first())
            .and_then(|rm| rm.resource.as_ref())
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default()
    }

    /// Resource attributes of the first logs request.
    pub fn log_resource_attributes(&self) -> BTreeMap<String, String> {
        self.logs
            .first()
            .and_then(|r| r.resource_logs.first())
            .and_then(|rl| rl.resource.as_ref())
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default()
    }

    /// One entry per metrics request: its datapoint count, the earliest datapoint
    /// time and when it arrived (Unix nanoseconds), in arrival order.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.metrics
            .iter()
            .zip(&self.metrics_arrived)
            .map(|(request, arrived)| {
                let mut snapshot = Snapshot {
                    points: 0,
                    earliest_unix_nanos: u64::MAX,
                    arrived_unix_nanos: *arrived,
                };
                for m in request
                    .resource_metrics
                    .iter()
                    .flat_map(|rm| &rm.scope_metrics)
                    .flat_map(|sm| &sm.metrics)
                {
                    let times: Vec<u64> = match &m.data {
                        Some(metric::Data::Gauge(g)) => {
                            g.data_points.iter().map(|p| p.time_unix_nano).collect()
                        }
                        Some(metric::Data::Sum(s)) => {
                            s.data_points.iter().map(|p| p.time_unix_nano).collect()
                        }
                        Some(metric::Data::Histogram(h)) => {
                            h.data_points.iter().map(|p| p.time_unix_nano).collect()
                        }
                        _ => Vec::new(),
                    };
                    snapshot.points += times.len();
                    if let Some(min) = times.into_iter().min() {
                        snapshot.earliest_unix_nanos = snapshot.earliest_unix_nanos.min(min);
                    }
                }
                snapshot
            })
            .collect()
    }

    /// Every string in everything received (attribute values, bodies, names), to look
    /// for what must never be exported.
    pub fn all_text(&self) -> String {
        format!("{:?}{:?}", self.metrics, self.logs)
    }

    /// Every log record received, in order.
    pub fn records(&self) -> Vec<Record> {
        self.logs
            .iter()
            .flat_map(|r| &r.resource_logs)
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| &sl.log_records)
            .map(|lr| Record {
                event_name: lr.event_name.clone(),
                severity_number: lr.severity_number,
                severity_text: lr.severity_text.clone(),
                body: text(&lr.body),
                attributes: attributes(&lr.attributes),
            })
            .collect()
    }
}

/// Whether `attributes` include each pair of `labels`.
fn has_labels(attributes: &BTreeMap<String, String>, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(k, v)| attributes.get(*k).map(String::as_str) == Some(*v))
}

/// The newest point of each attribute set, in the order the sets first appear.
fn newest_per_series(points: Vec<Point>) -> Vec<Point> {
    let mut newest: Vec<Point> = Vec::new();
    for point in points {
        match newest.iter_mut().find(|p| p.attributes == point.attributes) {
            Some(p) if p.time_unix_nano <= point.time_unix_nano => *p = point,
            Some(_) => {}
            None => newest.push(point),
        }
    }
    newest
}

fn points_of(request: &ExportMetricsServiceRequest, name: &str) -> Vec<Point> {
    let mut out = Vec::new();
    for m in request
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .filter(|m| m.name == name)
    {
        let (kind, points) = match &m.data {
            Some(metric::Data::Gauge(g)) => (DataKind::Gauge, &g.data_points),
            Some(metric::Data::Sum(s)) => (
                DataKind::Sum {
                    monotonic: s.is_monotonic,
                },
                &s.data_points,
            ),
            _ => (DataKind::Other, &Vec::new()),
        };
        for p in points {
            let value = match p.value {
                Some(number_data_point::Value::AsDouble(d)) => d,
                Some(number_data_point::Value::AsInt(i)) => i as f64,
                None => f64::NAN,
            };
            out.push(Point {
                name: m.name.clone(),
                unit: m.unit.clone(),
                kind,
                attributes: attributes(&p.attributes),
                value,
                time_unix_nano: p.time_unix_nano,
                start_time_unix_nano: p.start_time_unix_nano,
            });
        }
    }
    out
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    /// Base endpoint to give the agent, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// `grpc` or `http/protobuf`.
    pub protocol: &'static str,
    received: Arc<Mutex<Received>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Received>>);

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let headers = header_map(&request.metadata().clone().into_headers());
        if let Ok(mut r) = self.0.lock() {
            r.headers.push(headers);
            r.metrics_arrived.push(unix_nanos_now());
            r.metrics.push(request.into_inner());
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let headers = header_map(&request.metadata().clone().into_headers());
        if let Ok(mut r) = self.0.lock() {
            r.headers.push(headers);
            r.logs.push(request.into_inner());
        }
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

impl OtlpReceiver {
    /// Starts a gRPC receiver on a free loopback port (accepts gzip).
    pub async fn grpc() -> anyhow::Result<Self> {
        Self::grpc_on("127.0.0.1:0".parse()?).await
    }

    /// Starts a gRPC receiver on `addr` (to come up late at a known address).
    pub async fn grpc_on(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::start_grpc(addr, None).await
    }

    /// Starts a gRPC receiver over TLS with `tls` (see [`crate::certs`]) on a free
    /// loopback port; its endpoint is `https://`.
    pub async fn grpc_tls(tls: Arc<rustls::ServerConfig>) -> anyhow::Result<Self> {
        Self::grpc_tls_on("127.0.0.1:0".parse()?, tls).await
    }

    /// Like [`OtlpReceiver::grpc_tls`] on `addr`.
    pub async fn grpc_tls_on(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
    ) -> anyhow::Result<Self> {
        Self::start_grpc(addr, Some(with_alpn(&tls, b"h2"))).await
    }

    async fn start_grpc(
        addr: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Received::default()));
        let sink = Sink(received.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let gzip = tonic::codec::CompressionEncoding::Gzip;
        let router = tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(sink.clone()).accept_compressed(gzip))
            .add_service(LogsServiceServer::new(sink).accept_compressed(gzip));
        let scheme = if tls.is_some() { "https" } else { "http" };
        match tls {
            None => {
                tokio::spawn(router.serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                ));
            }
            Some(acceptor) => {
                // The accept loop owns the listener and closes it at once when stopped
                // (a test may start another receiver on the same address right away);
                // then the server shuts down.
                let (streams, incoming) = tokio::sync::mpsc::channel(16);
                let (closed, on_closed) = oneshot::channel::<()>();
                let failures = received.clone();
                tokio::spawn(async move {
                    let mut stopped = stopped;
                    loop {
                        let accepted = tokio::select! {
                            accepted = listener.accept() => accepted,
                            _ = &mut stopped => break,
                        };
                        let Ok((stream, _)) = accepted else { continue };
                        let (acceptor, streams, failures) =
                            (acceptor.clone(), streams.clone(), failures.clone());
                        tokio::spawn(async move {
                            match acceptor.accept(stream).await {
                                Ok(stream) => {
                                    let _ = streams.send(Ok::<_, std::io::Error>(stream)).await;
                                }
                                Err(e) => record_handshake_failure(&failures, e),
                            }
                        });
                    }
                    drop(listener);
                    let _ = closed.send(());
                });
                tokio::spawn(router.serve_with_incoming_shutdown(
                    tokio_stream::wrappers::ReceiverStream::new(incoming),
                    async {
                        let _ = on_closed.await;
                    },
                ));
            }
        }
        Ok(OtlpReceiver {
            endpoint: format!("{scheme}://{addr}"),
            protocol: "grpc",
            received,
            stop: Some(stop),
        })
    }

    /// Starts an HTTP/protobuf receiver on a free loopback port (accepts gzip).
    pub async fn http() -> anyhow::Result<Self> {
        Self::http_on("127.0.0.1:0".parse()?).await
    }

    /// Starts an HTTP/protobuf receiver on `addr` (to come up late at a known address).
    pub async fn http_on(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::start_http(addr, None).await
    }

    /// Starts an HTTP/protobuf receiver over TLS with `tls` (see [`crate::certs`]) on a
    /// free loopback port; its endpoint is `https://`.
    pub async fn http_tls(tls: Arc<rustls::ServerConfig>) -> anyhow::Result<Self> {
        Self::http_tls_on("127.0.0.1:0".parse()?, tls).await
    }

    /// Like [`OtlpReceiver::http_tls`] on `addr`.
    pub async fn http_tls_on(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
    ) -> anyhow::Result<Self> {
        Self::start_http(addr, Some(with_alpn(&tls, b"http/1.1"))).await
    }

    async fn start_http(
        addr: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> anyhow::Result<Self> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Received::default()));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let state = received.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = &mut stopped => break,
                };
                let Ok((stream, _)) = accepted else { continue };
                let (state, tls) = (state.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve_http(stream, state).await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => serve_http(stream, state).await,
                            Err(e) => record_handshake_failure(&state, e),
                        },
                    }
                });
            }
        });
        Ok(OtlpReceiver {
            endpoint: format!("{scheme}://{addr}"),
            protocol: "http/protobuf",
            received,
            stop: Some(stop),
        })
    }

    /// A copy of everything received so far.
    pub fn received(&self) -> Received {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits until `done` holds for what was received, or `timeout` passes; returns the last copy.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Received) -> bool,
    ) -> (bool, Received) {
        let started = Instant::now();
        loop {
            let received = self.received();
            if done(&received) {
                return (true, received);
            }
            if started.elapsed() > timeout {
                return (false, received);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `tls` offering only `protocol`.
fn with_alpn(tls: &rustls::ServerConfig, protocol: &[u8]) -> tokio_rustls::TlsAcceptor {
    let mut config = tls.clone();
    config.alpn_protocols = vec![protocol.to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn record_handshake_failure(state: &Mutex<Received>, error: std::io::Error) {
    if let Ok(mut r) = state.lock() {
        r.handshake_failures.push(error.to_string());
    }
}

async fn serve_http<S>(stream: S, state: Arc<Mutex<Received>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, hyper::Error>(handle_http(req, state).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

async fn handle_http(
    req: Request<hyper::body::Incoming>,
    state: Arc<Mutex<Received>>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let headers = header_map(req.headers());
    let gzip = req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return status(StatusCode::BAD_REQUEST),
    };
    let body = if gzip {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_err()
        {
            return status(StatusCode::BAD_REQUEST);
        }
        Bytes::from(out)
    } else {
        body
    };
    let Ok(mut received) = state.lock() else {
        return status(StatusCode::INTERNAL_SERVER_ERROR);
    };
    received.headers.push(headers);
    match path.as_str() {
        "/v1/metrics" => match ExportMetricsServiceRequest::decode(body) {
            Ok(r) => {
                received.metrics_arrived.push(unix_nanos_now());
                received.metrics.push(r);
                protobuf(ExportMetricsServiceResponse::default().encode_to_vec())
            }
            Err(_) => status(StatusCode::BAD_REQUEST),
        },
        "/v1/logs" => match ExportLogsServiceRequest::decode(body) {
            Ok(r) => {
                received.logs.push(r);
                protobuf(ExportLogsServiceResponse::default().encode_to_vec())
            }
            Err(_) => status(StatusCode::BAD_REQUEST),
        },
        _ => status(StatusCode::NOT_FOUND),
    }
}

fn protobuf(body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    response
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}
