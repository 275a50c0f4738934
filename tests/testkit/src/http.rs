//! A plain HTTP/1 client for the agent's status endpoint (https with [`request_tls`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;

/// A response: status code, content type and body text.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// Sends `METHOD path` to `addr`, with a bearer token when given.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<Answer> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    request_over(stream, addr, method, path, token).await
}

/// Like [`request`] over https, checking the endpoint with `tls` (see [`crate::certs`]).
pub async fn request_tls(
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    method: &str,
    path: &str,
) -> anyhow::Result<Answer> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, stream)
        .await?;
    request_over(stream, addr, method, path, None).await
}

async fn request_over<S>(
    stream: S,
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<Answer>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let response = sender
        .send_request(builder.body(Empty::<Bytes>::new())?)
        .await?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `GET path`, retried until the endpoint answers `expected` or `timeout` passes;
/// returns the last answer.
pub async fn get_until(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
    mut done: impl FnMut(&Answer) -> bool,
) -> anyhow::Result<Answer> {
    let started = Instant::now();
    loop {
        let answer = request(addr, "GET", path, token).await;
        match answer {
            Ok(a) if done(&a) => return Ok(a),
            Ok(a) if started.elapsed() > timeout => return Ok(a),
            Err(e) if started.elapsed() > timeout => return Err(e),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
