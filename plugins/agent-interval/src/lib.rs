//! `agent-interval`: an example tuning policy that protects the host from the agent itself.
//! It backs a collector off (a longer interval) while the host's CPU is saturated and
//! brings it back when the CPU recovers.
//!
//! **Watches** `system.cpu.utilization` of the `system` collector: the whole-host busy
//! share (the series without `cpu.logical_number`; without it, the mean of the per-core
//! series).
//!
//! **Proposes** `collector-interval` actions for each collector in `collectors`:
//! - busy above `high` for `for_batches` consecutive batches: the current interval × 2,
//!   at most `max_interval`;
//! - busy below `low` for `for_batches` consecutive batches while the interval is above
//!   `base_interval`: the current interval ÷ 2, never below `base_interval`.
//!
//! The current interval comes from the settings the host passes (target `collector`,
//! parameter `interval-ms`), so the operator's allowlist must name each collector: the
//! policy never proposes for a collector whose interval is unknown and says so once (a
//! warning in the agent's log). The same proposal is made on every batch while its
//! condition holds and the interval is unchanged (the host decides it once); once the
//! interval changed, the streak starts over, so each step has to hold for `for_batches`
//! batches at the new interval. No automatic revert is asked for: the policy itself
//! steps back when the CPU says so, with the same hysteresis, and a revert keyed on the
//! CPU would undo a back-off exactly when it is needed. Firing alerts are not used.
//!
//! **Settings** (`[plugins.settings.agent-interval]`, all optional):
//!
//! ```toml
//! collectors = ["system"]   # collectors whose interval it changes
//! high = 0.9                # busy share above which it backs off
//! low = 0.5                 # busy share below which it returns
//! for_batches = 3           # consecutive batches a condition must hold
//! max_interval = "60s"      # longest interval it proposes
//! base_interval = "10s"     # shortest interval it returns to
//! ```
//!
//! Invalid settings make `describe` fail with the reason. The logic is in [`decide`]; its
//! tests run natively: `cd plugins && cargo test -p agent-interval`.

pub mod decide;

use std::sync::OnceLock;

use vigil_plugin_kit::Frame;
use vigil_plugin_kit::policy::{settings_once, step_with_state};
use vigil_plugin_kit::policy_bindings::{
    Batch, CurrentSetting, FiringAlert, Guest, PluginInfo, Proposal,
};

use decide::{CPU, Settings, State, busy, step};

/// The settings, parsed once per instance (new settings start a new instance).
fn settings() -> Result<&'static Settings, String> {
    static SETTINGS: OnceLock<Result<Settings, String>> = OnceLock::new();
    settings_once(&SETTINGS, Settings::parse)
}

/// Where the streaks are kept in the host's state.
const STATE: &str = "cpu";

struct AgentInterval;

impl Guest for AgentInterval {
    fn describe() -> Result<PluginInfo, String> {
        settings()?;
        Ok(PluginInfo {
            name: "agent-interval".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            interests: vec![CPU.into()],
        })
    }

    fn propose(
        batch: Batch,
        _firing: Vec<FiringAlert>,
        current: Vec<CurrentSetting>,
    ) -> Result<Vec<Proposal>, String> {
        let s = settings()?;
        let frame = Frame::new(batch)?;
        let busy = busy(&frame);
        if busy.is_none() {
            return Ok(Vec::new());
        }
        step_with_state(STATE, |state: &mut State| step(state, s, busy, &current))
    }
}

vigil_plugin_kit::export_policy!(AgentInterval);
