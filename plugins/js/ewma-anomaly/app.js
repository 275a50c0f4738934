// `ewma-anomaly` in JavaScript (componentize-js): flags a value far from its series'
// exponentially weighted moving average. The same rule as the Rust reference
// (plugins/ewma-anomaly); tests/all/e2e_languages.rs checks they agree finding for finding.
//
// Settings (JSON): metric (required), alpha (0.3), k (3.0), warmup (5), severity
// ("warning"), for_ms (0). Per series the host's key/value state keeps 24 bytes under
// `ewma/SOURCE/KEY`: mean, variance and count as little-endian f64.
//
// Bindings as componentize-js lays them out: records have camelCase fields, u64 is a
// BigInt, an `option` is the value or `undefined`, `list<u8>` is a Uint8Array, an error
// result is a thrown string (a thrown `Error` becomes a trap).
import { config, stateGet, stateSet } from 'vigil:plugin/host@0.4.0';

const SEVERITIES = ['info', 'warning', 'critical'];

// The series table last sent for each source.
const tables = new Map();

function number(settings, name, fallback) {
  const value = name in settings ? settings[name] : fallback;
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw `setting ${name} must be a number`;
  }
  return value;
}

// The settings from `config()`; a thrown string names the setting at fault.
function readSettings() {
  let settings;
  try {
    settings = JSON.parse(config() || '{}');
  } catch (e) {
    throw `settings are not valid JSON: ${e}`;
  }
  if (settings === null || typeof settings !== 'object' || Array.isArray(settings)) {
    throw 'settings must be a JSON object';
  }
  const metric = settings.metric;
  if (typeof metric !== 'string' || metric === '') {
    throw 'setting metric is required (a metric name)';
  }
  const alpha = number(settings, 'alpha', 0.3);
  if (!(alpha > 0 && alpha <= 1)) throw 'setting alpha must be > 0 and <= 1';
  const k = number(settings, 'k', 3.0);
  if (!(k > 0)) throw 'setting k must be > 0';
  const warmup = number(settings, 'warmup', 5);
  if (!(warmup >= 1 && Number.isInteger(warmup))) throw 'setting warmup must be an integer >= 1';
  const severity = 'severity' in settings ? settings.severity : 'warning';
  if (!SEVERITIES.includes(severity)) throw 'setting severity must be info, warning or critical';
  const forMs = number(settings, 'for_ms', 0);
  if (!(forMs >= 0 && Number.isInteger(forMs))) throw 'setting for_ms must be an integer >= 0';
  return { metric, alpha, k, warmup, severity, forMs: BigInt(forMs) };
}

function load(bytes) {
  if (bytes === undefined || bytes.length !== 24) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, 24);
  return [view.getFloat64(0, true), view.getFloat64(8, true), view.getFloat64(16, true)];
}

function save(key, mean, variance, count) {
  const bytes = new Uint8Array(24);
  const view = new DataView(bytes.buffer);
  view.setFloat64(0, mean, true);
  view.setFloat64(8, variance, true);
  view.setFloat64(16, count, true);
  try {
    stateSet(key, bytes);
  } catch (e) {
    throw `cannot save state ${key}: ${e && e.payload !== undefined ? e.payload : e}`;
  }
}

export function describe() {
  const { metric } = readSettings();
  return { name: 'ewma-anomaly', version: '0.1.0', interests: [metric] };
}

export function evaluate(batch) {
  const s = readSettings();
  if (batch.table !== undefined) tables.set(batch.source, batch.table);
  const table = tables.get(batch.source);
  if (table === undefined) throw `no series table for source ${batch.source}`;
  const wanted = table.metrics.findIndex((m) => m.name === s.metric);
  if (wanted < 0) return [];
  const findings = [];
  const n = Math.min(table.series.length, batch.values.length);
  for (let i = 0; i < n; i++) {
    const series = table.series[i];
    const x = batch.values[i];
    if (series.metric !== wanted || !Number.isFinite(x)) continue;
    const key = series.attributes.map((a) => `${a.key}=${a.value}`).join(',');
    const stateKey = `ewma/${batch.source}/${key}`;
    const saved = load(stateGet(stateKey));
    let anomalous = false;
    let mean;
    let variance;
    let count;
    if (saved === undefined) {
      [mean, variance, count] = [x, 0, 1];
    } else {
      [mean, variance, count] = saved;
      const d = x - mean;
      anomalous = count >= s.warmup && d * d > s.k * s.k * variance;
      mean = mean + s.alpha * d;
      variance = (1 - s.alpha) * (variance + s.alpha * d * d);
      count = count + 1;
    }
    save(stateKey, mean, variance, count);
    if (anomalous) {
      findings.push({
        rule: 'ewma-anomaly',
        key,
        severity: s.severity,
        summary: `${s.metric} is outside its usual range`,
        value: x,
        labels: [],
        forMs: s.forMs,
      });
    }
  }
  return findings;
}
