// `{{name}}`: a vigil tuning policy in C (world `tuning-policy` of `vigil:plugin`, see wit/).
//
// When a series of `metric` is above `limit`, proposes running the batch's collector every
// `interval_ms` (unless it already does). Nothing happens by itself: the agent's gate
// (`[[tuning.allow]]`, rate limits, dry-run) decides. Settings, from the agent config's
// `[plugins.settings.{{name}}]` (seen here as JSON by `host.config()`): `metric`, `limit` and
// `interval_ms` (all required).
//
// Ownership rules of wit-bindgen's C bindings (build/gen/tuning_policy.h):
// - an export owns its arguments: free them (..._batch_free, ..._list_firing_alert_free,
//   ..._list_current_setting_free) or keep them;
// - what an export returns is freed by the bindings after the host read it, with free() and
//   only when its length is > 0: make every non-empty returned string/list heap memory
//   (tuning_policy_string_dup, malloc), never a string literal; an empty one must own nothing;
// - what an import returns (host config, state-get, a state-set error) is yours to free.
// An error result is `return false` with `*err` set (a heap string): never trap on bad input.

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tuning_policy.h"

#define JSMN_STATIC
#define JSMN_STRICT
#include "jsmn.h"  // vendor/jsmn.h: a JSON tokenizer that allocates nothing (MIT)

static void *xrealloc(void *ptr, size_t size) {
  void *p = realloc(ptr, size ? size : 1);
  if (!p) __builtin_trap();  // out of memory: nothing sensible to do but trap
  return p;
}

// A heap copy of `len` bytes at `s`, as a bindings string (empty: owns nothing).
static tuning_policy_string_t copy(const void *s, size_t len) {
  tuning_policy_string_t out = {NULL, 0};
  if (len) {
    out.ptr = xrealloc(NULL, len);
    memcpy(out.ptr, s, len);
    out.len = len;
  }
  return out;
}

static void append(tuning_policy_string_t *s, const void *data, size_t len) {
  if (!len) return;
  s->ptr = xrealloc(s->ptr, s->len + len);
  memcpy(s->ptr + s->len, data, len);
  s->len += len;
}

typedef struct {
  tuning_policy_string_t metric;  // heap copy
  double limit;
  uint64_t interval_ms;
} settings_t;

static int key_is(const char *json, const jsmntok_t *t, const char *name) {
  size_t n = strlen(name);
  return t->type == JSMN_STRING && (size_t)(t->end - t->start) == n &&
         memcmp(json + t->start, name, n) == 0;
}

// Number token `t` as a finite double; 0 when it is not one.
static int number(const char *json, const jsmntok_t *t, double *out) {
  char text[64];
  size_t n = (size_t)(t->end - t->start);
  if (t->type != JSMN_PRIMITIVE || n == 0 || n >= sizeof text) return 0;
  memcpy(text, json + t->start, n);
  text[n] = '\0';
  if (text[0] != '-' && (text[0] < '0' || text[0] > '9')) return 0;  // true, false, null
  char *rest;
  *out = strtod(text, &rest);
  return *rest == '\0' && isfinite(*out);
}

// Parses the settings; on failure returns 0 with `err` naming the setting at fault.
static int parse_settings(const char *json, size_t len, settings_t *s, tuning_policy_string_t *err) {
  *s = (settings_t){{NULL, 0}, 0.0, 0};
  if (len == 0) json = "{}", len = 2;
  jsmn_parser parser;
  jsmn_init(&parser);
  int count = jsmn_parse(&parser, json, len, NULL, 0);
  jsmntok_t *t = xrealloc(NULL, sizeof(jsmntok_t) * (count > 0 ? (size_t)count : 1));
  jsmn_init(&parser);
  if (count > 0) count = jsmn_parse(&parser, json, len, t, (unsigned)count);
  const char *fail = NULL;
  int metric = -1, limit = -1, interval = -1;
  if (count < 1 || t[0].type != JSMN_OBJECT) {
    fail = "settings must be a JSON object";
  } else {
    int i = 1;
    for (int member = 0; member < t[0].size && i + 1 < count; member++) {
      if (key_is(json, &t[i], "metric")) metric = i + 1;
      if (key_is(json, &t[i], "limit")) limit = i + 1;
      if (key_is(json, &t[i], "interval_ms")) interval = i + 1;
      int end = t[i + 1].end;  // skip the value and what is nested in it
      for (i += 2; i < count && t[i].start < end; i++) {
      }
    }
  }
  double ms = 0.0;
  if (!fail && (metric < 0 || t[metric].type != JSMN_STRING || t[metric].end == t[metric].start))
    fail = "setting metric is required (a metric name)";
  else if (!fail && (limit < 0 || !number(json, &t[limit], &s->limit)))
    fail = "setting limit is required (a number)";
  else if (!fail && (interval < 0 || !number(json, &t[interval], &ms) || ms < 0 || ms != trunc(ms) ||
                     ms > 1e15))
    fail = "setting interval_ms is required (milliseconds)";
  if (!fail) {
    s->interval_ms = (uint64_t)ms;
    s->metric = copy(json + t[metric].start, (size_t)(t[metric].end - t[metric].start));
  }
  free(t);
  if (fail) tuning_policy_string_dup(err, fail);
  return !fail;
}

static int load_settings(settings_t *s, tuning_policy_string_t *err) {
  tuning_policy_string_t config;
  vigil_plugin_host_config(&config);  // ours to free
  int ok = parse_settings((const char *)config.ptr, config.len, s, err);
  tuning_policy_string_free(&config);
  return ok;
}

// The series table last sent for each source: the host sends one only when it changed.
typedef struct {
  tuning_policy_string_t source;
  vigil_plugin_types_series_table_t table;
} kept_t;
static kept_t *kept;
static size_t kept_len;

static int same(const tuning_policy_string_t *a, const void *ptr, size_t len) {
  return a->len == len && (len == 0 || memcmp(a->ptr, ptr, len) == 0);
}

static kept_t *table_of(const tuning_policy_string_t *source) {
  for (size_t i = 0; i < kept_len; i++)
    if (same(&kept[i].source, source->ptr, source->len)) return &kept[i];
  return NULL;
}

bool exports_tuning_policy_describe(tuning_policy_plugin_info_t *ret, tuning_policy_string_t *err) {
  settings_t s;
  if (!load_settings(&s, err)) return false;
  tuning_policy_string_dup(&ret->name, "{{name}}");
  tuning_policy_string_dup(&ret->version, "0.1.0");
  ret->interests.ptr = xrealloc(NULL, sizeof(tuning_policy_string_t));
  ret->interests.ptr[0] = s.metric;  // handed over: freed by the bindings
  ret->interests.len = 1;
  return true;
}

bool exports_tuning_policy_propose(tuning_policy_batch_t *batch,
                                   tuning_policy_list_firing_alert_t *firing,
                                   tuning_policy_list_current_setting_t *current,
                                   tuning_policy_list_proposal_t *ret,
                                   tuning_policy_string_t *err) {
  settings_t s = {{NULL, 0}, 0.0, 0};
  bool ok = false;
  *ret = (tuning_policy_list_proposal_t){NULL, 0};
  if (!load_settings(&s, err)) goto out;
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
    batch->table.is_some = false;  // ours now: the batch free below leaves it alone
  }
  kept_t *k = table_of(&batch->source);
  if (!k) {
    tuning_policy_string_dup(err, "no series table for source ");
    append(err, batch->source.ptr, batch->source.len);
    goto out;
  }
  size_t wanted = SIZE_MAX;
  for (size_t m = 0; m < k->table.metrics.len && wanted == SIZE_MAX; m++)
    if (same(&k->table.metrics.ptr[m].name, s.metric.ptr, s.metric.len)) wanted = m;
  bool hot = false;
  size_t n = k->table.series.len < batch->values.len ? k->table.series.len : batch->values.len;
  for (size_t i = 0; i < n && !hot; i++)
    hot = k->table.series.ptr[i].metric == wanted && batch->values.ptr[i] > s.limit;

  char digits[24];  // interval_ms in decimal, as the host reports the current value
  size_t d = sizeof digits;
  uint64_t v = s.interval_ms;
  do digits[--d] = (char)('0' + v % 10); while ((v /= 10) != 0);
  bool already = false;
  for (size_t i = 0; i < current->len && !already; i++) {
    const vigil_plugin_types_current_setting_t *c = &current->ptr[i];
    already = c->target == VIGIL_PLUGIN_TYPES_SETTING_TARGET_COLLECTOR &&
              same(&c->instance, batch->source.ptr, batch->source.len) &&
              same(&c->parameter, "interval-ms", strlen("interval-ms")) &&
              same(&c->value, digits + d, sizeof digits - d);
  }
  if (hot && !already) {
    vigil_plugin_types_proposal_t p = {0};
    p.action.tag = VIGIL_PLUGIN_TYPES_ACTION_COLLECTOR_INTERVAL;
    p.action.val.collector_interval.collector = copy(batch->source.ptr, batch->source.len);
    p.action.val.collector_interval.interval_ms = s.interval_ms;
    p.reason = copy(s.metric.ptr, s.metric.len);
    append(&p.reason, " is above its limit", strlen(" is above its limit"));
    p.revert_if.is_some = false;
    ret->ptr = xrealloc(NULL, sizeof p);
    ret->ptr[0] = p;
    ret->len = 1;
  }
  ok = true;
out:
  tuning_policy_string_free(&s.metric);
  tuning_policy_batch_free(batch);
  tuning_policy_list_firing_alert_free(firing);
  tuning_policy_list_current_setting_free(current);
  return ok;
}
