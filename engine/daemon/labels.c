/* VM labels and selectors (see labels.h). */
#include "engine/daemon/labels.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool key_char(char c, bool first)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return !first && (c == '.' || c == '_' || c == '-' || c == '/');
}

static bool value_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
}

/* The key's length (at the '='), or 0 when s is not a label. */
static size_t label_key_len(const char *s)
{
    size_t k = 0;
    while (s[k] && s[k] != '=') {
        if (k >= GW_LIMIT_LABEL_KEY_MAX || !key_char(s[k], k == 0)) return 0;
        k++;
    }
    if (!k || s[k] != '=') return 0;
    size_t v = 0;
    for (const char *p = s + k + 1; *p; p++, v++)
        if (v >= GW_LIMIT_LABEL_VALUE_MAX || !value_char(*p)) return 0;
    return k;
}

bool gw_label_ok(const char *s)
{
    return s && label_key_len(s) > 0;
}

static int by_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int gw_labels_canon(char *const *labels, size_t n, char *out, size_t cap, char *err, size_t errlen)
{
    if (n > GW_LIMIT_VM_LABELS) { snprintf(err, errlen, "labels: at most %u", GW_LIMIT_VM_LABELS); return -EINVAL; }
    char *v[GW_LIMIT_VM_LABELS];
    for (size_t i = 0; i < n; i++) {
        if (!gw_label_ok(labels[i])) {
            snprintf(err, errlen, "labels: '%.80s' is not KEY=VALUE (KEY 1-%u of [A-Za-z0-9._/-] starting with a "
                     "letter or digit, VALUE 0-%u of [A-Za-z0-9._-])", labels[i], GW_LIMIT_LABEL_KEY_MAX,
                     GW_LIMIT_LABEL_VALUE_MAX);
            return -EINVAL;
        }
        v[i] = labels[i];
    }
    /* Sorted as strings: one canonical form whatever the order given, and two labels of one
     * key ("k=..." both) are adjacent (whatever sorts between them starts with "k=" too). */
    qsort(v, n, sizeof v[0], by_str);
    size_t len = 0;
    if (cap) out[0] = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = label_key_len(v[i]);
        if (i && label_key_len(v[i - 1]) == k && !strncmp(v[i - 1], v[i], k)) {
            snprintf(err, errlen, "labels: key '%.*s' given twice", (int)k, v[i]);
            return -EINVAL;
        }
        int w = snprintf(out + len, cap - len, "%s%s", i ? "," : "", v[i]);
        if (w < 0 || (size_t)w >= cap - len) { snprintf(err, errlen, "labels: too long"); return -EINVAL; }
        len += (size_t)w;
    }
    return 0;
}

bool gw_labels_match(const char *canon, const char *sel)
{
    size_t n = strlen(sel);
    for (const char *p = canon; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !strncmp(p, sel, n)) return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

bool gw_labels_canon_ok(const char *s)
{
    if (!*s) return true;
    if (strlen(s) >= GW_LIMIT_LABELS_BUF) return false;
    char buf[GW_LIMIT_LABELS_BUF], out[GW_LIMIT_LABELS_BUF], err[160];
    char *v[GW_LIMIT_VM_LABELS + 1];
    size_t n = 0;
    snprintf(buf, sizeof buf, "%s", s);
    for (char *p = buf; p; n++) {
        if (n > GW_LIMIT_VM_LABELS) return false;
        v[n] = p;
        p = strchr(p, ',');
        if (p) *p++ = 0;
    }
    return gw_labels_canon(v, n, out, sizeof out, err, sizeof err) == 0 && !strcmp(out, s);
}
