/* The cluster: a registry of hosts that needs no extra service, the host's own state (active,
 * draining, maintenance), the evacuation planner and the evacuation job.
 *
 * The registry sits behind an ops table (struct gw_cluster_ops) so that a back end on the
 * Ceph cluster (RADOS objects with omap and watch/notify) can join the directory back end
 * (cluster_dir.c, hosts on one machine or on a shared file system) without touching the
 * callers. Each host republishes its record (ClusterHost) every GW_CLUSTER_HEARTBEAT_MS; a
 * record that has not changed for GW_CLUSTER_DOWN_MS, as this host's monotonic clock sees
 * it, is a host that is down.
 *
 * Locking: the host state and the liveness table are guarded by the daemon's lock; back-end
 * calls (file or network I/O) are made without it. */
#ifndef GW_DAEMON_CLUSTER_H
#define GW_DAEMON_CLUSTER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "godwit/v1/api.pb-c.h"

#define GW_CLUSTER_HEARTBEAT_MS 1000
#define GW_CLUSTER_DOWN_MS 5000            /* a record unchanged this long: host down */
#define GW_CLUSTER_MAX_HOSTS 256
#define GW_CLUSTER_RECORD_MAX (1u << 20)   /* a host record larger than this is refused */
#define GW_CLUSTER_NAME_MAX 63
/* The most VMs and image roots a record may list: pack_record's caps. A reader refuses a
 * record past them (no host wrote it) before it can cost memory out of proportion. */
#define GW_CLUSTER_MAX_VMS_PER_HOST 4096
#define GW_CLUSTER_MAX_IMAGE_ROOTS 32
#define GW_EVAC_MAX_VMS 256
#define GW_EVAC_STALL_S_DEFAULT 30
/* The default convergence ladder of an evacuation's children (a policy without a mode):
 * pre-copy with auto-converge, then post-copy once pre-copy has run this long per GiB of guest
 * memory or the runner sees it cannot converge (hybrid), so a VM dirtying faster than its link
 * still leaves; the stall detector ends what is still stuck in pre-copy. */
#define GW_EVAC_HYBRID_MS_PER_GIB_DEFAULT 20000
#define GW_EVAC_POLL_MS 200
/* Bandwidth the planner assumes when no migration from this host has been measured yet. */
#define GW_EVAC_DEFAULT_BW (256ull << 20)
#define GW_CLUSTER_SAMPLES 16              /* migrations the time model is fitted on */

struct gw_daemon;
struct gw_job;

/* The time model of a migration (cluster_plan.c): a VM of mem bytes whose guest dirties less
 * than the link carries takes overhead_ms + mem / bw; one that dirties faster cannot converge
 * in pre-copy and goes on in post-copy (hybrid), which took nonconverging_pct percent of that
 * in the migrations measured. */
struct gw_cluster_fit {
    uint64_t bw;                         /* memory bytes per second of a converging migration */
    uint64_t overhead_ms;                /* fixed cost (prepare, setup, switch-over) */
    uint64_t link_bw;                    /* wire bytes per second (0 = unknown: bw) */
    uint32_t nonconverging_pct;          /* 0 = none measured: GW_EVAC_NONCONVERGING_PCT */
};
#define GW_EVAC_NONCONVERGING_PCT 200   /* assumed without a measurement: twice the time */
/* Bounds on a fit another host published: beyond them the record is not a measurement (no
 * link carries 1 TiB/s, no migration's fixed cost is an hour) and it is left out. Sums of
 * at most GW_CLUSTER_MAX_HOSTS bounded figures cannot wrap. */
#define GW_CLUSTER_FIT_MAX_BW (1ull << 40)
#define GW_CLUSTER_FIT_MAX_OVERHEAD_MS (3600ull * 1000)
#define GW_CLUSTER_FIT_MAX_PCT 10000u
/* A sample this much slower than the fitted line (percent) did not converge. */
#define GW_EVAC_OUTLIER_PCT 150

struct gw_daemon_config;

/* What a back end is opened with. */
struct gw_cluster_open {
    const char *where;                          /* the spec after "scheme:" */
    const struct gw_daemon_config *cfg;         /* hostname, Ceph's conf/id/keyring */
    void (*changed)(void *arg);                 /* another host announced a change (any thread) */
    void *arg;
};

/* Takes one record of the registry (name is its key); returns whether it was kept. */
typedef bool (*gw_cluster_record_fn)(void *arg, const char *name, const uint8_t *rec, size_t len);

/* A registry back end. Every call may block on I/O (a bounded time); none is made with the
 * daemon's lock. */
struct gw_cluster_ops {
    const char *scheme;                                  /* "dir", "rados" */
    int (*open)(const struct gw_cluster_open *o, void **be, char *err, size_t errlen);
    /* Publishes (replaces) h's record atomically: a reader sees the old or the new one. With
     * announce (the host's state or its VMs changed, not only its heartbeat), the other
     * hosts are told at once where the back end can (rados: a notify). */
    int (*publish)(void *be, const char *name, const uint8_t *rec, size_t len, bool announce);
    /* Calls fn for each stored record (bytes valid during the call only) until fn has kept
     * GW_CLUSTER_MAX_HOSTS of them: fn says whether it kept one, so records it refused (junk
     * anyone with write access can store) never hide the others. */
    int (*list)(void *be, gw_cluster_record_fn fn, void *arg);
    void (*close)(void *be);
};

extern const struct gw_cluster_ops gw_cluster_dir_ops;
extern const struct gw_cluster_ops gw_cluster_rados_ops;   /* cluster_rados.c */

struct gw_cluster_seen {                 /* liveness: when a host's record last changed */
    char name[GW_CLUSTER_NAME_MAX + 1];
    uint64_t heartbeat_unix_ms;
    uint64_t changed_ns;                 /* CLOCK_MONOTONIC */
    uint64_t read_ns;                    /* our last read of it */
};

struct gw_cluster {
    const struct gw_cluster_ops *ops;    /* NULL: no registry configured */
    void *be;
    int state;                           /* GODWIT__V1__CLUSTER_HOST__STATE__* (lock) */
    char state_path[600];
    bool hb_started, hb_stop;
    pthread_t hb_thread;
    struct gw_cluster_seen seen[GW_CLUSTER_MAX_HOSTS];
    unsigned n_seen;
    struct gw_cluster_fit fit;           /* fitted from the samples (bw 0 = not enough yet) */
    struct { uint64_t bytes, ms, wire_bw; } samples[GW_CLUSTER_SAMPLES];   /* successful outgoing migrations */
    unsigned n_samples, next_sample;
    bool return_running, return_joinable;   /* return home (cluster_return.c) */
    uint64_t published_digest;           /* state and VMs of the last record published (lock) */
    uint64_t notifies;                   /* changes other hosts announced to us (lock) */
    pthread_t return_thread;
};

/* A name usable as a host name in the registry (and as a record's file name). */
bool gw_cluster_name_ok(const char *name);

/* ---- cluster_registry.c ------------------------------------------------------------------ */
/* Sets up d->cluster from the configuration (cluster = dir:PATH) and loads the host state.
 * 0 or -errno with the reason in err. */
int gw_cluster_init(struct gw_daemon *d, char *err, size_t errlen);
int gw_cluster_start(struct gw_daemon *d, char *err, size_t errlen);   /* heartbeat thread */
void gw_cluster_stop(struct gw_daemon *d);
void gw_cluster_free(struct gw_daemon *d);
/* Changes and persists the host's state (lock held); the next heartbeat publishes it (the
 * heartbeat thread is woken at once). */
int gw_cluster_set_state(struct gw_daemon *d, int state);
/* Whether the host takes new VMs and incoming migrations (lock held). */
bool gw_cluster_accepts_vms(const struct gw_daemon *d);
/* Reads every record of the registry (lock NOT held): *hosts is an array of *n unpacked
 * records sorted by name, with heartbeat_age_ms and down filled in, and this host's own
 * record carrying its state as it is now (not as last published). Free with
 * gw_cluster_hosts_free. With no registry: 0 hosts. */
int gw_cluster_hosts(struct gw_daemon *d, Godwit__V1__ClusterHost ***hosts, size_t *n);
void gw_cluster_hosts_free(Godwit__V1__ClusterHost **hosts, size_t n);
/* The registered, live, active host whose API address is addr; NULL when none. Then why
 * holds the reason. Lock NOT held. */
int gw_cluster_check_destination(struct gw_daemon *d, const char *addr, char *why, size_t whylen);
/* A one-line reason for a registry error r (a timeout says which bound it hit). */
void gw_cluster_describe(const struct gw_daemon *d, int r, char *buf, size_t len);
/* The ErrorInfo reason of a gw_cluster_check_destination error. */
const char *gw_cluster_reason(int err);
/* A migration job ended (lock held): a successful one is a sample of the time model
 * wall_ms = overhead + memory_bytes / bandwidth, refitted over the last GW_CLUSTER_SAMPLES
 * (robustly: see gw_cluster_fit_samples). */
void gw_cluster_job_done(struct gw_daemon *d, const struct gw_job *j);
/* The model the planner uses (lock NOT held; reads the registry when this host has too few
 * samples: the other hosts' published fits, averaged). */
void gw_cluster_model(struct gw_daemon *d, Godwit__V1__ClusterHost *const *hosts, size_t n, struct gw_cluster_fit *fit);
/* Fits the model on n samples (x = memory bytes, y = ms, wire = bytes/s on the wire, 0 =
 * unknown). Pure. Theil-Sen (the median of the pairwise slopes, then the median intercept):
 * a migration that did not converge lies far above the line of the others and must not tilt
 * it, as it would a least-squares fit. Samples over GW_EVAC_OUTLIER_PCT of the line give
 * nonconverging_pct. */
void gw_cluster_fit_samples(const uint64_t *x, const uint64_t *y, const uint64_t *wire, unsigned n,
                            struct gw_cluster_fit *fit);
/* Publishes now (lock NOT held). */
int gw_cluster_publish(struct gw_daemon *d);

/* ---- cluster_plan.c: the evacuation planner (pure: no I/O, no locks) -------------------- */
struct gw_plan_vm {
    const char *name;
    uint64_t memory_bytes;
    uint32_t vcpus;
    uint32_t priority;
    const char *anti_affinity;            /* "" = none */
    const char *disk;                     /* "" = none */
    uint64_t dirty_rate;                  /* bytes/s, 0 unknown */
    char busy[120];                       /* "" or why it cannot move now (blocker VM_BUSY) */
};
struct gw_plan_step {
    unsigned vm;                          /* index into the VMs */
    int host;                             /* index into the hosts, -1 = blocked */
    uint64_t est_bytes, est_ms;
    const char *blocker;                  /* reason code when host < 0 */
    char message[200];
};
struct gw_plan_in {
    const struct gw_plan_vm *vms;
    size_t n_vms;
    Godwit__V1__ClusterHost *const *hosts;
    size_t n_hosts;
    const char *self;                     /* the source host: never a destination */
    uint64_t bandwidth;                   /* bytes/s one migration gets */
    uint64_t overhead_ms;                 /* fixed cost of one migration (prepare, setup, switch) */
    uint64_t link_bw;                     /* wire bytes/s (0 = bandwidth) */
    uint32_t nonconverging_pct;           /* 0 = GW_EVAC_NONCONVERGING_PCT */
};
/* Orders the VMs (priority classes high to low, then smallest memory first: the shortest
 * jobs first minimise the mean time a VM waits) and places each on the live, active host
 * (not self) with the most free memory that fits it, its vCPUs, its disk (one of the host's
 * image_roots) and its anti-affinity group (no VM of the group there, including the ones this
 * plan places). steps has room for n_vms; returns the number of blocked steps. */
unsigned gw_cluster_plan(const struct gw_plan_in *in, struct gw_plan_step *steps);
/* Estimated bytes and time (without the overhead) of one migration under fit f: a VM that
 * dirties less than the link carries takes mem / bw, and sends mem / (1 - dirty / link)
 * bytes at most; one that dirties faster does not converge (returns false) and takes
 * nonconverging_pct percent of that time. */
bool gw_cluster_estimate(const struct gw_cluster_fit *f, uint64_t mem, uint64_t dirty, uint64_t *bytes, uint64_t *ms);
/* Whether the fit host h published lies within the GW_CLUSTER_FIT_MAX_* bounds. */
bool gw_cluster_fit_plausible(const Godwit__V1__ClusterHost *h);

/* ---- evacuate.c: the evacuation job ------------------------------------------------------ */
struct gw_evac;
/* Fills p's defaults (caps, stall timeout, each child's share of the bandwidth budget) into
 * out (its migration field is left NULL; mig receives the children's policy). */
void gw_evac_policy(const struct gw_daemon *d, const Godwit__V1__EvacuationPolicy *p,
                    Godwit__V1__EvacuationPolicy *out, Godwit__V1__MigrationPolicy *mig);
/* Creates and starts the parent job of a plan without blockers (lock held): the host goes
 * DRAINING. steps[i].host indexes in->hosts. 0 or -errno. */
int gw_evac_start(struct gw_daemon *d, const Godwit__V1__EvacuationPolicy *p, const char *request_id,
                  const struct gw_plan_in *in, const struct gw_plan_step *steps, struct gw_job **out);
/* Whether the VM of record r cannot be moved now because a job of its own (a migration, a
 * backup, ...) or an operation (start, stop) is in progress (lock held): then why says which,
 * and the result is true. An evacuation reports such a VM as a blocker (VM_BUSY) rather than
 * waiting for it: a backup may take hours, and an evacuation whose end hangs on a job it does
 * not control is what operators complain about; the operator cancels the job or waits, then
 * evacuates (the dry run shows it first). */
struct gw_vm_rec;
bool gw_cluster_vm_busy(struct gw_daemon *d, const struct gw_vm_rec *r, char *why, size_t whylen);
/* Starts a migration job of vm to dest (an API address) with policy p (lock held); with
 * set_origin the VM records this host as its origin (return home). 0, or -errno with a
 * reason code and a message. */
int gw_cluster_migrate(struct gw_daemon *d, const char *vm, const char *dest, const Godwit__V1__MigrationPolicy *p,
                       bool set_origin, struct gw_job **out, const char **reason, char *why, size_t whylen);

/* ---- cluster_return.c: return home -------------------------------------------------------- */
/* Brings back the VMs whose origin is this host (lock NOT held): those the last evacuation
 * moved, and any other the registry shows elsewhere with this origin. A thread asks their
 * holders, at most max_incoming on their way at once. names[] receives up to cap VM names
 * (malloc'ed, caller frees); returns how many will be asked for. */
size_t gw_cluster_return_home(struct gw_daemon *d, char **names, size_t cap);
int gw_service_register_cluster_peer(struct gw_daemon *d);

/* The VMs the newest finished evacuation moved, and where (lock held): their names and
 * destination API addresses; returns how many (up to cap). */
struct gw_evac_moved { char vm[64]; char dest[256]; };
size_t gw_evac_last_moved(struct gw_daemon *d, struct gw_evac_moved *out, size_t cap);

/* Counts the newest evacuation's steps by EvacuationStep.State (lock held); counts[6]. */
void gw_evac_count_states(struct gw_daemon *d, unsigned counts[6]);

/* The open or finished EVACUATE job created with request_id (lock held), or NULL. */
struct gw_job *gw_evac_by_request(struct gw_daemon *d, const char *request_id);
/* Fills the steps of an EVACUATE job's message (lock held; pointers into j's evacuation). */
void gw_evac_to_proto(const struct gw_job *j, Godwit__V1__Job *out);
/* A stored EVACUATE job: takes its steps (the journal); resumed by gw_evac_resume_all. */
void gw_evac_load(struct gw_job *j, const Godwit__V1__Job *pj);
/* After the VMs and jobs are loaded and the API is up: continues unfinished evacuations. */
void gw_evac_resume_all(struct gw_daemon *d);
void gw_evac_free(struct gw_job *j);

#endif
