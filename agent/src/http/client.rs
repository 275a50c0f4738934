//! What the CLI sends to a running agent (`vigil reload`), over `reqwest`.

use std::net::SocketAddr;
use std::time::Duration;

/// `POST path` to the agent at `addr`; returns the status code and body text.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut request = client.post(format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| {
        anyhow::anyhow!("cannot reach the agent at http://{addr}: {e} (is it running, with [http] enabled on that address?)")
    })?;
    let status = response.status().as_u16();
    let body = response.text().await?;
    Ok((status, body))
}
