//! `vigil check`: validates a config and loads every plugin it names, reporting each problem.

use std::path::Path;

use crate::config::{Config, PluginsConfig};
use crate::plugin::registry::plugin_files;
use crate::plugin::{Compiler, PluginInstance, PluginRuntime};

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
    // Building the server collectors reads their passwords (no connection is made).
    for (kind, instance) in config.collect.servers() {
        if let Err(e) = crate::collect::build_server(kind, instance, String::new()) {
            report.errors.push(e.to_string());
        }
    }

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
    for (name, file) in &files {
        match PluginInstance::load(&runtime, file, name, config.plugins.settings_json(name)) {
            Ok(plugin) => {
                let info = plugin.info();
                report.ok.push(format!(
                    "plugin {name} ({}): {} {} watching {:?}",
                    file.display(),
                    info.name,
                    info.version,
                    info.interests
                ));
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
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
