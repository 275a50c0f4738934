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
