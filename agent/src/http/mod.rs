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
//! With a token configured, `/status`, `/metrics` and `/reload` need
//! `Authorization: Bearer TOKEN`; the page takes the token from its URL fragment
//! (`/#token=...`), which browsers never send to the server.

pub mod client;
pub mod prometheus;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::HttpConfig;
use crate::secret::Secret;
use crate::status::StatusSource;

/// The status page: one file, no external assets.
const PAGE: &str = include_str!("page.html");

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "cannot listen on {addr} for the status endpoint: {source} (set [http] listen to a free address, or enabled = false)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid [http] token: {0}")]
    Token(String),
}

/// What every request handler shares.
struct Shared {
    agent: Arc<dyn StatusSource>,
    reload: UnboundedSender<()>,
    /// SHA-256 of the token: compared digest to digest, so timing says nothing about it.
    token_digest: Option<[u8; 32]>,
}

fn digest(text: &[u8]) -> [u8; 32] {
    Sha256::digest(text).into()
}

/// Binds the endpoint and serves it in a background task; returns the bound address.
pub async fn serve(
    config: &HttpConfig,
    agent: Arc<dyn StatusSource>,
    reload: UnboundedSender<()>,
) -> Result<SocketAddr, HttpError> {
    let token: Option<Secret> = config.token().map_err(HttpError::Token)?;
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
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(handle(req, &shared)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
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

fn authorized(req: &Request<Incoming>, shared: &Shared) -> bool {
    let Some(expected) = &shared.token_digest else {
        return true;
    };
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| digest(given.trim().as_bytes()) == *expected)
}

fn handle(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let protected = matches!(path, "/status" | "/metrics" | "/reload");
    if protected && !authorized(&req, shared) {
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
