// A native run of the C ewma-anomaly rule under AddressSanitizer, LeakSanitizer and UBSan, with a
// small in-process host behind the canonical-ABI entry points the bindings generate: checks
// the ownership rules (who frees what) and the arithmetic. Run by plugins/c/tests/native-check.sh.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include "alert_rule.h"

static const char *CONFIG = "{\"metric\":\"m\",\"alpha\":0.5,\"k\":2,\"warmup\":2,\"severity\":\"critical\",\"for_ms\":60000}";
static char *keys[64]; static uint8_t vals[64][24]; static size_t vlen[64]; static int nkeys;
static int state_fail;

static void *own(const void *p, size_t n) { if (!n) return (void*)1; void *q = malloc(n); memcpy(q, p, n); return q; }

void __wasm_import_vigil_plugin_host_config(uint8_t *ret) {
  size_t n = strlen(CONFIG);
  *(uint8_t**)ret = own(CONFIG, n); *(size_t*)(ret + sizeof(void*)) = n;
}
void __wasm_import_vigil_plugin_host_state_get(uint8_t *k, size_t kl, uint8_t *ret) {
  for (int i = 0; i < nkeys; i++) if (strlen(keys[i]) == kl && !memcmp(keys[i], k, kl)) {
    ret[0] = 1; *(uint8_t**)(ret + sizeof(void*)) = own(vals[i], vlen[i]); *(size_t*)(ret + 2*sizeof(void*)) = vlen[i]; return; }
  ret[0] = 0;
}
void __wasm_import_vigil_plugin_host_state_set(uint8_t *k, size_t kl, uint8_t *v, size_t vl, uint8_t *ret) {
  if (state_fail) { const char *m = "state full"; ret[0] = 1; *(uint8_t**)(ret + sizeof(void*)) = own(m, strlen(m)); *(size_t*)(ret + 2*sizeof(void*)) = strlen(m); return; }
  int i; for (i = 0; i < nkeys; i++) if (strlen(keys[i]) == kl && !memcmp(keys[i], k, kl)) break;
  if (i == nkeys) { keys[nkeys] = calloc(1, kl + 1); memcpy(keys[nkeys++], k, kl); }
  memcpy(vals[i], v, vl); vlen[i] = vl; ret[0] = 0;
}
void __wasm_import_vigil_plugin_host_log(int l, uint8_t *p, size_t n) {}
int64_t __wasm_import_vigil_plugin_host_now_ns(void) { return 0; }

uint8_t *__wasm_export_exports_alert_rule_describe(void);
void __wasm_export_exports_alert_rule_describe_post_return(uint8_t *);
uint8_t *__wasm_export_exports_alert_rule_evaluate(uint8_t *, size_t, uint8_t *, size_t, int64_t, int64_t, int32_t, int64_t, uint8_t *, size_t, uint8_t *, size_t, uint8_t *, size_t, uint8_t *, size_t);
void __wasm_export_exports_alert_rule_evaluate_post_return(uint8_t *);

static alert_rule_string_t S(const char *s) { alert_rule_string_t r; r.len = strlen(s); r.ptr = own(s, r.len); return r; }

static void step(const char *source, int with_table, double a, double b) {
  vigil_plugin_types_metric_t *metrics = NULL; size_t nm = 0;
  vigil_plugin_types_series_t *series = NULL; size_t ns = 0;
  if (with_table) {
    nm = 2; metrics = malloc(sizeof *metrics * 2);
    metrics[0] = (vigil_plugin_types_metric_t){S("m"), S("1"), 0};
    metrics[1] = (vigil_plugin_types_metric_t){S("other"), S(""), 0};
    ns = 3; series = malloc(sizeof *series * 3);
    vigil_plugin_types_attribute_t *at = malloc(sizeof *at * 2);
    at[0] = (vigil_plugin_types_attribute_t){S("host"), S("a")};
    at[1] = (vigil_plugin_types_attribute_t){S("zone"), S("")};
    series[0] = (vigil_plugin_types_series_t){0, {at, 2}};
    series[1] = (vigil_plugin_types_series_t){1, {(void*)8, 0}};
    series[2] = (vigil_plugin_types_series_t){0, {(void*)8, 0}};
  }
  double *values = malloc(sizeof(double) * 3); values[0] = a; values[1] = 7; values[2] = b;
  alert_rule_string_t src = S(source), host = S("h");
  uint8_t *r = __wasm_export_exports_alert_rule_evaluate(src.ptr, src.len, host.ptr, host.len, 0, 1, with_table, 1,
      (uint8_t*)metrics, nm, (uint8_t*)series, ns, (uint8_t*)values, 3, (uint8_t*)8, 0);
  if (r[0]) { printf("%s: error %.*s\n", source, (int)*(size_t*)(r + 2*sizeof(void*)), *(char**)(r + sizeof(void*))); }
  else {
    size_t n = *(size_t*)(r + 2*sizeof(void*)); alert_rule_finding_t *f = *(alert_rule_finding_t**)(r + sizeof(void*));
    printf("%s: %zu findings", source, n);
    for (size_t i = 0; i < n; i++) printf(" [%.*s|%.*s|%.*s|%g|%llu]", (int)f[i].rule.len, f[i].rule.ptr, (int)f[i].key.len, f[i].key.ptr, (int)f[i].summary.len, f[i].summary.ptr, f[i].value.val, (unsigned long long)f[i].for_ms);
    printf("\n");
  }
  __wasm_export_exports_alert_rule_evaluate_post_return(r);
}

int main(void) {
  uint8_t *d = __wasm_export_exports_alert_rule_describe();
  printf("describe: is_err=%d name=%.*s\n", d[0], (int)*(size_t*)(d + 2*sizeof(void*)), *(char**)(d + sizeof(void*)));
  __wasm_export_exports_alert_rule_describe_post_return(d);
  step("nosuch", 0, 1, 1);
  step("db", 1, 10, 5); step("db", 0, 10, 5); step("db", 1, 12, 5); step("db", 0, 11.5, 5); step("db", 0, 14, 9);
  step("db", 0, 0.0/0.0, 1e300*1e300);
  state_fail = 1; step("db", 0, 100, 100); state_fail = 0;
  for (int i = 0; i < nkeys; i++) free(keys[i]);
  return 0;
}
void __component_type_object_force_link_alert_rule(void) {}
