// `{{name}}`: a vigil alert rule in JavaScript (world `alert-rule` of `vigil:plugin`, see wit/).
//
// Reports every series of `metric` whose value is above `limit`. Settings, from the agent
// config's `[plugins.settings.{{name}}]` (seen here as JSON by `config()`):
// `metric` (required), `limit` (required), `severity` (info | warning | critical; default warning).
//
// How componentize-js maps the contract: records have camelCase fields (`forMs`, `tableId`),
// u64 is a BigInt (`forMs: 0n`), an `option` is the value or `undefined`, enums are strings,
// an error result is a thrown string (a thrown `Error` traps the plugin).
import { config } from 'vigil:plugin/host@0.4.0';

// The series table last sent for each source (the host sends one only when it changed).
const tables = new Map();

function settings() {
  let s;
  try {
    s = JSON.parse(config() || '{}');
  } catch (e) {
    throw `settings are not JSON: ${e}`;
  }
  if (typeof s.metric !== 'string') throw 'setting metric is required (a metric name)';
  if (typeof s.limit !== 'number') throw 'setting limit is required (a number)';
  const severity = s.severity ?? 'warning';
  if (!['info', 'warning', 'critical'].includes(severity)) {
    throw 'setting severity must be info, warning or critical';
  }
  return { metric: s.metric, limit: s.limit, severity };
}

export function describe() {
  return { name: '{{name}}', version: '0.1.0', interests: [settings().metric] };
}

export function evaluate(batch) {
  const s = settings();
  if (batch.table !== undefined) tables.set(batch.source, batch.table);
  const table = tables.get(batch.source);
  if (table === undefined) throw `no series table for source ${batch.source}`;
  const wanted = table.metrics.findIndex((m) => m.name === s.metric);
  const findings = [];
  batch.values.forEach((value, i) => {
    const series = table.series[i];
    if (series === undefined || series.metric !== wanted || !(value > s.limit)) return;
    findings.push({
      rule: '{{name}}',
      key: series.attributes.map((a) => `${a.key}=${a.value}`).join(','),
      severity: s.severity,
      summary: `${s.metric} is above its limit`,
      value,
      labels: [],
      forMs: 0n,
    });
  });
  return findings;
}
