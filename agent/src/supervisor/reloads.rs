//! The reload workers: one for the config, one for plugin files, so a slow config
//! reload never delays a plugin change and the other way round. Each handles its jobs
//! in order; the pipeline makes sure two plugin loads never overlap.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use super::Supervisor;
use super::settle::{PageRelease, SETTLE};
use crate::watch::Change;

/// Work for the config reload worker.
enum ConfigJob {
    /// The watcher saw the file change.
    Changed,
    /// SIGHUP, `POST /reload` or `vigil reload`: reload, then rescan the plugin directory.
    Requested,
}

/// Work for the plugin reload worker.
enum PluginJob {
    /// Load the whole plugin directory (at start).
    Load,
    File(PathBuf),
    Rescan,
}

/// The running reload workers; dropping this stops them.
pub(super) struct Reloads {
    config: UnboundedSender<ConfigJob>,
    plugins: UnboundedSender<PluginJob>,
    tasks: [JoinHandle<()>; 2],
    /// Releases the pages start-up and each plugin load touched, once settled.
    _page_release: PageRelease,
}

impl Reloads {
    /// Starts both workers for `supervisor`.
    pub(super) fn start(supervisor: &Arc<Supervisor>) -> Self {
        let (config_tx, mut config_rx) = unbounded_channel::<ConfigJob>();
        let (plugins_tx, mut plugins_rx) = unbounded_channel::<PluginJob>();
        let rescan = plugins_tx.clone();
        let s = supervisor.clone();
        let config = tokio::spawn(async move {
            while let Some(job) = config_rx.recv().await {
                match job {
                    ConfigJob::Changed => {
                        s.reload_config().await;
                    }
                    ConfigJob::Requested => {
                        // Asked for explicitly: a failure is reported again even if it is the same.
                        s.config_failures.forget();
                        s.reload_config().await;
                        let _ = rescan.send(PluginJob::Rescan);
                    }
                }
            }
        });
        let page_release = PageRelease::start(SETTLE);
        let loaded = page_release.after_load();
        let s = supervisor.clone();
        let plugins = tokio::spawn(async move {
            while let Some(job) = plugins_rx.recv().await {
                match job {
                    PluginJob::Load => s.load_plugins().await,
                    PluginJob::File(path) => s.reload_plugin_file(&path).await,
                    PluginJob::Rescan => {
                        let plugins = s.plugins_config();
                        s.pipeline.rescan_plugins(&plugins).await;
                    }
                }
                loaded.notify_one();
            }
        });
        Reloads {
            config: config_tx,
            plugins: plugins_tx,
            tasks: [config, plugins],
            _page_release: page_release,
        }
    }

    /// Queues one watched change for its worker.
    pub(super) fn apply(&self, change: Change) {
        // A worker only stops when the agent stops: nothing to do then.
        match change {
            Change::Plugin(path) => {
                let _ = self.plugins.send(PluginJob::File(path));
            }
            Change::Config => {
                let _ = self.config.send(ConfigJob::Changed);
            }
        }
    }

    /// Queues loading the whole plugin directory.
    pub(super) fn load_plugins(&self) {
        let _ = self.plugins.send(PluginJob::Load);
    }

    /// Queues a requested reload (config, then a rescan of the plugin directory).
    pub(super) fn request(&self) {
        let _ = self.config.send(ConfigJob::Requested);
    }
}

impl Drop for Reloads {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
