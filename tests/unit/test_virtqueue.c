/* Unit tests for engine/vm/virtqueue.c: ring placement checks, chain parsing, and every
 * kind of hostile chain a guest can build (indexes out of range, loops, buffers outside
 * RAM, address overflow, over-long and nested indirect chains, avail idx jumps). Guest RAM
 * is a malloc'd buffer of exactly RAM_SIZE bytes, so ASan catches any access outside it,
 * and a parse never writes guest memory: the whole buffer is compared after each pop. */
#include "engine/vm/guest_mem.h"
#include "engine/vm/virtqueue.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define RAM_SIZE (256u * 1024)
#define DESC_GPA 0x1000u
#define AVAIL_GPA 0x2000u
#define USED_GPA 0x3000u
#define IND_GPA 0x8000u   /* indirect tables */
#define BUF_GPA 0x10000u  /* data buffers */
#define GW_ARRAY_SIZE_T(a) (sizeof(a) / sizeof((a)[0]))

struct fx {
    uint8_t *ram;
    uint8_t *snap;
    struct gw_guest_mem mem;
    struct gw_vq vq;
    struct gw_vq_chain chain;
    uint16_t avail_idx;
};

static struct fx *fx_new(uint16_t num)
{
    struct fx *f = calloc(1, sizeof *f);
    f->ram = aligned_alloc(4096, RAM_SIZE);
    f->snap = malloc(RAM_SIZE);
    memset(f->ram, 0, RAM_SIZE);
    gw_guest_mem_wrap(&f->mem, f->ram, RAM_SIZE);
    gw_vq_init(&f->vq, &f->mem, 256);
    f->vq.num = num;
    f->vq.desc_addr = DESC_GPA;
    f->vq.avail_addr = AVAIL_GPA;
    f->vq.used_addr = USED_GPA;
    return f;
}

static void fx_free(struct fx *f)
{
    free(f->ram);
    free(f->snap);
    free(f);
}

static void put_desc(uint8_t *table, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
    struct gw_virtq_desc d = {.addr = addr, .len = len, .flags = flags, .next = next};
    memcpy(table + 16u * i, &d, sizeof d);
}

static void desc(struct fx *f, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
                 uint16_t next)
{
    put_desc(f->ram + DESC_GPA, i, addr, len, flags, next);
}

static void set_avail_idx(struct fx *f, uint16_t idx)
{
    memcpy(f->ram + AVAIL_GPA + 2, &idx, 2);
}

/* Offers head in the next avail slot. */
static void offer(struct fx *f, uint16_t head)
{
    memcpy(f->ram + AVAIL_GPA + 4 + 2u * (f->avail_idx % f->vq.num), &head, 2);
    f->avail_idx++;
    set_avail_idx(f, f->avail_idx);
}

/* Pops expecting a fault: returns the error, and checks that nothing moved or was written. */
static int pop_fault(struct fx *f)
{
    uint16_t before = f->vq.last_avail_idx;
    memcpy(f->snap, f->ram, RAM_SIZE);
    int r = gw_vq_pop(&f->vq, &f->chain);
    CHECK(r < 0);
    CHECK(f->vq.err[0] != 0);
    CHECK_EQ(f->vq.last_avail_idx, before);
    CHECK(memcmp(f->snap, f->ram, RAM_SIZE) == 0);
    return r;
}

GW_TEST(activate_checks_size_alignment_and_placement)
{
    struct fx *f = fx_new(0);
    CHECK_EQ(gw_vq_activate(&f->vq), -EINVAL);            /* size 0 */
    f->vq.num = 3;
    CHECK_EQ(gw_vq_activate(&f->vq), -EINVAL);            /* not a power of two */
    f->vq.num = 512;
    CHECK_EQ(gw_vq_activate(&f->vq), -EINVAL);            /* above num_max */
    f->vq.num = 256;
    f->vq.desc_addr = DESC_GPA + 8;
    CHECK_EQ(gw_vq_activate(&f->vq), -EINVAL);            /* misaligned desc table */
    f->vq.desc_addr = RAM_SIZE - 16;
    CHECK_EQ(gw_vq_activate(&f->vq), -EINVAL);            /* desc table runs off RAM */
    f->vq.desc_addr = UINT64_MAX - 15;
    CHECK_EQ(gw_vq_activate(&f->vq), -EINVAL);            /* near the top of the space */
    f->vq.desc_addr = DESC_GPA;
    f->vq.avail_addr = RAM_SIZE - 6;
    CHECK_EQ(gw_vq_activate(&f->vq), -EINVAL);            /* avail ring straddles the end */
    f->vq.avail_addr = AVAIL_GPA + 1;
    CHECK_EQ(gw_vq_activate(&f->vq), -EINVAL);            /* misaligned avail */
    f->vq.avail_addr = AVAIL_GPA;
    f->vq.used_addr = USED_GPA + 2;
    CHECK_EQ(gw_vq_activate(&f->vq), -EINVAL);            /* misaligned used */
    f->vq.used_addr = 0x40000000;
    CHECK_EQ(gw_vq_activate(&f->vq), -EINVAL);            /* used ring outside RAM */
    CHECK(!f->vq.ready);
    f->vq.used_addr = USED_GPA;
    CHECK_EQ(gw_vq_activate(&f->vq), 0);
    CHECK(f->vq.ready);
    fx_free(f);
}

struct rec {
    unsigned n;
    uint64_t gpa[4], len[4];
};

static void record(void *ctx, uint64_t gpa, uint64_t len)
{
    struct rec *r = ctx;
    if (r->n < 4) { r->gpa[r->n] = gpa; r->len[r->n] = len; }
    r->n++;
}

GW_TEST(pop_parses_chain_and_push_publishes)
{
    struct fx *f = fx_new(16);
    REQUIRE(gw_vq_activate(&f->vq) == 0);
    CHECK_EQ(gw_vq_pop(&f->vq, &f->chain), 0);            /* empty ring */
    desc(f, 5, BUF_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 9);
    desc(f, 9, BUF_GPA + 0x1000, 512, GW_VIRTQ_DESC_F_NEXT | GW_VIRTQ_DESC_F_WRITE, 2);
    desc(f, 2, BUF_GPA + 0x2000, 1, GW_VIRTQ_DESC_F_WRITE, 0);
    offer(f, 5);
    REQUIRE(gw_vq_pop(&f->vq, &f->chain) == 1);
    CHECK_EQ(f->chain.head, 5);
    CHECK_EQ(f->chain.nout, 1);
    CHECK_EQ(f->chain.nin, 2);
    CHECK_EQ(f->chain.out_bytes, 16);
    CHECK_EQ(f->chain.in_bytes, 513);
    CHECK(f->chain.iov[0].base == f->ram + BUF_GPA);
    CHECK(f->chain.iov[1].base == f->ram + BUF_GPA + 0x1000);
    CHECK(f->chain.iov[2].base == f->ram + BUF_GPA + 0x2000 && f->chain.iov[2].len == 1);
    CHECK_EQ(f->chain.iov[1].gpa, BUF_GPA + 0x1000);
    CHECK_EQ(gw_vq_pop(&f->vq, &f->chain), 0);
    struct rec r = {0};
    f->vq.wsink = (struct gw_guest_write_sink){record, &r};
    gw_vq_push(&f->vq, 5, 513);
    CHECK_EQ(r.n, 2);                                     /* the entry, then the index */
    CHECK_EQ(r.gpa[0], USED_GPA + 4);
    CHECK_EQ(r.len[0], 8);
    CHECK_EQ(r.gpa[1], USED_GPA + 2);
    CHECK_EQ(r.len[1], 2);
    uint16_t used_idx;
    uint32_t elem[2];
    memcpy(&used_idx, f->ram + USED_GPA + 2, 2);
    memcpy(elem, f->ram + USED_GPA + 4, 8);
    CHECK_EQ(used_idx, 1);
    CHECK_EQ(elem[0], 5);
    CHECK_EQ(elem[1], 513);
    fx_free(f);
}

GW_TEST(indices_wrap_around_16_bits)
{
    struct fx *f = fx_new(4);
    REQUIRE(gw_vq_activate(&f->vq) == 0);
    f->vq.last_avail_idx = f->vq.used_idx = 0xfffe;
    f->avail_idx = 0xfffe;
    desc(f, 0, BUF_GPA, 8, 0, 0);
    offer(f, 0);
    offer(f, 0);
    offer(f, 0);                                          /* avail idx now 1 */
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(gw_vq_pop(&f->vq, &f->chain), 1);
        gw_vq_push(&f->vq, 0, 0);
    }
    CHECK_EQ(gw_vq_pop(&f->vq, &f->chain), 0);
    CHECK_EQ(f->vq.used_idx, 1);
    fx_free(f);
}

GW_TEST(hostile_desc_index_out_of_range)
{
    struct fx *f = fx_new(8);
    REQUIRE(gw_vq_activate(&f->vq) == 0);
    offer(f, 8);                                          /* head == num */
    CHECK_EQ(pop_fault(f), -EINVAL);
    memcpy(f->ram + AVAIL_GPA + 4, &(uint16_t){0xffff}, 2);
    CHECK_EQ(pop_fault(f), -EINVAL);
    memcpy(f->ram + AVAIL_GPA + 4, &(uint16_t){1}, 2);
    desc(f, 1, BUF_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 200);   /* next out of range */
    CHECK_EQ(pop_fault(f), -EINVAL);
    fx_free(f);
}

GW_TEST(hostile_chain_loops)
{
    struct fx *f = fx_new(8);
    REQUIRE(gw_vq_activate(&f->vq) == 0);
    desc(f, 0, BUF_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 0);     /* self loop */
    offer(f, 0);
    CHECK_EQ(pop_fault(f), -ELOOP);
    for (uint16_t i = 0; i < 8; i++)                      /* ring of all 8 descriptors */
        desc(f, i, BUF_GPA, 16, GW_VIRTQ_DESC_F_NEXT, (uint16_t)((i + 1) % 8));
    CHECK_EQ(pop_fault(f), -ELOOP);
    fx_free(f);
}

GW_TEST(hostile_buffers_outside_ram)
{
    struct fx *f = fx_new(8);
    REQUIRE(gw_vq_activate(&f->vq) == 0);
    offer(f, 0);
    desc(f, 0, RAM_SIZE - 8, 16, 0, 0);                   /* straddles the end */
    CHECK_EQ(pop_fault(f), -EINVAL);
    desc(f, 0, RAM_SIZE, 0, 0, 0);                        /* zero length just past the end */
    CHECK_EQ(pop_fault(f), -EINVAL);
    desc(f, 0, UINT64_MAX - 8, 512, 0, 0);                /* addr + len overflows */
    CHECK_EQ(pop_fault(f), -EINVAL);
    desc(f, 0, UINT64_MAX, UINT32_MAX, 0, 0);
    CHECK_EQ(pop_fault(f), -EINVAL);
    desc(f, 0, 0, UINT32_MAX, 0, 0);                      /* longer than RAM */
    CHECK_EQ(pop_fault(f), -EINVAL);
    desc(f, 0, BUF_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 1);     /* fine, then a bad second one */
    desc(f, 1, 0xc0000000ull, 512, GW_VIRTQ_DESC_F_WRITE, 0);
    CHECK_EQ(pop_fault(f), -EINVAL);
    fx_free(f);
}

GW_TEST(hostile_readable_after_writable)
{
    struct fx *f = fx_new(8);
    REQUIRE(gw_vq_activate(&f->vq) == 0);
    desc(f, 0, BUF_GPA, 16, GW_VIRTQ_DESC_F_NEXT | GW_VIRTQ_DESC_F_WRITE, 1);
    desc(f, 1, BUF_GPA, 16, 0, 0);
    offer(f, 0);
    CHECK_EQ(pop_fault(f), -EINVAL);
    fx_free(f);
}

GW_TEST(hostile_avail_idx_jump)
{
    struct fx *f = fx_new(8);
    REQUIRE(gw_vq_activate(&f->vq) == 0);
    desc(f, 0, BUF_GPA, 16, 0, 0);
    set_avail_idx(f, 9);                                  /* 9 new entries in an 8-ring */
    CHECK_EQ(pop_fault(f), -EOVERFLOW);
    set_avail_idx(f, 0xffff);                             /* "minus one" */
    CHECK_EQ(pop_fault(f), -EOVERFLOW);
    set_avail_idx(f, 8);                                  /* exactly a full ring is fine */
    CHECK_EQ(gw_vq_pop(&f->vq, &f->chain), 1);
    fx_free(f);
}

GW_TEST(indirect_chain_parsed_when_negotiated)
{
    struct fx *f = fx_new(8);
    REQUIRE(gw_vq_activate(&f->vq) == 0);
    uint8_t *t = f->ram + IND_GPA;
    put_desc(t, 0, BUF_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 1);
    put_desc(t, 1, BUF_GPA + 0x1000, 4096, GW_VIRTQ_DESC_F_NEXT | GW_VIRTQ_DESC_F_WRITE, 2);
    put_desc(t, 2, BUF_GPA + 0x3000, 1, GW_VIRTQ_DESC_F_WRITE, 0);
    desc(f, 3, IND_GPA, 3 * 16, GW_VIRTQ_DESC_F_INDIRECT, 0);
    offer(f, 3);
    CHECK_EQ(pop_fault(f), -EINVAL);                      /* not negotiated: refused */
    f->vq.indirect_ok = true;
    REQUIRE(gw_vq_pop(&f->vq, &f->chain) == 1);
    CHECK_EQ(f->chain.head, 3);
    CHECK_EQ(f->chain.nout, 1);
    CHECK_EQ(f->chain.nin, 2);
    CHECK_EQ(f->chain.in_bytes, 4097);
    /* A direct prefix followed by an indirect table (2.6.5.3.1) works too. */
    desc(f, 4, BUF_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 3);
    offer(f, 4);
    REQUIRE(gw_vq_pop(&f->vq, &f->chain) == 1);
    CHECK_EQ(f->chain.nout, 2);
    CHECK_EQ(f->chain.nin, 2);
    fx_free(f);
}

GW_TEST(hostile_indirect_tables)
{
    struct fx *f = fx_new(8);
    REQUIRE(gw_vq_activate(&f->vq) == 0);
    f->vq.indirect_ok = true;
    uint8_t *t = f->ram + IND_GPA;
    offer(f, 0);
    /* nested indirect */
    put_desc(t, 0, IND_GPA, 16, GW_VIRTQ_DESC_F_INDIRECT, 0);
    desc(f, 0, IND_GPA, 16, GW_VIRTQ_DESC_F_INDIRECT, 0);
    CHECK_EQ(pop_fault(f), -EINVAL);
    /* indirect with NEXT */
    put_desc(t, 0, BUF_GPA, 16, 0, 0);
    desc(f, 0, IND_GPA, 16, GW_VIRTQ_DESC_F_INDIRECT | GW_VIRTQ_DESC_F_NEXT, 1);
    CHECK_EQ(pop_fault(f), -EINVAL);
    /* table length not a multiple of 16, or zero */
    desc(f, 0, IND_GPA, 24, GW_VIRTQ_DESC_F_INDIRECT, 0);
    CHECK_EQ(pop_fault(f), -EINVAL);
    desc(f, 0, IND_GPA, 0, GW_VIRTQ_DESC_F_INDIRECT, 0);
    CHECK_EQ(pop_fault(f), -EINVAL);
    /* table outside RAM / overflowing */
    desc(f, 0, RAM_SIZE - 16, 32, GW_VIRTQ_DESC_F_INDIRECT, 0);
    CHECK_EQ(pop_fault(f), -EINVAL);
    desc(f, 0, UINT64_MAX - 15, 32, GW_VIRTQ_DESC_F_INDIRECT, 0);
    CHECK_EQ(pop_fault(f), -EINVAL);
    /* table longer than the queue */
    for (uint16_t i = 0; i < 9; i++) put_desc(t, i, BUF_GPA, 16, GW_VIRTQ_DESC_F_NEXT, i + 1);
    put_desc(t, 8, BUF_GPA, 16, 0, 0);
    desc(f, 0, IND_GPA, 9 * 16, GW_VIRTQ_DESC_F_INDIRECT, 0);
    CHECK_EQ(pop_fault(f), -E2BIG);
    /* direct prefix + a full table: chain longer than the queue */
    for (uint16_t i = 0; i < 8; i++)
        put_desc(t + 0x200, i, BUF_GPA, 16, i < 7 ? GW_VIRTQ_DESC_F_NEXT : 0, i + 1);
    desc(f, 1, IND_GPA + 0x200, 8 * 16, GW_VIRTQ_DESC_F_INDIRECT, 0);
    desc(f, 0, IND_GPA + 0x200, 8 * 16, GW_VIRTQ_DESC_F_INDIRECT, 0);
    CHECK_EQ(gw_vq_pop(&f->vq, &f->chain), 1);            /* a full table alone is fine */
    CHECK_EQ(f->chain.nout, 8);
    offer(f, 0);
    desc(f, 0, BUF_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 1);
    CHECK_EQ(pop_fault(f), -E2BIG);
    /* loop inside the table */
    put_desc(t, 0, BUF_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 1);
    put_desc(t, 1, BUF_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 0);
    desc(f, 0, IND_GPA, 2 * 16, GW_VIRTQ_DESC_F_INDIRECT, 0);
    CHECK_EQ(pop_fault(f), -ELOOP);
    /* next beyond the table (but inside the queue size) */
    put_desc(t, 1, BUF_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 5);
    CHECK_EQ(pop_fault(f), -EINVAL);
    fx_free(f);
}

GW_TEST(reset_clears_queue)
{
    struct fx *f = fx_new(8);
    REQUIRE(gw_vq_activate(&f->vq) == 0);
    f->vq.last_avail_idx = 7;
    gw_vq_reset(&f->vq);
    CHECK(!f->vq.ready);
    CHECK_EQ(f->vq.num, 256);
    CHECK_EQ(f->vq.last_avail_idx, 0);
    CHECK_EQ(gw_vq_pop(&f->vq, &f->chain), 0);            /* not ready: nothing to pop */
    fx_free(f);
}

/* Deterministic random tables: whatever the guest writes, a popped chain only holds
 * buffers inside RAM and no longer than the queue, and a refused one leaves RAM alone. */
static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

GW_TEST(random_tables_never_escape_ram)
{
    static const uint64_t addrs[] = {0, BUF_GPA, RAM_SIZE - 1, RAM_SIZE, RAM_SIZE - 16,
                                     IND_GPA, DESC_GPA, 0xc0000000ull, UINT64_MAX,
                                     UINT64_MAX - 15, 1ull << 63};
    static const uint32_t lens[] = {0, 1, 16, 32, 48, 512, 4096, RAM_SIZE, UINT32_MAX, 17};
    struct fx *f = fx_new(16);
    REQUIRE(gw_vq_activate(&f->vq) == 0);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    unsigned taken = 0, refused = 0;
    for (int round = 0; round < 20000; round++) {
        f->vq.indirect_ok = xorshift(&seed) & 1;
        for (uint16_t i = 0; i < 16; i++) {
            uint64_t r = xorshift(&seed);
            uint64_t addr = addrs[r % GW_ARRAY_SIZE_T(addrs)] + ((r >> 8) & 1 ? (r >> 16) % 64 : 0);
            uint32_t len = lens[(r >> 24) % GW_ARRAY_SIZE_T(lens)];
            desc(f, i, addr, len, (uint16_t)((r >> 32) & 7), (uint16_t)((r >> 40) % 20));
            put_desc(f->ram + IND_GPA, i, addr, len, (uint16_t)((r >> 48) & 7),
                     (uint16_t)((r >> 56) % 20));
        }
        uint64_t r = xorshift(&seed);
        for (uint16_t i = 0; i < 16; i++)
            memcpy(f->ram + AVAIL_GPA + 4 + 2u * i, &(uint16_t){(uint16_t)((r >> i) % 18)}, 2);
        set_avail_idx(f, (uint16_t)(f->vq.last_avail_idx + (r >> 50) % 20));
        memcpy(f->snap, f->ram, RAM_SIZE);
        int p = gw_vq_pop(&f->vq, &f->chain);
        CHECK(memcmp(f->snap, f->ram, RAM_SIZE) == 0);
        if (p == 1) {
            taken++;
            CHECK(f->chain.nout + f->chain.nin <= 16);
            for (unsigned k = 0; k < f->chain.nout + f->chain.nin; k++) {
                const struct gw_vq_iov *v = &f->chain.iov[k];
                CHECK(v->base >= f->ram && v->base <= f->ram + RAM_SIZE);
                CHECK(v->len <= (uint64_t)(f->ram + RAM_SIZE - v->base));
                CHECK(v->base == f->ram + v->gpa);
            }
            gw_vq_push(&f->vq, f->chain.head, 0);
        } else if (p < 0) {
            refused++;
            CHECK(f->vq.err[0] != 0);
            f->vq.last_avail_idx = f->vq.used_idx = 0;   /* as after a driver reset */
        }
    }
    CHECK(taken > 100);
    CHECK(refused > 100);
    fx_free(f);
}
