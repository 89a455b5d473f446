/* JSON helpers (see json.h). */
#include "engine/common/json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void gw_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static const char *value_of(const char *json, const char *key)
{
    char pat[128];
    if (snprintf(pat, sizeof pat, "\"%s\":", key) >= (int)sizeof pat) return NULL;
    const char *p = strstr(json, pat);
    if (!p) return NULL;
    p += strlen(pat);
    while (*p == ' ' || *p == '\t') p++;   /* other writers (Python's json) put a space here */
    return p;
}

int gw_json_get_u64(const char *json, const char *key, uint64_t *out)
{
    const char *v = value_of(json, key);
    if (!v || *v < '0' || *v > '9') return -ENOENT;
    *out = strtoull(v, NULL, 10);
    return 0;
}

int gw_json_get_double(const char *json, const char *key, double *out)
{
    const char *v = value_of(json, key);
    if (!v || !((*v >= '0' && *v <= '9') || *v == '-')) return -ENOENT;
    *out = strtod(v, NULL);
    return 0;
}

int gw_json_get_bool(const char *json, const char *key, bool *out)
{
    const char *v = value_of(json, key);
    if (!v) return -ENOENT;
    if (!strncmp(v, "true", 4)) { *out = true; return 0; }
    if (!strncmp(v, "false", 5)) { *out = false; return 0; }
    return -ENOENT;
}

int gw_json_get_str(const char *json, const char *key, char *out, size_t outlen)
{
    const char *v = value_of(json, key);
    if (!v || *v != '"' || !outlen) return -ENOENT;
    v++;
    size_t n = 0;
    while (*v && *v != '"' && n + 1 < outlen) {
        if (*v == '\\' && v[1]) v++;
        out[n++] = *v++;
    }
    out[n] = 0;
    return 0;
}
