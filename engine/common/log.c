/* Logging: stderr, one line per event, written with a single write() so that lines from
 * several threads never interleave. */
#include "engine/common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Process-wide settings: one logger per process is the one true global here. The level is
 * set once (first use, or before threads start); the tag may be set from any thread while
 * others log (a destination names itself once the VM arrives), so it is read and written
 * under its own lock: a line never carries half of an old tag and half of a new one. */
static int log_level = -1;
static pthread_mutex_t tag_lock = PTHREAD_MUTEX_INITIALIZER;
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

static pthread_once_t level_once = PTHREAD_ONCE_INIT;

static void level_init(void)
{
    if (__atomic_load_n(&log_level, __ATOMIC_RELAXED) < 0)
        __atomic_store_n(&log_level, level_from_env(), __ATOMIC_RELAXED);
}

void gw_log_set_level(enum gw_log_level level)
{
    pthread_once(&level_once, level_init);
    __atomic_store_n(&log_level, (int)level, __ATOMIC_RELAXED);
}

void gw_log_set_tag(const char *tag)
{
    pthread_mutex_lock(&tag_lock);
    snprintf(log_tag, sizeof log_tag, "%s", tag ? tag : "");
    pthread_mutex_unlock(&tag_lock);
}

void gw_log(enum gw_log_level level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    /* The first line reads GODWIT_LOG once, whichever thread logs it. */
    pthread_once(&level_once, level_init);
    if ((int)level < __atomic_load_n(&log_level, __ATOMIC_RELAXED)) return;

    char line[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char tag[sizeof log_tag];
    pthread_mutex_lock(&tag_lock);
    memcpy(tag, log_tag, sizeof tag);
    pthread_mutex_unlock(&tag_lock);
    /* Wall-clock time only labels the line; no timeout is measured with it. */
    int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %s%s%s ", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[level], tag[0] ? " " : "", tag);
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
