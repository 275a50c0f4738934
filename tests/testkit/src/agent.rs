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

/// The `vigil` command with a clean environment for OTLP variables.
pub fn vigil(binary: &str) -> Command {
    let mut cmd = Command::new(binary);
    for var in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    ] {
        cmd.env_remove(var);
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

/// A `vigil run` child process; killed when dropped.
pub struct AgentProcess {
    child: Child,
    log: PathBuf,
}

impl AgentProcess {
    /// Starts `vigil run --config CONFIG` with its stderr captured to a file beside the config.
    pub fn start(binary: &str, config: &Path) -> anyhow::Result<Self> {
        let log = config.with_extension("log");
        let stderr = std::fs::File::create(&log)?;
        let child = vigil(binary)
            .args(["run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()?;
        Ok(AgentProcess { child, log })
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
