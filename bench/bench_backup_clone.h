/* The clone part of `godwit-bench backup` (bench_backup_clone.c). */
#ifndef GW_BENCH_BACKUP_CLONE_H
#define GW_BENCH_BACKUP_CLONE_H

#include <stddef.h>
#include <stdint.h>

struct gw_bench_clone_params {
    const char *vm_bin;           /* godwit-vm */
    const char *dir;              /* the bench's temporary directory (sockets, outputs) */
    const char *from_vm;          /* the backed-up VM: its latest backup is restored */
    const char *store_args[4];    /* --store SPEC [--ceph-conf CONF] (NULLs at the end) */
    uint64_t change_bytes;        /* guest pages to write before the clone's backup, in bytes */
};

struct gw_bench_clone {
    double restore_mib_s;         /* the restore's own figure */
    char restore_digest[40];      /* memory digest right after the restore */
    uint64_t verify_errors;       /* the clone guest's, at its end */
    uint64_t changed_bytes;       /* guest pages written between start and pause, in bytes */
    uint64_t new_bytes, new_chunks, chunks;   /* the clone's backup */
    uint64_t patched_chunks;      /* of its chunks, stored as page patches over the template's */
};

/* Restores, runs, changes, pauses, backs up and stops the clone. 0, or -1 with err set. */
int gw_bench_backup_clone(const struct gw_bench_clone_params *p, struct gw_bench_clone *c, char *err, size_t errlen);

#endif
