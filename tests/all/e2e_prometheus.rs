//! `[[collect.prometheus]]` end to end: a real Python `prometheus_client` application is
//! scraped, its counter and histogram arrive at the OTLP receiver under the exposed names
//! with the values the application recorded (the histogram's series folded into histogram
//! points), and the latency plugin built from source judges its error ratio and its p95.
//! A garbage page and an unreachable target are down (`prometheus.up = 0`), counted,
//! warned about once, and disturb nothing.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use vigil_testkit::agent::{AgentProcess, Workspace, free_local_addr};
use vigil_testkit::otlp::{OtlpReceiver, Point, Received};
use vigil_testkit::plugins::LATENCY;
use vigil_testkit::prometheus::PromApp;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// The newest point of `metric` whose attributes include every pair of `labels`.
fn point(received: &Received, metric: &str, labels: &[(&str, &str)]) -> Option<Point> {
    received.newest_point(metric, labels)
}

fn value(received: &Received, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    point(received, metric, labels).map(|p| p.value)
}

fn target(name: &str, url: &str) -> String {
    format!(
        "[[collect.prometheus]]\nname = \"{name}\"\nurl = \"{url}\"\ninterval = \"500ms\"\ntimeout = \"2s\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_client_endpoint_arrives_under_the_exposed_names_and_the_latency_plugin_judges_it()
 {
    let app = PromApp::start().unwrap();
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("latency", LATENCY).unwrap();
    let extra = format!(
        "{}\n[plugins.settings.latency]\nmin_requests = 20\npercentiles = [{{ percentile = 95, max = \"500ms\", for = \"0s\" }}]\nerror_ratio = {{ max = 0.05, for = \"0s\" }}\n",
        target("shop", &app.url)
    );
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, "grpc", "500ms", &extra))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &config).unwrap();

    let api = |code: &'static str| {
        [
            ("handler", "/api"),
            ("code", code),
            ("vigil.instance", "shop"),
        ]
    };
    let fired = |r: &Received, rule: &str| {
        r.records()
            .into_iter()
            .filter(|rec| rec.attributes.get("vigil.alert.rule").map(String::as_str) == Some(rule))
            .filter(|rec| rec.attributes["vigil.alert.state"] == "firing")
            .collect::<Vec<_>>()
    };
    let (ok, r) = receiver
        .wait_for(Duration::from_secs(60), |r| {
            value(r, "http_requests_total", &api("200")).is_some()
                && r.newest_histogram("http_request_duration_seconds", &[("handler", "/api")])
                    .is_some()
                && !fired(r, "error-ratio").is_empty()
                && !fired(r, "latency-p95").is_empty()
        })
        .await;
    assert!(ok, "{:?}\n{}", r.metric_names(), agent.log());

    // The counter, as the application counted.
    assert_eq!(value(&r, "http_requests_total", &api("200")), Some(7.0));
    assert_eq!(value(&r, "http_requests_total", &api("500")), Some(3.0));
    // The histogram's series folded into one histogram point, as the application
    // observed: 0.05 | 0.3, 0.3 | - | 2.0 in the buckets up to 0.1, 0.5, 1 and above.
    let api = r
        .newest_histogram("http_request_duration_seconds", &[("handler", "/api")])
        .expect("the /api histogram");
    assert_eq!(api.explicit_bounds, [0.1, 0.5, 1.0]);
    assert_eq!(api.bucket_counts, [1, 2, 0, 1]);
    assert_eq!(api.count, 4);
    assert!((api.sum.unwrap_or_default() - 2.65).abs() < 1e-9, "{api:?}");
    assert!(
        !api.attributes.iter().any(|kv| kv.key == "le"),
        "le became the bounds: {api:?}"
    );
    assert!(
        r.latest_points("http_request_duration_seconds_bucket")
            .is_empty(),
        "no bucket series stays a scalar"
    );
    assert_eq!(
        value(&r, "prometheus.up", &[("vigil.instance", "shop")]),
        Some(1.0)
    );

    // A quarter of /live's requests fail and every one takes 0.7 s: the error-ratio and
    // the p95 rules fire for /live only (/api's series do not move, so there is no window
    // to judge), the p95 from the scraped histogram's deltas.
    for rule in ["error-ratio", "latency-p95"] {
        let firing = fired(&r, rule);
        assert!(
            firing
                .iter()
                .all(|rec| rec.attributes["vigil.alert.key"].contains("handler=\"/live\"")),
            "{firing:?}"
        );
        assert_eq!(
            firing[0].attributes["vigil.alert.source"],
            "prometheus:shop"
        );
    }
    let ratio: f64 = fired(&r, "error-ratio")[0].attributes["vigil.alert.value"]
        .parse()
        .unwrap();
    assert!((0.2..=0.3).contains(&ratio), "about a quarter: {ratio}");
    let p95: f64 = fired(&r, "latency-p95")[0].attributes["vigil.alert.value"]
        .parse()
        .unwrap();
    assert!(
        p95 > 0.5 && p95 <= 1.0,
        "p95 of 0.7 s observations lies in their bucket (0.5, 1]: {p95}"
    );
}

/// Serves `body` as a 200 text/plain answer to every request, until the test ends.
fn serve_forever(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_page_and_an_unreachable_target_are_down_counted_warned_once_and_disturb_nothing()
{
    let app = PromApp::start().unwrap();
    let garbage = serve_forever("<html><body>this is { not metrics</body></html>\n");
    let gone = format!("http://{}/metrics", free_local_addr().unwrap());
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let extra = [
        target("good", &app.url),
        target("garbage", &garbage),
        target("gone", &gone),
    ]
    .join("\n");
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, "grpc", "500ms", &extra))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &config).unwrap();

    let errors = |r: &Received, name: &str| {
        value(r, "vigil.collector.errors", &[("vigil.collector", name)]).unwrap_or(0.0)
    };
    let (ok, r) = receiver
        .wait_for(Duration::from_secs(60), |r| {
            errors(r, "prometheus:garbage") >= 3.0
                && errors(r, "prometheus:gone") >= 3.0
                && value(r, "http_requests_total", &[("vigil.instance", "good")]).is_some()
        })
        .await;
    assert!(
        ok,
        "{:?}\n{}",
        r.latest_points("vigil.collector.errors"),
        agent.log()
    );
    let up = |name: &str| value(&r, "prometheus.up", &[("vigil.instance", name)]);
    assert_eq!(up("garbage"), Some(0.0));
    assert_eq!(up("gone"), Some(0.0));
    assert_eq!(up("good"), Some(1.0), "the good target is not disturbed");
    assert_eq!(errors(&r, "prometheus:good"), 0.0);
    // Nothing of the garbage page became a metric.
    assert!(r.latest_points("html").is_empty());

    let log = agent.log();
    let warned = |what: &str| {
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains(what))
            .count()
    };
    assert_eq!(
        warned("prometheus garbage"),
        1,
        "one warning per outage, however many failed rounds:\n{log}"
    );
    assert!(log.contains("not in the Prometheus text format"), "{log}");
    assert_eq!(warned("prometheus gone"), 1, "{log}");
    assert!(log.contains(&gone), "the warning names the url: {log}");
}
