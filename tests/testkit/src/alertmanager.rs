//! A real Prometheus Alertmanager for tests: started on a free loopback port with a
//! temporary config and data directory, stopped and restarted on the same port, and
//! queried through its v2 API.
//!
//! The binary is `/usr/bin/prometheus-alertmanager` (Debian's `prometheus-alertmanager`
//! package); `VIGIL_TEST_ALERTMANAGER` names another one.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Routes everything to a receiver that notifies no one, grouping quickly. The receiver's
/// name is unique per instance: it proves that the process answering on the port is this one.
fn config(receiver: &str) -> String {
    format!(
        "route:\n  receiver: {receiver}\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: {receiver}\n"
    )
}

/// User and password [`Alertmanager::start_with_basic_auth`] requires.
pub const BASIC_AUTH: (&str, &str) = ("vigil", "vigil-e2e-secret");

/// Alertmanager's web config requiring [`BASIC_AUTH`] (bcrypt of the password, cost 4).
const WEB_CONFIG: &str =
    "basic_auth_users:\n  vigil: $2b$04$NADbM5Rs5CSEZcj11M1WRuBXD8wKkWnWAn0b7.ppA27/XO1wJmKd2\n";

/// The Alertmanager binary the tests run.
pub fn binary() -> String {
    std::env::var("VIGIL_TEST_ALERTMANAGER")
        .unwrap_or_else(|_| "/usr/bin/prometheus-alertmanager".to_owned())
}

/// An Alertmanager process; killed when dropped.
pub struct Alertmanager {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    client: reqwest::Client,
    basic_auth: bool,
    /// Whether `web.yml` is passed (basic auth or TLS).
    web_config: bool,
    receiver: String,
}

/// How the web endpoint is protected.
struct Web {
    basic_auth: bool,
    /// The CA that issues the server certificate, and whether client certificates
    /// (from the same CA) are required.
    tls: Option<(crate::certs::Issued, String, bool)>,
    /// The testkit's own client TLS config (trusting the CA, with a client certificate
    /// when one is required).
    client_tls: rustls::ClientConfig,
}

impl Alertmanager {
    /// Starts an Alertmanager on a free loopback port and waits until it is ready.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_inner(Web {
            basic_auth: false,
            tls: None,
            client_tls: crate::certs::plain_client_config()?,
        })
        .await
    }

    /// Like [`Alertmanager::start`], but every request must carry [`BASIC_AUTH`].
    pub async fn start_with_basic_auth() -> anyhow::Result<Self> {
        Self::start_inner(Web {
            basic_auth: true,
            tls: None,
            client_tls: crate::certs::plain_client_config()?,
        })
        .await
    }

    /// Like [`Alertmanager::start`], but serving https only (its `--web.config.file`
    /// `tls_server_config`) with a server certificate `ca` issues; with
    /// `require_client_cert`, every client must present a certificate `ca` issued.
    pub async fn start_with_tls(
        ca: &crate::certs::TestCa,
        require_client_cert: bool,
    ) -> anyhow::Result<Self> {
        let identity = if require_client_cert {
            Some(ca.client_cert("vigil testkit")?)
        } else {
            None
        };
        Self::start_inner(Web {
            basic_auth: false,
            tls: Some((ca.server_cert()?, ca.cert_pem.clone(), require_client_cert)),
            client_tls: ca.client_config(identity.as_ref())?,
        })
        .await
    }

    /// Another process may take the free port first (tests start several at once): then
    /// it tries another one.
    async fn start_inner(web: Web) -> anyhow::Result<Self> {
        let basic_auth = web.basic_auth;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = tempfile::tempdir()?;
            let receiver = format!(
                "null-{}",
                dir.path()
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("receiver")
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "")
            );
            std::fs::write(dir.path().join("alertmanager.yml"), config(&receiver))?;
            let mut web_config = if basic_auth {
                WEB_CONFIG.to_owned()
            } else {
                String::new()
            };
            if let Some((server, ca_pem, require_client_cert)) = &web.tls {
                let files = server.write(dir.path(), "server")?;
                web_config.push_str(&format!(
                    "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                    files.cert.display(),
                    files.key.display()
                ));
                if *require_client_cert {
                    let ca_file = dir.path().join("client-ca.crt");
                    std::fs::write(&ca_file, ca_pem)?;
                    web_config.push_str(&format!(
                        "  client_ca_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n",
                        ca_file.display()
                    ));
                }
            }
            std::fs::write(dir.path().join("web.yml"), &web_config)?;
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let scheme = if web.tls.is_some() { "https" } else { "http" };
            let mut am = Alertmanager {
                dir,
                port,
                child: None,
                url: format!("{scheme}://127.0.0.1:{port}"),
                client: reqwest::Client::builder()
                    .tls_backend_preconfigured(web.client_tls.clone())
                    .timeout(Duration::from_secs(5))
                    .build()?,
                basic_auth,
                web_config: !web_config.is_empty(),
                receiver,
            };
            match am.resume().await {
                Ok(()) => return Ok(am),
                Err(error) if attempt >= 5 => return Err(error),
                Err(_) => continue,
            }
        }
    }

    /// Kills the process: the alerts it held are lost, its silences stay on disk.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts the process on the same port with the same data directory and waits until it is ready.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut command = Command::new(binary());
        if self.web_config {
            command.arg(format!(
                "--web.config.file={}",
                self.dir.path().join("web.yml").display()
            ));
        }
        let child = command
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("alertmanager.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run {} (apt-get install prometheus-alertmanager)",
                    binary()
                )
            })?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(20)).await
    }

    /// Waits until this process (not another one on the port) answers: its status shows its receiver.
    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let status = match self.get("/api/v2/status").send().await {
                Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
                _ => String::new(),
            };
            if status.contains(&self.receiver) {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!("alertmanager exited with {status}:\n{}", self.log());
            }
            if started.elapsed() > timeout {
                bail!("alertmanager not ready after {timeout:?}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.authorized(self.client.get(format!("{}{path}", self.url)))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.basic_auth {
            request.basic_auth(BASIC_AUTH.0, Some(BASIC_AUTH.1))
        } else {
            request
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("alertmanager.log")
    }

    /// What Alertmanager logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `GET /api/v2/alerts`: the alerts it holds that have not ended (active, silenced and inhibited).
    pub async fn alerts(&self) -> anyhow::Result<Vec<Value>> {
        let response = self
            .get("/api/v2/alerts")
            .send()
            .await?
            .error_for_status()?;
        Ok(response.json().await?)
    }

    /// The alerts named `alertname` (label `alertname`); an error when Alertmanager does not
    /// answer, so that "no alert" is never mistaken for "no Alertmanager".
    pub async fn alerts_named(&self, alertname: &str) -> anyhow::Result<Vec<Value>> {
        let alerts = self
            .alerts()
            .await
            .with_context(|| format!("GET {}/api/v2/alerts", self.url))?;
        Ok(alerts
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == alertname)
            .collect())
    }

    /// Polls the alerts named `alertname` until `done` holds for an answer of Alertmanager or
    /// `timeout` passes; returns the last answer. A failed query never satisfies `done`, and
    /// when the wait ends with Alertmanager not answering, the error is in the second element.
    pub async fn wait_for(
        &self,
        alertname: &str,
        timeout: Duration,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> (bool, Vec<Value>) {
        let started = Instant::now();
        loop {
            let last = match self.alerts_named(alertname).await {
                Ok(alerts) if done(&alerts) => return (true, alerts),
                Ok(alerts) => alerts,
                Err(error) => vec![json!({ "alertmanager_error": format!("{error:#}") })],
            };
            if started.elapsed() > timeout {
                return (false, last);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `POST /api/v2/silences` for an hour, matching every `(label, value)` exactly; returns the silence's id.
    pub async fn silence(&self, matchers: &[(&str, &str)]) -> anyhow::Result<String> {
        let now = SystemTime::now();
        let body = json!({
            "matchers": matchers
                .iter()
                .map(|(name, value)| json!({"name": name, "value": value, "isRegex": false, "isEqual": true}))
                .collect::<Vec<_>>(),
            "startsAt": humantime::format_rfc3339_millis(now).to_string(),
            "endsAt": humantime::format_rfc3339_millis(now + Duration::from_secs(3600)).to_string(),
            "createdBy": "vigil-e2e",
            "comment": "silence created by vigil's end-to-end test",
        });
        let response: Value = self
            .authorized(self.client.post(format!("{}/api/v2/silences", self.url)))
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        response["silenceID"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no silenceID in {response}"))
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One request that reached a [`BearerGate`].
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    /// Header names in lower case with their values (lossy UTF-8).
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A reverse proxy in front of a real [`Alertmanager`] that requires
/// `Authorization: Bearer TOKEN` (Alertmanager's own web config only knows basic auth):
/// requests without it get `401`, the others are forwarded and answered by Alertmanager.
/// Every request's headers are recorded. Stops when dropped.
pub struct BearerGate {
    /// Base URL to give the agent instead of the Alertmanager's.
    pub url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<SeenRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl BearerGate {
    /// Starts the gate on a free loopback port in front of `upstream`'s base URL.
    pub async fn start(upstream: &str, token: &str) -> anyhow::Result<Self> {
        use http_body_util::{BodyExt, Full};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<SeenRequest>::new()));
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::certs::plain_client_config()?)
            .timeout(Duration::from_secs(5))
            .build()?;
        let expected = format!("Bearer {token}");
        let upstream = upstream.trim_end_matches('/').to_owned();
        let state = (seen.clone(), client, expected, upstream);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (seen, client, expected, upstream) = state.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let headers = parts
                                    .headers
                                    .iter()
                                    .map(|(n, v)| {
                                        (
                                            n.as_str().to_owned(),
                                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                        )
                                    })
                                    .collect();
                                let path = parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default();
                                if let Ok(mut seen) = seen.lock() {
                                    seen.push(SeenRequest {
                                        method: parts.method.to_string(),
                                        path: path.clone(),
                                        headers,
                                    });
                                }
                                let authorized = parts
                                    .headers
                                    .get(hyper::header::AUTHORIZATION)
                                    .is_some_and(|v| v.as_bytes() == expected.as_bytes());
                                let mut answer =
                                    hyper::Response::new(Full::new(bytes::Bytes::new()));
                                if !authorized {
                                    *answer.status_mut() = hyper::StatusCode::UNAUTHORIZED;
                                    return Ok::<_, hyper::Error>(answer);
                                }
                                let body = body.collect().await?.to_bytes();
                                let mut forward = client
                                    .request(parts.method.clone(), format!("{upstream}{path}"))
                                    .body(body);
                                if let Some(kind) = parts.headers.get(hyper::header::CONTENT_TYPE) {
                                    forward = forward
                                        .header(hyper::header::CONTENT_TYPE, kind.as_bytes());
                                }
                                match forward.send().await {
                                    Ok(response) => {
                                        *answer.status_mut() = response.status();
                                        *answer.body_mut() =
                                            Full::new(response.bytes().await.unwrap_or_default());
                                    }
                                    Err(_) => *answer.status_mut() = hyper::StatusCode::BAD_GATEWAY,
                                }
                                Ok(answer)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(BearerGate { url, seen, task })
    }

    /// Every request received so far, in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for BearerGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}
