"""`py-threshold`: the threshold alert rule written in Python (componentize-py).

An interpreter-sized component (~18 MB: CPython and its standard library) that the
tests use to show the agent compiles plugins outside its own memory. It reads the same
settings as the Rust `threshold` plugin (`[plugins.settings.NAME]`, seen as JSON):

    [[plugins.settings.NAME.rules]]
    name = "high-memory"
    metric = "system.memory.utilization"
    op = ">="                # one of > >= < <= == !=
    value = 0.9
    severity = "warning"     # info | warning | critical
    match = { "system.memory.state" = "used" }

It builds against both contracts: 0.1.0 (each batch carries its series table) and 0.2.0
(the table is sent only when it changed; the plugin keeps the last one per source).
"""

import json
import operator

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.types import Finding, PluginInfo, Severity

OPS = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
SEVERITIES = {
    "info": Severity.INFO,
    "warning": Severity.WARNING,
    "critical": Severity.CRITICAL,
}

_rules = None
# 0.2.0: the series table last sent for each source, as (id, metrics, series).
_tables = {}


def _load_rules():
    global _rules
    if _rules is None:
        try:
            settings = json.loads(host.config() or "{}")
        except ValueError as e:
            raise Err(f"settings are not valid JSON: {e}")
        rules = []
        for i, rule in enumerate(settings.get("rules", [])):
            op = rule.get("op", ">")
            if op not in OPS:
                raise Err(f"rules[{i}].op {op!r} is not one of {' '.join(OPS)}")
            severity = rule.get("severity", "warning")
            if severity not in SEVERITIES:
                raise Err(f"rules[{i}].severity {severity!r} is not info, warning or critical")
            if not rule.get("name") or not rule.get("metric"):
                raise Err(f"rules[{i}] needs a name and a metric")
            rules.append(
                {
                    "name": rule["name"],
                    "metric": rule["metric"],
                    "op": OPS[op],
                    "op_text": op,
                    "value": float(rule.get("value", 0.0)),
                    "severity": SEVERITIES[severity],
                    "match": dict(rule.get("match", {})),
                }
            )
        _rules = rules
    return _rules


def _table_of(batch):
    """The metrics and series `batch.values` belong to."""
    if hasattr(batch, "metrics"):  # 0.1.0: every batch carries its table
        return batch.metrics, batch.series
    if batch.table is not None:
        _tables[batch.source] = (batch.table.id, batch.table.metrics, batch.table.series)
    kept = _tables.get(batch.source)
    if kept is None or kept[0] != batch.table_id:
        raise Err(f"series table {batch.table_id} of source {batch.source!r} was never sent")
    return kept[1], kept[2]


class WitWorld(wit_world.WitWorld):
    def describe(self) -> PluginInfo:
        rules = _load_rules()
        interests = sorted({rule["metric"] for rule in rules})
        return PluginInfo(name="py-threshold", version="0.1.0", interests=interests)

    def evaluate(self, batch) -> list:
        rules = _load_rules()
        metrics, series = _table_of(batch)
        index = {metric.name: i for i, metric in enumerate(metrics)}
        findings = []
        for rule in rules:
            wanted = index.get(rule["metric"])
            if wanted is None:
                continue
            for one, value in zip(series, batch.values):
                if one.metric != wanted:
                    continue
                attributes = {a.key: a.value for a in one.attributes}
                if any(attributes.get(k) != v for k, v in rule["match"].items()):
                    continue
                if not rule["op"](value, rule["value"]):
                    continue
                key = ",".join(f"{k}={v}" for k, v in sorted(attributes.items()))
                findings.append(
                    Finding(
                        rule=rule["name"],
                        key=key,
                        severity=rule["severity"],
                        summary=f"{rule['metric']} is {value:g} ({rule['op_text']} {rule['value']:g})",
                        value=value,
                        labels=[],
                        for_ms=0,
                    )
                )
        return findings
