//! Collector intervals changed while running (a tuning policy's `collector-interval`
//! action): each collector task follows its interval through a watch channel, and an
//! override outlives a restart of the collector as long as its configured interval is
//! the one the override was made against.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use crate::sync::LockExt;

use crate::tuning::collector::MIN_INTERVAL;

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

    /// The collector `name` names: a collector's own name (`system`, `redis:main`), or an
    /// instance name (`main`) when exactly one collector has it.
    fn resolve<'a>(entries: &'a mut HashMap<String, Entry>, name: &str) -> Option<&'a mut Entry> {
        let key = if entries.contains_key(name) {
            name.to_owned()
        } else {
            let suffix = format!(":{name}");
            let mut found = entries.keys().filter(|k| k.ends_with(&suffix));
            let first = found.next()?.clone();
            if found.next().is_some() {
                return None;
            }
            first
        };
        entries.get_mut(&key)
    }
}

impl crate::tuning::CollectorIntervals for CollectorIntervals {
    /// The interval collector `name` runs at now; `None` when no such collector runs.
    fn current(&self, name: &str) -> Option<Duration> {
        Self::resolve(&mut self.entries.locked(), name).map(|e| *e.current.borrow())
    }

    /// Makes collector `name` run every `interval` from its next round on.
    fn set(&self, name: &str, interval: Duration) -> Result<(), String> {
        if interval < MIN_INTERVAL {
            return Err(format!(
                "an interval of {interval:?} is below the shortest allowed, {MIN_INTERVAL:?}"
            ));
        }
        let mut entries = self.entries.locked();
        let Some(entry) = Self::resolve(&mut entries, name) else {
            return Err(format!(
                "no collector named {name:?} runs in this agent (or more than one has that instance name: use KIND:NAME)"
            ));
        };
        entry.override_ = (interval != entry.configured).then_some(interval);
        entry.current.send_replace(interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tuning::CollectorIntervals as _;

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
        // An instance name finds its collector when only one has it.
        intervals.follow("redis:main", secs(10));
        intervals.set("main", secs(30)).unwrap();
        assert_eq!(intervals.current("redis:main"), Some(secs(30)));
        intervals.follow("postgres:main", secs(10));
        assert!(intervals.set("main", secs(30)).is_err(), "ambiguous");
        assert!(intervals.set("system", Duration::from_millis(1)).is_err());
    }
}
