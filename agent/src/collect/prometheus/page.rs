//! A `/metrics` page in the Prometheus text exposition format, parsed by the
//! `prom_text_format_parser` crate (a grammar of the format: labels with escaped quotes
//! and commas, `+Inf`/`NaN`, timestamps, the `_bucket`/`_sum`/`_count` series of
//! histograms and summaries grouped with their family) and turned into datapoints named
//! as exposed.
//!
//! - counter → a counter, gauge and untyped → a gauge;
//! - summary → its quantiles as a gauge (`quantile` attribute), `NAME_sum` and
//!   `NAME_count` as counters;
//! - histogram → one histogram point `NAME` per label set: its `NAME_bucket` series (the
//!   `le` labels become the bounds, the cumulative counts per-bucket counts), `NAME_sum`
//!   and `NAME_count` folded together, as an OpenTelemetry receiver does; a histogram
//!   whose series do not fit together is skipped with the reason.

use std::collections::HashMap;

use prom_text_format_parser::{Metric, Sample, Type, ValueType, parse_scrape};

use crate::model::{Attributes, BatchBuilder, Histogram, MetricDesc, MetricKind};

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

/// What one page added to a batch.
#[derive(Debug, Default, PartialEq)]
pub struct Added {
    /// Datapoints added (a histogram point counts once).
    pub points: usize,
    /// Histograms skipped, each `NAME{labels}: why`.
    pub skipped: Vec<String>,
}

/// Adds every sample of `families` to `batch`, each with its labels plus `extra`.
pub fn add_to_batch(
    families: &[Metric],
    batch: &mut BatchBuilder,
    extra: &[(String, String)],
) -> Result<Added, PageError> {
    let series: usize = families.iter().map(|f| f.samples.len()).sum();
    if series > MAX_SERIES {
        return Err(PageError::TooManySeries { limit: MAX_SERIES });
    }
    let mut added = Added::default();
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
            Type::Histogram => {
                add_histograms(
                    family,
                    &desc("", MetricKind::Histogram),
                    batch,
                    extra,
                    &mut added,
                );
                continue;
            }
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
            batch.point(metric, attributes(sample, None, extra), value);
            added.points += 1;
        }
    }
    Ok(added)
}

/// A sample's labels (but `skip`), unescaped, plus `extra`.
fn attributes(sample: &Sample, skip: Option<&str>, extra: &[(String, String)]) -> Attributes {
    sample
        .labels
        .iter()
        .filter(|l| Some(l.key.as_str()) != skip)
        .map(|l| (l.key.clone(), unescape(&l.value)))
        .chain(extra.iter().cloned())
        .collect()
}

/// The series of one histogram label set as exposed.
#[derive(Default)]
struct Exposed {
    /// `(le, cumulative count)` of each `_bucket` series.
    buckets: Vec<(f64, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
}

/// Folds a histogram family's series into one histogram point per label set (without
/// `le`), added to `batch`; a label set whose series do not fit together goes to
/// `added.skipped`.
fn add_histograms(
    family: &Metric,
    metric: &MetricDesc,
    batch: &mut BatchBuilder,
    extra: &[(String, String)],
    added: &mut Added,
) {
    let mut order: Vec<Attributes> = Vec::new();
    let mut sets: HashMap<Attributes, Exposed> = HashMap::new();
    for sample in &family.samples {
        let labels = attributes(sample, Some("le"), extra);
        let Ok(value) = sample.value.value.parse::<f64>() else {
            continue;
        };
        let exposed = sets.entry(labels).or_insert_with_key(|labels| {
            order.push(labels.clone());
            Exposed::default()
        });
        match sample.value.value_type {
            ValueType::Sum => exposed.sum = Some(value),
            ValueType::Count => exposed.count = Some(value),
            ValueType::Sample => {
                let le = sample.labels.iter().find(|l| l.key == "le");
                match le.and_then(|l| parse_bound(&l.value)) {
                    Some(bound) => exposed.buckets.push((bound, value)),
                    // Not a bucket after all: no histogram can be made of this label set.
                    None => exposed.buckets.push((f64::NAN, value)),
                }
            }
        }
    }
    for labels in order {
        let Some(exposed) = sets.remove(&labels) else {
            continue;
        };
        match fold(exposed) {
            Ok(histogram) => {
                batch.histogram(metric, labels, histogram);
                added.points += 1;
            }
            Err(why) => {
                added
                    .skipped
                    .push(format!("{}{}: {why}", family.name, show(&labels, extra)))
            }
        }
    }
}

/// `{k="v",...}` of `labels` but `extra`, for a message.
fn show(labels: &Attributes, extra: &[(String, String)]) -> String {
    let own: Vec<String> = labels
        .iter()
        .filter(|l| !extra.contains(l))
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{{{}}}", own.join(","))
}

/// An `le` label value: a number or `+Inf`.
fn parse_bound(value: &str) -> Option<f64> {
    match value {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        other => other.parse::<f64>().ok().filter(|b| !b.is_nan()),
    }
}

/// A whole non-negative count from an exposed number.
fn whole(value: f64, what: &str) -> Result<u64, String> {
    if value >= 0.0 && value.fract() == 0.0 && value < u64::MAX as f64 {
        Ok(value as u64)
    } else {
        Err(format!("{what} {value} is not a whole non-negative count"))
    }
}

/// One histogram of a label set's series: the finite `le` values become the bounds, the
/// cumulative bucket counts per-bucket counts; the `+Inf` bucket (or `_count`) is the
/// count, and both must agree when both are there.
fn fold(mut exposed: Exposed) -> Result<Histogram, String> {
    if exposed.buckets.iter().any(|(le, _)| le.is_nan()) {
        return Err("a _bucket series has no valid le label".into());
    }
    exposed.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if exposed.buckets.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err("two _bucket series have the same le".into());
    }
    let infinite = match exposed.buckets.last() {
        Some((le, cumulative)) if le.is_infinite() => Some(whole(*cumulative, "le=\"+Inf\"")?),
        _ => None,
    };
    let count = match (infinite, exposed.count) {
        (Some(inf), Some(count)) if whole(count, "_count")? != inf => {
            return Err(format!("_count {count} differs from the +Inf bucket {inf}"));
        }
        (Some(inf), _) => inf,
        (None, Some(count)) => whole(count, "_count")?,
        (None, None) => return Err("neither an le=\"+Inf\" bucket nor _count".into()),
    };
    let sum = exposed.sum.ok_or("no _sum series")?;
    let mut bounds = Vec::new();
    let mut bucket_counts = Vec::new();
    let mut below = 0u64;
    for (le, cumulative) in exposed.buckets.iter().filter(|(le, _)| le.is_finite()) {
        let cumulative = whole(*cumulative, &format!("bucket le={le}"))?;
        let in_bucket = cumulative
            .checked_sub(below)
            .ok_or_else(|| format!("the bucket counts fall at le={le}"))?;
        bounds.push(*le);
        bucket_counts.push(in_bucket);
        below = cumulative;
    }
    let rest = count
        .checked_sub(below)
        .ok_or("the bucket counts exceed the count")?;
    bucket_counts.push(rest);
    let histogram = Histogram {
        count,
        sum,
        bounds,
        bucket_counts,
        min: None,
        max: None,
    };
    match histogram.problem() {
        Some(problem) => Err(problem.to_owned()),
        None => Ok(histogram),
    }
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
        // The histogram's series folded into one histogram point per label set.
        let histograms: Vec<_> = b.histogram_points().collect();
        assert_eq!(histograms.len(), 1);
        let (metric, labels, h) = histograms[0];
        assert_eq!(
            (metric.name.as_str(), metric.kind),
            ("http_request_duration_seconds", MetricKind::Histogram)
        );
        assert_eq!(
            labels,
            &vec![
                ("handler".to_owned(), "/".to_owned()),
                ("vigil.instance".to_owned(), "app".to_owned())
            ],
            "le is gone, the other labels stay"
        );
        assert_eq!(
            (
                h.count,
                h.sum,
                h.bounds.as_slice(),
                h.bucket_counts.as_slice()
            ),
            (2, 2.3, &[0.1, 0.5, 1.0][..], &[0, 1, 0, 1][..])
        );
        assert!(
            point(&b, "http_request_duration_seconds_bucket", &[]).is_none()
                && point(&b, "http_request_duration_seconds_count", &[]).is_none(),
            "no histogram series stays a scalar"
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

    /// The histograms of a page with one histogram family `h`, and what was skipped.
    fn histograms_of(series: &str) -> (Vec<Histogram>, Vec<String>) {
        let families = parse(&format!("# TYPE h histogram\n{series}")).unwrap();
        let mut batch = BatchBuilder::new("prometheus:app", "h");
        let added = add_to_batch(&families, &mut batch, &[]).unwrap();
        let batch = batch.build();
        let folded = batch
            .histogram_points()
            .map(|(_, _, h)| h.clone())
            .collect();
        (folded, added.skipped)
    }

    #[test]
    fn each_label_set_of_a_histogram_is_one_point() {
        let (folded, skipped) = histograms_of(
            "h_bucket{r=\"a\",le=\"1\"} 2\nh_bucket{r=\"b\",le=\"1\"} 0\n\
             h_bucket{r=\"a\",le=\"+Inf\"} 5\nh_bucket{r=\"b\",le=\"+Inf\"} 1\n\
             h_sum{r=\"a\"} 9.5\nh_sum{r=\"b\"} 3\nh_count{r=\"a\"} 5\nh_count{r=\"b\"} 1\n",
        );
        assert!(skipped.is_empty(), "{skipped:?}");
        let shape: Vec<_> = folded
            .iter()
            .map(|h| (h.count, h.sum, h.bucket_counts.clone()))
            .collect();
        assert_eq!(shape, [(5, 9.5, vec![2, 3]), (1, 3.0, vec![0, 1])]);
    }

    #[test]
    fn a_histogram_whose_series_disagree_is_skipped_with_the_reason() {
        for (series, why) in [
            (
                "h_bucket{le=\"1\"} 3\nh_bucket{le=\"2\"} 2\nh_bucket{le=\"+Inf\"} 3\nh_sum 1\nh_count 3\n",
                "fall at le=2",
            ),
            (
                "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 3\nh_sum 1\nh_count 4\n",
                "_count 4 differs from the +Inf bucket 3",
            ),
            (
                "h_bucket{le=\"1\"} 1.5\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\n",
                "not a whole",
            ),
            ("h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n", "no _sum"),
            ("h_bucket{le=\"x\"} 1\nh_sum 1\nh_count 1\n", "no valid le"),
        ] {
            let (folded, skipped) = histograms_of(series);
            assert!(folded.is_empty(), "{series}");
            assert_eq!(skipped.len(), 1, "{series}");
            assert!(skipped[0].starts_with("h{}: "), "{skipped:?}");
            assert!(skipped[0].contains(why), "{series}: {skipped:?}");
        }
    }

    #[test]
    fn without_an_inf_bucket_the_count_closes_the_histogram() {
        let (folded, skipped) = histograms_of("h_bucket{le=\"1\"} 1\nh_sum 4\nh_count 3\n");
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(folded[0].bucket_counts, [1, 2]);
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
