//! The OTLP metrics request encoded as protobuf straight from the batches: the same
//! request [`super::proto::metrics_request`] builds, without building it first (no
//! message, attribute or string copied per point; the export of every round did that).
//! Field numbers are those of opentelemetry-proto's `metrics.proto`, `common.proto` and
//! `metrics_service.proto`; proto3 defaults are left out as prost leaves them out.

use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use super::proto::{Layout, MetricPoints, PointRef, StampedBatch, Value, scope};
use crate::model::{Attributes, MetricKind};

/// The temporality of every sum and histogram vigil sends.
const CUMULATIVE: u64 = AggregationTemporality::Cumulative as u64;

/// The encoded `ExportMetricsServiceRequest` holding every point of `batches` (see
/// [`super::proto::metrics_request`] for what goes where).
pub fn metrics_request<'a>(
    resource: &Resource,
    batches: impl IntoIterator<Item = &'a StampedBatch>,
) -> Vec<u8> {
    let layout = Layout::new(batches);
    let own_scope = scope();
    let mut buf = Vec::with_capacity(4096);
    for (origin, metrics) in &layout.groups {
        // ExportMetricsServiceRequest.resource_metrics = 1
        nested(&mut buf, 1, |buf| {
            // ResourceMetrics.resource = 1, .scope_metrics = 2
            let resource = origin.map_or(resource, |o| &o.resource);
            prost::encoding::message::encode(1, resource, buf);
            nested(buf, 2, |buf| {
                // ScopeMetrics.scope = 1, .metrics = 2
                let scope = origin.map_or(&own_scope, |o| &o.scope);
                prost::encoding::message::encode(1, scope, buf);
                for metric in &metrics.metrics {
                    nested(buf, 2, |buf| encode_metric(metric, buf));
                }
            });
        });
    }
    buf
}

/// A `Metric`: name = 1, description = 2, unit = 3, then its data: gauge = 5, sum = 7 or
/// histogram = 9, each with data_points = 1 (sums and histograms: temporality = 2, sums:
/// is_monotonic = 3).
fn encode_metric(metric: &MetricPoints<'_>, buf: &mut Vec<u8>) {
    let desc = metric.desc;
    string(buf, 1, &desc.name);
    string(buf, 2, &desc.description);
    string(buf, 3, &desc.unit);
    let data_tag = match desc.kind {
        MetricKind::Gauge => 5,
        MetricKind::Counter | MetricKind::UpDownCounter => 7,
        MetricKind::Histogram => 9,
    };
    nested(buf, data_tag, |buf| {
        for point in &metric.points {
            nested(buf, 1, |buf| encode_point(point, buf));
        }
        if desc.kind != MetricKind::Gauge {
            varint(buf, 2, CUMULATIVE);
        }
        if desc.kind == MetricKind::Counter {
            varint(buf, 3, 1);
        }
    });
}

/// A `NumberDataPoint` (start = 2, time = 3, as_double = 4, attributes = 7) or a
/// `HistogramDataPoint` (start = 2, time = 3, count = 4, sum = 5, bucket_counts = 6,
/// explicit_bounds = 7, attributes = 9, min = 11, max = 12).
fn encode_point(point: &PointRef<'_>, buf: &mut Vec<u8>) {
    fixed64(buf, 2, point.start);
    fixed64(buf, 3, point.time);
    match point.value {
        Value::Number(value) => {
            double(buf, 4, value);
            encode_attributes(buf, 7, point.attributes);
        }
        Value::Histogram(h) => {
            fixed64(buf, 4, h.count);
            double(buf, 5, h.sum);
            if !h.bucket_counts.is_empty() {
                encode_key(6, WireType::LengthDelimited, buf);
                encode_varint(8 * h.bucket_counts.len() as u64, buf);
                for count in &h.bucket_counts {
                    buf.extend_from_slice(&count.to_le_bytes());
                }
            }
            if !h.bounds.is_empty() {
                encode_key(7, WireType::LengthDelimited, buf);
                encode_varint(8 * h.bounds.len() as u64, buf);
                for bound in &h.bounds {
                    buf.extend_from_slice(&bound.to_le_bytes());
                }
            }
            encode_attributes(buf, 9, point.attributes);
            if let Some(min) = h.min {
                double(buf, 11, min);
            }
            if let Some(max) = h.max {
                double(buf, 12, max);
            }
        }
    }
}

/// Each attribute as a `KeyValue` (key = 1, value = 2: an `AnyValue` with string_value = 1).
fn encode_attributes(buf: &mut Vec<u8>, tag: u32, attributes: &Attributes) {
    for (key, value) in attributes {
        nested(buf, tag, |buf| {
            string(buf, 1, key);
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(key_len(1) + len_delimited(value.len()), buf);
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(value.len() as u64, buf);
            buf.extend_from_slice(value.as_bytes());
        });
    }
}

/// Field `tag` as a length-delimited message whose content `write` appends: one byte is
/// kept for the length and widened once the content is known (points and attributes
/// rarely need more).
fn nested(buf: &mut Vec<u8>, tag: u32, write: impl FnOnce(&mut Vec<u8>)) {
    encode_key(tag, WireType::LengthDelimited, buf);
    let at = buf.len();
    buf.push(0);
    write(buf);
    let len = buf.len() - at - 1;
    let width = encoded_len_varint(len as u64);
    if width > 1 {
        buf.splice(at + 1..at + 1, std::iter::repeat_n(0, width - 1));
    }
    let mut slot = &mut buf[at..at + width];
    encode_varint(len as u64, &mut slot);
}

/// A string field, left out when empty (proto3).
fn string(buf: &mut Vec<u8>, tag: u32, value: &str) {
    if !value.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.extend_from_slice(value.as_bytes());
    }
}

/// A fixed64 field, left out when 0 (proto3).
fn fixed64(buf: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        encode_key(tag, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

/// A double field that is always present (a oneof member or an optional field).
fn double(buf: &mut Vec<u8>, tag: u32, value: f64) {
    encode_key(tag, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&value.to_le_bytes());
}

/// A varint field (never 0 where it is used).
fn varint(buf: &mut Vec<u8>, tag: u32, value: u64) {
    encode_key(tag, WireType::Varint, buf);
    encode_varint(value, buf);
}

fn key_len(tag: u32) -> u64 {
    prost::encoding::key_len(tag) as u64
}

/// The length of a length-delimited field's length prefix and content.
fn len_delimited(len: usize) -> u64 {
    (encoded_len_varint(len as u64) + len) as u64
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
    use prost::Message;

    use super::*;
    use crate::export::proto;
    use crate::model::{BatchBuilder, Histogram, MetricDesc, Origin, PointTime, Received, attrs};

    fn t(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    /// Collected batches of every kind (one metric in two batches, a value of 0, an empty
    /// attribute value, a long attribute value) and a received batch with its origin.
    fn batches() -> Vec<StampedBatch> {
        let load = MetricDesc::new(
            "system.cpu.load_average.1m",
            "{thread}",
            MetricKind::Gauge,
            "Load",
        );
        let calls = MetricDesc::new("calls", "{call}", MetricKind::Counter, "");
        let level = MetricDesc::new("level", "", MetricKind::UpDownCounter, "Level");
        let latency = MetricDesc::new("latency", "s", MetricKind::Histogram, "Latency");
        let long = "x".repeat(300);
        let mut stamped = Vec::new();
        for round in 0..2u64 {
            let mut b = BatchBuilder::new("src", "h");
            b.point(&load, attrs([("k", "v"), ("empty", "")]), round as f64)
                .point(&calls, vec![], 0.0)
                .point(&level, attrs([("long", long.as_str())]), -3.5)
                .histogram(
                    &latency,
                    attrs([("route", "/a")]),
                    Histogram {
                        count: 3 + round,
                        sum: 0.9,
                        bounds: vec![0.1, 0.5],
                        bucket_counts: vec![1, 1, 1 + round],
                        min: Some(0.05),
                        max: None,
                    },
                );
            let mut batch = b.build();
            batch.timestamp = t(1_000 + 2 * round);
            stamped.push(StampedBatch {
                batch: Arc::new(batch),
                starts: vec![None, Some(t(900)), Some(t(900)), Some(t(950))],
            });
        }
        let mut b = BatchBuilder::new("otlp:shop", "h");
        b.point(&load, attrs([("service", "shop")]), 7.0).histogram(
            &latency,
            vec![],
            Histogram {
                count: 0,
                sum: 0.0,
                bounds: Vec::new(),
                bucket_counts: vec![0],
                min: None,
                max: None,
            },
        );
        let mut batch = b.build();
        let string = |key: &str, value: &str| KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                        value.to_owned(),
                    ),
                ),
            }),
            ..Default::default()
        };
        batch.received = Some(Box::new(Received {
            origin: Arc::new(Origin {
                resource: Resource {
                    attributes: vec![string("service.name", "shop")],
                    ..Default::default()
                },
                scope: InstrumentationScope {
                    name: "shop-sdk".to_owned(),
                    version: "1.0".to_owned(),
                    ..Default::default()
                },
            }),
            values: vec![PointTime {
                start: None,
                time: t(990),
            }],
            histograms: vec![PointTime {
                start: Some(t(10)),
                time: t(991),
            }],
        }));
        stamped.push(StampedBatch {
            batch: Arc::new(batch),
            starts: Vec::new(),
        });
        stamped
    }

    #[test]
    fn decodes_to_the_request_prost_builds() {
        let resource = proto::resource(&[crate::config::ResourceAttribute {
            key: "host.name".to_owned(),
            value: "h".to_owned(),
            origin: crate::config::Origin::Default,
        }]);
        let batches = batches();
        let expected = proto::metrics_request(&resource, &batches);
        let encoded = metrics_request(&resource, &batches);
        let decoded = ExportMetricsServiceRequest::decode(encoded.as_slice())
            .expect("the encoded request decodes");
        assert_eq!(decoded, expected);
        assert_eq!(decoded.resource_metrics.len(), 2);
        // Byte for byte too: prost writes fields in the order this encoder does.
        assert_eq!(encoded, expected.encode_to_vec());
    }

    #[test]
    fn an_empty_request_still_names_the_resource() {
        let resource = proto::resource(&[]);
        let none: [&StampedBatch; 0] = [];
        let encoded = metrics_request(&resource, none);
        let decoded = ExportMetricsServiceRequest::decode(encoded.as_slice()).expect("decodes");
        assert_eq!(decoded, proto::metrics_request(&resource, none));
    }
}
