//! Every plugin of the plugin directory, by name. The set is published with `arc-swap`:
//! batches and status readers take the current set without a lock, and each plugin
//! evaluates in its own lane under its own lock, so plugins run side by side and a
//! slow one delays only itself. Writers (install, remove) are serialized by a small
//! mutex that is never held during a plugin call, except that replacing a plugin waits
//! for the old version's call in flight to hand its state to the new one. Plugins that
//! fail repeatedly are quarantined with exponential back-off.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::LoadError;
pub use super::evaluation::{Evaluation, PluginKind, PluginStatus, PolicyInputs};
use super::instance::PluginInstance;
use super::lane::{Handler, InFlight, Job, Lane};
use super::runtime::PluginRuntime;
use super::slot::{Outcome, PluginSlot};
use crate::config::PluginsConfig;
use crate::model::Batch;
use crate::sync::LockExt;

pub use super::slot::{QUARANTINE_MAX, QUARANTINE_MIN};

/// A plugin file that could not be loaded.
#[derive(Debug)]
pub struct LoadFailure {
    pub name: String,
    pub path: PathBuf,
    pub error: LoadError,
}

/// One published version of the set: read whole, replaced whole.
#[derive(Clone, Default)]
struct Published {
    slots: BTreeMap<String, Arc<PluginSlot>>,
    failures: BTreeMap<String, Arc<LoadFailure>>,
    /// The content hash and settings of the latest version of each plugin that failed to load.
    failed_versions: BTreeMap<String, (String, String)>,
}

/// What the set's handles and lane workers share.
struct Shared {
    runtime: Arc<PluginRuntime>,
    published: ArcSwap<Published>,
    /// Serializes writers; never held during a plugin call (only, when a plugin is
    /// replaced, while its old version finishes its call in flight).
    writer: Mutex<()>,
    in_flight: InFlight,
    quarantine_after: u32,
}

/// The loaded plugins and the runtime they share. Cloning gives another handle to the same set.
#[derive(Clone)]
pub struct PluginRegistry {
    shared: Arc<Shared>,
}

/// The plugin files of `dir` (`*.wasm`), sorted, with the plugin name (file stem) of each.
pub fn plugin_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file()
            && let Some(name) = plugin_name(&path)
        {
            files.push((name, path));
        }
    }
    files.sort();
    Ok(files)
}

/// The plugin name of a path (`NAME.wasm`), or `None` for any other file.
pub fn plugin_name(path: &Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    let name = path.file_stem()?.to_string_lossy().into_owned();
    (!name.is_empty() && !name.starts_with('.')).then_some(name)
}

impl PluginRegistry {
    /// An empty registry over `runtime`.
    pub fn new(runtime: Arc<PluginRuntime>, quarantine_after: u32) -> Self {
        PluginRegistry {
            shared: Arc::new(Shared {
                runtime,
                published: ArcSwap::from_pointee(Published::default()),
                writer: Mutex::new(()),
                in_flight: InFlight::default(),
                quarantine_after: quarantine_after.max(1),
            }),
        }
    }

    /// Loads every plugin in `config.dir`. A file that fails to load is logged and
    /// recorded; it never stops the others. A missing directory means no plugins.
    pub fn load_dir(runtime: Arc<PluginRuntime>, config: &PluginsConfig) -> Self {
        let registry = PluginRegistry::new(runtime, config.quarantine_after);
        let files = match plugin_files(&config.dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(dir = %config.dir.display(), "no plugins loaded: cannot read the plugin directory: {e}");
                return registry;
            }
        };
        for (name, path) in files {
            let settings = config.settings_json(&name);
            let loaded =
                PluginInstance::load(&registry.shared.runtime, &path, &name, settings.clone());
            if !registry.apply_load(&name, &path, loaded)
                && let Ok(bytes) = std::fs::read(&path)
            {
                // Logged once: a rescan of the same file says nothing more.
                let hash = super::cache::content_hash(&bytes);
                registry.remember_failed(&name, hash, settings);
            }
        }
        // Startup may wait for the disk: the next start should find every entry.
        registry.shared.runtime.cache().finish_writes();
        let published = registry.shared.published.load();
        for name in config.settings.keys() {
            if !published.slots.contains_key(name) && !published.failures.contains_key(name) {
                tracing::warn!(plugin = %name, dir = %config.dir.display(), "settings given for plugin `{name}` but there is no {name}.wasm in the plugin directory");
            }
        }
        registry
    }

    /// Installs a loaded plugin, or records why it did not load (keeping any running
    /// version). Returns whether the plugin was installed.
    pub fn apply_load(
        &self,
        name: &str,
        path: &Path,
        loaded: Result<PluginInstance, LoadError>,
    ) -> bool {
        match loaded {
            Ok(instance) => {
                let info = instance.info();
                tracing::info!(plugin = name, version = %info.version, contract = %info.contract, kind = %info.kind, interests = ?info.interests, "plugin loaded");
                self.install(instance);
                true
            }
            Err(error) => {
                if self.shared.published.load().slots.contains_key(name) {
                    tracing::error!(
                        plugin = name,
                        cause = error.cause(),
                        "{error}; the running version stays"
                    );
                } else {
                    tracing::error!(plugin = name, cause = error.cause(), "{error}");
                }
                let failure = Arc::new(LoadFailure {
                    name: name.to_owned(),
                    path: path.to_owned(),
                    error,
                });
                self.update(|set| {
                    set.failures.insert(name.to_owned(), failure);
                });
                false
            }
        }
    }

    /// Publishes a changed copy of the set; writers take turns.
    fn update<R>(&self, change: impl FnOnce(&mut Published) -> R) -> R {
        let _writer = self.shared.writer.locked_as("plugin set writer");
        let mut next = Published::clone(&self.shared.published.load());
        let result = change(&mut next);
        self.shared.published.store(Arc::new(next));
        result
    }

    /// Puts `instance` in place of any plugin of the same name; it inherits that
    /// plugin's state (taken once the old version's call in flight, if any, returns) and
    /// its waiting batches.
    pub fn install(&self, mut instance: PluginInstance) {
        let name = instance.name().to_owned();
        self.update(|set| {
            let lane = match set.slots.get(&name) {
                Some(old) => {
                    instance.adopt_state(old.retire());
                    old.lane.clone()
                }
                None => Arc::new(Lane::default()),
            };
            set.failures.remove(&name);
            set.failed_versions.remove(&name);
            set.slots
                .insert(name, Arc::new(PluginSlot::new(instance, lane)));
        });
    }

    /// Unloads plugin `name` once its call in flight, if any, returns; returns whether it was loaded.
    pub fn remove(&self, name: &str) -> bool {
        let removed = self.update(|set| {
            set.failures.remove(name);
            set.failed_versions.remove(name);
            set.slots.remove(name)
        });
        match removed {
            Some(slot) => {
                slot.retire();
                true
            }
            None => false,
        }
    }

    /// Remembers that the version of plugin `name` with `content_hash` and `settings`
    /// failed to load (and was logged), so the same version is not loaded and logged again.
    pub fn remember_failed(&self, name: &str, content_hash: String, settings: String) {
        self.update(|set| {
            set.failed_versions
                .insert(name.to_owned(), (content_hash, settings));
        });
    }

    /// The content hash and settings of the latest version of plugin `name` that failed to load.
    pub fn failed_as(&self, name: &str) -> Option<(String, String)> {
        self.shared
            .published
            .load()
            .failed_versions
            .get(name)
            .cloned()
    }

    /// The content hash and settings of plugin `name` as loaded, if it is.
    pub fn loaded_as(&self, name: &str) -> Option<(String, String)> {
        self.shared
            .published
            .load()
            .slots
            .get(name)
            .map(|s| (s.content_hash().to_owned(), s.settings_json().to_owned()))
    }

    /// Names of the loaded plugins.
    pub fn names(&self) -> Vec<String> {
        self.shared.published.load().slots.keys().cloned().collect()
    }

    /// Number of loaded plugins (quarantined ones included).
    pub fn len(&self) -> usize {
        self.shared.published.load().slots.len()
    }

    /// Whether no plugin is loaded.
    pub fn is_empty(&self) -> bool {
        self.shared.published.load().slots.is_empty()
    }

    /// The files that failed to load (latest failure per name).
    pub fn failures(&self) -> Vec<Arc<LoadFailure>> {
        self.shared
            .published
            .load()
            .failures
            .values()
            .cloned()
            .collect()
    }

    /// Status of every loaded plugin; never waits for a plugin call.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.shared
            .published
            .load()
            .slots
            .values()
            .map(|slot| slot.status())
            .collect()
    }

    /// Whether a tuning policy is loaded (quarantined ones included).
    pub fn has_policies(&self) -> bool {
        self.shared
            .published
            .load()
            .slots
            .values()
            .any(|slot| slot.kind() == PluginKind::TuningPolicy)
    }

    /// Hands `batch` to every loaded plugin that wants one of its metrics and returns at
    /// once. Each plugin evaluates
    /// it (alert rules) or proposes for it, shown `inputs` (tuning policies), in its own
    /// lane (one after the other per plugin, side by side across plugins) unless it is in
    /// quarantine, and `done` gets each [`Evaluation`]. Must run inside Tokio.
    pub fn dispatch(&self, batch: &Arc<Batch>, inputs: &Arc<PolicyInputs>, done: &Arc<Handler>) {
        for (name, slot) in &self.shared.published.load().slots {
            // Nothing in it for this plugin: no call, no wake-up of a lane worker.
            if !slot.wants(batch) {
                continue;
            }
            self.shared.in_flight.add();
            let pushed = slot.lane.push(
                name,
                Job {
                    batch: batch.clone(),
                    inputs: inputs.clone(),
                    done: done.clone(),
                },
            );
            if pushed.skipped.is_some() {
                self.shared.in_flight.done();
            }
            if pushed.start_worker {
                let (shared, name, lane) = (self.shared.clone(), name.clone(), slot.lane.clone());
                tokio::task::spawn_blocking(move || drain(&shared, &name, &lane));
            }
        }
    }

    /// Completes once every batch handed to [`PluginRegistry::dispatch`] so far was
    /// evaluated or skipped.
    pub async fn idle(&self) {
        self.shared.in_flight.idle().await;
    }

    /// The runtime the plugins share.
    pub fn runtime(&self) -> &Arc<PluginRuntime> {
        &self.shared.runtime
    }
}

/// A lane's worker: evaluates its batches in order with whatever version of plugin
/// `name` is installed at the time, until the lane is empty.
fn drain(shared: &Shared, name: &str, lane: &Lane) {
    while let Some(job) = lane.next(name) {
        let evaluated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            evaluate(shared, name, &job)
        }));
        if evaluated.is_err() {
            tracing::error!(
                plugin = name,
                "evaluating a batch with plugin {name} panicked in the agent; the batch is skipped for it"
            );
        }
        shared.in_flight.done();
    }
}

/// Evaluates one job with the installed version of plugin `name` (none: it was removed).
fn evaluate(shared: &Shared, name: &str, job: &Job) {
    loop {
        let Some(slot) = shared.published.load().slots.get(name).cloned() else {
            return;
        };
        let outcome = slot.evaluate(
            &job.batch,
            &job.inputs,
            shared.quarantine_after,
            |evaluation| (job.done)(evaluation, &job.batch),
        );
        if outcome != Outcome::Retired {
            return;
        }
        // Replaced meanwhile: the writer publishes the new version before it lets go.
        drop(shared.writer.locked_as("plugin set writer"));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::model::{BatchBuilder, MetricDesc, MetricKind};
    use crate::plugin::{Output, PluginLimits};
    use vigil_testkit::plugins::MISBEHAVE;

    fn runtime(deadline: Duration) -> Arc<PluginRuntime> {
        Arc::new(
            PluginRuntime::new(PluginLimits {
                deadline,
                memory_bytes: 32 << 20,
                max_findings: 100,
            })
            .unwrap(),
        )
    }

    fn misbehave(runtime: &PluginRuntime, name: &str, mode: &str) -> PluginInstance {
        PluginInstance::load(
            runtime,
            MISBEHAVE.as_ref(),
            name,
            format!(r#"{{"mode":"{mode}"}}"#),
        )
        .unwrap()
    }

    fn batch() -> Arc<Batch> {
        batch_from("test")
    }

    fn no_inputs() -> Arc<PolicyInputs> {
        Arc::new(PolicyInputs::default())
    }

    fn batch_from(source: &str) -> Arc<Batch> {
        batch_of(source, "test.value")
    }

    /// A batch from `source` with one point of the gauge `metric`.
    fn batch_of(source: &str, metric: &str) -> Arc<Batch> {
        let metric = MetricDesc::new(metric, "1", MetricKind::Gauge, "");
        let mut builder = BatchBuilder::new(source, "h");
        builder.point(&metric, vec![], 1.0);
        Arc::new(builder.build())
    }

    /// The `n` counts reported by the counting plugin, in the order they arrived.
    fn counts(found: &Mutex<Vec<(String, f64)>>, plugin: &str) -> Vec<f64> {
        found
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == plugin)
            .map(|(_, n)| *n)
            .collect()
    }

    /// Findings' values by plugin, in the order they arrived.
    type Found = Arc<Mutex<Vec<(String, f64)>>>;

    /// Installs a new version from `load` five times on another thread; the flag stays
    /// true until the last one is in.
    fn swap_in_five_times(
        registry: &PluginRegistry,
        runtime: &Arc<PluginRuntime>,
        load: impl Fn(&PluginRuntime) -> PluginInstance + Send + 'static,
    ) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
        let swapping = Arc::new(AtomicBool::new(true));
        let (registry, runtime, flag) = (registry.clone(), runtime.clone(), swapping.clone());
        let swapper = std::thread::spawn(move || {
            for _ in 0..5 {
                registry.install(load(&runtime));
            }
            flag.store(false, Ordering::SeqCst);
        });
        (swapping, swapper)
    }

    fn recorder() -> (Found, Arc<Handler>) {
        let found = Arc::new(Mutex::new(Vec::new()));
        let sink = found.clone();
        let handler: Arc<Handler> = Arc::new(move |evaluation: Evaluation, _: &Batch| {
            if let Ok(Some(Output::Findings(findings))) = evaluation.outcome {
                for finding in findings {
                    sink.lock()
                        .unwrap()
                        .push((evaluation.plugin.clone(), finding.value.unwrap_or(-1.0)));
                }
            }
        });
        (found, handler)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn policies_propose_in_their_lanes_shown_the_inputs_of_their_batch() {
        use crate::tuning::{CurrentSetting, SettingKey, Target};
        let runtime = runtime(Duration::from_secs(5));
        let registry = PluginRegistry::new(runtime.clone(), 3);
        registry.install(misbehave(&runtime, "rule", "ok"));
        assert!(!registry.has_policies());
        let policy = PluginInstance::load(
            &runtime,
            vigil_testkit::plugins::ECHO_POLICY.as_ref(),
            "policy",
            r#"{"mode":"inputs"}"#.into(),
        )
        .unwrap();
        registry.install(policy);
        assert!(registry.has_policies());
        let kinds: Vec<(String, PluginKind)> = registry
            .statuses()
            .into_iter()
            .map(|s| (s.name, s.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("policy".to_owned(), PluginKind::TuningPolicy),
                ("rule".to_owned(), PluginKind::AlertRule)
            ]
        );

        let outputs = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = {
            let outputs = outputs.clone();
            Arc::new(move |evaluation: Evaluation, _: &Batch| {
                outputs
                    .lock()
                    .unwrap()
                    .push((evaluation.plugin, evaluation.outcome.unwrap()));
            })
        };
        let inputs = Arc::new(PolicyInputs {
            firing: Arc::from(Vec::new()),
            settings: Arc::from(vec![CurrentSetting {
                setting: SettingKey {
                    target: Target::Redis,
                    instance: "cache".into(),
                    parameter: "maxmemory".into(),
                },
                value: "100mb".into(),
            }]),
        });
        registry.dispatch(&batch(), &inputs, &handler);
        registry.idle().await;
        let mut outputs = std::mem::take(&mut *outputs.lock().unwrap());
        outputs.sort_by(|a, b| a.0.cmp(&b.0));
        match &outputs[..] {
            [
                (policy, Some(Output::Proposals(proposals))),
                (rule, Some(Output::Findings(findings))),
            ] => {
                assert_eq!((policy.as_str(), rule.as_str()), ("policy", "rule"));
                assert_eq!(findings.len(), 1);
                assert_eq!(proposals.len(), 1);
                assert_eq!(proposals[0].policy, "policy");
                assert_eq!(
                    proposals[0].action.to_string(),
                    "redis cache maxmemory = 100mb"
                );
            }
            other => panic!("unexpected outputs: {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn state_is_handed_over_while_batches_flow_and_none_is_lost() {
        let runtime = runtime(Duration::from_secs(1));
        let registry = PluginRegistry::new(runtime.clone(), 3);
        registry.install(misbehave(&runtime, "counter", "count"));
        let (found, handler) = recorder();

        // Batches flow while new versions are swapped in from another thread.
        let (swapping, swapper) = swap_in_five_times(&registry, &runtime, |runtime| {
            misbehave(runtime, "counter", "count")
        });
        let mut sent = 0;
        while swapping.load(Ordering::SeqCst) || sent < 10 {
            registry.dispatch(&batch(), &no_inputs(), &handler);
            sent += 1;
            registry.idle().await;
        }
        swapper.join().unwrap();

        // Every batch was evaluated once, each version counting on from the last one.
        let expected: Vec<f64> = (1..=sent).map(f64::from).collect();
        assert_eq!(counts(&found, "counter"), expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_policy_swapped_while_batches_are_in_flight_decides_each_batch_once() {
        let runtime = runtime(Duration::from_secs(5));
        let registry = PluginRegistry::new(runtime.clone(), 3);
        let counting = |runtime: &PluginRuntime| {
            PluginInstance::load(
                runtime,
                vigil_testkit::plugins::ECHO_POLICY.as_ref(),
                "policy",
                r#"{"mode":"count"}"#.into(),
            )
            .unwrap()
        };
        registry.install(counting(&runtime));
        let reasons = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = {
            let reasons = reasons.clone();
            Arc::new(move |evaluation: Evaluation, _: &Batch| {
                if let Ok(Some(Output::Proposals(proposals))) = evaluation.outcome {
                    let mut reasons = reasons.lock().unwrap();
                    reasons.extend(proposals.into_iter().map(|p| p.reason));
                }
            })
        };

        // Batches from distinct sources (none replaces another while waiting) are handed
        // out without waiting, while new versions are swapped in from another thread.
        let (swapping, swapper) = swap_in_five_times(&registry, &runtime, counting);
        let mut sent = 0;
        while swapping.load(Ordering::SeqCst) || sent < 40 {
            sent += 1;
            registry.dispatch(&batch_from(&format!("s{sent}")), &no_inputs(), &handler);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        swapper.join().unwrap();
        registry.idle().await;

        // Each batch was proposed for once, each version counting on from the last one.
        let expected: Vec<String> = (1..=sent).map(|n| format!("n={n}")).collect();
        assert_eq!(*reasons.lock().unwrap(), expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_without_a_wanted_metric_is_not_handed_to_the_plugin() {
        let runtime = runtime(Duration::from_secs(5));
        let registry = PluginRegistry::new(runtime.clone(), 3);
        // The threshold rule wants the metrics its rules name: `test.value` here.
        registry.install(
            PluginInstance::load(
                &runtime,
                vigil_testkit::plugins::THRESHOLD.as_ref(),
                "threshold",
                r#"{"rules":[{"name":"hot","metric":"test.value","op":">","value":0.5}]}"#
                    .to_owned(),
            )
            .unwrap(),
        );
        let calls = Arc::new(Mutex::new(Vec::<String>::new()));
        let handler: Arc<Handler> = {
            let calls = calls.clone();
            Arc::new(move |evaluation: Evaluation, batch: &Batch| {
                calls.lock().unwrap().push(batch.source.clone());
                assert!(evaluation.outcome.is_ok(), "{:?}", evaluation.outcome);
            })
        };
        registry.dispatch(&batch_of("unwanted", "other.value"), &no_inputs(), &handler);
        registry.dispatch(&batch_from("wanted"), &no_inputs(), &handler);
        registry.idle().await;
        assert_eq!(*calls.lock().unwrap(), ["wanted"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_plugin_holds_back_neither_other_plugins_nor_status() {
        let runtime = runtime(Duration::from_secs(5));
        let registry = PluginRegistry::new(runtime.clone(), 1000);
        registry.install(misbehave(&runtime, "slow", "loop"));
        registry.install(misbehave(&runtime, "counter", "count"));
        let evaluated = Arc::new(Mutex::new(Vec::<String>::new()));
        let handler: Arc<Handler> = {
            let evaluated = evaluated.clone();
            Arc::new(move |evaluation: Evaluation, _: &Batch| {
                evaluated.lock().unwrap().push(evaluation.plugin);
            })
        };
        let done = |plugin: &str| {
            evaluated
                .lock()
                .unwrap()
                .iter()
                .filter(|p| *p == plugin)
                .count()
        };

        // `slow` loops for its 5 s deadline on the first batch and has the others
        // waiting; `counter` evaluates all three meanwhile, and status answers.
        for source in ["a", "b", "c"] {
            registry.dispatch(&batch_from(source), &no_inputs(), &handler);
        }
        while done("counter") < 3 {
            assert_eq!(done("slow"), 0, "counter waited for the busy plugin");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let statuses = registry.statuses();
        assert_eq!(
            done("slow"),
            0,
            "status or counter waited for the busy plugin"
        );
        assert_eq!(statuses.len(), 2);

        // Newer batches from the sources still waiting for `slow` replace them.
        for source in ["b", "c"] {
            registry.dispatch(&batch_from(source), &no_inputs(), &handler);
        }
        let skipped = |registry: &PluginRegistry, plugin: &str| {
            registry
                .statuses()
                .into_iter()
                .find(|s| s.name == plugin)
                .map(|s| s.skipped_batches)
        };
        assert_eq!(skipped(&registry, "slow"), Some(2));

        // Removing it waits for its call in flight; nothing it had waiting runs after.
        assert!(registry.remove("slow"));
        let evaluated_by_slow = done("slow");
        assert!(evaluated_by_slow <= 1);
        registry.idle().await;
        assert_eq!(done("slow"), evaluated_by_slow);
        assert_eq!(
            done("counter") as u64 + skipped(&registry, "counter").unwrap(),
            5
        );
        assert_eq!(skipped(&registry, "slow"), None);
    }
}
