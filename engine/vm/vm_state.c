/* The whole VM's state as one VmState message (see vm.h): configuration, every vCPU, the
 * KVM clock, the in-kernel interrupt controllers, and each device's own state. Devices are
 * quiesced first so no request is in flight when their state is taken. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/vm/kvm_blob.h"
#include "engine/vm/state_format.h"
#include "engine/vm/vcpu.h"
#include "engine/vm/vm.h"

/* What a saved VmState owns besides the protobuf tree: the config strings live in the VM,
 * so the message is freed by walking it here rather than with protobuf's free. */
struct saved_state {
    Godwit__V1__VmState st;
    Godwit__V1__VmConfig cfg;
    Godwit__V1__MemoryRegion regions[GW_MEM_MAX_REGIONS];
    Godwit__V1__MemoryRegion *region_ptrs[GW_MEM_MAX_REGIONS];
    Godwit__V1__IrqchipState irqchip;
    Godwit__V1__VcpuState vcpus[GW_MAX_VCPUS];
    Godwit__V1__VcpuState *vcpu_ptrs[GW_MAX_VCPUS];
    Godwit__V1__DeviceState devices[GW_BUS_MAX_DEVICES];
    Godwit__V1__DeviceState *device_ptrs[GW_BUS_MAX_DEVICES];
    char writer[64];
    void (*ext_free)(Godwit__V1__VmState *st);   /* the extension's part, when saved */
};

/* Set once at process start (gw_vm_set_state_ext_factory), read afterwards only. */
static int (*ext_factory)(struct gw_vm *vm);

void gw_vm_set_state_ext_factory(int (*make)(struct gw_vm *vm))
{
    ext_factory = make;
}

int gw_vm_set_state_ext(struct gw_vm *vm, const struct gw_vm_state_ext *ext)
{
    if (vm->state_ext.ctx) return -EBUSY;
    vm->state_ext = *ext;
    return 0;
}

void gw_vm_describe(struct gw_vm *vm, Godwit__V1__VmConfig *cfg, Godwit__V1__MemoryRegion *regions,
                    Godwit__V1__MemoryRegion **region_ptrs)
{
    godwit__v1__vm_config__init(cfg);
    cfg->name = vm->name;
    cfg->memory_bytes = vm->mem.size;
    cfg->vcpus = vm->nvcpus;
    cfg->guest_spec = vm->guest_spec;
    cfg->disk_path = vm->disk_path;
    for (unsigned i = 0; i < vm->mem.nregions; i++) {
        godwit__v1__memory_region__init(&regions[i]);
        regions[i].gpa = vm->mem.regions[i].gpa;
        regions[i].size = vm->mem.regions[i].size;
        regions[i].offset = vm->mem.regions[i].offset;
        region_ptrs[i] = &regions[i];
    }
    cfg->n_regions = vm->mem.nregions;
    cfg->regions = region_ptrs;
}

void gw_vm_flush_devices(struct gw_vm *vm)
{
    for (unsigned i = 0; i < vm->bus.ndevices; i++) {
        struct gw_device *d = vm->bus.devices[i];
        if (!d->ops->quiesce) continue;
        pthread_mutex_lock(&d->lock);
        d->ops->quiesce(d);
        pthread_mutex_unlock(&d->lock);
    }
}

static int save_chip(struct gw_vm *vm, uint32_t id, Godwit__V1__KvmBlob **out)
{
    struct kvm_irqchip chip;
    memset(&chip, 0, sizeof chip);
    chip.chip_id = id;
    if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &chip) < 0) return -errno;
    *out = gw_blob_new(&chip, sizeof chip);
    return *out ? 0 : -ENOMEM;
}

static int save_state(struct gw_vm *vm, Godwit__V1__VmState **out, bool with_ext)
{
    struct saved_state *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    Godwit__V1__VmState *st = &s->st;
    godwit__v1__vm_state__init(st);
    st->format_version = GW_STATE_FORMAT_VERSION;
    st->saved_at_unix_ns = gw_wall_ns();
    snprintf(s->writer, sizeof s->writer, "godwit-vm %s", GW_VERSION_STRING);
    st->writer = s->writer;
    gw_vm_describe(vm, &s->cfg, s->regions, s->region_ptrs);
    st->config = &s->cfg;
    int r = 0;

    for (unsigned i = 0; i < vm->nvcpus; i++) {
        r = gw_vcpu_save(vm->vcpus[i], &s->vcpus[i]);
        if (r) { gw_error("vm %s: saving vcpu %u: %s", vm->name, i, strerror(-r)); goto fail; }
        s->vcpu_ptrs[i] = &s->vcpus[i];
        st->n_vcpus = i + 1;
    }
    st->vcpus = s->vcpu_ptrs;

    struct kvm_clock_data clock;
    memset(&clock, 0, sizeof clock);
    if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &clock) < 0) { r = -errno; goto fail; }
    if (!(st->clock = gw_blob_new(&clock, sizeof clock))) { r = -ENOMEM; goto fail; }

    godwit__v1__irqchip_state__init(&s->irqchip);
    st->irqchip = &s->irqchip;
    if ((r = save_chip(vm, KVM_IRQCHIP_PIC_MASTER, &s->irqchip.pic_master))) goto fail;
    if ((r = save_chip(vm, KVM_IRQCHIP_PIC_SLAVE, &s->irqchip.pic_slave))) goto fail;
    if ((r = save_chip(vm, KVM_IRQCHIP_IOAPIC, &s->irqchip.ioapic))) goto fail;
    if (vm->has_pit) {
        struct kvm_pit_state2 pit;
        if (ioctl(vm->vm_fd, KVM_GET_PIT2, &pit) < 0) { r = -errno; goto fail; }
        if (!(st->pit = gw_blob_new(&pit, sizeof pit))) { r = -ENOMEM; goto fail; }
    }

    for (unsigned i = 0; i < vm->bus.ndevices; i++) {
        struct gw_device *d = vm->bus.devices[i];
        Godwit__V1__DeviceState *ds = &s->devices[i];
        godwit__v1__device_state__init(ds);
        ds->name = (char *)d->name;
        pthread_mutex_lock(&d->lock);
        r = d->ops->quiesce ? d->ops->quiesce(d) : 0;
        if (!r) r = d->ops->save(d, ds);
        pthread_mutex_unlock(&d->lock);
        if (r) { gw_error("vm %s: saving device %s: %s", vm->name, d->name, strerror(-r)); goto fail; }
        s->device_ptrs[i] = ds;
        st->n_devices = i + 1;
    }
    st->devices = s->device_ptrs;
    if (with_ext && vm->state_ext.save) {
        r = vm->state_ext.save(vm->state_ext.ctx, st);
        if (r) { gw_error("vm %s: saving the state extension: %s", vm->name, strerror(-r)); goto fail; }
        s->ext_free = vm->state_ext.free_saved;
    }
    *out = st;
    return 0;
fail:
    gw_vm_state_free(st);
    return r;
}

int gw_vm_save_state(struct gw_vm *vm, Godwit__V1__VmState **out)
{
    return save_state(vm, out, true);
}

int gw_vm_save_state_core(struct gw_vm *vm, Godwit__V1__VmState **out)
{
    return save_state(vm, out, false);
}

void gw_vm_state_free(Godwit__V1__VmState *st)
{
    if (!st) return;
    struct saved_state *s = (struct saved_state *)st; /* st is the first member */
    if (s->ext_free) s->ext_free(st);
    for (size_t i = 0; i < st->n_vcpus; i++) gw_vcpu_state_clear(&s->vcpus[i]);
    gw_blob_free(st->clock);
    gw_blob_free(st->pit);
    gw_blob_free(s->irqchip.pic_master);
    gw_blob_free(s->irqchip.pic_slave);
    gw_blob_free(s->irqchip.ioapic);
    free(s);
}

static int load_chip(struct gw_vm *vm, uint32_t id, const Godwit__V1__KvmBlob *b, char *err, unsigned errlen)
{
    struct kvm_irqchip chip;
    if (gw_blob_get(b, &chip, sizeof chip) || chip.chip_id != id) {
        snprintf(err, errlen, "irqchip %u state missing or malformed", id);
        return -EINVAL;
    }
    if (ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &chip) < 0) {
        snprintf(err, errlen, "loading irqchip %u: %s", id, strerror(errno));
        return -errno;
    }
    return 0;
}

static int check_shape(struct gw_vm *vm, const Godwit__V1__VmState *st, char *err, unsigned errlen)
{
    if (st->format_version / 100 != GW_STATE_FORMAT_VERSION / 100) {
        snprintf(err, errlen, "state format %u is not readable by this runner (reads %u.x)",
                 st->format_version, GW_STATE_FORMAT_VERSION / 100);
        return -EINVAL;
    }
    if (!st->config || st->config->memory_bytes != vm->mem.size || st->config->vcpus != vm->nvcpus) {
        snprintf(err, errlen, "state is for a VM of %llu bytes and %u vcpus, this VM has %llu and %u",
                 st->config ? (unsigned long long)st->config->memory_bytes : 0ull,
                 st->config ? st->config->vcpus : 0, (unsigned long long)vm->mem.size, vm->nvcpus);
        return -EINVAL;
    }
    if (st->n_vcpus != vm->nvcpus) {
        snprintf(err, errlen, "state holds %zu vcpus, the VM has %u", st->n_vcpus, vm->nvcpus);
        return -EINVAL;
    }
    return 0;
}

int gw_vm_load_state(struct gw_vm *vm, const Godwit__V1__VmState *st, char *err, unsigned errlen)
{
    int r = check_shape(vm, st, err, errlen);
    if (r) return r;
    /* The interrupt controllers first: KVM_SET_LAPIC on a vCPU checks against them. */
    if (!st->irqchip) { snprintf(err, errlen, "state has no irqchip"); return -EINVAL; }
    if ((r = load_chip(vm, KVM_IRQCHIP_PIC_MASTER, st->irqchip->pic_master, err, errlen))) return r;
    if ((r = load_chip(vm, KVM_IRQCHIP_PIC_SLAVE, st->irqchip->pic_slave, err, errlen))) return r;
    if ((r = load_chip(vm, KVM_IRQCHIP_IOAPIC, st->irqchip->ioapic, err, errlen))) return r;
    if (vm->has_pit) {
        struct kvm_pit_state2 pit;
        if (gw_blob_get(st->pit, &pit, sizeof pit)) {
            snprintf(err, errlen, "PIT state missing or malformed");
            return -EINVAL;
        }
        if (ioctl(vm->vm_fd, KVM_SET_PIT2, &pit) < 0) {
            snprintf(err, errlen, "loading the PIT: %s", strerror(errno));
            return -errno;
        }
    }
    for (size_t i = 0; i < st->n_vcpus; i++) {
        const Godwit__V1__VcpuState *vs = st->vcpus[i];
        if (!vs || vs->id >= vm->nvcpus) { snprintf(err, errlen, "vcpu state %zu has a bad id", i); return -EINVAL; }
        r = gw_vcpu_load(vm->vcpus[vs->id], vs, err, errlen);
        if (r) return r;
    }
    struct kvm_clock_data clock;
    if (gw_blob_get(st->clock, &clock, sizeof clock)) { snprintf(err, errlen, "clock state missing or malformed"); return -EINVAL; }
    /* No flags: the guest clock resumes where it was saved, as if no time passed. */
    clock.flags = 0;
    if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &clock) < 0) {
        snprintf(err, errlen, "loading the KVM clock: %s", strerror(errno));
        return -errno;
    }
    for (size_t i = 0; i < st->n_devices; i++) {
        const Godwit__V1__DeviceState *ds = st->devices[i];
        struct gw_device *d = ds && ds->name ? gw_bus_find(&vm->bus, ds->name) : NULL;
        if (!d) {
            snprintf(err, errlen, "state has device '%s' which this VM lacks", ds && ds->name ? ds->name : "?");
            return -EINVAL;
        }
        pthread_mutex_lock(&d->lock);
        r = d->ops->load(d, ds);
        pthread_mutex_unlock(&d->lock);
        if (r) { snprintf(err, errlen, "device %s refused its saved state: %s", d->name, strerror(-r)); return r; }
    }
    /* A restored guest has booted and is past its set-up. */
    pthread_mutex_lock(&vm->lock);
    vm->booted_vcpus = vm->ready_vcpus = vm->nvcpus;
    pthread_mutex_unlock(&vm->lock);
    if (st->backup_since && !vm->state_ext.ctx && ext_factory && (r = ext_factory(vm)))
        gw_warn("vm %s: state extension: %s (its part of the state is dropped)", vm->name, strerror(-r));
    if (vm->state_ext.load) {
        char why[256] = "";
        if ((r = vm->state_ext.load(vm->state_ext.ctx, st, why, sizeof why)))
            gw_warn("vm %s: state extension refused its part: %s", vm->name, why[0] ? why : strerror(-r));
    }
    return 0;
}
