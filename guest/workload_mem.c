/* The memory workloads, run at CPL3 on every vCPU over its own slice of the working set:
 *  dirtier  fills its slice once, then writes rate/nvcpus bytes per second to random pages
 *           (paced by the timer tick), each write with the page's next generation;
 *  idle     fills its slice once, then only ticks.
 * Both run the verifier a few pages per tick and report any page that does not hold what
 * its generation says. */
#include "guest/pattern.h"
#include "guest/rt.h"

struct slice {
    uint8_t *ws;        /* working set base */
    uint32_t *gen;      /* generation table, indexed by page within the working set */
    uint64_t first;     /* first page of this vCPU's slice */
    uint64_t count;     /* pages in the slice */
};

static void write_page(const struct gw_boot_info *bi, struct slice *s, uint64_t page,
                       struct gw_vcpu_counters *c)
{
    uint32_t g = s->gen[page] + 1;
    if (g == 0) g = 1; /* wrapped: 0 is reserved for "never written" */
    gw_pattern_fill(s->ws + page * 4096, bi->pattern, bi->seed, page, g);
    /* The generation is published after the content: a pause between the two leaves the
     * old generation with new content only until the very next instruction runs. */
    __asm__ volatile("" ::: "memory");
    s->gen[page] = g;
    c->pages_written++;
    c->bytes_written += 4096;
}

static void verify_some(const struct gw_boot_info *bi, struct slice *s, uint64_t *cursor,
                        uint32_t budget, uint32_t cpu, struct gw_vcpu_counters *c)
{
    for (uint32_t i = 0; i < budget && s->count; i++) {
        uint64_t page = s->first + *cursor;
        if (!gw_pattern_check(s->ws + page * 4096, bi->pattern, bi->seed, page, s->gen[page])) {
            if (!c->verify_errors) c->first_error_page = page;
            c->verify_errors++;
            gw_report(GW_EV_VERIFY_ERROR, cpu);
        }
        c->pages_verified++;
        if (++*cursor == s->count) { *cursor = 0; c->verify_passes++; }
    }
}

void gw_workload_mem(uint32_t cpu, struct gw_boot_info *bi)
{
    struct gw_guest_status *st = gw_status();
    struct gw_vcpu_counters *c = &st->vcpu[cpu];
    uint64_t pages = bi->ws_bytes / 4096;
    uint64_t ram = bi->ram_below_hole;
    if (gw_abi_min_ram(bi->ws_bytes) > ram) {
        st->fatal_error = GW_ERR_NO_ROOM;
        gw_report(GW_EV_FATAL, GW_ERR_NO_ROOM);
        return;
    }
    struct slice s = {
        .ws = (uint8_t *)gw_abi_ws_gpa(bi->ws_bytes),
        .gen = (uint32_t *)gw_abi_gen_table_gpa(),
        .first = pages * cpu / bi->nvcpus,
        .count = pages * (cpu + 1) / bi->nvcpus - pages * cpu / bi->nvcpus,
    };
    if (cpu == 0) {
        st->ws_gpa = (uint64_t)s.ws;
        st->ws_bytes = bi->ws_bytes;
        st->gen_table_gpa = (uint64_t)s.gen;
        st->abi_version = GW_ABI_VERSION;
        st->magic = GW_STATUS_MAGIC;
    }

    /* Fill the slice once, unless a previous life of this guest already did (generations
     * survive a restore because they live in guest memory). */
    for (uint64_t p = s.first; p < s.first + s.count; p++) {
        if (s.gen[p] == 0) write_page(bi, &s, p, c);
        c->heartbeat++;
    }
    gw_report(GW_EV_READY, cpu);

    uint64_t per_cpu_rate = bi->workload == GW_WL_DIRTIER ? bi->rate_bytes_per_s / bi->nvcpus : 0;
    uint64_t hz = bi->tick_hz ? bi->tick_hz : 1000;
    uint64_t budget = 0, cursor = 0;
    uint64_t rng = gw_mix64(bi->seed ^ (cpu + 1));
    for (;;) {
        budget += per_cpu_rate / hz;
        while (budget >= 4096 && s.count) {
            rng = gw_mix64(rng);
            write_page(bi, &s, s.first + rng % s.count, c);
            budget -= 4096;
        }
        verify_some(bi, &s, &cursor, bi->verify_pages_per_tick, cpu, c);
        c->heartbeat++;
        gw_wait_tick();
    }
}

void gw_workload_triple_fault(uint32_t cpu, struct gw_boot_info *bi)
{
    if (cpu != 0) return;
    gw_syscall0(GW_SYS_CRASH);
    gw_syscall0(GW_SYS_WAIT_TICK); /* a #UD with no IDT: never returns */
}

/* Weak default until the disk workload is linked in. */
__attribute__((weak)) void gw_workload_disk(uint32_t cpu, struct gw_boot_info *bi)
{
    gw_status()->fatal_error = GW_ERR_DISK;
    gw_report(GW_EV_FATAL, GW_ERR_DISK);
}
