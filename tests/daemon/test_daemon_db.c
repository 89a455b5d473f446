/* Unit tests for godwitd's SQLite store (engine/daemon/db.c): VM records round-trip, replace
 * and delete; jobs come back newest-limited and oldest first; pruning keeps open jobs; the
 * database reopens with everything written (WAL), and a corrupt record is skipped. */
#include "engine/daemon/db.h"
#include "tests/lib/gw_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64], path[128];

static struct gw_db *open_db(void)
{
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/gw-db-XXXXXX");
        if (!mkdtemp(dir)) return NULL;
        snprintf(path, sizeof path, "%s/godwit.db", dir);
    }
    struct gw_db *db;
    char err[256];
    return gw_db_open(path, &db, err, sizeof err) ? NULL : db;
}

struct seen { int n; char names[8][32]; uint64_t mem[8]; };

static void on_vm(void *arg, const Godwit__V1__Vm *vm)
{
    struct seen *s = arg;
    if (s->n < 8) {
        snprintf(s->names[s->n], 32, "%s", vm->name);
        s->mem[s->n] = vm->memory_bytes;
    }
    s->n++;
}

static void on_job(void *arg, const Godwit__V1__Job *j)
{
    struct seen *s = arg;
    if (s->n < 8) {
        snprintf(s->names[s->n], 32, "%s", j->id);
        s->mem[s->n] = j->created_unix_ms;
    }
    s->n++;
}

GW_TEST(vms_roundtrip)
{
    struct gw_db *db = open_db();
    REQUIRE(db);
    Godwit__V1__Vm vm = GODWIT__V1__VM__INIT;
    vm.name = "a";
    vm.memory_bytes = 1;
    CHECK_EQ(gw_db_put_vm(db, &vm), 0);
    vm.name = "b";
    CHECK_EQ(gw_db_put_vm(db, &vm), 0);
    vm.name = "a";
    vm.memory_bytes = 2;                       /* replaces */
    CHECK_EQ(gw_db_put_vm(db, &vm), 0);
    gw_db_close(db);

    db = open_db();                            /* what was written is there after reopening */
    REQUIRE(db);
    struct seen s = {0};
    CHECK_EQ(gw_db_load_vms(db, on_vm, &s), 0);
    CHECK_EQ(s.n, 2);
    CHECK(!strcmp(s.names[0], "a") && s.mem[0] == 2);
    CHECK(!strcmp(s.names[1], "b"));
    CHECK_EQ(gw_db_delete_vm(db, "a"), 0);
    s = (struct seen){0};
    gw_db_load_vms(db, on_vm, &s);
    CHECK_EQ(s.n, 1);
    gw_db_close(db);
}

GW_TEST(jobs_history)
{
    struct gw_db *db = open_db();
    REQUIRE(db);
    for (int i = 0; i < 6; i++) {
        Godwit__V1__Job j = GODWIT__V1__JOB__INIT;
        char id[16];
        snprintf(id, sizeof id, "job-%d", i);
        j.id = id;
        j.vm = "a";
        j.created_unix_ms = 1000 + (uint64_t)i;
        j.state = i == 0 ? GODWIT__V1__JOB__STATE__RUNNING : GODWIT__V1__JOB__STATE__SUCCEEDED;
        CHECK_EQ(gw_db_put_job(db, &j), 0);
    }
    struct seen s = {0};
    CHECK_EQ(gw_db_load_jobs(db, 3, on_job, &s), 0);   /* the newest three, oldest first */
    CHECK_EQ(s.n, 3);
    CHECK(!strcmp(s.names[0], "job-3") && !strcmp(s.names[2], "job-5"));
    CHECK_EQ(gw_db_prune_jobs(db, 2), 0);               /* finished beyond the newest 2 go */
    s = (struct seen){0};
    gw_db_load_jobs(db, 100, on_job, &s);
    CHECK_EQ(s.n, 3);                                   /* job-0 stays: it is still open */
    CHECK(!strcmp(s.names[0], "job-0"));
    gw_db_close(db);
}

GW_TEST(corrupt_record_skipped)
{
    struct gw_db *db = open_db();
    REQUIRE(db);
    gw_db_close(db);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "command -v sqlite3 >/dev/null && sqlite3 %s \"INSERT INTO vms VALUES ('zz', x'ffffffff')\"", path);
    if (system(cmd) != 0) { gw_test_skip("sqlite3 shell not installed"); return; }
    db = open_db();
    REQUIRE(db);
    struct seen s = {0};
    CHECK_EQ(gw_db_load_vms(db, on_vm, &s), 0);
    for (int i = 0; i < s.n && i < 8; i++) CHECK(strcmp(s.names[i], "zz"));
    gw_db_close(db);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK_EQ(system(cmd), 0);
}
