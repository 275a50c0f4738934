//! The OTLP receiver (`[receive.otlp]`): applications send their metrics to the local
//! vigil over OTLP/gRPC ([`grpc`]) or OTLP/HTTP ([`http`]). Each request becomes batches
//! ([`convert`]) handed to the pipeline through a bounded channel, so they flow through
//! the plugins and on to the OTLP export like collected ones, with the sender's resource
//! and times. A full channel makes senders retry later; nothing piles up in memory.
//!
//! Bad input (a wrong token, an oversized or malformed request) is answered with the
//! status the OTLP specification names, counted, and logged once per transport and cause.

mod convert;
mod grpc;
mod http;
mod serve;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

pub use convert::{Converted, Refused, to_batches};

use crate::config::OtlpReceiveConfig;
use crate::model::Batch;
use crate::sync::LockExt;
use crate::telemetry::ReceiveTotals;

/// Why the receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error(
        "[receive.otlp] cannot listen on {addr} for OTLP/{transport}: {source} (is another collector using the port? set {field} to a free address)"
    )]
    Bind {
        transport: &'static str,
        field: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid [receive.otlp] token: {0}")]
    Token(String),
    #[error("[receive.otlp.tls]: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Why a request was refused whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No or a wrong bearer token.
    Unauthenticated,
    /// Larger than `max_request_bytes`.
    TooLarge(String),
    /// Not a readable OTLP request.
    Malformed(String),
    /// The pipeline is behind: retry later.
    Busy,
}

impl Rejection {
    /// The cause as counted (`error.type` of `vigil.receive.bad_requests`).
    pub fn cause(&self) -> &'static str {
        match self {
            Rejection::Unauthenticated => "unauthenticated",
            Rejection::TooLarge(_) => "too_large",
            Rejection::Malformed(_) => "malformed",
            Rejection::Busy => "busy",
        }
    }

    /// What the sender is told.
    pub fn message(&self, max_request_bytes: usize) -> String {
        match self {
            Rejection::Unauthenticated => {
                "a bearer token is required: send the header Authorization: Bearer TOKEN ([receive.otlp] token_env or token_file)".to_owned()
            }
            Rejection::TooLarge(detail) => format!(
                "request too large: at most {max_request_bytes} bytes are accepted ([receive.otlp] max_request_bytes); send smaller batches ({detail})"
            ),
            Rejection::Malformed(detail) => {
                format!("not an OTLP ExportMetricsServiceRequest: {detail}")
            }
            Rejection::Busy => {
                "vigil's pipeline is behind: retry later ([receive.otlp] max_pending_requests)".to_owned()
            }
        }
    }
}

/// What both transports share: the token, the limits, where batches go, the counters.
struct Shared {
    host: String,
    /// SHA-256 of the token: compared digest to digest, so timing says nothing about it.
    token_digest: Option<[u8; 32]>,
    max_request_bytes: usize,
    sink: mpsc::Sender<Vec<Batch>>,
    totals: Mutex<ReceiveTotals>,
    /// (transport, cause) pairs logged already: each is logged once.
    logged: Mutex<HashSet<(&'static str, &'static str)>>,
}

impl Shared {
    /// Whether an `Authorization` header value carries the token (always, without one).
    fn authorized(&self, header: Option<&[u8]>) -> bool {
        let Some(expected) = &self.token_digest else {
            return true;
        };
        header
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| digest(given.trim().as_bytes()) == *expected)
    }

    /// Takes a decoded request: its batches go to the pipeline (all or none), its refused
    /// points are counted and reported back as a partial success.
    fn accept(
        &self,
        transport: &'static str,
        request: ExportMetricsServiceRequest,
    ) -> Result<ExportMetricsServiceResponse, Rejection> {
        let mut converted = to_batches(request, &self.host);
        if !converted.batches.is_empty() {
            match self.sink.try_reserve() {
                Ok(permit) => permit.send(std::mem::take(&mut converted.batches)),
                Err(_) => return Err(self.rejected(transport, Rejection::Busy)),
            }
        }
        let refused = converted.refused_total();
        {
            let mut totals = self.totals.locked();
            *totals.datapoints.entry(transport).or_default() += converted.accepted;
            for (reason, count) in &converted.refused {
                *totals.refused.entry(reason.as_str()).or_default() += count;
            }
        }
        if refused == 0 {
            return Ok(ExportMetricsServiceResponse::default());
        }
        let message = converted.refusal_message();
        self.log_once(
            transport,
            "refused",
            &format!("refused part of a request: {message}"),
        );
        Ok(ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: i64::try_from(refused).unwrap_or(i64::MAX),
                error_message: message,
            }),
        })
    }

    /// Counts and logs (once per transport and cause) a request refused whole.
    fn rejected(&self, transport: &'static str, rejection: Rejection) -> Rejection {
        *self
            .totals
            .locked()
            .bad_requests
            .entry((transport, rejection.cause()))
            .or_default() += 1;
        self.log_once(
            transport,
            rejection.cause(),
            &format!(
                "refused a request: {}",
                rejection.message(self.max_request_bytes)
            ),
        );
        rejection
    }

    fn log_once(&self, transport: &'static str, cause: &'static str, text: &str) {
        if self.logged.locked().insert((transport, cause)) {
            tracing::warn!(
                "OTLP/{transport} receiver {text} (logged once per cause; counted in vigil.receive.*)"
            );
        } else {
            tracing::debug!("OTLP/{transport} receiver {text}");
        }
    }
}

fn digest(text: &[u8]) -> [u8; 32] {
    Sha256::digest(text).into()
}

/// The running receiver: where it listens and its totals.
pub struct OtlpReceiver {
    shared: Arc<Shared>,
    /// Where OTLP/gRPC is served, if it is.
    pub grpc_addr: Option<SocketAddr>,
    /// Where OTLP/HTTP is served, if it is.
    pub http_addr: Option<SocketAddr>,
}

impl OtlpReceiver {
    /// Binds the configured addresses and serves them in background tasks until `stop`
    /// turns true; every request's batches go to `sink`. Must run inside Tokio.
    pub async fn start(
        config: &OtlpReceiveConfig,
        host: &str,
        sink: mpsc::Sender<Vec<Batch>>,
        stop: watch::Receiver<bool>,
    ) -> Result<OtlpReceiver, ReceiveError> {
        let token = config.token().map_err(ReceiveError::Token)?;
        let tls = match &config.tls {
            Some(settings) => Some(serve::tls_acceptor(settings)?),
            None => None,
        };
        let shared = Arc::new(Shared {
            host: host.to_owned(),
            token_digest: token.map(|t| digest(t.expose().as_bytes())),
            max_request_bytes: config.max_request_bytes,
            sink,
            totals: Mutex::default(),
            logged: Mutex::default(),
        });
        let mut receiver = OtlpReceiver {
            shared: shared.clone(),
            grpc_addr: None,
            http_addr: None,
        };
        if let Some(addr) = config.grpc_listen {
            let listener = serve::bind("grpc", "grpc_listen", addr).await?;
            receiver.grpc_addr = listener.local_addr().ok();
            grpc::spawn(listener, shared.clone(), tls.clone(), stop.clone());
        }
        if let Some(addr) = config.http_listen {
            let listener = serve::bind("http", "http_listen", addr).await?;
            receiver.http_addr = listener.local_addr().ok();
            http::spawn(listener, shared, tls, stop);
        }
        Ok(receiver)
    }

    /// The totals so far.
    pub fn totals(&self) -> ReceiveTotals {
        self.shared.totals.locked().clone()
    }
}
