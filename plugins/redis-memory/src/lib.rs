//! `redis-memory`: an example tuning policy that gives a Redis cache more memory when it
//! evicts too much or misses too often, and lets it evict when it is full and refuses
//! writes.
//!
//! **Watches**, per Redis instance (batches of source `redis:NAME`, series with
//! `vigil.instance = NAME`): `redis.keys.evicted` (counter: evictions per second between two
//! batches), `redis.keyspace.hits` and `redis.keyspace.misses` (counters: the hit ratio of
//! the interval, judged only over at least `min_lookups` lookups), `redis.maxmemory` and
//! `redis.memory.used` (gauges, bytes).
//!
//! **Proposes** (`redis-config-set`):
//! - `maxmemory` = current + `step`, at most `max`, when evictions exceed `evictions_per_s`
//!   or the hit ratio is below `min_hit_ratio` for `for_batches` consecutive batches. The
//!   current value is the one the host passes (target `redis`, parameter `maxmemory`), else
//!   the `redis.maxmemory` metric of the batch; with neither the policy says so once (a
//!   warning) and proposes nothing. A `maxmemory` of 0 (no limit) is never raised. The value
//!   proposed is in bytes (`335544320`), as Redis reports it back. It asks for an automatic
//!   revert when `redis.keys.evicted` of the instance rises above
//!   max(evictions/s seen before the change × `revert_factor`, `evictions_per_s`) within
//!   `revert_window`: more memory should mean fewer evictions, not more.
//! - `maxmemory-policy` = `eviction_policy` when the current policy (from the host; needed,
//!   or a warning once while memory is full) is `noeviction` and memory is full
//!   (`redis.memory.used` >= maxmemory > 0) for `for_batches` consecutive batches: Redis
//!   then refuses writes. Evicting is the intended effect, so evictions cannot judge it;
//!   it asks for a revert when `redis.keyspace.misses` rises above
//!   max(misses/s seen before × `revert_factor`, 1/s) within `revert_window`: evicting keys
//!   that clients still read is worse than refusing writes.
//!
//! The same proposal is made on every batch while its condition holds and the setting is
//! unchanged (the host decides it once); once the setting changed, the streak starts over,
//! so each step has to be earned by `for_batches` more batches. Firing alerts are not used.
//!
//! **Settings** (`[plugins.settings.redis-memory]`, all optional):
//!
//! ```toml
//! instance = "cache"              # only this instance (default: every instance)
//! evictions_per_s = 1             # evictions per second above which memory is short
//! min_hit_ratio = 0.9             # hit ratio below which memory is short
//! min_lookups = 100               # lookups an interval needs for its hit ratio to count
//! for_batches = 3                 # consecutive batches a condition must hold
//! step = "64mb"                   # added to maxmemory per change
//! max = "1gb"                     # largest maxmemory proposed
//! eviction_policy = "allkeys-lru" # the policy proposed instead of noeviction
//! revert_factor = 2               # revert limit = rate seen before the change × this
//! revert_window = "10m"           # how long after a change the revert watches
//! ```
//!
//! Invalid settings make `describe` fail with the reason. The logic is in [`decide`]; its
//! tests run natively: `cd plugins && cargo test -p redis-memory`.

pub mod decide;

use std::sync::OnceLock;

use vigil_plugin_kit::Frame;
use vigil_plugin_kit::policy::{settings_once, step_with_state};
use vigil_plugin_kit::policy_bindings::{
    Batch, CurrentSetting, FiringAlert, Guest, PluginInfo, Proposal,
};

use decide::{INTERESTS, Settings, State, readings, step};

/// The settings, parsed once per instance (new settings start a new instance).
fn settings() -> Result<&'static Settings, String> {
    static SETTINGS: OnceLock<Result<Settings, String>> = OnceLock::new();
    settings_once(&SETTINGS, Settings::parse)
}

struct RedisMemory;

impl Guest for RedisMemory {
    fn describe() -> Result<PluginInfo, String> {
        settings()?;
        Ok(PluginInfo {
            name: "redis-memory".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            interests: INTERESTS.iter().map(|m| (*m).to_owned()).collect(),
        })
    }

    fn propose(
        batch: Batch,
        _firing: Vec<FiringAlert>,
        current: Vec<CurrentSetting>,
    ) -> Result<Vec<Proposal>, String> {
        let s = settings()?;
        let frame = Frame::new(batch)?;
        let mut proposals = Vec::new();
        for (name, reading) in readings(&frame) {
            if !s.watches(&name) {
                continue;
            }
            proposals.extend(step_with_state(
                &format!("instance:{name}"),
                |state: &mut State| {
                    step(
                        state,
                        s,
                        &name,
                        frame.batch.timestamp_ns,
                        &reading,
                        &current,
                    )
                },
            )?);
        }
        Ok(proposals)
    }
}

vigil_plugin_kit::export_policy!(RedisMemory);
