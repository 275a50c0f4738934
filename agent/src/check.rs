//! `vigil check`: validates a config and loads every plugin it names, reporting each problem.

use std::path::Path;

use crate::config::{Config, Origin, PluginsConfig};
use crate::config::{TlsClientConfig, TuningConfig};
use crate::plugin::registry::plugin_files;
use crate::plugin::{Compiler, PluginInstance, PluginKind, PluginRuntime};

/// What `vigil check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Lines saying what is fine.
    pub ok: Vec<String>,
    /// Lines saying what is wrong and what to do.
    pub errors: Vec<String>,
    /// Lines worth a look that do not stop the agent.
    pub warnings: Vec<String>,
}

impl CheckReport {
    /// Whether everything checked out.
    pub fn passed(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks the config at `path` (or the embedded default) and every plugin of its
/// directory, compiled by the compiler `compiler` makes for the config's `[plugins]`
/// (the CLI's compiles in a child, which leaves the compile cache warm for `vigil run`).
pub fn check(
    path: Option<&Path>,
    compiler: impl FnOnce(&PluginsConfig) -> std::io::Result<Compiler>,
) -> CheckReport {
    let mut report = CheckReport::default();
    let mut config = match Config::load_or_default(path) {
        Ok(config) => config,
        Err(e) => {
            report.errors.push(e.to_string());
            return report;
        }
    };
    if let Err(e) = config.apply_otel_env(|k| std::env::var(k).ok()) {
        report.errors.push(e.to_string());
        return report;
    }
    let origin = path.map_or("(embedded default)".to_owned(), |p| p.display().to_string());
    report.ok.push(format!("config {origin} is valid"));
    report.ok.extend(export_settings_lines(&config));
    // Building the server collectors reads their passwords (no connection is made).
    for (kind, instance) in config.collect.servers() {
        if let Err(e) = crate::collect::build_server(kind, instance, String::new()) {
            report.errors.push(e.to_string());
        }
    }

    check_tls(&config, &mut report);
    check_tuning(&config.tuning, &mut report);

    let files = match plugin_files(&config.plugins.dir) {
        Ok(files) => files,
        Err(e) => {
            report.warnings.push(format!(
                "plugin directory {} cannot be read ({e}); the agent will run without plugins",
                config.plugins.dir.display()
            ));
            return report;
        }
    };
    let compiler = match compiler(&config.plugins) {
        Ok(compiler) => compiler,
        Err(e) => {
            report
                .errors
                .push(format!("cannot find the compiler for plugins: {e}"));
            return report;
        }
    };
    let runtime = match PluginRuntime::from_config(&config.plugins) {
        Ok(runtime) => runtime.with_compiler(compiler),
        Err(e) => {
            report
                .errors
                .push(format!("cannot start the plugin runtime: {e}"));
            return report;
        }
    };
    let mut kinds = Vec::new();
    for (name, file) in &files {
        match PluginInstance::load(&runtime, file, name, config.plugins.settings_json(name)) {
            Ok(plugin) => {
                let info = plugin.info();
                report.ok.push(format!(
                    "plugin {name} ({}): {} {} {} (contract {}) watching {:?}",
                    file.display(),
                    info.kind,
                    info.name,
                    info.version,
                    info.contract,
                    info.interests
                ));
                kinds.push((name.clone(), Some(info.kind)));
            }
            Err(e) => {
                report.errors.push(e.to_string());
                kinds.push((name.clone(), None));
            }
        }
    }
    check_policies(&config, &kinds, &mut report);
    for name in config.plugins.settings.keys() {
        if !files.iter().any(|(n, _)| n == name) {
            report.warnings.push(format!(
                "[plugins.settings.{name}] has no plugin file {name}.wasm in {}",
                config.plugins.dir.display()
            ));
        }
    }
    report
}

/// The effective OTLP export settings of each signal, one line per value with where it
/// came from (environment variable, config key or default); header values masked.
fn export_settings_lines(config: &Config) -> Vec<String> {
    if !config.export.otlp.enabled {
        return vec!["export: OTLP export is off (export.otlp.enabled = false)".to_owned()];
    }
    let settings = &config.export.settings;
    let row =
        |name: &str, value: &str, origin: &Origin| format!("\n  {name:<19}{value}  ({origin})");
    let path = |file: &Option<std::path::PathBuf>, unset: &str| {
        file.as_ref()
            .map_or(unset.to_owned(), |f| f.display().to_string())
    };
    let mut lines: Vec<String> = settings
        .signals()
        .into_iter()
        .map(|s| {
            let o = &s.origins;
            let mut text = format!("export {}:", s.signal.as_str());
            text += &row("protocol", s.protocol.as_str(), &o.protocol);
            text += &row("endpoint", &s.url, &o.endpoint);
            text += &row("headers", &s.headers.masked(), &o.headers);
            text += &row(
                "timeout",
                &humantime::format_duration(s.timeout).to_string(),
                &o.timeout,
            );
            text += &row("compression", s.compression.as_str(), &o.compression);
            text += &row(
                "certificate",
                &path(&s.tls.ca_file, "(system roots)"),
                &o.ca_file,
            );
            text += &row(
                "client certificate",
                &path(&s.tls.cert_file, "(none)"),
                &o.cert_file,
            );
            text += &row("client key", &path(&s.tls.key_file, "(none)"), &o.key_file);
            if s.tls.insecure_skip_verify {
                text += &row(
                    "insecure_skip_verify",
                    "true",
                    &Origin::File("export.otlp.tls.insecure_skip_verify"),
                );
            }
            text
        })
        .collect();
    lines.push(format!(
        "export interval {} ({})",
        humantime::format_duration(settings.interval),
        settings.interval_origin
    ));
    let resource: Vec<String> = settings
        .resource_attributes(&crate::pipeline::host_name(config))
        .iter()
        .map(|a| format!("{}={} ({})", a.key, a.value, a.origin))
        .collect();
    lines.push(format!("export resource: {}", resource.join(", ")));
    lines
}

/// The TLS sections: their files are read and checked as a start would; a warning for
/// `insecure_skip_verify` and for settings that no `https://` URL uses.
fn check_tls(config: &Config, report: &mut CheckReport) {
    let is_https = |url: &str| {
        url.get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    };
    let mut clients = Vec::new();
    if config.export.otlp.enabled {
        // Per signal: the OTEL_* certificate variables may differ between them.
        for signal in config.export.settings.signals() {
            let client = ("export.otlp.tls", &signal.tls, is_https(&signal.url));
            if !clients.contains(&client) {
                clients.push(client);
            }
        }
    }
    if let Some(am) = &config.export.alertmanager {
        clients.push((
            "export.alertmanager.tls",
            &am.tls,
            am.urls.iter().any(|u| is_https(u)),
        ));
    }
    for (section, tls, used) in clients {
        if !used {
            if *tls != TlsClientConfig::default() {
                report.warnings.push(format!(
                    "[{section}] is set but no URL of its section is https://, so it is not used"
                ));
            }
            continue;
        }
        if tls.insecure_skip_verify {
            report.warnings.push(format!(
                "[{section}] insecure_skip_verify = true: the server's certificate is NOT checked; anyone on the network path can read and change the data (set ca_file instead)"
            ));
        }
        match crate::tls::client_config(section, tls, &[]) {
            Ok(_) => report
                .ok
                .push(format!("[{section}] TLS settings and files are usable")),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    if config.http.enabled
        && let Some(tls) = &config.http.tls
    {
        match crate::tls::server_config(tls) {
            Ok(_) => report
                .ok
                .push("[http.tls] certificate and key are usable".to_owned()),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
}

/// `[tuning]`: a summary, and a warning when allowed changes could never be applied
/// because the audit file cannot be written (the engine audits before it applies).
fn check_tuning(tuning: &TuningConfig, report: &mut CheckReport) {
    if tuning.allow.is_empty() {
        if !tuning.policies.is_empty() {
            report.ok.push(
                "tuning: no [[tuning.allow]] entry, so no policy can change anything".to_owned(),
            );
        }
        return;
    }
    let audit = tuning.audit_file.display();
    match audit_writable(&tuning.audit_file) {
        Ok(()) => report.ok.push(format!(
            "tuning: {} [[tuning.allow]] {}, decisions audited to {audit}",
            tuning.allow.len(),
            if tuning.allow.len() == 1 {
                "entry"
            } else {
                "entries"
            }
        )),
        Err(why) => report.warnings.push(format!(
            "tuning: the audit file {audit} cannot be written ({why}): nothing will be applied until it can; \
             make its directory writable for the agent's user or set tuning.audit_file"
        )),
    }
}

/// Whether the agent can append to `path`: the file if it exists, else the nearest
/// existing directory above it (the agent creates the missing ones).
fn audit_writable(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err("it is a directory".to_owned());
    }
    if path.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| format!("cannot open it for appending: {e}"));
    }
    let mut dir = path.parent();
    while let Some(d) = dir {
        let d = if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        };
        if d.exists() {
            if !d.is_dir() {
                return Err(format!("{} is not a directory", d.display()));
            }
            return writable_dir(d).map_err(|e| format!("{} is not writable: {e}", d.display()));
        }
        dir = d.parent();
    }
    Err("no directory above it exists".to_owned())
}

/// Whether files can be created in directory `dir` by this process's user.
fn writable_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `[tuning.policies.NAME]` entries that name no tuning policy in the plugin directory.
/// `kinds`: every plugin file by name, with its kind when it loaded.
fn check_policies(
    config: &Config,
    kinds: &[(String, Option<PluginKind>)],
    report: &mut CheckReport,
) {
    for (name, policy) in &config.tuning.policies {
        match kinds.iter().find(|(n, _)| n == name).map(|(_, k)| *k) {
            None => report.warnings.push(format!(
                "[tuning.policies.{name}] names no plugin: there is no {name}.wasm in {}; its mode ({}) applies to nothing",
                config.plugins.dir.display(),
                policy.mode.as_str()
            )),
            Some(Some(PluginKind::AlertRule)) => report.warnings.push(format!(
                "[tuning.policies.{name}]: plugin {name} is an alert rule, not a tuning policy; its mode ({}) applies to nothing",
                policy.mode.as_str()
            )),
            // A tuning policy, or a file that failed to load (reported above).
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_file_is_writable_when_its_nearest_existing_directory_is() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            audit_writable(&dir.path().join("a/b/actions.jsonl")),
            Ok(())
        );
        let file = dir.path().join("actions.jsonl");
        std::fs::write(&file, "").unwrap();
        assert_eq!(audit_writable(&file), Ok(()));
        let err = audit_writable(&file.join("sub/actions.jsonl")).unwrap_err();
        assert!(err.contains("is not a directory"), "{err}");
        let err = audit_writable(dir.path()).unwrap_err();
        assert!(err.contains("is a directory"), "{err}");
    }
}
