//! Locks that survive a panic elsewhere: a poisoned mutex still guards consistent data
//! here (every critical section is a plain update), so it is recovered and logged, never
//! turned into "no plugins", "no status" or a silent no-op.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// `lock()` that recovers a poisoned mutex.
pub trait LockExt<T> {
    /// Locks, recovering (and logging once per occurrence) a mutex poisoned by a panic.
    fn locked(&self) -> MutexGuard<'_, T> {
        self.locked_as("a lock")
    }

    /// As [`LockExt::locked`]; `what` names the lock in the log line (formatted only
    /// then: `format_args!` costs nothing on the way in).
    fn locked_as(&self, what: impl std::fmt::Display) -> MutexGuard<'_, T>;
}

impl<T> LockExt<T> for Mutex<T> {
    fn locked_as(&self, what: impl std::fmt::Display) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|poisoned: PoisonError<_>| {
            tracing::error!(
                "{what}: a thread panicked while holding its lock; going on with the data as it was left (please report this)"
            );
            self.clear_poison();
            poisoned.into_inner()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_recovered() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _guard = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *m.locked() += 1;
        assert_eq!(*m.locked(), 2);
        assert!(!m.is_poisoned());
    }
}
