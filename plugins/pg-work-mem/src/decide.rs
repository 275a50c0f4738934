//! The policy's logic, free of host calls (built and tested natively): settings, what
//! one instance's batch says, and the step from one batch to the proposals.

use serde::{Deserialize, Serialize};
use vigil_plugin_kit::bindings::vigil::plugin::types::{
    CurrentSetting, Direction, RevertCondition, SettingTarget,
};
use vigil_plugin_kit::counter::{Counters, Streak};
use vigil_plugin_kit::policy::{Outcome, current_parsed, postgres_set, proposal, revert_if};
use vigil_plugin_kit::units::{parse_revert_window, parse_size, pg_size};

/// The metric watched.
pub const TEMP_FILES: &str = "postgresql.temp_files";
/// The parameter changed.
pub const WORK_MEM: &str = "work_mem";
/// The metric an optional automatic revert watches.
const MEMORY: &str = "system.memory.utilization";

/// The settings as the config writes them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    instance: Option<String>,
    #[serde(default = "default_rate")]
    temp_files_per_min: f64,
    #[serde(default = "default_for_batches")]
    for_batches: u32,
    #[serde(default = "default_max")]
    max: String,
    #[serde(default)]
    revert_memory_utilization: Option<f64>,
    #[serde(default = "default_window")]
    revert_window: String,
}

fn default_rate() -> f64 {
    1.0
}
fn default_for_batches() -> u32 {
    3
}
fn default_max() -> String {
    "256MB".into()
}
fn default_window() -> String {
    "30m".into()
}

fn invalid<T>(what: impl std::fmt::Display) -> Result<T, String> {
    Err(format!("invalid pg-work-mem settings: {what}"))
}

/// The policy's settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Only this instance (all when `None`).
    pub instance: Option<String>,
    pub temp_files_per_min: f64,
    pub for_batches: u32,
    /// The largest `work_mem` proposed, in bytes.
    pub max: u64,
    /// Ask for a revert when host memory in use passes this share after the change.
    pub revert_memory_utilization: Option<f64>,
    pub revert_window_ms: u64,
}

impl Settings {
    /// Parses and checks the settings JSON (`host::config()`).
    pub fn parse(json: &str) -> Result<Settings, String> {
        let raw: Raw = serde_json::from_str(json).or_else(invalid)?;
        if !(raw.temp_files_per_min >= 0.0 && raw.temp_files_per_min.is_finite()) {
            return invalid(format!(
                "temp_files_per_min ({}) must be a number >= 0",
                raw.temp_files_per_min
            ));
        }
        if raw.for_batches == 0 {
            return invalid("for_batches must be at least 1");
        }
        let max = parse_size(&raw.max, 1024).or_else(|e| invalid(format!("max: {e}")))?;
        if max < 64 * 1024 {
            return invalid(format!(
                "max ({}) is below PostgreSQL's smallest work_mem, 64kB",
                raw.max
            ));
        }
        if let Some(share) = raw.revert_memory_utilization
            && !(share > 0.0 && share <= 1.0)
        {
            return invalid(format!(
                "revert_memory_utilization ({share}) is a share of memory: above 0, at most 1"
            ));
        }
        let revert_window_ms = parse_revert_window(&raw.revert_window).or_else(invalid)?;
        Ok(Settings {
            instance: raw.instance,
            temp_files_per_min: raw.temp_files_per_min,
            for_batches: raw.for_batches,
            max,
            revert_memory_utilization: raw.revert_memory_utilization,
            revert_window_ms,
        })
    }

    /// Whether the policy looks after `instance`.
    pub fn watches(&self, instance: &str) -> bool {
        self.instance.as_deref().is_none_or(|only| only == instance)
    }
}

/// What the policy remembers of one instance between batches (in the host's state).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// `postgresql.temp_files` per database.
    temp_files: Counters,
    /// Consecutive batches with temporary files created faster than the limit.
    streak: Streak,
    /// `work_mem` as last seen: a change restarts the streak, so a new value has to
    /// prove itself for `for_batches` batches before the next step.
    seen: Option<u64>,
}

/// One batch of `instance`, made at `at_ns`, with `temp_files` as `(database, total)`.
pub fn step(
    state: &mut State,
    s: &Settings,
    instance: &str,
    at_ns: u64,
    temp_files: &[(&str, f64)],
    settings: &[CurrentSetting],
) -> Outcome {
    let mut outcome = Outcome::default();
    // The rate across databases, and the database creating the most.
    let mut rate: Option<f64> = None;
    let mut top = ("", 0.0);
    for (db, total) in temp_files {
        if let Some(delta) = state.temp_files.advance(db, at_ns, *total) {
            let per_min = delta.per_minute();
            *rate.get_or_insert(0.0) += per_min;
            if per_min > top.1 {
                top = (db, per_min);
            }
        }
    }
    state
        .temp_files
        .retain(|key| temp_files.iter().any(|(db, _)| *db == key));

    let current = current_parsed(settings, SettingTarget::Postgres, instance, WORK_MEM, |v| {
        parse_size(v, 1024)
    });
    outcome.note_setting(format!("{instance}:{WORK_MEM}"), &current);
    if let Ok(bytes) = current
        && state.seen.replace(bytes).is_some_and(|old| old != bytes)
    {
        state.streak.reset();
    }
    let held = state.streak.observe(rate.map(|r| r > s.temp_files_per_min));
    let (Ok(current), Some(rate)) = (current, rate) else {
        return outcome;
    };
    if !state.streak.reached(s.for_batches) {
        return outcome;
    }
    let target = current.saturating_mul(2).min(s.max);
    if target <= current {
        return outcome;
    }
    let reason = format!(
        "PostgreSQL {instance}: {rate:.1} temporary files/min (most in {}: {:.1}/min), above {}/min for {held} batches: work_mem {} → {} (at most {})",
        top.0,
        top.1,
        s.temp_files_per_min,
        pg_size(current),
        pg_size(target),
        pg_size(s.max)
    );
    outcome.proposals.push(proposal(
        postgres_set(instance, WORK_MEM, pg_size(target)),
        reason,
        revert_condition(s),
    ));
    outcome
}

/// The automatic revert asked for, if the settings want one: host memory in use rising
/// above `revert_memory_utilization` within `revert_window` after the change.
fn revert_condition(s: &Settings) -> Option<RevertCondition> {
    s.revert_memory_utilization.map(|limit| {
        revert_if(
            MEMORY,
            &[("system.memory.state", "used")],
            Direction::Rises,
            limit,
            s.revert_window_ms,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_plugin_kit::bindings::vigil::plugin::types::{Action, SettingChange};

    const MIN: u64 = 60_000_000_000;

    fn work_mem(instance: &str, value: &str) -> CurrentSetting {
        CurrentSetting {
            target: SettingTarget::Postgres,
            instance: instance.into(),
            parameter: WORK_MEM.into(),
            value: value.into(),
        }
    }

    fn values(outcome: &Outcome) -> Vec<String> {
        outcome
            .proposals
            .iter()
            .map(|p| match &p.action {
                Action::PostgresSet(SettingChange {
                    instance,
                    parameter,
                    value,
                }) => {
                    assert_eq!((instance.as_str(), parameter.as_str()), ("main", WORK_MEM));
                    value.clone()
                }
                other => panic!("unexpected action {other:?}"),
            })
            .collect()
    }

    /// Feeds `totals` (temp files of db `shop`, one batch a minute from minute 1).
    fn run(state: &mut State, s: &Settings, totals: &[f64], at: &[CurrentSetting]) -> Vec<Outcome> {
        totals
            .iter()
            .enumerate()
            .map(|(i, t)| step(state, s, "main", (i as u64 + 1) * MIN, &[("shop", *t)], at))
            .collect()
    }

    #[test]
    fn defaults_and_invalid_settings() {
        let s = Settings::parse("{}").unwrap();
        assert_eq!(
            (s.temp_files_per_min, s.for_batches, s.max),
            (1.0, 3, 256 << 20)
        );
        assert_eq!((s.instance, s.revert_memory_utilization), (None, None));
        for (json, says) in [
            (r#"{"max": "lots"}"#, "max: size"),
            (r#"{"max": "8kB"}"#, "smallest work_mem"),
            (r#"{"for_batches": 0}"#, "at least 1"),
            (r#"{"temp_files_per_min": -1}"#, ">= 0"),
            (r#"{"revert_memory_utilization": 1.5}"#, "at most 1"),
            (r#"{"revert_window": "2d"}"#, "at most a day"),
            (r#"{"tempfiles_per_min": 1}"#, "unknown field"),
        ] {
            let err = Settings::parse(json).unwrap_err();
            assert!(err.contains(says), "{json}: {err}");
            assert!(err.starts_with("invalid pg-work-mem settings"), "{err}");
        }
    }

    #[test]
    fn doubles_work_mem_after_for_batches_of_spilling() {
        let s = Settings::parse("{}").unwrap();
        let mut state = State::default();
        let at = [work_mem("main", "4MB")];
        // First reading, then 5/min, 5/min, 5/min.
        let o = run(&mut state, &s, &[10.0, 15.0, 20.0, 25.0], &at);
        assert!(o[..3].iter().all(|o| o.proposals.is_empty()));
        assert_eq!(values(&o[3]), ["8MB"]);
        let p = &o[3].proposals[0];
        assert!(
            p.reason
                .contains("5.0 temporary files/min (most in shop: 5.0/min)"),
            "{}",
            p.reason
        );
        assert!(
            p.reason.contains("work_mem 4MB → 8MB (at most 256MB)"),
            "{}",
            p.reason
        );
        assert_eq!(p.revert_if, None, "no revert unless asked for");
        // Still spilling, work_mem unchanged: the same proposal again.
        let o = step(&mut state, &s, "main", 5 * MIN, &[("shop", 30.0)], &at);
        assert_eq!(values(&o), ["8MB"]);
    }

    #[test]
    fn a_quiet_batch_or_a_new_value_restarts_the_streak() {
        let s = Settings::parse("{}").unwrap();
        let mut state = State::default();
        let at = [work_mem("main", "4MB")];
        let o = run(&mut state, &s, &[0.0, 5.0, 10.0, 10.0, 15.0, 20.0], &at);
        assert!(
            o.iter().all(|o| o.proposals.is_empty()),
            "quiet minute in between"
        );
        assert_eq!(
            values(&step(
                &mut state,
                &s,
                "main",
                7 * MIN,
                &[("shop", 25.0)],
                &at
            )),
            ["8MB"]
        );
        // Applied: 8MB must see three more spilling batches.
        let at = [work_mem("main", "8MB")];
        for minute in 8..10 {
            let o = step(
                &mut state,
                &s,
                "main",
                minute * MIN,
                &[("shop", minute as f64 * 10.0)],
                &at,
            );
            assert!(o.proposals.is_empty());
        }
        assert_eq!(
            values(&step(
                &mut state,
                &s,
                "main",
                10 * MIN,
                &[("shop", 100.0)],
                &at
            )),
            ["16MB"]
        );
    }

    #[test]
    fn capped_at_max_and_nothing_at_the_cap() {
        let s = Settings::parse(r#"{"max": "10MB", "for_batches": 1}"#).unwrap();
        let mut state = State::default();
        let o = run(&mut state, &s, &[0.0, 9.0], &[work_mem("main", "6MB")]);
        assert_eq!(values(&o[1]), ["10MB"]);
        let o = step(
            &mut state,
            &s,
            "main",
            3 * MIN,
            &[("shop", 20.0)],
            &[work_mem("main", "10MB")],
        );
        assert!(o.proposals.is_empty());
    }

    #[test]
    fn rates_add_up_across_databases_and_bare_values_are_kb() {
        let s = Settings::parse(r#"{"temp_files_per_min": 3, "for_batches": 1}"#).unwrap();
        let mut state = State::default();
        let at = [work_mem("main", "4096")];
        step(&mut state, &s, "main", MIN, &[("a", 0.0), ("b", 0.0)], &at);
        // 2/min each: 4/min in all, above 3.
        let o = step(
            &mut state,
            &s,
            "main",
            2 * MIN,
            &[("a", 2.0), ("b", 2.0)],
            &at,
        );
        assert_eq!(values(&o), ["8MB"]);
    }

    #[test]
    fn unknown_work_mem_is_warned_about_and_never_proposed() {
        let s = Settings::parse(r#"{"for_batches": 1}"#).unwrap();
        let mut state = State::default();
        let o = run(&mut state, &s, &[0.0, 100.0], &[work_mem("other", "4MB")]);
        assert!(o[1].proposals.is_empty());
        assert_eq!(o[1].warnings[0].0, "main:work_mem");
        assert!(
            o[1].warnings[0]
                .1
                .contains("work_mem of postgres main is unknown")
        );
        let o = step(
            &mut state,
            &s,
            "main",
            3 * MIN,
            &[("shop", 200.0)],
            &[work_mem("main", "4 apples")],
        );
        assert!(o.proposals.is_empty());
        assert!(o.warnings[0].1.contains("unreadable"), "{:?}", o.warnings);
    }

    #[test]
    fn optional_revert_on_host_memory() {
        let s = Settings::parse(
            r#"{"for_batches": 1, "revert_memory_utilization": 0.95, "revert_window": "15m"}"#,
        )
        .unwrap();
        let mut state = State::default();
        let o = run(&mut state, &s, &[0.0, 100.0], &[work_mem("main", "4MB")]);
        let revert = o[1].proposals[0].revert_if.clone().unwrap();
        assert_eq!(revert.metric, "system.memory.utilization");
        assert_eq!(revert.worse, Direction::Rises);
        assert_eq!((revert.limit, revert.window_ms), (0.95, 900_000));
        assert_eq!(revert.attributes[0].value, "used");
    }

    #[test]
    fn watches_only_the_named_instance() {
        let s = Settings::parse(r#"{"instance": "main"}"#).unwrap();
        assert!(s.watches("main") && !s.watches("replica"));
        assert!(Settings::parse("{}").unwrap().watches("any"));
    }
}
