use super::*;
use vigil_plugin_kit::bindings::vigil::plugin::types::{
    Action, Attribute, Batch, Metric, MetricKind, Proposal, Series, SeriesTable, SettingChange,
};

const S10: u64 = 10_000_000_000;
const MB: u64 = 1 << 20;

fn setting(parameter: &str, value: &str) -> CurrentSetting {
    CurrentSetting {
        target: SettingTarget::Redis,
        instance: "main".into(),
        parameter: parameter.into(),
        value: value.into(),
    }
}

/// The `(parameter, value)` of each proposal (all `CONFIG SET` on `main`).
fn changes(outcome: &Outcome) -> Vec<(String, String)> {
    outcome
        .proposals
        .iter()
        .map(|p| match &p.action {
            Action::RedisConfigSet(SettingChange {
                instance,
                parameter,
                value,
            }) => {
                assert_eq!(instance, "main");
                (parameter.clone(), value.clone())
            }
            other => panic!("unexpected action {other:?}"),
        })
        .collect()
}

/// Counters growing by `evicted`, `hits`, `misses` per 10 s batch, from batch `n`.
fn reading(n: u64, evicted: f64, hits: f64, misses: f64) -> Reading {
    Reading {
        evicted: Some(n as f64 * evicted),
        hits: Some(n as f64 * hits),
        misses: Some(n as f64 * misses),
        maxmemory: Some((256 * MB) as f64),
        used: Some((100 * MB) as f64),
    }
}

/// Runs batches 0..n with the same per-batch growth; returns the last outcome.
fn run(
    state: &mut State,
    s: &Settings,
    batches: std::ops::Range<u64>,
    grow: (f64, f64, f64),
    at: &[CurrentSetting],
) -> Vec<Outcome> {
    batches
        .map(|n| {
            let r = reading(n, grow.0, grow.1, grow.2);
            step(state, s, "main", n * S10, &r, at)
        })
        .collect()
}

fn only(outcomes: &[Outcome]) -> &Proposal {
    let with: Vec<_> = outcomes
        .iter()
        .filter(|o| !o.proposals.is_empty())
        .collect();
    assert!(!with.is_empty(), "no proposal");
    &with[0].proposals[0]
}

#[test]
fn defaults_and_invalid_settings() {
    let s = Settings::parse("{}").unwrap();
    assert_eq!(
        (s.evictions_per_s, s.min_hit_ratio, s.for_batches),
        (1.0, 0.9, 3)
    );
    assert_eq!((s.step, s.max), (64 * MB, 1 << 30));
    assert_eq!(
        (s.eviction_policy.as_str(), s.revert_window_ms),
        ("allkeys-lru", 600_000)
    );
    for (json, says) in [
        (r#"{"step": "a bit"}"#, "step: size"),
        (r#"{"max": "0"}"#, "above 0"),
        (r#"{"min_hit_ratio": 90}"#, "0 to 1"),
        (r#"{"evictions_per_s": -1}"#, ">= 0"),
        (r#"{"for_batches": 0}"#, "at least 1"),
        (r#"{"eviction_policy": "noeviction"}"#, "evicting policies"),
        (r#"{"eviction_policy": "lru"}"#, "evicting policies"),
        (r#"{"revert_factor": 0.5}"#, "at least 1"),
        (r#"{"revert_window": "1w"}"#, "at most a day"),
        (r#"{"stepp": "64mb"}"#, "unknown field"),
    ] {
        let err = Settings::parse(json).unwrap_err();
        assert!(err.contains(says), "{json}: {err}");
        assert!(err.starts_with("invalid redis-memory settings"), "{err}");
    }
}

#[test]
fn evictions_for_three_batches_raise_maxmemory_by_a_step() {
    let s = Settings::parse("{}").unwrap();
    let mut state = State::default();
    let at = [
        setting("maxmemory", "268435456"),
        setting("maxmemory-policy", "allkeys-lru"),
    ];
    // 50 evictions per 10 s batch = 5/s; the hit ratio is fine.
    let o = run(&mut state, &s, 0..4, (50.0, 1000.0, 10.0), &at);
    assert!(
        o[..3].iter().all(|o| o.proposals.is_empty()),
        "first reading, then 2 batches"
    );
    assert_eq!(
        changes(&o[3]),
        [("maxmemory".to_owned(), (320 * MB).to_string())]
    );
    let p = &o[3].proposals[0];
    assert!(p.reason.contains("5.0 evictions/s"), "{}", p.reason);
    assert!(
        p.reason.contains("maxmemory 256 MiB → 320 MiB"),
        "{}",
        p.reason
    );
    let revert = p.revert_if.clone().unwrap();
    assert_eq!(revert.metric, "redis.keys.evicted");
    assert_eq!(revert.worse, Direction::Rises);
    assert_eq!(revert.limit, 10.0, "twice the rate seen before");
    assert_eq!(revert.window_ms, 600_000);
    assert_eq!(
        revert.attributes,
        [Attribute {
            key: "vigil.instance".into(),
            value: "main".into()
        }]
    );
    assert!(o[3].warnings.is_empty());
    // Unchanged setting, still evicting: the same proposal (the host decides it once).
    let again = run(&mut state, &s, 4..5, (50.0, 1000.0, 10.0), &at);
    assert_eq!(changes(&again[0]), changes(&o[3]));
}

#[test]
fn a_low_hit_ratio_raises_maxmemory_and_needs_enough_lookups() {
    let s = Settings::parse("{}").unwrap();
    let at = [setting("maxmemory", "256mb")];
    // 80% hits of 1000 lookups a batch, no evictions.
    let mut state = State::default();
    let o = run(&mut state, &s, 0..4, (0.0, 800.0, 200.0), &at);
    let p = only(&o);
    assert!(
        p.reason.contains("hit ratio 80.0% (min 90.0%)"),
        "{}",
        p.reason
    );
    assert_eq!(
        p.revert_if.as_ref().unwrap().limit,
        1.0,
        "no evictions before: the limit itself"
    );
    // The same ratio over 10 lookups a batch is not judged.
    let mut state = State::default();
    let o = run(&mut state, &s, 0..10, (0.0, 8.0, 2.0), &at);
    assert!(o.iter().all(|o| o.proposals.is_empty()));
}

#[test]
fn capped_at_max_nothing_at_the_cap_or_without_a_limit() {
    let s = Settings::parse(r#"{"max": "300mb", "for_batches": 1}"#).unwrap();
    let mut state = State::default();
    let o = run(
        &mut state,
        &s,
        0..2,
        (50.0, 1.0, 0.0),
        &[setting("maxmemory", "256mb")],
    );
    assert_eq!(
        changes(&o[1]),
        [("maxmemory".to_owned(), (300 * MB).to_string())]
    );
    let o = run(
        &mut state,
        &s,
        2..4,
        (50.0, 1.0, 0.0),
        &[setting("maxmemory", "300mb")],
    );
    assert!(o.iter().all(|o| o.proposals.is_empty()), "at the cap");
    let mut state = State::default();
    let o = run(
        &mut state,
        &s,
        0..4,
        (50.0, 1.0, 0.0),
        &[setting("maxmemory", "0")],
    );
    assert!(
        o.iter().all(|o| o.proposals.is_empty()),
        "0 is no limit: nothing to raise"
    );
}

#[test]
fn maxmemory_from_the_metric_else_a_warning() {
    let s = Settings::parse(r#"{"for_batches": 1}"#).unwrap();
    let mut state = State::default();
    let o = run(&mut state, &s, 0..2, (50.0, 1.0, 0.0), &[]);
    assert_eq!(
        changes(&o[1]),
        [("maxmemory".to_owned(), (320 * MB).to_string())]
    );
    assert!(o[1].warnings.is_empty());
    let mut state = State::default();
    let mut r = reading(1, 50.0, 1.0, 0.0);
    r.maxmemory = None;
    step(&mut state, &s, "main", S10, &r, &[]);
    let mut r = reading(2, 50.0, 1.0, 0.0);
    r.maxmemory = None;
    let o = step(&mut state, &s, "main", 2 * S10, &r, &[]);
    assert!(o.proposals.is_empty());
    assert_eq!(o.warnings.len(), 1);
    assert_eq!(o.warnings[0].0, "main:maxmemory");
    assert!(
        o.warnings[0]
            .1
            .contains("maxmemory of redis main is unknown"),
        "{}",
        o.warnings[0].1
    );
}

#[test]
fn a_new_maxmemory_has_to_prove_itself_for_for_batches() {
    let s = Settings::parse("{}").unwrap();
    let mut state = State::default();
    let o = run(
        &mut state,
        &s,
        0..4,
        (50.0, 1.0, 0.0),
        &[setting("maxmemory", "256mb")],
    );
    assert_eq!(o[3].proposals.len(), 1);
    let at = [setting("maxmemory", "320mb")];
    let o = run(&mut state, &s, 4..7, (50.0, 1.0, 0.0), &at);
    assert!(
        o[..2].iter().all(|o| o.proposals.is_empty()),
        "streak restarted"
    );
    assert_eq!(
        changes(&o[2]),
        [("maxmemory".to_owned(), (384 * MB).to_string())]
    );
}

#[test]
fn a_calm_batch_ends_the_streak() {
    let s = Settings::parse("{}").unwrap();
    let mut state = State::default();
    let at = [setting("maxmemory", "256mb")];
    let mut outcomes = run(&mut state, &s, 0..3, (50.0, 1.0, 0.0), &at);
    // Batch 3: no eviction in the interval (the counter stays).
    outcomes.push(step(
        &mut state,
        &s,
        "main",
        3 * S10,
        &reading(2, 50.0, 1.0, 0.0),
        &at,
    ));
    outcomes.extend(run(&mut state, &s, 4..6, (50.0, 1.0, 0.0), &at));
    assert!(outcomes.iter().all(|o| o.proposals.is_empty()));
}

#[test]
fn full_memory_under_noeviction_switches_the_policy() {
    let s = Settings::parse("{}").unwrap();
    let mut state = State::default();
    let at = [
        setting("maxmemory", "100mb"),
        setting("maxmemory-policy", "noeviction"),
    ];
    // Full (used 100 MiB of 100 MiB), no evictions (noeviction), good hit ratio.
    let o = run(&mut state, &s, 0..3, (0.0, 1000.0, 30.0), &at);
    assert!(o[..2].iter().all(|o| o.proposals.is_empty()));
    assert_eq!(
        changes(&o[2]),
        [("maxmemory-policy".to_owned(), "allkeys-lru".to_owned())]
    );
    let p = &o[2].proposals[0];
    assert!(
        p.reason
            .contains("memory full (100 MiB used of maxmemory 100 MiB)"),
        "{}",
        p.reason
    );
    let revert = p.revert_if.clone().unwrap();
    assert_eq!(revert.metric, "redis.keyspace.misses");
    assert_eq!(revert.limit, 6.0, "3 misses/s before, times 2");
    // Once the policy changed, nothing more.
    let at = [
        setting("maxmemory", "100mb"),
        setting("maxmemory-policy", "allkeys-lru"),
    ];
    let o = run(&mut state, &s, 3..8, (0.0, 1000.0, 30.0), &at);
    assert!(o.iter().all(|o| o.proposals.is_empty()));
}

#[test]
fn the_policy_switch_needs_a_known_policy_and_full_memory() {
    let s = Settings::parse(r#"{"for_batches": 1, "eviction_policy": "allkeys-lfu"}"#).unwrap();
    let mut state = State::default();
    // Full but the policy is unknown: a warning, no proposal.
    let o = run(
        &mut state,
        &s,
        0..2,
        (0.0, 1000.0, 0.0),
        &[setting("maxmemory", "100mb")],
    );
    assert!(o[1].proposals.is_empty());
    assert!(
        o[1].warnings
            .iter()
            .any(|(k, _)| k == "main:maxmemory-policy"),
        "{:?}",
        o[1].warnings
    );
    // Not full: no warning about the policy.
    let mut state = State::default();
    let o = run(
        &mut state,
        &s,
        0..2,
        (0.0, 1000.0, 0.0),
        &[setting("maxmemory", "1gb")],
    );
    assert!(o[1].proposals.is_empty() && o[1].warnings.is_empty());
    // Known noeviction, full: the configured policy.
    let mut state = State::default();
    let at = [
        setting("maxmemory", "100mb"),
        setting("maxmemory-policy", "noeviction"),
    ];
    let o = run(&mut state, &s, 0..1, (0.0, 1000.0, 0.0), &at);
    assert_eq!(
        changes(&o[0]),
        [("maxmemory-policy".to_owned(), "allkeys-lfu".to_owned())]
    );
    assert_eq!(
        o[0].proposals[0].revert_if.as_ref().unwrap().limit,
        1.0,
        "floor of 1 miss/s"
    );
}

#[test]
fn readings_are_grouped_by_instance() {
    let attrs = |instance: &str| {
        vec![Attribute {
            key: "vigil.instance".into(),
            value: instance.into(),
        }]
    };
    let metric = |name: &str| Metric {
        name: name.into(),
        unit: "1".into(),
        kind: MetricKind::Gauge,
    };
    let frame = Frame::new(Batch {
        source: "redis:main".into(),
        host: "h".into(),
        timestamp_ns: 1,
        table_id: 3,
        table: Some(SeriesTable {
            id: 3,
            metrics: vec![metric(EVICTED), metric(USED), metric("redis.uptime")],
            series: vec![
                Series {
                    metric: 0,
                    attributes: attrs("main"),
                },
                Series {
                    metric: 1,
                    attributes: vec![],
                },
                Series {
                    metric: 2,
                    attributes: attrs("main"),
                },
                Series {
                    metric: 0,
                    attributes: attrs("other"),
                },
            ],
        }),
        values: vec![5.0, 7.0, 9.0, 11.0],
        histograms: Vec::new(),
    })
    .unwrap();
    let r = readings(&frame);
    assert_eq!(r.len(), 2);
    assert_eq!(
        r["main"],
        Reading {
            evicted: Some(5.0),
            used: Some(7.0),
            ..Reading::default()
        }
    );
    assert_eq!(r["other"].evicted, Some(11.0));
}
