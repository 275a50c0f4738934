//! The agent's own collector intervals (parameter `interval-ms`, value in milliseconds),
//! read and changed through the running agent's [`CollectorIntervals`].

use std::time::Duration;

use super::action::{COLLECTOR_INTERVAL, SettingKey, Target};
use super::decision::Restore;
use super::target::{CollectorIntervals, Reading, TargetError};
use super::units;

/// Shortest interval a collector may be given.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

fn check(key: &SettingKey) -> Result<(), TargetError> {
    if key.parameter == COLLECTOR_INTERVAL {
        Ok(())
    } else {
        Err(TargetError::Refused(format!(
            "collectors have one setting, {COLLECTOR_INTERVAL:?}, not {:?}",
            key.parameter
        )))
    }
}

fn current(intervals: &dyn CollectorIntervals, key: &SettingKey) -> Result<String, TargetError> {
    intervals
        .current(&key.instance)
        .map(|d| d.as_millis().to_string())
        .ok_or_else(|| TargetError::Refused(format!("no collector named {:?} runs", key.instance)))
}

/// The collector's interval in milliseconds.
pub fn read(intervals: &dyn CollectorIntervals, key: &SettingKey) -> Result<Reading, TargetError> {
    check(key)?;
    let value = current(intervals, key)?;
    Ok(Reading {
        restore: Restore::Set(value.clone()),
        value,
        pg_unit: None,
        refusal: None,
    })
}

/// Sets the collector's interval to `value` (milliseconds, or a duration like `30s`).
pub fn set(
    intervals: &dyn CollectorIntervals,
    key: &SettingKey,
    value: &str,
) -> Result<String, TargetError> {
    check(key)?;
    let millis = units::parse(Target::Collector, value, None)
        .filter(|ms| *ms >= 0.0)
        .ok_or_else(|| TargetError::Refused(format!("{value:?} is not an interval")))?;
    let interval = Duration::from_millis(millis.round() as u64);
    if interval < MIN_INTERVAL {
        return Err(TargetError::Refused(format!(
            "{value} ms is below the shortest collector interval, {} ms",
            MIN_INTERVAL.as_millis()
        )));
    }
    intervals
        .set(&key.instance, interval)
        .map_err(TargetError::Failed)?;
    current(intervals, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuning::target::MemoryIntervals;

    #[test]
    fn intervals_are_read_and_set_in_milliseconds() {
        let intervals = MemoryIntervals::new([("system", Duration::from_secs(10))]);
        let key = SettingKey {
            target: Target::Collector,
            instance: "system".into(),
            parameter: COLLECTOR_INTERVAL.into(),
        };
        assert_eq!(read(&intervals, &key).unwrap().value, "10000");
        assert_eq!(set(&intervals, &key, "30000").unwrap(), "30000");
        assert_eq!(set(&intervals, &key, "1m").unwrap(), "60000");
        assert_eq!(intervals.current("system"), Some(Duration::from_secs(60)));
        assert!(matches!(
            set(&intervals, &key, "5"),
            Err(TargetError::Refused(_))
        ));
        let other = SettingKey {
            instance: "nope".into(),
            ..key.clone()
        };
        assert!(read(&intervals, &other).is_err());
        let wrong = SettingKey {
            parameter: "hz".into(),
            ..key
        };
        assert!(read(&intervals, &wrong).is_err());
    }
}
