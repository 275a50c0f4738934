//! Entry points of the fuzz targets in `fuzz/fuzz_targets/`, one per target, taking the raw
//! bytes libFuzzer hands over. The targets call nothing else, and `tests/all/fuzz_replay.rs`
//! feeds every committed corpus input and crash artifact through the same functions under
//! `cargo test`, so a crash found by fuzzing stays a regression test. Not a public API.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use arbitrary::{Arbitrary, Unstructured};

use crate::alert::AlertBook;
use crate::config::Config;
use crate::fixture::BatchFixture;
use crate::plugin::bindings::v0_4::vigil::plugin::types as wit;
use crate::plugin::convert::{Interests, findings_from};
use crate::plugin::host::PluginKv;
use crate::plugin::instance::check_info;
use crate::plugin::proposal::proposals_from;
use crate::tuning::{CurrentSetting, SettingKey, Target, TuningEngine, Verdict, revert};

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
        let _ = config.export.settings.resource_attributes("fuzz");
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

/// A name from a short list the fuzz config allows (so proposals reach the gate's value
/// checks), or any text.
#[derive(Debug, Arbitrary)]
enum Name {
    Known(u8),
    Raw(String),
}

impl Name {
    fn pick(self, known: &[&str]) -> String {
        match self {
            Name::Known(i) => known[usize::from(i) % known.len()].to_owned(),
            Name::Raw(text) => text,
        }
    }
}

/// Instance and collector names: those of [`policy_config`], and one it does not have.
const INSTANCES: &[&str] = &["cache", "main", "db", "system", "nowhere"];
/// Parameters: those [`policy_config`] allows, and two it does not.
const PARAMETERS: &[&str] = &[
    "maxmemory",
    "maxmemory-policy",
    "work_mem",
    "max_connections",
    "shared_buffers",
    "interval-ms",
];
/// Values in each target's syntax, in and out of the allowed ranges.
const VALUES: &[&str] = &[
    "64mb",
    "1gb",
    "100mb",
    "allkeys-lru",
    "noeviction",
    "4MB",
    "16MB",
    "2GB",
    "150",
    "5000",
    "0",
    "-1",
    "1e3",
    "30s",
];
/// Policy names: one that enforces, one an allowlist entry is limited to, any other.
const POLICIES: &[&str] = &["enforcer", "tuner", "other"];

/// What a policy's `propose` returns, one proposal.
#[derive(Debug, Arbitrary)]
struct RawProposal {
    /// 0 Redis, 1 PostgreSQL, 2 MySQL, 3 a collector interval.
    target: u8,
    instance: Name,
    parameter: Name,
    value: Name,
    interval_ms: u64,
    reason: String,
    revert_if: Option<RawRevert>,
}

#[derive(Debug, Arbitrary)]
struct RawRevert {
    metric: String,
    attributes: Vec<(String, String)>,
    rises: bool,
    limit: f64,
    window_ms: u64,
}

/// A tuning policy's answers: which policy, the settings' current values it was shown
/// (and the gate previews against), and its proposals.
#[derive(Debug, Arbitrary)]
struct PolicyOutput {
    policy: Name,
    known: Vec<(u8, Name, Name, Name)>,
    proposals: Vec<RawProposal>,
}

/// The first four targets keep the mapping the corpus seeds were written with; the
/// maintenance target (contract 0.4.0) takes the top of the range.
fn target_of(index: u8) -> Target {
    if index >= 240 {
        return Target::PostgresMaintenance;
    }
    match index % 4 {
        0 => Target::Redis,
        1 => Target::Postgres,
        2 => Target::Mysql,
        _ => Target::Collector,
    }
}

fn proposal_to_wit(raw: RawProposal) -> wit::Proposal {
    let change = |raw: RawProposal| wit::SettingChange {
        instance: raw.instance.pick(INSTANCES),
        parameter: raw.parameter.pick(PARAMETERS),
        value: raw.value.pick(VALUES),
    };
    let reason = raw.reason.clone();
    let revert_if = raw.revert_if.as_ref().map(|r| wit::RevertCondition {
        metric: r.metric.clone(),
        attributes: r
            .attributes
            .iter()
            .map(|(key, value)| wit::Attribute {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        worse: if r.rises {
            wit::Direction::Rises
        } else {
            wit::Direction::Falls
        },
        limit: r.limit,
        window_ms: r.window_ms,
    });
    let action = match target_of(raw.target) {
        Target::Redis => wit::Action::RedisConfigSet(change(raw)),
        Target::Postgres => wit::Action::PostgresSet(change(raw)),
        Target::Mysql => wit::Action::MysqlSetGlobal(change(raw)),
        Target::Collector => wit::Action::CollectorInterval(wit::IntervalChange {
            collector: raw.instance.pick(INSTANCES),
            interval_ms: raw.interval_ms,
        }),
        Target::PostgresMaintenance => wit::Action::PostgresVacuum(wit::TableRef {
            instance: raw.instance.pick(INSTANCES),
            schema: raw.parameter.pick(PARAMETERS),
            table: raw.value.pick(VALUES),
        }),
    };
    wit::Proposal {
        action,
        reason,
        revert_if,
    }
}

/// The config policies' proposals are previewed under: an instance of every kind, an
/// allowlist entry of every kind (ranges, steps, an enumeration, one limited to a
/// policy) and a policy that enforces. No server is ever asked (offline engine).
fn policy_config() -> Option<&'static Config> {
    static CONFIG: OnceLock<Option<Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| Config::parse(POLICY_CONFIG, "fuzz-tuning.toml").ok())
        .as_ref()
}

const POLICY_CONFIG: &str = r#"
[[collect.redis]]
name = "cache"
url = "redis://127.0.0.1:1"
[[collect.postgres]]
name = "main"
url = "postgres://fuzz@127.0.0.1:1/fuzz"
[[collect.mysql]]
name = "db"
url = "mysql://fuzz@127.0.0.1:1/fuzz"

[tuning]
audit_file = "/nonexistent/vigil-fuzz/actions.jsonl"

[tuning.policies.enforcer]
mode = "enforce"

[[tuning.allow]]
target = "redis"
instance = "cache"
parameter = "maxmemory"
min = "16mb"
max = "1gb"
max_step = "128mb"

[[tuning.allow]]
target = "redis"
instance = "cache"
parameter = "maxmemory-policy"
values = ["allkeys-lru", "noeviction"]

[[tuning.allow]]
target = "postgres"
instance = "main"
parameter = "work_mem"
min = "1MB"
max = "1GB"
max_step = "64MB"
policies = ["enforcer", "tuner"]

[[tuning.allow]]
target = "mysql"
instance = "db"
parameter = "max_connections"
min = 10
max = 1000
max_step = 100

[[tuning.allow]]
target = "collector"
instance = "system"
parameter = "interval-ms"
min = "1s"
max = "5m"
"#;

/// Runs `future` to completion on this thread (the offline engine never waits on I/O).
fn block_on<F: std::future::Future>(future: F) -> Option<F::Output> {
    thread_local! {
        static RUNTIME: Option<tokio::runtime::Runtime> =
            tokio::runtime::Builder::new_current_thread().build().ok();
    }
    RUNTIME.with(|rt| rt.as_ref().map(|rt| rt.block_on(future)))
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
/// evaluations (validated, then through the alert state machine and out as JSON), the
/// key/value state it writes, and a tuning policy's proposals (validated as the host
/// does, then previewed by the tuning gate of an offline engine under a fixed config,
/// the decision rendered as its log record and audit line). Nothing a plugin returns may
/// panic the host. The bytes are decoded as libFuzzer's typed targets decode them (the
/// alert part, then the policy part taking the rest).
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
    /// A policy answer passed validation.
    proposals_accepted: bool,
    /// Verdicts of the gate's previews, by `Verdict::as_str`.
    verdicts: [usize; 6],
}

const VERDICTS: [Verdict; 6] = [
    Verdict::Applied,
    Verdict::DryRun,
    Verdict::Refused,
    Verdict::Unchanged,
    Verdict::Failed,
    Verdict::WouldApply,
];

#[cfg(test)]
impl Reach {
    fn verdicts(&self, verdict: Verdict) -> usize {
        VERDICTS
            .iter()
            .position(|v| *v == verdict)
            .map_or(0, |i| self.verdicts[i])
    }
}

fn plugin_output_reach(data: &[u8]) -> Reach {
    let mut reach = Reach::default();
    let mut u = Unstructured::new(data);
    let Ok(output) = PluginOutput::arbitrary(&mut u) else {
        return reach;
    };
    let policy = PolicyOutput::arbitrary_take_rest(u).ok();
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
    if let Some(policy) = policy {
        policy_reach(policy, later, &mut reach);
    }
    reach
}

/// A policy's answer: validated as the host validates it, then each proposal previewed.
fn policy_reach(output: PolicyOutput, at: SystemTime, reach: &mut Reach) {
    let name = output.policy.pick(POLICIES);
    let answer: Vec<wit::Proposal> = output.proposals.into_iter().map(proposal_to_wit).collect();
    let Ok(proposals) = proposals_from(answer, &name, at) else {
        return;
    };
    reach.proposals_accepted = true;
    let Some(config) = policy_config() else {
        return;
    };
    let known: Vec<CurrentSetting> = output
        .known
        .into_iter()
        .map(|(target, instance, parameter, value)| CurrentSetting {
            setting: SettingKey {
                target: target_of(target),
                instance: instance.pick(INSTANCES),
                parameter: parameter.pick(PARAMETERS),
            },
            value: value.pick(VALUES),
        })
        .collect();
    let mut engine = TuningEngine::offline(config);
    for proposal in proposals {
        let Some(decision) = block_on(engine.preview(proposal, &known)) else {
            return;
        };
        if let Some(i) = VERDICTS.iter().position(|v| *v == decision.verdict) {
            reach.verdicts[i] += 1;
        }
        let _ = decision.summary();
        let _ = decision.attributes();
        let entry = revert::entry_of(&decision, revert::status_of(decision.verdict));
        let _ = serde_json::to_string(&entry);
        let _ = serde_json::to_string(&decision);
    }
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

    /// The fixed config proposals are previewed under is valid (else nothing is previewed).
    #[test]
    fn the_policy_config_parses() {
        if let Err(e) = Config::parse(POLICY_CONFIG, "fuzz-tuning.toml") {
            panic!("{e}");
        }
        assert!(policy_config().is_some());
    }

    /// The policy seeds get through validation to the gate's preview, and between them
    /// see it refuse, answer dry-run and would-apply.
    #[test]
    fn policy_seeds_reach_the_gates_preview() {
        let mut reaches = Vec::new();
        for file in std::fs::read_dir(corpus_dir()).unwrap() {
            let path = file.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("policy-")
            {
                reaches.push(plugin_output_reach(&std::fs::read(path).unwrap()));
            }
        }
        assert_eq!(reaches.len(), 3, "{reaches:?}");
        assert!(reaches.iter().all(|r| r.proposals_accepted), "{reaches:?}");
        for verdict in [Verdict::Refused, Verdict::DryRun, Verdict::WouldApply] {
            assert!(
                reaches.iter().any(|r| r.verdicts(verdict) > 0),
                "no seed previewed as {verdict}: {reaches:?}"
            );
        }
    }

    /// Writes the policy seeds of `fuzz/corpus/plugin_output/`: an alert-part seed that
    /// gets past `describe`, followed by deterministic pseudo-random policy answers, one
    /// per verdict of the gate's preview. Run by hand:
    /// `cargo test -p vigil --lib write_policy_seeds -- --ignored`.
    #[test]
    #[ignore = "writes the seed corpus"]
    fn write_policy_seeds() {
        let dir = corpus_dir();
        let prefix = std::fs::read(dir.join("alert-events-0")).unwrap();
        assert!(plugin_output_reach(&prefix).described);
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for verdict in [Verdict::Refused, Verdict::DryRun, Verdict::WouldApply] {
            let mut found = false;
            for _ in 0..2_000_000 {
                let len = 8 + (next() % 120) as usize;
                let mut data = prefix.clone();
                data.extend((0..len).map(|i| {
                    let r = next();
                    if i % 4 == 0 {
                        (r % 6) as u8
                    } else {
                        b'a' + (r % 26) as u8
                    }
                }));
                let reach = plugin_output_reach(&data);
                if reach.described && reach.proposals_accepted && reach.verdicts(verdict) > 0 {
                    std::fs::write(dir.join(format!("policy-{verdict}")), &data).unwrap();
                    found = true;
                    break;
                }
            }
            assert!(found, "no seed for {verdict}");
        }
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
