//! `pg-work-mem`: an example tuning policy that gives PostgreSQL queries more memory
//! while they spill to temporary files.
//!
//! **Watches** `postgresql.temp_files` (a counter per database, `db.namespace`) of each
//! PostgreSQL instance (batches of source `postgres:NAME`, series with
//! `vigil.instance = NAME`): temporary files created per minute between two batches,
//! summed over the instance's databases.
//!
//! **Proposes** `postgres-set work_mem` = current × 2, at most `max`, when temporary files
//! are created faster than `temp_files_per_min` for `for_batches` consecutive batches. The
//! current value comes from the settings the host passes (target `postgres`, parameter
//! `work_mem`, as the server shows it: `4MB`, or a bare number of kB); the policy never
//! proposes while it is unknown and says so once (a warning in the agent's log). The value
//! proposed is written in PostgreSQL's units (`8MB`).
//!
//! The same proposal is made on every batch while the condition holds and `work_mem` is
//! unchanged (the host decides it once); once `work_mem` changed, the streak starts over,
//! so each doubling has to be earned by `for_batches` more batches of spilling.
//!
//! **Automatic revert**: none by default. Temporary files going on after the change mean
//! the step was not enough (the next step follows), not that it did harm, so they are a
//! bad revert signal; the harm a larger `work_mem` can do is memory pressure. When
//! PostgreSQL runs on the agent's host, set `revert_memory_utilization` (e.g. 0.95): each
//! proposal then asks the host to revert it when `system.memory.utilization` (state `used`)
//! rises above that share within `revert_window`. Firing alerts are not used.
//!
//! **Settings** (`[plugins.settings.pg-work-mem]`, all optional):
//!
//! ```toml
//! instance = "main"                 # only this instance (default: every instance)
//! temp_files_per_min = 1            # rate above which queries count as spilling
//! for_batches = 3                   # consecutive batches it must hold
//! max = "256MB"                     # largest work_mem proposed
//! revert_memory_utilization = 0.95  # optional: revert when host memory in use passes it
//! revert_window = "30m"             # how long after a change that revert watches
//! ```
//!
//! Invalid settings make `describe` fail with the reason. The logic is in [`decide`]; its
//! tests run natively: `cd plugins && cargo test -p pg-work-mem`.

pub mod decide;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use vigil_plugin_kit::policy::{settings_once, step_with_state};
use vigil_plugin_kit::policy_bindings::{
    Batch, CurrentSetting, FiringAlert, Guest, PluginInfo, Proposal,
};
use vigil_plugin_kit::{Frame, instance, points_of};

use decide::{Settings, State, TEMP_FILES, step};

/// The settings, parsed once per instance (new settings start a new instance).
fn settings() -> Result<&'static Settings, String> {
    static SETTINGS: OnceLock<Result<Settings, String>> = OnceLock::new();
    settings_once(&SETTINGS, Settings::parse)
}

struct WorkMem;

impl Guest for WorkMem {
    fn describe() -> Result<PluginInfo, String> {
        settings()?;
        Ok(PluginInfo {
            name: "pg-work-mem".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            interests: vec![TEMP_FILES.into()],
        })
    }

    fn propose(
        batch: Batch,
        _firing: Vec<FiringAlert>,
        current: Vec<CurrentSetting>,
    ) -> Result<Vec<Proposal>, String> {
        let s = settings()?;
        let frame = Frame::new(batch)?;
        // (database, temp files so far) per instance; a batch normally holds one instance.
        let mut by_instance: BTreeMap<&str, Vec<(&str, f64)>> = BTreeMap::new();
        for point in points_of(&frame, TEMP_FILES) {
            let name = instance(&frame.batch.source, point.attributes);
            if s.watches(name) {
                by_instance
                    .entry(name)
                    .or_default()
                    .push((point.attr("db.namespace"), point.value));
            }
        }
        let mut proposals = Vec::new();
        for (name, temp_files) in by_instance {
            proposals.extend(step_with_state(
                &format!("instance:{name}"),
                |state: &mut State| {
                    step(
                        state,
                        s,
                        name,
                        frame.batch.timestamp_ns,
                        &temp_files,
                        &current,
                    )
                },
            )?);
        }
        Ok(proposals)
    }
}

vigil_plugin_kit::export_policy!(WorkMem);
