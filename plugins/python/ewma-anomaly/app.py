"""`ewma-anomaly` in Python (componentize-py): flags a value far from its series'
exponentially weighted moving average. The same rule as the Rust reference
(plugins/ewma-anomaly); tests/all/e2e_languages.rs checks they agree finding for finding.

Settings (JSON): metric (required), alpha (0.3), k (3.0), warmup (5), severity
("warning"), for_ms (0). Per series the host's key/value state keeps 24 bytes under
`ewma/SOURCE/KEY`: mean, variance and count as little-endian f64.
"""

import json
import math
import struct

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.types import Finding, PluginInfo, Severity

SEVERITIES = {
    "info": Severity.INFO,
    "warning": Severity.WARNING,
    "critical": Severity.CRITICAL,
}

# The series table last sent for each source.
_tables = {}


def _number(settings, name, default):
    value = settings.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Err(f"setting {name} must be a number")
    return float(value)


def _settings():
    """The settings from `host.config()`; an `Err` names the setting at fault."""
    try:
        settings = json.loads(host.config() or "{}")
    except ValueError as e:
        raise Err(f"settings are not valid JSON: {e}")
    if not isinstance(settings, dict):
        raise Err("settings must be a JSON object")
    metric = settings.get("metric")
    if not isinstance(metric, str) or not metric:
        raise Err("setting metric is required (a metric name)")
    alpha = _number(settings, "alpha", 0.3)
    if not (0.0 < alpha <= 1.0):
        raise Err("setting alpha must be > 0 and <= 1")
    k = _number(settings, "k", 3.0)
    if not k > 0.0:
        raise Err("setting k must be > 0")
    warmup = _number(settings, "warmup", 5)
    if not (warmup >= 1.0 and warmup == math.floor(warmup)):
        raise Err("setting warmup must be an integer >= 1")
    severity = settings.get("severity", "warning")
    if severity not in SEVERITIES:
        raise Err("setting severity must be info, warning or critical")
    for_ms = _number(settings, "for_ms", 0)
    if not (for_ms >= 0.0 and for_ms == math.floor(for_ms) and for_ms <= 2.0**64 - 1):
        raise Err("setting for_ms must be an integer >= 0")
    return metric, alpha, k, warmup, SEVERITIES[severity], int(for_ms)


class WitWorld(wit_world.WitWorld):
    def describe(self) -> PluginInfo:
        metric = _settings()[0]
        return PluginInfo(name="ewma-anomaly", version="0.1.0", interests=[metric])

    def evaluate(self, batch) -> list:
        metric, alpha, k, warmup, severity, for_ms = _settings()
        if batch.table is not None:
            _tables[batch.source] = batch.table
        table = _tables.get(batch.source)
        if table is None:
            raise Err(f"no series table for source {batch.source}")
        wanted = next((i for i, m in enumerate(table.metrics) if m.name == metric), None)
        if wanted is None:
            return []
        findings = []
        for series, x in zip(table.series, batch.values):
            if series.metric != wanted or not math.isfinite(x):
                continue
            key = ",".join(f"{a.key}={a.value}" for a in series.attributes)
            state_key = f"ewma/{batch.source}/{key}"
            saved = host.state_get(state_key)
            anomalous = False
            if saved is None or len(saved) != 24:
                mean, var, count = x, 0.0, 1.0
            else:
                mean, var, count = struct.unpack("<3d", bytes(saved))
                d = x - mean
                anomalous = count >= warmup and d * d > k * k * var
                mean = mean + alpha * d
                var = (1.0 - alpha) * (var + alpha * d * d)
                count = count + 1.0
            host.state_set(state_key, struct.pack("<3d", mean, var, count))
            if anomalous:
                findings.append(
                    Finding(
                        rule="ewma-anomaly",
                        key=key,
                        severity=severity,
                        summary=f"{metric} is outside its usual range",
                        value=x,
                        labels=[],
                        for_ms=for_ms,
                    )
                )
        return findings
