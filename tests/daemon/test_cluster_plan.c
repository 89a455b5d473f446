/* Unit tests for the evacuation planner (engine/daemon/cluster_plan.c): the order (priority,
 * then smallest first), worst-fit placement, capacity counted across the plan, anti-affinity,
 * disks only where a host can open them, each blocker's reason, and the estimates. */
#include "engine/daemon/cluster.h"
#include "tests/lib/gw_test.h"

#include <string.h>

#define MIB (1ull << 20)

static Godwit__V1__ClusterHost mkhost(const char *name, uint64_t mem_mib, bool down, int state, char **roots,
                                      size_t nroots)
{
    Godwit__V1__ClusterHost h = GODWIT__V1__CLUSTER_HOST__INIT;
    h.name = (char *)name;
    h.api_address = (char *)name;
    h.memory_bytes = mem_mib * MIB;
    h.vcpus = 8;
    h.down = down;
    h.state = state;
    h.image_roots = roots;
    h.n_image_roots = nroots;
    return h;
}

#define ACTIVE GODWIT__V1__CLUSTER_HOST__STATE__ACTIVE

GW_TEST(plan_order_and_placement)
{
    Godwit__V1__ClusterHost a = mkhost("a", 8192, false, ACTIVE, NULL, 0), b = mkhost("b", 1024, false, ACTIVE, NULL, 0),
                            c = mkhost("c", 768, false, ACTIVE, NULL, 0);
    Godwit__V1__ClusterHost *hosts[] = {&a, &b, &c};
    struct gw_plan_vm vms[] = {
        {.name = "big", .memory_bytes = 512 * MIB, .vcpus = 1, .anti_affinity = "", .disk = ""},
        {.name = "small", .memory_bytes = 64 * MIB, .vcpus = 1, .anti_affinity = "", .disk = ""},
        {.name = "vip", .memory_bytes = 256 * MIB, .vcpus = 1, .priority = 3, .anti_affinity = "", .disk = ""},
        {.name = "db1", .memory_bytes = 128 * MIB, .vcpus = 1, .anti_affinity = "db", .disk = ""},
        {.name = "db2", .memory_bytes = 128 * MIB, .vcpus = 1, .anti_affinity = "db", .disk = ""},
    };
    struct gw_plan_step st[5];
    struct gw_plan_in in = {.vms = vms, .n_vms = 5, .hosts = hosts, .n_hosts = 3, .self = "a", .bandwidth = 100 * MIB};
    CHECK_EQ(gw_cluster_plan(&in, st), 0u);
    const char *order[] = {"vip", "small", "db1", "db2", "big"};
    for (int i = 0; i < 5; i++) CHECK(!strcmp(vms[st[i].vm].name, order[i]));
    /* Never the source (a, the roomiest); worst fit puts the first VM on b, the roomiest other. */
    for (int i = 0; i < 5; i++) CHECK(st[i].host == 1 || st[i].host == 2);
    CHECK_EQ(st[0].host, 1);                       /* b has the most room */
    CHECK(st[2].host != st[3].host);               /* db1 and db2 apart */
    /* Capacity is counted across the plan: b gets at most 1024 MiB. */
    uint64_t on_b = 0;
    for (int i = 0; i < 5; i++) if (st[i].host == 1) on_b += vms[st[i].vm].memory_bytes;
    CHECK(on_b <= 1024 * MIB);
}

GW_TEST(plan_blockers)
{
    char *roots[] = {"/srv/images/"};
    Godwit__V1__ClusterHost a = mkhost("a", 8192, false, ACTIVE, NULL, 0), b = mkhost("b", 512, false, ACTIVE, roots, 1),
                            dn = mkhost("down", 8192, true, ACTIVE, roots, 1),
                            dr = mkhost("drain", 8192, false, GODWIT__V1__CLUSTER_HOST__STATE__DRAINING, roots, 1);
    Godwit__V1__ClusterHost *hosts[] = {&a, &b, &dn, &dr};
    struct gw_plan_vm vms[] = {
        {.name = "huge", .memory_bytes = 1024 * MIB, .vcpus = 1, .anti_affinity = "", .disk = ""},
        {.name = "disk-ok", .memory_bytes = 64 * MIB, .vcpus = 1, .anti_affinity = "", .disk = "/srv/images/x.img"},
        {.name = "disk-no", .memory_bytes = 64 * MIB, .vcpus = 1, .anti_affinity = "", .disk = "/srv/imagesX/y.img"},
        {.name = "cpu", .memory_bytes = 32 * MIB, .vcpus = 9, .anti_affinity = "", .disk = ""},
    };
    struct gw_plan_step st[4];
    struct gw_plan_in in = {.vms = vms, .n_vms = 4, .hosts = hosts, .n_hosts = 4, .self = "a"};
    CHECK_EQ(gw_cluster_plan(&in, st), 3u);
    for (int i = 0; i < 4; i++) {
        const char *n = vms[st[i].vm].name;
        if (!strcmp(n, "huge")) CHECK(st[i].host < 0 && !strcmp(st[i].blocker, "NO_CAPACITY"));
        if (!strcmp(n, "cpu")) CHECK(st[i].host < 0 && !strcmp(st[i].blocker, "NO_CAPACITY"));
        if (!strcmp(n, "disk-ok")) CHECK_EQ(st[i].host, 1);   /* down and draining hosts are never used */
        if (!strcmp(n, "disk-no")) CHECK(st[i].host < 0 && !strcmp(st[i].blocker, "DISK_NOT_SHARED"));
    }
    /* No other live host at all. */
    Godwit__V1__ClusterHost *only[] = {&a, &dn};
    struct gw_plan_in in2 = {.vms = vms + 1, .n_vms = 1, .hosts = only, .n_hosts = 2, .self = "a"};
    CHECK_EQ(gw_cluster_plan(&in2, st), 1u);
    CHECK(!strcmp(st[0].blocker, "NO_LIVE_HOST"));
}

GW_TEST(plan_busy_vm_is_a_blocker_and_takes_no_room)
{
    Godwit__V1__ClusterHost a = mkhost("a", 8192, false, ACTIVE, NULL, 0), b = mkhost("b", 256, false, ACTIVE, NULL, 0);
    Godwit__V1__ClusterHost *hosts[] = {&a, &b};
    struct gw_plan_vm vms[] = {
        {.name = "backing-up", .memory_bytes = 192 * MIB, .vcpus = 1, .anti_affinity = "", .disk = "",
         .busy = "VM backing-up has a BACKUP job in progress (j-7)"},
        {.name = "free", .memory_bytes = 200 * MIB, .vcpus = 1, .anti_affinity = "", .disk = ""},
    };
    struct gw_plan_step st[2];
    struct gw_plan_in in = {.vms = vms, .n_vms = 2, .hosts = hosts, .n_hosts = 2, .self = "a", .bandwidth = 100 * MIB};
    CHECK_EQ(gw_cluster_plan(&in, st), 1u);
    for (int i = 0; i < 2; i++) {
        if (st[i].vm == 0) {
            CHECK(st[i].host < 0 && !strcmp(st[i].blocker, "VM_BUSY"));
            CHECK(strstr(st[i].message, "BACKUP job in progress (j-7)") != NULL);
        } else {
            CHECK_EQ(st[i].host, 1);   /* b's 256 MiB went to the VM that can move */
        }
    }
}

GW_TEST(plan_estimates)
{
    uint64_t bytes, ms;
    struct gw_cluster_fit f = {.bw = 100 * MIB, .link_bw = 40 * MIB};
    /* 100 MiB at a fitted 100 MiB/s: 1 s; nothing dirtied: 100 MiB sent. */
    CHECK(gw_cluster_estimate(&f, 100 * MIB, 0, &bytes, &ms));
    CHECK(ms >= 1000 && ms <= 1001);
    CHECK_EQ(bytes, 100 * MIB);
    /* Dirtying half the link: the fitted time (its usual dirtying is in the fit), twice the bytes. */
    CHECK(gw_cluster_estimate(&f, 100 * MIB, 20 * MIB, &bytes, &ms));
    CHECK(ms >= 1000 && ms <= 1001);
    CHECK_EQ(bytes, 200 * MIB);
    /* Dirtying faster than the link (not than bw): does not converge, twice the time unmeasured... */
    CHECK(!gw_cluster_estimate(&f, 100 * MIB, 50 * MIB, &bytes, &ms));
    CHECK(ms >= 2000 && ms <= 2001);
    /* ...and what was measured when it was. */
    f.nonconverging_pct = 250;
    CHECK(!gw_cluster_estimate(&f, 100 * MIB, 50 * MIB, &bytes, &ms));
    CHECK(ms >= 2500 && ms <= 2501);
    /* No link measured: the fitted rate stands for it. */
    f.link_bw = 0;
    CHECK(gw_cluster_estimate(&f, 100 * MIB, 50 * MIB, &bytes, &ms));
}

GW_TEST(plan_estimates_saturate_on_hostile_fits)
{
    /* Another host's published fit comes from the store: the estimate must stay defined (a
     * double cast out of range is undefined behaviour, caught by the sanitizer build). */
    uint64_t bytes, ms;
    struct gw_cluster_fit f = {.bw = 1, .link_bw = UINT64_MAX, .nonconverging_pct = UINT32_MAX};
    CHECK(gw_cluster_estimate(&f, UINT64_MAX, UINT64_MAX - 1, &bytes, &ms));
    CHECK_EQ(bytes, UINT64_MAX);
    CHECK_EQ(ms, UINT64_MAX);
    f.link_bw = 1;
    CHECK(!gw_cluster_estimate(&f, 1ull << 40, 1, &bytes, &ms));
    CHECK_EQ(ms, UINT64_MAX);
    CHECK_EQ(bytes, UINT64_MAX);
    /* The plan adds the overhead without wrapping. */
    Godwit__V1__ClusterHost a = mkhost("a", 8192, false, ACTIVE, NULL, 0);
    Godwit__V1__ClusterHost *hosts[] = {&a};
    struct gw_plan_vm vm = {.name = "v", .memory_bytes = MIB, .vcpus = 1, .disk = "", .anti_affinity = "",
                            .busy = ""};
    struct gw_plan_in in = {.self = "self", .hosts = hosts, .n_hosts = 1, .vms = &vm, .n_vms = 1, .bandwidth = 1,
                            .overhead_ms = UINT64_MAX};
    struct gw_plan_step st;
    CHECK_EQ(gw_cluster_plan(&in, &st), 0u);
    CHECK_EQ(st.est_ms, UINT64_MAX);
    /* Published figures past the bounds are not a measurement. */
    a.migration_bandwidth_bytes_per_s = 100 * MIB;
    CHECK(gw_cluster_fit_plausible(&a));
    a.migration_bandwidth_bytes_per_s = GW_CLUSTER_FIT_MAX_BW + 1;
    CHECK(!gw_cluster_fit_plausible(&a));
    a.migration_bandwidth_bytes_per_s = 100 * MIB;
    a.migration_overhead_ms = GW_CLUSTER_FIT_MAX_OVERHEAD_MS + 1;
    CHECK(!gw_cluster_fit_plausible(&a));
    a.migration_overhead_ms = 0;
    a.migration_nonconverging_pct = GW_CLUSTER_FIT_MAX_PCT + 1;
    CHECK(!gw_cluster_fit_plausible(&a));
    a.migration_nonconverging_pct = 0;
    a.migration_link_bytes_per_s = UINT64_MAX;
    CHECK(!gw_cluster_fit_plausible(&a));
}

GW_TEST(plan_fit_ignores_a_migration_that_did_not_converge)
{
    /* Five on the line 200 ms + 10 ms/MiB, one (256 MiB) that took twice its line. */
    uint64_t x[6], y[6], w[6] = {30 * MIB, 32 * MIB, 31 * MIB, 0, 33 * MIB, 32 * MIB};
    static const unsigned mib[6] = {64, 96, 128, 160, 192, 256};
    for (int i = 0; i < 6; i++) {
        x[i] = mib[i] * MIB;
        y[i] = 200 + 10 * mib[i];
    }
    y[5] *= 2;
    struct gw_cluster_fit f;
    gw_cluster_fit_samples(x, y, w, 6, &f);
    CHECK(f.bw > 99 * MIB && f.bw < 101 * MIB);
    CHECK(f.overhead_ms >= 199 && f.overhead_ms <= 201);
    CHECK(f.nonconverging_pct >= 199 && f.nonconverging_pct <= 201);
    CHECK_EQ(f.link_bw, 32 * MIB);               /* the median of those measured */
    /* One sample: the plain rate. Sizes all alike: the median rate, no fixed cost. */
    gw_cluster_fit_samples(x, y, w, 1, &f);
    CHECK_EQ(f.overhead_ms, 0u);
    CHECK(f.bw > 0);
    uint64_t same[3] = {64 * MIB, 64 * MIB, 64 * MIB}, t[3] = {500, 700, 600};
    gw_cluster_fit_samples(same, t, NULL, 3, &f);
    CHECK_EQ(f.overhead_ms, 0u);
    CHECK(f.bw > 106 * MIB && f.bw < 107 * MIB);   /* 64 MiB in 600 ms */
    CHECK_EQ(f.link_bw, 0u);
    gw_cluster_fit_samples(x, y, w, 0, &f);
    CHECK_EQ(f.bw, 0u);
}
