//! Cost of the alert state machine (`AlertBook::apply`) with 100k active series, one
//! plugin, one source: a round that updates all of them without a transition (the
//! steady state: every alert still firing), and the full cycle of three rounds in which
//! every alert goes pending, then firing, then resolved (100k events per round).
//!
//! Printed after the measurements: the cost per series per round.

mod common;

use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil::alert::AlertBook;
use vigil::model::{Finding, Severity, attrs};

use common::{Mean, millions};

/// Active series (alerts) per round.
const SERIES: usize = 100_000;
/// The findings' `for`: the second round of a cycle comes this much later.
const HOLD: Duration = Duration::from_secs(30);

/// What a rule reports for each of `SERIES` series, with one label each.
fn findings(value: f64) -> Vec<Finding> {
    (0..SERIES)
        .map(|i| {
            let key = format!("db{}/table{}", i / 100, i % 100);
            Finding {
                rule: "bloat".to_owned(),
                summary: format!("{key} is bloated"),
                labels: attrs([("table", &key)]),
                key,
                severity: Severity::Warning,
                value: Some(value),
                hold_for: HOLD,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("alert_state");
    group.sample_size(10);
    group.throughput(Throughput::Elements(SERIES as u64));
    let (first, second) = (findings(1.0), findings(2.0));
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);

    let steady = Mean::default();
    let mut book = AlertBook::default();
    book.apply("rule", "postgres", &first, t0);
    book.apply("rule", "postgres", &first, t0 + HOLD);
    assert_eq!(book.firing().count(), SERIES, "every alert fires");
    group.bench_function("steady_firing", |b| {
        let mut round = 0u64;
        b.iter_custom(|iterations| {
            steady.time(iterations, || {
                round += 1;
                let now = t0 + HOLD + Duration::from_secs(round);
                let findings = if round.is_multiple_of(2) {
                    &first
                } else {
                    &second
                };
                let events = book.apply("rule", "postgres", findings, now);
                debug_assert!(events.is_empty());
                events
            })
        })
    });

    let cycle = Mean::default();
    group.throughput(Throughput::Elements(3 * SERIES as u64));
    group.bench_function("pending_firing_resolved", |b| {
        b.iter_custom(|iterations| {
            cycle.time(iterations, || {
                let mut book = AlertBook::default();
                let pending = book.apply("rule", "postgres", &first, t0);
                let firing = book.apply("rule", "postgres", &second, t0 + HOLD);
                let resolved = book.apply("rule", "postgres", &[], t0 + HOLD * 2);
                debug_assert_eq!(resolved.len(), SERIES);
                (pending.len(), firing.len(), resolved.len(), book)
            })
        })
    });
    group.finish();

    println!("\nAlert state machine, {SERIES} active series (one plugin, one source):");
    let per_series = |mean: &Mean, rounds: f64| mean.seconds() / rounds / SERIES as f64 * 1e9;
    println!(
        "  steady round (all firing, no transition): {:.0} ns per series, {} series/s",
        per_series(&steady, 1.0),
        millions(steady.per_second(SERIES))
    );
    println!(
        "  pending -> firing -> resolved (an event per series per round): {:.0} ns per series per round, {} series/s",
        per_series(&cycle, 3.0),
        millions(cycle.per_second(3 * SERIES))
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
