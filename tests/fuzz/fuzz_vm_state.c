/* libFuzzer target for loading a VmState (what a snapshot file or a migration's STATE
 * record carries): the input is unpacked as the message, and every DeviceState in it is
 * offered to a real virtio-blk device over a small guest memory (engine/vm/virtio_blk.c's
 * load, which must refuse a state that does not fit), then saved back. The KVM parts of a
 * load (vCPU registers, irqchip) go to the kernel, which checks them itself. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    gw_guest_mem_wrap(&mem, ram, sizeof ram);
    if (gw_virtio_blk_create(path, &mem, (struct gw_irq_sink){no_irq, NULL}, GW_VIRTIO_MMIO_BASE, &dev)) abort();
    unlink(path);   /* the device keeps its fd */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dev) setup();
    Godwit__V1__VmState *st = godwit__v1__vm_state__unpack(NULL, size, data);
    if (!st) return 0;
    for (size_t i = 0; i < st->n_devices; i++) {
        const Godwit__V1__DeviceState *ds = st->devices[i];
        if (!ds) continue;
        pthread_mutex_lock(&dev->lock);
        int r = dev->ops->load(dev, ds);
        if (!r) {
            /* What was accepted is a state the device can save again. */
            Godwit__V1__DeviceState out = GODWIT__V1__DEVICE_STATE__INIT;
            if (dev->ops->save(dev, &out)) abort();
        }
        pthread_mutex_unlock(&dev->lock);
    }
    godwit__v1__vm_state__free_unpacked(st, NULL);
    return 0;
}
