/* A VM: KVM fds, guest RAM, vCPU threads and devices, owned together. The engine owns guest
 * memory, the dirty log and all vCPU state so that it can migrate and snapshot the VM itself.
 *
 * Life cycle: gw_vm_create (empty VM: memory allocated but untouched, vCPUs created, not
 * running) -> either gw_vm_boot (fresh guest) or gw_vm_load_state (restored guest) ->
 * gw_vm_start -> pause/resume any number of times -> gw_vm_stop -> gw_vm_destroy.
 * All calls except the accessors come from one controlling thread. */
#ifndef GW_VM_VM_H
#define GW_VM_VM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/vm/device_bus.h"
#include "engine/vm/guest_mem.h"
#include "engine/vm/guest_spec.h"
#include "engine/vm/kvm.h"
#include "godwit/v1/state.pb-c.h"

struct gw_vcpu;

struct gw_vm_config {
    const char *name;           /* for logs and the memfd name */
    uint64_t memory_bytes;      /* multiple of 2 MiB */
    unsigned vcpus;             /* 1..GW_MAX_VCPUS */
    const char *guest_spec;     /* workload, e.g. "dirtier:ws=256M,rate=64M" */
    const char *disk_path;      /* raw image for the virtio disk, or NULL */
    bool disk_lock_later;       /* do not lock the image yet (a VM arriving by migration takes
                                 * the lock at GO: gw_vm_disk_lock) */
    int console_fd;             /* receives the guest console (not owned), -1 to drop */
    /* A Linux guest (guest_spec "linux"): kernel image, initramfs (or NULL) and command line
     * (NULL: a serial-console default). Only gw_vm_boot reads the files; a VM restored or
     * arriving by migration needs none of them. */
    const char *kernel_path;
    const char *initrd_path;
    const char *cmdline;
    /* Network for virtio-net ("tap:NAME[,mac=...]", net_spec.h), or NULL for none. */
    const char *net;
    /* KVM dirty ring entries per vCPU (dirty_ring.h), 0 for none (dirty bitmap). */
    uint32_t dirty_ring_entries;
};

/* State a component outside engine/vm keeps with the VM and wants carried wherever its state
 * goes (a suspend file, a migration): today the backup bitmap (backup/backup_since.h). save
 * runs with the VM paused and fills its part of st (freed by free_saved); load gets a loaded
 * state's part (its failure is logged, never fails the load: the part is an optimisation);
 * release frees ctx when the VM is destroyed, before anything else of it. */
struct gw_vm_state_ext {
    int (*save)(void *ctx, Godwit__V1__VmState *st);
    void (*free_saved)(Godwit__V1__VmState *st);
    int (*load)(void *ctx, const Godwit__V1__VmState *st, char *err, unsigned errlen);
    void (*release)(void *ctx);
    void *ctx;
};

struct gw_vm {
    struct gw_kvm kvm;
    int vm_fd;
    struct gw_guest_mem mem;
    struct gw_guest_spec spec;
    char name[64];
    char guest_spec[256];
    char disk_path[512];
    char kernel_path[512];
    char initrd_path[512];
    char cmdline[4096];
    unsigned nvcpus;
    bool has_pit;                /* in-kernel PIT (Linux guests calibrate and check IRQ 0) */
    struct gw_vcpu *vcpus[GW_MAX_VCPUS];
    struct gw_device_bus bus;
    /* KVM dirty ring (dirty_ring.h): entries per vCPU (0: none), collection lock, pages
     * collected and not yet taken (atomic words), entries outside the memory map. */
    uint32_t dirty_ring_entries;
    pthread_mutex_t ring_mu;
    uint64_t *ring_pending;
    uint64_t ring_bad_entries;
    uint64_t ring_full_exits;    /* KVM_EXIT_DIRTY_RING_FULL, all vCPUs (atomic) */

    pthread_mutex_t lock;        /* protects everything below */
    pthread_cond_t cond;
    bool running;                /* vCPU threads exist */
    bool pause_req;
    bool stop_req;
    unsigned npaused;
    unsigned nexited;
    unsigned ready_vcpus;        /* guest reported READY */
    unsigned booted_vcpus;
    int fatal;                   /* first fatal error (negative errno), 0 while healthy */
    unsigned throttle_pct;       /* auto-converge: share of each period vCPUs sleep (atomic) */
    pthread_t throttle_thread;
    bool throttle_running;
    char fatal_msg[256];
    uint64_t verify_error_events;
    bool guest_stopped;          /* the guest ended itself (reset, power-off): not a failure */
    char stop_msg[128];
    struct gw_vm_state_ext state_ext;   /* set by gw_vm_set_state_ext; owned by the VM */
};

/* Creates an empty VM. On failure returns -errno and explains in err. */
int gw_vm_create(const struct gw_vm_config *cfg, struct gw_vm **out, char *err, unsigned errlen);

/* Writes the boot data and the guest image and sets every vCPU's initial registers. */
int gw_vm_boot(struct gw_vm *vm, char *err, unsigned errlen);

/* Starts the vCPU threads (running). */
int gw_vm_start(struct gw_vm *vm);

/* Stops every vCPU outside KVM_RUN and waits until they are (returns at once if already
 * paused). The guest cannot tell: its timer and clock are kept by KVM. */
int gw_vm_pause(struct gw_vm *vm);
/* Asks every vCPU to stop and returns at once: a vCPU waiting in a userfaultfd fault (an
 * instant restore whose store is gone) cannot leave KVM_RUN until its page comes, and the
 * caller must not wait for it; it parks as soon as its page is placed. gw_vm_resume undoes
 * it. 0 or -ESRCH when not running. */
int gw_vm_pause_request(struct gw_vm *vm);
int gw_vm_resume(struct gw_vm *vm);
bool gw_vm_is_paused(struct gw_vm *vm);

/* Auto-converge: makes every vCPU sleep pct % of each 20 ms period (0 stops throttling).
 * The guest sees a slower CPU, never a stopped one. */
int gw_vm_set_throttle(struct gw_vm *vm, unsigned pct);

/* Ends the vCPU threads. Idempotent. */
void gw_vm_stop(struct gw_vm *vm);
void gw_vm_destroy(struct gw_vm *vm);

/* Waits up to timeout_ms (-1: forever) for the VM to end on its own (fatal error or guest
 * stop). Returns 1 if it ended, 0 on timeout. */
int gw_vm_wait(struct gw_vm *vm, int timeout_ms);

/* Waits until every vCPU reported READY (its working set is written) or the VM failed.
 * Returns 0, -ETIMEDOUT, or the VM's fatal error. */
int gw_vm_wait_ready(struct gw_vm *vm, int timeout_ms);

/* The VM's fatal error (0 if none) and its message. */
int gw_vm_fatal(struct gw_vm *vm, char *msg, unsigned msglen);

/* The guest asked to end (i8042 reset, a Linux guest's triple fault): records why and asks
 * the vCPUs to stop, without a fatal error. */
void gw_vm_guest_stop(struct gw_vm *vm, const char *why);

/* True while the guest runs: started, not paused, not stopping (devices that write guest
 * memory on their own threads deliver only then). */
bool gw_vm_guest_running(struct gw_vm *vm);

/* Loads the kernel, initrd and command line of a Linux guest (vm_linux.c); called by
 * gw_vm_boot for guest_spec "linux". */
int gw_vm_boot_linux(struct gw_vm *vm, char *err, unsigned errlen);

/* Records a fatal error (first one wins) and asks the vCPUs to stop. */
void gw_vm_set_fatal(struct gw_vm *vm, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Copies the guest's status page (counters); false when the guest has not published it. */
bool gw_vm_guest_status(struct gw_vm *vm, struct gw_guest_status *out);

/* Totals over all vCPUs of the guest's counters. */
struct gw_guest_totals {
    uint64_t pages_written, bytes_written, pages_verified, verify_errors, verify_passes;
    uint64_t disk_blocks_written, disk_blocks_read, disk_verify_errors, disk_io_errors;
    uint64_t ticks;
    uint64_t vcpu_exits;
};
void gw_vm_guest_totals(struct gw_vm *vm, struct gw_guest_totals *t);

/* Asks every device to finish and flush what it has (while the guest runs), so the same
 * call at switchover has little left to do. */
void gw_vm_flush_devices(struct gw_vm *vm);

/* Registers the VM's state extension (one; a second replaces nothing and returns -EBUSY). */
int gw_vm_set_state_ext(struct gw_vm *vm, const struct gw_vm_state_ext *ext);
/* Process-wide, set once before any VM exists: makes a VM's extension when a loaded state
 * carries its part and the VM has none yet (a VM arriving by migration or from a file). */
void gw_vm_set_state_ext_factory(int (*make)(struct gw_vm *vm));

/* Full state (the VM must be paused). *out is a heap message freed with gw_vm_state_free.
 * gw_vm_save_state_core leaves out the extension's part (what a backup's manifest keeps). */
int gw_vm_save_state_core(struct gw_vm *vm, Godwit__V1__VmState **out);
int gw_vm_save_state(struct gw_vm *vm, Godwit__V1__VmState **out);
void gw_vm_state_free(Godwit__V1__VmState *st);
/* Loads state saved by gw_vm_save_state (possibly by an older runner) into a created,
 * not-yet-started VM of the same shape. -EINVAL (with err) when it does not fit. */
int gw_vm_load_state(struct gw_vm *vm, const Godwit__V1__VmState *st, char *err, unsigned errlen);

/* Fills a VmConfig (strings point into vm) describing how to create this VM elsewhere. */
void gw_vm_describe(struct gw_vm *vm, Godwit__V1__VmConfig *cfg, Godwit__V1__MemoryRegion *regions,
                    Godwit__V1__MemoryRegion **region_ptrs);

#endif
