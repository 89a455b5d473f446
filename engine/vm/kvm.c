/* Opening KVM and probing its capabilities (see kvm.h). The probe result picks code paths
 * (SREGS2 or SREGS, XSAVE2 size, manual dirty-log protect) so that one binary runs on
 * hardware KVM and on PVM alike. */
#include "engine/vm/kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

const char *gw_kvm_device_path(void)
{
    const char *p = getenv("GODWIT_KVM_DEVICE");
    return p && *p ? p : "/dev/kvm";
}

static int check_ext(int fd, long cap)
{
    int r = ioctl(fd, KVM_CHECK_EXTENSION, cap);
    return r < 0 ? 0 : r;
}

static int read_cpuid(struct gw_kvm *k)
{
    for (int n = 128; n <= 4096; n *= 2) {
        struct kvm_cpuid2 *c = calloc(1, sizeof *c + (size_t)n * sizeof(struct kvm_cpuid_entry2));
        if (!c) return -ENOMEM;
        c->nent = (uint32_t)n;
        if (ioctl(k->fd, KVM_GET_SUPPORTED_CPUID, c) == 0) { k->cpuid = c; return 0; }
        int e = errno;
        free(c);
        if (e != E2BIG) return -e;
    }
    return -E2BIG;
}

static int read_msr_list(struct gw_kvm *k)
{
    struct kvm_msr_list probe = {.nmsrs = 0};
    if (ioctl(k->fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG) return -errno;
    struct kvm_msr_list *l = calloc(1, sizeof *l + probe.nmsrs * sizeof(uint32_t));
    if (!l) return -ENOMEM;
    l->nmsrs = probe.nmsrs;
    if (ioctl(k->fd, KVM_GET_MSR_INDEX_LIST, l) < 0) { int e = -errno; free(l); return e; }
    k->msrs = l;
    return 0;
}

int gw_kvm_open(struct gw_kvm *k, char *err, unsigned errlen)
{
    memset(k, 0, sizeof *k);
    const char *path = gw_kvm_device_path();
    k->fd = open(path, O_RDWR | O_CLOEXEC);
    if (k->fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s: %s", path, strerror(e),
                 e == ENOENT ? "KVM is not available on this host (no KVM module loaded, or "
                               "virtualisation is disabled)"
                 : e == EACCES || e == EPERM ? "no permission to use KVM (run as root or join the kvm group)"
                 : "cannot open the KVM device");
        return -e;
    }
    int version = ioctl(k->fd, KVM_GET_API_VERSION, 0);
    if (version != KVM_API_VERSION) {
        snprintf(err, errlen, "%s: KVM API version %d, expected %d", path, version, KVM_API_VERSION);
        gw_kvm_close(k);
        return -ENOTSUP;
    }
    static const struct { long cap; const char *name; } required[] = {
        {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
        {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
        {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
        {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE"},
        {KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS"},
        {KVM_CAP_ADJUST_CLOCK, "KVM_CAP_ADJUST_CLOCK"},
    };
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        if (!check_ext(k->fd, required[i].cap)) {
            snprintf(err, errlen, "%s: this KVM lacks %s, which Godwit needs", path, required[i].name);
            gw_kvm_close(k);
            return -ENOTSUP;
        }
    }
    k->vcpu_mmap_size = ioctl(k->fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    k->has_sregs2 = check_ext(k->fd, KVM_CAP_SREGS2) > 0;
    k->has_xsave = check_ext(k->fd, KVM_CAP_XSAVE) > 0;
    int xs2 = check_ext(k->fd, KVM_CAP_XSAVE2);
    k->has_xsave2 = xs2 > 0;
    k->xsave_size = xs2 > (int)sizeof(struct kvm_xsave) ? xs2 : (int)sizeof(struct kvm_xsave);
    k->has_xcrs = check_ext(k->fd, KVM_CAP_XCRS) > 0;
    k->has_debugregs = check_ext(k->fd, KVM_CAP_DEBUGREGS) > 0;
    k->has_manual_dirty_protect = check_ext(k->fd, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) > 0;
    k->has_pit = check_ext(k->fd, KVM_CAP_PIT2) > 0;
    k->has_tsc_control = check_ext(k->fd, KVM_CAP_TSC_CONTROL) > 0;

    int r = read_cpuid(k);
    if (!r) r = read_msr_list(k);
    if (r) {
        snprintf(err, errlen, "%s: cannot read supported CPUID/MSRs: %s", path, strerror(-r));
        gw_kvm_close(k);
        return r;
    }
    return 0;
}

void gw_kvm_close(struct gw_kvm *k)
{
    if (k->fd > 0) close(k->fd);
    free(k->cpuid);
    free(k->msrs);
    memset(k, 0, sizeof *k);
    k->fd = -1;
}
