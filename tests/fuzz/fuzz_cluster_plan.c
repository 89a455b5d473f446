/* libFuzzer target for the evacuation planner (engine/daemon/cluster_plan.c) fed with host
 * records as another host, or whoever can write to the registry, may publish them: any
 * memory and vCPU figures (allocated past the total too), any state, image roots with and
 * without trailing slashes, VMs in anti-affinity groups, and a fitted time model with any
 * figures. The input also decodes as one ClusterHost record, which joins the others when it
 * decodes. The plan must keep its promises, checked here from the outside:
 * - every VM appears once, in the promised order (priority, then smallest memory, then name);
 * - a placed VM is on a live, active host that is not the source, whose free memory and vCPUs
 *   it fits together with the rest placed there, that reaches its disk, and that holds no
 *   other VM of its anti-affinity group, neither before nor by this plan;
 * - a blocked one has a reason and a message, a busy one is blocked as VM_BUSY, and the
 *   count of blocked steps is what the planner returns.
 * And the estimates, and the time model fitted on any samples, stay defined (the sanitizers
 * trap a double cast out of range). */
#include "engine/daemon/cluster.h"
#include "tests/fuzz/fuzz_input.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HOSTS_MAX 8
#define VMS_MAX 12
#define ROOTS_MAX 3
#define HVMS_MAX 3

static uint64_t take64(struct input *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | take(in);
    return v;
}

/* A size that is usually plausible (MiB to GiB) and sometimes anything at all. */
static uint64_t take_size(struct input *in)
{
    unsigned k = take(in);
    if (k >= 240) return take64(in);
    return (uint64_t)(k % 64 + 1) << (20 + take(in) % 5);
}

static const char *const NAMES[] = {"self", "h1", "h2", "h3", "h4", "h5", "h6", "h7"};
static const char *const ROOTS[] = {"/img", "/img/", "/", "/data//", "", "/imgx"};
static const char *const GROUPS[] = {"", "", "db", "web"};
static const char *const DISKS[] = {"", "rbd:pool/image", "/img/a.raw", "/data/b.raw", "/imgx/c.raw", "/imgy/d", "img/e"};
#define PICK(a, in) (a[take(in) % (sizeof a / sizeof *a)])

static bool reaches(const Godwit__V1__ClusterHost *h, const char *disk)
{
    if (!disk[0] || !strncmp(disk, "rbd:", 4)) return true;
    for (size_t i = 0; i < h->n_image_roots; i++) {
        size_t l = strlen(h->image_roots[i]);
        while (l > 1 && h->image_roots[i][l - 1] == '/') l--;
        if (l && !strncmp(disk, h->image_roots[i], l) && disk[l] == '/') return true;
    }
    return false;
}

static bool usable(const Godwit__V1__ClusterHost *h)
{
    return !h->down && h->state == GODWIT__V1__CLUSTER_HOST__STATE__ACTIVE && strcmp(h->name, "self");
}

static void check(const struct gw_plan_in *in, const struct gw_plan_step *st, unsigned blocked)
{
    bool seen[VMS_MAX] = {0};
    unsigned nblocked = 0;
    uint64_t mem[HOSTS_MAX + 1] = {0}, cpu[HOSTS_MAX + 1] = {0};
    for (size_t s = 0; s < in->n_vms; s++) {
        if (st[s].vm >= in->n_vms || seen[st[s].vm]) abort();
        seen[st[s].vm] = true;
        const struct gw_plan_vm *v = &in->vms[st[s].vm];
        if (s) {
            const struct gw_plan_vm *u = &in->vms[st[s - 1].vm];
            if (u->priority < v->priority) abort();
            if (u->priority == v->priority &&
                (u->memory_bytes > v->memory_bytes || (u->memory_bytes == v->memory_bytes && strcmp(u->name, v->name) > 0)))
                abort();
        }
        if (memchr(st[s].message, 0, sizeof st[s].message) == NULL) abort();
        if (st[s].host < 0) {
            nblocked++;
            if (!st[s].blocker || !st[s].message[0]) abort();
            if (v->busy[0] && strcmp(st[s].blocker, "VM_BUSY")) abort();
            continue;
        }
        if (v->busy[0] || (size_t)st[s].host >= in->n_hosts) abort();
        const Godwit__V1__ClusterHost *h = in->hosts[st[s].host];
        if (!usable(h) || !reaches(h, v->disk)) abort();
        mem[st[s].host] += v->memory_bytes;
        cpu[st[s].host] += v->vcpus;
        uint64_t free_mem = h->memory_bytes > h->memory_allocated_bytes ? h->memory_bytes - h->memory_allocated_bytes : 0;
        int64_t free_cpu = (int64_t)h->vcpus - (int64_t)h->vcpus_allocated;
        if (mem[st[s].host] > free_mem || (int64_t)cpu[st[s].host] > free_cpu) abort();
        if (!v->anti_affinity[0]) continue;
        for (size_t i = 0; i < h->n_vms; i++)
            if (!strcmp(h->vms[i]->anti_affinity, v->anti_affinity)) abort();
        for (size_t t = 0; t < s; t++)
            if (st[t].host == st[s].host && !strcmp(in->vms[st[t].vm].anti_affinity, v->anti_affinity)) abort();
    }
    if (nblocked != blocked) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    Godwit__V1__ClusterHost hosts[HOSTS_MAX];
    Godwit__V1__ClusterHost *hp[HOSTS_MAX + 1];
    char *roots[HOSTS_MAX][ROOTS_MAX];
    Godwit__V1__ClusterVm hvms[HOSTS_MAX][HVMS_MAX];
    Godwit__V1__ClusterVm *hvp[HOSTS_MAX][HVMS_MAX];
    size_t nh = take(&in) % (HOSTS_MAX + 1);
    for (size_t i = 0; i < nh; i++) {
        Godwit__V1__ClusterHost *h = &hosts[i];
        godwit__v1__cluster_host__init(h);
        h->name = (char *)NAMES[take(&in) % (sizeof NAMES / sizeof *NAMES)];
        unsigned f = take(&in);
        h->down = f & 1;
        h->state = (f & 6) ? GODWIT__V1__CLUSTER_HOST__STATE__ACTIVE : (int)(f >> 3 & 3);
        h->memory_bytes = take_size(&in);
        h->memory_allocated_bytes = (f & 0x80) ? take_size(&in) : 0;
        h->vcpus = take(&in) % 32;
        h->vcpus_allocated = (f & 0x40) ? take(&in) % 40 : 0;
        h->n_image_roots = take(&in) % (ROOTS_MAX + 1);
        for (size_t r = 0; r < h->n_image_roots; r++) roots[i][r] = (char *)PICK(ROOTS, &in);
        h->image_roots = roots[i];
        h->n_vms = take(&in) % (HVMS_MAX + 1);
        for (size_t k = 0; k < h->n_vms; k++) {
            godwit__v1__cluster_vm__init(&hvms[i][k]);
            hvms[i][k].anti_affinity = (char *)PICK(GROUPS, &in);
            hvp[i][k] = &hvms[i][k];
        }
        h->vms = hvp[i];
        hp[i] = h;
    }
    struct gw_plan_vm vms[VMS_MAX];
    size_t nv = take(&in) % (VMS_MAX + 1);
    for (size_t i = 0; i < nv; i++) {
        static const char *const VM_NAMES[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"};
        unsigned f = take(&in);
        vms[i] = (struct gw_plan_vm){.name = VM_NAMES[(i + f) % VMS_MAX], .memory_bytes = take_size(&in),
                                     .vcpus = take(&in) % 8, .priority = f >> 6, .anti_affinity = PICK(GROUPS, &in),
                                     .disk = PICK(DISKS, &in), .dirty_rate = (f & 8) ? take64(&in) : 0};
        if (f & 0x10) strcpy(vms[i].busy, "migrating");
    }
    struct gw_plan_in pin = {.vms = vms, .n_vms = nv, .hosts = hp, .n_hosts = nh, .self = "self"};
    unsigned f = take(&in);
    if (f & 1) pin.bandwidth = take64(&in);
    if (f & 2) pin.overhead_ms = take64(&in);
    if (f & 4) pin.link_bw = take64(&in);
    if (f & 8) pin.nonconverging_pct = (uint32_t)take64(&in);
    /* The whole input as one record, as the registry would decode it. */
    Godwit__V1__ClusterHost *rec = godwit__v1__cluster_host__unpack(NULL, size, data);
    if (rec) hp[pin.n_hosts++] = rec;
    struct gw_plan_step steps[VMS_MAX];
    unsigned blocked = gw_cluster_plan(&pin, steps);
    check(&pin, steps, blocked);
    /* The time model fitted on any samples (this host's own migrations), then used. */
    uint64_t x[GW_CLUSTER_SAMPLES], y[GW_CLUSTER_SAMPLES], w[GW_CLUSTER_SAMPLES];
    unsigned ns = take(&in) % (GW_CLUSTER_SAMPLES + 1);
    for (unsigned i = 0; i < ns; i++) {
        x[i] = take_size(&in);
        y[i] = take(&in) >= 250 ? take64(&in) : take(&in) * 37u;
        w[i] = take(&in) & 1 ? take_size(&in) : 0;
    }
    struct gw_cluster_fit fit;
    gw_cluster_fit_samples(x, y, w, ns, &fit);
    uint64_t eb, ems;
    gw_cluster_estimate(&fit, take_size(&in), take(&in) & 1 ? take64(&in) : 0, &eb, &ems);
    /* The registry's bound on published figures, on the decoded record. */
    if (rec) {
        bool ok = gw_cluster_fit_plausible(rec);
        if (ok != (rec->migration_bandwidth_bytes_per_s <= GW_CLUSTER_FIT_MAX_BW &&
                   rec->migration_link_bytes_per_s <= GW_CLUSTER_FIT_MAX_BW &&
                   rec->migration_overhead_ms <= GW_CLUSTER_FIT_MAX_OVERHEAD_MS &&
                   rec->migration_nonconverging_pct <= GW_CLUSTER_FIT_MAX_PCT))
            abort();
        godwit__v1__cluster_host__free_unpacked(rec, NULL);
    }
    return 0;
}
