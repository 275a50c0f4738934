//! End to end: the OpenTelemetry environment variables as the real `vigil` binary reads
//! them. Per-signal endpoints and protocols send metrics and logs to two different
//! receivers, headers and resource attributes arrive there, `vigil check` prints the
//! effective settings with masked header values and their origins, and a bad value
//! stops the agent with an error naming the variable.

use std::time::Duration;

use vigil_testkit::agent::{AgentProcess, Workspace, memory_rule, output_text, vigil};
use vigil_testkit::otlp::OtlpReceiver;
use vigil_testkit::plugins::THRESHOLD;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// Nothing listens there: the file's endpoint, which the variables must override.
const CLOSED: &str = "http://127.0.0.1:9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_signal_variables_send_metrics_and_logs_to_two_receivers() {
    let metrics = OtlpReceiver::grpc().await.unwrap();
    let logs = OtlpReceiver::http().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("threshold", THRESHOLD).unwrap();
    let config = ws
        .write_config(&ws.config_for(
            CLOSED,
            "grpc",
            "500ms",
            &memory_rule("memory-in-use", 0.0, "warning"),
        ))
        .unwrap();
    let logs_url = format!("{}/v1/logs", logs.endpoint);
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", CLOSED),
        (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            metrics.endpoint.as_str(),
        ),
        ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", logs_url.as_str()),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s3cr%2Cet"),
        ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "x-tenant=blue%20team"),
        ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "none"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=e2e,service.name=overridden,team=a%2Cb",
        ),
        ("OTEL_SERVICE_NAME", "vigil-e2e"),
    ];
    let agent = AgentProcess::start_with(VIGIL, &config, &env, &[]).unwrap();

    let (got_metrics, from_metrics) = metrics
        .wait_for(Duration::from_secs(60), |r| {
            r.metric_names().contains("system.cpu.utilization")
        })
        .await;
    assert!(
        got_metrics,
        "no metrics arrived; agent log:\n{}",
        agent.log()
    );
    let (got_logs, from_logs) = logs
        .wait_for(Duration::from_secs(60), |r| {
            r.records().iter().any(|rec| {
                rec.attributes.get("vigil.alert.rule").map(String::as_str) == Some("memory-in-use")
            })
        })
        .await;
    assert!(
        got_logs,
        "no alert event arrived; agent log:\n{}",
        agent.log()
    );

    // Each signal went to its own receiver only.
    assert!(
        from_metrics.logs.is_empty(),
        "logs went to the metrics receiver"
    );
    assert!(
        logs.received().metrics.is_empty(),
        "metrics went to the logs receiver"
    );

    // The general headers reach the metrics receiver; the logs receiver gets its own
    // per-signal headers instead (they replace the general ones), percent-decoded.
    let api_keys = from_metrics.header_values("x-api-key");
    assert!(!api_keys.is_empty());
    assert!(api_keys.iter().all(|v| v == "s3cr,et"), "{api_keys:?}");
    assert!(from_metrics.header_values("x-tenant").is_empty());
    let tenants = from_logs.header_values("x-tenant");
    assert!(!tenants.is_empty());
    assert!(tenants.iter().all(|v| v == "blue team"), "{tenants:?}");
    assert!(from_logs.header_values("x-api-key").is_empty());

    // The resource: OTEL_SERVICE_NAME wins over service.name of OTEL_RESOURCE_ATTRIBUTES,
    // which adds its other attributes to vigil's own.
    for (signal, resource) in [
        ("metrics", from_metrics.resource_attributes()),
        ("logs", from_logs.log_resource_attributes()),
    ] {
        let get = |k: &str| resource.get(k).map(String::as_str);
        assert_eq!(
            get("service.name"),
            Some("vigil-e2e"),
            "{signal}: {resource:?}"
        );
        assert_eq!(get("deployment.environment"), Some("e2e"), "{signal}");
        assert_eq!(get("team"), Some("a,b"), "{signal}");
        assert_eq!(
            get("service.version"),
            Some(env!("CARGO_PKG_VERSION")),
            "{signal}"
        );
        assert!(
            get("host.name").is_some_and(|h| !h.is_empty()),
            "{signal}: {resource:?}"
        );
    }

    let log = agent.log();
    assert!(!log.contains("s3cr"), "a header value was logged:\n{log}");
}

/// `row` as `vigil check` prints one setting.
fn row(name: &str, value: &str, origin: &str) -> String {
    format!("  {name:<19}{value}  ({origin})")
}

#[test]
fn check_prints_the_effective_settings_with_masked_headers_and_origins() {
    let ws = Workspace::new().unwrap();
    let config = ws
        .write_config(&ws.config_for(CLOSED, "grpc", "1s", ""))
        .unwrap();
    let output = vigil(VIGIL)
        .args(["check", "--config"])
        .arg(&config)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "https://m.example:4318/ingest",
        )
        .env("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cret,tenant=blue")
        .env(
            "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE",
            "/etc/ssl/collector-ca.pem",
        )
        .env("OTEL_METRIC_EXPORT_INTERVAL", "2500")
        .env("OTEL_SERVICE_NAME", "edge")
        .output()
        .unwrap();
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(!text.contains("s3cret") && !text.contains("blue"), "{text}");
    let block = |signal: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| *l != format!("ok: export {signal}:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .map(str::to_owned)
            .collect()
    };
    let metrics = block("metrics");
    for expected in [
        row("protocol", "http/protobuf", "OTEL_EXPORTER_OTLP_PROTOCOL"),
        row(
            "endpoint",
            "https://m.example:4318/ingest",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        ),
        row(
            "headers",
            "api-key=****,tenant=****",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        row("timeout", "2s", "config export.otlp.timeout"),
        row("compression", "gzip", "default"),
        row("certificate", "(system roots)", "default"),
        row("client certificate", "(none)", "default"),
        row("client key", "(none)", "default"),
    ] {
        assert!(
            metrics.contains(&expected),
            "{expected:?} missing in {metrics:#?}\n{text}"
        );
    }
    let logs = block("logs");
    for expected in [
        row(
            "endpoint",
            "http://127.0.0.1:9/v1/logs",
            "config export.otlp.endpoint",
        ),
        row(
            "certificate",
            "/etc/ssl/collector-ca.pem",
            "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE",
        ),
    ] {
        assert!(
            logs.contains(&expected),
            "{expected:?} missing in {logs:#?}\n{text}"
        );
    }
    assert!(
        text.contains("ok: export interval 2s 500ms (OTEL_METRIC_EXPORT_INTERVAL)"),
        "{text}"
    );
    assert!(
        text.contains("service.name=edge (OTEL_SERVICE_NAME)") && text.contains("(vigil)"),
        "{text}"
    );
}

#[test]
fn a_bad_variable_stops_the_agent_and_fails_check_naming_it() {
    let ws = Workspace::new().unwrap();
    let config = ws
        .write_config(&ws.config_for(CLOSED, "grpc", "1s", ""))
        .unwrap();
    for (variable, value, hint) in [
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "milliseconds"),
        ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "api-key", "entry 1"),
        (
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            "http/json",
            "http/protobuf",
        ),
    ] {
        for command in ["run", "check"] {
            let mut cmd = vigil(VIGIL);
            cmd.arg(command);
            if command == "run" {
                cmd.arg("--once");
            }
            let output = cmd
                .arg("--config")
                .arg(&config)
                .env(variable, value)
                .output()
                .unwrap();
            let text = output_text(&output);
            assert!(
                !output.status.success(),
                "{command} with {variable}={value}: {text}"
            );
            assert!(
                text.contains(&format!("`{variable}`")) && text.contains(hint),
                "{command} with {variable}={value}: {text}"
            );
        }
    }
}
