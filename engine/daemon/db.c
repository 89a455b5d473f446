/* SQLite storage of VMs and jobs (see db.h). */
#include "engine/daemon/db.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "engine/common/log.h"

/* One queued write: its statement's parameters and the packed record, in one allocation. */
struct db_op {
    struct db_op *next;
    const char *sql;
    const char *t1, *t2;          /* point into data[] (t2 NULL when unused) */
    int64_t i3, i4;
    const uint8_t *rec;           /* NULL: a DELETE with t1 only */
    size_t len;
    char data[];
};

struct gw_db {
    sqlite3 *h;
    pthread_mutex_t lock;         /* the connection */
    /* The write queue: callers (under godwitd's table lock) only pack and append; one writer
     * thread runs the statements in order, so the fsync of synchronous=FULL never happens
     * under the caller's lock. gw_db_flush waits for what was queued before it. */
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    struct db_op *head, *tail;
    uint64_t queued, written;
    uint64_t failed_seq;          /* the number of the latest write that failed (1 = the first
                                   * queued); 0 = none */
    bool stop;
    bool writer_started;
    pthread_t writer;
};

static int run_op(struct gw_db *db, const struct db_op *op);

static void *writer_main(void *arg)
{
    struct gw_db *db = arg;
    pthread_mutex_lock(&db->qlock);
    for (;;) {
        while (!db->head && !db->stop) pthread_cond_wait(&db->qcond, &db->qlock);
        if (!db->head) break;   /* stopping, and everything is written */
        struct db_op *op = db->head;
        db->head = op->next;
        if (!db->head) db->tail = NULL;
        pthread_mutex_unlock(&db->qlock);
        int r = run_op(db, op);
        free(op);
        pthread_mutex_lock(&db->qlock);
        if (r) db->failed_seq = db->written + 1;   /* writes run in the order they were queued */
        db->written++;
        pthread_cond_broadcast(&db->qcond);
    }
    pthread_mutex_unlock(&db->qlock);
    return NULL;
}

/* Queues one write; the strings and the record are copied. 0 or -ENOMEM. */
static int enqueue(struct gw_db *db, const char *sql, const char *t1, const char *t2, int64_t i3, int64_t i4,
                   const uint8_t *rec, size_t len)
{
    size_t l1 = strlen(t1) + 1, l2 = t2 ? strlen(t2) + 1 : 0;
    struct db_op *op = malloc(sizeof *op + l1 + l2 + len);
    if (!op) return -ENOMEM;
    char *p = op->data;
    memcpy(p, t1, l1);
    op->t1 = p;
    p += l1;
    op->t2 = NULL;
    if (t2) { memcpy(p, t2, l2); op->t2 = p; p += l2; }
    op->rec = NULL;
    if (rec) { if (len) memcpy(p, rec, len); op->rec = (const uint8_t *)p; }
    op->len = len;
    op->sql = sql;
    op->i3 = i3;
    op->i4 = i4;
    op->next = NULL;
    pthread_mutex_lock(&db->qlock);
    if (db->tail) db->tail->next = op;
    else db->head = op;
    db->tail = op;
    db->queued++;
    pthread_cond_signal(&db->qcond);
    pthread_mutex_unlock(&db->qlock);
    return 0;
}

void gw_db_flush(struct gw_db *db)
{
    gw_db_flush_since(db, UINT64_MAX);
}

uint64_t gw_db_mark(struct gw_db *db)
{
    pthread_mutex_lock(&db->qlock);
    uint64_t m = db->queued;
    pthread_mutex_unlock(&db->qlock);
    return m;
}

int gw_db_flush_since(struct gw_db *db, uint64_t mark)
{
    pthread_mutex_lock(&db->qlock);
    uint64_t target = db->queued;
    while (db->written < target) pthread_cond_wait(&db->qcond, &db->qlock);
    /* Any write after the mark that failed may be the caller's: say so (a write of another
     * caller's in between makes this err on the side of reporting a failure). */
    int r = db->failed_seq > mark ? -EIO : 0;
    pthread_mutex_unlock(&db->qlock);
    return r;
}

static const char *const schema =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=FULL;"
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "INSERT OR IGNORE INTO meta VALUES ('schema', '1');"
    "CREATE TABLE IF NOT EXISTS vms (name TEXT PRIMARY KEY, record BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, vm TEXT NOT NULL, state INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL, record BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_ms);"
    "CREATE TABLE IF NOT EXISTS backup_policies (vm TEXT PRIMARY KEY, record BLOB NOT NULL);";

int gw_db_open(const char *path, struct gw_db **out, char *err, size_t errlen)
{
    struct gw_db *db = calloc(1, sizeof *db);
    if (!db) return -ENOMEM;
    pthread_mutex_init(&db->lock, NULL);
    pthread_mutex_init(&db->qlock, NULL);
    pthread_cond_init(&db->qcond, NULL);
    int rc = sqlite3_open_v2(path, &db->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                             SQLITE_OPEN_FULLMUTEX, NULL);
    char *msg = NULL;
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db->h, 5000);
        rc = sqlite3_exec(db->h, schema, NULL, NULL, &msg);
    }
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, msg ? msg : sqlite3_errmsg(db->h));
        sqlite3_free(msg);
        gw_db_close(db);
        return -EIO;
    }
    rc = pthread_create(&db->writer, NULL, writer_main, db);
    if (rc) {
        snprintf(err, errlen, "%s: cannot start the writer thread: %s", path, strerror(rc));
        gw_db_close(db);
        return -rc;
    }
    db->writer_started = true;
    *out = db;
    return 0;
}

void gw_db_close(struct gw_db *db)
{
    if (!db) return;
    if (db->writer_started) {   /* everything queued is written first */
        pthread_mutex_lock(&db->qlock);
        db->stop = true;
        pthread_cond_broadcast(&db->qcond);
        pthread_mutex_unlock(&db->qlock);
        pthread_join(db->writer, NULL);
    }
    sqlite3_close(db->h);
    pthread_cond_destroy(&db->qcond);
    pthread_mutex_destroy(&db->qlock);
    pthread_mutex_destroy(&db->lock);
    free(db);
}

/* Runs sql with text parameter t1 (then t2, i3, i4 when t2 is set) and the packed record
 * buf as the last parameter. */
static int put_packed(struct gw_db *db, const char *sql, const uint8_t *buf, size_t len,
                      const char *t1, const char *t2, int64_t i3, int64_t i4)
{
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->h, sql, -1, &st, NULL);
    int n = 1;
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, n++, t1, -1, SQLITE_STATIC);
        if (t2) {
            sqlite3_bind_text(st, n++, t2, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, n++, i3);
            sqlite3_bind_int64(st, n++, i4);
        }
        sqlite3_bind_blob(st, n, buf, (int)len, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE) gw_error("db: %s: %s", sql, sqlite3_errmsg(db->h));
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

static int exec_text(struct gw_db *db, const char *sql, const char *t, int64_t i);

static int run_op(struct gw_db *db, const struct db_op *op)
{
    if (!op->rec) return exec_text(db, op->sql, op->t1, 0);
    return put_packed(db, op->sql, op->rec, op->len, op->t1, op->t2, op->i3, op->i4);
}

static int put_record(struct gw_db *db, const char *sql, const ProtobufCMessage *msg,
                      const char *t1, const char *t2, int64_t i3, int64_t i4)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return -ENOMEM;
    protobuf_c_message_pack(msg, buf);
    int r = enqueue(db, sql, t1, t2, i3, i4, buf, len);
    free(buf);
    return r;
}

#define PUT_JOB_SQL "INSERT OR REPLACE INTO jobs (id, vm, state, created_ms, record) VALUES (?, ?, ?, ?, ?)"

int gw_db_put_job_packed(struct gw_db *db, const char *id, const char *vm, int state, uint64_t created_ms,
                         const uint8_t *rec, size_t len)
{
    return enqueue(db, PUT_JOB_SQL, id, vm, state, (int64_t)created_ms, rec, len);
}

int gw_db_put_vm(struct gw_db *db, const Godwit__V1__Vm *vm)
{
    return put_record(db, "INSERT OR REPLACE INTO vms (name, record) VALUES (?, ?)", &vm->base,
                      vm->name, NULL, 0, 0);
}

int gw_db_put_job(struct gw_db *db, const Godwit__V1__Job *job)
{
    return put_record(db, PUT_JOB_SQL, &job->base, job->id, job->vm, job->state, (int64_t)job->created_unix_ms);
}

static int exec_text(struct gw_db *db, const char *sql, const char *t, int64_t i)
{
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->h, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        if (t) sqlite3_bind_text(st, 1, t, -1, SQLITE_STATIC);
        else sqlite3_bind_int64(st, 1, i);
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE) gw_error("db: %s: %s", sql, sqlite3_errmsg(db->h));
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

int gw_db_delete_vm(struct gw_db *db, const char *name)
{
    return enqueue(db, "DELETE FROM vms WHERE name = ?", name, NULL, 0, 0, NULL, 0);
}

int gw_db_prune_jobs(struct gw_db *db, unsigned keep)
{
    gw_db_flush(db);
    return exec_text(db, "DELETE FROM jobs WHERE state >= 3 AND id NOT IN "
                         "(SELECT id FROM jobs ORDER BY created_ms DESC LIMIT ?)", NULL, keep);
}

/* Runs a query whose first column is a packed record of type desc; fn gets each. */
static int load(struct gw_db *db, const char *sql, int64_t limit,
                const ProtobufCMessageDescriptor *desc, void (*fn)(void *, const ProtobufCMessage *), void *arg)
{
    gw_db_flush(db);   /* read what was written, queued writes included */
    pthread_mutex_lock(&db->lock);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->h, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && limit >= 0) sqlite3_bind_int64(st, 1, limit);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const void *blob = sqlite3_column_blob(st, 0);
        int len = sqlite3_column_bytes(st, 0);
        ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, (size_t)len, blob);
        if (!m) { gw_warn("db: skipping an undecodable %s record", desc->short_name); rc = SQLITE_OK; continue; }
        fn(arg, m);
        protobuf_c_message_free_unpacked(m, NULL);
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE) gw_error("db: %s: %s", sql, sqlite3_errmsg(db->h));
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->lock);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

struct vm_tramp { gw_db_vm_fn fn; void *arg; };
static void vm_tramp(void *arg, const ProtobufCMessage *m)
{
    struct vm_tramp *t = arg;
    t->fn(t->arg, (const Godwit__V1__Vm *)m);
}

struct job_tramp { gw_db_job_fn fn; void *arg; };
static void job_tramp(void *arg, const ProtobufCMessage *m)
{
    struct job_tramp *t = arg;
    t->fn(t->arg, (const Godwit__V1__Job *)m);
}

int gw_db_load_vms(struct gw_db *db, gw_db_vm_fn fn, void *arg)
{
    struct vm_tramp t = {fn, arg};
    return load(db, "SELECT record FROM vms ORDER BY name", -1, &godwit__v1__vm__descriptor, vm_tramp, &t);
}

int gw_db_load_jobs(struct gw_db *db, unsigned limit, gw_db_job_fn fn, void *arg)
{
    struct job_tramp t = {fn, arg};
    return load(db, "SELECT record FROM (SELECT record, created_ms FROM jobs ORDER BY created_ms DESC LIMIT ?) "
                    "ORDER BY created_ms", limit, &godwit__v1__job__descriptor, job_tramp, &t);
}

int gw_db_put_policy(struct gw_db *db, const char *vm, const ProtobufCMessage *policy)
{
    return put_record(db, "INSERT OR REPLACE INTO backup_policies (vm, record) VALUES (?, ?)", policy, vm, NULL, 0, 0);
}

int gw_db_delete_policy(struct gw_db *db, const char *vm)
{
    return enqueue(db, "DELETE FROM backup_policies WHERE vm = ?", vm, NULL, 0, 0, NULL, 0);
}

int gw_db_delete_policy_runs(struct gw_db *db, const char *vm)
{
    /* Keys "VM@KEY=VALUE": from "VM@" up to, not including, "VM" and the next byte after '@'. */
    return enqueue(db, "DELETE FROM backup_policies WHERE vm >= ?1 || '@' AND vm < ?1 || 'A'", vm, NULL, 0, 0, NULL, 0);
}

int gw_db_load_policies(struct gw_db *db, const ProtobufCMessageDescriptor *desc,
                        void (*fn)(void *arg, const ProtobufCMessage *policy), void *arg)
{
    return load(db, "SELECT record FROM backup_policies ORDER BY vm", -1, desc, fn, arg);
}
