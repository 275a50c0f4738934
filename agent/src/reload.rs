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
/// (`[agent]`, `[export]`, `[http]` and the plugin limits; the TLS sections apply at
/// once, only turning `[http.tls]` on or off needs a restart).
pub fn needs_restart(old: &Config, new: &Config) -> bool {
    let (old_export, new_export) = (export_without_tls(old), export_without_tls(new));
    old_export != new_export
        || http_without_tls(old) != http_without_tls(new)
        || old.plugins.deadline != new.plugins.deadline
        || old.plugins.memory_limit_mib != new.plugins.memory_limit_mib
        || old.plugins.max_findings != new.plugins.max_findings
        || old.plugins.compile_memory_mib != new.plugins.compile_memory_mib
        || old.plugins.compile_timeout != new.plugins.compile_timeout
        || old.agent != new.agent
        || old.receive != new.receive
}

/// `[export]` without its TLS sections (a reload applies those at once).
fn export_without_tls(config: &Config) -> crate::config::ExportConfig {
    let mut export = config.export.clone();
    export.otlp.tls = Default::default();
    // The per-signal settings carry the TLS settings too (file or OTEL_* variables).
    for signal in [&mut export.settings.metrics, &mut export.settings.logs] {
        signal.tls = Default::default();
        let origins = &mut signal.origins;
        origins.ca_file = crate::config::Origin::Default;
        origins.cert_file = crate::config::Origin::Default;
        origins.key_file = crate::config::Origin::Default;
    }
    if let Some(am) = &mut export.alertmanager {
        am.tls = Default::default();
    }
    export
}

/// `[http]` with only whether `[http.tls]` is set (its files and paths apply at once).
fn http_without_tls(config: &Config) -> crate::config::HttpConfig {
    let mut http = config.http.clone();
    http.tls = http.tls.map(|_| crate::config::TlsServerConfig {
        cert_file: Default::default(),
        key_file: Default::default(),
        client_ca_file: None,
    });
    http
}

/// Reads and validates the config file at `path`, once (the watcher reports a file
/// only after it has been quiet), with the OpenTelemetry environment applied. A refusal
/// carries a key naming this version of the file and its error, see [`FailureMemory`].
pub async fn read_config(path: &Path) -> Result<Config, (ReloadRefused, String)> {
    let text = tokio::fs::read_to_string(path)
        .await
        .ok()
        .filter(|t| !t.trim().is_empty());
    let Some(text) = text else {
        return Err((
            ReloadRefused::Empty(path.display().to_string()),
            failure_key("", "empty"),
        ));
    };
    let parsed = Config::from_file_text(path, &text).and_then(|mut config| {
        config
            .apply_otel_env(|k| std::env::var(k).ok())
            .map(|()| config)
    });
    parsed.map_err(|error| {
        let key = failure_key(&text, &error.to_string());
        (ReloadRefused::Invalid(error), key)
    })
}

/// What identifies one failure of one version of the config: the same text failing the
/// same way is logged once.
fn failure_key(text: &str, error: &str) -> String {
    format!(
        "{}:{error}",
        crate::plugin::cache::content_hash(text.as_bytes())
    )
}

/// The last config failure reported, so the same file failing the same way is logged
/// (and counted) once, however often it is read.
#[derive(Debug, Default)]
pub struct FailureMemory(std::sync::Mutex<Option<String>>);

impl FailureMemory {
    /// Whether failure `key` is new (and so to be reported); remembers it.
    pub fn is_new(&self, key: String) -> bool {
        use crate::sync::LockExt;
        self.0.locked().replace(key.clone()) != Some(key)
    }

    /// Forgets the last failure: the next one is reported even if it is the same.
    pub fn forget(&self) {
        use crate::sync::LockExt;
        *self.0.locked() = None;
    }
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

    #[test]
    fn tls_settings_apply_at_once_but_turning_https_on_needs_a_restart() {
        let plain = config("[export.otlp]\nendpoint = \"https://c:4317\"\n");
        let with_ca = config(
            "[export.otlp]\nendpoint = \"https://c:4317\"\n[export.otlp.tls]\nca_file = \"/ca.pem\"\n",
        );
        assert!(!needs_restart(&plain, &with_ca));
        let https = config("[http.tls]\ncert_file = \"/a.pem\"\nkey_file = \"/a.key\"\n");
        let rotated = config(
            "[http.tls]\ncert_file = \"/b.pem\"\nkey_file = \"/b.key\"\nclient_ca_file = \"/c.pem\"\n",
        );
        assert!(!needs_restart(&https, &rotated));
        assert!(needs_restart(&plain, &https));
    }
}
