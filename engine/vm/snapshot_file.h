/* Suspend-to-file: a VM's state and memory in one file, written atomically (a temporary
 * name, fsync, rename), so a crash mid-save never destroys an earlier snapshot.
 *
 * Layout: a 4 KiB header (magic, version, offsets, lengths, checksums), the VmState
 * protobuf, then guest memory at a 4 KiB-aligned offset, one byte per byte of RAM, with zero
 * pages left as holes (a sparse file). The header records the memory digest so that a
 * restore can prove it loaded exactly what was saved. Every offset and length read back is
 * checked against the file's size before use. */
#ifndef GW_VM_SNAPSHOT_FILE_H
#define GW_VM_SNAPSHOT_FILE_H

#include <stdint.h>

#include "engine/vm/mem_digest.h"
#include "godwit/v1/state.pb-c.h"

struct gw_vm;
struct gw_guest_mem;

struct gw_snapshot_stats {
    uint64_t state_bytes;
    uint64_t memory_bytes;      /* guest RAM size */
    uint64_t data_bytes;        /* bytes actually written/read (non-zero pages) */
    uint64_t zero_pages;        /* pages left as holes */
    uint64_t elapsed_ns;
    struct gw_mem_digest digest;
};

/* Saves a paused VM to path. Returns 0 or -errno with a reason in err. */
int gw_snapshot_save(struct gw_vm *vm, const char *path, struct gw_snapshot_stats *stats,
                     char *err, unsigned errlen);

/* Reads the header and the VmState of a snapshot. *state is freed with
 * godwit__v1__vm_state__free_unpacked. */
int gw_snapshot_read_state(const char *path, Godwit__V1__VmState **state, char *err, unsigned errlen);

/* Loads the memory image of path into m (same size as saved) and checks the digest.
 * Returns 0, -EBADMSG when the digest differs, or -errno. */
int gw_snapshot_load_memory(const char *path, struct gw_guest_mem *m, struct gw_snapshot_stats *stats,
                            char *err, unsigned errlen);

#endif
