/* Chooses the disk point-in-time backend for a VM's disk (see disk_snapshot.h). */
#include "backup/disk_snapshot.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine/vm/virtio_blk.h"
#include "engine/vm/vm.h"

int gw_disk_snapshot_open(struct gw_vm *vm, const struct gw_disk_snapshot_params *p, struct gw_disk_snapshot **out,
                          char *err, size_t errlen)
{
    *out = NULL;
    struct gw_device *d = gw_bus_find(&vm->bus, "vda");
    if (!d || !vm->disk_path[0]) return 0;
    const char *path;
    uint64_t size;
    /* Only raw files today; an RBD-backed disk gets its own backend here. */
    int r = gw_virtio_blk_image(d, &path, &size);
    if (r) { snprintf(err, errlen, "the VM's disk is not a virtio-blk disk"); return r; }
    return gw_disk_fleece_open(vm, path, size, p, out, err, errlen);
}
