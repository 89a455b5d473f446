/* The runner's run-state table (engine/runner/run_state.c): every control operation in every
 * state, and the ones that must never pass (anything that could run a guest that migrated
 * away or whose hand-over is in doubt). */
#include <errno.h>
#include <string.h>

#include "engine/runner/run_state.h"
#include "tests/lib/gw_test.h"

static const enum gw_run_op all_ops[] = {GW_OP_STATUS, GW_OP_PAUSE, GW_OP_RESUME, GW_OP_SAVE,
                                         GW_OP_MIGRATE, GW_OP_CANCEL_MIGRATION, GW_OP_STOP, GW_OP_RESOLVE,
                                         GW_OP_RESUME_MIGRATION};

GW_TEST(status_always_allowed)
{
    for (int s = GW_RUN_RUNNING; s <= GW_RUN_FAILED; s++) CHECK_EQ(gw_run_check(s, GW_OP_STATUS, NULL, 0), 0);
}

GW_TEST(migrated_and_in_doubt_never_resume)
{
    char why[256];
    CHECK_EQ(gw_run_check(GW_RUN_MIGRATED, GW_OP_RESUME, why, sizeof why), -ESRCH);
    CHECK(strstr(why, "migrated away"));
    CHECK_EQ(gw_run_check(GW_RUN_IN_DOUBT, GW_OP_RESUME, why, sizeof why), -ESRCH);
    CHECK(strstr(why, "in doubt"));
    /* Only RESOLVE ends a doubt (RESUME_MIGRATION takes a broken post-copy up again); only STOP and STATUS pass once the VM has left. */
    for (size_t i = 0; i < sizeof all_ops / sizeof all_ops[0]; i++) {
        enum gw_run_op op = all_ops[i];
        CHECK_EQ(gw_run_check(GW_RUN_IN_DOUBT, op, NULL, 0) == 0,
                 op == GW_OP_STATUS || op == GW_OP_RESOLVE || op == GW_OP_RESUME_MIGRATION);
        CHECK_EQ(gw_run_check(GW_RUN_MIGRATED, op, NULL, 0) == 0, op == GW_OP_STATUS || op == GW_OP_STOP);
        CHECK_EQ(gw_run_check(GW_RUN_SUSPENDED, op, NULL, 0) == 0, op == GW_OP_STATUS || op == GW_OP_STOP);
    }
}

GW_TEST(migration_owns_pause_and_resume)
{
    char why[256];
    CHECK_EQ(gw_run_check(GW_RUN_MIGRATING, GW_OP_PAUSE, why, sizeof why), -EBUSY);
    CHECK(strstr(why, "pause refused: a migration is running"));
    CHECK_EQ(gw_run_check(GW_RUN_MIGRATING, GW_OP_RESUME, NULL, 0), -EBUSY);
    CHECK_EQ(gw_run_check(GW_RUN_MIGRATING, GW_OP_SAVE, NULL, 0), -EBUSY);
    CHECK_EQ(gw_run_check(GW_RUN_MIGRATING, GW_OP_MIGRATE, NULL, 0), -EALREADY);
    CHECK_EQ(gw_run_check(GW_RUN_MIGRATING, GW_OP_CANCEL_MIGRATION, NULL, 0), 0);
    CHECK_EQ(gw_run_check(GW_RUN_MIGRATING, GW_OP_STOP, NULL, 0), 0);
}

GW_TEST(running_and_paused)
{
    CHECK_EQ(gw_run_check(GW_RUN_RUNNING, GW_OP_PAUSE, NULL, 0), 0);
    CHECK_EQ(gw_run_check(GW_RUN_RUNNING, GW_OP_RESUME, NULL, 0), 0);   /* idempotent */
    CHECK_EQ(gw_run_check(GW_RUN_RUNNING, GW_OP_MIGRATE, NULL, 0), 0);
    CHECK_EQ(gw_run_check(GW_RUN_RUNNING, GW_OP_CANCEL_MIGRATION, NULL, 0), -EALREADY);
    CHECK_EQ(gw_run_check(GW_RUN_RUNNING, GW_OP_RESOLVE, NULL, 0), -EALREADY);
    CHECK_EQ(gw_run_check(GW_RUN_PAUSED, GW_OP_MIGRATE, NULL, 0), -EBUSY);   /* its rollback would resume */
    CHECK_EQ(gw_run_check(GW_RUN_PAUSED, GW_OP_SAVE, NULL, 0), 0);
    CHECK_EQ(gw_run_check(GW_RUN_SAVING, GW_OP_RESUME, NULL, 0), -EBUSY);
}

GW_TEST(names)
{
    CHECK(!strcmp(gw_run_state_name(GW_RUN_IN_DOUBT), "in-doubt"));
    CHECK(!strcmp(gw_pause_owners_name(0), ""));
    CHECK(!strcmp(gw_pause_owners_name(GW_PAUSE_OPERATOR | GW_PAUSE_SAVE), "operator+save"));
}

/* A post-copy whose link broke holds the VM in doubt: the operator may have it reconnect
 * (maybe elsewhere) or resolve it, nothing else; outside a migration there is nothing to
 * resume. */
GW_TEST(resume_migration_only_when_migrating_or_in_doubt)
{
    char why[256];
    CHECK_EQ(gw_run_check(GW_RUN_IN_DOUBT, GW_OP_RESUME_MIGRATION, why, sizeof why), 0);
    CHECK_EQ(gw_run_check(GW_RUN_MIGRATING, GW_OP_RESUME_MIGRATION, why, sizeof why), 0);
    CHECK_EQ(gw_run_check(GW_RUN_RUNNING, GW_OP_RESUME_MIGRATION, why, sizeof why), -EALREADY);
    CHECK(strstr(why, "no post-copy migration is paused"));
    CHECK_EQ(gw_run_check(GW_RUN_MIGRATED, GW_OP_RESUME_MIGRATION, why, sizeof why), -EALREADY);
    CHECK_EQ(gw_run_check(GW_RUN_IN_DOUBT, GW_OP_RESUME, why, sizeof why), -ESRCH);
}
