//! Cost of one tuning decision in the engine: a repeated proposal (decided once, then
//! only counted), a new dry-run decision (audited: one line written and fsync'd), and a
//! change applied to a collector interval (two audit lines, each fsync'd, around the
//! change). The audit file is on the machine's disk (a temp dir).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use vigil::config::Config;
use vigil::tuning::{
    Action, COLLECTOR_INTERVAL, MemoryIntervals, Proposal, SettingKey, Target, TuningEngine,
};

fn config(dir: &std::path::Path, mode: &str) -> Config {
    let text = format!(
        r#"
[tuning]
audit_file = "{}/actions.jsonl"
max_decisions_per_minute = 1000000000
[tuning.policies.bench]
mode = "{mode}"
[[tuning.allow]]
target = "collector"
instance = "system"
parameter = "interval-ms"
min = "100ms"
max = "1000h"
max_changes = 1000000000
per = "1s"
cooldown = "0s"
"#,
        dir.display()
    );
    Config::parse(&text, "bench").expect("bench config")
}

fn proposal(interval_ms: u64) -> Proposal {
    Proposal {
        policy: "bench".into(),
        action: Action {
            setting: SettingKey {
                target: Target::Collector,
                instance: "system".into(),
                parameter: COLLECTOR_INTERVAL.into(),
            },
            value: interval_ms.to_string(),
            maintenance: None,
        },
        reason: "bench".into(),
        revert_if: None,
        proposed_at: SystemTime::now(),
    }
}

fn engine(dir: &std::path::Path, mode: &str) -> TuningEngine {
    let intervals = Arc::new(MemoryIntervals::new([("system", Duration::from_secs(10))]));
    TuningEngine::new(&config(dir, mode), Some(intervals), None)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("tuning_decide");
    group.sample_size(30);

    let dir = tempfile::tempdir().expect("temp dir");
    let mut dry = engine(dir.path(), "dry-run");
    runtime.block_on(dry.decide(proposal(20_000)));
    group.bench_function("repeat", |b| {
        b.iter(|| runtime.block_on(dry.decide(proposal(20_000))))
    });
    let mut next = 20_000;
    group.bench_function("dry_run_audited", |b| {
        b.iter(|| {
            next += 1;
            runtime.block_on(dry.decide(proposal(next)))
        })
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let mut enforce = engine(dir.path(), "enforce");
    let mut next = 20_000;
    group.bench_function("applied", |b| {
        b.iter(|| {
            next += 1;
            runtime.block_on(enforce.decide(proposal(next)))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
