//! Watches the plugin directory and the config file (`notify`, debounced) and reports
//! what changed. Editors write in several steps, rename into place, or delete and
//! recreate: every step ends up as a change of the file's path, and the reload that
//! follows validates the file before it replaces anything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{Config, DebounceEventResult, Debouncer, new_debouncer_opt};
use tokio::sync::mpsc::UnboundedSender;

/// Quiet time after the last event of a path before it is reported.
pub const DEBOUNCE: Duration = Duration::from_millis(10);

/// Something to reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A `*.wasm` file in the plugin directory was written, added or removed.
    Plugin(PathBuf),
    /// The config file changed.
    Config,
}

/// Keeps the watch alive; dropping it stops watching.
pub struct Watch {
    _debouncer: Debouncer<RecommendedWatcher>,
}

/// Watches `plugin_dir` and, if given, `config_file`; sends each change to `changes`.
pub fn watch(
    plugin_dir: &Path,
    config_file: Option<&Path>,
    changes: UnboundedSender<Change>,
) -> Result<Watch, String> {
    let config_file = config_file.map(absolute);
    let plugin_dir_abs = absolute(plugin_dir);
    let config_for_events = config_file.clone();
    // Not in batch mode: each path is reported as soon as it has been quiet for DEBOUNCE.
    let config = Config::default()
        .with_timeout(DEBOUNCE)
        .with_batch_mode(false);
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            for event in events {
                let path = absolute(&event.path);
                if Some(&path) == config_for_events.as_ref() {
                    let _ = changes.send(Change::Config);
                } else if path.parent() == Some(plugin_dir_abs.as_path())
                    && crate::plugin::registry::plugin_name(&path).is_some()
                {
                    let _ = changes.send(Change::Plugin(path));
                }
            }
        }
        Err(e) => tracing::warn!("file watch error: {e}"),
    };
    let mut debouncer = new_debouncer_opt::<_, RecommendedWatcher>(config, handler)
        .map_err(|e| format!("cannot start watching files: {e}"))?;
    debouncer
        .watcher()
        .watch(plugin_dir, RecursiveMode::NonRecursive)
        .map_err(|e| {
            format!(
                "cannot watch plugin directory {}: {e}",
                plugin_dir.display()
            )
        })?;
    if let Some(config) = &config_file {
        // Watch the directory: editors replace the file, which ends a watch on the file itself.
        let dir = config.parent().unwrap_or(Path::new("/"));
        debouncer
            .watcher()
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch config directory {}: {e}", dir.display()))?;
    }
    Ok(Watch {
        _debouncer: debouncer,
    })
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
