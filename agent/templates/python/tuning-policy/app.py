"""`{{name}}`: a vigil tuning policy in Python (world `tuning-policy` of `vigil:plugin`, see wit/).

When a series of `metric` is above `limit`, proposes running the batch's collector every
`interval_ms` (unless it already does). Nothing happens by itself: the agent's gate
(`[[tuning.allow]]`, rate limits, dry-run) decides. Settings, from the agent config's
`[plugins.settings.{{name}}]` (seen here as JSON by `host.config()`): `metric`, `limit` and
`interval_ms` (all required).

componentize-py wants the class named `WitWorld`; an error result is raised as
`componentize_py_types.Err("...")` (any other exception traps the plugin).
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.types import (
    Action_CollectorInterval,
    IntervalChange,
    PluginInfo,
    Proposal,
    SettingTarget,
)

# The series table last sent for each source (the host sends one only when it changed).
_tables = {}


def _settings():
    try:
        s = json.loads(host.config() or "{}")
    except ValueError as e:
        raise Err(f"settings are not JSON: {e}")
    if not isinstance(s.get("metric"), str):
        raise Err("setting metric is required (a metric name)")
    limit = s.get("limit")
    if isinstance(limit, bool) or not isinstance(limit, (int, float)):
        raise Err("setting limit is required (a number)")
    interval = s.get("interval_ms")
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 0:
        raise Err("setting interval_ms is required (milliseconds)")
    return s["metric"], float(limit), interval


class WitWorld(wit_world.WitWorld):
    def describe(self) -> PluginInfo:
        return PluginInfo(name="{{name}}", version="0.1.0", interests=[_settings()[0]])

    def propose(self, batch, firing, settings) -> list:
        metric, limit, interval_ms = _settings()
        if batch.table is not None:
            _tables[batch.source] = batch.table
        table = _tables.get(batch.source)
        if table is None:
            raise Err(f"no series table for source {batch.source}")
        wanted = next((i for i, m in enumerate(table.metrics) if m.name == metric), None)
        hot = any(s.metric == wanted and v > limit for s, v in zip(table.series, batch.values))
        already = any(
            c.target == SettingTarget.COLLECTOR
            and c.instance == batch.source
            and c.parameter == "interval-ms"
            and c.value == str(interval_ms)
            for c in settings
        )
        if not hot or already:
            return []
        return [
            Proposal(
                action=Action_CollectorInterval(
                    IntervalChange(collector=batch.source, interval_ms=interval_ms)
                ),
                reason=f"{metric} is above its limit",
                revert_if=None,
            )
        ]
