/* Booting a Linux guest in a created VM (see vm.h, linux_boot.h): reads the kernel and the
 * initramfs, announces the virtio-mmio devices on the command line and in the MP table, lays
 * out guest memory and sets the boot processor's registers. The other vCPUs stay in KVM's
 * wait-for-SIPI state: the kernel starts them itself through the LAPIC. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "engine/common/log.h"
#include "engine/vm/linux_boot.h"
#include "engine/vm/vcpu.h"
#include "engine/vm/vm.h"

/* The virtio-mmio devices of the VM, in window order. */
static unsigned mmio_devices(struct gw_vm *vm, struct gw_linux_mmio_dev *devs)
{
    unsigned n = 0;
    if (gw_bus_find(&vm->bus, "vda"))
        devs[n++] = (struct gw_linux_mmio_dev){GW_VIRTIO_MMIO_BASE, GW_VIRTIO_MMIO_SIZE, GW_VIRTIO_BLK_GSI};
    struct gw_device *net = gw_bus_find(&vm->bus, "net0");
    if (net) devs[n++] = (struct gw_linux_mmio_dev){net->base, net->size, GW_VIRTIO_NET_GSI};
    return n;
}

static int set_bsp(struct gw_vm *vm, const struct gw_linux_kernel *k)
{
    struct gw_vcpu *v = vm->vcpus[0];
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0) return -errno;
    gw_linux_bsp_regs(k, &regs, &sregs);
    if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0) return -errno;
    if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0) return -errno;
    struct kvm_fpu fpu;
    memset(&fpu, 0, sizeof fpu);
    fpu.fcw = 0x37f;     /* x87 and SSE state as after FNINIT / reset */
    fpu.mxcsr = 0x1f80;
    if (ioctl(v->fd, KVM_SET_FPU, &fpu) < 0) return -errno;
    return 0;
}

int gw_vm_boot_linux(struct gw_vm *vm, char *err, unsigned errlen)
{
    if (!vm->kernel_path[0]) { snprintf(err, errlen, "a Linux guest needs a kernel (--kernel)"); return -EINVAL; }
    uint8_t *kimg = NULL, *initrd = NULL;
    size_t klen = 0, ilen = 0;
    char why[384];
    int r = gw_linux_read_file(vm->kernel_path, GW_LINUX_KERNEL_FILE_MAX, &kimg, &klen, why, sizeof why);
    if (r) { snprintf(err, errlen, "kernel: %s", why); return r; }
    if (vm->initrd_path[0]) {
        r = gw_linux_read_file(vm->initrd_path, GW_LINUX_INITRD_MAX, &initrd, &ilen, why, sizeof why);
        if (r) { snprintf(err, errlen, "initrd: %s", why); goto out; }
    }
    struct gw_linux_kernel k;
    r = gw_linux_load_kernel(&vm->mem, kimg, klen, &k, why, sizeof why);
    if (r) { snprintf(err, errlen, "kernel %s: %s", vm->kernel_path, why); goto out; }
    struct gw_linux_mmio_dev devs[GW_LINUX_MAX_MMIO_DEVS];
    unsigned ndevs = mmio_devices(vm, devs);
    char cmdline[GW_LINUX_CMDLINE_MAX];
    r = gw_linux_cmdline(vm->cmdline[0] ? vm->cmdline : NULL, devs, ndevs, k.cmdline_size, cmdline, sizeof cmdline);
    if (r < 0) {
        snprintf(err, errlen, "the command line with its virtio-mmio devices is longer than the kernel "
                 "takes (%u bytes)", k.cmdline_size);
        goto out;
    }
    struct gw_linux_boot_params p = {
        .kernel = &k, .initrd = initrd, .initrd_len = ilen, .cmdline = cmdline,
        .ncpus = vm->nvcpus, .devs = devs, .ndevs = ndevs,
    };
    r = gw_linux_setup(&vm->mem, &p, why, sizeof why);
    if (r) { snprintf(err, errlen, "%s", why); goto out; }
    r = set_bsp(vm, &k);
    if (r) { snprintf(err, errlen, "cannot set the boot processor's registers: %s", strerror(-r)); goto out; }
    gw_info("vm %s: linux %s (%s, %s), entry %#llx, initrd %zu bytes, command line: %s", vm->name,
            vm->kernel_path, k.is_bzimage ? "bzImage" : "ELF", k.compression,
            (unsigned long long)k.entry, ilen, cmdline);
out:
    free(kimg);
    free(initrd);
    return r < 0 ? r : 0;
}
