"""An application instrumented with the official OpenTelemetry Python SDK, driven by a test.

It records request durations (seconds) into the histogram `http.server.request.duration`
and exports them over OTLP, gRPC or HTTP/protobuf, to the endpoint given on the command
line. Commands come on stdin, one JSON object a line:

  {"record": [0.12, 0.3], "attributes": {"http.route": "/checkout"}}   record durations
  {"flush": true}                                                     export now

After each export it prints one JSON line on stdout: what the SDK exported
(`MetricsData.to_json()`) and the exporter's result (SUCCESS or FAILURE).

usage: otel_sender.py grpc|http ENDPOINT SERVICE_NAME [TOKEN]
"""

import json
import sys

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]


class Recording(MetricExporter):
    """Exports through `inner` and prints what was exported."""

    def __init__(self, inner):
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        result = self.inner.export(metrics_data, timeout_millis=timeout_millis)
        print(
            json.dumps(
                {
                    "exported": json.loads(metrics_data.to_json()),
                    "result": "SUCCESS" if result == MetricExportResult.SUCCESS else "FAILURE",
                }
            ),
            flush=True,
        )
        return result

    def force_flush(self, timeout_millis=10_000):
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis=30_000, **kwargs):
        self.inner.shutdown(timeout_millis=timeout_millis)


def main():
    protocol, endpoint, service = sys.argv[1], sys.argv[2], sys.argv[3]
    token = sys.argv[4] if len(sys.argv) > 4 else None
    headers = {"authorization": f"Bearer {token}"} if token else None
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        inner = OTLPMetricExporter(endpoint=endpoint, insecure=True, headers=headers, timeout=5)
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        inner = OTLPMetricExporter(endpoint=endpoint, headers=headers, timeout=5)
    reader = PeriodicExportingMetricReader(Recording(inner), export_interval_millis=3_600_000)
    resource = Resource.create(
        {"service.name": service, "service.version": "1.2.3", "deployment.environment.name": "test"}
    )
    provider = MeterProvider(
        resource=resource,
        metric_readers=[reader],
        views=[
            View(
                instrument_name="http.server.request.duration",
                aggregation=ExplicitBucketHistogramAggregation(boundaries=BOUNDS),
            )
        ],
    )
    meter = provider.get_meter("shop.http", "0.1.0")
    durations = meter.create_histogram(
        "http.server.request.duration", unit="s", description="Duration of HTTP server requests."
    )
    for line in sys.stdin:
        command = json.loads(line)
        for value in command.get("record", []):
            durations.record(value, attributes=command.get("attributes", {}))
        if command.get("flush"):
            provider.force_flush()
    provider.shutdown()


if __name__ == "__main__":
    main()
