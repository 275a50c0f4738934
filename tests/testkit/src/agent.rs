//! Running the `vigil` binary in tests: temporary config and plugin directories,
//! a child process that is killed when dropped, and its captured output.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A temporary directory with a config file and a plugin directory.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    /// An empty workspace with a `plugins/` directory.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("plugins"))?;
        Ok(Workspace { dir })
    }

    /// The plugin directory.
    pub fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// Copies the component at `source` into the plugin directory as `NAME.wasm`.
    pub fn add_plugin(&self, name: &str, source: &str) -> anyhow::Result<PathBuf> {
        let target = self.plugins().join(format!("{name}.wasm"));
        std::fs::copy(source, &target)?;
        Ok(target)
    }

    /// Writes `bytes` into the plugin directory as `NAME.wasm`.
    pub fn write_plugin(&self, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        let target = self.plugins().join(format!("{name}.wasm"));
        std::fs::write(&target, bytes)?;
        Ok(target)
    }

    /// Writes `agent.toml` with `text` and returns its path.
    pub fn write_config(&self, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join("agent.toml");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// A config that exports to `endpoint` with `protocol`, collects system metrics every
    /// `interval`, loads plugins from this workspace, plus `extra` TOML appended.
    pub fn config_for(
        &self,
        endpoint: &str,
        protocol: &str,
        interval: &str,
        extra: &str,
    ) -> String {
        format!(
            r#"
[agent]
shutdown_timeout = "3s"

[collect.system]
interval = "{interval}"

[plugins]
dir = "plugins"
cache_dir = "cache"
deadline = "100ms"
memory_limit_mib = 32

[export.otlp]
protocol = "{protocol}"
endpoint = "{endpoint}"
interval = "{interval}"
timeout = "2s"

{extra}
"#
        )
    }
}

/// A `threshold` rule named `name` that holds while memory in use is `>= limit`
/// (always for 0, never for 2), firing at once with `severity`.
pub fn memory_rule(name: &str, limit: f64, severity: &str) -> String {
    format!(
        r#"
[[plugins.settings.threshold.rules]]
name = "{name}"
metric = "system.memory.utilization"
op = ">="
value = {limit:?}
severity = "{severity}"
match = {{ "system.memory.state" = "used" }}
"#
    )
}

/// A loopback address nothing listens on right now (for a server started later).
pub fn free_local_addr() -> anyhow::Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// The `vigil` command without the OpenTelemetry variables (`OTEL_*`) of the test's
/// own environment.
pub fn vigil(binary: &str) -> Command {
    let mut cmd = Command::new(binary);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(var);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

/// Runs `vigil ARGS` to completion and returns its output.
pub fn run_to_end(binary: &str, args: &[&str]) -> anyhow::Result<Output> {
    Ok(vigil(binary).args(args).stdin(Stdio::null()).output()?)
}

/// Runs `vigil plugin test PLUGIN --batch FIXTURE --config CONFIG` and returns its output.
pub fn plugin_test(
    binary: &str,
    plugin: &Path,
    fixture: &str,
    config: &Path,
) -> anyhow::Result<Output> {
    Ok(vigil(binary)
        .args(["plugin", "test"])
        .arg(plugin)
        .args(["--batch", fixture, "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .output()?)
}

/// Settings of the `threshold` plugin (installed as `threshold.wasm`) with one rule:
/// `high-memory` fires when the used memory share is above 0.9.
pub const THRESHOLD_HIGH_MEMORY: &str = r#"
[[plugins.settings.threshold.rules]]
name = "high-memory"
metric = "system.memory.utilization"
op = ">"
value = 0.9
match = { "system.memory.state" = "used" }
"#;

/// A finished command's stdout followed by its stderr, for assertion messages.
pub fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The findings `vigil plugin test` printed (a JSON array on stdout); panics with its whole
/// output when it failed or printed something else.
pub fn findings_printed(output: &Output) -> Vec<serde_json::Value> {
    let text = output_text(output);
    assert!(output.status.success(), "vigil plugin test failed:\n{text}");
    match serde_json::from_slice(&output.stdout) {
        Ok(serde_json::Value::Array(findings)) => findings,
        _ => panic!("vigil plugin test printed no JSON array of findings:\n{text}"),
    }
}

/// A `vigil run` child process; killed when dropped.
pub struct AgentProcess {
    child: Child,
    log: PathBuf,
}

impl AgentProcess {
    /// Starts `vigil run --config CONFIG` with its stderr captured to a file beside the config.
    pub fn start(binary: &str, config: &Path) -> anyhow::Result<Self> {
        Self::start_with(binary, config, &[], &[])
    }

    /// As [`AgentProcess::start`], with extra environment variables and global arguments
    /// (e.g. `--log-format json`).
    pub fn start_with(
        binary: &str,
        config: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let mut full: Vec<&str> = args.to_vec();
        let config_text = config
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
        full.extend(["run", "--config", config_text]);
        Self::spawn(binary, &full, env, &config.with_extension("log"))
    }

    /// Starts `vigil ARGS` (any command line, e.g. `run` with no config) with extra
    /// environment variables and its stderr captured to `log`.
    pub fn spawn(
        binary: &str,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let stderr = std::fs::File::create(log)?;
        let child = vigil(binary)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()?;
        Ok(AgentProcess {
            child,
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(
        &mut self,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if started.elapsed() >= timeout {
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(
        &mut self,
        timeout: std::time::Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                started.elapsed() < timeout,
                "the agent did not exit within {timeout:?} of SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `binary run --once` with the workspace's config for `receiver` plus `extra`, asserts
/// it succeeded, and returns what the receiver got and the agent's stderr.
pub async fn run_once(
    binary: &'static str,
    receiver: &crate::otlp::OtlpReceiver,
    ws: &Workspace,
    extra: &str,
) -> (crate::otlp::Received, String) {
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, receiver.protocol, "10s", extra))
        .expect("config written");
    let output = tokio::task::spawn_blocking(move || {
        vigil(binary)
            .args(["run", "--once", "--config"])
            .arg(&config)
            .output()
            .expect("vigil runs")
    })
    .await
    .expect("the agent's task ends");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    (receiver.received(), stderr)
}
