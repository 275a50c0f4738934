//! A real application sending OTLP metrics: `python/otel_sender.py`, using the official
//! OpenTelemetry Python SDK and OTLP exporters (versions pinned below) from a virtualenv
//! made once in the test target directory. The test drives it line by line: record
//! durations, flush; each flush answers with what the SDK exported.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use serde_json::{Value, json};

/// The PyPI packages the sender needs, pinned.
pub const PACKAGES: [&str; 2] = [
    "opentelemetry-sdk==1.45.2",
    "opentelemetry-exporter-otlp==1.45.2",
];

/// The virtualenv's python, made (once per target directory) with [`PACKAGES`].
pub fn python() -> anyhow::Result<PathBuf> {
    static MADE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(python) = made.as_ref() {
        return Ok(python.clone());
    }
    let dir = crate::guest::target_dir().join("otel-sdk");
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    let stamp = venv.join(format!("installed-{}", PACKAGES.join("-")));
    if !stamp.exists() {
        std::fs::create_dir_all(&dir)?;
        // Made beside and renamed into place: another test process never sees half a venv.
        let building = tempfile::tempdir_in(&dir)?;
        let fresh = building.path().join("venv");
        run(Command::new("python3").arg("-m").arg("venv").arg(&fresh))?;
        run(Command::new(fresh.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PACKAGES))?;
        std::fs::write(fresh.join(stamp.file_name().unwrap_or_default()), "")?;
        if !stamp.exists() {
            let _ = std::fs::remove_dir_all(&venv);
            if std::fs::rename(&fresh, &venv).is_err() && !stamp.exists() {
                anyhow::bail!(
                    "cannot move the OpenTelemetry SDK virtualenv into {}",
                    venv.display()
                );
            }
        }
    }
    *made = Some(python.clone());
    Ok(python)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let output = cmd.output()?;
    anyhow::ensure!(
        output.status.success(),
        "{cmd:?} failed (it needs python3 with venv and PyPI; ./dev setup installs them): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The running sender.
pub struct Sender {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// How the sender reaches vigil.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

impl Sender {
    /// Starts the sender exporting to vigil's OTLP receiver at `addr` over `protocol` as
    /// service `service`, with a bearer `token` if given.
    pub fn start(
        protocol: Protocol,
        addr: std::net::SocketAddr,
        service: &str,
        token: Option<&str>,
    ) -> anyhow::Result<Self> {
        let (name, endpoint) = match protocol {
            Protocol::Grpc => ("grpc", format!("http://{addr}")),
            Protocol::Http => ("http", format!("http://{addr}/v1/metrics")),
        };
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/otel_sender.py");
        let mut cmd = Command::new(python()?);
        cmd.arg(script).args([name, &endpoint, service]);
        if let Some(token) = token {
            cmd.arg(token);
        }
        // The test's own OTEL_* variables must not steer the SDK.
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(var);
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        Ok(Sender {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    /// Records `durations` (seconds) for `route`.
    pub fn record(&mut self, route: &str, durations: &[f64]) -> anyhow::Result<()> {
        let command = json!({"record": durations, "attributes": {"http.route": route}});
        writeln!(self.stdin, "{command}")?;
        Ok(())
    }

    /// Exports now; returns what the SDK exported (`MetricsData` as JSON) and whether the
    /// exporter reported success.
    pub fn flush(&mut self) -> anyhow::Result<(Value, bool)> {
        writeln!(self.stdin, "{}", json!({"flush": true}))?;
        self.stdin.flush()?;
        let mut line = String::new();
        anyhow::ensure!(
            self.stdout.read_line(&mut line)? > 0,
            "the OpenTelemetry sender exited (see its stderr above)"
        );
        let answer: Value = serde_json::from_str(&line)?;
        Ok((
            answer["exported"].clone(),
            answer["result"].as_str() == Some("SUCCESS"),
        ))
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
