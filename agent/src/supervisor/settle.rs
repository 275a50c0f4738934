//! Releases the executable's pages that start-up and plugin loads touched, once the agent
//! has settled: after a quiet period following its start and each plugin load (see
//! [`crate::resident`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How long the agent runs without a plugin load before the pages are released: the first
/// collection rounds and exports after a start are done by then.
pub(super) const SETTLE: Duration = Duration::from_secs(10);

/// The task that releases the pages; dropping this stops it.
pub(super) struct PageRelease {
    loaded: Arc<Notify>,
    task: JoinHandle<()>,
}

impl PageRelease {
    /// Starts the task: it releases `settle` after the start, then `settle` after each
    /// plugin load reported by [`PageRelease::after_load`].
    pub(super) fn start(settle: Duration) -> Self {
        let loaded = Arc::new(Notify::new());
        let wake = loaded.clone();
        let task = tokio::spawn(async move {
            loop {
                // A load during the wait starts the wait again.
                while tokio::time::timeout(settle, wake.notified()).await.is_ok() {}
                if !release().await {
                    return;
                }
                wake.notified().await;
            }
        });
        PageRelease { loaded, task }
    }

    /// What a plugin worker calls when a load ends.
    pub(super) fn after_load(&self) -> Arc<Notify> {
        self.loaded.clone()
    }
}

impl Drop for PageRelease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Releases the pages; false if that is not possible here (said once, at info). The
/// resident bytes before and after are measured only when debug logging would show them.
async fn release() -> bool {
    let measured = tracing::enabled!(tracing::Level::DEBUG);
    let released = tokio::task::spawn_blocking(move || {
        if measured {
            crate::resident::release_executable_pages_measured().map(Some)
        } else {
            crate::resident::release_executable_pages().map(|()| None)
        }
    })
    .await;
    match released {
        Ok(Ok(measured)) => {
            if let Some(released) = measured {
                tracing::debug!(
                    before_kib = released.before / 1024,
                    after_kib = released.after / 1024,
                    "released the executable's pages touched since the start or the last plugin load"
                );
            }
            true
        }
        Ok(Err(e)) => {
            tracing::info!(
                "the executable's start-up pages stay resident (cannot release them: {e})"
            );
            false
        }
        Err(_) => false,
    }
}
