//! Cost of one system collection round (sysinfo refresh of CPU, memory, disks,
//! networks, processes, plus building the batch), next to a bare memory refresh as the floor.

use criterion::{Criterion, criterion_group, criterion_main};
use vigil::collect::system::SystemCollector;
use vigil::config::SystemCollectorConfig;

fn bench(c: &mut Criterion) {
    let collector =
        SystemCollector::new(SystemCollectorConfig::default(), "bench".into()).expect("collector");
    collector.collect_blocking().expect("first round");
    let mut group = c.benchmark_group("collect_round");
    group.sample_size(30);
    group.bench_function("system", |b| {
        b.iter(|| collector.collect_blocking().expect("round"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
