//! The gate's checks and memory: the allowlist entry and value checks, the rate limit and
//! cool-down per setting, the repeat filter per (policy, action), and the decisions-per-
//! minute budget per policy. Each refusal names its reason; reasons stay the same while
//! the situation does, so a repeated proposal is recognised as a repeat.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use super::action::{Action, SettingKey, Target};
use super::audit::{Row, Status};
use super::decision::{DecisionKind, Verdict};
use super::units;
use crate::config::{AllowEntry, Limit, TuningConfig};

/// Most (policy, action) verdicts remembered for the repeat filter; past it they are forgotten.
const MAX_REMEMBERED: usize = 10_000;

/// The allowlist entry that lets `policy` change `key`, or why there is none.
pub fn allow_entry<'a>(
    tuning: &'a TuningConfig,
    policy: &str,
    key: &SettingKey,
) -> Result<&'a AllowEntry, String> {
    let mut entries = tuning.allow.iter().filter(|e| {
        e.target == key.target && e.instance == key.instance && e.parameter == key.parameter
    });
    let Some(first) = entries.next() else {
        return Err(format!(
            "not on the allowlist: no [[tuning.allow]] entry for {key}"
        ));
    };
    std::iter::once(first)
        .chain(entries)
        .find(|e| e.admits(policy))
        .ok_or_else(|| {
            format!("not on the allowlist for policy {policy:?}: the [[tuning.allow]] entry for {key} lists other policies")
        })
}

fn limit(target: Target, limit: &Option<Limit>, pg_unit: Option<&str>) -> Option<f64> {
    limit
        .as_ref()
        .and_then(|Limit(text)| units::parse(target, text, pg_unit))
}

/// Whether `value` is allowed by `entry`: one of its values, or a number within min..max;
/// and, when `current` is known, no more than `max_step` away from it.
pub fn check_value(
    entry: &AllowEntry,
    value: &str,
    current: Option<&str>,
    pg_unit: Option<&str>,
) -> Result<(), String> {
    let target = entry.target;
    if !entry.values.is_empty() {
        return if entry
            .values
            .iter()
            .any(|allowed| units::same_value(target, allowed, value, pg_unit))
        {
            Ok(())
        } else {
            Err(format!(
                "value {value:?} is not one of the allowed values {:?}",
                entry.values
            ))
        };
    }
    let Some(new) = units::parse(target, value, pg_unit) else {
        return Err(format!("value {value:?} is not a number in {target} units"));
    };
    let (min, max) = (
        limit(target, &entry.min, pg_unit),
        limit(target, &entry.max, pg_unit),
    );
    let text = |l: &Option<Limit>| l.as_ref().map(|l| l.0.clone()).unwrap_or_default();
    if min.is_some_and(|min| new < min) || max.is_some_and(|max| new > max) {
        return Err(format!(
            "value {value:?} is outside the allowed range {}..{}",
            text(&entry.min),
            text(&entry.max)
        ));
    }
    if let (Some(step), Some(current)) = (limit(target, &entry.max_step, pg_unit), current)
        && let Some(now) = units::parse(target, current, pg_unit)
        && (new - now).abs() > step
    {
        return Err(format!(
            "changing it from {current} to {value} is a larger step than max_step = {}",
            text(&entry.max_step)
        ));
    }
    Ok(())
}

/// The gate's memory of what happened.
#[derive(Debug, Default)]
pub struct GateState {
    /// Applied proposals per setting (the rate limit).
    changes: HashMap<SettingKey, VecDeque<SystemTime>>,
    /// The last change (or attempt) per setting (the cool-down).
    last_change: HashMap<SettingKey, SystemTime>,
    /// The last audited verdict per (policy, action).
    verdicts: HashMap<(String, Action), (Verdict, String)>,
    /// Audited decisions per policy in the last minute.
    decisions: HashMap<String, VecDeque<Instant>>,
}

impl GateState {
    /// A state that remembers the changes in the audit trail `rows` (so a restart does
    /// not reset the rate limit or the cool-down).
    pub fn from_rows(rows: &[Row]) -> Self {
        let mut state = GateState::default();
        for row in rows {
            if row.outcome != Status::Applied && row.outcome != Status::Applying {
                continue;
            }
            let entry = &row.entry;
            let (Some(target), Some(instance), Some(parameter)) =
                (entry.target, &entry.instance, &entry.parameter)
            else {
                continue;
            };
            let Ok(time) = humantime::parse_rfc3339_weak(&entry.time) else {
                continue;
            };
            let key = SettingKey {
                target,
                instance: instance.clone(),
                parameter: parameter.clone(),
            };
            state.record_change(&key, time, entry.kind == Some(DecisionKind::Proposal));
        }
        state
    }

    /// Remembers a change of `key` at `time`; `counts` says whether it counts against the
    /// rate limit (applied proposals do; reverts and failed attempts only start a cool-down).
    pub fn record_change(&mut self, key: &SettingKey, time: SystemTime, counts: bool) {
        if counts {
            self.changes.entry(key.clone()).or_default().push_back(time);
        }
        let last = self.last_change.entry(key.clone()).or_insert(time);
        *last = (*last).max(time);
    }

    /// The rate limit of `entry` for `key` at `now`.
    pub fn check_rate(
        &mut self,
        entry: &AllowEntry,
        key: &SettingKey,
        now: SystemTime,
    ) -> Result<(), String> {
        let Some(times) = self.changes.get_mut(key) else {
            return Ok(());
        };
        let start = now.checked_sub(entry.per).unwrap_or(SystemTime::UNIX_EPOCH);
        while times.front().is_some_and(|t| *t <= start) {
            times.pop_front();
        }
        if times.len() < entry.max_changes as usize {
            return Ok(());
        }
        let oldest = times.front().copied().unwrap_or(now);
        Err(format!(
            "rate limit: {} changes of this setting within {} (max_changes = {}); the next is allowed after {}",
            times.len(),
            humantime::format_duration(entry.per),
            entry.max_changes,
            rfc3339_seconds(oldest + entry.per)
        ))
    }

    /// The cool-down of `entry` for `key` at `now`.
    pub fn check_cooldown(
        &self,
        entry: &AllowEntry,
        key: &SettingKey,
        now: SystemTime,
    ) -> Result<(), String> {
        match self.last_change.get(key) {
            Some(last) if *last + entry.cooldown > now => Err(format!(
                "cool-down: this setting was changed at {}; the next change is allowed after {} (cooldown = {})",
                rfc3339_seconds(*last),
                rfc3339_seconds(*last + entry.cooldown),
                humantime::format_duration(entry.cooldown)
            )),
            _ => Ok(()),
        }
    }

    /// Whether `verdict` with `reason` is what `policy` got last time for `action`.
    pub fn is_repeat(&self, policy: &str, action: &Action, verdict: Verdict, reason: &str) -> bool {
        self.verdicts
            .get(&(policy.to_owned(), action.clone()))
            .is_some_and(|(v, r)| *v == verdict && r == reason)
    }

    /// Remembers the verdict `policy` got for `action`.
    pub fn remember(&mut self, policy: &str, action: &Action, verdict: Verdict, reason: &str) {
        if self.verdicts.len() >= MAX_REMEMBERED {
            self.verdicts.clear();
        }
        self.verdicts.insert(
            (policy.to_owned(), action.clone()),
            (verdict, reason.to_owned()),
        );
    }

    /// Counts a decision of `policy` at `now`; `false` when it already made `max` this minute.
    pub fn take_budget(&mut self, policy: &str, max: u32, now: Instant) -> bool {
        let times = self.decisions.entry(policy.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            times.pop_front();
        }
        if times.len() >= max as usize {
            return false;
        }
        times.push_back(now);
        true
    }
}

/// `time` as RFC 3339 to the second (stable text for repeated refusals).
fn rfc3339_seconds(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(allow: &str) -> TuningConfig {
        Config::parse(
            &format!(
                "[[collect.redis]]\nname = \"main\"\nurl = \"redis://127.0.0.1\"\n[[collect.postgres]]\nname = \"pg\"\nurl = \"postgres://127.0.0.1/x\"\n{allow}"
            ),
            "x",
        )
        .unwrap()
        .tuning
    }

    fn key(target: Target, instance: &str, parameter: &str) -> SettingKey {
        SettingKey {
            target,
            instance: instance.into(),
            parameter: parameter.into(),
        }
    }

    #[test]
    fn the_allowlist_names_entry_values_ranges_and_steps() {
        let t = config(
            "[[tuning.allow]]\ntarget = \"redis\"\ninstance = \"main\"\nparameter = \"maxmemory\"\nmin = \"64mb\"\nmax = \"1gb\"\nmax_step = \"128mb\"\npolicies = [\"mem\"]\n[[tuning.allow]]\ntarget = \"redis\"\ninstance = \"main\"\nparameter = \"maxmemory-policy\"\nvalues = [\"allkeys-lru\"]\n[[tuning.allow]]\ntarget = \"postgres\"\ninstance = \"pg\"\nparameter = \"temp_buffers\"\nmin = \"8MB\"\nmax = \"64MB\"\nmax_step = \"8MB\"\n",
        );
        let maxmemory = key(Target::Redis, "main", "maxmemory");
        let err = allow_entry(&t, "other", &maxmemory).unwrap_err();
        assert!(err.contains("lists other policies"), "{err}");
        let err = allow_entry(&t, "mem", &key(Target::Redis, "main", "hz")).unwrap_err();
        assert!(err.starts_with("not on the allowlist"), "{err}");
        let entry = allow_entry(&t, "mem", &maxmemory).unwrap();
        assert!(check_value(entry, "256mb", Some("200mb"), None).is_ok());
        let err = check_value(entry, "2gb", None, None).unwrap_err();
        assert!(err.contains("outside the allowed range 64mb..1gb"), "{err}");
        let err = check_value(entry, "512mb", Some("268435456"), None).unwrap_err();
        assert!(err.contains("larger step than max_step = 128mb"), "{err}");
        assert!(
            check_value(entry, "lots", None, None)
                .unwrap_err()
                .contains("not a number")
        );

        let policy = allow_entry(&t, "x", &key(Target::Redis, "main", "maxmemory-policy")).unwrap();
        assert!(check_value(policy, "allkeys-lru", None, None).is_ok());
        let err = check_value(policy, "noeviction", None, None).unwrap_err();
        assert!(err.contains("not one of the allowed values"), "{err}");

        // PostgreSQL bare numbers are in the parameter's unit (temp_buffers: 8kB pages).
        let pg = allow_entry(&t, "x", &key(Target::Postgres, "pg", "temp_buffers")).unwrap();
        assert!(
            check_value(pg, "2048", Some("8MB"), Some("8kB")).is_ok(),
            "2048 pages = 16MB"
        );
        assert!(
            check_value(pg, "16384", Some("8MB"), Some("8kB")).is_err(),
            "128MB"
        );
        assert!(
            check_value(pg, "24MB", Some("1024"), Some("8kB")).is_err(),
            "step 16MB"
        );
    }

    #[test]
    fn rate_limit_cooldown_repeats_and_budget() {
        let t = config(
            "[[tuning.allow]]\ntarget = \"redis\"\ninstance = \"main\"\nparameter = \"hz\"\nmin = 1\nmax = 100\nmax_changes = 2\nper = \"1h\"\ncooldown = \"5m\"\n",
        );
        let hz = key(Target::Redis, "main", "hz");
        let entry = allow_entry(&t, "p", &hz).unwrap();
        let mut state = GateState::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(state.check_rate(entry, &hz, t0).is_ok());
        state.record_change(&hz, t0, true);
        let err = state
            .check_cooldown(entry, &hz, t0 + Duration::from_secs(60))
            .unwrap_err();
        assert!(err.starts_with("cool-down"), "{err}");
        assert_eq!(
            err,
            state
                .check_cooldown(entry, &hz, t0 + Duration::from_secs(120))
                .unwrap_err(),
            "the reason stays the same during the cool-down"
        );
        assert!(
            state
                .check_cooldown(entry, &hz, t0 + Duration::from_secs(301))
                .is_ok()
        );
        state.record_change(&hz, t0 + Duration::from_secs(600), true);
        let err = state
            .check_rate(entry, &hz, t0 + Duration::from_secs(1200))
            .unwrap_err();
        assert!(err.starts_with("rate limit: 2 changes"), "{err}");
        assert!(
            state
                .check_rate(entry, &hz, t0 + Duration::from_secs(3601))
                .is_ok()
        );

        let action = Action {
            setting: hz.clone(),
            value: "20".into(),
            maintenance: None,
        };
        assert!(!state.is_repeat("p", &action, Verdict::DryRun, "x"));
        state.remember("p", &action, Verdict::DryRun, "x");
        assert!(state.is_repeat("p", &action, Verdict::DryRun, "x"));
        assert!(!state.is_repeat("p", &action, Verdict::Refused, "x"));
        assert!(!state.is_repeat("q", &action, Verdict::DryRun, "x"));

        let now = Instant::now();
        assert!(state.take_budget("p", 2, now));
        assert!(state.take_budget("p", 2, now));
        assert!(!state.take_budget("p", 2, now));
        assert!(state.take_budget("q", 2, now));
        assert!(state.take_budget("p", 2, now + Duration::from_secs(61)));
    }
}
