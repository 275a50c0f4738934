//! Everything the host reads back from a plugin: what `describe` returns (interests),
//! the findings of `evaluate` (validated, then through the alert state machine and
//! out as JSON) and the key/value state it writes. Nothing a plugin returns may
//! panic the host.
#![no_main]

use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vigil::alert::AlertBook;
use vigil::plugin::bindings::vigil::plugin::types as wit;
use vigil::plugin::convert::{Interests, findings_from};
use vigil::plugin::host::PluginKv;

#[derive(Debug, Arbitrary)]
struct RawFinding {
    rule: String,
    key: String,
    severity: u8,
    summary: String,
    value: Option<f64>,
    labels: Vec<(String, String)>,
    for_ms: u64,
}

#[derive(Debug, Arbitrary)]
struct PluginOutput {
    interests: Vec<String>,
    metric_names: Vec<String>,
    findings: Vec<RawFinding>,
    second_findings: Vec<RawFinding>,
    state: Vec<(String, Vec<u8>)>,
    elapsed_ms: u32,
}

fn to_wit(raw: Vec<RawFinding>) -> Vec<wit::Finding> {
    raw.into_iter()
        .map(|f| wit::Finding {
            rule: f.rule,
            key: f.key,
            severity: match f.severity % 3 {
                0 => wit::Severity::Info,
                1 => wit::Severity::Warning,
                _ => wit::Severity::Critical,
            },
            summary: f.summary,
            value: f.value,
            labels: f
                .labels
                .into_iter()
                .map(|(key, value)| wit::Attribute { key, value })
                .collect(),
            for_ms: f.for_ms,
        })
        .collect()
}

fuzz_target!(|output: PluginOutput| {
    let interests = Interests::new(&output.interests);
    for name in &output.metric_names {
        let _ = interests.wants(name);
    }
    let mut kv = PluginKv::default();
    for (key, value) in output.state {
        let _ = kv.set(key, value);
    }
    let mut book = AlertBook::default();
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let later = start + Duration::from_millis(u64::from(output.elapsed_ms));
    for (findings, at) in [(output.findings, start), (output.second_findings, later)] {
        if let Ok(findings) = findings_from(to_wit(findings), 1000) {
            let events = book.apply("fuzz", "system", &findings, at);
            let _ = serde_json::to_string(&events);
        }
    }
    let _ = book.release_plugin("fuzz", "fuzz", later);
    let _ = book.firing_by_severity();
});
