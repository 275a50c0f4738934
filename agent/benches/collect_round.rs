//! Cost of one collection round per source: system (sysinfo refresh of CPU, memory,
//! disks, networks and processes) and one round against each of the local PostgreSQL,
//! MariaDB and Redis servers (queries, parsing and building the batch).

use criterion::{Criterion, criterion_group, criterion_main};
use vigil::collect::Collector;
use vigil::collect::system::SystemCollector;
use vigil::config::{Config, SystemCollectorConfig};

const SERVERS: &str = r#"
[[collect.postgres]]
name = "pg"
url = "postgres://postgres@127.0.0.1:5432/test"
[[collect.mysql]]
name = "maria"
url = "mysql://root@127.0.0.1:3306/test"
[[collect.redis]]
name = "redis"
url = "redis://127.0.0.1:6379"
"#;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("collect_round");
    group.sample_size(30);

    let system =
        SystemCollector::new(SystemCollectorConfig::default(), "bench".into()).expect("collector");
    system.collect_blocking().expect("first round");
    group.bench_function("system", |b| {
        b.iter(|| system.collect_blocking().expect("round"))
    });

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let config = Config::parse(SERVERS, "bench").expect("config");
    let mut collectors: Vec<(&str, Box<dyn Collector>)> = vec![
        (
            "postgres",
            Box::new(
                vigil::collect::postgres::collector(&config.collect.postgres[0], "bench".into())
                    .expect("pg"),
            ),
        ),
        (
            "mysql",
            Box::new(
                vigil::collect::mysql::collector(&config.collect.mysql[0], "bench".into())
                    .expect("mysql"),
            ),
        ),
        (
            "redis",
            Box::new(
                vigil::collect::redis::collector(&config.collect.redis[0], "bench".into())
                    .expect("redis"),
            ),
        ),
    ];
    for (name, collector) in &mut collectors {
        // The first round connects; measure steady-state rounds on the open connection.
        let first = runtime.block_on(collector.collect()).expect("round");
        assert!(
            first.failure.is_none() && first.batch.len() > 1,
            "{name} is not reachable: start the local servers (bash .ci/services)"
        );
        group.bench_function(*name, |b| {
            b.iter(|| runtime.block_on(collector.collect()).expect("round"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
