//! Alert events as Alertmanager v2 `postableAlert`s (`POST /api/v2/alerts`).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::alert::{AlertEvent, Transition};
use crate::config::AlertmanagerConfig;

/// Labels that identify a vigil alert. A finding label that sanitizes to one of these
/// names is sent as `label_NAME` so it can never change the alert's identity.
const IDENTITY_LABELS: [&str; 5] = [
    "alertname",
    "severity",
    "instance",
    "vigil_plugin",
    "vigil_key",
];

/// One alert as Alertmanager's v2 API takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    /// Set once resolved; while firing Alertmanager keeps the alert for its `resolve_timeout`
    /// after the last post.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// What every alert of this agent shares: host, `generatorURL` and extra labels.
#[derive(Debug, Clone)]
pub struct AlertTemplate {
    pub host: String,
    pub generator_url: String,
    pub extra_labels: BTreeMap<String, String>,
}

impl AlertTemplate {
    /// The template `config` describes for `host`.
    pub fn new(config: &AlertmanagerConfig, host: &str, generator_url: String) -> Self {
        AlertTemplate {
            host: host.to_owned(),
            generator_url,
            extra_labels: config.extra_labels.clone(),
        }
    }

    /// The alert to post for `event`: firing alerts without `endsAt`, resolved ones with it;
    /// pending and cancelled alerts never reach Alertmanager (`None`).
    pub fn alert(&self, event: &AlertEvent) -> Option<PostableAlert> {
        let ends_at = match event.transition {
            Transition::Firing => None,
            Transition::Resolved => Some(rfc3339(event.at)),
            Transition::Pending | Transition::Cancelled => return None,
        };
        let alert = &event.alert;
        let mut labels = BTreeMap::new();
        for (name, value) in &alert.labels {
            if value.is_empty() {
                continue;
            }
            let mut name = sanitize_label_name(name);
            if IDENTITY_LABELS.contains(&name.as_str()) {
                name = format!("label_{name}");
            }
            labels.insert(name, value.clone());
        }
        for (name, value) in &self.extra_labels {
            labels.entry(name.clone()).or_insert_with(|| value.clone());
        }
        for (name, value) in [
            ("alertname", alert.key.rule.as_str()),
            ("severity", alert.severity.as_str()),
            ("instance", self.host.as_str()),
            ("vigil_plugin", alert.key.plugin.as_str()),
            ("vigil_key", alert.key.key.as_str()),
        ] {
            if !value.is_empty() {
                labels.insert(name.to_owned(), value.to_owned());
            }
        }
        let mut annotations = BTreeMap::from([
            ("summary".to_owned(), alert.summary.clone()),
            ("source".to_owned(), alert.source.clone()),
        ]);
        if let Some(value) = alert.value {
            annotations.insert("value".to_owned(), value.to_string());
        }
        if let Some(reason) = &event.reason {
            annotations.insert("reason".to_owned(), reason.clone());
        }
        Some(PostableAlert {
            labels,
            annotations,
            starts_at: rfc3339(alert.firing_since.unwrap_or(alert.active_since)),
            ends_at,
            generator_url: self.generator_url.clone(),
        })
    }
}

/// `name` as an Alertmanager label name (`[a-zA-Z_][a-zA-Z0-9_]*`): every other
/// character becomes `_`, and a leading digit gets a `_` in front.
pub fn sanitize_label_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::alert::{Alert, AlertKey, AlertState};
    use crate::model::Severity;

    fn event(transition: Transition) -> AlertEvent {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        AlertEvent {
            transition,
            at: t0 + Duration::from_millis(90_500),
            alert: Alert {
                key: AlertKey {
                    plugin: "threshold".into(),
                    rule: "high-memory".into(),
                    key: "system.memory.state=used".into(),
                },
                source: "system".into(),
                state: AlertState::Firing,
                severity: Severity::Critical,
                summary: "memory at 95%".into(),
                value: Some(0.95),
                labels: vec![
                    ("system.memory.state".into(), "used".into()),
                    ("9lives".into(), "x".into()),
                    ("severity".into(), "plugin-says".into()),
                    ("team".into(), "plugin-team".into()),
                    ("empty".into(), String::new()),
                ],
                hold_for: Duration::ZERO,
                active_since: t0,
                firing_since: Some(t0 + Duration::from_secs(30)),
            },
            reason: None,
        }
    }

    fn template() -> AlertTemplate {
        AlertTemplate {
            host: "web-1".into(),
            generator_url: "http://web-1:9464/".into(),
            extra_labels: BTreeMap::from([
                ("team".to_owned(), "ops".to_owned()),
                ("env".to_owned(), "prod".to_owned()),
            ]),
        }
    }

    #[test]
    fn firing_alert_has_identity_finding_and_extra_labels() {
        let alert = template().alert(&event(Transition::Firing)).unwrap();
        let labels: Vec<(&str, &str)> = alert
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("_9lives", "x"),
                ("alertname", "high-memory"),
                ("env", "prod"),
                ("instance", "web-1"),
                ("label_severity", "plugin-says"),
                ("severity", "critical"),
                ("system_memory_state", "used"),
                ("team", "plugin-team"),
                ("vigil_key", "system.memory.state=used"),
                ("vigil_plugin", "threshold"),
            ]
        );
        assert_eq!(alert.annotations["summary"], "memory at 95%");
        assert_eq!(alert.annotations["value"], "0.95");
        assert_eq!(alert.annotations["source"], "system");
        assert_eq!(alert.starts_at, "2023-11-14T22:13:50.000Z");
        assert_eq!(alert.ends_at, None);
        let json = serde_json::to_value(&alert).unwrap();
        assert_eq!(json["generatorURL"], "http://web-1:9464/");
        assert_eq!(json["startsAt"], "2023-11-14T22:13:50.000Z");
        assert!(json.get("endsAt").is_none(), "{json}");
    }

    #[test]
    fn resolved_alert_ends_when_it_was_resolved() {
        let mut resolved = event(Transition::Resolved);
        resolved.reason = Some("plugin removed".into());
        let alert = template().alert(&resolved).unwrap();
        assert_eq!(alert.ends_at.as_deref(), Some("2023-11-14T22:14:50.500Z"));
        assert_eq!(alert.annotations["reason"], "plugin removed");
        let json = serde_json::to_value(&alert).unwrap();
        assert_eq!(json["endsAt"], "2023-11-14T22:14:50.500Z");
        let firing = template().alert(&event(Transition::Firing)).unwrap();
        assert_eq!(
            alert.labels, firing.labels,
            "same labels: Alertmanager resolves the same alert"
        );
    }

    #[test]
    fn pending_and_cancelled_are_not_sent() {
        assert!(template().alert(&event(Transition::Pending)).is_none());
        assert!(template().alert(&event(Transition::Cancelled)).is_none());
    }

    #[test]
    fn label_names_are_sanitized() {
        assert_eq!(sanitize_label_name("db.namespace"), "db_namespace");
        assert_eq!(sanitize_label_name("a-b c"), "a_b_c");
        assert_eq!(sanitize_label_name("0x"), "_0x");
        assert_eq!(sanitize_label_name(""), "_");
        assert_eq!(sanitize_label_name("ünï"), "_n_");
        assert_eq!(sanitize_label_name("_ok_1"), "_ok_1");
        for name in ["db.namespace", "0x", "", "ünï"] {
            assert!(AlertmanagerConfig::is_label_name(&sanitize_label_name(
                name
            )));
        }
    }
}
