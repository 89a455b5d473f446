/* Choosing a chunk-store backend from its spec, and what every backend shares (see store.h). */
#include "storage/store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int gw_store_open(const struct gw_store_params *p, struct gw_store **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *spec = p->spec;
    if (!spec || !*spec) { snprintf(err, errlen, "no store named (dir:PATH or rados:POOL[/NAMESPACE])"); return -EINVAL; }
    if (p->max_inflight > GW_STORE_MAX_INFLIGHT) {
        snprintf(err, errlen, "at most %u operations in flight", GW_STORE_MAX_INFLIGHT);
        return -EINVAL;
    }
    if (!strncmp(spec, "dir:", 4) && spec[4]) return gw_store_dir_open(spec + 4, p, out, err, errlen);
    if (!strncmp(spec, "rados:", 6) && spec[6]) return gw_store_rados_open(spec + 6, p, out, err, errlen);
    snprintf(err, errlen, "store '%s': want dir:PATH or rados:POOL[/NAMESPACE]", spec);
    return -EINVAL;
}

void gw_store_close(struct gw_store *s)
{
    if (s) s->ops->close(s);
}

const char *gw_store_error(const struct gw_store *s)
{
    return s->err[0] ? s->err : "unknown error";
}

int gw_store_fail(struct gw_store *s, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
    return rc;
}

int gw_store_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 100 || name[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}
