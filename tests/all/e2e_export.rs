//! End to end: the `vigil` binary exports system metrics and alert events to an
//! in-process OTLP receiver (gRPC and HTTP/protobuf), with the `threshold` plugin
//! built from source taking an alert through pending, firing and resolved.

use std::time::Duration;

use vigil_testkit::agent::{AgentProcess, Workspace, memory_rule, vigil};
use vigil_testkit::host::mem_total_bytes;
use vigil_testkit::otlp::{DataKind, OtlpReceiver, Received, Record};
use vigil_testkit::plugins::THRESHOLD;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn uptime_secs() -> f64 {
    let text = std::fs::read_to_string("/proc/uptime").expect("/proc/uptime is readable");
    text.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("uptime is a number")
}

/// Threshold rules: one that holds while uptime is below `uptime_limit`; one that always holds (memory in use is never negative).
fn threshold_settings(uptime_limit: f64) -> String {
    format!(
        r#"
[[plugins.settings.threshold.rules]]
name = "uptime-window"
metric = "system.uptime"
op = "<"
value = {uptime_limit:?}
for = "1s"
severity = "critical"
"#
    ) + &memory_rule("memory-in-use", 0.0, "warning")
}

fn alert_records<'a>(records: &'a [Record], rule: &str) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| {
            r.event_name == "vigil.alert"
                && r.attributes.get("vigil.alert.rule").map(String::as_str) == Some(rule)
        })
        .collect()
}

fn states(records: &[&Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| r.attributes["vigil.alert.state"].clone())
        .collect()
}

fn assert_system_metrics(received: &Received) {
    let names = received.metric_names();
    for expected in [
        "system.cpu.utilization",
        "system.cpu.logical.count",
        "system.memory.usage",
        "system.memory.utilization",
        "system.memory.limit",
        "system.paging.usage",
        "system.cpu.load_average.1m",
        "system.filesystem.usage",
        "system.filesystem.utilization",
        "system.disk.io",
        "system.network.io",
        "system.network.packets",
        "system.network.errors",
        "system.process.count",
        "system.uptime",
        "vigil.alerts.firing",
        "vigil.plugin.evaluations",
    ] {
        assert!(
            names.contains(expected),
            "metric {expected} missing; got {names:?}"
        );
    }
    assert_eq!(
        received
            .resource_attributes()
            .get("service.name")
            .map(String::as_str),
        Some("vigil")
    );

    // Memory: the states add up to the total, which is what the kernel reports.
    let usage = received.latest_points("system.memory.usage");
    assert_eq!(usage[0].unit, "By");
    assert_eq!(usage[0].kind, DataKind::Sum { monotonic: false });
    let states: std::collections::BTreeSet<_> = usage
        .iter()
        .map(|p| p.attributes["system.memory.state"].clone())
        .collect();
    assert_eq!(states, ["cached", "free", "used"].map(String::from).into());
    let sum: f64 = usage.iter().map(|p| p.value).sum();
    let limit = received.latest_points("system.memory.limit")[0].value;
    let total = mem_total_bytes();
    assert!(
        (limit - total).abs() / total < 0.001,
        "limit {limit} vs MemTotal {total}"
    );
    assert!(
        (sum - limit).abs() / limit < 0.01,
        "usage states sum {sum} vs limit {limit}"
    );

    // CPU: a utilization in [0, 1] in total and one per logical CPU.
    let cpu = received.latest_points("system.cpu.utilization");
    assert_eq!(cpu[0].unit, "1");
    assert_eq!(cpu[0].kind, DataKind::Gauge);
    assert!(
        cpu.iter().all(|p| (0.0..=1.0).contains(&p.value)),
        "{cpu:?}"
    );
    let cores = received.latest_points("system.cpu.logical.count")[0].value as usize;
    let per_core = cpu
        .iter()
        .filter(|p| p.attributes.contains_key("cpu.logical_number"))
        .count();
    assert_eq!(per_core, cores);
    assert_eq!(
        cores,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(cores)
    );

    // Network: loopback is there, counters are monotonic sums in bytes.
    let net = received.latest_points("system.network.io");
    assert_eq!(net[0].kind, DataKind::Sum { monotonic: true });
    assert_eq!(net[0].unit, "By");
    assert!(net.iter().any(|p| {
        p.attributes
            .get("network.interface.name")
            .map(String::as_str)
            == Some("lo")
            && p.attributes.get("network.io.direction").map(String::as_str) == Some("receive")
    }));

    // Filesystems: used + free per mount, utilization in [0, 1].
    let fs = received.latest_points("system.filesystem.usage");
    assert!(
        fs.iter()
            .all(|p| p.attributes.contains_key("system.filesystem.mountpoint") && p.value >= 0.0)
    );
    let fs_util = received.latest_points("system.filesystem.utilization");
    assert!(fs_util.iter().all(|p| (0.0..=1.0).contains(&p.value)));

    let uptime = received.latest_points("system.uptime")[0].value;
    assert!(uptime > 0.0 && uptime <= uptime_secs() + 1.0);
    assert!(received.latest_points("system.process.count")[0].value >= 1.0);
}

/// Runs the agent against `receiver` until the uptime alert has been resolved, then checks everything.
///
/// The uptime rule holds until the test rewrites it: first with a limit uptime will not
/// reach (pending, then firing after `for`), then, once the firing record arrived, with
/// a limit uptime is already past (resolved). Every step waits for what it needs, so
/// neither a cold plugin compile nor a loaded machine can close a window early.
async fn exercise(receiver: OtlpReceiver) {
    let ws = Workspace::new().unwrap();
    ws.add_plugin("threshold", THRESHOLD).unwrap();
    let limit = uptime_secs() + 100_000.0;
    let config_with = |limit: f64| {
        ws.config_for(
            &receiver.endpoint,
            receiver.protocol,
            "500ms",
            &threshold_settings(limit),
        )
    };
    let config = ws.write_config(&config_with(limit)).unwrap();
    let agent = AgentProcess::start(VIGIL, &config).unwrap();

    let (fired, received) = receiver
        .wait_for(Duration::from_secs(60), |r| {
            states(&alert_records(&r.records(), "uptime-window")).contains(&"firing".to_owned())
        })
        .await;
    assert!(
        fired,
        "the uptime alert never fired; records: {:#?}\nagent log:\n{}",
        received.records(),
        agent.log()
    );
    // Uptime is never below 0: the rule stops holding, the reloaded plugin resolves it.
    ws.write_config(&config_with(0.0)).unwrap();

    let (done, received) = receiver
        .wait_for(Duration::from_secs(60), |r| {
            states(&alert_records(&r.records(), "uptime-window")).contains(&"resolved".to_owned())
                && r.metric_names().contains("system.memory.usage")
        })
        .await;
    assert!(
        done,
        "the uptime alert was never resolved; records: {:#?}\nagent log:\n{}",
        received.records(),
        agent.log()
    );

    let records = received.records();
    let uptime = alert_records(&records, "uptime-window");
    assert_eq!(
        states(&uptime),
        ["pending", "firing", "resolved"],
        "{uptime:#?}"
    );
    let firing = uptime[1];
    assert_eq!(firing.attributes["vigil.plugin"], "threshold");
    assert_eq!(firing.attributes["vigil.alert.severity"], "critical");
    assert_eq!(
        firing.severity_number, 17,
        "critical firing alerts are ERROR records"
    );
    assert_eq!(
        firing.attributes["vigil.alert.label.metric"],
        "system.uptime"
    );
    assert!(
        firing.attributes["vigil.alert.value"]
            .parse::<f64>()
            .unwrap()
            < limit
    );
    assert!(
        firing.body.contains("uptime-window firing"),
        "{}",
        firing.body
    );
    assert_eq!(uptime[2].severity_number, 9, "resolved records are INFO");

    let memory = alert_records(&records, "memory-in-use");
    assert_eq!(
        states(&memory),
        ["firing"],
        "for = 0 fires at once and keeps firing"
    );
    assert_eq!(
        memory[0].attributes["vigil.alert.key"],
        "system.memory.state=used"
    );
    assert_eq!(memory[0].severity_number, 13);

    let firing_gauge = received.latest_points("vigil.alerts.firing");
    let warning = firing_gauge
        .iter()
        .find(|p| p.attributes["vigil.alert.severity"] == "warning")
        .unwrap();
    assert_eq!(warning.value, 1.0);

    assert_system_metrics(&received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_of_metrics_and_alert_lifecycle() {
    exercise(OtlpReceiver::grpc().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_of_metrics_and_alert_lifecycle() {
    exercise(OtlpReceiver::http().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_environment_variables_override_the_config() {
    let receiver = OtlpReceiver::http().await.unwrap();
    let ws = Workspace::new().unwrap();
    // The file points at a closed port over gRPC; the standard variables win.
    let config = ws
        .write_config(&ws.config_for("http://127.0.0.1:9", "grpc", "1s", ""))
        .unwrap();
    let output = tokio::task::spawn_blocking(move || {
        vigil(VIGIL)
            .args(["run", "--once", "--config"])
            .arg(&config)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            .output()
            .map(|o| (o, receiver))
    })
    .await
    .unwrap()
    .unwrap();
    let (output, receiver) = output;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let received = receiver.received();
    assert!(
        received.metric_names().contains("system.cpu.utilization"),
        "{:?}",
        received.metric_names()
    );
}

#[test]
fn unreachable_endpoint_is_a_warning_not_a_crash() {
    let ws = Workspace::new().unwrap();
    let config = ws
        .write_config(&ws.config_for("http://127.0.0.1:9", "grpc", "1s", ""))
        .unwrap();
    let output = vigil(VIGIL)
        .args(["run", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("http://127.0.0.1:9"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_agent_warns_once_while_the_collector_is_down() {
    let ws = Workspace::new().unwrap();
    let config = ws
        .write_config(&ws.config_for("http://127.0.0.1:9", "grpc", "300ms", ""))
        .unwrap();
    let mut agent = AgentProcess::start(VIGIL, &config).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(agent.is_running());
    let log = agent.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("export to http://127.0.0.1:9 failed"))
        .count();
    assert_eq!(
        warnings, 1,
        "one warning per outage, not one per export:\n{log}"
    );
}

/// Memory `used` and `free` against `/proc/meminfo`, each on its own: their sum equals
/// the limit by construction, so only a comparison with the kernel's own figures can
/// catch a wrong state. `/proc/meminfo` is read right before and right after a
/// `vigil run --once`; the exported value must lie between (within 1 % of the total).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_used_and_free_match_proc_meminfo() {
    use vigil_testkit::host::meminfo_bytes;
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, "grpc", "10s", ""))
        .unwrap();
    let read = || {
        let total = mem_total_bytes();
        (
            total - meminfo_bytes("MemAvailable"),
            meminfo_bytes("MemFree"),
        )
    };
    let before = read();
    let output = tokio::task::spawn_blocking(move || {
        vigil(VIGIL)
            .args(["run", "--once", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let after = read();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let received = receiver.received();
    let usage = received.latest_points("system.memory.usage");
    let state = |name: &str| {
        usage
            .iter()
            .find(|p| p.attributes["system.memory.state"] == name)
            .unwrap_or_else(|| panic!("state {name} in {usage:?}"))
            .value
    };
    let tolerance = mem_total_bytes() * 0.01;
    for (name, exported, a, b) in [
        (
            "used (MemTotal - MemAvailable)",
            state("used"),
            before.0,
            after.0,
        ),
        ("free (MemFree)", state("free"), before.1, after.1),
    ] {
        let (low, high) = (a.min(b) - tolerance, a.max(b) + tolerance);
        assert!(
            (low..=high).contains(&exported),
            "memory {name}: exported {exported}, /proc/meminfo {a} before and {b} after"
        );
    }
}

/// Collection every second, export every five seconds.
fn one_second_samples_five_second_exports(receiver: &OtlpReceiver) -> String {
    format!(
        r#"
[agent]
shutdown_timeout = "3s"

[collect.system]
interval = "1s"

[plugins]
dir = "plugins"
cache_dir = "cache"

[export.otlp]
protocol = "{}"
endpoint = "{}"
interval = "5s"
timeout = "2s"
"#,
        receiver.protocol, receiver.endpoint
    )
}

/// Requests carrying `system.uptime` (one point per system collection).
fn uptime_requests(r: &Received) -> usize {
    r.points_per_request("system.uptime")
        .iter()
        .filter(|points| !points.is_empty())
        .count()
}

/// Runs the agent with 1 s collection and 5 s export until `REQUESTS` requests carried
/// system metrics, then checks that every collected sample arrived with its own time.
async fn every_sample_arrives_with_its_collection_time(receiver: OtlpReceiver) {
    const REQUESTS: usize = 4;
    let ws = Workspace::new().unwrap();
    let config = ws
        .write_config(&one_second_samples_five_second_exports(&receiver))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &config).unwrap();
    let (done, received) = receiver
        .wait_for(Duration::from_secs(90), |r| uptime_requests(r) >= REQUESTS)
        .await;
    assert!(
        done,
        "{} requests with system metrics arrived; agent log:\n{}",
        uptime_requests(&received),
        agent.log()
    );

    // Every system round's sample, in arrival order, with the request it came in.
    let per_request: Vec<Vec<u64>> = received
        .points_per_request("system.uptime")
        .into_iter()
        .filter(|points| !points.is_empty())
        .map(|points| points.iter().map(|p| p.time_unix_nano).collect())
        .collect();
    let times: Vec<u64> = per_request.iter().flatten().copied().collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "one sample per round, each with its own, later time: {per_request:?}"
    );

    // None dropped: the samples up to the last reported round count are that many rounds
    // (the round counter is published at each export tick; a round collected before the
    // tick may still be in flight then, so one more sample than counted is allowed).
    let rounds: Vec<(u64, f64)> = received
        .points_per_request("vigil.collector.rounds")
        .into_iter()
        .flatten()
        .filter(|p| p.attributes.get("vigil.collector").map(String::as_str) == Some("system"))
        .map(|p| (p.time_unix_nano, p.value))
        .collect();
    let &(counted_at, counted) = rounds
        .iter()
        .max_by_key(|(at, _)| *at)
        .expect("the system collector's rounds are exported");
    // The agent's own counters never seem to go down (two threads once published their
    // totals in the other order, which a receiver takes for a restart).
    let mut in_time_order = rounds.clone();
    in_time_order.sort_by_key(|(at, _)| *at);
    assert!(
        in_time_order.windows(2).all(|w| w[0].1 <= w[1].1),
        "vigil.collector.rounds went down: {in_time_order:?}"
    );
    let samples = times.iter().filter(|t| **t <= counted_at).count() as f64;
    assert!(
        samples == counted || samples == counted + 1.0,
        "every round's sample must arrive: {counted} rounds, {samples} samples {per_request:?}"
    );
    assert!(
        counted >= (REQUESTS * 3) as f64,
        "several samples per request: {counted} rounds in {REQUESTS} requests {per_request:?}"
    );

    // About five per request, one collection interval apart (loose: the machine is busy).
    // The first request may hold a partial interval; the later ones hold whole ones.
    let later = &per_request[1..];
    let average = later.iter().map(Vec::len).sum::<usize>() as f64 / later.len() as f64;
    assert!(
        (3.5..=6.5).contains(&average),
        "about five samples per 5 s export: {per_request:?}"
    );
    assert!(
        later.iter().all(|points| points.len() >= 2),
        "every export carries several samples of a series: {per_request:?}"
    );
    let span = (times[times.len() - 1] - times[0]) as f64 / 1e9;
    let spacing = span / (times.len() - 1) as f64;
    assert!(
        (0.9..=1.5).contains(&spacing),
        "samples are one collection interval apart, not one export interval: {spacing:.2}s {per_request:?}"
    );

    // A cumulative sum keeps one start time, before its first sample.
    let lo_received: Vec<(u64, u64)> = received
        .points_per_request("system.network.io")
        .into_iter()
        .flatten()
        .filter(|p| {
            p.attributes
                .get("network.interface.name")
                .map(String::as_str)
                == Some("lo")
                && p.attributes.get("network.io.direction").map(String::as_str) == Some("receive")
        })
        .map(|p| (p.start_time_unix_nano, p.time_unix_nano))
        .collect();
    assert_eq!(lo_received.len(), times.len(), "{lo_received:?}");
    let start = lo_received[0].0;
    assert!(start > 0 && start <= lo_received[0].1, "{lo_received:?}");
    assert!(
        lo_received.iter().all(|(s, _)| *s == start),
        "{lo_received:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_delivers_every_sample_with_its_collection_time() {
    every_sample_arrives_with_its_collection_time(OtlpReceiver::grpc().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_export_delivers_every_sample_with_its_collection_time() {
    every_sample_arrives_with_its_collection_time(OtlpReceiver::http().await.unwrap()).await;
}

/// Runs the agent against `receiver` with `otlp_keys` added to `[export.otlp]` until
/// metrics and an alert record arrived; returns what arrived.
async fn export_with(receiver: &OtlpReceiver, otlp_keys: &str) -> Received {
    let ws = Workspace::new().unwrap();
    ws.add_plugin("threshold", THRESHOLD).unwrap();
    let text = ws.config_for(
        &receiver.endpoint,
        receiver.protocol,
        "300ms",
        &memory_rule("memory-in-use", 0.0, "warning"),
    );
    let anchor = "timeout = \"2s\"\n";
    assert!(text.contains(anchor), "{text}");
    let config = ws
        .write_config(&text.replacen(anchor, &format!("{anchor}{otlp_keys}\n"), 1))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &config).unwrap();
    let (done, received) = receiver
        .wait_for(Duration::from_secs(60), |r| {
            !r.metrics.is_empty() && !alert_records(&r.records(), "memory-in-use").is_empty()
        })
        .await;
    assert!(done, "no metrics and alert record:\n{}", agent.log());
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_headers_and_compression_reach_the_collector() {
    let keys =
        "compression = \"gzip\"\nheaders = { \"x-api-key\" = \"k-7c1e\", \"x-tenant\" = \"ops\" }";
    for (receiver, encoding_header) in [
        (OtlpReceiver::grpc().await.unwrap(), "grpc-encoding"),
        (OtlpReceiver::http().await.unwrap(), "content-encoding"),
    ] {
        let received = export_with(&receiver, keys).await;
        let requests = received.headers.len();
        assert_eq!(requests, received.metrics.len() + received.logs.len());
        // Every request, metrics and logs alike, carries the headers and is gzip-compressed.
        for (name, value) in [
            ("x-api-key", "k-7c1e"),
            ("x-tenant", "ops"),
            (encoding_header, "gzip"),
        ] {
            assert_eq!(
                received.header_values(name),
                vec![value.to_owned(); requests],
                "{} {name}: {:#?}",
                receiver.protocol,
                received.headers
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_compression_none_sends_uncompressed_requests() {
    for (receiver, encoding_header) in [
        (OtlpReceiver::grpc().await.unwrap(), "grpc-encoding"),
        (OtlpReceiver::http().await.unwrap(), "content-encoding"),
    ] {
        let received = export_with(&receiver, "compression = \"none\"").await;
        assert!(!received.headers.is_empty());
        let encodings = received.header_values(encoding_header);
        assert!(
            encodings.iter().all(|e| e == "identity"),
            "{} sent {encoding_header}: {encodings:?}",
            receiver.protocol
        );
        assert!(received.header_values("x-api-key").is_empty());
    }
}
