/* VM construction, start/pause/resume/stop and guest events (see vm.h). */
#include "engine/vm/vm.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "engine/vm/boot.h"
#include "engine/vm/ctlport.h"
#include "engine/vm/dirty_ring.h"
#include "engine/vm/i8042.h"
#include "engine/vm/linux_boot.h"
#include "engine/vm/serial.h"
#include "engine/vm/vcpu.h"
#include "engine/vm/virtio_attach.h"
#include "engine/vm/vm_config.h"

void gw_vm_set_fatal(struct gw_vm *vm, int err, const char *fmt, ...)
{
    pthread_mutex_lock(&vm->lock);
    if (!vm->fatal) {
        vm->fatal = err ? err : -EIO;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(vm->fatal_msg, sizeof vm->fatal_msg, fmt, ap);
        va_end(ap);
        gw_error("vm %s: %s", vm->name, vm->fatal_msg);
    }
    vm->stop_req = true;
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
    for (unsigned i = 0; i < vm->nvcpus; i++)
        if (vm->vcpus[i]) gw_vcpu_kick(vm->vcpus[i]);
}

void gw_vm_guest_stop(struct gw_vm *vm, const char *why)
{
    pthread_mutex_lock(&vm->lock);
    if (!vm->guest_stopped && !vm->fatal) {
        vm->guest_stopped = true;
        snprintf(vm->stop_msg, sizeof vm->stop_msg, "%s", why);
        gw_info("vm %s: %s; the VM ends", vm->name, why);
    }
    vm->stop_req = true;
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
    for (unsigned i = 0; i < vm->nvcpus; i++)
        if (vm->vcpus[i]) gw_vcpu_kick(vm->vcpus[i]);
}

static void on_i8042_reset(void *ctx)
{
    gw_vm_guest_stop(ctx, "guest reset through the i8042 controller");
}

static const char *trap_name(uint32_t v)
{
    static const char *names[] = {"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF",
                                  "?", "#TS", "#NP", "#SS", "#GP", "#PF"};
    return v < sizeof names / sizeof names[0] ? names[v] : "trap";
}

/* Guest events from the control port (vCPU thread, device lock held). */
static void on_guest_event(void *ctx, uint32_t event, uint32_t arg)
{
    struct gw_vm *vm = ctx;
    switch (event) {
    case GW_EV_BOOTED:
        pthread_mutex_lock(&vm->lock);
        vm->booted_vcpus++;
        pthread_mutex_unlock(&vm->lock);
        gw_debug("vm %s: vcpu %u booted", vm->name, arg);
        break;
    case GW_EV_READY:
        pthread_mutex_lock(&vm->lock);
        vm->ready_vcpus++;
        bool all = vm->ready_vcpus == vm->nvcpus;
        pthread_cond_broadcast(&vm->cond);
        pthread_mutex_unlock(&vm->lock);
        gw_debug("vm %s: vcpu %u ready", vm->name, arg);
        if (all) gw_info("vm %s: guest ready (working set written)", vm->name);
        break;
    case GW_EV_VERIFY_ERROR:
        pthread_mutex_lock(&vm->lock);
        uint64_t n = ++vm->verify_error_events;
        pthread_mutex_unlock(&vm->lock);
        if (n <= 5) gw_warn("vm %s: guest verifier found a bad page (vcpu %u)", vm->name, arg);
        break;
    case GW_EV_FATAL:
        gw_vm_set_fatal(vm, -EIO, "guest workload failed with error %u%s", arg,
                        arg == GW_ERR_NO_ROOM ? " (working set does not fit in RAM)"
                        : arg == GW_ERR_DISK ? " (disk device missing or failing)"
                        : arg == GW_ERR_NET ? " (network device missing or failing)" : "");
        break;
    case GW_EV_UNEXPECTED_TRAP:
        {
            const struct gw_guest_status *st = gw_guest_mem_ptr(&vm->mem, GW_GPA_STATUS, sizeof *st);

            gw_vm_set_fatal(vm, -EFAULT, "guest took an unexpected exception %u (%s) at rip 0x%llx, error code 0x%llx",
                            arg, trap_name(arg), st ? (unsigned long long)st->trap_rip : 0ull,
                            st ? (unsigned long long)st->trap_error_code : 0ull);
        }
        break;
    default:
        break;
    }
}

static int add_devices(struct gw_vm *vm, const struct gw_vm_config *cfg, char *err, unsigned errlen)
{
    struct gw_device *d;
    int r = gw_serial_create(GW_PORT_COM1, cfg->console_fd, &d);
    if (!r) r = gw_bus_add(&vm->bus, d);
    if (!r) r = gw_ctlport_create(GW_PORT_CTL, on_guest_event, vm, &d);
    if (!r) r = gw_bus_add(&vm->bus, d);
    if (!r && vm->spec.workload == GW_WL_LINUX) r = gw_i8042_create(on_i8042_reset, vm, &d);
    if (!r && vm->spec.workload == GW_WL_LINUX) r = gw_bus_add(&vm->bus, d);
    if (r) { snprintf(err, errlen, "cannot create devices: %s", strerror(-r)); return r; }
    if (cfg->disk_path && *cfg->disk_path) {
        r = gw_vm_attach_disk(vm, cfg->disk_path, !cfg->disk_lock_later, err, errlen);
        if (r) return r;
    }
    if (cfg->net && *cfg->net) {
        r = gw_vm_attach_net(vm, cfg->net, err, errlen);
        if (r) return r;
    }
    return 0;
}

static int set_irqchip(struct gw_vm *vm)
{
    /* The TSS address only matters for Intel real-mode emulation; set it anyway, as every VMM
     * does, so hardware KVM on Intel is happy. */
    ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000ul);
    if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) return -errno;
    return 0;
}

static int add_memory_slots(struct gw_vm *vm)
{
    for (unsigned i = 0; i < vm->mem.nregions; i++) {
        const struct gw_mem_region *r = &vm->mem.regions[i];
        struct kvm_userspace_memory_region slot = {
            .slot = i, .flags = 0, .guest_phys_addr = r->gpa, .memory_size = r->size,
            .userspace_addr = (uint64_t)(uintptr_t)r->hva,
        };
        if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0) return -errno;
    }
    return 0;
}

int gw_vm_create(const struct gw_vm_config *cfg, struct gw_vm **out, char *err, unsigned errlen)
{
    *out = NULL;
    /* The same table the API checks CreateVm against (engine/common/limits.h). */
    int rc = gw_vm_size_check(cfg->memory_bytes, cfg->vcpus, err, errlen);
    if (rc) return rc;
    struct gw_vm *vm = calloc(1, sizeof *vm);
    if (!vm) return -ENOMEM;
    vm->vm_fd = -1;
    vm->mem.memfd = -1;
    pthread_mutex_init(&vm->lock, NULL);
    pthread_mutex_init(&vm->ring_mu, NULL);
    pthread_condattr_t ca;   /* timed waits on the monotonic clock: a clock step changes nothing */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&vm->cond, &ca);
    pthread_condattr_destroy(&ca);
    snprintf(vm->name, sizeof vm->name, "%s", cfg->name ? cfg->name : "vm");
    snprintf(vm->guest_spec, sizeof vm->guest_spec, "%s", cfg->guest_spec ? cfg->guest_spec : "idle");
    snprintf(vm->disk_path, sizeof vm->disk_path, "%s", cfg->disk_path ? cfg->disk_path : "");
    snprintf(vm->kernel_path, sizeof vm->kernel_path, "%s", cfg->kernel_path ? cfg->kernel_path : "");
    snprintf(vm->initrd_path, sizeof vm->initrd_path, "%s", cfg->initrd_path ? cfg->initrd_path : "");
    if (cfg->cmdline && strlen(cfg->cmdline) >= sizeof vm->cmdline) {
        snprintf(err, errlen, "command line longer than %zu bytes", sizeof vm->cmdline - 1);
        free(vm);
        return -E2BIG;
    }
    snprintf(vm->cmdline, sizeof vm->cmdline, "%s", cfg->cmdline ? cfg->cmdline : "");
    vm->nvcpus = cfg->vcpus;

    int r = gw_guest_spec_parse(vm->guest_spec, &vm->spec, err, errlen);
    if (r) goto fail;
    uint64_t below = cfg->memory_bytes < GW_RAM_HOLE_START ? cfg->memory_bytes : GW_RAM_HOLE_START;
    r = gw_guest_spec_check(&vm->spec, below, cfg->vcpus, err, errlen);
    if (r) goto fail;
    if (vm->spec.workload == GW_WL_LINUX && cfg->memory_bytes < GW_LINUX_MIN_MEMORY) {
        snprintf(err, errlen, "a Linux guest needs at least %llu MiB of memory", GW_LINUX_MIN_MEMORY >> 20);
        r = -EINVAL;
        goto fail;
    }
    if (vm->spec.workload == GW_WL_NET_ECHO && !(cfg->net && *cfg->net)) {
        snprintf(err, errlen, "the net-echo workload needs a network (--net tap:NAME)");
        r = -EINVAL;
        goto fail;
    }
    if (vm->spec.workload == GW_WL_DISK && !vm->disk_path[0]) {
        snprintf(err, errlen, "the disk workload needs a disk (--disk FILE)");
        r = -EINVAL;
        goto fail;
    }
    r = gw_vcpu_install_kick_handler();
    if (r) { snprintf(err, errlen, "cannot install the vCPU signal handler: %s", strerror(-r)); goto fail; }
    r = gw_kvm_open(&vm->kvm, err, errlen);
    if (r) goto fail;
    vm->vm_fd = ioctl(vm->kvm.fd, KVM_CREATE_VM, 0);
    if (vm->vm_fd < 0) { r = -errno; snprintf(err, errlen, "KVM_CREATE_VM: %s", strerror(errno)); goto fail; }
    r = set_irqchip(vm);
    if (r) { snprintf(err, errlen, "cannot create the in-kernel irqchip: %s", strerror(-r)); goto fail; }
    if (vm->spec.workload == GW_WL_LINUX && vm->kvm.has_pit) {
        struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
        if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
            r = -errno;
            snprintf(err, errlen, "cannot create the in-kernel PIT: %s", strerror(errno));
            goto fail;
        }
        vm->has_pit = true;
    }
    r = gw_guest_mem_create(&vm->mem, cfg->memory_bytes, vm->name);
    if (r) { snprintf(err, errlen, "cannot allocate %llu MiB of guest RAM: %s",
                      (unsigned long long)(cfg->memory_bytes >> 20), strerror(-r)); goto fail; }
    r = add_memory_slots(vm);
    if (r) { snprintf(err, errlen, "KVM_SET_USER_MEMORY_REGION: %s", strerror(-r)); goto fail; }
    if (cfg->dirty_ring_entries && (r = gw_dirty_ring_enable(vm, cfg->dirty_ring_entries, err, errlen))) goto fail;
    for (unsigned i = 0; i < vm->nvcpus; i++) {
        r = gw_vcpu_create(vm, i, &vm->vcpus[i]);
        if (r) { snprintf(err, errlen, "cannot create vcpu %u: %s", i, strerror(-r)); goto fail; }
    }
    r = add_devices(vm, cfg, err, errlen);
    if (r) goto fail;
    *out = vm;
    return 0;
fail:
    gw_vm_destroy(vm);
    return r;
}

int gw_vm_boot(struct gw_vm *vm, char *err, unsigned errlen)
{
    if (vm->spec.workload == GW_WL_LINUX) return gw_vm_boot_linux(vm, err, errlen);
    uint64_t len;
    const uint8_t *image = gw_boot_guest_image(&len);
    struct gw_boot_info bi;
    memset(&bi, 0, sizeof bi);
    bi.magic = GW_BOOT_MAGIC;
    bi.abi_version = GW_ABI_VERSION;
    bi.nvcpus = vm->nvcpus;
    bi.ram_below_hole = vm->mem.regions[0].size;
    bi.ram_above_hole = vm->mem.nregions > 1 ? vm->mem.regions[1].size : 0;
    bi.workload = vm->spec.workload;
    bi.pattern = vm->spec.pattern;
    bi.ws_bytes = vm->spec.ws_bytes;
    bi.rate_bytes_per_s = vm->spec.rate_bytes_per_s;
    bi.seed = vm->spec.seed;
    bi.tick_hz = vm->spec.tick_hz;
    /* KVM's LAPIC timer counts at 1 GHz (one bus cycle per ns) with divide-by-1. */
    bi.lapic_ticks_per_tick = 1000000000u / vm->spec.tick_hz;
    bi.verify_pages_per_tick = vm->spec.verify_pages_per_tick;
    bi.disk_block_bytes = vm->spec.disk_block_bytes;
    if (gw_bus_find(&vm->bus, "vda")) {
        bi.disk_present = 1;
        bi.disk_mmio_base = GW_VIRTIO_MMIO_BASE;
        bi.disk_gsi = GW_VIRTIO_BLK_GSI;
    }
    if (gw_bus_find(&vm->bus, "net0")) {
        bi.net_present = 1;
        bi.net_mmio_base = GW_VIRTIO_NET_MMIO_BASE;
        bi.net_gsi = GW_VIRTIO_NET_GSI;
    }
    int r = gw_boot_build_page_tables(&vm->mem);
    if (!r) r = gw_boot_build_gdt(&vm->mem, vm->nvcpus);
    if (!r) r = gw_boot_load_image(&vm->mem, image, len);
    if (!r) r = gw_boot_write_info(&vm->mem, &bi);
    for (unsigned i = 0; !r && i < vm->nvcpus; i++) r = gw_vcpu_set_boot_regs(vm->vcpus[i]);
    if (r) snprintf(err, errlen, "cannot prepare the guest: %s", strerror(-r));
    return r;
}

int gw_vm_start(struct gw_vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    if (vm->running) { pthread_mutex_unlock(&vm->lock); return -EALREADY; }
    vm->running = true;
    vm->stop_req = false;
    pthread_mutex_unlock(&vm->lock);
    for (unsigned i = 0; i < vm->nvcpus; i++) {
        int r = gw_vcpu_start_thread(vm->vcpus[i]);
        if (r) { gw_vm_set_fatal(vm, r, "cannot start vcpu thread %u", i); return r; }
    }
    return 0;
}

int gw_vm_pause(struct gw_vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    if (!vm->running) { pthread_mutex_unlock(&vm->lock); return -ESRCH; }
    vm->pause_req = true;
    for (unsigned i = 0; i < vm->nvcpus; i++) gw_vcpu_kick(vm->vcpus[i]);
    /* Every vCPU either parks or has exited (fatal); both leave KVM_RUN for good. */
    while (vm->npaused + vm->nexited < vm->nvcpus) pthread_cond_wait(&vm->cond, &vm->lock);
    int r = vm->fatal;
    pthread_mutex_unlock(&vm->lock);
    /* Devices with threads of their own (virtio-net receive) write guest memory only under
     * their lock and only while the guest runs: taking each lock once waits out a delivery
     * that began before the pause, so nothing writes guest memory after this returns. */
    for (unsigned i = 0; i < vm->bus.ndevices; i++) {
        pthread_mutex_lock(&vm->bus.devices[i]->lock);
        pthread_mutex_unlock(&vm->bus.devices[i]->lock);
    }
    return r;
}

int gw_vm_pause_request(struct gw_vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    int r = vm->running ? 0 : -ESRCH;
    if (!r) {
        vm->pause_req = true;
        for (unsigned i = 0; i < vm->nvcpus; i++) gw_vcpu_kick(vm->vcpus[i]);
    }
    pthread_mutex_unlock(&vm->lock);
    return r;
}

int gw_vm_resume(struct gw_vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    int r = vm->fatal;
    if (!r) {
        vm->pause_req = false;
        pthread_cond_broadcast(&vm->cond);
    }
    pthread_mutex_unlock(&vm->lock);
    return r;
}

bool gw_vm_guest_running(struct gw_vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    bool r = vm->running && !vm->pause_req && !vm->stop_req;
    pthread_mutex_unlock(&vm->lock);
    return r;
}

bool gw_vm_is_paused(struct gw_vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    bool p = vm->pause_req;
    pthread_mutex_unlock(&vm->lock);
    return p;
}

static void *throttle_thread(void *arg)
{
    struct gw_vm *vm = arg;
    for (;;) {
        pthread_mutex_lock(&vm->lock);
        bool go = vm->throttle_running && !vm->stop_req;
        pthread_mutex_unlock(&vm->lock);
        if (!go) break;
        for (unsigned i = 0; i < vm->nvcpus; i++) gw_vcpu_kick(vm->vcpus[i]);
        struct timespec ts = {0, (long)GW_THROTTLE_PERIOD_NS};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int gw_vm_set_throttle(struct gw_vm *vm, unsigned pct)
{
    if (pct > 99) pct = 99;
    __atomic_store_n(&vm->throttle_pct, pct, __ATOMIC_RELAXED);
    pthread_mutex_lock(&vm->lock);
    bool start = pct && !vm->throttle_running;
    bool stop = !pct && vm->throttle_running;
    if (start) vm->throttle_running = true;
    if (stop) vm->throttle_running = false;
    pthread_mutex_unlock(&vm->lock);
    if (start) {
        int r = pthread_create(&vm->throttle_thread, NULL, throttle_thread, vm);
        if (r) {
            pthread_mutex_lock(&vm->lock);
            vm->throttle_running = false;
            pthread_mutex_unlock(&vm->lock);
            return -r;
        }
        gw_info("vm %s: throttling vCPUs to %u%%", vm->name, 100 - pct);
    }
    if (stop) pthread_join(vm->throttle_thread, NULL);
    return 0;
}

void gw_vm_stop(struct gw_vm *vm)
{
    gw_vm_set_throttle(vm, 0);
    pthread_mutex_lock(&vm->lock);
    bool was_running = vm->running;
    vm->stop_req = true;
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
    if (!was_running) return;
    for (unsigned i = 0; i < vm->nvcpus; i++) gw_vcpu_kick(vm->vcpus[i]);
    for (unsigned i = 0; i < vm->nvcpus; i++) gw_vcpu_join(vm->vcpus[i]);
    pthread_mutex_lock(&vm->lock);
    vm->running = false;
    pthread_mutex_unlock(&vm->lock);
}

void gw_vm_destroy(struct gw_vm *vm)
{
    if (!vm) return;
    gw_vm_stop(vm);
    /* The extension first: it may hold a dirty consumer of this VM. */
    if (vm->state_ext.release) vm->state_ext.release(vm->state_ext.ctx);
    vm->state_ext = (struct gw_vm_state_ext){0};
    gw_bus_destroy(&vm->bus);
    for (unsigned i = 0; i < vm->nvcpus; i++) gw_vcpu_destroy(vm->vcpus[i]);
    gw_guest_mem_destroy(&vm->mem);
    if (vm->vm_fd >= 0) close(vm->vm_fd);
    if (vm->kvm.fd > 0) gw_kvm_close(&vm->kvm);
    free(vm->ring_pending);
    pthread_cond_destroy(&vm->cond);
    pthread_mutex_destroy(&vm->ring_mu);
    pthread_mutex_destroy(&vm->lock);
    free(vm);
}

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);   /* vm->cond's clock */
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) { ts->tv_sec++; ts->tv_nsec -= 1000000000L; }
}

int gw_vm_wait(struct gw_vm *vm, int timeout_ms)
{
    struct timespec ts;
    if (timeout_ms >= 0) deadline_after(&ts, timeout_ms);
    pthread_mutex_lock(&vm->lock);
    int rc = 0;
    while (!vm->stop_req) {
        if (timeout_ms < 0) pthread_cond_wait(&vm->cond, &vm->lock);
        else if (pthread_cond_timedwait(&vm->cond, &vm->lock, &ts) == ETIMEDOUT) break;
    }
    rc = vm->stop_req ? 1 : 0;
    pthread_mutex_unlock(&vm->lock);
    return rc;
}

int gw_vm_wait_ready(struct gw_vm *vm, int timeout_ms)
{
    struct timespec ts;
    deadline_after(&ts, timeout_ms);
    pthread_mutex_lock(&vm->lock);
    int r = 0;
    while (!vm->fatal && vm->ready_vcpus < vm->nvcpus) {
        if (pthread_cond_timedwait(&vm->cond, &vm->lock, &ts) == ETIMEDOUT) { r = -ETIMEDOUT; break; }
    }
    if (vm->fatal) r = vm->fatal;
    pthread_mutex_unlock(&vm->lock);
    return r;
}

int gw_vm_fatal(struct gw_vm *vm, char *msg, unsigned msglen)
{
    pthread_mutex_lock(&vm->lock);
    int r = vm->fatal;
    if (msg && msglen) snprintf(msg, msglen, "%s", vm->fatal_msg);
    pthread_mutex_unlock(&vm->lock);
    return r;
}

bool gw_vm_guest_status(struct gw_vm *vm, struct gw_guest_status *out)
{
    const void *p = gw_guest_mem_ptr(&vm->mem, GW_GPA_STATUS, sizeof *out);
    if (!p) return false;
    memcpy(out, p, sizeof *out);
    return out->magic == GW_STATUS_MAGIC;
}

void gw_vm_guest_totals(struct gw_vm *vm, struct gw_guest_totals *t)
{
    memset(t, 0, sizeof *t);
    struct gw_guest_status st;
    bool ok = gw_vm_guest_status(vm, &st);
    for (unsigned i = 0; i < vm->nvcpus; i++) {
        t->vcpu_exits += __atomic_load_n(&vm->vcpus[i]->exits, __ATOMIC_RELAXED);
        if (!ok) continue;
        const struct gw_vcpu_counters *c = &st.vcpu[i];
        t->pages_written += c->pages_written;
        t->bytes_written += c->bytes_written;
        t->pages_verified += c->pages_verified;
        t->verify_errors += c->verify_errors;
        t->verify_passes += c->verify_passes;
        t->disk_blocks_written += c->disk_blocks_written;
        t->disk_blocks_read += c->disk_blocks_read;
        t->disk_verify_errors += c->disk_verify_errors;
        t->disk_io_errors += c->disk_io_errors;
        t->ticks += c->ticks;
    }
}
