/* The evacuation planner: which VM goes where, in which order, and what it will cost. Pure
 * (no I/O, no locks, no clock) so that it is tested on its own (tests/daemon/test_cluster_plan.c)
 * and a dry run shows exactly the plan a real run follows.
 *
 * Order: priority classes first (an operator's important VMs leave the host before anything
 * can go wrong with the rest), then the smallest VM first: with a cap of k migrations at once
 * the shortest-job-first order minimises the mean time a VM spends waiting, and it frees the
 * host's count of VMs fastest. Ties by name, so that a plan is reproducible.
 *
 * A VM with a job or operation of its own in progress is a blocker (VM_BUSY), decided before
 * any placement (see gw_cluster_vm_busy for why it does not wait).
 *
 * Placement: worst fit (the live, active host with the most free memory), which spreads the
 * VMs and so spreads the inbound migrations over the destinations' caps. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/common/util.h"
#include "engine/daemon/cluster.h"

bool gw_cluster_estimate(const struct gw_cluster_fit *f, uint64_t mem, uint64_t dirty, uint64_t *bytes, uint64_t *ms)
{
    /* The fitted rate is that of the migrations measured, with their guests' usual dirtying
     * already in it: a converging VM takes mem / bw. What the dirty rate decides is whether
     * pre-copy can converge at all: it cannot when the guest dirties faster than the link
     * carries, and then hybrid goes on in post-copy, which took nonconverging_pct of the
     * fitted time when measured. The bytes: pre-copy's geometric series, mem / (1 - d/link). */
    uint64_t bw = f->bw ? f->bw : GW_EVAC_DEFAULT_BW;
    uint64_t link = f->link_bw ? f->link_bw : bw;
    double secs = (double)mem / (double)bw;
    if (dirty >= link) {
        double k = (f->nonconverging_pct ? f->nonconverging_pct : GW_EVAC_NONCONVERGING_PCT) / 100.0;
        *bytes = gw_u64_of_double((double)mem * k);
        *ms = gw_u64_of_double(secs * k * 1000.0 + 1);
        return false;
    }
    /* Saturated: the fit may be other hosts' published figures (gw_cluster_model bounds them,
     * but a dirty rate a hair below the link still divides by next to nothing). */
    *bytes = gw_u64_of_double((double)mem / (1.0 - (double)dirty / (double)link));
    *ms = gw_u64_of_double(secs * 1000.0 + 1);
    return true;
}

bool gw_cluster_fit_plausible(const Godwit__V1__ClusterHost *h)
{
    return h->migration_bandwidth_bytes_per_s <= GW_CLUSTER_FIT_MAX_BW &&
           h->migration_link_bytes_per_s <= GW_CLUSTER_FIT_MAX_BW &&
           h->migration_overhead_ms <= GW_CLUSTER_FIT_MAX_OVERHEAD_MS &&
           h->migration_nonconverging_pct <= GW_CLUSTER_FIT_MAX_PCT;
}

void gw_cluster_fit_samples(const uint64_t *x, const uint64_t *y, const uint64_t *wire, unsigned n,
                            struct gw_cluster_fit *fit)
{
    memset(fit, 0, sizeof *fit);
    if (n > GW_CLUSTER_SAMPLES) n = GW_CLUSTER_SAMPLES;
    double v[GW_CLUSTER_SAMPLES * GW_CLUSTER_SAMPLES / 2 + 1];
    unsigned m = 0;
    /* Pairs of sizes too alike (within 5%) cannot separate the slope from the intercept. */
    for (unsigned i = 0; i < n; i++)
        for (unsigned j = i + 1; j < n; j++) {
            double dx = (double)x[j] - (double)x[i];
            if (fabs(dx) > 0.05 * (double)(x[i] > x[j] ? x[i] : x[j])) v[m++] = ((double)y[j] - (double)y[i]) / dx;
        }
    double k = m ? gw_median(v, m) : 0, a = 0;
    if (k > 0) {
        for (unsigned i = 0; i < n; i++) v[i] = (double)y[i] - k * (double)x[i];
        a = gw_median(v, n);
    }
    if (k <= 0 || a < 0) {   /* no usable line: the median rate, no fixed cost */
        unsigned c = 0;
        for (unsigned i = 0; i < n; i++)
            if (x[i]) v[c++] = (double)y[i] / (double)x[i];
        k = c ? gw_median(v, c) : 0;
        a = 0;
    }
    if (k <= 0) return;
    fit->bw = gw_u64_of_double(1000.0 / k);
    fit->overhead_ms = gw_u64_of_double(a);
    double pct = 0;
    unsigned slow = 0, c = 0;
    for (unsigned i = 0; i < n; i++) {
        double line = a + k * (double)x[i];
        if (line > 0 && (double)y[i] * 100.0 > GW_EVAC_OUTLIER_PCT * line) { pct += (double)y[i] * 100.0 / line; slow++; }
        if (wire && wire[i]) v[c++] = (double)wire[i];
    }
    fit->nonconverging_pct = slow ? (uint32_t)gw_u64_of_double(fmin(pct / slow, UINT32_MAX)) : 0;
    fit->link_bw = c ? gw_u64_of_double(gw_median(v, c)) : 0;
}

static int cmp_vm(const void *a, const void *b, void *arg)
{
    const struct gw_plan_in *in = arg;
    const struct gw_plan_vm *x = &in->vms[((const struct gw_plan_step *)a)->vm];
    const struct gw_plan_vm *y = &in->vms[((const struct gw_plan_step *)b)->vm];
    if (x->priority != y->priority) return x->priority > y->priority ? -1 : 1;
    if (x->memory_bytes != y->memory_bytes) return x->memory_bytes < y->memory_bytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static bool disk_reachable(const Godwit__V1__ClusterHost *h, const char *disk)
{
    if (!disk || !disk[0]) return true;
    /* Cluster storage: every host reaches it; the destination checks its rbd_pools when it
     * prepares (PrepareIncoming), with the reason. */
    if (!strncmp(disk, "rbd:", 4)) return true;
    for (size_t i = 0; i < h->n_image_roots; i++) {
        size_t l = strlen(h->image_roots[i]);
        while (l > 1 && h->image_roots[i][l - 1] == '/') l--;
        if (l && !strncmp(disk, h->image_roots[i], l) && disk[l] == '/') return true;
    }
    return false;
}

/* Whether host h (index hi) already holds, or is given by the plan so far, a VM of group g. */
static bool group_on(const struct gw_plan_in *in, const struct gw_plan_step *steps, size_t done, size_t hi,
                     const char *g)
{
    if (!g || !g[0]) return false;
    const Godwit__V1__ClusterHost *h = in->hosts[hi];
    for (size_t i = 0; i < h->n_vms; i++)
        if (h->vms[i]->anti_affinity && !strcmp(h->vms[i]->anti_affinity, g)) return true;
    for (size_t i = 0; i < done; i++)
        if (steps[i].host == (int)hi && !strcmp(in->vms[steps[i].vm].anti_affinity, g)) return true;
    return false;
}

unsigned gw_cluster_plan(const struct gw_plan_in *in, struct gw_plan_step *steps)
{
    size_t nh = in->n_hosts > GW_CLUSTER_MAX_HOSTS ? GW_CLUSTER_MAX_HOSTS : in->n_hosts;
    uint64_t free_mem[GW_CLUSTER_MAX_HOSTS];
    int64_t free_cpu[GW_CLUSTER_MAX_HOSTS];
    bool usable[GW_CLUSTER_MAX_HOSTS];
    bool any_live = false;
    for (size_t i = 0; i < nh; i++) {
        const Godwit__V1__ClusterHost *h = in->hosts[i];
        usable[i] = !h->down && h->state == GODWIT__V1__CLUSTER_HOST__STATE__ACTIVE && strcmp(h->name, in->self);
        free_mem[i] = h->memory_bytes > h->memory_allocated_bytes ? h->memory_bytes - h->memory_allocated_bytes : 0;
        free_cpu[i] = (int64_t)h->vcpus - (int64_t)h->vcpus_allocated;
        any_live |= usable[i];
    }
    for (size_t i = 0; i < in->n_vms; i++) {
        memset(&steps[i], 0, sizeof steps[i]);
        steps[i].vm = (unsigned)i;
    }
    qsort_r(steps, in->n_vms, sizeof *steps, cmp_vm, (void *)in);
    unsigned blocked = 0;
    for (size_t s = 0; s < in->n_vms; s++) {
        struct gw_plan_step *st = &steps[s];
        const struct gw_plan_vm *v = &in->vms[st->vm];
        if (v->busy[0]) {   /* before placement: it takes no host's room */
            st->host = -1;
            st->blocker = "VM_BUSY";
            snprintf(st->message, sizeof st->message, "%s", v->busy);
            blocked++;
            continue;
        }
        int best = -1;
        bool fits_somewhere = false, disk_somewhere = false;
        for (size_t i = 0; i < nh; i++) {
            if (!usable[i]) continue;
            if (free_mem[i] < v->memory_bytes || free_cpu[i] < (int64_t)v->vcpus) continue;
            fits_somewhere = true;
            if (!disk_reachable(in->hosts[i], v->disk)) continue;
            disk_somewhere = true;
            if (group_on(in, steps, s, i, v->anti_affinity)) continue;
            if (best < 0 || free_mem[i] > free_mem[best]) best = (int)i;
        }
        st->host = best;
        struct gw_cluster_fit f = {.bw = in->bandwidth, .overhead_ms = in->overhead_ms, .link_bw = in->link_bw,
                                   .nonconverging_pct = in->nonconverging_pct};
        gw_cluster_estimate(&f, v->memory_bytes, v->dirty_rate, &st->est_bytes, &st->est_ms);
        if (!gw_add_ok(st->est_ms, in->overhead_ms, &st->est_ms)) st->est_ms = UINT64_MAX;
        if (best >= 0) {
            free_mem[best] -= v->memory_bytes;
            free_cpu[best] -= v->vcpus;
            continue;
        }
        blocked++;
        if (!any_live) {
            st->blocker = "NO_LIVE_HOST";
            snprintf(st->message, sizeof st->message, "no other live, active host in the cluster");
        } else if (!fits_somewhere) {
            st->blocker = "NO_CAPACITY";
            snprintf(st->message, sizeof st->message, "no host has %llu MiB and %u vCPUs free",
                     (unsigned long long)(v->memory_bytes >> 20), v->vcpus);
        } else if (!disk_somewhere) {
            st->blocker = "DISK_NOT_SHARED";
            snprintf(st->message, sizeof st->message, "disk %.150s is on no other host's image_roots", v->disk);
        } else {
            st->blocker = "ANTI_AFFINITY";
            snprintf(st->message, sizeof st->message, "every host with room already holds a VM of group %.100s",
                     v->anti_affinity);
        }
    }
    return blocked;
}
