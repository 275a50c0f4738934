//! The smallest HTTP client the CLI needs to talk to a running agent (`vigil reload`).

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::header::AUTHORIZATION;

/// `POST path` to the agent at `addr`; returns the status code and body text.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot reach the agent at http://{addr}: {e} (is it running, with [http] enabled on that address?)")
    })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::post(path).header("host", addr.to_string());
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new())?)
        .await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
