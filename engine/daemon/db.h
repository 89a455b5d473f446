/* godwitd's state database: VM definitions and job history in SQLite, in the state
 * directory. Each record is stored whole, as its packed protobuf (the API's Vm and Job
 * messages: one schema, versioned by adding fields), next to the few columns we query by.
 *
 * Crash safety: WAL journal with synchronous=FULL, so a write returns only once it is
 * durable and a crash at any point leaves either the old or the new record, never half of
 * one; every change is one statement (an implicit transaction) on one record. The connection is serialized by a mutex: handlers on several
 * threads may call in.
 *
 * Writes are queued: put and delete copy their record and return at once (0, or -ENOMEM),
 * and one writer thread runs them in the order they were queued, so that no caller waits
 * for an fsync under its own lock (godwitd's table lock: GetVm and ListVms run on the gRPC
 * loop and take it). gw_db_flush waits until everything queued before it is durable; a
 * handler calls it before it answers, so a client never sees a change that a crash could
 * still undo. Loads flush first. */
#ifndef GW_DAEMON_DB_H
#define GW_DAEMON_DB_H

#include <stddef.h>
#include <stdint.h>

#include "godwit/v1/api.pb-c.h"

struct gw_db;

/* Opens (creating when needed) path. Returns 0 or -errno / -EIO with the reason in err. */
int gw_db_open(const char *path, struct gw_db **out, char *err, size_t errlen);
void gw_db_close(struct gw_db *db);

/* Inserts or replaces a VM definition (by name). 0 or -EIO. */
int gw_db_put_vm(struct gw_db *db, const Godwit__V1__Vm *vm);
/* Waits until every write queued before the call is durable (each failure is logged; a
 * caller that must know of its own takes a mark). */
void gw_db_flush(struct gw_db *db);
/* For a caller that must not take for done a change that was not stored: take a mark before
 * queueing its writes, then gw_db_flush_since waits like gw_db_flush and returns -EIO when any
 * write queued after the mark failed (its own, or, erring on the safe side, another's queued
 * meanwhile). No caller's flush consumes another's failure. */
uint64_t gw_db_mark(struct gw_db *db);
int gw_db_flush_since(struct gw_db *db, uint64_t mark);
int gw_db_delete_vm(struct gw_db *db, const char *name);
/* Calls fn for each stored VM (the message is freed after fn returns). Records that fail to
 * decode are skipped with a warning. 0 or -EIO. */
typedef void (*gw_db_vm_fn)(void *arg, const Godwit__V1__Vm *vm);
int gw_db_load_vms(struct gw_db *db, gw_db_vm_fn fn, void *arg);

/* Inserts or replaces a job (by id). 0 or -EIO. */
int gw_db_put_job(struct gw_db *db, const Godwit__V1__Job *job);
/* The same from a job already packed (rec, len bytes), so that the packing can happen under
 * the caller's lock and the durable write after it. */
int gw_db_put_job_packed(struct gw_db *db, const char *id, const char *vm, int state, uint64_t created_ms,
                         const uint8_t *rec, size_t len);
/* The newest `limit` jobs, oldest first. */
typedef void (*gw_db_job_fn)(void *arg, const Godwit__V1__Job *job);
int gw_db_load_jobs(struct gw_db *db, unsigned limit, gw_db_job_fn fn, void *arg);
/* Deletes finished jobs beyond the newest `keep`. */
int gw_db_prune_jobs(struct gw_db *db, unsigned keep);

/* Backup policies (backup_policy.h), one per VM, stored as their packed BackupPolicy. */
int gw_db_put_policy(struct gw_db *db, const char *vm, const ProtobufCMessage *policy);
int gw_db_delete_policy(struct gw_db *db, const char *vm);
/* Queues the removal of vm's run records of label policies (keys "vm@..."). */
int gw_db_delete_policy_runs(struct gw_db *db, const char *vm);
int gw_db_load_policies(struct gw_db *db, const ProtobufCMessageDescriptor *desc,
                        void (*fn)(void *arg, const ProtobufCMessage *policy), void *arg);

#endif
