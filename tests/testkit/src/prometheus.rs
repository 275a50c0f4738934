//! A real Prometheus client endpoint: a small Python application using the official
//! `prometheus_client` package (pinned, installed into a virtualenv under the target
//! directory on first use) serving `/metrics` on a loopback port of its own.
//!
//! What it exposes:
//! - known traffic of handler `/api`: `http_requests_total` 7 × `200` and 3 × `500`;
//!   `http_request_duration_seconds` (buckets 0.1, 0.5, 1) observed 0.05, 0.3, 0.3, 2.0;
//! - steady traffic of handler `/live` (every 50 ms three `200` and one `503`, each
//!   observed at 0.7 s): a quarter server errors, p95 in (0.5, 1].

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use anyhow::Context;

/// The pinned `prometheus_client` version.
pub const PROMETHEUS_CLIENT: &str = "0.26.0";

const APP: &str = r#"
import sys, threading, time
from prometheus_client import Counter, Histogram, start_http_server

requests = Counter("http_requests", "HTTP requests", ["handler", "code"])
duration = Histogram("http_request_duration_seconds", "HTTP request durations",
                     ["handler"], buckets=[0.1, 0.5, 1.0])

requests.labels("/api", "200").inc(7)
requests.labels("/api", "500").inc(3)
for seconds in (0.05, 0.3, 0.3, 2.0):
    duration.labels("/api").observe(seconds)

def live():
    while True:
        for code in ("200", "200", "200", "503"):
            requests.labels("/live", code).inc()
            duration.labels("/live").observe(0.7)
        time.sleep(0.05)

threading.Thread(target=live, daemon=True).start()
server, _ = start_http_server(0, addr="127.0.0.1")
print("listening", server.server_port, flush=True)
sys.stdin.read()
"#;

/// The virtualenv with `prometheus_client`, made once.
fn venv() -> anyhow::Result<PathBuf> {
    static MADE: Mutex<()> = Mutex::new(());
    let _once = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = crate::guest::target_dir().join("python/prometheus-client-venv");
    let marker = dir.join(format!(".installed-{PROMETHEUS_CLIENT}"));
    if marker.exists() {
        return Ok(dir);
    }
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .context("python3 is missing (./dev setup installs python3 and python3-venv)")?;
    anyhow::ensure!(status.success(), "python3 -m venv {} failed", dir.display());
    let status = Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("prometheus-client=={PROMETHEUS_CLIENT}"))
        .status()
        .context("cannot run pip of the virtualenv")?;
    anyhow::ensure!(
        status.success(),
        "pip install prometheus-client=={PROMETHEUS_CLIENT} failed"
    );
    std::fs::write(&marker, "")?;
    Ok(dir)
}

/// The running application; killed when dropped.
pub struct PromApp {
    child: Child,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT/metrics`
    pub url: String,
}

impl PromApp {
    /// Starts the application and waits until it listens.
    pub fn start() -> anyhow::Result<Self> {
        let venv = venv()?;
        let dir = tempfile::tempdir()?;
        let script = dir.path().join("app.py");
        std::fs::write(&script, APP)?;
        let mut child = Command::new(venv.join("bin/python"))
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the prometheus_client application")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse::<u16>().ok());
        let Some(port) = port else {
            let _ = child.kill();
            anyhow::bail!("the prometheus_client application did not start: {line:?}");
        };
        Ok(PromApp {
            child,
            _dir: dir,
            url: format!("http://127.0.0.1:{port}/metrics"),
        })
    }
}

impl Drop for PromApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
