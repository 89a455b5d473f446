/* CPU priority of background work (backups): a scheduling class and nice value applied to one
 * thread at a time, never to the whole process.
 *
 * Linux keeps the policy and the nice value per thread, and a new thread starts with its
 * creator's. So background work runs on threads of its own: gw_cpu_prio_run starts one at the
 * lowered priority and everything it creates (a store's client threads, a writer per batch)
 * inherits it, while the threads that serve a guest (vCPUs, the write-protect fault handler,
 * the disk) keep theirs. Raising a thread back needs CAP_SYS_NICE (or RLIMIT_NICE): only
 * gw_cpu_prio_raise does it, and it reports EPERM instead of failing the work.
 *
 * Spellings (gw_cpu_prio_parse): "normal" (leave as is), "idle" (SCHED_IDLE: only CPU time
 * nobody else wants), "batch" (SCHED_BATCH, nice 10: no wake-up preemption of interactive
 * threads, a tenth of a normal thread's share under contention), "nice:N" (SCHED_OTHER, nice
 * N in 1..19), "batch:N" (SCHED_BATCH, nice N in 0..19). */
#ifndef GW_COMMON_CPU_PRIO_H
#define GW_COMMON_CPU_PRIO_H

#include <stdbool.h>
#include <stddef.h>

enum gw_cpu_class { GW_CPU_NORMAL = 0, GW_CPU_NICE, GW_CPU_BATCH, GW_CPU_IDLE };

struct gw_cpu_prio {
    enum gw_cpu_class cls;
    int nice;                 /* 0..19 (GW_CPU_NICE: 1..19) */
};

/* Parses a spelling above into out. 0 or -EINVAL (out untouched). NULL or "" = "normal". */
int gw_cpu_prio_parse(const char *s, struct gw_cpu_prio *out);
/* The canonical spelling of p into buf (at least 16 bytes). */
void gw_cpu_prio_name(const struct gw_cpu_prio *p, char *buf, size_t len);

/* Applies p to the calling thread only (GW_CPU_NORMAL: nothing). 0 or -errno. */
int gw_cpu_prio_apply(const struct gw_cpu_prio *p);
/* Puts the calling thread back to SCHED_OTHER at nice 0. 0, or -EPERM without CAP_SYS_NICE. */
int gw_cpu_prio_raise(void);
/* True when the calling thread runs below normal (SCHED_IDLE, SCHED_BATCH or nice > 0). */
bool gw_cpu_prio_lowered(void);
/* What the calling thread runs at, read from the kernel (a policy other than these three, or
 * a negative nice value, reads as normal). */
void gw_cpu_prio_current(struct gw_cpu_prio *out);

/* Runs fn(arg) on a new thread at priority p and waits for it; returns fn's result. A thread
 * that cannot be made or lowered runs fn at the caller's priority (logged once per reason). */
int gw_cpu_prio_run(const struct gw_cpu_prio *p, int (*fn)(void *arg), void *arg);

#endif
