//! What the CLI sends to a running agent (`vigil reload`), over `reqwest`: https when
//! `[http.tls]` is set, checking the agent's certificate against the system roots and
//! the certificates of its `cert_file`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::TlsServerConfig;

/// `POST path` to the agent at `addr` (over TLS with `tls`); returns the status code and
/// body text.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    tls: Option<&TlsServerConfig>,
) -> anyhow::Result<(u16, String)> {
    let (scheme, tls_config) = match tls {
        Some(settings) => ("https", Some(crate::tls::agent_client_config(settings)?)),
        None => ("http", None),
    };
    let client =
        crate::tls::http_client(tls_config, Duration::from_secs(10)).map_err(anyhow::Error::msg)?;
    let url = format!("{scheme}://{addr}");
    let mut request = client.post(format!("{url}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| {
        let text = crate::export::error_chain(&e);
        let hint = if tls.is_some_and(|t| t.client_ca_file.is_some()) {
            "[http.tls] client_ca_file makes the agent require a client certificate, which `vigil reload` has none of: send the agent SIGHUP instead"
        } else if text.contains("invalid peer certificate") {
            "the agent's certificate is not trusted: put its chain up to the root CA into [http.tls] cert_file"
        } else {
            "is it running, with [http] enabled on that address?"
        };
        anyhow::anyhow!("cannot reach the agent at {url}: {text} ({hint})")
    })?;
    let status = response.status().as_u16();
    let body = response.text().await?;
    Ok((status, body))
}
