/* One vCPU: its KVM fd, the shared kvm_run page and the thread that runs it. Exits are
 * handled on that thread; pausing is a signal plus kvm_run->immediate_exit, so a vCPU busy
 * in guest code leaves KVM_RUN within microseconds and the guest never sees a difference. */
#ifndef GW_VM_VCPU_H
#define GW_VM_VCPU_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "godwit/v1/state.pb-c.h"

struct gw_vm;
struct kvm_run;

struct gw_vcpu {
    struct gw_vm *vm;
    unsigned id;
    int fd;                  /* owned */
    struct kvm_run *run;     /* owned mapping of kvm->vcpu_mmap_size bytes */
    pthread_t thread;
    bool thread_started;
    bool paused;             /* under vm->lock */
    uint64_t exits;          /* KVM_RUN returns, any reason */
    uint64_t io_exits;
    uint64_t mmio_exits;
    struct kvm_dirty_gfn *ring;   /* dirty ring mapping (dirty_ring.h), or NULL */
    uint32_t ring_fetch;          /* next entry to read (under vm->ring_mu) */
    unsigned ring_stuck;          /* ring-full exits in a row with nothing collected */
    int tid;                 /* the thread's kernel id (atomic; 0 before it runs): post-copy's
                              * per-vCPU blocked time maps userfaultfd's faulting thread to it */
};

#define GW_THROTTLE_PERIOD_NS 20000000ull

/* Signal used to kick vCPU threads out of KVM_RUN; installed once per process. */
int gw_vcpu_install_kick_handler(void);

int gw_vcpu_create(struct gw_vm *vm, unsigned id, struct gw_vcpu **out);
void gw_vcpu_destroy(struct gw_vcpu *v);
int gw_vcpu_start_thread(struct gw_vcpu *v);
/* Makes the vCPU leave KVM_RUN soon (immediate_exit + signal). */
void gw_vcpu_kick(struct gw_vcpu *v);
void gw_vcpu_join(struct gw_vcpu *v);

/* State of a vCPU that is not running. save fills *out (fields allocated with malloc; free
 * with gw_vcpu_state_clear); load accepts what save produced, possibly by an older runner. */
int gw_vcpu_save(struct gw_vcpu *v, Godwit__V1__VcpuState *out);
void gw_vcpu_state_clear(Godwit__V1__VcpuState *st);
int gw_vcpu_load(struct gw_vcpu *v, const Godwit__V1__VcpuState *in, char *err, unsigned errlen);

/* Sets up CPUID (with this vCPU's APIC id) and, for a fresh boot, the initial registers. */
int gw_vcpu_setup_cpuid(struct gw_vcpu *v);
int gw_vcpu_set_boot_regs(struct gw_vcpu *v);

#endif
