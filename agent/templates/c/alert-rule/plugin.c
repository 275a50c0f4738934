// `{{name}}`: a vigil alert rule in C (world `alert-rule` of `vigil:plugin`, see wit/).
//
// Reports every series of `metric` whose value is above `limit`. Settings, from the agent
// config's `[plugins.settings.{{name}}]` (seen here as JSON by `host.config()`):
// `metric` (required), `limit` (required), `severity` (info | warning | critical; default warning).
//
// Ownership rules of wit-bindgen's C bindings (build/gen/alert_rule.h):
// - an export owns its arguments: free them (alert_rule_batch_free) or keep them;
// - what an export returns is freed by the bindings after the host read it, with free() and
//   only when its length is > 0: make every non-empty returned string/list heap memory
//   (alert_rule_string_dup, malloc), never a string literal; an empty one must own nothing;
// - what an import returns (host config, state-get, a state-set error) is yours to free.
// An error result is `return false` with `*err` set (a heap string): never trap on bad input.

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alert_rule.h"

#define JSMN_STATIC
#define JSMN_STRICT
#include "jsmn.h"  // vendor/jsmn.h: a JSON tokenizer that allocates nothing (MIT)

static void *xrealloc(void *ptr, size_t size) {
  void *p = realloc(ptr, size ? size : 1);
  if (!p) __builtin_trap();  // out of memory: nothing sensible to do but trap
  return p;
}

// A heap copy of `len` bytes at `s`, as a bindings string (empty: owns nothing).
static alert_rule_string_t copy(const void *s, size_t len) {
  alert_rule_string_t out = {NULL, 0};
  if (len) {
    out.ptr = xrealloc(NULL, len);
    memcpy(out.ptr, s, len);
    out.len = len;
  }
  return out;
}

// Appends `len` bytes to the heap string `s`.
static void append(alert_rule_string_t *s, const void *data, size_t len) {
  if (!len) return;
  s->ptr = xrealloc(s->ptr, s->len + len);
  memcpy(s->ptr + s->len, data, len);
  s->len += len;
}

typedef struct {
  alert_rule_string_t metric;  // heap copy
  double limit;
  vigil_plugin_types_severity_t severity;
} settings_t;

static int key_is(const char *json, const jsmntok_t *t, const char *name) {
  size_t n = strlen(name);
  return t->type == JSMN_STRING && (size_t)(t->end - t->start) == n &&
         memcmp(json + t->start, name, n) == 0;
}

static int text_is(const char *json, const jsmntok_t *t, const char *text) {
  return key_is(json, t, text);
}

// Parses the settings; on failure returns 0 with `err` naming the setting at fault.
static int parse_settings(const char *json, size_t len, settings_t *s, alert_rule_string_t *err) {
  *s = (settings_t){{NULL, 0}, 0.0, VIGIL_PLUGIN_TYPES_SEVERITY_WARNING};
  if (len == 0) json = "{}", len = 2;
  jsmn_parser parser;
  jsmn_init(&parser);
  int count = jsmn_parse(&parser, json, len, NULL, 0);
  jsmntok_t *t = xrealloc(NULL, sizeof(jsmntok_t) * (count > 0 ? (size_t)count : 1));
  jsmn_init(&parser);
  if (count > 0) count = jsmn_parse(&parser, json, len, t, (unsigned)count);
  const char *fail = NULL;
  int metric = -1, limit = -1, severity = -1;
  if (count < 1 || t[0].type != JSMN_OBJECT) {
    fail = "settings must be a JSON object";
  } else {
    int i = 1;
    for (int member = 0; member < t[0].size && i + 1 < count; member++) {
      if (key_is(json, &t[i], "metric")) metric = i + 1;
      if (key_is(json, &t[i], "limit")) limit = i + 1;
      if (key_is(json, &t[i], "severity")) severity = i + 1;
      int end = t[i + 1].end;  // skip the value and what is nested in it
      for (i += 2; i < count && t[i].start < end; i++) {
      }
    }
  }
  // (A metric name with JSON escapes, e.g. \u00e9, is taken as written; decode them if you need.)
  if (!fail && (metric < 0 || t[metric].type != JSMN_STRING || t[metric].end == t[metric].start))
    fail = "setting metric is required (a metric name)";
  char number[64];
  size_t n = limit >= 0 ? (size_t)(t[limit].end - t[limit].start) : 0;
  char *rest = NULL;
  if (!fail && (limit < 0 || t[limit].type != JSMN_PRIMITIVE || n == 0 || n >= sizeof number))
    fail = "setting limit is required (a number)";
  if (!fail) {
    memcpy(number, json + t[limit].start, n);
    number[n] = '\0';
    s->limit = strtod(number, &rest);
    if (*rest != '\0' || !isfinite(s->limit) || (number[0] != '-' && (number[0] < '0' || number[0] > '9')))
      fail = "setting limit is required (a number)";
  }
  if (!fail && severity >= 0) {
    if (text_is(json, &t[severity], "info")) s->severity = VIGIL_PLUGIN_TYPES_SEVERITY_INFO;
    else if (text_is(json, &t[severity], "warning")) s->severity = VIGIL_PLUGIN_TYPES_SEVERITY_WARNING;
    else if (text_is(json, &t[severity], "critical")) s->severity = VIGIL_PLUGIN_TYPES_SEVERITY_CRITICAL;
    else fail = "setting severity must be info, warning or critical";
  }
  if (!fail) s->metric = copy(json + t[metric].start, (size_t)(t[metric].end - t[metric].start));
  free(t);
  if (fail) alert_rule_string_dup(err, fail);
  return !fail;
}

static int load_settings(settings_t *s, alert_rule_string_t *err) {
  alert_rule_string_t config;
  vigil_plugin_host_config(&config);  // ours to free
  int ok = parse_settings((const char *)config.ptr, config.len, s, err);
  alert_rule_string_free(&config);
  return ok;
}

// The series table last sent for each source: the host sends one only when it changed.
typedef struct {
  alert_rule_string_t source;
  vigil_plugin_types_series_table_t table;
} kept_t;
static kept_t *kept;
static size_t kept_len;

static int same(const alert_rule_string_t *a, const alert_rule_string_t *b) {
  return a->len == b->len && (a->len == 0 || memcmp(a->ptr, b->ptr, a->len) == 0);
}

static kept_t *table_of(const alert_rule_string_t *source) {
  for (size_t i = 0; i < kept_len; i++)
    if (same(&kept[i].source, source)) return &kept[i];
  return NULL;
}

bool exports_alert_rule_describe(alert_rule_plugin_info_t *ret, alert_rule_string_t *err) {
  settings_t s;
  if (!load_settings(&s, err)) return false;
  alert_rule_string_dup(&ret->name, "{{name}}");
  alert_rule_string_dup(&ret->version, "0.1.0");
  ret->interests.ptr = xrealloc(NULL, sizeof(alert_rule_string_t));
  ret->interests.ptr[0] = s.metric;  // handed over: freed by the bindings
  ret->interests.len = 1;
  return true;
}

bool exports_alert_rule_evaluate(alert_rule_batch_t *batch, alert_rule_list_finding_t *ret,
                                 alert_rule_string_t *err) {
  settings_t s;
  if (!load_settings(&s, err)) {
    alert_rule_batch_free(batch);
    return false;
  }
  if (batch->table.is_some) {  // keep the new table, free the one it replaces
    kept_t *k = table_of(&batch->source);
    if (k) {
      vigil_plugin_types_series_table_free(&k->table);
    } else {
      kept = xrealloc(kept, sizeof(kept_t) * (kept_len + 1));
      k = &kept[kept_len++];
      k->source = copy(batch->source.ptr, batch->source.len);
    }
    k->table = batch->table.val;
    batch->table.is_some = false;  // ours now: alert_rule_batch_free leaves it alone
  }
  kept_t *k = table_of(&batch->source);
  if (!k) {
    alert_rule_string_dup(err, "no series table for source ");
    append(err, batch->source.ptr, batch->source.len);
    alert_rule_string_free(&s.metric);
    alert_rule_batch_free(batch);
    return false;
  }
  size_t wanted = SIZE_MAX;
  for (size_t m = 0; m < k->table.metrics.len && wanted == SIZE_MAX; m++)
    if (same(&k->table.metrics.ptr[m].name, &s.metric)) wanted = m;

  *ret = (alert_rule_list_finding_t){NULL, 0};
  size_t n = k->table.series.len < batch->values.len ? k->table.series.len : batch->values.len;
  for (size_t i = 0; i < n; i++) {
    const vigil_plugin_types_series_t *series = &k->table.series.ptr[i];
    double value = batch->values.ptr[i];
    if (series->metric != wanted || !(value > s.limit)) continue;
    alert_rule_finding_t f = {0};
    alert_rule_string_dup(&f.rule, "{{name}}");
    for (size_t a = 0; a < series->attributes.len; a++) {  // key: k=v,k=v in table order
      const vigil_plugin_types_attribute_t *attr = &series->attributes.ptr[a];
      if (a) append(&f.key, ",", 1);
      append(&f.key, attr->key.ptr, attr->key.len);
      append(&f.key, "=", 1);
      append(&f.key, attr->value.ptr, attr->value.len);
    }
    f.severity = s.severity;
    f.summary = copy(s.metric.ptr, s.metric.len);
    append(&f.summary, " is above its limit", strlen(" is above its limit"));
    f.value = (alert_rule_option_f64_t){true, value};
    f.for_ms = 0;
    ret->ptr = xrealloc(ret->ptr, sizeof(alert_rule_finding_t) * (ret->len + 1));
    ret->ptr[ret->len++] = f;
  }
  alert_rule_string_free(&s.metric);
  alert_rule_batch_free(batch);
  return true;
}
