//! A `/metrics` page in the Prometheus text exposition format, parsed by the
//! `prom_text_format_parser` crate (a grammar of the format: labels with escaped quotes
//! and commas, `+Inf`/`NaN`, timestamps, the `_bucket`/`_sum`/`_count` series of
//! histograms and summaries grouped with their family) and turned into datapoints named
//! as exposed.
//!
//! - counter → a counter, gauge and untyped → a gauge;
//! - summary → its quantiles as a gauge (`quantile` attribute), `NAME_sum` and
//!   `NAME_count` as counters;
//! - histogram → its series as exposed: `NAME_bucket` (with `le`), `NAME_sum` and
//!   `NAME_count`, all counters.

use prom_text_format_parser::{Metric, Type, ValueType, parse_scrape};

use crate::model::{Attributes, BatchBuilder, MetricDesc, MetricKind};

/// Why a page is not usable.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PageError {
    #[error("the page is not in the Prometheus text format: {0}")]
    Syntax(String),
    #[error("the page is not in the Prometheus text format: {0}")]
    Family(String),
    #[error("the page has more than {limit} series; vigil reads at most that many per scrape")]
    TooManySeries { limit: usize },
}

/// Most series one page may hold (a bound on the memory and work of one scrape).
pub const MAX_SERIES: usize = 100_000;

/// The metric families of a page. Families with a `HELP` or `TYPE` line but no sample
/// (a labelled metric no label values were used with yet) are fine; any other problem
/// refuses the whole page.
pub fn parse(text: &str) -> Result<Vec<Metric>, PageError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let (families, error) = parse_scrape(text);
    match error {
        None => Ok(families),
        Some(prom_text_format_parser::ScrapeParseError::Parse(message)) => {
            Err(PageError::Syntax(shorten(&message)))
        }
        Some(prom_text_format_parser::ScrapeParseError::Collect(errors)) => {
            match errors.iter().find(|e| !is_empty_family(&e.error)) {
                Some(e) => Err(PageError::Family(format!(
                    "line {}: {}",
                    e.line_no.start + 1,
                    shorten(&e.error)
                ))),
                None => Ok(families),
            }
        }
    }
}

/// Whether the parser's complaint is only about a family without samples (valid
/// exposition: `prometheus_client` writes one for a labelled metric not used yet).
fn is_empty_family(message: &str) -> bool {
    ["has no samples", "has only HELP", "has only TYPE"]
        .iter()
        .any(|end| message.ends_with(end))
}

/// At most 300 characters of a parser message (it may quote the page).
fn shorten(message: &str) -> String {
    let line = message.trim().replace('\n', " | ");
    match line.char_indices().nth(300) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line,
    }
}

/// Adds every sample of `families` to `batch`, each with its labels plus `extra`.
/// Returns how many datapoints were added.
pub fn add_to_batch(
    families: &[Metric],
    batch: &mut BatchBuilder,
    extra: &[(String, String)],
) -> Result<usize, PageError> {
    let series: usize = families.iter().map(|f| f.samples.len()).sum();
    if series > MAX_SERIES {
        return Err(PageError::TooManySeries { limit: MAX_SERIES });
    }
    let mut added = 0;
    for family in families {
        let help = family.help_desc.as_deref().unwrap_or("");
        let desc = |suffix: &str, kind| {
            MetricDesc::new(&format!("{}{suffix}", family.name), "", kind, help)
        };
        let (samples, sums, counts) = match family.kind {
            Type::Counter => (desc("", MetricKind::Counter), None, None),
            Type::Gauge | Type::Untyped => (desc("", MetricKind::Gauge), None, None),
            Type::Summary => (
                desc("", MetricKind::Gauge),
                Some(desc("_sum", MetricKind::Counter)),
                Some(desc("_count", MetricKind::Counter)),
            ),
            Type::Histogram => (
                desc("_bucket", MetricKind::Counter),
                Some(desc("_sum", MetricKind::Counter)),
                Some(desc("_count", MetricKind::Counter)),
            ),
        };
        for sample in &family.samples {
            let metric = match sample.value.value_type {
                ValueType::Sample => &samples,
                ValueType::Sum => sums.as_ref().unwrap_or(&samples),
                ValueType::Count => counts.as_ref().unwrap_or(&samples),
            };
            let Ok(value) = sample.value.value.parse::<f64>() else {
                continue;
            };
            let attributes: Attributes = sample
                .labels
                .iter()
                .map(|l| (l.key.clone(), unescape(&l.value)))
                .chain(extra.iter().cloned())
                .collect();
            batch.point(metric, attributes, value);
            added += 1;
        }
    }
    Ok(added)
}

/// A label value as the exposition format escapes it (`\\`, `\"`, `\n`) made plain: the
/// parser checks the escapes and keeps them as written.
fn unescape(value: &str) -> String {
    if !value.contains('\\') {
        return value.to_owned();
    }
    let mut plain = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => plain.push('\n'),
                Some(other) => plain.push(other),
                None => plain.push('\\'),
            },
            (c, false) => plain.push(c),
        }
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Batch;

    /// What `prometheus_client` 0.26 (Python) writes for a counter, a histogram, a
    /// summary, a NaN gauge and a labelled counter not used yet.
    const PAGE: &str = r#"# HELP http_requests_total Requests
# TYPE http_requests_total counter
http_requests_total{code="200",handler="/a,b"} 3.0
http_requests_total{code="500",handler="/x\"y"} 1.0
# HELP http_requests_created Requests
# TYPE http_requests_created gauge
http_requests_created{code="200",handler="/a,b"} 1.7957077806148841e+09
# HELP http_request_duration_seconds Durations
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{handler="/",le="0.1"} 0.0
http_request_duration_seconds_bucket{handler="/",le="0.5"} 1.0
http_request_duration_seconds_bucket{handler="/",le="1.0"} 1.0
http_request_duration_seconds_bucket{handler="/",le="+Inf"} 2.0
http_request_duration_seconds_count{handler="/"} 2.0
http_request_duration_seconds_sum{handler="/"} 2.3
# HELP rpc_seconds rpc
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} 1.5
rpc_seconds_count 1.0
rpc_seconds_sum 1.5
# HELP temp tmp
# TYPE temp gauge
temp NaN
# HELP empty_total no children
# TYPE empty_total counter
"#;

    fn batch_of(text: &str) -> Batch {
        let families = parse(text).unwrap();
        let mut batch = BatchBuilder::new("prometheus:app", "h");
        add_to_batch(
            &families,
            &mut batch,
            &[("vigil.instance".into(), "app".into())],
        )
        .unwrap();
        batch.build()
    }

    fn point(batch: &Batch, name: &str, labels: &[(&str, &str)]) -> Option<(MetricKind, f64)> {
        batch.points().find_map(|(m, a, v)| {
            (m.name == name
                && labels
                    .iter()
                    .all(|(k, val)| a.iter().any(|(ak, av)| ak == k && av == val)))
            .then_some((m.kind, v))
        })
    }

    #[test]
    fn every_kind_is_named_as_exposed_with_its_labels() {
        let b = batch_of(PAGE);
        assert_eq!(
            point(
                &b,
                "http_requests_total",
                &[("code", "200"), ("handler", "/a,b")]
            ),
            Some((MetricKind::Counter, 3.0))
        );
        assert_eq!(
            point(
                &b,
                "http_requests_total",
                &[("code", "500"), ("handler", "/x\"y")]
            ),
            Some((MetricKind::Counter, 1.0)),
            "escaped quotes are unescaped"
        );
        assert_eq!(
            point(&b, "http_requests_created", &[]).map(|p| p.0),
            Some(MetricKind::Gauge)
        );
        assert_eq!(
            point(
                &b,
                "http_request_duration_seconds_bucket",
                &[("handler", "/"), ("le", "0.5")]
            ),
            Some((MetricKind::Counter, 1.0))
        );
        assert_eq!(
            point(
                &b,
                "http_request_duration_seconds_bucket",
                &[("le", "+Inf")]
            ),
            Some((MetricKind::Counter, 2.0))
        );
        assert_eq!(
            point(
                &b,
                "http_request_duration_seconds_count",
                &[("handler", "/")]
            ),
            Some((MetricKind::Counter, 2.0))
        );
        assert_eq!(
            point(&b, "http_request_duration_seconds_sum", &[]),
            Some((MetricKind::Counter, 2.3))
        );
        assert_eq!(
            point(&b, "rpc_seconds", &[("quantile", "0.5")]),
            Some((MetricKind::Gauge, 1.5))
        );
        assert_eq!(
            point(&b, "rpc_seconds_count", &[]),
            Some((MetricKind::Counter, 1.0))
        );
        assert_eq!(point(&b, "temp", &[]), None, "NaN is no datapoint");
        assert_eq!(point(&b, "empty_total", &[]), None);
        assert!(
            b.points()
                .all(|(_, a, _)| a.contains(&("vigil.instance".into(), "app".into())))
        );
        assert_eq!(
            b.metrics
                .iter()
                .find(|m| m.name == "rpc_seconds")
                .unwrap()
                .description,
            "rpc"
        );
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        for garbage in [
            "<html><body>Not Found</body></html>\n",
            "metric{label=unquoted} 1\n",
            "metric one\n",
        ] {
            let error = parse(garbage).unwrap_err();
            assert!(
                matches!(error, PageError::Syntax(_) | PageError::Family(_)),
                "{garbage}: {error:?}"
            );
            assert!(
                error
                    .to_string()
                    .starts_with("the page is not in the Prometheus text format"),
                "{error}"
            );
        }
    }

    #[test]
    fn an_empty_page_has_no_series() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("\n\n").unwrap().is_empty());
        assert!(parse("# just a comment\n").unwrap().is_empty());
    }

    #[test]
    fn too_many_series_are_refused() {
        let mut text = String::from("# TYPE many gauge\n");
        for i in 0..=MAX_SERIES {
            text.push_str(&format!("many{{i=\"{i}\"}} 1\n"));
        }
        let families = parse(&text).unwrap();
        let mut batch = BatchBuilder::new("prometheus:app", "h");
        assert_eq!(
            add_to_batch(&families, &mut batch, &[]),
            Err(PageError::TooManySeries { limit: MAX_SERIES })
        );
    }

    #[test]
    fn escapes_in_label_values_are_made_plain() {
        assert_eq!(unescape(r#"a\"b\\c\nd"#), "a\"b\\c\nd");
        assert_eq!(unescape("plain"), "plain");
    }
}
