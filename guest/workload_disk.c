/* The disk workload: a polled virtio-blk driver (virtio 1.x over virtio-mmio, register
 * layout version 2) and a writer/verifier on top of it, run at CPL3 on vCPU 0 only.
 *
 * It fills a bounded region of the disk (blocks [0, nblocks) of disk_block_bytes each) once,
 * reports GW_EV_READY, then every timer tick submits one small batch: a few sequential reads
 * that are checked against the generation table and a few random writes of each block's
 * next generation. A block's content is a pure function of (seed, block, generation), see
 * the format in guest/abi.h, so the table alone says what every block must hold.
 *
 * Why it is shaped so:
 *  - MMIO from CPL3 works under PVM (each access is a KVM MMIO exit, ~100 us here), so the
 *    driver touches registers directly, and in steady state only once per batch: the
 *    QueueNotify. Completion is found by polling the used ring in guest RAM, not by the
 *    interrupt (the IOAPIC line is masked) and not by reading InterruptStatus.
 *  - Everything the driver knows lives in guest memory (rings, generation table, buffers at
 *    the fixed addresses in abi.h, the rest on the CPL3 stack), and the host completes
 *    requests inside the QueueNotify exit, so a snapshot taken at any instruction holds a
 *    consistent pair (guest memory, disk image): a restored guest just carries on.
 *  - A block's generation is published only after the device said OK; a failed write makes
 *    it GW_DISK_GEN_UNKNOWN (not verified until rewritten), since the disk may hold either.
 *  - Reads and writes of one batch never touch the same block, so the result does not
 *    depend on the order in which a device serves a batch. */
#include "guest/rt.h"
#include "guest/virtio_regs.h"

_Static_assert(GW_GPA_DISK_RING >= GW_GPA_USTACKS + GW_MAX_VCPUS * GW_USTACK_SIZE &&
               GW_GPA_DISK_RING + GW_DISK_RING_BYTES <= GW_GPA_DATA,
               "disk rings must sit between the CPL3 stacks and the data area");

#define VIRTIO_ID_BLOCK 2u
#define BLK_T_IN 0u
#define BLK_T_OUT 1u
#define BLK_S_OK 0u
#define BLK_SECTOR 512u

/* Where the pieces of queue 0 sit inside GW_GPA_DISK_RING (alignment 16/2/4 or better). */
#define RING_DESC 0x0000u
#define RING_AVAIL 0x1000u
#define RING_USED 0x2000u
#define RING_HDR 0x3000u
#define RING_STATUS 0x3800u

#define SLOTS_MAX 8u               /* requests per batch; each uses 3 fixed descriptors */
#define QUEUE_SIZE_WANT 32u        /* the smallest power of two >= 3 * SLOTS_MAX */
#define STATUS_PENDING 0xffu       /* no device writes this status: "not answered yet" */
#define REGION_MAX_BYTES (64ull << 20)  /* bounds the fill and one verify pass */
#define READ_BYTES_PER_TICK (24u << 10)
#define WRITE_BYTES_PER_TICK (8u << 10)
#define COMPLETION_SPINS 4096u
#define COMPLETION_TICKS 1000u     /* give up on a batch (and reset the device) after ~1 s */
#define ERRORS_DESCRIBED 4u        /* verify errors described on the console */
#define ERRORS_REPORTED 16u        /* verify errors also reported as events */

struct blk_req_hdr { uint32_t type; uint32_t reserved; uint64_t sector; };

struct req {
    uint64_t block;
    uint32_t gen;        /* written (writes) or expected (reads, taken when submitted) */
    uint8_t is_write;
};

struct batch {
    unsigned n;
    struct req r[SLOTS_MAX];
};

/* The driver and workload state; lives on vCPU 0's CPL3 stack. */
struct disk {
    uintptr_t mmio;
    uint16_t qsize;
    uint16_t avail_idx;          /* free-running, as in the ring */
    uint16_t used_seen;          /* used entries already consumed */
    unsigned slots;
    uint64_t block_bytes, nblocks, seed;
    uint32_t *gen;
    uint8_t *buf;
    struct virtq_desc *desc;
    uint16_t *avail;             /* flags, idx, ring[qsize] */
    uint8_t *used;               /* flags, idx, elem[qsize] */
    struct blk_req_hdr *hdr;
    volatile uint8_t *status;
    struct gw_vcpu_counters *c;
    uint32_t cpu;
};

/* ---- registers ---- */

static uint32_t rd(const struct disk *d, uint32_t off)
{
    return *(volatile uint32_t *)(d->mmio + off);
}

static void wr(const struct disk *d, uint32_t off, uint32_t v)
{
    *(volatile uint32_t *)(d->mmio + off) = v;
}

/* Reads the 64-bit capacity (sectors) at config offset 0, consistent across its halves. */
static uint64_t read_capacity(const struct disk *d)
{
    uint32_t g, lo, hi;
    do {
        g = rd(d, R_CONFIG_GENERATION);
        lo = rd(d, R_CONFIG + 0);
        hi = rd(d, R_CONFIG + 4);
    } while (g != rd(d, R_CONFIG_GENERATION));
    return (uint64_t)hi << 32 | lo;
}

/* ---- device set-up (virtio 1.x, 3.1.1 and 4.2.3) ---- */

static void layout_queue(struct disk *d)
{
    uint8_t *base = (uint8_t *)GW_GPA_DISK_RING;
    memset(base, 0, GW_DISK_RING_BYTES);  /* a reset device restarts both rings at 0 */
    ((uint16_t *)(base + RING_AVAIL))[0] = 1;  /* VIRTQ_AVAIL_F_NO_INTERRUPT: we poll */
    d->desc = (struct virtq_desc *)(base + RING_DESC);
    d->avail = (uint16_t *)(base + RING_AVAIL);
    d->used = base + RING_USED;
    d->hdr = (struct blk_req_hdr *)(base + RING_HDR);
    d->status = base + RING_STATUS;
    d->avail_idx = d->used_seen = 0;
    /* Slot s always uses descriptors 3s (header), 3s+1 (data), 3s+2 (status byte); only
     * the data descriptor's direction changes per request. */
    for (unsigned s = 0; s < d->slots; s++) {
        struct virtq_desc *q = &d->desc[3 * s];
        q[0] = (struct virtq_desc){(uint64_t)(uintptr_t)&d->hdr[s], sizeof d->hdr[s], DESC_F_NEXT,
                                   (uint16_t)(3 * s + 1)};
        q[1] = (struct virtq_desc){(uint64_t)(uintptr_t)(d->buf + s * d->block_bytes),
                                   (uint32_t)d->block_bytes, DESC_F_NEXT, (uint16_t)(3 * s + 2)};
        q[2] = (struct virtq_desc){(uint64_t)(uintptr_t)&d->status[s], 1, DESC_F_WRITE, 0};
    }
}

static int setup_queue(struct disk *d)
{
    wr(d, R_QUEUE_SEL, 0);
    uint32_t max = rd(d, R_QUEUE_NUM_MAX);
    if (rd(d, R_QUEUE_READY) != 0 || max == 0) return -1;
    uint32_t q = QUEUE_SIZE_WANT;
    while (q > max) q /= 2;
    if (q / 3 < d->slots) d->slots = q / 3;
    if (d->slots == 0) return -1;
    d->qsize = (uint16_t)q;
    layout_queue(d);
    uint64_t desc = (uintptr_t)d->desc, avail = (uintptr_t)d->avail, used = (uintptr_t)d->used;
    wr(d, R_QUEUE_NUM, q);
    wr(d, R_QUEUE_DESC_LOW, (uint32_t)desc);
    wr(d, R_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
    wr(d, R_QUEUE_DRIVER_LOW, (uint32_t)avail);
    wr(d, R_QUEUE_DRIVER_HIGH, (uint32_t)(avail >> 32));
    wr(d, R_QUEUE_DEVICE_LOW, (uint32_t)used);
    wr(d, R_QUEUE_DEVICE_HIGH, (uint32_t)(used >> 32));
    wr(d, R_QUEUE_READY, 1);
    return rd(d, R_QUEUE_READY) == 1 ? 0 : -1;
}

/* Resets and initialises the device; *capacity gets its size in sectors. We ask for
 * VERSION_1 only: one request per three direct descriptors needs nothing else. */
static int disk_init(struct disk *d, uint64_t *capacity)
{
    if (rd(d, R_MAGIC) != MMIO_MAGIC || rd(d, R_VERSION) != MMIO_VERSION ||
        rd(d, R_DEVICE_ID) != VIRTIO_ID_BLOCK)
        return -1;
    wr(d, R_STATUS, 0);
    if (rd(d, R_STATUS) != 0) return -1;
    uint32_t s = S_ACKNOWLEDGE;
    wr(d, R_STATUS, s);
    wr(d, R_STATUS, s |= S_DRIVER);
    wr(d, R_DEVICE_FEATURES_SEL, 1);
    if (!(rd(d, R_DEVICE_FEATURES) & F_VERSION_1_HIGH)) goto fail;
    wr(d, R_DRIVER_FEATURES_SEL, 0);
    wr(d, R_DRIVER_FEATURES, 0);
    wr(d, R_DRIVER_FEATURES_SEL, 1);
    wr(d, R_DRIVER_FEATURES, F_VERSION_1_HIGH);
    wr(d, R_STATUS, s |= S_FEATURES_OK);
    if (!(rd(d, R_STATUS) & S_FEATURES_OK)) goto fail;
    if (setup_queue(d) < 0) goto fail;
    *capacity = read_capacity(d);
    wr(d, R_STATUS, s |= S_DRIVER_OK);
    if (rd(d, R_STATUS) & (S_NEEDS_RESET | S_FAILED)) goto fail;
    return 0;
fail:
    wr(d, R_STATUS, s | S_FAILED);
    return -1;
}

/* ---- block contents ---- */

static uint64_t block_key(uint64_t seed, uint64_t block, uint32_t gen)
{
    return gw_mix64(gw_mix64(seed ^ GW_DISK_KEY_SALT) ^ gw_mix64(block) ^ ((uint64_t)gen << 32));
}

static uint64_t block_sum(const uint64_t *w, uint64_t nwords)
{
    uint64_t h = GW_DISK_SUM_INIT;
    for (uint64_t i = 0; i < nwords; i++)
        if (i != 4) h = gw_mix64(h ^ w[i]);
    return h;
}

static void block_fill(const struct disk *d, uint64_t *w, uint64_t block, uint32_t gen)
{
    uint64_t key = block_key(d->seed, block, gen), nwords = d->block_bytes / 8;
    w[0] = GW_DISK_BLOCK_MAGIC;
    w[1] = d->seed;
    w[2] = block;
    w[3] = gen | d->block_bytes << 32;
    for (uint64_t i = GW_DISK_HEADER_BYTES / 8; i < nwords; i++) w[i] = gw_mix64(key ^ (i * 8));
    w[4] = block_sum(w, nwords);
}

enum check { CHECK_OK, CHECK_STALE, CHECK_CORRUPT };

/* CHECK_STALE: a well-formed block, but not (block, gen) — a lost or misplaced write. */
static enum check block_check(const struct disk *d, const uint64_t *w, uint64_t block, uint32_t gen)
{
    uint64_t nwords = d->block_bytes / 8;
    if (w[0] != GW_DISK_BLOCK_MAGIC || w[1] != d->seed || w[3] >> 32 != d->block_bytes ||
        w[4] != block_sum(w, nwords))
        return CHECK_CORRUPT;
    uint32_t found = (uint32_t)w[3];
    uint64_t key = block_key(d->seed, w[2], found);
    for (uint64_t i = GW_DISK_HEADER_BYTES / 8; i < nwords; i++)
        if (w[i] != gw_mix64(key ^ (i * 8))) return CHECK_CORRUPT;
    return w[2] == block && found == gen ? CHECK_OK : CHECK_STALE;
}

static uint32_t next_gen(uint32_t g)
{
    g = g == GW_DISK_GEN_UNKNOWN ? 1 : g + 1;
    return g == 0 || g == GW_DISK_GEN_UNKNOWN ? 1 : g;
}

static int gen_known(uint32_t g) { return g != 0 && g != GW_DISK_GEN_UNKNOWN; }

/* ---- requests ---- */

static uint64_t *slot_buf(const struct disk *d, unsigned s)
{
    return (uint64_t *)(d->buf + s * d->block_bytes);
}

/* Puts the batch into the avail ring and kicks the device once. */
static void submit(struct disk *d, const struct batch *b)
{
    for (unsigned s = 0; s < b->n; s++) {
        const struct req *r = &b->r[s];
        d->hdr[s] = (struct blk_req_hdr){r->is_write ? BLK_T_OUT : BLK_T_IN, 0,
                                         r->block * (d->block_bytes / BLK_SECTOR)};
        d->status[s] = STATUS_PENDING;
        d->desc[3 * s + 1].flags = DESC_F_NEXT | (r->is_write ? 0 : DESC_F_WRITE);
        if (r->is_write) block_fill(d, slot_buf(d, s), r->block, r->gen);
        d->avail[2 + (uint16_t)(d->avail_idx + s) % d->qsize] = (uint16_t)(3 * s);
    }
    d->avail_idx = (uint16_t)(d->avail_idx + b->n);
    /* Ring entries and buffers before the index; the index before the kick. */
    __atomic_store_n(&d->avail[1], d->avail_idx, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    wr(d, R_QUEUE_NOTIFY, 0);
}

static uint16_t used_idx(const struct disk *d)
{
    return __atomic_load_n((const uint16_t *)(d->used + 2), __ATOMIC_ACQUIRE);
}

/* Waits until the device has returned every submitted chain. Our device answers inside
 * the kick, so this normally succeeds at once; a device that stops answering, or says it
 * needs a reset, fails the batch. */
static int wait_done(const struct disk *d)
{
    for (unsigned i = 0; i < COMPLETION_SPINS; i++) {
        if (used_idx(d) == d->avail_idx) return 0;
        __asm__ volatile("pause");
    }
    for (unsigned t = 0; t < COMPLETION_TICKS; t++) {
        if (used_idx(d) == d->avail_idx) return 0;
        if (rd(d, R_STATUS) & (S_NEEDS_RESET | S_FAILED)) return -1;
        gw_wait_tick();
    }
    return -1;
}

/* Marks which slots the device returned, from the used entries not seen yet; an entry
 * that names no slot of this batch is ignored (and its slot counts as unanswered). */
static void collect(struct disk *d, const struct batch *b, uint8_t *done)
{
    uint16_t end = used_idx(d);
    for (; d->used_seen != end; d->used_seen++) {
        const struct virtq_used_elem *e =
            (const struct virtq_used_elem *)(d->used + 4) + d->used_seen % d->qsize;
        uint32_t id = __atomic_load_n(&e->id, __ATOMIC_RELAXED);
        if (id % 3 == 0 && id / 3 < b->n) done[id / 3] = 1;
    }
}

static void describe_error(const struct disk *d, const struct req *r, enum check k, unsigned s)
{
    const uint64_t *w = slot_buf(d, s);
    gw_puts(k == CHECK_STALE ? "disk: verify error (stale block)\n"
                             : "disk: verify error (corrupt block)\n");
    gw_put_kv("disk:   block", r->block);
    gw_put_kv("disk:   expected gen", r->gen);
    gw_put_kv("disk:   found block", w[2]);
    gw_put_kv("disk:   found gen", (uint32_t)w[3]);
}

static void finish_read(struct disk *d, const struct req *r, unsigned s)
{
    d->c->disk_blocks_read++;
    if (!gen_known(r->gen)) return;
    enum check k = block_check(d, slot_buf(d, s), r->block, r->gen);
    if (k == CHECK_OK) return;
    uint64_t n = ++d->c->disk_verify_errors;
    if (n <= ERRORS_DESCRIBED) describe_error(d, r, k, s);
    if (n <= ERRORS_REPORTED) gw_report(GW_EV_VERIFY_ERROR, d->cpu);
}

/* Accounts one request: ok says the device returned it with status OK. */
static void finish(struct disk *d, const struct req *r, unsigned s, int ok)
{
    if (!ok) {
        d->c->disk_io_errors++;
        if (r->is_write) d->gen[r->block] = GW_DISK_GEN_UNKNOWN;
        return;
    }
    if (!r->is_write) { finish_read(d, r, s); return; }
    /* Published only now: until the device said OK the disk may still hold the old one. */
    d->gen[r->block] = r->gen;
    d->c->disk_blocks_written++;
}

/* Runs one batch to completion. Returns 0, or -1 when the device failed and was reset. */
static int run_batch(struct disk *d, const struct batch *b)
{
    if (b->n == 0) return 0;
    submit(d, b);
    int r = wait_done(d);
    uint8_t done[SLOTS_MAX] = {0};
    collect(d, b, done);
    for (unsigned s = 0; s < b->n; s++)
        finish(d, &b->r[s], s, done[s] && d->status[s] == BLK_S_OK);
    if (r == 0) return 0;
    /* The device owes us chains or wants a reset: start it over (rings restart at 0). */
    uint64_t cap;
    return disk_init(d, &cap) == 0 ? -1 : -2;
}

/* ---- the workload ---- */

static int batch_has(const struct batch *b, uint64_t block)
{
    for (unsigned i = 0; i < b->n; i++)
        if (b->r[i].block == block) return 1;
    return 0;
}

static void add_req(struct batch *b, const struct disk *d, uint64_t block, int is_write)
{
    uint32_t g = d->gen[block];
    b->r[b->n++] = (struct req){block, is_write ? next_gen(g) : g, (uint8_t)is_write};
}

/* Writes every block that holds no known generation (all of them on a fresh boot). */
static int fill(struct disk *d)
{
    uint64_t next = 0;
    while (next < d->nblocks) {
        struct batch b = {0};
        for (; next < d->nblocks && b.n < d->slots; next++)
            if (!gen_known(d->gen[next])) add_req(&b, d, next, 1);
        if (run_batch(d, &b) == -2) return -1;
        d->c->heartbeat++;
    }
    return 0;
}

static unsigned per_tick(uint64_t bytes, uint64_t block_bytes, unsigned max)
{
    uint64_t n = bytes / block_bytes;
    return n == 0 ? 1 : n > max ? max : (unsigned)n;
}

/* One tick's batch: sequential reads to verify, random writes to other blocks. */
static void plan_tick(const struct disk *d, struct batch *b, uint64_t *read_cursor, uint64_t *rng)
{
    unsigned reads = per_tick(READ_BYTES_PER_TICK, d->block_bytes, d->slots - 1);
    unsigned writes = per_tick(WRITE_BYTES_PER_TICK, d->block_bytes, d->slots - reads);
    b->n = 0;
    for (unsigned i = 0; i < reads && i < d->nblocks; i++) {
        add_req(b, d, *read_cursor, 0);
        *read_cursor = (*read_cursor + 1) % d->nblocks;
    }
    for (unsigned i = 0; i < writes; i++) {
        *rng = gw_mix64(*rng);
        uint64_t block = *rng % d->nblocks;
        if (!batch_has(b, block)) add_req(b, d, block, 1);
    }
}

static void fatal(uint32_t err)
{
    gw_status()->fatal_error = err;
    gw_report(GW_EV_FATAL, err);
}

static void publish_status(void)
{
    struct gw_guest_status *st = gw_status();
    st->ws_gpa = 0;
    st->ws_bytes = 0;
    st->gen_table_gpa = GW_GPA_DISK_GEN;
    st->abi_version = GW_ABI_VERSION;
    st->magic = GW_STATUS_MAGIC;
}

/* Sizes the request slots and the tested region from the boot info, RAM and capacity. */
static int size_workload(struct disk *d, const struct gw_boot_info *bi, uint64_t capacity)
{
    uint64_t bb = bi->disk_block_bytes;
    if (bb < BLK_SECTOR || bb % BLK_SECTOR || bb > (1u << 20)) return -1;
    uint64_t room = bi->ram_below_hole > GW_GPA_DISK_BUF ? bi->ram_below_hole - GW_GPA_DISK_BUF : 0;
    if (room / bb < d->slots) d->slots = (unsigned)(room / bb);
    if (d->slots < 2) return -1;
    uint64_t n = capacity / (bb / BLK_SECTOR);
    if (n > GW_DISK_MAX_BLOCKS) n = GW_DISK_MAX_BLOCKS;
    if (n > REGION_MAX_BYTES / bb) n = REGION_MAX_BYTES / bb;
    if (n == 0) return -1;
    d->nblocks = n;
    return 0;
}

/* The device raises GSI 5 after every batch. KVM routes a GSI below 16 to the 8259 too, and
 * it resets the boot vCPU's LAPIC LVT0 to ExtINT, so with the 8259 left unprogrammed (IMR 0,
 * vector base 0; kernel.c never touches it) IRQ 5 arrives as vector 5 and looks like a #BR.
 * We poll, so mask every 8259 line (OCW1) before the device can raise one. */
static void mask_legacy_pic(void)
{
    gw_syscall2(GW_SYS_OUTB, 0x21, 0xff);
    gw_syscall2(GW_SYS_OUTB, 0xa1, 0xff);
}

static void idle_forever(struct gw_vcpu_counters *c)
{
    for (;;) {
        c->heartbeat++;
        gw_wait_tick();
    }
}

void gw_workload_disk(uint32_t cpu, struct gw_boot_info *bi)
{
    struct gw_vcpu_counters *c = &gw_status()->vcpu[cpu];
    if (cpu != 0) {
        gw_report(GW_EV_READY, cpu);
        idle_forever(c);
    }
    publish_status();
    struct disk d = {
        .mmio = (uintptr_t)bi->disk_mmio_base, .slots = SLOTS_MAX,
        .block_bytes = bi->disk_block_bytes, .seed = bi->seed,
        .gen = (uint32_t *)GW_GPA_DISK_GEN, .buf = (uint8_t *)GW_GPA_DISK_BUF, .c = c, .cpu = cpu,
    };
    uint64_t capacity;
    mask_legacy_pic();
    /* The buffers must be sized before the queue's descriptors point into them. */
    if (!bi->disk_present || bi->disk_mmio_base != GW_VIRTIO_MMIO_BASE ||
        size_workload(&d, bi, ~0ull) < 0 || disk_init(&d, &capacity) < 0) {
        fatal(GW_ERR_DISK);
        return;
    }
    if (size_workload(&d, bi, capacity) < 0) {
        fatal(GW_ERR_DISK);
        return;
    }
    gw_put_kv("disk: blocks under test", d.nblocks);
    if (fill(&d) < 0) {
        fatal(GW_ERR_DISK);
        return;
    }
    gw_report(GW_EV_READY, cpu);

    uint64_t read_cursor = 0, rng = gw_mix64(bi->seed ^ GW_DISK_KEY_SALT);
    for (;;) {
        struct batch b;
        plan_tick(&d, &b, &read_cursor, &rng);
        if (run_batch(&d, &b) == -2) {
            fatal(GW_ERR_DISK);
            return;
        }
        c->heartbeat++;
        gw_wait_tick();
    }
}
