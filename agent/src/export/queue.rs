//! A bounded first-in-first-out queue that drops its oldest entries when full and
//! counts what it dropped, sent and failed to send.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::sync::LockExt;

pub use crate::telemetry::QueueStats;

/// Entries of `T`, each weighing a number of items (a metric batch weighs its
/// datapoints); the total weight never exceeds the capacity for long: pushing over
/// it drops the oldest entries.
#[derive(Debug)]
pub struct BoundedQueue<T> {
    entries: VecDeque<(T, u64)>,
    weight: u64,
    stats: QueueStats,
}

impl<T> BoundedQueue<T> {
    /// An empty queue holding at most `capacity` items.
    pub fn new(capacity: u64) -> Self {
        BoundedQueue {
            entries: VecDeque::new(),
            weight: 0,
            stats: QueueStats {
                capacity,
                ..QueueStats::default()
            },
        }
    }

    /// Appends `entry` of `weight` items, dropping the oldest entries while the queue
    /// is over capacity (an entry heavier than the whole capacity is dropped at once).
    /// Returns the items dropped.
    pub fn push(&mut self, entry: T, weight: u64) -> u64 {
        self.entries.push_back((entry, weight));
        self.weight += weight;
        self.trim()
    }

    /// Drops the oldest entries while over capacity; returns the items dropped.
    fn trim(&mut self) -> u64 {
        let mut dropped = 0;
        while self.weight > self.stats.capacity {
            match self.entries.pop_front() {
                Some((_, w)) => {
                    self.weight -= w;
                    dropped += w;
                }
                None => break,
            }
        }
        self.stats.dropped += dropped;
        dropped
    }

    /// Takes the oldest entry out to send it; give it back with [`Self::unsent`] when
    /// sending fails or [`Self::sent`] when it succeeded.
    pub fn take(&mut self) -> Option<(T, u64)> {
        let (entry, weight) = self.entries.pop_front()?;
        self.weight -= weight;
        Some((entry, weight))
    }

    /// The oldest entry, left in place.
    pub fn front(&self) -> Option<&T> {
        self.entries.front().map(|(entry, _)| entry)
    }

    /// Counts a delivered entry of `weight` items.
    pub fn sent(&mut self, weight: u64) {
        self.stats.sent += weight;
    }

    /// Counts an export request that failed.
    pub fn failed(&mut self) {
        self.stats.failed_requests += 1;
    }

    /// Puts back an entry that could not be sent, in front; if newer entries filled
    /// the queue meanwhile, the oldest are dropped.
    pub fn unsent(&mut self, entry: T, weight: u64) {
        self.entries.push_front((entry, weight));
        self.weight += weight;
        self.trim();
    }

    /// Drops everything still queued (at shutdown, past the flush deadline) and
    /// returns the items dropped.
    pub fn drop_all(&mut self) -> u64 {
        let dropped = self.weight;
        self.entries.clear();
        self.weight = 0;
        self.stats.dropped += dropped;
        dropped
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The totals, with the items queued now.
    pub fn stats(&self) -> QueueStats {
        QueueStats {
            queued: self.weight,
            ..self.stats
        }
    }
}

/// Entries taken out of a shared queue to be sent. Unless [`Taken::sent`] or
/// [`Taken::failed`] settles them, dropping them puts them back in front: a send that
/// is cancelled (e.g. at the shutdown deadline) loses nothing without counting it.
///
/// The queue may sit inside a larger structure `Q` behind the mutex; `queue` finds it.
pub struct Taken<'a, Q, T> {
    lock: &'a Mutex<Q>,
    queue: fn(&mut Q) -> &mut BoundedQueue<T>,
    entries: Vec<(T, u64)>,
}

impl<'a, T> Taken<'a, BoundedQueue<T>, T> {
    /// Takes up to `max` of the oldest entries of `queue`.
    pub fn take(queue: &'a Mutex<BoundedQueue<T>>, max: usize) -> Self {
        let entries = std::iter::from_fn(|| queue.locked().take())
            .take(max)
            .collect();
        Taken {
            lock: queue,
            queue: |q| q,
            entries,
        }
    }
}

impl<'a, Q, T> Taken<'a, Q, T> {
    /// Entries already taken out of the queue that `queue` finds inside `lock`.
    pub fn settle_later(
        lock: &'a Mutex<Q>,
        queue: fn(&mut Q) -> &mut BoundedQueue<T>,
        entries: Vec<(T, u64)>,
    ) -> Self {
        Taken {
            lock,
            queue,
            entries,
        }
    }

    /// The entries taken, oldest first, with their weights.
    pub fn entries(&self) -> &[(T, u64)] {
        &self.entries
    }

    /// Whether nothing was taken.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counts the entries as delivered.
    pub fn sent(mut self) {
        let weight: u64 = self.entries.drain(..).map(|(_, w)| w).sum();
        (self.queue)(&mut self.lock.locked()).sent(weight);
    }

    /// Counts a failed request and puts the entries back in front.
    pub fn failed(self) {
        (self.queue)(&mut self.lock.locked()).failed();
    }
}

impl<Q, T> Drop for Taken<'_, Q, T> {
    fn drop(&mut self) {
        if self.entries.is_empty() {
            return;
        }
        let mut guard = self.lock.locked();
        let queue = (self.queue)(&mut guard);
        for (entry, weight) in self.entries.drain(..).rev() {
            queue.unsent(entry, weight);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_the_oldest_and_counts_items() {
        let mut q = BoundedQueue::new(5);
        assert_eq!(q.push("a", 2), 0);
        assert_eq!(q.push("b", 2), 0);
        assert_eq!(q.push("c", 2), 2);
        assert_eq!(q.take().map(|(e, _)| e), Some("b"));
        let stats = q.stats();
        assert_eq!((stats.queued, stats.dropped), (2, 2));
    }

    #[test]
    fn taken_entries_come_back_unless_settled() {
        let queue = Mutex::new(BoundedQueue::new(10));
        for i in 0..4 {
            queue.lock().unwrap().push(i, 1);
        }
        let taken = Taken::take(&queue, 3);
        assert_eq!(taken.entries().len(), 3);
        drop(taken); // a cancelled send
        assert_eq!(queue.lock().unwrap().take().map(|(e, _)| e), Some(0));
        Taken::take(&queue, 1).sent();
        Taken::take(&queue, 1).failed();
        let mut q = queue.lock().unwrap();
        assert_eq!(q.take().map(|(e, _)| e), Some(2));
        let stats = q.stats();
        assert_eq!((stats.sent, stats.failed_requests, stats.queued), (1, 1, 1));
    }

    #[test]
    fn unsent_entry_goes_back_in_front() {
        let mut q = BoundedQueue::new(3);
        q.push(1, 1);
        q.push(2, 1);
        let (entry, weight) = q.take().unwrap();
        q.push(3, 1);
        q.push(4, 1);
        q.failed();
        q.unsent(entry, weight);
        // 1 is back in front, the queue is over capacity: 1 itself is the oldest and goes.
        assert_eq!(q.take().map(|(e, _)| e), Some(2));
        let stats = q.stats();
        assert_eq!((stats.failed_requests, stats.dropped), (1, 1));
    }

    #[test]
    fn an_entry_heavier_than_the_capacity_is_dropped() {
        let mut q = BoundedQueue::new(3);
        q.push("small", 1);
        assert_eq!(q.push("huge", 10), 11);
        assert!(q.is_empty());
        assert_eq!(q.drop_all(), 0);
    }
}
