//! The agent's HTTP endpoint (`hyper`, loopback by default):
//!
//! | path | what |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves requests |
//! | `GET /readyz` | 200 once every collector finished a round, else 503 |
//! | `GET /status` | JSON: collectors, plugins, firing alerts, export queue, sparklines |
//! | `GET /metrics` | the latest value of every series, OpenMetrics text |
//! | `POST /reload` | reload the config and rescan the plugin directory (as SIGHUP) |
//! | `GET /` | a self-contained status page reading `/status` |
//!
//! Within `[http]` limits: at most `max_connections` are served at once, headers (and
//! the wait of an idle keep-alive connection) time out after `header_timeout`, a body
//! after `body_timeout`, and a body over `max_body_bytes` gets `413`. A failing
//! `accept()` (e.g. out of file descriptors) backs off instead of spinning.
//!
//! With `[http.tls]` the endpoint speaks https only (client certificates required when
//! `client_ca_file` is set); a reload that finds other certificate files switches the
//! connections accepted afterwards to them. A failed handshake closes that connection.
//!
//! With a token configured, `/status`, `/metrics` and `/reload` need
//! `Authorization: Bearer TOKEN`; the page takes the token from its URL fragment
//! (`/#token=...`), which browsers never send to the server.

pub(crate) mod accept;
mod body;
pub mod client;
pub mod prometheus;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::sync::mpsc::UnboundedSender;

use body::{BodyLimits, Verdict};

use crate::config::HttpConfig;
use crate::secret::Secret;
use crate::status::StatusSource;
use crate::tls::ServerTls;

/// The status page: one file, no external assets.
const PAGE: &str = include_str!("page.html");

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "cannot listen on {addr} for the status endpoint: {source} (set [http] listen to a free address, or [http] enabled = false)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid [http] token: {0}")]
    Token(String),
    #[error("cannot serve https on the status endpoint: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// The running endpoint.
pub struct Served {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its TLS config when `[http.tls]` is set (reload it with [`ServerTls::reload`]).
    pub tls: Option<Arc<ServerTls>>,
}

impl Served {
    /// The URL of the endpoint's root.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/", self.addr)
    }
}

/// What every request handler shares.
struct Shared {
    agent: Arc<dyn StatusSource>,
    reload: UnboundedSender<()>,
    /// SHA-256 of the token: compared digest to digest, so timing says nothing about it.
    token_digest: Option<[u8; 32]>,
    /// What a request body may be.
    body_limits: BodyLimits,
}

fn digest(text: &[u8]) -> [u8; 32] {
    Sha256::digest(text).into()
}

/// Binds the endpoint and serves it in a background task.
pub async fn serve(
    config: &HttpConfig,
    agent: Arc<dyn StatusSource>,
    reload: UnboundedSender<()>,
) -> Result<Served, HttpError> {
    let token: Option<Secret> = config.token().map_err(HttpError::Token)?;
    let tls = match &config.tls {
        Some(settings) => Some(Arc::new(ServerTls::load(settings)?)),
        None => None,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| HttpError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| HttpError::Bind {
        addr: config.listen,
        source,
    })?;
    let shared = Arc::new(Shared {
        agent,
        reload,
        token_digest: token.map(|t| digest(t.expose().as_bytes())),
        body_limits: BodyLimits {
            max_bytes: config.max_body_bytes,
            timeout: config.body_timeout,
        },
    });
    tokio::spawn(accept_loop(
        listener,
        addr,
        shared,
        tls.clone(),
        config.max_connections,
        config.header_timeout,
    ));
    Ok(Served { addr, tls })
}

/// Accepts connections while fewer than `max_connections` are open (more wait in the
/// listen backlog) and serves each in a task of its own. A failing `accept()` backs off
/// and is logged once per kind of error.
async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<Arc<ServerTls>>,
    max_connections: usize,
    header_timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut errors = accept::AcceptErrors::default();
    let mut at_limit = false;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if !at_limit {
                    at_limit = true;
                    tracing::warn!(
                        "the status endpoint {addr} has {max_connections} connections open, its [http] max_connections; new connections wait until one closes (reported again after half of them closed)"
                    );
                }
                match slots.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                }
            }
        };
        if at_limit && slots.available_permits() + 1 >= max_connections.div_ceil(2) {
            at_limit = false;
        }
        let due = errors.recovery_due();
        let accepted = tokio::select! {
            accepted = listener.accept() => Some(accepted),
            () = sleep_until_or_never(due) => None,
        };
        let now = std::time::Instant::now();
        let stream = match accepted {
            None => {
                if errors.recovered(now) {
                    report_recovery(addr);
                }
                continue;
            }
            Some(Ok((stream, _))) => stream,
            Some(Err(error)) => {
                let reaction = errors.failed(&error);
                if reaction.report {
                    tracing::warn!(
                        "cannot accept connections on the status endpoint {addr}: {error}{}; retrying with back-off up to {:?}, reported once per kind of error until it has worked for {:?}",
                        accept::hint(&error),
                        accept::BACKOFF_MAX,
                        accept::RECOVERY_QUIET
                    );
                } else {
                    tracing::debug!("accept on {addr} failed: {error}");
                }
                drop(permit);
                tokio::time::sleep(reaction.pause).await;
                continue;
            }
        };
        errors.accepted(now);
        if errors.recovered(now) {
            report_recovery(addr);
        }
        let shared = shared.clone();
        let acceptor = tls.as_ref().map(|tls| tls.acceptor());
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(stream, shared, header_timeout).await,
                Some(acceptor) => {
                    // The handshake gets the time a client has to send its headers.
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, shared, header_timeout).await,
                        Ok(Err(error)) => {
                            tracing::debug!("TLS handshake on the status endpoint failed: {error}")
                        }
                        Err(_) => tracing::debug!(
                            "TLS handshake on the status endpoint not done within {header_timeout:?}"
                        ),
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Serves the requests of one connection (plain or TLS) until it closes.
async fn serve_connection<S>(stream: S, shared: Arc<Shared>, header_timeout: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(req, &shared).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn report_recovery(addr: SocketAddr) {
    tracing::info!(
        "the status endpoint {addr} accepts connections again (no accept error for {:?})",
        accept::RECOVERY_QUIET
    );
}

/// Sleeps until `due`, or forever without one.
async fn sleep_until_or_never(due: Option<std::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await,
        None => std::future::pending().await,
    }
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    response
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body.into())
}

fn authorized(req: &Request<()>, shared: &Shared) -> bool {
    let Some(expected) = &shared.token_digest else {
        return true;
    };
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| digest(given.trim().as_bytes()) == *expected)
}

/// Reads (and discards) the request's body within the limits, then answers it.
async fn handle(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (parts, body) = req.into_parts();
    let refusal = match body::consume(body, declared, shared.body_limits).await {
        Verdict::Acceptable => None,
        Verdict::TooLarge => Some(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body too large: at most {} bytes are accepted ([http] max_body_bytes)\n",
                shared.body_limits.max_bytes
            ),
        )),
        Verdict::TooSlow => Some(text(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not received within {:?} ([http] body_timeout)\n",
                shared.body_limits.timeout
            ),
        )),
    };
    if let Some(mut refusal) = refusal {
        refusal
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return refusal;
    }
    route(&Request::from_parts(parts, ()), shared)
}

fn route(req: &Request<()>, shared: &Shared) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let protected = matches!(path, "/status" | "/metrics" | "/reload");
    if protected && !authorized(req, shared) {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required: send Authorization: Bearer TOKEN\n",
        );
        r.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        return r;
    }
    match (req.method(), path) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if shared.agent.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: some collectors have not finished a round yet\n",
                )
            }
        }
        (&Method::GET, "/status") => match serde_json::to_vec_pretty(&shared.agent.status()) {
            Ok(json) => response(StatusCode::OK, "application/json", json),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode status: {e}\n"),
            ),
        },
        (&Method::GET, "/metrics") => match prometheus::encode(shared.agent.metric_families()) {
            Ok(body) => response(StatusCode::OK, prometheus::CONTENT_TYPE, body),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode metrics: {e}\n"),
            ),
        },
        (&Method::POST, "/reload") => {
            if shared.reload.send(()).is_ok() {
                text(StatusCode::ACCEPTED, "reload requested\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping\n")
            }
        }
        (&Method::GET, "/") => response(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        (_, "/healthz" | "/readyz" | "/status" | "/metrics" | "/reload" | "/") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /, /healthz, /readyz, /status, /metrics or POST /reload\n",
        ),
    }
}
