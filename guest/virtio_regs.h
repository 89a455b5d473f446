/* What our guest drivers (workload_disk.c, workload_net.c) need of virtio 1.x over mmio:
 * the register layout (4.2.2, version 2), the status bits, the split-ring structures. */
#ifndef GW_GUEST_VIRTIO_REGS_H
#define GW_GUEST_VIRTIO_REGS_H

#include <stdint.h>

enum {
    R_MAGIC = 0x000, R_VERSION = 0x004, R_DEVICE_ID = 0x008, R_DEVICE_FEATURES = 0x010,
    R_DEVICE_FEATURES_SEL = 0x014, R_DRIVER_FEATURES = 0x020, R_DRIVER_FEATURES_SEL = 0x024,
    R_QUEUE_SEL = 0x030, R_QUEUE_NUM_MAX = 0x034, R_QUEUE_NUM = 0x038, R_QUEUE_READY = 0x044,
    R_QUEUE_NOTIFY = 0x050, R_STATUS = 0x070, R_QUEUE_DESC_LOW = 0x080,
    R_QUEUE_DESC_HIGH = 0x084, R_QUEUE_DRIVER_LOW = 0x090, R_QUEUE_DRIVER_HIGH = 0x094,
    R_QUEUE_DEVICE_LOW = 0x0a0, R_QUEUE_DEVICE_HIGH = 0x0a4, R_CONFIG_GENERATION = 0x0fc,
    R_CONFIG = 0x100,
};
#define MMIO_MAGIC 0x74726976u     /* "virt" */
#define MMIO_VERSION 2u
#define S_ACKNOWLEDGE 1u
#define S_DRIVER 2u
#define S_DRIVER_OK 4u
#define S_FEATURES_OK 8u
#define S_NEEDS_RESET 64u
#define S_FAILED 128u
#define F_VERSION_1_HIGH 1u        /* feature bit 32, in the high word */
#define DESC_F_NEXT 1u
#define DESC_F_WRITE 2u

struct virtq_desc { uint64_t addr; uint32_t len; uint16_t flags; uint16_t next; };
struct virtq_used_elem { uint32_t id; uint32_t len; };

#endif
