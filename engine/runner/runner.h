/* godwit-vm: one process per VM. It owns the VM, answers its control socket and reports
 * the guest's counters on exit. */
#ifndef GW_RUNNER_RUNNER_H
#define GW_RUNNER_RUNNER_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/common/lat_hist.h"
#include "engine/common/lat_windows.h"
#include "engine/runner/run_state.h"
#include "engine/vm/vm.h"
#include "precopy/migration_progress.h"
#include "godwit/v1/runner.pb-c.h"

struct gw_runner {
    struct gw_vm *vm;
    uint64_t started_ns;
    uint64_t backup_from_ns, backup_to_ns;   /* this runner's last backup ran then (0: none yet) */
    int listen_fd;            /* control socket, -1 when none */
    char control_path[108];
    bool stop;                /* leave the main loop */
    enum gw_run_state state;  /* what the VM is doing; every control op is checked against it */
    unsigned pause_owners;    /* enum gw_pause_owner bits: who holds the VM paused */
    int exit_code;
    char status_err[256];     /* backing store for RunnerStatus.error */
    char secret_file[4096];   /* default cluster secret for migrations ("" = none) */
    struct gw_precopy *migration;     /* outgoing migration in progress, owned */
    struct gw_postcopy *postcopy;     /* outgoing post-copy migration in progress, owned */
    struct gw_postcopy_in *postcopy_in; /* arrived by post-copy: its pages still coming, owned */
    struct gw_instant_restore *instant; /* restored instantly: its memory still filling, owned */
    struct gw_mig_progress last_mig;  /* progress of the latest migration (in or out) */
    uint64_t linger_until_ns; /* after migrating away, keep answering status until then */
    bool incoming;            /* this VM arrived by migration */
    bool pc_held;             /* arrived by post-copy, held paused while its link is broken */
    int test_fault;           /* enum gw_mig_fault: set only by --test-fault (GODWIT_TEST_HOOKS) */
    /* The outgoing migration's hand-over record (RunnerMigrateRequest.record_path...). */
    char record_path[1024];
    char job_id[64];
    char peer[256];
    char mig_url[600];
    Godwit__V1__JobProgress status_mig;        /* backing store for RunnerStatus.migration */
    Godwit__V1__PagesByEncoding status_pages;
    Godwit__V1__InstantRestoreProgress status_instant;   /* backing store for RunnerStatus.instant_restore */
    char status_instant_phase[16], status_instant_error[600], status_instant_digest[33];
    struct gw_lat_hist status_disk_lat;        /* backing store for RunnerStatus.disk_* */
    uint32_t status_disk_windows[GW_LAT_WINDOWS];
    uint64_t status_window_ends[GW_LAT_WINDOWS];
    uint32_t status_window_ages[GW_LAT_WINDOWS];
    uint64_t status_vcpu_blocked_ms[16];      /* backing store for postcopy_vcpu_blocked_ms */
};

/* Reads a cluster secret file (trailing whitespace dropped) into buf; returns its length or
 * -errno (-EINVAL when shorter than 32 bytes, GW_SEC_MIN_SECRET). */
int gw_runner_read_secret(const char *path, uint8_t *buf, size_t cap);

/* Takes / releases one pause owner's hold: the VM is paused while any owner holds it.
 * 0 or -errno (the VM failed). */
int gw_runner_hold(struct gw_runner *r, unsigned owner);
int gw_runner_release(struct gw_runner *r, unsigned owner);

/* Ends an in-doubt hand-over: keep_source resumes the VM here, else the runner leaves as
 * "migrated". Fills err on failure. */
int gw_runner_resolve(struct gw_runner *r, bool keep_source, char *err, size_t errlen);

/* A post-copy whose link broke reconnects now, to url when not NULL/empty. Fills err. */
int gw_runner_resume_migration(struct gw_runner *r, const char *url, char *err, size_t errlen);

/* Starts an outgoing migration from a control request; fills err on failure. */
int gw_runner_migrate(struct gw_runner *r, const Godwit__V1__RunnerMigrateRequest *req, char *err, size_t errlen);
/* Called from the main loop: notices a finished migration and acts on its outcome. */
void gw_runner_poll_migration(struct gw_runner *r);

/* Backs the VM up into a chunk store (runner_backup.c); fills res or err. With
 * req->progress_ms, progress frames go to the requester's connection fd meanwhile. */
struct gw_backup_result;
int gw_runner_backup(struct gw_runner *r, const Godwit__V1__RunnerBackupRequest *req, int fd,
                     struct gw_backup_result *res, char *err, size_t errlen);

/* Instant restore (runner_instant.c), from the main loop: a stalled store pauses the VM (pause
 * owner "store") and its return resumes it; a failed restore stops the VM for good. */
void gw_runner_poll_instant(struct gw_runner *r);
/* Fills RunnerStatus.instant_restore, and the summary's JSON fields (none without one). */
void gw_runner_instant_status(struct gw_runner *r, Godwit__V1__RunnerStatus *st);
void gw_runner_instant_json(struct gw_runner *r);
/* False while the guest's status page is still to come from the store (reading it would wait). */
bool gw_runner_guest_readable(struct gw_runner *r);

/* Opens the control socket at path (replacing a stale one). */
int gw_runner_control_open(struct gw_runner *r, const char *path);
void gw_runner_control_close(struct gw_runner *r);
/* Serves one connection that is ready on listen_fd: one request, one reply. */
void gw_runner_control_serve(struct gw_runner *r);
/* The two halves every server of the socket shares (this one and busy_responder.h): reads
 * the request of a connection just accepted (5 s to send it; 0 or -errno, logged), and
 * sends rep with the runner's status and err. */
int gw_runner_control_recv(int fd, Godwit__V1__RunnerRequest **req);
void gw_runner_control_reply(struct gw_runner *r, int fd, Godwit__V1__RunnerReply *rep, char *err);

/* Fills status (strings point into static or VM storage). */
void gw_runner_fill_status(struct gw_runner *r, Godwit__V1__RunnerStatus *st, Godwit__V1__GuestCounters *c);

/* Prints the exit summary: human-readable, or one JSON line. */
void gw_runner_print_summary(struct gw_runner *r, bool json, const char *extra_json);

/* Runs the main loop until the guest ends, a signal or a control request stops it, or
 * seconds (0 = no limit) pass. */
int gw_runner_loop(struct gw_runner *r, uint64_t seconds);

#endif
