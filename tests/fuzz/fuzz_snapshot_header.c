/* libFuzzer target for a snapshot file's header and state section
 * (engine/vm/snapshot_file.c): the input is the file, read through a memfd by
 * gw_snapshot_read_state, then (when it parses) its memory section loaded into a small
 * guest memory. A hostile or truncated file must be refused with a reason, never read past
 * its end or past guest memory. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/vm/guest_mem.h"
#include "engine/vm/snapshot_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz-snapshot", MFD_CLOEXEC);
    if (fd < 0) abort();
    if (size && write(fd, data, size) != (ssize_t)size) abort();
    char path[64], err[512];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    Godwit__V1__VmState *st = NULL;
    if (!gw_snapshot_read_state(path, &st, err, sizeof err)) {
        static uint8_t ram[8u << 20] __attribute__((aligned(4096)));
        struct gw_guest_mem mem;
        gw_guest_mem_wrap(&mem, ram, sizeof ram);
        struct gw_snapshot_stats stats;
        gw_snapshot_load_memory(path, &mem, &stats, err, sizeof err);
        godwit__v1__vm_state__free_unpacked(st, NULL);
    }
    close(fd);
    return 0;
}
