//! Locks that survive a panic: a thread that panicked while holding one of the plugin
//! set's locks must not stop the plugins for good.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`; a lock poisoned by a panic is logged once, cleared and used as it was left.
pub(crate) fn lock<'a, T>(mutex: &'a Mutex<T>, what: &str) -> MutexGuard<'a, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => {
            tracing::error!(
                "{what}: a thread panicked while holding its lock; going on with the data as it was left"
            );
            mutex.clear_poison();
            poisoned.into_inner()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_recovered_and_cleared() {
        let mutex = std::sync::Arc::new(Mutex::new(1));
        let held = mutex.clone();
        let _ = std::thread::spawn(move || {
            let mut guard = held.lock().unwrap();
            *guard = 2;
            panic!("poison it");
        })
        .join();
        assert!(mutex.is_poisoned());
        assert_eq!(*lock(&mutex, "test"), 2);
        assert!(!mutex.is_poisoned());
    }
}
