/* Logging: stderr, one line per event, written with a single write() so that lines from
 * several threads never interleave. */
#include "engine/common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Process-wide settings: one logger per process is the one true global here. */
static int log_level = -1;
static char log_tag[64];

static int level_from_env(void)
{
    const char *e = getenv("GODWIT_LOG");
    if (!e) return GW_LOG_INFO;
    if (!strcasecmp(e, "debug")) return GW_LOG_DEBUG;
    if (!strcasecmp(e, "warn")) return GW_LOG_WARN;
    if (!strcasecmp(e, "error")) return GW_LOG_ERROR;
    return GW_LOG_INFO;
}

void gw_log_set_level(enum gw_log_level level) { log_level = (int)level; }

void gw_log_set_tag(const char *tag)
{
    if (!tag) { log_tag[0] = 0; return; }
    snprintf(log_tag, sizeof log_tag, "%s", tag);
}

void gw_log(enum gw_log_level level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (log_level < 0) log_level = level_from_env();
    if ((int)level < log_level) return;

    char line[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %s%s%s ", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[level], log_tag[0] ? " " : "", log_tag);
    if (n < 0) return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
