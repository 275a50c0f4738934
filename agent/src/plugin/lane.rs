//! Batches waiting for one plugin. Each plugin has its own lane and at most one worker
//! thread draining it, so plugins evaluate side by side and a slow plugin delays only
//! its own batches. A lane holds at most one waiting batch per source: when a plugin
//! cannot keep up, a newer batch from a source replaces the one still waiting (the
//! older is skipped, counted, and logged once per episode). [`MAX_WAITING`] caps the
//! lane even if sources were unbounded.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::evaluation::{Evaluation, PolicyInputs};
use crate::model::Batch;
use crate::sync::LockExt;

/// Most batches waiting for one plugin (besides the one it evaluates), whatever their sources.
pub const MAX_WAITING: usize = 256;

/// What to do with a plugin's evaluation of a batch; runs while the plugin's lock is
/// held, so no newer version of the plugin is swapped in before it returns.
pub type Handler = dyn Fn(Evaluation, &Batch) + Send + Sync;

/// One batch for one plugin.
pub struct Job {
    pub batch: Arc<Batch>,
    /// What a tuning policy is shown beside the batch (taken when it was handed out).
    pub inputs: Arc<PolicyInputs>,
    pub done: Arc<Handler>,
}

#[derive(Default)]
struct Waiting {
    jobs: VecDeque<Job>,
    /// Whether a worker is draining the lane.
    worker: bool,
    /// Whether batches were skipped since the lane last ran empty.
    behind: bool,
    skipped: u64,
}

/// The batches waiting for one plugin (kept across versions of the plugin).
#[derive(Default)]
pub struct Lane {
    waiting: Mutex<Waiting>,
}

/// What [`Lane::push`] did.
pub struct Pushed {
    /// No worker was draining the lane: the caller must start one.
    pub start_worker: bool,
    /// The oldest waiting job, pushed out because the lane was full.
    pub skipped: Option<Job>,
}

impl Lane {
    /// Queues `job` for plugin `plugin`.
    pub fn push(&self, plugin: &str, job: Job) -> Pushed {
        let mut waiting = self.waiting.locked_as("plugin lane");
        let same_source = waiting
            .jobs
            .iter()
            .position(|waiting| waiting.batch.source == job.batch.source);
        let skipped = match same_source {
            Some(at) => waiting.jobs.remove(at),
            None if waiting.jobs.len() >= MAX_WAITING => waiting.jobs.pop_front(),
            None => None,
        };
        if skipped.is_some() {
            waiting.skipped += 1;
            if !waiting.behind {
                waiting.behind = true;
                tracing::warn!(
                    plugin,
                    "plugin {plugin} cannot keep up with the batches: its evaluations take longer than batches arrive; a batch still waiting is skipped when a newer one from the same source comes (logged once until it catches up)"
                );
            }
        }
        waiting.jobs.push_back(job);
        let start_worker = !waiting.worker;
        waiting.worker = true;
        Pushed {
            start_worker,
            skipped,
        }
    }

    /// The next job, or `None` when the lane is empty (the worker then stops, and the
    /// next [`Lane::push`] starts a new one).
    pub fn next(&self, plugin: &str) -> Option<Job> {
        let mut waiting = self.waiting.locked_as("plugin lane");
        let job = waiting.jobs.pop_front();
        if job.is_none() {
            waiting.worker = false;
            if waiting.behind {
                waiting.behind = false;
                tracing::info!(plugin, "plugin {plugin} caught up with the batches");
            }
        }
        job
    }

    /// Batches skipped so far because the plugin could not keep up.
    pub fn skipped(&self) -> u64 {
        self.waiting.locked_as("plugin lane").skipped
    }
}

/// Jobs queued or being evaluated across all lanes, so a stop can wait for them.
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

impl InFlight {
    /// One more job.
    pub fn add(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// One job evaluated or skipped.
    pub fn done(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Completes once no job is queued or being evaluated.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}
