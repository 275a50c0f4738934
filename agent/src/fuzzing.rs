//! Entry points of the fuzz targets in `fuzz/fuzz_targets/`, one per target, taking the raw
//! bytes libFuzzer hands over. The targets call nothing else, and `tests/all/fuzz_replay.rs`
//! feeds every committed corpus input and crash artifact through the same functions under
//! `cargo test`, so a crash found by fuzzing stays a regression test. Not a public API.

use std::time::{Duration, SystemTime};

use arbitrary::{Arbitrary, Unstructured};

use crate::alert::AlertBook;
use crate::config::Config;
use crate::fixture::BatchFixture;
use crate::plugin::bindings::v0_3::vigil::plugin::types as wit;
use crate::plugin::convert::{Interests, findings_from};
use crate::plugin::host::PluginKv;
use crate::plugin::instance::check_info;

/// The entry function of a fuzz target: the bytes libFuzzer hands over.
pub type Entry = fn(&[u8]);

/// Every fuzz target: its name (the file stem under `fuzz/fuzz_targets/` and the directory
/// under `fuzz/corpus/` and `fuzz/artifacts/`) and its entry function.
pub const TARGETS: &[(&str, Entry)] = &[
    ("config_parse", config_parse),
    ("batch_fixture", batch_fixture),
    ("plugin_output", plugin_output),
];

/// Any text as a config: parsed, validated and the OTel variables applied, accepted or
/// refused with an error, never a panic. Bytes that are not UTF-8 are skipped (as
/// libFuzzer's `&str` targets do).
pub fn config_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mut config) = Config::parse(text, "fuzz.toml") {
        let _ = config.apply_otel_env(|_| None);
        let _ = config.plugins.settings_json("threshold");
        let _ = config.export.otlp.effective_endpoint();
    }
}

/// Any text given to `vigil plugin test --batch`: parsed into a batch or refused.
pub fn batch_fixture(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(fixture) = BatchFixture::parse(text, "fuzz.json") {
        let batch = fixture.to_batch();
        let _ = batch.points().count();
    }
}

/// What a plugin returned from `describe`.
#[derive(Debug, Arbitrary)]
struct RawInfo {
    name: String,
    version: String,
    interests: Vec<String>,
}

/// One finding as a plugin returns it from `evaluate`.
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

/// Everything the host reads back from one plugin.
#[derive(Debug, Arbitrary)]
struct PluginOutput {
    describe: RawInfo,
    metric_names: Vec<String>,
    max_findings: u16,
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

/// Everything the host reads back from a plugin: what `describe` returns (checked as at
/// load, then its interests matched against metric names), the findings of two
/// evaluations (validated, then through the alert state machine and out as JSON) and the
/// key/value state it writes. Nothing a plugin returns may panic the host. The bytes are
/// decoded as libFuzzer's typed targets decode them (`arbitrary_take_rest`).
pub fn plugin_output(data: &[u8]) {
    let _ = plugin_output_reach(data);
}

/// How far one `plugin_output` input got: the seed corpus must reach every stage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Reach {
    /// The bytes decoded into a plugin output.
    decoded: bool,
    /// `describe`'s answer passed the load-time checks.
    described: bool,
    /// Evaluations whose findings passed validation.
    accepted: usize,
    /// Alert events those findings produced.
    events: usize,
}

fn plugin_output_reach(data: &[u8]) -> Reach {
    let mut reach = Reach::default();
    let Ok(output) = PluginOutput::arbitrary_take_rest(Unstructured::new(data)) else {
        return reach;
    };
    reach.decoded = true;
    let info = wit::PluginInfo {
        name: output.describe.name,
        version: output.describe.version,
        interests: output.describe.interests,
    };
    let Ok(info) = check_info(info) else {
        // Refused at load: the plugin is never evaluated.
        return reach;
    };
    reach.described = true;
    let interests = Interests::new(&info.interests);
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
    let max_findings = usize::from(output.max_findings);
    for (findings, at) in [(output.findings, start), (output.second_findings, later)] {
        if let Ok(findings) = findings_from(to_wit(findings), max_findings) {
            reach.accepted += 1;
            let events = book.apply(&info.name, "system", &findings, at);
            reach.events += events.len();
            let _ = serde_json::to_string(&events);
        }
    }
    let _ = book.release_plugin(&info.name, "fuzz", later);
    let _ = book.firing_by_severity();
    reach
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn corpus_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/plugin_output")
    }

    /// The committed seeds get past every check into the alert state machine, so the
    /// fuzzer starts from inputs that reach `describe` validation and beyond.
    #[test]
    fn plugin_output_seeds_reach_describe_validation_and_the_alert_book() {
        let mut reaches = Vec::new();
        for file in std::fs::read_dir(corpus_dir()).unwrap() {
            let data = std::fs::read(file.unwrap().path()).unwrap();
            reaches.push(plugin_output_reach(&data));
        }
        assert!(
            reaches.iter().any(|r| r.decoded && !r.described),
            "{reaches:?}"
        );
        assert!(
            reaches.iter().any(|r| r.described && r.accepted < 2),
            "{reaches:?}"
        );
        assert!(reaches.iter().any(|r| r.events > 0), "{reaches:?}");
    }

    /// Writes seeds for `fuzz/corpus/plugin_output/`: deterministic pseudo-random inputs,
    /// one per stage they stop at (refused by `describe` checks, findings rejected,
    /// alert events). Run by hand: `cargo test -p vigil --lib write_plugin_output_seeds -- --ignored`.
    #[test]
    #[ignore = "writes the seed corpus"]
    fn write_plugin_output_seeds() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        type Wants = fn(&Reach) -> bool;
        let wanted: [(&str, Wants); 3] = [
            ("describe-refused", |r| r.decoded && !r.described),
            ("findings-rejected", |r| r.described && r.accepted < 2),
            ("alert-events", |r| r.events > 0),
        ];
        let dir = corpus_dir();
        std::fs::create_dir_all(&dir).unwrap();
        for (name, wants) in wanted {
            let mut found = 0;
            for _ in 0..1_000_000 {
                let len = 16 + (next() % 240) as usize;
                let data: Vec<u8> = (0..len)
                    .map(|i| {
                        // Mostly small bytes (short lengths, few elements), some printable text.
                        let r = next();
                        if i % 3 == 0 {
                            (r % 8) as u8
                        } else {
                            b'a' + (r % 26) as u8
                        }
                    })
                    .collect();
                if wants(&plugin_output_reach(&data)) {
                    std::fs::write(dir.join(format!("{name}-{found}")), &data).unwrap();
                    found += 1;
                    if found == 3 {
                        break;
                    }
                }
            }
            assert_eq!(found, 3, "no seed for {name}");
        }
    }
}
