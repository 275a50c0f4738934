//! End to end: applications instrumented with the official OpenTelemetry Python SDK send
//! their request-duration histograms to vigil's OTLP receiver (`[receive.otlp]`) over gRPC
//! and over HTTP; vigil forwards them to the testkit's OTLP receiver with the sender's
//! resource, bucket counts and timestamps unchanged, and the latency plugin built from
//! source fires when the SDK's p95 crosses its target and resolves when it falls. Bad
//! requests (malformed, oversized, wrong token) get the status the OTLP specification
//! names on both transports, are counted, and disturb nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::Value;
use vigil_testkit::agent::{AgentProcess, Workspace, free_local_addr};
use vigil_testkit::otel_sdk::{Protocol, Sender};
use vigil_testkit::otlp::{OtlpReceiver, Received, Record};
use vigil_testkit::plugins::LATENCY;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
const DURATION: &str = "http.server.request.duration";

/// An agent receiving on free ports and exporting to `export` every 500 ms.
fn start_agent(
    workspace: &Workspace,
    export: &OtlpReceiver,
    receive_extra: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<(AgentProcess, SocketAddr, SocketAddr)> {
    let (grpc, http) = (free_local_addr()?, free_local_addr()?);
    let config = workspace.config_for(
        &export.endpoint,
        export.protocol,
        "500ms",
        &format!(
            "[receive.otlp]\nenabled = true\ngrpc_listen = \"{grpc}\"\nhttp_listen = \"{http}\"\n{receive_extra}\n"
        ),
    );
    let agent = AgentProcess::start_with(VIGIL, &workspace.write_config(&config)?, env, &[])?;
    Ok((agent, grpc, http))
}

/// Waits until the agent logs that it receives (its listeners are bound).
async fn wait_listening(agent: &AgentProcess) {
    wait_logged(
        agent,
        "receiving application metrics",
        "the receiver did not start",
    )
    .await;
}

/// Waits (10 s at most) until the agent's log holds `line`; else fails with `failure`.
async fn wait_logged(agent: &AgentProcess, line: &str, failure: &str) {
    for _ in 0..200 {
        if agent.log().contains(line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{failure}:\n{}", agent.log());
}

/// A JSON value as the text the testkit shows attribute values as.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn json_attributes(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default()
}

fn proto_text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn proto_attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), proto_text(&kv.value)))
        .collect()
}

/// The histogram points the SDK exported: resource attributes and each point.
fn sdk_points(exported: &Value) -> Vec<(BTreeMap<String, String>, Value)> {
    let mut points = Vec::new();
    for rm in exported["resource_metrics"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let resource = json_attributes(&rm["resource"]["attributes"]);
        for sm in rm["scope_metrics"].as_array().into_iter().flatten() {
            for m in sm["metrics"].as_array().into_iter().flatten() {
                if m["name"] == DURATION {
                    for p in m["data"]["data_points"].as_array().into_iter().flatten() {
                        points.push((resource.clone(), p.clone()));
                    }
                }
            }
        }
    }
    points
}

/// The forwarded histogram points: resource attributes, scope name and each point.
fn forwarded_points(
    received: &Received,
) -> Vec<(BTreeMap<String, String>, String, HistogramDataPoint)> {
    let mut points = Vec::new();
    for request in &received.metrics {
        for rm in &request.resource_metrics {
            let resource = rm
                .resource
                .as_ref()
                .map(|r| proto_attributes(&r.attributes))
                .unwrap_or_default();
            for sm in &rm.scope_metrics {
                let scope = sm
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                for m in sm.metrics.iter().filter(|m| m.name == DURATION) {
                    if let Some(metric::Data::Histogram(h)) = &m.data {
                        assert_eq!(h.aggregation_temporality, 2, "forwarded as cumulative");
                        for p in &h.data_points {
                            points.push((resource.clone(), scope.clone(), p.clone()));
                        }
                    }
                }
            }
        }
    }
    points
}

/// Whether `forwarded` holds the SDK's `point` of `resource` unchanged.
fn arrived_unchanged(
    forwarded: &[(BTreeMap<String, String>, String, HistogramDataPoint)],
    resource: &BTreeMap<String, String>,
    point: &Value,
) -> bool {
    let counts: Vec<u64> = point["bucket_counts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    let bounds: Vec<f64> = point["explicit_bounds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    forwarded.iter().any(|(r, scope, p)| {
        r == resource
            && scope == "shop.http"
            && proto_attributes(&p.attributes) == json_attributes(&point["attributes"])
            && Some(p.time_unix_nano) == point["time_unix_nano"].as_u64()
            && Some(p.start_time_unix_nano) == point["start_time_unix_nano"].as_u64()
            && Some(p.count) == point["count"].as_u64()
            && p.sum == point["sum"].as_f64()
            && p.bucket_counts == counts
            && p.explicit_bounds == bounds
            && p.min == point["min"].as_f64()
            && p.max == point["max"].as_f64()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_histograms_arrive_forwarded_with_their_resource_buckets_and_times() {
    let export = OtlpReceiver::grpc().await.expect("OTLP receiver");
    let workspace = Workspace::new().expect("workspace");
    let (agent, grpc, http) = start_agent(&workspace, &export, "", &[]).expect("agent starts");
    wait_listening(&agent).await;
    let mut exported = Vec::new();
    for (protocol, addr, service) in [
        (Protocol::Grpc, grpc, "shop-grpc"),
        (Protocol::Http, http, "shop-http"),
    ] {
        let mut sender = Sender::start(protocol, addr, service, None).expect("SDK sender");
        // Two exports: the second's counts are cumulative over both.
        for durations in [[0.004, 0.02, 0.3, 0.3], [0.07, 1.5, 0.002, 0.6]] {
            sender.record("/checkout", &durations).expect("record");
            sender.record("/cart", &durations[..2]).expect("record");
            let (data, ok) = sender.flush().expect("flush");
            assert!(
                ok,
                "vigil took the {protocol:?} export; agent log:\n{}",
                agent.log()
            );
            exported.push(data);
        }
    }
    let expected: Vec<_> = exported.iter().flat_map(sdk_points).collect();
    assert_eq!(expected.len(), 8, "2 services x 2 exports x 2 routes");
    let (arrived, received) = export
        .wait_for(Duration::from_secs(20), |received| {
            let forwarded = forwarded_points(received);
            expected
                .iter()
                .all(|(resource, point)| arrived_unchanged(&forwarded, resource, point))
        })
        .await;
    let forwarded = forwarded_points(&received);
    assert!(
        arrived,
        "every SDK histogram point arrives unchanged.\nSDK exported: {expected:#?}\nforwarded: {forwarded:#?}\nagent log:\n{}",
        agent.log()
    );
    // The resources are the sender's own (service, SDK identity), not vigil's.
    let services: std::collections::BTreeSet<_> = forwarded
        .iter()
        .map(|(r, _, _)| r.get("service.name").cloned().unwrap_or_default())
        .collect();
    assert_eq!(
        services,
        ["shop-grpc".to_owned(), "shop-http".to_owned()].into()
    );
    assert!(forwarded.iter().all(|(r, _, _)| {
        r.get("telemetry.sdk.language").map(String::as_str) == Some("python")
            && r.get("deployment.environment.name").map(String::as_str) == Some("test")
            && !r.contains_key("host.name")
    }));
}

/// The latency plugin's alert records of `rule` in `state` whose key names `route`.
fn alerts(received: &Received, rule: &str, state: &str, route: &str) -> Vec<Record> {
    received
        .records()
        .into_iter()
        .filter(|r| {
            r.attributes.get("vigil.alert.rule").map(String::as_str) == Some(rule)
                && r.attributes.get("vigil.alert.state").map(String::as_str) == Some(state)
                && r.attributes
                    .get("vigil.alert.key")
                    .is_some_and(|k| k.contains(&format!("http.route=\"{route}\"")))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latency_plugin_fires_when_the_sdks_p95_crosses_its_target_and_resolves_when_it_falls()
{
    let export = OtlpReceiver::grpc().await.expect("OTLP receiver");
    let workspace = Workspace::new().expect("workspace");
    workspace.add_plugin("latency", LATENCY).expect("plugin");
    let settings = "[plugins.settings.latency]\nmin_requests = 20\n\
        percentiles = [{ percentile = 95, max = \"200ms\", for = \"0s\" }]\n";
    let (agent, grpc, http) =
        start_agent(&workspace, &export, settings, &[]).expect("agent starts");
    wait_listening(&agent).await;
    // The receiver listens before the plugin is compiled and loaded: a window sent
    // before then would never reach the plugin.
    wait_logged(
        &agent,
        "plugin directory loaded",
        "the latency plugin did not load",
    )
    .await;
    for (protocol, addr, service) in [
        (Protocol::Grpc, grpc, "shop-grpc"),
        (Protocol::Http, http, "shop-http"),
    ] {
        let route = format!("/{service}");
        let mut sender = Sender::start(protocol, addr, service, None).expect("SDK sender");
        let mut recorded = 0;
        // 40 requests an export: the first export is the base the next are compared with;
        // then a fast window (p95 about 25 ms), a slow one (every request 450 ms), and a
        // fast one again.
        for (phase, seconds) in [
            ("base", 0.02),
            ("fast", 0.02),
            ("slow", 0.45),
            ("fast again", 0.02),
        ] {
            sender.record(&route, &[seconds; 40]).expect("record");
            let (_, ok) = sender.flush().expect("flush");
            assert!(
                ok,
                "vigil took the {protocol:?} export; log:\n{}",
                agent.log()
            );
            recorded += 40;
            // The batch went through the plugins once its histogram is forwarded.
            let (through, received) = export
                .wait_for(Duration::from_secs(20), |r| {
                    r.newest_histogram(DURATION, &[("http.route", &route)])
                        .is_some_and(|p| p.count == recorded)
                })
                .await;
            assert!(
                through,
                "the {phase} export was forwarded; log:\n{}",
                agent.log()
            );
            match phase {
                "slow" => {
                    let (fired, received) = export
                        .wait_for(Duration::from_secs(20), |r| {
                            !alerts(r, "latency-p95", "firing", &route).is_empty()
                        })
                        .await;
                    assert!(
                        fired,
                        "p95 above 200 ms fires ({protocol:?}); log:\n{}",
                        agent.log()
                    );
                    let firing = alerts(&received, "latency-p95", "firing", &route);
                    assert_eq!(firing.len(), 1, "{firing:?}");
                    let p95: f64 = firing[0].attributes["vigil.alert.value"]
                        .parse()
                        .expect("a number");
                    assert!(
                        p95 > 0.25 && p95 <= 0.5,
                        "the p95 of 450 ms requests lies in their bucket (0.25, 0.5]: {p95}"
                    );
                    assert_eq!(
                        firing[0].attributes["vigil.alert.source"],
                        format!("otlp:{service}")
                    );
                }
                "fast again" => {
                    let (resolved, received) = export
                        .wait_for(Duration::from_secs(20), |r| {
                            !alerts(r, "latency-p95", "resolved", &route).is_empty()
                        })
                        .await;
                    assert!(
                        resolved,
                        "p95 back under 200 ms resolves ({protocol:?}): {:?}\nlog:\n{}",
                        received.records(),
                        agent.log()
                    );
                    assert_eq!(alerts(&received, "latency-p95", "firing", &route).len(), 1);
                }
                _ => assert!(
                    alerts(&received, "latency-p95", "firing", &route).is_empty(),
                    "a {phase} window does not fire: {:?}",
                    received.records()
                ),
            }
        }
    }
}

/// A request of `points` gauge points (about 40 bytes each).
fn gauge_request(points: usize) -> ExportMetricsServiceRequest {
    let data_points = (0..points)
        .map(|i| NumberDataPoint {
            attributes: vec![KeyValue {
                key: "i".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(i as i64)),
                }),
                ..Default::default()
            }],
            time_unix_nano: 1_700_000_000_000_000_000,
            value: Some(number_data_point::Value::AsDouble(1.0)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("bad-input".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "app.queue.depth".into(),
                    data: Some(metric::Data::Gauge(Gauge { data_points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A message whose field 1 (`resource_metrics`) holds bytes that are no `ResourceMetrics`.
#[derive(Clone, PartialEq, prost::Message)]
struct Garbage {
    #[prost(bytes = "vec", tag = "1")]
    resource_metrics: Vec<u8>,
}

fn garbage() -> Garbage {
    Garbage {
        resource_metrics: vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
    }
}

fn bearer(token: &str) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    format!("Bearer {token}").parse().expect("ascii")
}

async fn grpc_export(
    addr: SocketAddr,
    token: &str,
    request: ExportMetricsServiceRequest,
) -> Result<ExportMetricsServiceResponse, tonic::Status> {
    let mut client = MetricsServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("authorization", bearer(token));
    client
        .export(request)
        .await
        .map(tonic::Response::into_inner)
}

async fn grpc_garbage(addr: SocketAddr, token: &str) -> tonic::Status {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(garbage());
    request
        .metadata_mut()
        .insert("authorization", bearer(token));
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    );
    let codec = tonic_prost::ProstCodec::<Garbage, ExportMetricsServiceResponse>::default();
    grpc.unary(request, path, codec)
        .await
        .expect_err("garbage is refused")
}

async fn http_post(addr: SocketAddr, token: &str, body: Vec<u8>) -> (u16, String) {
    // reqwest is built without a default crypto provider (plain http needs none, but it asks).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .header("authorization", format!("Bearer {token}"))
        .body(body)
        .send()
        .await
        .expect("vigil answers");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_on_both_transports_are_counted_and_disturb_nothing() {
    let export = OtlpReceiver::grpc().await.expect("OTLP receiver");
    let workspace = Workspace::new().expect("workspace");
    let (agent, grpc, http) = start_agent(
        &workspace,
        &export,
        "token_env = \"VIGIL_TEST_RECEIVE_TOKEN\"\nmax_request_bytes = 65536",
        &[("VIGIL_TEST_RECEIVE_TOKEN", "s3cret")],
    )
    .expect("agent starts");
    wait_listening(&agent).await;
    let oversized = gauge_request(4000);
    assert!(oversized.encoded_len() > 65536);

    // gRPC
    let status = grpc_export(grpc, "wrong", gauge_request(1))
        .await
        .expect_err("a wrong token is refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let status = grpc_export(grpc, "s3cret", oversized.clone())
        .await
        .expect_err("an oversized request is refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_request_bytes"), "{status:?}");
    let status = grpc_garbage(grpc, "s3cret").await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // HTTP
    let (code, _) = http_post(http, "wrong", gauge_request(1).encode_to_vec()).await;
    assert_eq!(code, 401);
    let (code, body) = http_post(http, "s3cret", oversized.encode_to_vec()).await;
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("max_request_bytes"), "{body}");
    let (code, body) = http_post(http, "s3cret", garbage().encode_to_vec()).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not an OTLP"), "{body}");

    // Nothing else disturbed: good requests on both transports go through and on.
    grpc_export(grpc, "s3cret", gauge_request(3))
        .await
        .expect("a good gRPC request is taken");
    let (code, body) = http_post(http, "s3cret", gauge_request(2).encode_to_vec()).await;
    assert_eq!(code, 200, "{body}");

    let counted = |received: &Received| {
        let mut counts = BTreeMap::new();
        for p in received.latest_points("vigil.receive.bad_requests") {
            counts.insert(
                (
                    p.attributes["network.protocol.name"].clone(),
                    p.attributes["error.type"].clone(),
                ),
                p.value,
            );
        }
        counts
    };
    let expected: BTreeMap<(String, String), f64> = ["grpc", "http"]
        .into_iter()
        .flat_map(|t| {
            ["malformed", "too_large", "unauthenticated"]
                .map(|c| ((t.to_owned(), c.to_owned()), 1.0))
        })
        .collect();
    let (done, received) = export
        .wait_for(Duration::from_secs(15), |r| {
            counted(r) == expected
                && r.latest_points("vigil.receive.datapoints")
                    .iter()
                    .map(|p| p.value)
                    .sum::<f64>()
                    == 5.0
                && r.latest_points("app.queue.depth").len() >= 2
        })
        .await;
    assert!(
        done,
        "each bad request is counted once, the good ones are taken and forwarded: {:?} {:?}\n{}",
        counted(&received),
        received.latest_points("vigil.receive.datapoints"),
        agent.log()
    );
    // One log line per transport and cause.
    let log = agent.log();
    for cause in [
        "a bearer token is required",
        "request too large",
        "not an OTLP",
    ] {
        assert_eq!(
            log.matches(cause).count(),
            2,
            "{cause:?} logged once per transport:\n{log}"
        );
    }
}
