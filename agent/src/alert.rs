//! The alert state machine: findings keyed by (plugin, rule, key) go pending, then
//! firing once reported for their `for` duration, then resolved when no longer reported.
//!
//! Absence is judged per source: a plugin that watches several collectors only resolves
//! the alerts a batch from the same source stopped reporting. A failed evaluation
//! changes nothing.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::model::{Attributes, Finding, Severity};

/// Identity of an alert.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct AlertKey {
    pub plugin: String,
    pub rule: String,
    pub key: String,
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Pending,
    Firing,
}

/// A transition, reported as an alert event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    /// First reported; waiting for its `for` duration.
    Pending,
    /// Held for its `for` duration (or had none).
    Firing,
    /// Was firing, no longer reported.
    Resolved,
    /// Was pending, no longer reported before it fired.
    Cancelled,
}

impl Transition {
    /// Lower-case name, as used in attributes.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Pending => "pending",
            Transition::Firing => "firing",
            Transition::Resolved => "resolved",
            Transition::Cancelled => "cancelled",
        }
    }
}

/// An alert as the book keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub key: AlertKey,
    pub source: String,
    pub state: AlertState,
    pub severity: Severity,
    pub summary: String,
    pub value: Option<f64>,
    #[serde(serialize_with = "crate::model::attributes_as_map")]
    pub labels: Attributes,
    #[serde(serialize_with = "humantime_serde::serialize")]
    pub hold_for: Duration,
    /// When it was first reported.
    #[serde(serialize_with = "crate::model::time_as_rfc3339")]
    pub active_since: SystemTime,
    /// When it started firing.
    #[serde(serialize_with = "crate::model::optional_time_as_rfc3339")]
    pub firing_since: Option<SystemTime>,
}

/// One transition of one alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    pub transition: Transition,
    #[serde(serialize_with = "crate::model::time_as_rfc3339")]
    pub at: SystemTime,
    pub alert: Alert,
    /// Why the host ended the alert when the plugin did not (e.g. `plugin removed`).
    pub reason: Option<String>,
}

/// All current alerts.
#[derive(Debug, Default)]
pub struct AlertBook {
    alerts: BTreeMap<AlertKey, Tracked>,
    /// Calls of [`AlertBook::apply`] so far: an alert not marked with the current one
    /// was not reported by it.
    rounds: u64,
}

/// An alert and the last round that reported it.
#[derive(Debug)]
struct Tracked {
    alert: Alert,
    reported: u64,
}

impl AlertBook {
    /// Applies what `plugin` found in a batch from `source` at `now`; returns the transitions.
    /// An alert already in the book is looked up and updated in place (nothing allocated
    /// for it); the book is walked once to find those no longer reported.
    pub fn apply(
        &mut self,
        plugin: &str,
        source: &str,
        findings: &[Finding],
        now: SystemTime,
    ) -> Vec<AlertEvent> {
        self.rounds += 1;
        let round = self.rounds;
        let mut events = Vec::new();
        // One key, refilled per finding, to look alerts up with.
        let mut key = AlertKey {
            plugin: plugin.to_owned(),
            rule: String::new(),
            key: String::new(),
        };
        for finding in findings {
            key.rule.clone_from(&finding.rule);
            key.key.clone_from(&finding.key);
            let tracked = match self.alerts.get_mut(&key) {
                Some(tracked) => tracked,
                None => {
                    let alert = Alert {
                        key: key.clone(),
                        source: source.to_owned(),
                        state: AlertState::Pending,
                        severity: finding.severity,
                        summary: finding.summary.clone(),
                        value: finding.value,
                        labels: finding.labels.clone(),
                        hold_for: finding.hold_for,
                        active_since: now,
                        firing_since: None,
                    };
                    if !finding.hold_for.is_zero() {
                        events.push(event(Transition::Pending, now, &alert));
                    }
                    self.alerts.entry(key.clone()).or_insert(Tracked {
                        alert,
                        reported: round,
                    })
                }
            };
            tracked.reported = round;
            let alert = &mut tracked.alert;
            alert.severity = finding.severity;
            alert.summary.clone_from(&finding.summary);
            alert.value = finding.value;
            alert.labels.clone_from(&finding.labels);
            alert.hold_for = finding.hold_for;
            let held = now
                .duration_since(alert.active_since)
                .unwrap_or(Duration::ZERO);
            if alert.state == AlertState::Pending && held >= alert.hold_for {
                alert.state = AlertState::Firing;
                alert.firing_since = Some(now);
                events.push(event(Transition::Firing, now, alert));
            }
        }
        self.alerts.retain(|key, tracked| {
            let alert = &tracked.alert;
            let gone = key.plugin == plugin && alert.source == source && tracked.reported != round;
            if gone {
                events.push(event(ended(alert.state), now, alert));
            }
            !gone
        });
        events
    }

    /// Ends every alert of `plugin` because the host stopped running it (removed,
    /// quarantined): firing ones are resolved, pending ones cancelled, each with `reason`.
    /// Nothing is left firing for a plugin that can no longer say it is over.
    pub fn release_plugin(
        &mut self,
        plugin: &str,
        reason: &str,
        now: SystemTime,
    ) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        self.alerts.retain(|key, tracked| {
            if key.plugin != plugin {
                return true;
            }
            let alert = &tracked.alert;
            let mut e = event(ended(alert.state), now, alert);
            e.reason = Some(reason.to_owned());
            events.push(e);
            false
        });
        events
    }

    /// The alerts that are firing now.
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.alerts
            .values()
            .map(|t| &t.alert)
            .filter(|a| a.state == AlertState::Firing)
    }

    /// Number of firing alerts per severity (every severity present, zero included).
    pub fn firing_by_severity(&self) -> [(Severity, usize); 3] {
        let count = |s| self.firing().filter(|a| a.severity == s).count();
        [
            (Severity::Info, count(Severity::Info)),
            (Severity::Warning, count(Severity::Warning)),
            (Severity::Critical, count(Severity::Critical)),
        ]
    }
}

/// How an alert that is no longer reported ends: resolved if it fired, else cancelled.
fn ended(state: AlertState) -> Transition {
    match state {
        AlertState::Firing => Transition::Resolved,
        AlertState::Pending => Transition::Cancelled,
    }
}

fn event(transition: Transition, at: SystemTime, alert: &Alert) -> AlertEvent {
    AlertEvent {
        transition,
        at,
        alert: alert.clone(),
        reason: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: &str, key: &str, hold_secs: u64) -> Finding {
        Finding {
            rule: rule.into(),
            key: key.into(),
            severity: Severity::Warning,
            summary: format!("{rule} {key}"),
            value: Some(1.0),
            labels: vec![],
            hold_for: Duration::from_secs(hold_secs),
        }
    }

    fn transitions(events: &[AlertEvent]) -> Vec<(&str, Transition)> {
        events
            .iter()
            .map(|e| (e.alert.key.key.as_str(), e.transition))
            .collect()
    }

    #[test]
    fn pending_then_firing_then_resolved() {
        let mut book = AlertBook::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let f = [finding("r", "a", 30)];
        assert_eq!(
            transitions(&book.apply("p", "system", &f, t0)),
            [("a", Transition::Pending)]
        );
        let t1 = t0 + Duration::from_secs(10);
        assert!(book.apply("p", "system", &f, t1).is_empty());
        assert_eq!(book.firing().count(), 0);
        let t2 = t0 + Duration::from_secs(30);
        assert_eq!(
            transitions(&book.apply("p", "system", &f, t2)),
            [("a", Transition::Firing)]
        );
        assert_eq!(book.firing().next().unwrap().firing_since, Some(t2));
        assert_eq!(book.firing_by_severity()[1], (Severity::Warning, 1));
        let t3 = t2 + Duration::from_secs(10);
        assert_eq!(
            transitions(&book.apply("p", "system", &[], t3)),
            [("a", Transition::Resolved)]
        );
        assert_eq!(book.firing().count(), 0);
    }

    #[test]
    fn zero_hold_fires_at_once_and_pending_can_be_cancelled() {
        let mut book = AlertBook::default();
        let t0 = SystemTime::UNIX_EPOCH;
        let events = book.apply(
            "p",
            "s",
            &[finding("r", "now", 0), finding("r", "later", 60)],
            t0,
        );
        assert_eq!(
            transitions(&events),
            [("now", Transition::Firing), ("later", Transition::Pending)]
        );
        let events = book.apply(
            "p",
            "s",
            &[finding("r", "now", 0)],
            t0 + Duration::from_secs(1),
        );
        assert_eq!(transitions(&events), [("later", Transition::Cancelled)]);
    }

    #[test]
    fn releasing_a_plugin_ends_its_alerts_with_a_reason() {
        let mut book = AlertBook::default();
        let t0 = SystemTime::UNIX_EPOCH;
        book.apply("p", "s", &[finding("r", "a", 0), finding("r", "b", 60)], t0);
        book.apply("q", "s", &[finding("r", "a", 0)], t0);
        let events = book.release_plugin("p", "plugin removed", t0);
        assert_eq!(
            transitions(&events),
            [("a", Transition::Resolved), ("b", Transition::Cancelled)]
        );
        assert!(
            events
                .iter()
                .all(|e| e.reason.as_deref() == Some("plugin removed"))
        );
        assert_eq!(book.firing().count(), 1);
    }

    #[test]
    fn absence_is_judged_per_plugin_and_source() {
        let mut book = AlertBook::default();
        let t0 = SystemTime::UNIX_EPOCH;
        book.apply("p", "system", &[finding("r", "a", 0)], t0);
        book.apply("q", "system", &[finding("r", "a", 0)], t0);
        // A batch from another source, or another plugin's evaluation, resolves nothing of p/system.
        assert!(book.apply("p", "redis", &[], t0).is_empty());
        let events = book.apply("q", "system", &[], t0);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].alert.key.plugin, "q");
        assert_eq!(book.firing().count(), 1);
    }
}
