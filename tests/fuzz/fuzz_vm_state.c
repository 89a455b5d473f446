/* libFuzzer target for loading a VmState (what a snapshot file or a migration's STATE
 * record carries): the input is unpacked as the message, and every DeviceState in it is
 * offered to a real virtio-blk device over a small guest memory (engine/vm/virtio_blk.c's
 * load, which must refuse a state that does not fit), then saved back. The same bytes are
 * also offered as a bare VirtioBlkState (wrapped in its DeviceState), so that the fuzzer
 * reaches the device's own checks (mmio registers, queue placement, indexes) without first
 * learning the outer message. The KVM parts of a load (vCPU registers, irqchip) go to the
 * kernel, which checks them itself. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "engine/vm/guest_mem.h"
#include "engine/vm/virtio_blk.h"
#include "guest/abi.h"
#include "godwit/v1/state.pb-c.h"

#define RAM_SIZE (256u * 1024)

static uint8_t ram[RAM_SIZE] __attribute__((aligned(4096)));
static struct gw_guest_mem mem;
static struct gw_device *dev;

static int no_irq(void *ctx, uint32_t gsi, int level) { (void)ctx; (void)gsi; (void)level; return 0; }

static void setup(void)
{
    char path[] = "/tmp/gw-fuzz-vmstate-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || ftruncate(fd, 64 * 512)) abort();
    close(fd);
    gw_log_set_level((enum gw_log_level)(GW_LOG_ERROR + 1));   /* refusals are expected: quiet */
    gw_guest_mem_wrap(&mem, ram, sizeof ram);
    if (gw_virtio_blk_create(path, &mem, (struct gw_irq_sink){no_irq, NULL}, GW_VIRTIO_MMIO_BASE, &dev)) abort();
    unlink(path);   /* the device keeps its fd */
}

static void offer(const Godwit__V1__DeviceState *ds)
{
    pthread_mutex_lock(&dev->lock);
    if (!dev->ops->load(dev, ds)) {
        /* What was accepted is a state the device can save again. */
        Godwit__V1__DeviceState out = GODWIT__V1__DEVICE_STATE__INIT;
        if (dev->ops->save(dev, &out)) abort();
    }
    pthread_mutex_unlock(&dev->lock);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dev) setup();
    Godwit__V1__VmState *st = godwit__v1__vm_state__unpack(NULL, size, data);
    if (st) {
        for (size_t i = 0; i < st->n_devices; i++)
            if (st->devices[i]) offer(st->devices[i]);
        godwit__v1__vm_state__free_unpacked(st, NULL);
    }
    Godwit__V1__VirtioBlkState *blk = godwit__v1__virtio_blk_state__unpack(NULL, size, data);
    if (blk) {
        Godwit__V1__DeviceState ds = GODWIT__V1__DEVICE_STATE__INIT;
        ds.name = "vda";
        ds.kind_case = GODWIT__V1__DEVICE_STATE__KIND_VIRTIO_BLK;
        ds.virtio_blk = blk;
        offer(&ds);
        /* Once more as a state of this very disk, so that the queue and mmio checks behind
         * the size check are reached at once. */
        if (blk->mmio) {
            blk->capacity_sectors = 64;
            offer(&ds);
        }
        godwit__v1__virtio_blk_state__free_unpacked(blk, NULL);
    }
    return 0;
}
