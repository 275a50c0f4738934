"""`{{name}}`: a vigil alert rule in Python (world `alert-rule` of `vigil:plugin`, see wit/).

Reports every series of `metric` whose value is above `limit`. Settings, from the agent
config's `[plugins.settings.{{name}}]` (seen here as JSON by `host.config()`):
`metric` (required), `limit` (required), `severity` (info | warning | critical; default warning).

componentize-py wants the class named `WitWorld`; an error result is raised as
`componentize_py_types.Err("...")` (any other exception traps the plugin).
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.types import Finding, PluginInfo, Severity

SEVERITIES = {"info": Severity.INFO, "warning": Severity.WARNING, "critical": Severity.CRITICAL}

# The series table last sent for each source (the host sends one only when it changed).
_tables = {}


def _settings():
    try:
        settings = json.loads(host.config() or "{}")
    except ValueError as e:
        raise Err(f"settings are not JSON: {e}")
    metric = settings.get("metric")
    if not isinstance(metric, str):
        raise Err("setting metric is required (a metric name)")
    limit = settings.get("limit")
    if isinstance(limit, bool) or not isinstance(limit, (int, float)):
        raise Err("setting limit is required (a number)")
    severity = settings.get("severity", "warning")
    if severity not in SEVERITIES:
        raise Err("setting severity must be info, warning or critical")
    return metric, float(limit), SEVERITIES[severity]


class WitWorld(wit_world.WitWorld):
    def describe(self) -> PluginInfo:
        metric, _, _ = _settings()
        return PluginInfo(name="{{name}}", version="0.1.0", interests=[metric])

    def evaluate(self, batch) -> list:
        metric, limit, severity = _settings()
        if batch.table is not None:
            _tables[batch.source] = batch.table
        table = _tables.get(batch.source)
        if table is None:
            raise Err(f"no series table for source {batch.source}")
        wanted = next((i for i, m in enumerate(table.metrics) if m.name == metric), None)
        findings = []
        for series, value in zip(table.series, batch.values):
            if series.metric != wanted or not value > limit:
                continue
            key = ",".join(f"{a.key}={a.value}" for a in series.attributes)
            findings.append(
                Finding(
                    rule="{{name}}",
                    key=key,
                    severity=severity,
                    summary=f"{metric} is above its limit",
                    value=value,
                    labels=[],
                    for_ms=0,
                )
            )
        return findings
