/* The run-state table (see run_state.h): which control operation each state allows, and why
 * the others are refused. */
#include "engine/runner/run_state.h"

#include <errno.h>
#include <stdio.h>

const char *gw_run_state_name(enum gw_run_state s)
{
    switch (s) {
    case GW_RUN_RUNNING: return "running";
    case GW_RUN_PAUSED: return "paused";
    case GW_RUN_SAVING: return "saving";
    case GW_RUN_MIGRATING: return "migrating";
    case GW_RUN_IN_DOUBT: return "in-doubt";
    case GW_RUN_MIGRATED: return "migrated";
    case GW_RUN_SUSPENDED: return "suspended";
    case GW_RUN_STOPPED: return "stopped";
    case GW_RUN_FAILED: return "failed";
    }
    return "unknown";
}

const char *gw_pause_owners_name(unsigned o)
{
    static const char *const names[] = {
        "", "operator", "save", "operator+save", "in-doubt", "operator+in-doubt", "save+in-doubt",
        "operator+save+in-doubt", "store", "operator+store", "save+store", "operator+save+store",
        "in-doubt+store", "operator+in-doubt+store", "save+in-doubt+store", "operator+save+in-doubt+store",
    };
    return names[o & 15];
}

static const char *op_name(enum gw_run_op op)
{
    static const char *const names[] = {"status", "pause", "resume", "save", "migrate",
                                        "cancel-migration", "stop", "resolve", "backup",
                                        "switch-to-postcopy", "resume-migration"};
    return (unsigned)op < sizeof names / sizeof names[0] ? names[op] : "?";
}

int gw_run_check(enum gw_run_state s, enum gw_run_op op, char *why, size_t len)
{
    if (op == GW_OP_STATUS) return 0;
    if (op == GW_OP_SWITCH_TO_POSTCOPY && s != GW_RUN_MIGRATING) {
        if (why && len) snprintf(why, len, "switch-to-postcopy refused: no hybrid migration is running");
        return -EALREADY;
    }
    if (op == GW_OP_RESUME_MIGRATION && s != GW_RUN_IN_DOUBT && s != GW_RUN_MIGRATING) {
        if (why && len) snprintf(why, len, "resume-migration refused: no post-copy migration is paused");
        return -EALREADY;
    }
    const char *reason = NULL;
    int err = -EBUSY;
    switch (s) {
    case GW_RUN_RUNNING:
        if (op == GW_OP_CANCEL_MIGRATION) { reason = "no migration is running"; err = -EALREADY; }
        else if (op == GW_OP_RESOLVE) { reason = "no hand-over is in doubt"; err = -EALREADY; }
        break;
    case GW_RUN_PAUSED:
        if (op == GW_OP_MIGRATE) reason = "the VM is paused: resume it before migrating it";
        else if (op == GW_OP_CANCEL_MIGRATION) { reason = "no migration is running"; err = -EALREADY; }
        else if (op == GW_OP_RESOLVE) { reason = "no hand-over is in doubt"; err = -EALREADY; }
        break;
    case GW_RUN_SAVING:
        if (op != GW_OP_STOP) reason = "a save is in progress";
        break;
    case GW_RUN_MIGRATING:
        if (op == GW_OP_MIGRATE) { reason = "a migration is already running"; err = -EALREADY; }
        else if (op == GW_OP_PAUSE || op == GW_OP_RESUME || op == GW_OP_SAVE || op == GW_OP_BACKUP)
            reason = "a migration is running and owns the VM's pause and resume: cancel it first";
        else if (op == GW_OP_RESOLVE) { reason = "no hand-over is in doubt"; err = -EALREADY; }
        break;
    case GW_RUN_IN_DOUBT:
        if (op != GW_OP_RESOLVE && op != GW_OP_RESUME_MIGRATION) {
            reason = "the hand-over to the destination is in doubt: the VM may run there; resolve it "
                     "(keep-source or keep-destination) first";
            err = -ESRCH;
        }
        break;
    case GW_RUN_MIGRATED:
        if (op != GW_OP_STOP) { reason = "the VM has migrated away and runs on the destination now"; err = -ESRCH; }
        break;
    case GW_RUN_SUSPENDED:
        if (op != GW_OP_STOP) { reason = "the VM is saved and suspended: restore it from its file"; err = -ESRCH; }
        break;
    case GW_RUN_STOPPED:
        if (op != GW_OP_STOP) { reason = "the VM is stopping"; err = -ESRCH; }
        break;
    case GW_RUN_FAILED:
        if (op != GW_OP_STOP) { reason = "the VM has failed"; err = -ESRCH; }
        break;
    }
    if (!reason) return 0;
    if (why && len) snprintf(why, len, "%s refused: %s", op_name(op), reason);
    return err;
}
