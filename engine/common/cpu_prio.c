/* CPU priority of background threads (see cpu_prio.h). */
#include "engine/common/cpu_prio.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "engine/common/log.h"

int gw_cpu_prio_parse(const char *s, struct gw_cpu_prio *out)
{
    struct gw_cpu_prio p = {GW_CPU_NORMAL, 0};
    char *end;
    if (!s || !*s || !strcmp(s, "normal")) {
    } else if (!strcmp(s, "idle")) {
        p.cls = GW_CPU_IDLE;
    } else if (!strcmp(s, "batch")) {
        p = (struct gw_cpu_prio){GW_CPU_BATCH, 10};
    } else if (!strncmp(s, "batch:", 6) || !strncmp(s, "nice:", 5)) {
        bool batch = s[0] == 'b';
        const char *n = s + (batch ? 6 : 5);
        if (*n < '0' || *n > '9') return -EINVAL;
        errno = 0;
        long v = strtol(n, &end, 10);
        if (errno || *end || v < (batch ? 0 : 1) || v > 19) return -EINVAL;
        p = (struct gw_cpu_prio){batch ? GW_CPU_BATCH : GW_CPU_NICE, (int)v};
    } else {
        return -EINVAL;
    }
    *out = p;
    return 0;
}

void gw_cpu_prio_name(const struct gw_cpu_prio *p, char *buf, size_t len)
{
    switch (p->cls) {
    case GW_CPU_IDLE: snprintf(buf, len, "idle"); break;
    case GW_CPU_BATCH: snprintf(buf, len, "batch:%d", p->nice); break;
    case GW_CPU_NICE: snprintf(buf, len, "nice:%d", p->nice); break;
    default: snprintf(buf, len, "normal"); break;
    }
}

/* sched_setscheduler and setpriority with pid 0 act on the calling thread on Linux. */
int gw_cpu_prio_apply(const struct gw_cpu_prio *p)
{
    if (p->cls == GW_CPU_NORMAL) return 0;
    int policy = p->cls == GW_CPU_IDLE ? SCHED_IDLE : p->cls == GW_CPU_BATCH ? SCHED_BATCH : SCHED_OTHER;
    struct sched_param sp = {0};
    if (sched_setscheduler(0, policy, &sp) < 0) return -errno;
    /* The nice value also orders SCHED_BATCH threads; SCHED_IDLE ignores it. */
    if (p->cls != GW_CPU_IDLE && setpriority(PRIO_PROCESS, 0, p->nice) < 0) return -errno;
    return 0;
}

int gw_cpu_prio_raise(void)
{
    struct sched_param sp = {0};
    if (sched_setscheduler(0, SCHED_OTHER, &sp) < 0) return -errno;
    if (setpriority(PRIO_PROCESS, 0, 0) < 0) return -errno;
    return 0;
}

bool gw_cpu_prio_lowered(void)
{
    int policy = sched_getscheduler(0);
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, 0);
    return policy == SCHED_IDLE || policy == SCHED_BATCH || (!errno && nice > 0);
}

void gw_cpu_prio_current(struct gw_cpu_prio *out)
{
    int policy = sched_getscheduler(0);
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, 0);
    if (errno || nice < 0) nice = 0;
    if (nice > 19) nice = 19;
    if (policy == SCHED_IDLE) *out = (struct gw_cpu_prio){GW_CPU_IDLE, 0};
    else if (policy == SCHED_BATCH) *out = (struct gw_cpu_prio){GW_CPU_BATCH, nice};
    else if (policy == SCHED_OTHER && nice > 0) *out = (struct gw_cpu_prio){GW_CPU_NICE, nice};
    else *out = (struct gw_cpu_prio){GW_CPU_NORMAL, 0};
}

struct run {
    const struct gw_cpu_prio *p;
    int (*fn)(void *);
    void *arg;
    int rc;
};

static void *run_low(void *arg)
{
    struct run *r = arg;
    int e = gw_cpu_prio_apply(r->p);
    if (e) {
        char name[32];
        gw_cpu_prio_name(r->p, name, sizeof name);
        gw_warn("cannot run background work at CPU priority %s (%s): it runs at the normal one", name, strerror(-e));
    }
    r->rc = r->fn(r->arg);
    return NULL;
}

int gw_cpu_prio_run(const struct gw_cpu_prio *p, int (*fn)(void *arg), void *arg)
{
    if (p->cls == GW_CPU_NORMAL) return fn(arg);
    struct run r = {.p = p, .fn = fn, .arg = arg};
    pthread_t t;
    int e = pthread_create(&t, NULL, run_low, &r);
    if (e) {
        gw_warn("cannot start a background thread (%s): the work runs at the normal CPU priority", strerror(e));
        return fn(arg);
    }
    pthread_join(t, NULL);
    return r.rc;
}
