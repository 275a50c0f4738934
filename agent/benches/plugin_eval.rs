//! Cost of one plugin evaluation per batch: the `threshold` plugin (built from
//! source) on a real system batch and on synthetic batches of growing size, next to
//! the same comparison done natively, so the boundary's cost shows as a ratio.
//!
//! The synthetic batches are steady: the same series every batch, the values changing
//! (two batches alternate), as a collector's rounds are. The series-table fingerprint a
//! batch computes once for all plugins is measured on its own (`table_id`).
//!
//! Printed after the measurements: the plugin's datapoints/s and its ratio to the native
//! rule at each size (targets, issue 16: >= 200 M datapoints/s at 10k, <= 2x native).

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vigil::collect::system::SystemCollector;
use vigil::config::{Config, SystemCollectorConfig};
use vigil::model::{Batch, BatchBuilder, MetricDesc, MetricKind, attrs};
use vigil::plugin::{PluginInstance, PluginLimits, PluginRuntime};
use vigil_testkit::plugins::{MISBEHAVE, THRESHOLD};

use common::{Mean, millions};

const SETTINGS: &str = r#"{"rules":[{"name":"hot","metric":"bench.value","op":">","value":0.999},
  {"name":"high-memory","metric":"system.memory.utilization","op":">","value":0.99,"match":{"system.memory.state":"used"}}]}"#;

/// A batch of `points` series; `round` shifts the values (the series stay the same).
fn synthetic(points: usize, round: usize) -> Batch {
    let metric = MetricDesc::new("bench.value", "1", MetricKind::Gauge, "");
    let mut b = BatchBuilder::new("bench", "h");
    for i in 0..points {
        b.point(
            &metric,
            attrs([("series", &i.to_string())]),
            ((i + round) % 1000) as f64 / 1000.0,
        );
    }
    b.build()
}

/// The same rule evaluated natively: the floor the plugin is compared with.
fn native_threshold(batch: &Batch) -> usize {
    batch
        .points()
        .filter(|(m, _, v)| m.name == "bench.value" && *v > 0.999)
        .count()
}

fn bench(c: &mut Criterion) {
    let config = Config::default_embedded().expect("embedded config");
    let runtime = PluginRuntime::new(PluginLimits::from_config(&config.plugins)).expect("runtime");
    let mut plugin =
        PluginInstance::load(&runtime, THRESHOLD.as_ref(), "threshold", SETTINGS.into())
            .expect("threshold plugin loads");
    // A plugin that looks at no value (it reports one finding per batch): what crossing the
    // boundary alone costs.
    let mut crossing_only = PluginInstance::load(
        &runtime,
        MISBEHAVE.as_ref(),
        "ok",
        r#"{"mode":"ok"}"#.into(),
    )
    .expect("misbehave plugin loads");

    let system =
        SystemCollector::new(SystemCollectorConfig::default(), "bench".into()).expect("collector");
    let system_batch = system.collect_blocking().expect("system batch");
    c.bench_function(
        &format!("plugin_eval/system_batch/{}_points", system_batch.len()),
        |b| b.iter(|| plugin.evaluate(&system_batch).expect("evaluates")),
    );

    let mut group = c.benchmark_group("threshold_per_batch");
    let mut ratios = Vec::new();
    for points in [100, 1_000, 10_000] {
        let (in_plugin, in_native) = (Mean::default(), Mean::default());
        let rounds = [synthetic(points, 0), synthetic(points, 1)];
        for batch in &rounds {
            batch.table_id();
        }
        group.throughput(Throughput::Elements(points as u64));
        group.bench_function(BenchmarkId::new("plugin", points), |b| {
            let mut round = 0;
            b.iter_custom(|iterations| {
                in_plugin.time(iterations, || {
                    round += 1;
                    plugin.evaluate(&rounds[round % 2]).expect("evaluates")
                })
            })
        });
        group.bench_function(BenchmarkId::new("crossing_only", points), |b| {
            let mut round = 0;
            b.iter(|| {
                round += 1;
                crossing_only
                    .evaluate(&rounds[round % 2])
                    .expect("evaluates")
            })
        });
        group.bench_function(BenchmarkId::new("native", points), |b| {
            let mut round = 0;
            b.iter_custom(|iterations| {
                in_native.time(iterations, || {
                    round += 1;
                    native_threshold(&rounds[round % 2])
                })
            })
        });
        group.bench_function(BenchmarkId::new("table_id", points), |b| {
            b.iter_batched_ref(
                || synthetic(points, 0),
                |batch| batch.table_id(),
                criterion::BatchSize::LargeInput,
            )
        });
        ratios.push((points, in_plugin, in_native));
    }
    group.finish();
    println!(
        "\nThreshold rule, plugin vs native (targets: >= 200 M datapoints/s at 10k, <= 2x native):"
    );
    for (points, in_plugin, in_native) in ratios {
        println!(
            "  {points:>6} series: plugin {}datapoints/s, native {}datapoints/s, plugin/native time {:.2}x",
            millions(in_plugin.per_second(points)),
            millions(in_native.per_second(points)),
            in_plugin.seconds() / in_native.seconds()
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
