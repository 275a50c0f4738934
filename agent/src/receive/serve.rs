//! Listening for both transports: binding, TLS, and the accept loop that serves each
//! connection (HTTP/1.1 or HTTP/2, plain or TLS) in a task of its own.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::ReceiveError;
use crate::config::TlsServerConfig;
use crate::http::accept::{AcceptErrors, BACKOFF_MAX, hint};

/// Connections served at once per transport; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;
/// Time a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` for `transport` (configured as `field`).
pub(super) async fn bind(
    transport: &'static str,
    field: &'static str,
    addr: SocketAddr,
) -> Result<TcpListener, ReceiveError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ReceiveError::Bind {
            transport,
            field,
            addr,
            source,
        })
}

/// A TLS acceptor for `[receive.otlp.tls]`, offering HTTP/2 (gRPC) and HTTP/1.1.
pub(super) fn tls_acceptor(
    settings: &TlsServerConfig,
) -> Result<tokio_rustls::TlsAcceptor, ReceiveError> {
    let mut config = crate::tls::server_config(settings)?.config;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections on `listener` until `stop` turns true and serves each with
/// `service` (HTTP/1.1 and HTTP/2 both). A failing `accept()` backs off and is logged
/// once per kind of error.
pub(super) async fn accept_loop<S, F, B>(
    transport: &'static str,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
    service: S,
) where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut errors = AcceptErrors::default();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                let reaction = errors.failed(&error);
                if reaction.report {
                    tracing::warn!(
                        "the OTLP/{transport} receiver on {addr} cannot accept connections: {error}{}; retrying with back-off up to {BACKOFF_MAX:?}",
                        hint(&error)
                    );
                }
                tokio::time::sleep(reaction.pause).await;
                continue;
            }
        };
        errors.accepted(std::time::Instant::now());
        let service = service.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, service).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, service).await,
                        Ok(Err(error)) => {
                            tracing::debug!("OTLP/{transport} TLS handshake failed: {error}")
                        }
                        Err(_) => tracing::debug!("OTLP/{transport} TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
}

async fn serve_connection<IO, S, F, B>(stream: IO, service: S)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), hyper::service::service_fn(service))
        .await;
}
