//! What a config reload changes: the new file read once it has settled, and the diff
//! between the running config and the new one (which collectors restart, whether
//! something needs a restart of the agent). Applying it is the supervisor's job.

use std::path::Path;

use crate::config::{Config, ConfigError};

/// Why a config file was not applied (the running config stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadRefused {
    #[error("config file {0} is empty or unreadable; ignored (the running config stays)")]
    Empty(String),
    #[error("config reload refused, the running config stays: {0}")]
    Invalid(#[from] ConfigError),
}

/// Names of the collectors whose configuration differs between `old` and `new`
/// (added, removed or changed).
pub fn changed_collectors(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    if old.collect.system != new.collect.system {
        changed.push(crate::collect::SYSTEM.to_owned());
    }
    for kind in crate::config::ServerKind::ALL {
        let (a, b) = (old.collect.instances(kind), new.collect.instances(kind));
        let names: std::collections::BTreeSet<&String> =
            a.iter().chain(b.iter()).map(|i| &i.name).collect();
        for name in names {
            if a.iter().find(|i| &i.name == name) != b.iter().find(|i| &i.name == name) {
                changed.push(kind.source(name));
            }
        }
    }
    changed
}

/// Whether `new` changes settings that take effect only after a restart of the agent
/// (`[agent]`, `[export]`, `[http]` and the plugin limits).
pub fn needs_restart(old: &Config, new: &Config) -> bool {
    old.export != new.export
        || old.http != new.http
        || old.plugins.deadline != new.plugins.deadline
        || old.plugins.memory_limit_mib != new.plugins.memory_limit_mib
        || old.plugins.max_findings != new.plugins.max_findings
        || old.agent != new.agent
}

/// Reads and validates the config file at `path` once it has settled, with the
/// OpenTelemetry environment applied.
pub async fn read_config(path: &Path) -> Result<Config, ReloadRefused> {
    let text = settled_text(path)
        .await
        .ok_or_else(|| ReloadRefused::Empty(path.display().to_string()))?;
    let mut config = Config::from_file_text(path, &text)?;
    config.apply_otel_env(|k| std::env::var(k).ok())?;
    Ok(config)
}

/// The content of a file once it stops changing: editors and tools write in steps, and
/// a half-written config must never be applied. `None` when the file stays empty or unreadable.
async fn settled_text(path: &Path) -> Option<String> {
    const SETTLE: std::time::Duration = std::time::Duration::from_millis(50);
    let mut last = tokio::fs::read_to_string(path).await.ok();
    for _ in 0..40 {
        tokio::time::sleep(SETTLE).await;
        let now = tokio::fs::read_to_string(path).await.ok();
        if now == last {
            return now.filter(|t| !t.trim().is_empty());
        }
        last = now;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "x").unwrap()
    }

    #[test]
    fn only_changed_collectors_are_named() {
        let old = config(
            "[[collect.redis]]\nname = \"a\"\nurl = \"redis://127.0.0.1\"\n[[collect.redis]]\nname = \"b\"\nurl = \"redis://127.0.0.1\"\n",
        );
        let new = config(
            "[[collect.redis]]\nname = \"a\"\nurl = \"redis://127.0.0.1\"\ninterval = \"1s\"\n[[collect.redis]]\nname = \"b\"\nurl = \"redis://127.0.0.1\"\n[[collect.mysql]]\nname = \"m\"\nurl = \"mysql://root@127.0.0.1/test\"\n",
        );
        assert_eq!(changed_collectors(&old, &new), ["mysql:m", "redis:a"]);
        assert!(!needs_restart(&old, &new));
        let http = config("[http]\nenabled = false\n");
        assert!(needs_restart(&old, &http));
    }
}
