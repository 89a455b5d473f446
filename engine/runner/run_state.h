/* The runner's run state: one value says what the VM is doing, and every control operation
 * is checked against it before it touches the VM. It replaces a handful of booleans that
 * could disagree (a SAVE spanning a switchover used to resume the guest that pre-copy had
 * paused; a RESUME after the hand-over ran the guest on two hosts).
 *
 *   RUNNING <-> PAUSED                 PAUSE / RESUME (pause owner: the operator)
 *   RUNNING|PAUSED -> SAVING -> back   SAVE (pause owner: the save, released after it)
 *   SAVING -> SUSPENDED                SAVE with stop_after: the runner leaves
 *   RUNNING -> MIGRATING               MIGRATE (the migration owns pause and resume)
 *   MIGRATING -> RUNNING               failed or cancelled before GO: the VM runs on here
 *   MIGRATING -> MIGRATED              the destination runs the VM: terminal, never resumed
 *   MIGRATING -> IN_DOUBT              GO sent, RUNNING lost: paused until resolved
 *   MIGRATING -> IN_DOUBT              post-copy's link broke: paused here, reconnecting
 *   IN_DOUBT -> MIGRATING              post-copy resumed (by itself or RESUME_MIGRATION)
 *   IN_DOUBT -> RUNNING | MIGRATED     RESOLVE keep_source / keep_destination
 *   any -> STOPPED | FAILED            the runner ends / the VM failed
 *
 * The VM is paused exactly while some owner holds it (pause_owners != 0), except during a
 * migration, whose thread pauses and resumes the VM itself. */
#ifndef GW_RUNNER_RUN_STATE_H
#define GW_RUNNER_RUN_STATE_H

#include <stddef.h>

enum gw_run_state {
    GW_RUN_RUNNING = 0,
    GW_RUN_PAUSED,
    GW_RUN_SAVING,
    GW_RUN_MIGRATING,
    GW_RUN_IN_DOUBT,
    GW_RUN_MIGRATED,
    GW_RUN_SUSPENDED,
    GW_RUN_STOPPED,
    GW_RUN_FAILED,
};

/* Who holds the VM paused (a bit mask). */
enum gw_pause_owner {
    GW_PAUSE_OPERATOR = 1u << 0,   /* a PAUSE request */
    GW_PAUSE_SAVE = 1u << 1,       /* a SAVE in progress */
    GW_PAUSE_IN_DOUBT = 1u << 2,   /* the hand-over is in doubt: the copy here must not run */
    GW_PAUSE_STORE = 1u << 3,      /* instant restore: the backup store stopped answering */
};

enum gw_run_op {
    GW_OP_STATUS,
    GW_OP_PAUSE,
    GW_OP_RESUME,
    GW_OP_SAVE,
    GW_OP_MIGRATE,
    GW_OP_CANCEL_MIGRATION,
    GW_OP_STOP,
    GW_OP_RESOLVE,
    GW_OP_BACKUP,    /* runs to its end inside the request; takes its own short pause */
    GW_OP_SWITCH_TO_POSTCOPY,  /* a hybrid migration leaves pre-copy now */
    GW_OP_RESUME_MIGRATION,    /* a post-copy whose link broke reconnects now (maybe elsewhere) */
};

/* The state's name as the control socket and the daemon show it ("running", "in-doubt"...). */
const char *gw_run_state_name(enum gw_run_state s);
/* "operator", "operator+save"... or "" when nobody holds the VM paused. */
const char *gw_pause_owners_name(unsigned owners);

/* 0 when op is allowed in state s; otherwise -EBUSY (a migration or save owns the VM),
 * -EALREADY (nothing to do, e.g. MIGRATE while migrating) or -ESRCH (the VM is gone from
 * here: migrated, in doubt, stopped, failed), with a one-line reason for the operator in
 * why. PAUSE of a paused VM and RESUME of a running one are allowed (idempotent). */
int gw_run_check(enum gw_run_state s, enum gw_run_op op, char *why, size_t len);

#endif
