//! Whole evaluations on batches built as the host sends them, with an in-memory store.

use std::collections::HashMap;

use vigil_plugin_kit::Frame;
use vigil_plugin_kit::bindings::vigil::plugin::types::{
    Attribute, Batch, Finding, Histogram, Metric, MetricKind, Series, SeriesTable, Severity,
};

use crate::rule::{MetricState, Outcome, Store, evaluate, human_seconds, state_key};
use crate::settings::Settings;

const OTEL: &str = "http.server.request.duration";
const PROM: &str = "http_request_duration_seconds";
const BOUNDS: [f64; 5] = [0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Default, Clone)]
struct MemStore(HashMap<String, Vec<u8>>);

impl Store for MemStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.get(key).cloned()
    }
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        self.0.insert(key.to_owned(), value.to_vec());
        Ok(())
    }
}

/// A store that refuses every write (a full host state).
struct FullStore;

impl Store for FullStore {
    fn get(&self, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn set(&mut self, key: &str, _: &[u8]) -> Result<(), String> {
        Err(format!("state {key:?} would exceed 1 MiB"))
    }
}

fn attrs(pairs: &[(&str, &str)]) -> Vec<Attribute> {
    pairs
        .iter()
        .map(|(k, v)| Attribute {
            key: (*k).into(),
            value: (*v).into(),
        })
        .collect()
}

/// Builds a batch the way the host lays it out: scalar series first, histograms after.
#[derive(Default)]
struct BatchBuilder {
    metrics: Vec<Metric>,
    scalars: Vec<(u32, Vec<Attribute>, f64)>,
    histograms: Vec<(u32, Vec<Attribute>, Vec<f64>, Vec<u64>)>,
}

impl BatchBuilder {
    fn metric(&mut self, name: &str, unit: &str, kind: MetricKind) -> u32 {
        if let Some(i) = self.metrics.iter().position(|m| m.name == name) {
            return i as u32;
        }
        self.metrics.push(Metric {
            name: name.into(),
            unit: unit.into(),
            kind,
        });
        (self.metrics.len() - 1) as u32
    }

    fn histogram(
        mut self,
        metric: &str,
        unit: &str,
        a: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
    ) -> Self {
        let m = self.metric(metric, unit, MetricKind::Histogram);
        self.histograms
            .push((m, attrs(a), bounds.to_vec(), counts.to_vec()));
        self
    }

    /// A request-duration histogram in seconds with [`BOUNDS`].
    fn requests(self, a: &[(&str, &str)], counts: [u64; 6]) -> Self {
        self.histogram(OTEL, "s", a, &BOUNDS, &counts)
    }

    fn counter(mut self, metric: &str, a: &[(&str, &str)], value: f64) -> Self {
        let m = self.metric(metric, "", MetricKind::Counter);
        self.scalars.push((m, attrs(a), value));
        self
    }

    fn at(self, source: &str, seconds: u64) -> Frame {
        let mut series = Vec::new();
        let mut values = Vec::new();
        for (metric, attributes, value) in self.scalars {
            series.push(Series { metric, attributes });
            values.push(value);
        }
        let mut histograms = Vec::new();
        for (metric, attributes, bounds, bucket_counts) in self.histograms {
            histograms.push(Histogram {
                series: series.len() as u32,
                count: bucket_counts.iter().sum(),
                sum: 0.0,
                bounds,
                bucket_counts,
            });
            series.push(Series { metric, attributes });
        }
        let table = SeriesTable {
            id: seconds,
            metrics: self.metrics,
            series,
        };
        Frame::new(Batch {
            source: source.into(),
            host: "web-1".into(),
            timestamp_ns: seconds * 1_000_000_000,
            table_id: seconds,
            table: Some(table),
            values,
            histograms,
        })
        .unwrap()
    }
}

fn batch() -> BatchBuilder {
    BatchBuilder::default()
}

fn settings(json: &str) -> Settings {
    Settings::parse(json).unwrap()
}

/// p95 above 200 ms after 30 s; min_requests 10; the error ratio above 10 %.
fn strict() -> Settings {
    settings(
        r#"{"min_requests": 10, "stale_after": "5m",
            "percentiles": [{"percentile": 95, "max": "200ms", "for": "30s", "severity": "critical"}],
            "error_ratio": {"max": 0.1, "for": "1m"}}"#,
    )
}

const API: [(&str, &str); 3] = [
    ("http.route", "/api"),
    ("http.request.method", "GET"),
    ("http.response.status_code", "200"),
];
const API_500: [(&str, &str); 3] = [
    ("http.route", "/api"),
    ("http.request.method", "GET"),
    ("http.response.status_code", "500"),
];
const API_KEY: &str =
    r#"otlp:shop http.server.request.duration{http.request.method="GET",http.route="/api"}"#;

fn rules(outcome: &Outcome) -> Vec<(&str, &str)> {
    outcome
        .findings
        .iter()
        .map(|f| (f.rule.as_str(), f.key.as_str()))
        .collect()
}

fn label<'a>(f: &'a Finding, key: &str) -> &'a str {
    vigil_plugin_kit::attr(&f.labels, key)
}

#[test]
fn p95_above_its_target_is_reported_with_for_and_labels_and_stops_when_it_falls() {
    let s = strict();
    let mut store = MemStore::default();
    let base = evaluate(
        &batch().requests(&API, [0; 6]).at("otlp:shop", 10),
        &s,
        &mut store,
    );
    assert!(base.findings.is_empty(), "the first reading is only a base");

    // 20 requests, all in (0.25, 0.5]: p95 = 0.25 + 0.25 * 19/20.
    let slow = evaluate(
        &batch()
            .requests(&API, [0, 0, 0, 20, 0, 0])
            .at("otlp:shop", 20),
        &s,
        &mut store,
    );
    assert_eq!(rules(&slow), [("latency-p95", API_KEY)]);
    let f = &slow.findings[0];
    assert!((f.value.unwrap() - 0.4875).abs() < 1e-12, "{:?}", f.value);
    assert_eq!(f.for_ms, 30_000);
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(label(f, "http.route"), "/api");
    assert_eq!(label(f, "http.request.method"), "GET");
    assert_eq!(
        label(f, "http.response.status_code"),
        "",
        "the status code is not part of the series"
    );
    assert_eq!(label(f, "source"), "otlp:shop");
    assert_eq!(label(f, "metric"), OTEL);
    assert_eq!(label(f, "requests"), "20");
    assert_eq!(label(f, "window"), "10s");
    assert_eq!(label(f, "p50"), human_seconds(0.375));
    assert_eq!(label(f, "p99"), human_seconds(0.4975));
    assert!(
        f.summary
            .contains("p95 latency of http.server.request.duration"),
        "{}",
        f.summary
    );
    assert!(f.summary.contains("above 200ms"), "{}", f.summary);

    // 20 fast requests in the next window: p95 = 0.05 * 0.95, below the target.
    let fast = evaluate(
        &batch()
            .requests(&API, [20, 0, 0, 20, 0, 0])
            .at("otlp:shop", 30),
        &s,
        &mut store,
    );
    assert!(fast.findings.is_empty(), "{:?}", fast.findings);
    assert!(fast.warnings.is_empty());
}

#[test]
fn the_prometheus_histogram_without_unit_is_in_seconds() {
    let s = strict();
    let mut store = MemStore::default();
    let h = |counts: &[u64]| {
        batch().histogram(
            PROM,
            "",
            &[("handler", "/"), ("code", "200")],
            &BOUNDS,
            counts,
        )
    };
    evaluate(&h(&[0; 6]).at("prometheus:app", 1), &s, &mut store);
    let out = evaluate(
        &h(&[0, 0, 0, 0, 10, 0]).at("prometheus:app", 2),
        &s,
        &mut store,
    );
    assert_eq!(
        rules(&out),
        [(
            "latency-p95",
            r#"prometheus:app http_request_duration_seconds{handler="/"}"#
        )]
    );
    assert!((out.findings[0].value.unwrap() - 0.975).abs() < 1e-12);
}

#[test]
fn a_millisecond_histogram_is_compared_in_seconds() {
    let s = strict();
    let mut store = MemStore::default();
    let ms = [50.0, 100.0, 250.0, 500.0, 1000.0];
    let h = |counts: &[u64]| batch().histogram(OTEL, "ms", &API, &ms, counts);
    evaluate(&h(&[0; 6]).at("otlp:shop", 1), &s, &mut store);
    // All 10 in (100, 250] ms: p95 = 242.5 ms, above 200 ms.
    let out = evaluate(&h(&[0, 0, 10, 0, 0, 0]).at("otlp:shop", 2), &s, &mut store);
    assert_eq!(out.findings.len(), 1);
    assert!((out.findings[0].value.unwrap() - 0.2425).abs() < 1e-12);
    // All 10 more in (50, 100] ms: p95 = 97.5 ms.
    let out = evaluate(&h(&[0, 10, 10, 0, 0, 0]).at("otlp:shop", 3), &s, &mut store);
    assert!(out.findings.is_empty());
}

#[test]
fn a_histogram_that_is_not_a_duration_warns_and_judges_only_the_error_ratio() {
    let s = strict();
    let mut store = MemStore::default();
    let h = |ok: &[u64], err: &[u64]| {
        batch()
            .histogram(OTEL, "By", &API, &BOUNDS, ok)
            .histogram(OTEL, "By", &API_500, &BOUNDS, err)
    };
    evaluate(&h(&[0; 6], &[0; 6]).at("otlp:shop", 1), &s, &mut store);
    let out = evaluate(
        &h(&[0, 0, 0, 0, 0, 8], &[0, 0, 0, 0, 0, 2]).at("otlp:shop", 2),
        &s,
        &mut store,
    );
    assert_eq!(rules(&out), [("error-ratio", API_KEY)]);
    assert_eq!(
        out.warnings.len(),
        2,
        "one per point, logged once by key: {:?}",
        out.warnings
    );
    assert_eq!(out.warnings[0].key, format!("latency-unit/{OTEL}"));
    assert!(out.warnings[0].message.contains("not a duration"));
}

#[test]
fn the_error_ratio_comes_from_the_histogram_split_by_status_code() {
    let s = strict();
    let mut store = MemStore::default();
    evaluate(
        &batch().requests(&API, [0; 6]).at("otlp:shop", 10),
        &s,
        &mut store,
    );
    // 16 OK (fast) and the first 4 errors (a new series of a known group: counted whole).
    let out = evaluate(
        &batch()
            .requests(&API, [16, 0, 0, 0, 0, 0])
            .requests(&API_500, [4, 0, 0, 0, 0, 0])
            .at("otlp:shop", 20),
        &s,
        &mut store,
    );
    assert_eq!(rules(&out), [("error-ratio", API_KEY)]);
    let f = &out.findings[0];
    assert!((f.value.unwrap() - 0.2).abs() < 1e-12, "{:?}", f.value);
    assert_eq!(f.for_ms, 60_000);
    assert_eq!(label(f, "errors"), "4");
    assert!(
        f.summary.contains("20.00 % of the requests"),
        "{}",
        f.summary
    );
}

#[test]
fn the_error_ratio_comes_from_a_request_counter() {
    let s = strict();
    let mut store = MemStore::default();
    let c = |ok: f64, err: f64| {
        batch()
            .counter(
                "http_requests_total",
                &[("handler", "/"), ("code", "200")],
                ok,
            )
            .counter(
                "http_requests_total",
                &[("handler", "/"), ("code", "503")],
                err,
            )
    };
    evaluate(&c(1000.0, 5.0).at("prometheus:app", 1), &s, &mut store);
    // 15 OK, 5 errors: 25 %.
    let out = evaluate(&c(1015.0, 10.0).at("prometheus:app", 2), &s, &mut store);
    assert_eq!(
        rules(&out),
        [(
            "error-ratio",
            r#"prometheus:app http_requests_total{handler="/"}"#
        )]
    );
    assert!((out.findings[0].value.unwrap() - 0.25).abs() < 1e-12);
    assert_eq!(
        label(&out.findings[0], "p95"),
        "",
        "a counter has no percentiles"
    );
    // 30 OK, none failed: the ratio falls, the finding stops.
    let out = evaluate(&c(1045.0, 10.0).at("prometheus:app", 3), &s, &mut store);
    assert!(out.findings.is_empty());
}

#[test]
fn an_error_ratio_at_or_below_the_target_is_not_reported() {
    let s = strict();
    let mut store = MemStore::default();
    let c = |ok: f64, err: f64| {
        batch()
            .counter("http_requests_total", &[("code", "200")], ok)
            .counter("http_requests_total", &[("code", "500")], err)
    };
    evaluate(&c(0.0, 0.0).at("prometheus:app", 1), &s, &mut store);
    let out = evaluate(&c(9.0, 1.0).at("prometheus:app", 2), &s, &mut store);
    assert!(out.findings.is_empty(), "10 % is not above 10 %");
}

#[test]
fn a_counter_reset_starts_over_from_the_new_reading() {
    let s = strict();
    let mut store = MemStore::default();
    let at = |counts: [u64; 6], t: u64, store: &mut MemStore| {
        evaluate(
            &batch().requests(&API, counts).at("otlp:shop", t),
            &s,
            store,
        )
    };
    at([100, 0, 0, 0, 0, 0], 10, &mut store);
    assert!(at([120, 0, 0, 0, 0, 0], 20, &mut store).findings.is_empty());
    // The application restarted: 15 slow requests since. Subtracting would give nonsense;
    // the series starts over from this reading instead.
    assert!(at([0, 0, 0, 0, 15, 0], 30, &mut store).findings.is_empty());
    // 10 more slow requests after the restart: judged from the new base.
    let out = at([0, 0, 0, 0, 25, 0], 40, &mut store);
    assert_eq!(rules(&out), [("latency-p95", API_KEY)]);
    assert_eq!(label(&out.findings[0], "requests"), "10");
}

#[test]
fn the_windows_live_in_the_store_and_survive_an_instance_restart() {
    let s = strict();
    let mut store = MemStore::default();
    evaluate(
        &batch().requests(&API, [0; 6]).at("otlp:shop", 10),
        &s,
        &mut store,
    );
    let kept = store.get(&state_key("otlp:shop", OTEL)).unwrap();
    // Round trip: the kept bytes parse back into the same state.
    let state: MetricState = serde_json::from_slice(&kept).unwrap();
    assert_eq!(serde_json::to_vec(&state).unwrap(), kept);
    assert_eq!(state.groups.len(), 1);

    let slow = || {
        batch()
            .requests(&API, [0, 0, 0, 20, 0, 0])
            .at("otlp:shop", 20)
    };
    // A new instance with the kept state sees the 20 slow requests ...
    let mut restarted = store.clone();
    assert_eq!(evaluate(&slow(), &s, &mut restarted).findings.len(), 1);
    // ... without it, that batch would only be a base.
    assert!(
        evaluate(&slow(), &s, &mut MemStore::default())
            .findings
            .is_empty()
    );
}

#[test]
fn a_state_that_does_not_parse_starts_over_with_a_warning() {
    let s = strict();
    let mut store = MemStore::default();
    store
        .set(&state_key("otlp:shop", OTEL), b"{not json")
        .unwrap();
    let out = evaluate(
        &batch().requests(&API, [0; 6]).at("otlp:shop", 10),
        &s,
        &mut store,
    );
    assert!(out.findings.is_empty());
    assert_eq!(out.warnings.len(), 1);
    assert!(
        out.warnings[0].message.contains("does not parse"),
        "{:?}",
        out.warnings
    );
    let state: MetricState =
        serde_json::from_slice(&store.get(&state_key("otlp:shop", OTEL)).unwrap()).unwrap();
    assert_eq!(state.groups.len(), 1);
}

#[test]
fn a_full_store_warns_and_the_evaluation_goes_on() {
    let s = strict();
    let out = evaluate(
        &batch().requests(&API, [0; 6]).at("otlp:shop", 10),
        &s,
        &mut FullStore,
    );
    assert!(out.findings.is_empty());
    assert_eq!(out.warnings.len(), 1);
    assert!(
        out.warnings[0].message.contains("would exceed 1 MiB"),
        "{:?}",
        out.warnings
    );
}

#[test]
fn series_beyond_max_series_are_left_out_with_a_warning() {
    let s = settings(r#"{"min_requests": 10, "max_series": 2}"#);
    let mut store = MemStore::default();
    let routes = |n: u64| {
        ["/a", "/b", "/c"].iter().fold(batch(), |b, route| {
            b.requests(&[("http.route", *route)], [0, 0, 0, 0, 0, n])
        })
    };
    let out = evaluate(&routes(0).at("otlp:shop", 1), &s, &mut store);
    assert_eq!(out.warnings.len(), 1);
    assert!(out.warnings[0].message.contains("max_series = 2"));
    let out = evaluate(&routes(10).at("otlp:shop", 2), &s, &mut store);
    let keys: Vec<&str> = out
        .findings
        .iter()
        .map(|f| label(f, "http.route"))
        .collect();
    assert_eq!(keys, ["/a", "/b"]);
    let state: MetricState =
        serde_json::from_slice(&store.get(&state_key("otlp:shop", OTEL)).unwrap()).unwrap();
    assert_eq!(state.groups.len(), 2);
}

#[test]
fn a_malformed_histogram_point_is_left_out_with_a_warning() {
    let s = strict();
    let mut store = MemStore::default();
    let out = evaluate(
        &batch()
            .histogram(OTEL, "s", &API, &BOUNDS, &[1, 2, 3])
            .histogram(OTEL, "s", &API_500, &[0.5, 0.1], &[0, 0, 0])
            .at("otlp:shop", 1),
        &s,
        &mut store,
    );
    assert!(out.findings.is_empty());
    let messages: Vec<&str> = out.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].contains("3 bucket counts for 5 bounds"),
        "{messages:?}"
    );
    assert!(
        messages[1].contains("not finite and ascending"),
        "{messages:?}"
    );
    assert!(
        store.get(&state_key("otlp:shop", OTEL)).is_none(),
        "nothing kept"
    );
}

#[test]
fn series_of_one_group_with_other_bounds_are_left_out_with_a_warning() {
    let s = strict();
    let mut store = MemStore::default();
    let out = evaluate(
        &batch()
            .requests(&API, [0; 6])
            .histogram(OTEL, "s", &API_500, &[1.0, 2.0], &[0, 0, 0])
            .at("otlp:shop", 1),
        &s,
        &mut store,
    );
    assert_eq!(out.warnings.len(), 1);
    assert!(
        out.warnings[0].message.contains("different bucket bounds"),
        "{:?}",
        out.warnings
    );
}

#[test]
fn group_by_judges_series_by_the_named_attributes_only() {
    let s = settings(
        r#"{"min_requests": 10, "group_by": ["http.route"],
            "percentiles": [{"percentile": 50, "max": "100ms", "for": "0s"}]}"#,
    );
    let mut store = MemStore::default();
    let get = [("http.route", "/api"), ("http.request.method", "GET")];
    let post = [("http.route", "/api"), ("http.request.method", "POST")];
    let b = |g: u64, p: u64| {
        batch()
            .requests(&get, [g, 0, 0, 0, 0, 0])
            .requests(&post, [0, 0, 0, p, 0, 0])
    };
    evaluate(&b(0, 0).at("otlp:shop", 1), &s, &mut store);
    // 6 fast GETs and 6 slow POSTs: 12 requests of /api, p50 at the end of the fast bucket.
    let out = evaluate(&b(6, 6).at("otlp:shop", 2), &s, &mut store);
    assert!(out.findings.is_empty(), "p50 = 50 ms: {:?}", out.findings);
    // 2 more GETs (fast), 10 more POSTs (slow): p50 of this window in (0.25, 0.5].
    let out = evaluate(&b(8, 16).at("otlp:shop", 3), &s, &mut store);
    assert_eq!(
        rules(&out),
        [(
            "latency-p50",
            r#"otlp:shop http.server.request.duration{http.route="/api"}"#
        )]
    );
    assert_eq!(out.findings[0].for_ms, 0);
}

#[test]
fn a_series_missing_from_the_batch_is_not_reported() {
    let s = strict();
    let mut store = MemStore::default();
    let other = [("http.route", "/other")];
    evaluate(
        &batch().requests(&API, [0; 6]).at("otlp:shop", 1),
        &s,
        &mut store,
    );
    let out = evaluate(
        &batch()
            .requests(&API, [0, 0, 0, 0, 10, 0])
            .at("otlp:shop", 2),
        &s,
        &mut store,
    );
    assert_eq!(out.findings.len(), 1);
    // The application stops reporting /api: its verdict is not reported (the alert resolves).
    let out = evaluate(
        &batch().requests(&other, [0; 6]).at("otlp:shop", 3),
        &s,
        &mut store,
    );
    assert!(out.findings.is_empty());
}

#[test]
fn sources_are_judged_apart() {
    let s = strict();
    let mut store = MemStore::default();
    evaluate(
        &batch().requests(&API, [0; 6]).at("otlp:a", 1),
        &s,
        &mut store,
    );
    // Another application with the same route: its first reading is its own base.
    let out = evaluate(
        &batch().requests(&API, [0, 0, 0, 0, 50, 0]).at("otlp:b", 2),
        &s,
        &mut store,
    );
    assert!(out.findings.is_empty());
    let out = evaluate(
        &batch().requests(&API, [0, 0, 0, 0, 10, 0]).at("otlp:a", 2),
        &s,
        &mut store,
    );
    assert_eq!(out.findings.len(), 1);
    assert!(out.findings[0].key.starts_with("otlp:a "));
}

#[test]
fn server_errors_are_5xx_codes_in_the_first_status_attribute_present() {
    let s = settings("{}");
    for (code, error) in [
        ("500", true),
        ("503", true),
        ("599", true),
        ("5xx", true),
        ("5XX", true),
        ("200", false),
        ("404", false),
        ("50", false),
        ("5000", false),
        ("", false),
    ] {
        let reading_of = |key: &str| {
            let a = attrs(&[(key, code)]);
            crate::rule::is_server_error(&a, &s)
        };
        assert_eq!(reading_of("http.response.status_code"), error, "{code}");
        assert_eq!(reading_of("code"), error, "{code}");
        assert_eq!(reading_of("status"), error, "{code}");
        assert!(!reading_of("http.route"), "{code}");
    }
}
