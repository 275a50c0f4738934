//! Hot reload under load: a new version of a plugin is written 100 times while batches
//! flow through the agent; reports p50/p99 latency from the file write to the first
//! evaluation by the new version, and evaluations lost (batches the plugin did not
//! evaluate). Then the restart cost of 20 plugins with a cold vs a warm compile cache:
//! cold means nothing compiled anywhere (each plugin gets a fresh engine, so Cranelift's
//! in-memory incremental cache cannot share the functions the 20 copies have in common,
//! and the disk cache is empty); warm loads the same 20 from the disk cache.
//!
//! Run: `cargo bench -p vigil --bench reload_latency`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vigil::config::Config;
use vigil::model::{BatchBuilder, MetricDesc, MetricKind};
use vigil::plugin::cache::content_hash;
use vigil::plugin::{Compiler, PluginRegistry, PluginRuntime};
use vigil::supervisor::Supervisor;
use vigil_testkit::plugins::{MISBEHAVE, THRESHOLD};

const VERSIONS: usize = 100;

/// The component at `path` with a custom section naming version `tag`.
fn version(path: &str, tag: usize) -> Vec<u8> {
    let mut bytes = std::fs::read(path).expect("plugin built");
    let name = b"vigil-bench";
    let payload = tag.to_string().into_bytes();
    bytes.extend_from_slice(&[
        0x00,
        (1 + name.len() + payload.len()) as u8,
        name.len() as u8,
    ]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(&payload);
    bytes
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn reload_under_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins dir");
    let file = plugins.join("counter.wasm");
    std::fs::write(&file, version(MISBEHAVE, 0)).expect("write plugin");
    let config_path = dir.path().join("agent.toml");
    std::fs::write(
        &config_path,
        "[collect.system]\nenabled = false\n[export.otlp]\nenabled = false\n[plugins]\ndir = \"plugins\"\ncache_dir = \"cache\"\n[plugins.settings.counter]\nmode = \"count\"\n",
    )
    .expect("write config");
    let config = Config::load(&config_path).expect("config");
    let (agent, _) = Supervisor::start(&config, Some(&config_path), Compiler::InProcess)
        .await
        .expect("agent starts");
    agent.load_plugins().await;

    // Batches flow continuously in the background.
    let metric = MetricDesc::new("bench.value", "1", MetricKind::Gauge, "");
    let mut builder = BatchBuilder::new("bench", "h");
    builder.point(&metric, vec![], 1.0);
    let batch = builder.build();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flow = {
        let (agent, stop, sent) = (agent.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                agent.pipeline().process(batch.clone()).await;
                // `process` hands the batch to the plugins and returns; wait for them so
                // the flow is paced by the plugin, as before plugins ran side by side.
                agent.pipeline().plugins_idle().await;
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let _watch = vigil::watch::watch(&plugins, Some(&config_path), tx).expect("watch");
    let applier = {
        let agent = agent.clone();
        tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                agent.apply(change).await;
            }
        })
    };

    let evaluations_before = agent.pipeline().evaluations("counter");
    let sent_before = sent.load(Ordering::Relaxed);
    let mut latencies = Vec::with_capacity(VERSIONS);
    for v in 1..=VERSIONS {
        let bytes = version(MISBEHAVE, v);
        let hash = content_hash(&bytes);
        let written = Instant::now();
        std::fs::write(&file, &bytes).expect("write new version");
        loop {
            let evaluated_by_new = agent
                .pipeline()
                .plugin_statuses()
                .iter()
                .any(|s| s.name == "counter" && s.content_hash == hash);
            if evaluated_by_new {
                // The swap happens between evaluations; wait for the next evaluation to land.
                let n = agent.pipeline().evaluations("counter");
                while agent.pipeline().evaluations("counter") == n {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                latencies.push(written.elapsed());
                break;
            }
            if written.elapsed() > Duration::from_secs(10) {
                panic!("version {v} never loaded");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    flow.await.expect("flow task");
    applier.abort();
    let batches = sent.load(Ordering::Relaxed) - sent_before;
    let evaluated = agent.pipeline().evaluations("counter") - evaluations_before;
    latencies.sort();
    println!(
        "reload_latency: {VERSIONS} versions while {batches} batches flowed: write->first evaluation by new version p50 {:?}, p99 {:?}, max {:?}; lost evaluations {} (batches {batches}, evaluated {evaluated})",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
        batches.saturating_sub(evaluated),
    );
}

/// Loads every config's plugins, each with a runtime (engine) of its own; returns the time taken.
fn load_each(configs: &[vigil::config::PluginsConfig]) -> Duration {
    let started = Instant::now();
    for config in configs {
        let runtime = PluginRuntime::from_config(config).expect("runtime");
        let registry = PluginRegistry::load_dir(Arc::new(runtime), config);
        assert_eq!(registry.len(), 1);
    }
    started.elapsed()
}

fn restart_cold_vs_warm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = Config::default_embedded().expect("config");
    let rules = toml::from_str::<toml::Table>(
        "rules = [{ name = \"r\", metric = \"system.uptime\", op = \">\", value = 0.0 }]",
    )
    .expect("rules");
    let configs: Vec<vigil::config::PluginsConfig> = (0..20)
        .map(|i| {
            let plugins = dir.path().join(format!("plugins-{i}"));
            std::fs::create_dir(&plugins).expect("plugins dir");
            std::fs::write(plugins.join(format!("p{i}.wasm")), version(THRESHOLD, i))
                .expect("write");
            let mut config = base.plugins.clone();
            config.dir = plugins;
            config.cache_dir = dir.path().join("cache");
            config.settings.insert(format!("p{i}"), rules.clone());
            config
        })
        .collect();
    let cold = load_each(&configs);
    let warm = load_each(&configs);
    println!(
        "restart_20_plugins: cold (no disk cache, no shared in-memory cache) {cold:?}, warm cache {warm:?} (cold/warm = {:.1}x)",
        cold.as_secs_f64() / warm.as_secs_f64()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    runtime.block_on(reload_under_load());
    restart_cold_vs_warm();
}
