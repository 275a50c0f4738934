//! The policy's logic, free of host calls (built and tested natively): settings, what a
//! batch says of each instance, and the step from one batch to the proposals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigil_plugin_kit::bindings::vigil::plugin::types::{CurrentSetting, Direction, SettingTarget};
use vigil_plugin_kit::counter::{Counters, Streak};
use vigil_plugin_kit::policy::{Outcome, current_parsed, proposal, redis_config_set, revert_if};
use vigil_plugin_kit::units::{human_size, parse_revert_window, parse_size};
use vigil_plugin_kit::{Frame, instance};

pub const EVICTED: &str = "redis.keys.evicted";
pub const HITS: &str = "redis.keyspace.hits";
pub const MISSES: &str = "redis.keyspace.misses";
pub const MAXMEMORY_METRIC: &str = "redis.maxmemory";
pub const USED: &str = "redis.memory.used";
/// Every metric the policy reads.
pub const INTERESTS: [&str; 5] = [EVICTED, HITS, MISSES, MAXMEMORY_METRIC, USED];

const MAXMEMORY: &str = "maxmemory";
const POLICY: &str = "maxmemory-policy";
/// Redis' eviction policies (`maxmemory-policy` values).
const POLICIES: [&str; 8] = [
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
];

/// The settings as the config writes them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    instance: Option<String>,
    #[serde(default = "default_evictions")]
    evictions_per_s: f64,
    #[serde(default = "default_ratio")]
    min_hit_ratio: f64,
    #[serde(default = "default_lookups")]
    min_lookups: f64,
    #[serde(default = "default_for_batches")]
    for_batches: u32,
    #[serde(default = "default_step")]
    step: String,
    #[serde(default = "default_max")]
    max: String,
    #[serde(default = "default_policy")]
    eviction_policy: String,
    #[serde(default = "default_factor")]
    revert_factor: f64,
    #[serde(default = "default_window")]
    revert_window: String,
}

fn default_evictions() -> f64 {
    1.0
}
fn default_ratio() -> f64 {
    0.9
}
fn default_lookups() -> f64 {
    100.0
}
fn default_for_batches() -> u32 {
    3
}
fn default_step() -> String {
    "64mb".into()
}
fn default_max() -> String {
    "1gb".into()
}
fn default_policy() -> String {
    "allkeys-lru".into()
}
fn default_factor() -> f64 {
    2.0
}
fn default_window() -> String {
    "10m".into()
}

fn invalid<T>(what: impl std::fmt::Display) -> Result<T, String> {
    Err(format!("invalid redis-memory settings: {what}"))
}

/// The policy's settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Only this instance (all when `None`).
    pub instance: Option<String>,
    pub evictions_per_s: f64,
    pub min_hit_ratio: f64,
    /// Lookups an interval needs for its hit ratio to count.
    pub min_lookups: f64,
    pub for_batches: u32,
    /// Bytes added to `maxmemory` per step.
    pub step: u64,
    /// The largest `maxmemory` proposed, in bytes.
    pub max: u64,
    pub eviction_policy: String,
    /// A revert limit is the rate seen before the change times this.
    pub revert_factor: f64,
    pub revert_window_ms: u64,
}

impl Settings {
    /// Parses and checks the settings JSON (`host::config()`).
    pub fn parse(json: &str) -> Result<Settings, String> {
        let raw: Raw = serde_json::from_str(json).or_else(invalid)?;
        let non_negative = |name: &str, v: f64| {
            if v >= 0.0 && v.is_finite() {
                Ok(v)
            } else {
                invalid(format!("{name} ({v}) must be a number >= 0"))
            }
        };
        non_negative("evictions_per_s", raw.evictions_per_s)?;
        non_negative("min_lookups", raw.min_lookups)?;
        if !(0.0..=1.0).contains(&raw.min_hit_ratio) {
            return invalid(format!(
                "min_hit_ratio ({}) is a share: 0 to 1",
                raw.min_hit_ratio
            ));
        }
        if raw.for_batches == 0 {
            return invalid("for_batches must be at least 1");
        }
        let step = parse_size(&raw.step, 1).or_else(|e| invalid(format!("step: {e}")))?;
        let max = parse_size(&raw.max, 1).or_else(|e| invalid(format!("max: {e}")))?;
        if step == 0 || max == 0 {
            return invalid("step and max must be above 0");
        }
        if !POLICIES.contains(&raw.eviction_policy.as_str()) || raw.eviction_policy == "noeviction"
        {
            return invalid(format!(
                "eviction_policy {:?} is not one of Redis' evicting policies: {}",
                raw.eviction_policy,
                POLICIES[1..].join(", ")
            ));
        }
        if !(raw.revert_factor >= 1.0 && raw.revert_factor.is_finite()) {
            return invalid(format!(
                "revert_factor ({}) must be at least 1",
                raw.revert_factor
            ));
        }
        let revert_window_ms = parse_revert_window(&raw.revert_window).or_else(invalid)?;
        Ok(Settings {
            instance: raw.instance,
            evictions_per_s: raw.evictions_per_s,
            min_hit_ratio: raw.min_hit_ratio,
            min_lookups: raw.min_lookups,
            for_batches: raw.for_batches,
            step,
            max,
            eviction_policy: raw.eviction_policy,
            revert_factor: raw.revert_factor,
            revert_window_ms,
        })
    }

    /// Whether the policy looks after `instance`.
    pub fn watches(&self, instance: &str) -> bool {
        self.instance.as_deref().is_none_or(|only| only == instance)
    }
}

/// What one batch says of one instance (a metric it lacks is `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    pub evicted: Option<f64>,
    pub hits: Option<f64>,
    pub misses: Option<f64>,
    pub maxmemory: Option<f64>,
    pub used: Option<f64>,
}

/// The readings of every instance in a batch, by instance name.
pub fn readings(frame: &Frame) -> BTreeMap<String, Reading> {
    let mut out: BTreeMap<String, Reading> = BTreeMap::new();
    for point in frame.points() {
        let field: fn(&mut Reading) -> &mut Option<f64> = match point.metric {
            EVICTED => |r: &mut Reading| &mut r.evicted,
            HITS => |r: &mut Reading| &mut r.hits,
            MISSES => |r: &mut Reading| &mut r.misses,
            MAXMEMORY_METRIC => |r: &mut Reading| &mut r.maxmemory,
            USED => |r: &mut Reading| &mut r.used,
            _ => continue,
        };
        let name = instance(&frame.batch.source, point.attributes);
        *field(out.entry(name.to_owned()).or_default()) = Some(point.value);
    }
    out
}

/// What the policy remembers of one instance between batches (in the host's state).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// `evicted`, `hits` and `misses`.
    counters: Counters,
    /// Consecutive batches with evictions too fast or a hit ratio too low.
    pressure: Streak,
    /// Consecutive batches with memory full.
    full: Streak,
    /// `maxmemory` and `maxmemory-policy` as last seen: a change restarts the streak it
    /// ends, so a new value has to prove itself for `for_batches` batches.
    seen: (Option<u64>, Option<String>),
}

/// The interval's rates, where they could be computed.
struct Rates {
    evictions_per_s: Option<f64>,
    misses_per_s: Option<f64>,
    /// Hit ratio, when the interval had at least `min_lookups` lookups.
    hit_ratio: Option<f64>,
}

impl State {
    fn rates(&mut self, at_ns: u64, r: &Reading, s: &Settings) -> Rates {
        let mut advance = |key: &str, value: Option<f64>| {
            value.and_then(|v| self.counters.advance(key, at_ns, v))
        };
        let evicted = advance("evicted", r.evicted);
        let hits = advance("hits", r.hits);
        let misses = advance("misses", r.misses);
        let hit_ratio = match (hits, misses) {
            (Some(h), Some(m)) if h.increase + m.increase >= s.min_lookups.max(1.0) => {
                Some(h.increase / (h.increase + m.increase))
            }
            _ => None,
        };
        Rates {
            evictions_per_s: evicted.map(|d| d.per_second()),
            misses_per_s: misses.map(|d| d.per_second()),
            hit_ratio,
        }
    }
}

/// One batch of `instance`, made at `at_ns`.
pub fn step(
    state: &mut State,
    s: &Settings,
    instance: &str,
    at_ns: u64,
    reading: &Reading,
    settings: &[CurrentSetting],
) -> Outcome {
    let mut outcome = Outcome::default();
    let rates = state.rates(at_ns, reading, s);

    // maxmemory: the setting the host read, else the server's own report in the batch.
    let maxmemory = current_parsed(settings, SettingTarget::Redis, instance, MAXMEMORY, |v| {
        parse_size(v, 1)
    })
    .or_else(|unknown| match reading.maxmemory {
        Some(bytes) if bytes >= 0.0 && bytes.is_finite() => Ok(bytes as u64),
        _ => Err(unknown),
    });
    outcome.note_setting(format!("{instance}:{MAXMEMORY}"), &maxmemory);
    let policy = current_parsed(settings, SettingTarget::Redis, instance, POLICY, |v| {
        Ok(v.to_owned())
    });

    let seen_maxmemory = maxmemory.as_ref().ok().copied();
    if seen_maxmemory.is_some() && state.seen.0.is_some() && state.seen.0 != seen_maxmemory {
        state.pressure.reset();
    }
    let seen_policy = policy.as_ref().ok().cloned();
    if seen_policy.is_some() && state.seen.1.is_some() && state.seen.1 != seen_policy {
        state.full.reset();
    }
    state.seen = (
        seen_maxmemory.or(state.seen.0),
        seen_policy.or(state.seen.1.take()),
    );

    let evicting = rates.evictions_per_s.map(|r| r > s.evictions_per_s);
    let missing = rates.hit_ratio.map(|r| r < s.min_hit_ratio);
    let pressure = match (evicting, missing) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (None, None) => None,
        _ => Some(false),
    };
    let pressed = state.pressure.observe(pressure);
    let full = match (reading.used, &maxmemory) {
        (Some(used), Ok(max)) if *max > 0 => Some(used >= *max as f64),
        _ => None,
    };
    let filled = state.full.observe(full);

    if let Ok(current) = maxmemory
        && pressure == Some(true)
        && state.pressure.reached(s.for_batches)
    {
        raise_maxmemory(&mut outcome, s, instance, current, &rates, pressed);
    }
    if full == Some(true) && state.full.reached(s.for_batches) {
        outcome.note_setting(format!("{instance}:{POLICY}"), &policy);
        if let Ok(policy) = policy
            && policy == "noeviction"
        {
            let misses = rates.misses_per_s.unwrap_or(0.0);
            let limit = (misses * s.revert_factor).max(1.0);
            let reason = format!(
                "Redis {instance}: memory full ({} used of maxmemory {}) for {filled} batches under noeviction (writes fail): maxmemory-policy noeviction → {}; reverted if misses pass {limit:.1}/s (were {misses:.1}/s) within {}s",
                human_size(reading.used.unwrap_or(0.0) as u64),
                human_size(seen_maxmemory.unwrap_or(0)),
                s.eviction_policy,
                s.revert_window_ms / 1000
            );
            outcome.proposals.push(proposal(
                redis_config_set(instance, POLICY, s.eviction_policy.clone()),
                reason,
                Some(revert_if(
                    MISSES,
                    &[("vigil.instance", instance)],
                    Direction::Rises,
                    limit,
                    s.revert_window_ms,
                )),
            ));
        }
    }
    outcome
}

/// Proposes `maxmemory` = `current` + step, at most `max` (nothing when `current` is 0: no
/// limit, or already at the cap).
fn raise_maxmemory(
    outcome: &mut Outcome,
    s: &Settings,
    instance: &str,
    current: u64,
    rates: &Rates,
    batches: u32,
) {
    let target = current.saturating_add(s.step).min(s.max);
    if current == 0 || target <= current {
        return;
    }
    let evictions = rates.evictions_per_s.unwrap_or(0.0);
    let limit = (evictions * s.revert_factor).max(s.evictions_per_s);
    let ratio = rates
        .hit_ratio
        .map_or("not judged".to_owned(), |r| format!("{:.1}%", r * 100.0));
    let reason = format!(
        "Redis {instance}: {evictions:.1} evictions/s (limit {}/s), hit ratio {ratio} (min {:.1}%) for {batches} batches: maxmemory {} → {} (step {}, at most {}); reverted if evictions pass {limit:.1}/s within {}s",
        s.evictions_per_s,
        s.min_hit_ratio * 100.0,
        human_size(current),
        human_size(target),
        human_size(s.step),
        human_size(s.max),
        s.revert_window_ms / 1000
    );
    outcome.proposals.push(proposal(
        redis_config_set(instance, MAXMEMORY, target.to_string()),
        reason,
        Some(revert_if(
            EVICTED,
            &[("vigil.instance", instance)],
            Direction::Rises,
            limit,
            s.revert_window_ms,
        )),
    ));
}

#[cfg(test)]
mod tests;
