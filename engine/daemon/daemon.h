/* godwitd's shared state: the VM table, the job table and the services around them.
 *
 * Locking: one mutex (d->lock) guards the VM and job tables and every field of their
 * records; it is held only for short, non-blocking work (never across a runner call, a
 * spawn wait or a peer RPC). Long operations mark their VM `busy` (which also keeps the
 * record alive: nothing deletes a busy VM), drop the lock, do the slow part, and retake it
 * to publish the outcome; d->cond is broadcast on every VM or job state change.
 *
 * Threads: gRPC workers run the handlers; one supervisor thread watches runner processes
 * (pidfds in an epoll set), refreshes their status and restarts crashed VMs; each running
 * job has its own thread. */
#ifndef GW_DAEMON_DAEMON_H
#define GW_DAEMON_DAEMON_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/common/busy_spans.h"
#include "engine/common/limits.h"
#include "engine/daemon/config.h"
#include "engine/daemon/proc.h"
#include "godwit/v1/api.pb-c.h"
#include "godwit/v1/runner.pb-c.h"

#define GW_VM_NAME_MAX GW_LIMIT_VM_NAME_MAX      /* the limits table: engine/common/limits.h */
#define GW_GUEST_SPEC_MAX GW_LIMIT_GUEST_SPEC_MAX
#define GW_JOBS_IN_MEMORY 1000   /* finished jobs kept for ListJobs; the DB keeps more */
#define GW_JOBS_IN_DB 10000
#define GW_REQUEST_ID_MAX 63           /* request_id of mutating calls */

struct gw_db;
struct gw_grpc_server;
struct gw_grpc_health;
struct gw_grpc_call;
struct gw_grpc_reflection;

/* A VM's Linux boot and network settings (vm_boot.c); every field "" when unused. */
struct gw_vm_boot {
    char kernel[GW_LIMIT_DISK_PATH_MAX + 1];
    char initrd[GW_LIMIT_DISK_PATH_MAX + 1];
    char cmdline[GW_LIMIT_CMDLINE_MAX + 1];
    char net[24];                  /* "tap:NAME" (NAME at most 15 characters) */
    char mac[18];                  /* "aa:bb:cc:dd:ee:ff" when net is set */
};

struct gw_vm_rec {
    struct gw_vm_rec *next;
    char name[GW_VM_NAME_MAX + 1];
    uint64_t memory_bytes;
    uint32_t vcpus;
    char guest[GW_GUEST_SPEC_MAX + 1];
    char disk[512];
    uint32_t restart_kind, max_restarts, backoff_ms;
    int state;                     /* GODWIT__V1__VM__STATE__* */
    char error[256];
    uint64_t created_ms, started_ms;
    uint64_t pages_written, verify_errors, restarts, migrations;
    char control[108];             /* the runner's control socket */
    struct gw_proc proc;           /* the runner; pid 0 when none */
    bool ready;                    /* the runner answered since it was started */
    bool busy;                     /* a start/stop/delete/migration is under way */
    bool stop_requested;           /* the runner's exit is expected */
    bool incoming;                 /* destination of a migration not yet completed */
    uint64_t reserved_until_ns;    /* incoming via the migration port: waiting for the source's
                                    * connection until then (no runner yet); 0 = not waiting */
    uint8_t session_token[32];     /* incoming: PrepareIncoming's one-time token the streams carry */
    char incoming_job[64];         /* incoming: the source's job (PrepareIncoming.job_id); its
                                    * AbortIncoming and source_gone must name it ("" = any) */
    bool policy_adopted;           /* incoming: its backup policy came with it (dropped with it) */
    char reserved_by[256];         /* incoming via the migration port: the source host that asked
                                    * ("" when its name did not fit: never replaced then) */
    /* Incoming post-copy recovery (docs/postcopy.md): a source whose link broke reconnects
     * with the same token; the migration port hands its streams to the runner over the
     * runner's resume socket (resume_route.h), and only the runner's resume proof lets it in. */
    uint8_t resume_token[32];
    bool resume_route;             /* the runner listens on its resume socket */
    bool migrating_out;            /* a migration job owns the runner's exit */
    int exit_code;                 /* last exit, -1 unknown */
    char exit_why[128];
    char exit_state[32];           /* "state" of its exit summary ("migrated", "stopped", ...) */
    uint64_t exit_seq;             /* bumped at every runner exit */
    uint64_t restart_at_ns;        /* a restart is due then (0 = none) */
    uint64_t last_refresh_ns;
    /* Ownership (owner.c): a migration whose job thread is gone (re-attached after a daemon
     * restart), and a hand-over in doubt. */
    bool orphan_migration;         /* MIGRATING, followed by the supervisor's status polls */
    char runner_state[16];         /* its runner's run state at the last status ("paused"...) */
    char paused_by[32];
    bool resolver;                 /* an in-doubt resolver thread works on it */
    char in_doubt_peer[256];       /* IN_DOUBT: the destination daemon */
    char in_doubt_job[40];
    char anti_affinity[GW_VM_NAME_MAX + 1];   /* cluster placement (cluster.h) */
    uint32_t priority;
    char origin_host[GW_VM_NAME_MAX + 1];
    char labels[GW_LIMIT_LABELS_BUF];   /* canonical (labels.h); "" = none */
    struct gw_vm_boot boot;        /* a Linux guest and its network */
};

struct gw_job_watcher {
    struct gw_job_watcher *next;
    struct gw_grpc_call *call;
};

struct gw_job {
    struct gw_job *next;
    char id[40];
    int kind;                      /* GODWIT__V1__JOB__KIND__* */
    int state;                     /* GODWIT__V1__JOB__STATE__* */
    char vm[GW_VM_NAME_MAX + 1];
    char destination[256];
    Godwit__V1__MigrationPolicy policy;    /* scalars only: copied by value */
    Godwit__V1__JobProgress progress;      /* scalars; phase points at phase[] */
    Godwit__V1__PagesByEncoding pages;
    char phase[32];
    uint64_t vcpu_blocked_ms[16];  /* progress.postcopy_vcpu_blocked_ms points here */
    char error[512];
    uint64_t created_ms, started_ms, finished_ms;
    uint64_t seq;                  /* events sent */
    uint64_t last_saved_ns;
    bool cancel;                   /* CancelJob asked */
    bool switch_postcopy;          /* SwitchToPostcopy asked (hybrid) */
    bool resume_migration;         /* ResumeMigration asked (post-copy, link broken) */
    char resume_to[256];           /* its runner URL ("tcp:HOST:PORT"), "" = the same */
    bool has_thread;
    pthread_t thread;
    struct gw_job_watcher *watchers;
    struct gw_daemon *d;
    struct gw_evac *evac;          /* EVACUATE jobs: the plan and its steps (evacuate.c) */
    struct gw_bkjob *bk;           /* BACKUP, VERIFY, RESTORE jobs (backup_jobs.c) */
    char request_id[GW_REQUEST_ID_MAX + 1];   /* the caller's idempotency key, "" = none */
};

struct gw_daemon {
    struct gw_daemon_config cfg;
    char token[1024];              /* "" = no auth */
    char secret[1024];             /* the cluster secret, "" when none is configured */
    char peer_token[65];           /* the peers' API credential derived from it, "" = none */
    char vms_dir[600];
    struct gw_db *db;
    struct gw_grpc_server *srv;
    struct gw_grpc_health *health;
    uint64_t started_ns;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct gw_vm_rec *vms;
    struct gw_job *jobs;           /* newest first */
    unsigned running_migrations;   /* outgoing migrations past their queue */
    unsigned resolvers;            /* in-doubt resolver threads (owner.c) */
    bool stopping;

    int lock_fd;                   /* flock on the state directory */
    bool sup_started;
    pthread_t sup_thread;
    struct gw_migport *migport;    /* NULL when migration_port = 0 */
    int sup_epoll;                 /* pidfds of runners */
    int sup_wake;                  /* eventfd: a runner was added */
    struct gw_cluster *cluster;    /* registry and host state (cluster.h) */
    struct gw_metrics *metrics;    /* Prometheus counters and their HTTP server (metrics.h) */
    struct gw_sched *sched;        /* the backup scheduler (backup_sched.c) */
    struct gw_budget *budget;      /* the targets' cluster-wide backup budgets (backup_budget.c) */
    struct gw_busy_spans host_backups;   /* when this host's backups ran lately (backup_throttle.c) */
    struct gw_grpc_reflection *reflection;   /* the reflection services' descriptor table */
};

/* ---- daemon.c: lifecycle --------------------------------------------------------------- */
int gw_daemon_init(struct gw_daemon *d, const struct gw_daemon_config *cfg, char *err, size_t errlen);
int gw_daemon_start(struct gw_daemon *d, char *err, size_t errlen);
void gw_daemon_shutdown(struct gw_daemon *d);
uint64_t gw_unix_ms(void);

/* ---- vms.c: the VM table --------------------------------------------------------------- */
bool gw_vm_name_ok(const char *name);
/* NULL when a VM definition is acceptable, else why not (for INVALID_ARGUMENT; the string is
 * the calling thread's, valid until its next call). memory 0, vcpus 0 and guest "" mean the
 * defaults (limits.h). Checks the limits table and the guest spec, as the runner would. */
const char *gw_vm_config_invalid(const char *name, uint64_t memory, uint32_t vcpus, const char *guest,
                                 const char *disk);
struct gw_vm_rec *gw_vm_find(struct gw_daemon *d, const char *name);   /* lock held */
/* The incoming VM reserved on the migration port under token (constant-time compare; lock
 * held), or NULL. */
struct gw_vm_rec *gw_vm_find_reserved(struct gw_daemon *d, const uint8_t token[32]);
/* The incoming VM whose runner takes a reconnecting post-copy source with this token. */
struct gw_vm_rec *gw_vm_find_resumable(struct gw_daemon *d, const uint8_t token[32]);
/* Fills a Vm message from rec; strings point into rec (valid while the lock is held). */
void gw_vm_to_proto(const struct gw_daemon *d, const struct gw_vm_rec *rec, Godwit__V1__Vm *vm,
                    Godwit__V1__RestartPolicy *rp, Godwit__V1__VmCounters *c);
/* Writes rec to the database (lock held). */
int gw_vm_persist(struct gw_daemon *d, const struct gw_vm_rec *rec);
/* A handler's last step: waits until the writes it queued since mark (gw_db_mark) are durable
 * and turns its OK answer (code 0) into INTERNAL when one of them was not stored, so a client
 * never takes for done a change the next restart would lose. Returns the code to answer. */
int gw_daemon_settle(struct gw_daemon *d, struct gw_grpc_call *call, uint64_t mark, int code);
/* Allocates a record for name (not linked); control path set from the state dir. */
int gw_vm_rec_new(struct gw_daemon *d, const char *name, struct gw_vm_rec **out);
void gw_vm_unlink(struct gw_daemon *d, struct gw_vm_rec *rec);           /* lock held */
#define GW_RESTART_BACKOFF_MS_MAX 3600000u   /* a restart policy's longest wait */
/* Why rp (a request's restart policy, NULL = none) is refused, into why; NULL when it is
 * fine. One rule for CreateVm, PrepareIncoming and RestoreBackup. */
const char *gw_restart_policy_refused(const Godwit__V1__RestartPolicy *rp, char *why, size_t whylen);
/* The VM whose disk is disk (file path or rbd:POOL/IMAGE), or NULL. Lock held. */
const struct gw_vm_rec *gw_vm_disk_owner(const struct gw_daemon *d, const char *disk);
int gw_vm_load_all(struct gw_daemon *d);
/* Directory of a VM's files (logs, console, socket). */
void gw_vm_dir(const struct gw_daemon *d, const char *name, char *out, size_t len);

/* ---- vm_boot.c: Linux guests and networks of the VMs ------------------------------------
 * The daemon takes a kernel, initrd, command line and tap only when this host's own config
 * allows them (image_roots, net_taps): at CreateVm, at PrepareIncoming (the source's record is
 * a claim, checked here like a request), and again before every cold start. */
/* Checks a VM's boot and network settings for VM name with guest spec guest ("" or "linux"
 * with a kernel). net is "tap:NAME[,mac=...]". Fills out and returns GW_GRPC_OK, or a gRPC
 * code with the ErrorInfo reason in *reason and one line in why. */
int gw_vm_boot_check(const struct gw_daemon_config *cfg, const char *name, const char *guest, const char *kernel,
                     const char *initrd, const char *cmdline, const char *net, struct gw_vm_boot *out,
                     const char **reason, char *why, size_t whylen);
/* The same for a stored VM's settings, before its runner opens them: 0, or -EPERM with why. */
int gw_vm_boot_recheck(const struct gw_daemon_config *cfg, const char *name, const struct gw_vm_boot *b, char *why,
                       size_t whylen);
/* Appends the runner's options for b to argv at *n (at most 6 entries plus one of --net,
 * whose value is written into netbuf); pointers into b and netbuf. with_boot false: the
 * network only (a migration's destination gets its kernel in the VM's memory). */
void gw_vm_boot_argv(const struct gw_vm_boot *b, bool with_boot, char **argv, int *n, char *netbuf, size_t netlen);

/* ---- supervisor.c: runner processes ----------------------------------------------------- */
int gw_sup_start_thread(struct gw_daemon *d);
void gw_sup_stop_thread(struct gw_daemon *d);
/* Spawns the runner of rec (lock held; rec->busy or called by the supervisor). argv_extra
 * NULL = `run` with rec's config. On success the runner is watched. */
int gw_sup_spawn(struct gw_daemon *d, struct gw_vm_rec *rec, char *err, size_t errlen);
/* Spawns rec's runner with argv of the caller's making (a restore from a backup: backup_jobs.c);
 * lock held, as gw_sup_spawn. argv points into memory that stays valid meanwhile. */
int gw_sup_spawn_with(struct gw_daemon *d, struct gw_vm_rec *rec, char **argv, char *err, size_t errlen);
/* The same, handing pass_fds[0..npass) to the runner as its fds 3, 4, ... (the caller keeps
 * its copies): a restore's progress pipe. */
int gw_sup_spawn_with_fds(struct gw_daemon *d, struct gw_vm_rec *rec, char **argv, const int *pass_fds, unsigned npass,
                          char *err, size_t errlen);
/* Spawns a destination runner for an incoming migration: on conn_fds[0..nconn) (the accepted
 * streams of one session, handed over as its fds 3, 4, ...; the caller keeps its copies)
 * when nconn > 0 (at most GW_PROC_MAX_PASS_FDS), else listening on listen_url. */
int gw_sup_spawn_incoming(struct gw_daemon *d, struct gw_vm_rec *rec, const char *listen_url, const int *conn_fds,
                          unsigned nconn, char *err, size_t errlen);
/* Drops the record of an incoming VM that did not arrive (lock held; rec freed). */
void gw_sup_drop_incoming(struct gw_daemon *d, struct gw_vm_rec *rec);
/* Waits (lock held, dropped while waiting) until the runner answers or exits, or timeout.
 * 0 = ready; -ECHILD = it exited (rec->error says why); -ETIMEDOUT. */
int gw_sup_wait_ready(struct gw_daemon *d, struct gw_vm_rec *rec, int timeout_ms);
/* Stops rec's runner (lock held, dropped while waiting): a clean stop request unless force,
 * SIGKILL after timeout_ms. Returns 0 once it exited, or -ETIMEDOUT. */
int gw_sup_stop(struct gw_daemon *d, struct gw_vm_rec *rec, bool force, int timeout_ms);
/* Re-attaches to the runners the database says are running (at start). */
void gw_sup_reattach(struct gw_daemon *d);
/* Records that rec's runner ended unexpectedly (lock held): CRASHED, restart per policy. */
void gw_sup_crashed(struct gw_daemon *d, struct gw_vm_rec *rec, const char *why);

/* ---- jobs.c: the job table and its state machine --------------------------------------- */
struct gw_job *gw_job_find(struct gw_daemon *d, const char *id);      /* lock held */
int gw_job_new(struct gw_daemon *d, int kind, const char *vm, struct gw_job **out); /* lock held */
void gw_job_to_proto(const struct gw_job *j, Godwit__V1__Job *out);
bool gw_job_final(int state);
/* Moves j to state (lock held), persists it, tells the watchers (final states end them). */
void gw_job_set_state(struct gw_job *j, int state, const char *msg);
/* Copies a migration policy (a request's or a stored job's) into j; lock held. */
void gw_job_set_policy(struct gw_job *j, const Godwit__V1__MigrationPolicy *p);
/* Copies migration progress (the runner's or a stored job's) into j; lock held. */
void gw_job_take_progress(struct gw_job *j, const Godwit__V1__JobProgress *p);
/* Publishes a progress event (lock held). Progress is not written to the database here:
 * the job's thread calls gw_job_save_progress outside the lock. */
void gw_job_progress(struct gw_job *j, const char *msg);
/* Writes j to the database now (lock held). */
void gw_job_persist(struct gw_job *j);
/* Writes j's progress when the last write is 2 s old (lock NOT held: packed under the lock,
 * written after it, so that an fsync never stalls the API). Only j's own thread calls it. */
void gw_job_save_progress(struct gw_daemon *d, struct gw_job *j);
/* Adds a watcher for a WatchJob call (lock held): sends the current state at once. */
int gw_job_watch(struct gw_job *j, struct gw_grpc_call *call);
int gw_jobs_load(struct gw_daemon *d);
void gw_jobs_shutdown(struct gw_daemon *d);

/* ---- migrate.c: migration jobs (source) and incoming migrations (destination) ---------- */
int gw_migrate_start(struct gw_daemon *d, struct gw_job *j);          /* lock held */
/* A gRPC client to a peer daemon's API at addr, with the cluster's peer credential (and TLS
 * when peer_ca is set). Lock not held. */
struct gw_grpc_client;
int gw_peer_connect(struct gw_daemon *d, const char *addr, struct gw_grpc_client **c);
void gw_migrate_cancel(struct gw_daemon *d, struct gw_job *j);        /* lock held */

/* ---- owner.c: which host owns a VM after a hand-over -------------------------------------
 * A source runner leaves a HandoverRecord (runner.proto) when its VM moved or the move fell
 * in doubt; these read it so that such a runner's exit is never taken for a crash, and
 * settle in-doubt hand-overs by asking the destination (GodwitPeer.QueryIncoming), or by the
 * operator's word (ResolveVm). */
enum gw_settle { GW_SETTLE_NONE = 0, GW_SETTLE_MOVED, GW_SETTLE_IN_DOUBT };
/* The path of a VM's hand-over record. */
void gw_handover_path(const struct gw_daemon *d, const char *name, char *out, size_t len);
/* rec's runner is gone and no job thread follows it (lock held). MOVED: the VM runs on the
 * destination; rec has been freed and its open job SUCCEEDED. IN_DOUBT: rec is IN_DOUBT and
 * a resolver runs. NONE: no record; the caller handles the exit. */
enum gw_settle gw_owner_settle_exit(struct gw_daemon *d, struct gw_vm_rec *rec);
/* Removes name's hand-over record: once the VM it speaks of is gone from here (migrated and
 * forgotten) it is stale, and a later VM of that name (a return home, a new one) must not be
 * taken for handed over. */
void gw_owner_remove_record(struct gw_daemon *d, const char *name);
/* Whether a peer's job_id names the migration that made incoming rec (or rec records none). */
bool gw_incoming_job_is(const struct gw_vm_rec *rec, const char *job_id);
/* Marks rec IN_DOUBT (lock held) and starts its resolver. */
void gw_owner_in_doubt(struct gw_daemon *d, struct gw_vm_rec *rec, const char *peer, const char *job_id,
                       const char *why);
/* rec's runner died during an outgoing migration and left no hand-over record (lock held).
 * It may have died after GO, with the VM running on the destination: with an open migration
 * job, rec goes IN_DOUBT and the destination is asked; without one it is a crash. */
void gw_owner_runner_lost(struct gw_daemon *d, struct gw_vm_rec *rec, const char *why);
/* True when the open job of rec's re-attached migration was cancelled (lock held). */
bool gw_owner_cancel_wanted(struct gw_daemon *d, struct gw_vm_rec *rec);
/* A status reply of a runner whose migration no job thread follows (lock held). */
void gw_owner_orphan_status(struct gw_daemon *d, struct gw_vm_rec *rec, const Godwit__V1__RunnerStatus *st);
/* After re-attach: open jobs either belong to a re-attached migration or in-doubt VM, or
 * end as interrupted (lock held). */
void gw_owner_settle_jobs(struct gw_daemon *d);
int gw_service_register_owner(struct gw_daemon *d);
/* Waits for the resolver threads to leave (d->stopping set). */
void gw_owner_shutdown(struct gw_daemon *d);

/* ---- migport.c: the host's migration port ------------------------------------------------ */
int gw_migport_start(struct gw_daemon *d, char *err, size_t errlen);
void gw_migport_stop(struct gw_daemon *d);

/* ---- service_*.c: gRPC handlers ------------------------------------------------------- */
int gw_service_register_vm(struct gw_daemon *d);
int gw_service_register_job(struct gw_daemon *d);
int gw_service_register_peer(struct gw_daemon *d);
int gw_service_register_cluster(struct gw_daemon *d);
int gw_service_register_backup(struct gw_daemon *d);   /* service_backup.c */

#endif
