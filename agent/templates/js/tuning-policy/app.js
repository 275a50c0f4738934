// `{{name}}`: a vigil tuning policy in JavaScript (world `tuning-policy` of `vigil:plugin`, see wit/).
//
// When a series of `metric` is above `limit`, proposes running the batch's collector every
// `interval_ms` (unless it already does). Nothing happens by itself: the agent's gate
// (`[[tuning.allow]]`, rate limits, dry-run) decides. Settings, from the agent config's
// `[plugins.settings.{{name}}]` (seen here as JSON by `config()`): `metric`, `limit` and
// `interval_ms` (all required).
//
// How componentize-js maps the contract: records have camelCase fields (`intervalMs`,
// `revertIf`), u64 is a BigInt, a variant is `{ tag, val }`, enums are strings, an `option`
// is the value or `undefined`, an error result is a thrown string (an `Error` traps).
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
  if (!Number.isInteger(s.interval_ms) || s.interval_ms < 0) {
    throw 'setting interval_ms is required (milliseconds)';
  }
  return s;
}

export function describe() {
  return { name: '{{name}}', version: '0.1.0', interests: [settings().metric] };
}

export function propose(batch, firing, current) {
  const s = settings();
  if (batch.table !== undefined) tables.set(batch.source, batch.table);
  const table = tables.get(batch.source);
  if (table === undefined) throw `no series table for source ${batch.source}`;
  const wanted = table.metrics.findIndex((m) => m.name === s.metric);
  const hot = batch.values.some((v, i) => table.series[i]?.metric === wanted && v > s.limit);
  const already = current.some(
    (c) =>
      c.target === 'collector' &&
      c.instance === batch.source &&
      c.parameter === 'interval-ms' &&
      c.value === String(s.interval_ms),
  );
  if (!hot || already) return [];
  return [
    {
      action: {
        tag: 'collector-interval',
        val: { collector: batch.source, intervalMs: BigInt(s.interval_ms) },
      },
      reason: `${s.metric} is above its limit`,
      revertIf: undefined,
    },
  ];
}
