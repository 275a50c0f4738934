// `c-ewma-anomaly`: the ewma-anomaly alert rule written in C (built by plugins/c/build.sh).
//
// Flags a value far from its series' exponentially weighted moving average; the same rule,
// byte for byte, as the Rust reference plugins/ewma-anomaly. Settings (`host.config()`, JSON):
//   metric   string, required
//   alpha    number, 0 < alpha <= 1          (default 0.3)
//   k        number, > 0                     (default 3.0)
//   warmup   integer >= 1                    (default 5)
//   severity "info" | "warning" | "critical" (default "warning")
//   for_ms   integer >= 0                    (default 0)
// Per series the host's key/value state keeps 24 bytes under `ewma/SOURCE/KEY`: mean,
// variance and count as little-endian f64 (wasm32 is little-endian: stored as they lie).
//
// Ownership (wit-bindgen's C bindings): an exported function owns its arguments and must free
// them (or keep them: the series table is kept per source); what it returns is freed by the
// bindings after the host read it, with free() and only when its length is > 0, so every
// non-empty returned string or list is heap memory and an empty one owns none. What an import
// returns (config, state-get, a state-set error) belongs to the caller and is freed here.
// Settings are parsed with jsmn (plugins/c/vendor/jsmn.h, MIT), a tokenizer that allocates
// nothing itself.

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alert_rule.h"

#define JSMN_STATIC
#define JSMN_STRICT
#include "jsmn.h"

// ---- memory -------------------------------------------------------------------------------

// Allocation failure has no sensible answer in a plugin: trap (the host counts it).
static void *xrealloc(void *ptr, size_t size) {
  void *p = realloc(ptr, size ? size : 1);
  if (!p) __builtin_trap();
  return p;
}

// A growable byte buffer, handed over as a bindings string.
typedef struct {
  char *ptr;
  size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const void *data, size_t len) {
  if (b->len + len > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 64;
    while (cap < b->len + len) cap *= 2;
    b->ptr = xrealloc(b->ptr, cap);
    b->cap = cap;
  }
  if (len) memcpy(b->ptr + b->len, data, len);
  b->len += len;
}

static void buf_str(buf_t *b, const char *s) { buf_add(b, s, strlen(s)); }

// Moves the buffer into a bindings string (an empty one owns no memory).
static alert_rule_string_t buf_take(buf_t *b) {
  alert_rule_string_t s = {(uint8_t *)b->ptr, b->len};
  if (b->len == 0) {
    free(b->ptr);
    s.ptr = NULL;
  }
  *b = (buf_t){0};
  return s;
}

static void set_error(alert_rule_string_t *err, const char *message) {
  alert_rule_string_dup(err, message);
}

// ---- settings -------------------------------------------------------------------------------

typedef struct {
  char *metric;  // NUL-terminated, owned
  size_t metric_len;
  double alpha, k, warmup;
  vigil_plugin_types_severity_t severity;
  uint64_t for_ms;
} settings_t;

static void settings_free(settings_t *s) {
  free(s->metric);
  s->metric = NULL;
}

static int token_is(const char *json, const jsmntok_t *t, const char *name) {
  size_t n = strlen(name);
  return t->type == JSMN_STRING && (size_t)(t->end - t->start) == n &&
         memcmp(json + t->start, name, n) == 0;
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int read_hex4(const char *p, const char *end, unsigned *out) {
  if (end - p < 4) return 0;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    int d = hex_digit(p[i]);
    if (d < 0) return 0;
    v = v * 16 + (unsigned)d;
  }
  *out = v;
  return 1;
}

static void put_utf8(buf_t *b, unsigned cp) {
  unsigned char u[4];
  size_t n;
  if (cp < 0x80) {
    u[0] = (unsigned char)cp;
    n = 1;
  } else if (cp < 0x800) {
    u[0] = (unsigned char)(0xC0 | (cp >> 6));
    u[1] = (unsigned char)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    u[0] = (unsigned char)(0xE0 | (cp >> 12));
    u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (unsigned char)(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    u[0] = (unsigned char)(0xF0 | (cp >> 18));
    u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (unsigned char)(0x80 | (cp & 0x3F));
    n = 4;
  }
  buf_add(b, u, n);
}

// Decodes string token `t` (escapes resolved) into a NUL-terminated heap string; 0 when the
// escapes are invalid.
static int token_string(const char *json, const jsmntok_t *t, char **out, size_t *out_len) {
  buf_t b = {0};
  const char *p = json + t->start, *end = json + t->end;
  while (p < end) {
    unsigned char c = (unsigned char)*p++;
    if (c < 0x20) goto bad;  // control characters must be escaped
    if (c != '\\') {
      buf_add(&b, &c, 1);
      continue;
    }
    if (p >= end) goto bad;
    char e = *p++;
    switch (e) {
      case '"': buf_str(&b, "\""); break;
      case '\\': buf_str(&b, "\\"); break;
      case '/': buf_str(&b, "/"); break;
      case 'b': buf_str(&b, "\b"); break;
      case 'f': buf_str(&b, "\f"); break;
      case 'n': buf_str(&b, "\n"); break;
      case 'r': buf_str(&b, "\r"); break;
      case 't': buf_str(&b, "\t"); break;
      case 'u': {
        unsigned cp, low;
        if (!read_hex4(p, end, &cp)) goto bad;
        p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {  // a surrogate pair
          if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !read_hex4(p + 2, end, &low) ||
              low < 0xDC00 || low > 0xDFFF)
            goto bad;
          p += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          goto bad;
        }
        put_utf8(&b, cp);
        break;
      }
      default: goto bad;
    }
  }
  *out_len = b.len;
  buf_add(&b, "", 1);
  *out = b.ptr;
  return 1;
bad:
  free(b.ptr);
  return 0;
}

// A JSON number token as a finite double; 0 when it is not a number or out of range.
static int token_number(const char *json, const jsmntok_t *t, double *out) {
  if (t->type != JSMN_PRIMITIVE) return 0;
  const char *p = json + t->start, *end = json + t->end;
  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  const char *q = p;
  if (q < end && *q == '-') q++;
  if (q >= end) return 0;
  if (*q == '0') {
    q++;
  } else if (*q >= '1' && *q <= '9') {
    while (q < end && *q >= '0' && *q <= '9') q++;
  } else {
    return 0;
  }
  if (q < end && *q == '.') {
    q++;
    if (q >= end || *q < '0' || *q > '9') return 0;
    while (q < end && *q >= '0' && *q <= '9') q++;
  }
  if (q < end && (*q == 'e' || *q == 'E')) {
    q++;
    if (q < end && (*q == '+' || *q == '-')) q++;
    if (q >= end || *q < '0' || *q > '9') return 0;
    while (q < end && *q >= '0' && *q <= '9') q++;
  }
  if (q != end) return 0;
  size_t n = (size_t)(end - p);
  char *text = xrealloc(NULL, n + 1);
  memcpy(text, p, n);
  text[n] = '\0';
  double v = strtod(text, NULL);
  free(text);
  if (!isfinite(v)) return 0;
  *out = v;
  return 1;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Parses and checks the settings JSON; on failure returns 0 with `err` set to a message that
// names the setting at fault.
static int settings_parse(const char *json, size_t len, settings_t *s, alert_rule_string_t *err) {
  *s = (settings_t){.alpha = 0.3, .k = 3.0, .warmup = 5.0,
                    .severity = VIGIL_PLUGIN_TYPES_SEVERITY_WARNING, .for_ms = 0};
  size_t start = 0;
  while (start < len && is_space(json[start])) start++;
  if (start == len) {
    json = "{}";
    len = 2;
    start = 0;
  }
  size_t stop = len;
  while (stop > start && is_space(json[stop - 1])) stop--;

  jsmn_parser parser;
  jsmn_init(&parser);
  int count = jsmn_parse(&parser, json, len, NULL, 0);
  if (count < 1) {
    set_error(err, "settings are not valid JSON");
    return 0;
  }
  jsmntok_t *tokens = xrealloc(NULL, sizeof(jsmntok_t) * (size_t)count);
  jsmn_init(&parser);
  count = jsmn_parse(&parser, json, len, tokens, (unsigned)count);
  const char *fail = NULL;
  if (count < 1 || (size_t)tokens[0].start != start || (size_t)tokens[0].end != stop) {
    fail = "settings are not valid JSON";
    goto done;
  }
  if (tokens[0].type != JSMN_OBJECT) {
    fail = "settings must be a JSON object";
    goto done;
  }
  // The last of duplicate keys wins (as in serde_json). -1: absent.
  int metric = -1, alpha = -1, k = -1, warmup = -1, severity = -1, for_ms = -1;
  int i = 1;
  for (int member = 0; member < tokens[0].size; member++) {
    if (i + 1 >= count || tokens[i].type != JSMN_STRING) {
      fail = "settings are not valid JSON";
      goto done;
    }
    const jsmntok_t *key = &tokens[i];
    int value = i + 1;
    if (token_is(json, key, "metric")) metric = value;
    else if (token_is(json, key, "alpha")) alpha = value;
    else if (token_is(json, key, "k")) k = value;
    else if (token_is(json, key, "warmup")) warmup = value;
    else if (token_is(json, key, "severity")) severity = value;
    else if (token_is(json, key, "for_ms")) for_ms = value;
    // Skip the value and everything nested in it.
    int end = tokens[value].end;
    i = value + 1;
    while (i < count && tokens[i].start < end) i++;
  }

  if (metric < 0 || tokens[metric].type != JSMN_STRING ||
      !token_string(json, &tokens[metric], &s->metric, &s->metric_len) || s->metric_len == 0) {
    fail = "setting metric is required (a metric name)";
    goto done;
  }
  if (alpha >= 0 && !token_number(json, &tokens[alpha], &s->alpha)) {
    fail = "setting alpha must be a number";
    goto done;
  }
  if (!(s->alpha > 0.0 && s->alpha <= 1.0)) {
    fail = "setting alpha must be > 0 and <= 1";
    goto done;
  }
  if (k >= 0 && !token_number(json, &tokens[k], &s->k)) {
    fail = "setting k must be a number";
    goto done;
  }
  if (!(s->k > 0.0)) {
    fail = "setting k must be > 0";
    goto done;
  }
  if (warmup >= 0 && !token_number(json, &tokens[warmup], &s->warmup)) {
    fail = "setting warmup must be a number";
    goto done;
  }
  if (!(s->warmup >= 1.0 && s->warmup == trunc(s->warmup))) {
    fail = "setting warmup must be an integer >= 1";
    goto done;
  }
  if (severity >= 0) {
    char *text = NULL;
    size_t text_len = 0;
    int ok = tokens[severity].type == JSMN_STRING &&
             token_string(json, &tokens[severity], &text, &text_len);
    if (ok && strcmp(text, "info") == 0 && text_len == 4) {
      s->severity = VIGIL_PLUGIN_TYPES_SEVERITY_INFO;
    } else if (ok && strcmp(text, "warning") == 0 && text_len == 7) {
      s->severity = VIGIL_PLUGIN_TYPES_SEVERITY_WARNING;
    } else if (ok && strcmp(text, "critical") == 0 && text_len == 8) {
      s->severity = VIGIL_PLUGIN_TYPES_SEVERITY_CRITICAL;
    } else {
      fail = "setting severity must be info, warning or critical";
    }
    free(text);
    if (fail) goto done;
  }
  double ms = 0.0;
  if (for_ms >= 0 && !token_number(json, &tokens[for_ms], &ms)) {
    fail = "setting for_ms must be a number";
    goto done;
  }
  // 18446744073709551616.0 is u64::MAX as an f64 (2^64): the bound Rust's check uses; an
  // f64 at it saturates to u64::MAX like Rust's `as u64`.
  if (!(ms >= 0.0 && ms == trunc(ms) && ms <= 18446744073709551616.0)) {
    fail = "setting for_ms must be an integer >= 0";
    goto done;
  }
  s->for_ms = ms >= 18446744073709551616.0 ? UINT64_MAX : (uint64_t)ms;

done:
  free(tokens);
  if (fail) {
    settings_free(s);
    set_error(err, fail);
    return 0;
  }
  return 1;
}

// Reads and parses `host.config()`.
static int load_settings(settings_t *s, alert_rule_string_t *err) {
  alert_rule_string_t config;
  vigil_plugin_host_config(&config);
  int ok = settings_parse((const char *)config.ptr, config.len, s, err);
  alert_rule_string_free(&config);
  return ok;
}

// ---- series tables kept per source ------------------------------------------------------------

typedef struct {
  alert_rule_string_t source;  // owned copy
  vigil_plugin_types_series_table_t table;  // owned (taken from a batch)
} kept_table_t;

static kept_table_t *tables;
static size_t tables_len;

static int same(const alert_rule_string_t *a, const uint8_t *ptr, size_t len) {
  return a->len == len && (len == 0 || memcmp(a->ptr, ptr, len) == 0);
}

static kept_table_t *find_table(const alert_rule_string_t *source) {
  for (size_t i = 0; i < tables_len; i++) {
    if (same(&tables[i].source, source->ptr, source->len)) return &tables[i];
  }
  return NULL;
}

// Keeps `table` (taking ownership) as the one of `source`, freeing the one it replaces.
static void keep_table(const alert_rule_string_t *source, vigil_plugin_types_series_table_t table) {
  kept_table_t *kept = find_table(source);
  if (kept) {
    vigil_plugin_types_series_table_free(&kept->table);
  } else {
    tables = xrealloc(tables, sizeof(kept_table_t) * (tables_len + 1));
    kept = &tables[tables_len++];
    alert_rule_string_dup_n(&kept->source, (const char *)source->ptr, source->len);
  }
  kept->table = table;
}

// ---- the rule ----------------------------------------------------------------------------------

bool exports_alert_rule_describe(alert_rule_plugin_info_t *ret, alert_rule_string_t *err) {
  settings_t s;
  if (!load_settings(&s, err)) return false;
  alert_rule_string_dup(&ret->name, "ewma-anomaly");
  alert_rule_string_dup(&ret->version, "0.1.0");
  ret->interests.len = 1;
  ret->interests.ptr = xrealloc(NULL, sizeof(alert_rule_string_t));
  alert_rule_string_dup_n(&ret->interests.ptr[0], s.metric, s.metric_len);
  settings_free(&s);
  return true;
}

typedef struct {
  alert_rule_finding_t *ptr;
  size_t len, cap;
} findings_t;

static void findings_free(findings_t *f) {
  for (size_t i = 0; i < f->len; i++) alert_rule_finding_free(&f->ptr[i]);
  free(f->ptr);
  *f = (findings_t){0};
}

// The series' state: mean, var, count (24 bytes in the host's state store).
typedef struct {
  double mean, var, count;
} ewma_t;

// Updates the state of one series with value x; returns 0 with `err` set when the host
// refuses to store it, else 1 with `*anomalous` telling whether x is an anomaly.
static int observe(const settings_t *s, const alert_rule_string_t *state_key, double x,
                   int *anomalous, alert_rule_string_t *err) {
  alert_rule_list_u8_t stored;
  ewma_t e;
  int had = vigil_plugin_host_state_get((alert_rule_string_t *)state_key, &stored);
  if (had) {
    // A value of another length (not written by this rule) counts as no state.
    if (stored.len == sizeof(e)) memcpy(&e, stored.ptr, sizeof(e));
    else had = 0;
    alert_rule_list_u8_free(&stored);
  }
  *anomalous = 0;
  if (!had) {
    e = (ewma_t){x, 0.0, 1.0};
  } else {
    double d = x - e.mean;
    *anomalous = e.count >= s->warmup && d * d > s->k * s->k * e.var;
    e = (ewma_t){e.mean + s->alpha * d, (1.0 - s->alpha) * (e.var + s->alpha * d * d),
                 e.count + 1.0};
  }
  alert_rule_list_u8_t bytes = {(uint8_t *)&e, sizeof(e)};
  return vigil_plugin_host_state_set((alert_rule_string_t *)state_key, &bytes, err);
}

bool exports_alert_rule_evaluate(alert_rule_batch_t *batch, alert_rule_list_finding_t *ret,
                                 alert_rule_string_t *err) {
  findings_t found = {0};
  settings_t s = {0};
  bool ok = false;
  if (!load_settings(&s, err)) goto out;
  if (batch->table.is_some) {
    keep_table(&batch->source, batch->table.val);
    batch->table.is_some = false;  // now owned by `tables`
  }
  kept_table_t *kept = find_table(&batch->source);
  if (!kept) {
    buf_t message = {0};
    buf_str(&message, "no series table for source ");
    buf_add(&message, batch->source.ptr, batch->source.len);
    *err = buf_take(&message);
    goto out;
  }
  const vigil_plugin_types_series_table_t *table = &kept->table;
  size_t wanted = SIZE_MAX;
  for (size_t m = 0; m < table->metrics.len; m++) {
    const alert_rule_string_t *name = &table->metrics.ptr[m].name;
    if (same(name, (const uint8_t *)s.metric, s.metric_len)) {
      wanted = m;
      break;
    }
  }
  size_t n = table->series.len < batch->values.len ? table->series.len : batch->values.len;
  for (size_t i = 0; wanted != SIZE_MAX && i < n; i++) {
    const vigil_plugin_types_series_t *series = &table->series.ptr[i];
    double x = batch->values.ptr[i];
    if (series->metric != wanted || !isfinite(x)) continue;
    buf_t key = {0};
    for (size_t a = 0; a < series->attributes.len; a++) {
      const vigil_plugin_types_attribute_t *attr = &series->attributes.ptr[a];
      if (a) buf_str(&key, ",");
      buf_add(&key, attr->key.ptr, attr->key.len);
      buf_str(&key, "=");
      buf_add(&key, attr->value.ptr, attr->value.len);
    }
    buf_t state_key = {0};
    buf_str(&state_key, "ewma/");
    buf_add(&state_key, batch->source.ptr, batch->source.len);
    buf_str(&state_key, "/");
    buf_add(&state_key, key.ptr, key.len);
    alert_rule_string_t state_key_s = buf_take(&state_key);
    int anomalous = 0;
    int stored = observe(&s, &state_key_s, x, &anomalous, err);
    alert_rule_string_free(&state_key_s);
    if (!stored) {
      free(key.ptr);
      goto out;
    }
    if (!anomalous) {
      free(key.ptr);
      continue;
    }
    if (found.len == found.cap) {
      found.cap = found.cap ? found.cap * 2 : 4;
      found.ptr = xrealloc(found.ptr, sizeof(alert_rule_finding_t) * found.cap);
    }
    alert_rule_finding_t *f = &found.ptr[found.len++];
    *f = (alert_rule_finding_t){0};
    alert_rule_string_dup(&f->rule, "ewma-anomaly");
    f->key = buf_take(&key);
    f->severity = s.severity;
    buf_t summary = {0};
    buf_add(&summary, s.metric, s.metric_len);
    buf_str(&summary, " is outside its usual range");
    f->summary = buf_take(&summary);
    f->value = (alert_rule_option_f64_t){true, x};
    f->for_ms = s.for_ms;
  }
  ok = true;
out:
  if (ok) {
    ret->len = found.len;
    ret->ptr = found.len ? found.ptr : NULL;
    if (!found.len) free(found.ptr);
  } else {
    findings_free(&found);
  }
  settings_free(&s);
  alert_rule_batch_free(batch);
  return ok;
}
