/* vCPU creation, the run loop and exit dispatch (see vcpu.h). */
#include "engine/vm/vcpu.h"

#include <errno.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <time.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/vm/boot.h"
#include "engine/vm/cpuid.h"
#include "engine/vm/dirty_ring.h"
#include "engine/vm/vm.h"

#define GW_SIG_KICK SIGUSR1

static void kick_handler(int sig) { (void)sig; }

int gw_vcpu_install_kick_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = kick_handler; /* no SA_RESTART: KVM_RUN must return EINTR */
    sigemptyset(&sa.sa_mask);
    return sigaction(GW_SIG_KICK, &sa, NULL) < 0 ? -errno : 0;
}

int gw_vcpu_create(struct gw_vm *vm, unsigned id, struct gw_vcpu **out)
{
    struct gw_vcpu *v = calloc(1, sizeof *v);
    if (!v) return -ENOMEM;
    v->vm = vm;
    v->id = id;
    v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)id);
    if (v->fd < 0) { int e = -errno; free(v); return e; }
    v->run = mmap(NULL, (size_t)vm->kvm.vcpu_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
    if (v->run == MAP_FAILED) { int e = -errno; close(v->fd); free(v); return e; }
    int r = gw_vcpu_setup_cpuid(v);
    if (!r && vm->dirty_ring_entries) r = gw_dirty_ring_map(v);
    if (r) { gw_vcpu_destroy(v); return r; }
    *out = v;
    return 0;
}

void gw_vcpu_destroy(struct gw_vcpu *v)
{
    if (!v) return;
    gw_dirty_ring_unmap(v);
    if (v->run && v->run != MAP_FAILED) munmap(v->run, (size_t)v->vm->kvm.vcpu_mmap_size);
    if (v->fd >= 0) close(v->fd);
    free(v);
}

int gw_vcpu_setup_cpuid(struct gw_vcpu *v)
{
    const struct kvm_cpuid2 *sup = v->vm->kvm.cpuid;
    size_t sz = sizeof *sup + sup->nent * sizeof sup->entries[0];
    struct kvm_cpuid2 *c = malloc(sz);
    if (!c) return -ENOMEM;
    memcpy(c, sup, sz);
    gw_cpuid_for_vcpu(c->entries, c->nent, v->id, v->vm->nvcpus);
    int r = ioctl(v->fd, KVM_SET_CPUID2, c) < 0 ? -errno : 0;
    free(c);
    return r;
}

int gw_vcpu_set_boot_regs(struct gw_vcpu *v)
{
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0) return -errno;
    gw_boot_vcpu_regs(v->id, &regs, &sregs);
    if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0) return -errno;
    if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0) return -errno;
    /* With the in-kernel LAPIC, application processors start waiting for INIT/SIPI; ours
     * start directly in long mode like the boot processor. */
    struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_RUNNABLE};
    if (ioctl(v->fd, KVM_SET_MP_STATE, &mp) < 0) return -errno;
    return 0;
}

void gw_vcpu_kick(struct gw_vcpu *v)
{
    __atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    /* Acquire: pairs with the release in gw_vcpu_start_thread, so v->thread is the created
     * thread's id when another vCPU (a fatal event) kicks this one while it still starts. */
    if (__atomic_load_n(&v->thread_started, __ATOMIC_ACQUIRE)) pthread_kill(v->thread, GW_SIG_KICK);
}

/* Handles one exit; returns 0 to keep running or a negative errno with the VM marked fatal. */
static int handle_exit(struct gw_vcpu *v)
{
    struct kvm_run *run = v->run;
    struct gw_vm *vm = v->vm;
    switch (run->exit_reason) {
    case KVM_EXIT_IO: {
        v->io_exits++;
        uint8_t *data = (uint8_t *)run + run->io.data_offset;
        for (uint32_t i = 0; i < run->io.count; i++) {
            int r = gw_bus_access(&vm->bus, GW_DEV_PIO, run->io.port,
                                  run->io.direction == KVM_EXIT_IO_OUT, data, run->io.size);
            if (r) { gw_vm_set_fatal(vm, r, "device failed on port 0x%x", run->io.port); return r; }
            data += run->io.size;
        }
        return 0;
    }
    case KVM_EXIT_MMIO: {
        v->mmio_exits++;
        uint32_t len = run->mmio.len;
        if (len > sizeof run->mmio.data) len = sizeof run->mmio.data;
        int r = gw_bus_access(&vm->bus, GW_DEV_MMIO, run->mmio.phys_addr, run->mmio.is_write,
                              run->mmio.data, len);
        if (r) gw_vm_set_fatal(vm, r, "device failed at mmio 0x%llx", (unsigned long long)run->mmio.phys_addr);
        return r;
    }
    case KVM_EXIT_SHUTDOWN: {
        if (vm->spec.workload == GW_WL_LINUX) {
            /* Linux resets this way (reboot=t, or after the i8042 and ACPI failed). */
            gw_vm_guest_stop(vm, "guest reset (triple fault / shutdown)");
            return -ECANCELED;
        }
        struct kvm_regs regs;
        unsigned long long rip = ioctl(v->fd, KVM_GET_REGS, &regs) == 0 ? regs.rip : 0;
        gw_vm_set_fatal(vm, -EFAULT, "guest triple-faulted (vcpu %u, rip 0x%llx): the VM is stopped",
                        v->id, rip);
        return -EFAULT;
    }
    case KVM_EXIT_INTERNAL_ERROR:
        gw_vm_set_fatal(vm, -EIO, "KVM internal error on vcpu %u (suberror %u%s): the VM is stopped",
                        v->id, run->internal.suberror,
                        run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ? ", emulation failure" : "");
        return -EIO;
    case KVM_EXIT_FAIL_ENTRY:
        gw_vm_set_fatal(vm, -EIO, "KVM could not enter vcpu %u (hardware reason 0x%llx)", v->id,
                        (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        return -EIO;
    case KVM_EXIT_SYSTEM_EVENT:
        gw_vm_set_fatal(vm, -ECANCELED, "guest requested system event %u (vcpu %u)",
                        run->system_event.type, v->id);
        return -ECANCELED;
    case KVM_EXIT_HLT:
        /* Only without an in-kernel LAPIC; ours has one, so treat as a guest stop. */
        gw_vm_set_fatal(vm, -ECANCELED, "vcpu %u halted with interrupts off", v->id);
        return -ECANCELED;
    case KVM_EXIT_INTR:
        return 0;
    case KVM_EXIT_DIRTY_RING_FULL:
        /* It may not re-enter before its ring has room. */
        return gw_dirty_ring_full(v);
    default:
        gw_vm_set_fatal(vm, -ENOTSUP, "unhandled KVM exit %u on vcpu %u", run->exit_reason, v->id);
        return -ENOTSUP;
    }
}

/* Parks the vCPU while a pause is requested. Returns false when the vCPU must end. */
static bool wait_while_paused(struct gw_vcpu *v)
{
    struct gw_vm *vm = v->vm;
    pthread_mutex_lock(&vm->lock);
    while (vm->pause_req && !vm->stop_req) {
        if (!v->paused) { v->paused = true; vm->npaused++; pthread_cond_broadcast(&vm->cond); }
        pthread_cond_wait(&vm->cond, &vm->lock);
    }
    if (v->paused) { v->paused = false; vm->npaused--; }
    bool go = !vm->stop_req;
    /* Cleared under the lock: a pause requested after this point sets it again. */
    if (go) __atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&vm->lock);
    return go;
}

static void *vcpu_thread(void *arg)
{
    struct gw_vcpu *v = arg;
    __atomic_store_n(&v->tid, (int)syscall(SYS_gettid), __ATOMIC_RELEASE);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, GW_SIG_KICK);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    uint64_t last_sleep = 0;
    while (wait_while_paused(v)) {
        unsigned pct = __atomic_load_n(&v->vm->throttle_pct, __ATOMIC_RELAXED);
        if (pct) {
            /* Auto-converge: the throttle thread kicks us every period; sleep our share. */
            uint64_t now = gw_now_ns();
            if (now - last_sleep >= GW_THROTTLE_PERIOD_NS) {
                struct timespec ts = {0, (long)(GW_THROTTLE_PERIOD_NS * pct / 100)};
                nanosleep(&ts, NULL);
                last_sleep = gw_now_ns();
            }
        }
        int r = ioctl(v->fd, KVM_RUN, 0);
        __atomic_fetch_add(&v->exits, 1, __ATOMIC_RELAXED);   /* read by status requests */
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            gw_vm_set_fatal(v->vm, -errno, "KVM_RUN failed on vcpu %u: %s", v->id, strerror(errno));
            break;
        }
        if (handle_exit(v)) break;
    }
    pthread_mutex_lock(&v->vm->lock);
    v->vm->nexited++;
    pthread_cond_broadcast(&v->vm->cond);
    pthread_mutex_unlock(&v->vm->lock);
    return NULL;
}

int gw_vcpu_start_thread(struct gw_vcpu *v)
{
    int r = pthread_create(&v->thread, NULL, vcpu_thread, v);
    if (r) return -r;
    __atomic_store_n(&v->thread_started, true, __ATOMIC_RELEASE);
    char name[16];
    snprintf(name, sizeof name, "vcpu%u", v->id);
    pthread_setname_np(v->thread, name);
    return 0;
}

void gw_vcpu_join(struct gw_vcpu *v)
{
    if (!v->thread_started) return;
    pthread_join(v->thread, NULL);
    v->thread_started = false;
}
