//! Collector intervals changed while running (a tuning policy's `collector-interval`
//! action): each collector task follows its interval through a watch channel, and an
//! override outlives a restart of the collector as long as its configured interval is
//! the one the override was made against.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use crate::sync::LockExt;

/// Shortest interval a collector may be set to at run time.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// One collector's interval: what its config says, any override, and the channel its task follows.
struct Entry {
    configured: Duration,
    override_: Option<Duration>,
    current: watch::Sender<Duration>,
}

/// The intervals of the running collectors, by name.
#[derive(Default)]
pub struct CollectorIntervals {
    entries: Mutex<HashMap<String, Entry>>,
}

impl CollectorIntervals {
    /// Registers collector `name` configured to run every `configured`; returns the channel
    /// its task follows (starting at the override, if one was made against this same
    /// configured interval; a changed config drops the override).
    pub(super) fn follow(&self, name: &str, configured: Duration) -> watch::Receiver<Duration> {
        let mut entries = self.entries.locked();
        let entry = entries.entry(name.to_owned()).or_insert_with(|| Entry {
            configured,
            override_: None,
            current: watch::channel(configured).0,
        });
        if entry.configured != configured {
            if let Some(dropped) = entry.override_.take() {
                tracing::info!(
                    collector = name,
                    "collector {name}: its configured interval changed to {configured:?}; the tuning override of {dropped:?} no longer applies"
                );
            }
            entry.configured = configured;
        }
        let effective = entry.override_.unwrap_or(configured);
        entry.current.send_replace(effective);
        entry.current.subscribe()
    }

    /// Forgets collector `name` (it was removed from the config).
    pub(super) fn forget(&self, name: &str) {
        self.entries.locked().remove(name);
    }

    /// The interval collector `name` runs at now; `None` when no such collector runs.
    pub fn current(&self, name: &str) -> Option<Duration> {
        self.entries
            .locked()
            .get(name)
            .map(|e| *e.current.borrow())
    }

    /// Makes collector `name` run every `interval` from its next round on.
    pub fn set(&self, name: &str, interval: Duration) -> Result<(), String> {
        if interval < MIN_INTERVAL {
            return Err(format!(
                "an interval of {interval:?} is below the shortest allowed, {MIN_INTERVAL:?}"
            ));
        }
        let mut entries = self.entries.locked();
        let Some(entry) = entries.get_mut(name) else {
            return Err(format!("no collector named {name:?} runs in this agent"));
        };
        entry.override_ = (interval != entry.configured).then_some(interval);
        entry.current.send_replace(interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_follows_the_task_until_the_config_changes() {
        let intervals = CollectorIntervals::default();
        let secs = Duration::from_secs;
        let task = intervals.follow("system", secs(10));
        assert_eq!(*task.borrow(), secs(10));
        intervals.set("system", secs(20)).unwrap();
        assert_eq!(*task.borrow(), secs(20));
        assert_eq!(intervals.current("system"), Some(secs(20)));
        // The collector restarts with the same config: the override stays.
        assert_eq!(*intervals.follow("system", secs(10)).borrow(), secs(20));
        // Its configured interval changed: the operator's config wins.
        assert_eq!(*intervals.follow("system", secs(5)).borrow(), secs(5));
        assert!(intervals.set("nope", secs(1)).is_err());
        assert!(intervals.set("system", Duration::from_millis(1)).is_err());
    }
}
