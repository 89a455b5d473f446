/* Saving and loading one vCPU's complete state (see vcpu.h): registers, segment and control
 * registers, FPU/SSE/AVX through XSAVE, XCRs, every MSR KVM lists, the LAPIC, pending
 * events, debug registers, MP state and the TSC frequency. The load order follows what KVM
 * needs: control registers before MSRs, MSRs before the LAPIC, events last. */
#include <errno.h>
#include <stddef.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "engine/common/log.h"
#include "engine/vm/kvm_blob.h"
#include "engine/vm/vcpu.h"
#include "engine/vm/vm.h"

#ifndef KVM_GET_XSAVE2
#define KVM_GET_XSAVE2 _IOR(KVMIO, 0xcf, struct kvm_xsave)
#endif

/* Reads every listed MSR; KVM stops a bulk read at the first MSR it cannot read, so the
 * loop skips that one and goes on. */
static int save_msrs(struct gw_vcpu *v, Godwit__V1__VcpuState *out)
{
    const struct kvm_msr_list *list = v->vm->kvm.msrs;
    uint32_t n = list->nmsrs;
    struct kvm_msrs *m = calloc(1, sizeof *m + n * sizeof(struct kvm_msr_entry));
    out->msrs = calloc(n ? n : 1, sizeof *out->msrs);
    Godwit__V1__Msr *cells = calloc(n ? n : 1, sizeof *cells);
    if (!m || !out->msrs || !cells) { free(m); free(cells); return -ENOMEM; }
    uint32_t done = 0, saved = 0;
    while (done < n) {
        m->nmsrs = n - done;
        for (uint32_t i = 0; i < m->nmsrs; i++) m->entries[i] = (struct kvm_msr_entry){.index = list->indices[done + i]};
        int r = ioctl(v->fd, KVM_GET_MSRS, m);
        if (r < 0) { free(m); if (!saved) free(cells); return -errno; }
        for (int i = 0; i < r; i++) {
            godwit__v1__msr__init(&cells[saved]);
            cells[saved].index = m->entries[i].index;
            cells[saved].value = m->entries[i].data;
            out->msrs[saved] = &cells[saved];
            saved++;
        }
        done += (uint32_t)r + ((uint32_t)r < m->nmsrs ? 1 : 0); /* skip the unreadable one */
    }
    out->n_msrs = saved;
    free(m);
    if (!saved) free(cells);   /* only msrs[0] owns the cells (gw_vcpu_state_clear) */
    return 0;
}

#define SAVE_BLOB(field, ioc, type)                                            \
    do {                                                                       \
        type tmp_;                                                             \
        memset(&tmp_, 0, sizeof tmp_);                                         \
        if (ioctl(v->fd, ioc, &tmp_) < 0) { r = -errno; goto fail; }           \
        if (!(out->field = gw_blob_new(&tmp_, sizeof tmp_))) { r = -ENOMEM; goto fail; } \
    } while (0)

int gw_vcpu_save(struct gw_vcpu *v, Godwit__V1__VcpuState *out)
{
    const struct gw_kvm *k = &v->vm->kvm;
    int r = 0;
    godwit__v1__vcpu_state__init(out);
    out->id = v->id;
    SAVE_BLOB(regs, KVM_GET_REGS, struct kvm_regs);
    if (k->has_sregs2) SAVE_BLOB(sregs2, KVM_GET_SREGS2, struct kvm_sregs2);
    else SAVE_BLOB(sregs, KVM_GET_SREGS, struct kvm_sregs);
    if (k->has_xsave) {
        size_t sz = (size_t)k->xsave_size;
        void *buf = calloc(1, sz);
        if (!buf) { r = -ENOMEM; goto fail; }
        if (ioctl(v->fd, k->has_xsave2 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, buf) < 0) { r = -errno; free(buf); goto fail; }
        out->xsave = gw_blob_new(buf, sz);
        free(buf);
        if (!out->xsave) { r = -ENOMEM; goto fail; }
    } else {
        SAVE_BLOB(fpu, KVM_GET_FPU, struct kvm_fpu);
    }
    if (k->has_xcrs) SAVE_BLOB(xcrs, KVM_GET_XCRS, struct kvm_xcrs);
    if ((r = save_msrs(v, out))) goto fail;
    SAVE_BLOB(lapic, KVM_GET_LAPIC, struct kvm_lapic_state);
    SAVE_BLOB(events, KVM_GET_VCPU_EVENTS, struct kvm_vcpu_events);
    if (k->has_debugregs) SAVE_BLOB(debugregs, KVM_GET_DEBUGREGS, struct kvm_debugregs);
    struct kvm_mp_state mp;
    if (ioctl(v->fd, KVM_GET_MP_STATE, &mp) < 0) { r = -errno; goto fail; }
    out->mp_state = mp.mp_state;
    int khz = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
    out->tsc_khz = khz > 0 ? (uint32_t)khz : 0;
    return 0;
fail:
    gw_vcpu_state_clear(out);
    return r;
}

void gw_vcpu_state_clear(Godwit__V1__VcpuState *st)
{
    gw_blob_free(st->regs); gw_blob_free(st->sregs); gw_blob_free(st->sregs2);
    gw_blob_free(st->xsave); gw_blob_free(st->xcrs); gw_blob_free(st->lapic);
    gw_blob_free(st->events); gw_blob_free(st->debugregs); gw_blob_free(st->fpu);
    if (st->msrs) { free(st->msrs[0]); free(st->msrs); } /* cells are one array */
    godwit__v1__vcpu_state__init(st);
}

static int load_msrs(struct gw_vcpu *v, const Godwit__V1__VcpuState *in, char *err, unsigned errlen)
{
    size_t n = in->n_msrs;
    if (n > 4096) { snprintf(err, errlen, "vcpu %u: %zu MSRs is more than any CPU has", v->id, n); return -EINVAL; }
    struct kvm_msrs *m = calloc(1, sizeof *m + n * sizeof(struct kvm_msr_entry));
    if (!m) return -ENOMEM;
    m->nmsrs = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        m->entries[i].index = in->msrs[i]->index;
        m->entries[i].data = in->msrs[i]->value;
    }
    int r = ioctl(v->fd, KVM_SET_MSRS, m);
    int result = 0;
    if (r < 0) result = -errno;
    else if ((size_t)r < n) {
        /* An MSR this host refuses (e.g. a feature it lacks): the state does not fit here. */
        snprintf(err, errlen, "vcpu %u: this host refused MSR 0x%x", v->id, m->entries[r].index);
        result = -EINVAL;
    }
    free(m);
    return result;
}

#define LOAD_BLOB(field, ioc, type, required)                                  \
    do {                                                                       \
        type tmp_;                                                             \
        int g_ = gw_blob_get(in->field, &tmp_, sizeof tmp_);                   \
        if (g_ == -ENOENT && !(required)) break;                               \
        if (g_) { snprintf(err, errlen, "vcpu %u: " #field " %s", v->id,      \
                           g_ == -ENOENT ? "missing" : "has the wrong size"); return -EINVAL; } \
        if (ioctl(v->fd, ioc, &tmp_) < 0) { int e_ = errno;                   \
            snprintf(err, errlen, "vcpu %u: loading " #field ": %s", v->id, strerror(e_)); return -e_; } \
    } while (0)

int gw_vcpu_load(struct gw_vcpu *v, const Godwit__V1__VcpuState *in, char *err, unsigned errlen)
{
    const struct gw_kvm *k = &v->vm->kvm;
    if (in->sregs2 && k->has_sregs2) LOAD_BLOB(sregs2, KVM_SET_SREGS2, struct kvm_sregs2, true);
    else if (in->sregs) LOAD_BLOB(sregs, KVM_SET_SREGS, struct kvm_sregs, true);
    else if (in->sregs2) {
        /* Saved with SREGS2 by a newer host; this one only has SREGS: convert. */
        struct kvm_sregs2 s2;
        if (gw_blob_get(in->sregs2, &s2, sizeof s2)) { snprintf(err, errlen, "vcpu %u: sregs2 has the wrong size", v->id); return -EINVAL; }
        struct kvm_sregs s;
        memset(&s, 0, sizeof s);
        memcpy(&s, &s2, offsetof(struct kvm_sregs, interrupt_bitmap));
        if (ioctl(v->fd, KVM_SET_SREGS, &s) < 0) return -errno;
    } else { snprintf(err, errlen, "vcpu %u: no segment registers in the state", v->id); return -EINVAL; }
    LOAD_BLOB(regs, KVM_SET_REGS, struct kvm_regs, true);
    if (in->xsave) {
        size_t len = in->xsave->data.len;
        if (len < sizeof(struct kvm_xsave) || len != in->xsave->size || len > (size_t)k->xsave_size) {
            snprintf(err, errlen, "vcpu %u: xsave area of %zu bytes does not fit this host (%d)", v->id, len, k->xsave_size);
            return -EINVAL;
        }
        void *buf = calloc(1, (size_t)k->xsave_size);
        if (!buf) return -ENOMEM;
        memcpy(buf, in->xsave->data.data, len);
        int r = ioctl(v->fd, KVM_SET_XSAVE, buf) < 0 ? -errno : 0;
        free(buf);
        if (r) { snprintf(err, errlen, "vcpu %u: loading xsave: %s", v->id, strerror(-r)); return r; }
    } else {
        LOAD_BLOB(fpu, KVM_SET_FPU, struct kvm_fpu, false);
    }
    if (k->has_xcrs) LOAD_BLOB(xcrs, KVM_SET_XCRS, struct kvm_xcrs, false);
    if (in->tsc_khz && k->has_tsc_control) {
        int cur = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
        if (cur > 0 && (uint32_t)cur != in->tsc_khz && ioctl(v->fd, KVM_SET_TSC_KHZ, in->tsc_khz) < 0)
            gw_warn("vcpu %u: cannot set TSC to %u kHz (host %d kHz): guest time may drift",
                    v->id, in->tsc_khz, cur);
    }
    int r = load_msrs(v, in, err, errlen);
    if (r) return r;
    LOAD_BLOB(lapic, KVM_SET_LAPIC, struct kvm_lapic_state, true);
    struct kvm_mp_state mp = {.mp_state = in->mp_state};
    if (ioctl(v->fd, KVM_SET_MP_STATE, &mp) < 0) {
        snprintf(err, errlen, "vcpu %u: loading mp_state %u: %s", v->id, in->mp_state, strerror(errno));
        return -EINVAL;
    }
    LOAD_BLOB(events, KVM_SET_VCPU_EVENTS, struct kvm_vcpu_events, true);
    if (k->has_debugregs) LOAD_BLOB(debugregs, KVM_SET_DEBUGREGS, struct kvm_debugregs, false);
    return 0;
}
