/* Unit tests for the virtio-blk device, driven only through its access() op, the way a
 * guest driver would: registers are written, rings and buffers are built in a wrapped
 * buffer that stands for guest RAM, and the queue is kicked through QueueNotify. Covers the
 * good paths (write then read back, split and indirect chains, flush, GET_ID), requests the
 * device must answer with IOERR/UNSUPP, hostile chains that must set DEVICE_NEEDS_RESET
 * without touching guest RAM or the image, and save/load through protobuf-c; the backup seams
 * (copy-before-write hook, dirty bitmap since the last backup, request latency histogram). */
#include "engine/vm/guest_mem.h"
#include "engine/vm/virtio_blk.h"
#include "engine/vm/virtio_mmio.h"
#include "engine/vm/virtqueue.h"
#include "guest/abi.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RAM_SIZE (1u << 20)
#define SECTORS 64u
#define QNUM 256u
#define DESC_GPA 0x1000u     /* 256 x 16 bytes */
#define AVAIL_GPA 0x2000u
#define USED_GPA 0x3000u
#define HDR_GPA 0x4000u
#define STATUS_GPA 0x4100u
#define IND_GPA 0x5000u      /* indirect tables */
#define DATA_GPA 0x10000u
#define DATA2_GPA 0x20000u

#define F_LO ((uint32_t)(GW_VIRTIO_BLK_F_SEG_MAX | GW_VIRTIO_BLK_F_FLUSH | GW_VIRTIO_F_INDIRECT_DESC))
#define F_HI 1u              /* VIRTIO_F_VERSION_1 >> 32 */
#define S_ALL (GW_VIRTIO_S_ACKNOWLEDGE | GW_VIRTIO_S_DRIVER | GW_VIRTIO_S_FEATURES_OK | \
               GW_VIRTIO_S_DRIVER_OK)

struct irq_rec {
    int level;
    unsigned raises, lowers;
    uint32_t gsi;
};

struct env {
    uint8_t *ram, *snap;
    uint8_t *image;          /* what the image file should hold */
    struct gw_guest_mem mem;
    struct irq_rec irq;
    struct gw_device *dev;
    char path[64];
    uint64_t sectors;
    uint16_t avail_idx;
};

static int irq_set(void *ctx, uint32_t gsi, int level)
{
    struct irq_rec *r = ctx;
    r->gsi = gsi;
    if (level) r->raises++; else r->lowers++;
    r->level = level;
    return 0;
}

static uint8_t pattern(uint64_t pos) { return (uint8_t)(pos * 31 + 7); }

static int make_image(char *path, size_t pathlen, uint64_t bytes, uint8_t **content)
{
    snprintf(path, pathlen, "/tmp/gw-test-vblk-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return -errno;
    uint8_t *c = malloc(bytes ? bytes : 1);
    for (uint64_t i = 0; i < bytes; i++) c[i] = pattern(i);
    ssize_t w = write(fd, c, bytes);
    close(fd);
    if (content) *content = c; else free(c);
    return w == (ssize_t)bytes ? 0 : -EIO;
}

static struct gw_irq_sink sink(struct env *e) { return (struct gw_irq_sink){irq_set, &e->irq}; }

static struct env *env_new(uint64_t sectors)
{
    struct env *e = calloc(1, sizeof *e);
    e->ram = aligned_alloc(4096, RAM_SIZE);
    e->snap = malloc(RAM_SIZE);
    memset(e->ram, 0, RAM_SIZE);
    gw_guest_mem_wrap(&e->mem, e->ram, RAM_SIZE);
    e->sectors = sectors;
    if (make_image(e->path, sizeof e->path, sectors * 512, &e->image) < 0 ||
        gw_virtio_blk_create(e->path, &e->mem, sink(e), GW_VIRTIO_MMIO_BASE, &e->dev) < 0) {
        fprintf(stderr, "test set-up failed\n");
        abort();
    }
    return e;
}

static void env_free(struct env *e)
{
    if (e->dev) e->dev->ops->destroy(e->dev);
    unlink(e->path);
    free(e->image);
    free(e->ram);
    free(e->snap);
    free(e);
}

static int access_dev(struct gw_device *d, uint64_t off, bool w, uint8_t *data, uint32_t len)
{
    pthread_mutex_lock(&d->lock);  /* as the bus does */
    int r = d->ops->access(d, off, w, data, len);
    pthread_mutex_unlock(&d->lock);
    return r;
}

static uint32_t rd(struct env *e, uint64_t off)
{
    uint8_t d[4];
    CHECK_EQ(access_dev(e->dev, off, false, d, 4), 0);
    uint32_t v;
    memcpy(&v, d, 4);
    return v;
}

static void wr(struct env *e, uint64_t off, uint32_t v)
{
    uint8_t d[4];
    memcpy(d, &v, 4);
    CHECK_EQ(access_dev(e->dev, off, true, d, 4), 0);
}

/* The driver's side of 3.1.1, with the given features and queue size; returns Status. */
static uint32_t driver_setup(struct env *e, uint32_t f_lo, uint32_t f_hi, uint32_t num)
{
    wr(e, GW_VMMIO_STATUS, 0);
    wr(e, GW_VMMIO_STATUS, GW_VIRTIO_S_ACKNOWLEDGE);
    wr(e, GW_VMMIO_STATUS, GW_VIRTIO_S_ACKNOWLEDGE | GW_VIRTIO_S_DRIVER);
    wr(e, GW_VMMIO_DRIVER_FEATURES_SEL, 0);
    wr(e, GW_VMMIO_DRIVER_FEATURES, f_lo);
    wr(e, GW_VMMIO_DRIVER_FEATURES_SEL, 1);
    wr(e, GW_VMMIO_DRIVER_FEATURES, f_hi);
    wr(e, GW_VMMIO_STATUS, S_ALL & ~GW_VIRTIO_S_DRIVER_OK);
    if (!(rd(e, GW_VMMIO_STATUS) & GW_VIRTIO_S_FEATURES_OK)) return rd(e, GW_VMMIO_STATUS);
    wr(e, GW_VMMIO_QUEUE_SEL, 0);
    wr(e, GW_VMMIO_QUEUE_NUM, num);
    wr(e, GW_VMMIO_QUEUE_DESC_LOW, DESC_GPA);
    wr(e, GW_VMMIO_QUEUE_DESC_HIGH, 0);
    wr(e, GW_VMMIO_QUEUE_DRIVER_LOW, AVAIL_GPA);
    wr(e, GW_VMMIO_QUEUE_DRIVER_HIGH, 0);
    wr(e, GW_VMMIO_QUEUE_DEVICE_LOW, USED_GPA);
    wr(e, GW_VMMIO_QUEUE_DEVICE_HIGH, 0);
    wr(e, GW_VMMIO_QUEUE_READY, 1);
    wr(e, GW_VMMIO_STATUS, S_ALL);
    return rd(e, GW_VMMIO_STATUS);
}

static struct env *env_ready(void)
{
    struct env *e = env_new(SECTORS);
    CHECK_EQ(driver_setup(e, F_LO, F_HI, QNUM), S_ALL);
    return e;
}

static void put_desc(struct env *e, uint64_t table, uint16_t i, uint64_t addr, uint32_t len,
                     uint16_t flags, uint16_t next)
{
    struct gw_virtq_desc d = {.addr = addr, .len = len, .flags = flags, .next = next};
    memcpy(e->ram + table + 16u * i, &d, sizeof d);
}

static void desc(struct env *e, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
                 uint16_t next)
{
    put_desc(e, DESC_GPA, i, addr, len, flags, next);
}

static void set_hdr(struct env *e, uint32_t type, uint64_t sector)
{
    struct gw_virtio_blk_req_hdr h = {.type = type, .sector = sector};
    memcpy(e->ram + HDR_GPA, &h, sizeof h);
    e->ram[STATUS_GPA] = 0xee;
}

/* Publishes head in the avail ring without kicking. */
static void offer(struct env *e, uint16_t head)
{
    memcpy(e->ram + AVAIL_GPA + 4 + 2u * (e->avail_idx % QNUM), &head, 2);
    e->avail_idx++;
    memcpy(e->ram + AVAIL_GPA + 2, &e->avail_idx, 2);
}

static uint16_t used_idx(struct env *e)
{
    uint16_t v;
    memcpy(&v, e->ram + USED_GPA + 2, 2);
    return v;
}

static uint32_t used_len(struct env *e, uint16_t idx)
{
    uint32_t elem[2];
    memcpy(elem, e->ram + USED_GPA + 4 + 8u * (idx % QNUM), 8);
    return elem[1];
}

/* header (desc 0), data (desc 1, writable for IN and GET_ID), status (desc 2); offered. */
static void build_request(struct env *e, uint32_t type, uint64_t sector, uint64_t data,
                          uint32_t len)
{
    bool to_guest = type == GW_VIRTIO_BLK_T_IN || type == GW_VIRTIO_BLK_T_GET_ID;
    set_hdr(e, type, sector);
    desc(e, 0, HDR_GPA, 16, GW_VIRTQ_DESC_F_NEXT, len ? 1 : 2);
    desc(e, 1, data, len, GW_VIRTQ_DESC_F_NEXT | (to_guest ? GW_VIRTQ_DESC_F_WRITE : 0), 2);
    desc(e, 2, STATUS_GPA, 1, GW_VIRTQ_DESC_F_WRITE, 0);
    offer(e, 0);
}

/* Builds, kicks and returns the status byte the device wrote. */
static uint8_t request(struct env *e, uint32_t type, uint64_t sector, uint64_t data,
                       uint32_t len)
{
    build_request(e, type, sector, data, len);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, 0);
    return e->ram[STATUS_GPA];
}

static bool image_is(struct env *e)
{
    uint64_t n = e->sectors * 512;
    uint8_t *buf = malloc(n);
    FILE *f = fopen(e->path, "rb");
    bool same = f && fread(buf, 1, n, f) == n && fgetc(f) == EOF && !memcmp(buf, e->image, n);
    if (f) fclose(f);
    free(buf);
    return same;
}

static uint64_t saved_errors(struct env *e)
{
    Godwit__V1__DeviceState ds;
    godwit__v1__device_state__init(&ds);
    CHECK_EQ(e->dev->ops->save(e->dev, &ds), 0);
    return ds.virtio_blk->errors;
}

/* Kicks a hostile chain at head (descriptors already written) and checks the refusal:
 * NEEDS_RESET and a config interrupt, no used entry, guest RAM and image untouched. */
static void kick_expect_reset(struct env *e, uint16_t head)
{
    offer(e, head);
    memcpy(e->snap, e->ram, RAM_SIZE);
    uint64_t errors = saved_errors(e);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, 0);
    CHECK(rd(e, GW_VMMIO_STATUS) & GW_VIRTIO_S_NEEDS_RESET);
    CHECK(rd(e, GW_VMMIO_INTERRUPT_STATUS) & GW_VIRTIO_INT_CONFIG);
    CHECK_EQ(e->irq.level, 1);
    CHECK_EQ(e->irq.gsi, GW_VIRTIO_BLK_GSI);
    CHECK(memcmp(e->snap, e->ram, RAM_SIZE) == 0);
    CHECK(image_is(e));
    CHECK_EQ(saved_errors(e), errors + 1);
}

/* After a request that must fail with a status: only the used ring and status changed. */
static bool ram_same_but_used_and_status(struct env *e)
{
    uint64_t used_end = USED_GPA + 6 + 8u * QNUM;
    return !memcmp(e->snap, e->ram, USED_GPA) &&
           !memcmp(e->snap + used_end, e->ram + used_end, STATUS_GPA - used_end) &&
           !memcmp(e->snap + STATUS_GPA + 1, e->ram + STATUS_GPA + 1,
                   RAM_SIZE - STATUS_GPA - 1);
}

GW_TEST(create_refuses_bad_images)
{
    struct gw_guest_mem mem;
    static uint8_t ram[4096];
    gw_guest_mem_wrap(&mem, ram, sizeof ram);
    struct irq_rec rec = {0};
    struct gw_irq_sink irq = {irq_set, &rec};
    struct gw_device *d = (struct gw_device *)&rec;
    CHECK_EQ(gw_virtio_blk_create("/nonexistent/godwit.img", &mem, irq, 0, &d), -ENOENT);
    CHECK(d == NULL);
    char path[64];
    REQUIRE(make_image(path, sizeof path, 1000, NULL) == 0);      /* not whole sectors */
    CHECK_EQ(gw_virtio_blk_create(path, &mem, irq, 0, &d), -EINVAL);
    unlink(path);
    REQUIRE(make_image(path, sizeof path, 0, NULL) == 0);         /* empty */
    CHECK_EQ(gw_virtio_blk_create(path, &mem, irq, 0, &d), -EINVAL);
    unlink(path);
}

GW_TEST(registers_identify_a_virtio_blk)
{
    struct env *e = env_new(SECTORS);
    CHECK(strcmp(e->dev->name, "vda") == 0);
    CHECK_EQ(e->dev->base, GW_VIRTIO_MMIO_BASE);
    CHECK_EQ(e->dev->size, GW_VIRTIO_MMIO_SIZE);
    CHECK_EQ(rd(e, GW_VMMIO_MAGIC), 0x74726976);
    CHECK_EQ(rd(e, GW_VMMIO_VERSION), 2);
    CHECK_EQ(rd(e, GW_VMMIO_DEVICE_ID), 2);
    CHECK(rd(e, GW_VMMIO_VENDOR_ID) != 0);
    wr(e, GW_VMMIO_DEVICE_FEATURES_SEL, 0);
    uint32_t lo = rd(e, GW_VMMIO_DEVICE_FEATURES);
    CHECK(lo & GW_VIRTIO_BLK_F_SEG_MAX);
    CHECK(lo & GW_VIRTIO_BLK_F_FLUSH);
    wr(e, GW_VMMIO_DEVICE_FEATURES_SEL, 1);
    CHECK_EQ(rd(e, GW_VMMIO_DEVICE_FEATURES), 1);                  /* VERSION_1 */
    wr(e, GW_VMMIO_DEVICE_FEATURES_SEL, 7);
    CHECK_EQ(rd(e, GW_VMMIO_DEVICE_FEATURES), 0);
    CHECK_EQ(rd(e, GW_VMMIO_QUEUE_NUM_MAX), QNUM);
    wr(e, GW_VMMIO_QUEUE_SEL, 1);                                  /* no such queue */
    CHECK_EQ(rd(e, GW_VMMIO_QUEUE_NUM_MAX), 0);
    wr(e, GW_VMMIO_QUEUE_READY, 1);                                /* ignored, no fault */
    CHECK_EQ(rd(e, GW_VMMIO_STATUS), 0);
    /* config space: capacity as one 8-byte and two 4-byte reads, seg_max */
    uint8_t d[8];
    uint64_t cap;
    CHECK_EQ(access_dev(e->dev, 0x100, false, d, 8), 0);
    memcpy(&cap, d, 8);
    CHECK_EQ(cap, SECTORS);
    CHECK_EQ(rd(e, 0x100), SECTORS);
    CHECK_EQ(rd(e, 0x104), 0);
    CHECK_EQ(rd(e, 0x10c), QNUM - 2);
    memset(d, 0xaa, sizeof d);                                      /* beyond config: 0 */
    CHECK_EQ(access_dev(e->dev, 0xff0, false, d, 4), 0);
    CHECK_EQ(d[0] | d[1] | d[2] | d[3], 0);
    wr(e, 0x100, 12345);                                           /* read-only config */
    CHECK_EQ(rd(e, 0x100), SECTORS);
    /* registers take aligned 32-bit accesses only */
    memset(d, 0xaa, sizeof d);
    CHECK_EQ(access_dev(e->dev, GW_VMMIO_MAGIC, false, d, 2), 0);
    CHECK_EQ(d[0] | d[1], 0);
    CHECK_EQ(access_dev(e->dev, GW_VMMIO_STATUS + 1, true, d, 4), 0);
    CHECK_EQ(rd(e, GW_VMMIO_STATUS), 0);
    env_free(e);
}

GW_TEST(feature_negotiation_refuses_unknown_or_legacy)
{
    struct env *e = env_new(SECTORS);
    CHECK(!(driver_setup(e, F_LO | (1u << 5), F_HI, QNUM) & GW_VIRTIO_S_FEATURES_OK));
    CHECK(!(driver_setup(e, F_LO, 0, QNUM) & GW_VIRTIO_S_FEATURES_OK));   /* no VERSION_1 */
    CHECK(!(driver_setup(e, F_LO, F_HI | 2, QNUM) & GW_VIRTIO_S_FEATURES_OK));
    CHECK_EQ(driver_setup(e, 0, F_HI, QNUM), S_ALL);                      /* minimal */
    CHECK_EQ(driver_setup(e, F_LO, F_HI, QNUM), S_ALL);
    env_free(e);
}

GW_TEST(write_then_read_back)
{
    struct env *e = env_ready();
    for (uint32_t i = 0; i < 4096; i++) e->ram[DATA_GPA + i] = (uint8_t)(i ^ 0x5a);
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_OUT, 5, DATA_GPA, 4096), GW_VIRTIO_BLK_S_OK);
    CHECK_EQ(used_idx(e), 1);
    CHECK_EQ(used_len(e, 0), 1);
    CHECK(rd(e, GW_VMMIO_INTERRUPT_STATUS) & GW_VIRTIO_INT_USED);
    CHECK_EQ(e->irq.level, 1);
    wr(e, GW_VMMIO_INTERRUPT_ACK, GW_VIRTIO_INT_USED);
    CHECK_EQ(e->irq.level, 0);
    CHECK_EQ(rd(e, GW_VMMIO_INTERRUPT_STATUS), 0);
    memcpy(e->image + 5 * 512, e->ram + DATA_GPA, 4096);
    CHECK(image_is(e));

    memset(e->ram + DATA2_GPA, 0, 8192);
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_IN, 5, DATA2_GPA, 4096), GW_VIRTIO_BLK_S_OK);
    CHECK_EQ(used_idx(e), 2);
    CHECK_EQ(used_len(e, 1), 4097);
    CHECK(memcmp(e->ram + DATA2_GPA, e->ram + DATA_GPA, 4096) == 0);
    CHECK(e->ram[DATA2_GPA + 4096] == 0);                          /* nothing past the buffer */
    /* The last sector of the disk is reachable; one past it is not. */
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_IN, SECTORS - 1, DATA2_GPA, 512), GW_VIRTIO_BLK_S_OK);
    CHECK(memcmp(e->ram + DATA2_GPA, e->image + (SECTORS - 1) * 512, 512) == 0);
    env_free(e);
}

GW_TEST(split_and_indirect_chains)
{
    struct env *e = env_ready();
    /* Header split 10 + 6 over two descriptors, data over three, status alone. */
    for (uint32_t i = 0; i < 1536; i++) e->ram[DATA_GPA + i] = (uint8_t)(i * 3);
    set_hdr(e, GW_VIRTIO_BLK_T_OUT, 20);
    desc(e, 7, HDR_GPA, 10, GW_VIRTQ_DESC_F_NEXT, 3);
    desc(e, 3, HDR_GPA + 10, 6, GW_VIRTQ_DESC_F_NEXT, 9);
    desc(e, 9, DATA_GPA, 100, GW_VIRTQ_DESC_F_NEXT, 4);
    desc(e, 4, DATA_GPA + 100, 1000, GW_VIRTQ_DESC_F_NEXT, 5);
    desc(e, 5, DATA_GPA + 1100, 436, GW_VIRTQ_DESC_F_NEXT, 6);
    desc(e, 6, STATUS_GPA, 1, GW_VIRTQ_DESC_F_WRITE, 0);
    offer(e, 7);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, 0);
    CHECK_EQ(e->ram[STATUS_GPA], GW_VIRTIO_BLK_S_OK);
    memcpy(e->image + 20 * 512, e->ram + DATA_GPA, 1536);
    CHECK(image_is(e));

    /* Read it back through an indirect table: header, two data buffers, status. */
    set_hdr(e, GW_VIRTIO_BLK_T_IN, 20);
    put_desc(e, IND_GPA, 0, HDR_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 1);
    put_desc(e, IND_GPA, 1, DATA2_GPA, 512, GW_VIRTQ_DESC_F_NEXT | GW_VIRTQ_DESC_F_WRITE, 2);
    put_desc(e, IND_GPA, 2, DATA2_GPA + 4096, 1024, GW_VIRTQ_DESC_F_NEXT | GW_VIRTQ_DESC_F_WRITE, 3);
    put_desc(e, IND_GPA, 3, STATUS_GPA, 1, GW_VIRTQ_DESC_F_WRITE, 0);
    desc(e, 11, IND_GPA, 4 * 16, GW_VIRTQ_DESC_F_INDIRECT, 0);
    offer(e, 11);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, 0);
    CHECK_EQ(e->ram[STATUS_GPA], GW_VIRTIO_BLK_S_OK);
    CHECK_EQ(used_len(e, 1), 1537);
    CHECK(memcmp(e->ram + DATA2_GPA, e->ram + DATA_GPA, 512) == 0);
    CHECK(memcmp(e->ram + DATA2_GPA + 4096, e->ram + DATA_GPA + 512, 1024) == 0);

    /* Two requests in one kick: both served, one interrupt. */
    unsigned raises = e->irq.raises;
    wr(e, GW_VMMIO_INTERRUPT_ACK, 3);
    offer(e, 11);
    offer(e, 11);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, 0);
    CHECK_EQ(used_idx(e), 4);
    CHECK_EQ(e->irq.raises, raises + 1);
    env_free(e);
}

GW_TEST(flush_get_id_and_unsupported)
{
    struct env *e = env_ready();
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_FLUSH, 0, 0, 0), GW_VIRTIO_BLK_S_OK);
    CHECK_EQ(used_len(e, 0), 1);
    memset(e->ram + DATA_GPA, 0xff, 64);
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_GET_ID, 0, DATA_GPA, 20), GW_VIRTIO_BLK_S_OK);
    CHECK(memcmp(e->ram + DATA_GPA, "godwit-vda\0\0\0\0\0\0\0\0\0\0", 20) == 0);
    CHECK_EQ(used_len(e, 1), 21);
    CHECK_EQ(e->ram[DATA_GPA + 20], 0xff);
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_GET_ID, 0, DATA_GPA + 32, 4), GW_VIRTIO_BLK_S_OK);
    CHECK(memcmp(e->ram + DATA_GPA + 32, "godw", 4) == 0);
    CHECK_EQ(e->ram[DATA_GPA + 36], 0xff);
    CHECK_EQ(request(e, 11 /* WRITE_ZEROES, not offered */, 0, DATA_GPA, 16),
             GW_VIRTIO_BLK_S_UNSUPP);
    CHECK_EQ(request(e, 0xdeadbeef, 0, DATA_GPA, 512), GW_VIRTIO_BLK_S_UNSUPP);
    CHECK(image_is(e));
    CHECK(!(rd(e, GW_VMMIO_STATUS) & GW_VIRTIO_S_NEEDS_RESET));
    env_free(e);
}

/* A request that must complete with status, leaving image and data buffers alone. */
static void expect_status(struct env *e, uint32_t type, uint64_t sector, uint32_t len,
                          uint8_t status)
{
    uint16_t before = used_idx(e);
    build_request(e, type, sector, DATA_GPA, len);
    memcpy(e->snap, e->ram, RAM_SIZE);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, 0);
    CHECK_EQ(e->ram[STATUS_GPA], status);
    CHECK_EQ(used_idx(e), (uint16_t)(before + 1));
    CHECK(ram_same_but_used_and_status(e));
    CHECK(image_is(e));
    CHECK(!(rd(e, GW_VMMIO_STATUS) & GW_VIRTIO_S_NEEDS_RESET));
}

GW_TEST(sector_out_of_range_gives_ioerr)
{
    struct env *e = env_ready();
    memset(e->ram + DATA_GPA, 0x77, 8192);
    expect_status(e, GW_VIRTIO_BLK_T_IN, SECTORS, 512, GW_VIRTIO_BLK_S_IOERR);
    expect_status(e, GW_VIRTIO_BLK_T_OUT, SECTORS, 512, GW_VIRTIO_BLK_S_IOERR);
    expect_status(e, GW_VIRTIO_BLK_T_OUT, SECTORS - 1, 1024, GW_VIRTIO_BLK_S_IOERR);
    expect_status(e, GW_VIRTIO_BLK_T_IN, SECTORS - 2, 4096, GW_VIRTIO_BLK_S_IOERR);
    expect_status(e, GW_VIRTIO_BLK_T_OUT, UINT64_MAX, 512, GW_VIRTIO_BLK_S_IOERR);
    expect_status(e, GW_VIRTIO_BLK_T_IN, UINT64_MAX / 512 + 1, 512, GW_VIRTIO_BLK_S_IOERR);
    expect_status(e, GW_VIRTIO_BLK_T_OUT, 1ull << 55, 1024, GW_VIRTIO_BLK_S_IOERR);
    CHECK_EQ(saved_errors(e), 7);
    env_free(e);
}

GW_TEST(length_not_whole_sectors_gives_ioerr)
{
    struct env *e = env_ready();
    memset(e->ram + DATA_GPA, 0x77, 8192);
    expect_status(e, GW_VIRTIO_BLK_T_OUT, 0, 100, GW_VIRTIO_BLK_S_IOERR);
    expect_status(e, GW_VIRTIO_BLK_T_OUT, 0, 513, GW_VIRTIO_BLK_S_IOERR);
    expect_status(e, GW_VIRTIO_BLK_T_IN, 0, 511, GW_VIRTIO_BLK_S_IOERR);
    expect_status(e, GW_VIRTIO_BLK_T_IN, 3, 1000, GW_VIRTIO_BLK_S_IOERR);
    env_free(e);
}

GW_TEST(hostile_desc_index_out_of_range)
{
    struct env *e = env_ready();
    kick_expect_reset(e, QNUM);                                    /* head == queue size */
    env_free(e);
    e = env_ready();
    set_hdr(e, GW_VIRTIO_BLK_T_IN, 0);
    desc(e, 0, HDR_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 4000);           /* next far out */
    kick_expect_reset(e, 0);
    env_free(e);
}

GW_TEST(hostile_chain_loop)
{
    struct env *e = env_ready();
    set_hdr(e, GW_VIRTIO_BLK_T_IN, 0);
    desc(e, 0, HDR_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 1);
    desc(e, 1, DATA_GPA, 512, GW_VIRTQ_DESC_F_NEXT | GW_VIRTQ_DESC_F_WRITE, 2);
    desc(e, 2, DATA_GPA, 512, GW_VIRTQ_DESC_F_NEXT | GW_VIRTQ_DESC_F_WRITE, 1);
    kick_expect_reset(e, 0);
    env_free(e);
}

GW_TEST(hostile_buffer_outside_ram)
{
    struct env *e = env_ready();
    set_hdr(e, GW_VIRTIO_BLK_T_IN, 0);
    desc(e, 0, HDR_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 1);
    desc(e, 1, RAM_SIZE - 256, 512, GW_VIRTQ_DESC_F_NEXT | GW_VIRTQ_DESC_F_WRITE, 2);
    desc(e, 2, STATUS_GPA, 1, GW_VIRTQ_DESC_F_WRITE, 0);
    kick_expect_reset(e, 0);
    env_free(e);
    e = env_ready();                                               /* status outside RAM */
    set_hdr(e, GW_VIRTIO_BLK_T_FLUSH, 0);
    desc(e, 0, HDR_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 1);
    desc(e, 1, GW_RAM_HOLE_START, 1, GW_VIRTQ_DESC_F_WRITE, 0);
    kick_expect_reset(e, 0);
    env_free(e);
}

GW_TEST(hostile_address_overflow)
{
    struct env *e = env_ready();
    set_hdr(e, GW_VIRTIO_BLK_T_OUT, 0);
    desc(e, 0, HDR_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 1);
    desc(e, 1, UINT64_MAX - 100, 512, GW_VIRTQ_DESC_F_NEXT, 2);    /* wraps to low RAM */
    desc(e, 2, STATUS_GPA, 1, GW_VIRTQ_DESC_F_WRITE, 0);
    kick_expect_reset(e, 0);
    env_free(e);
    e = env_ready();
    set_hdr(e, GW_VIRTIO_BLK_T_OUT, 0);
    desc(e, 0, UINT64_MAX - 7, 16, GW_VIRTQ_DESC_F_NEXT, 2);        /* header wraps */
    desc(e, 2, STATUS_GPA, 1, GW_VIRTQ_DESC_F_WRITE, 0);
    kick_expect_reset(e, 0);
    env_free(e);
}

GW_TEST(hostile_zero_length_status)
{
    struct env *e = env_ready();
    set_hdr(e, GW_VIRTIO_BLK_T_IN, 0);
    desc(e, 0, HDR_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 1);
    desc(e, 1, DATA_GPA, 512, GW_VIRTQ_DESC_F_NEXT | GW_VIRTQ_DESC_F_WRITE, 2);
    desc(e, 2, STATUS_GPA, 0, GW_VIRTQ_DESC_F_WRITE, 0);
    kick_expect_reset(e, 0);
    env_free(e);
}

GW_TEST(hostile_read_only_status)
{
    struct env *e = env_ready();
    set_hdr(e, GW_VIRTIO_BLK_T_OUT, 0);
    desc(e, 0, HDR_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 1);
    desc(e, 1, DATA_GPA, 512, GW_VIRTQ_DESC_F_NEXT, 2);
    desc(e, 2, STATUS_GPA, 1, 0, 0);                               /* not writable */
    kick_expect_reset(e, 0);
    env_free(e);
}

GW_TEST(hostile_short_header_and_misordered_chain)
{
    struct env *e = env_ready();
    set_hdr(e, GW_VIRTIO_BLK_T_OUT, 0);
    desc(e, 0, HDR_GPA, 8, GW_VIRTQ_DESC_F_NEXT, 2);               /* 8-byte header */
    desc(e, 2, STATUS_GPA, 1, GW_VIRTQ_DESC_F_WRITE, 0);
    kick_expect_reset(e, 0);
    env_free(e);
    e = env_ready();
    set_hdr(e, GW_VIRTIO_BLK_T_OUT, 0);
    desc(e, 0, STATUS_GPA, 1, GW_VIRTQ_DESC_F_WRITE | GW_VIRTQ_DESC_F_NEXT, 1);
    desc(e, 1, HDR_GPA, 16, 0, 0);                                 /* readable after writable */
    kick_expect_reset(e, 0);
    env_free(e);
}

GW_TEST(hostile_too_long_chain)
{
    /* Indirect table longer than the queue. */
    struct env *e = env_new(SECTORS);
    REQUIRE(driver_setup(e, F_LO, F_HI, 16) == S_ALL);
    for (uint16_t i = 0; i < 17; i++)
        put_desc(e, IND_GPA, i, DATA_GPA, 512, GW_VIRTQ_DESC_F_NEXT, i + 1);
    desc(e, 0, IND_GPA, 17 * 16, GW_VIRTQ_DESC_F_INDIRECT, 0);
    kick_expect_reset(e, 0);
    env_free(e);
    /* Direct prefix plus a queue-sized table. */
    e = env_new(SECTORS);
    REQUIRE(driver_setup(e, F_LO, F_HI, 16) == S_ALL);
    set_hdr(e, GW_VIRTIO_BLK_T_OUT, 0);
    for (uint16_t i = 0; i < 16; i++)
        put_desc(e, IND_GPA, i, DATA_GPA, 512, i < 15 ? GW_VIRTQ_DESC_F_NEXT : GW_VIRTQ_DESC_F_WRITE, i + 1);
    desc(e, 0, HDR_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 1);
    desc(e, 1, IND_GPA, 16 * 16, GW_VIRTQ_DESC_F_INDIRECT, 0);
    kick_expect_reset(e, 0);
    env_free(e);
    /* Indirect table when INDIRECT_DESC was not negotiated, and nested indirect. */
    e = env_new(SECTORS);
    REQUIRE(driver_setup(e, F_LO & ~(uint32_t)GW_VIRTIO_F_INDIRECT_DESC, F_HI, QNUM) == S_ALL);
    put_desc(e, IND_GPA, 0, STATUS_GPA, 1, GW_VIRTQ_DESC_F_WRITE, 0);
    desc(e, 0, IND_GPA, 16, GW_VIRTQ_DESC_F_INDIRECT, 0);
    kick_expect_reset(e, 0);
    env_free(e);
    e = env_ready();
    put_desc(e, IND_GPA, 0, IND_GPA, 16, GW_VIRTQ_DESC_F_INDIRECT, 0);
    desc(e, 0, IND_GPA, 16, GW_VIRTQ_DESC_F_INDIRECT, 0);
    kick_expect_reset(e, 0);
    env_free(e);
}

GW_TEST(hostile_avail_idx_jump)
{
    struct env *e = env_ready();
    set_hdr(e, GW_VIRTIO_BLK_T_FLUSH, 0);
    desc(e, 0, HDR_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 1);
    desc(e, 1, STATUS_GPA, 1, GW_VIRTQ_DESC_F_WRITE, 0);
    e->avail_idx = QNUM;                                           /* offer() adds one more */
    kick_expect_reset(e, 0);
    env_free(e);
}

GW_TEST(hostile_rings_outside_ram)
{
    static const struct { uint32_t reg; uint32_t val; } bad[] = {
        {GW_VMMIO_QUEUE_DESC_LOW, RAM_SIZE - 16},                  /* runs off the end */
        {GW_VMMIO_QUEUE_DRIVER_LOW, RAM_SIZE},
        {GW_VMMIO_QUEUE_DEVICE_LOW, RAM_SIZE - 64},
        {GW_VMMIO_QUEUE_DESC_HIGH, 0xffffffff},                    /* near UINT64_MAX */
        {GW_VMMIO_QUEUE_DEVICE_HIGH, 1},                           /* 4 GiB up: no RAM */
        {GW_VMMIO_QUEUE_DESC_LOW, DESC_GPA + 8},                   /* misaligned */
        {GW_VMMIO_QUEUE_NUM, 300},                                 /* above QueueNumMax */
        {GW_VMMIO_QUEUE_NUM, 100},                                 /* not a power of two */
    };
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct env *e = env_new(SECTORS);
        wr(e, GW_VMMIO_STATUS, GW_VIRTIO_S_ACKNOWLEDGE | GW_VIRTIO_S_DRIVER);
        wr(e, GW_VMMIO_DRIVER_FEATURES_SEL, 1);
        wr(e, GW_VMMIO_DRIVER_FEATURES, F_HI);
        wr(e, GW_VMMIO_STATUS, S_ALL & ~GW_VIRTIO_S_DRIVER_OK);
        wr(e, GW_VMMIO_QUEUE_NUM, QNUM);
        wr(e, GW_VMMIO_QUEUE_DESC_LOW, DESC_GPA);
        wr(e, GW_VMMIO_QUEUE_DRIVER_LOW, AVAIL_GPA);
        wr(e, GW_VMMIO_QUEUE_DEVICE_LOW, USED_GPA);
        wr(e, bad[i].reg, bad[i].val);
        memcpy(e->snap, e->ram, RAM_SIZE);
        wr(e, GW_VMMIO_QUEUE_READY, 1);
        CHECK_EQ(rd(e, GW_VMMIO_QUEUE_READY), 0);
        CHECK(rd(e, GW_VMMIO_STATUS) & GW_VIRTIO_S_NEEDS_RESET);
        wr(e, GW_VMMIO_STATUS, S_ALL);
        wr(e, GW_VMMIO_QUEUE_NOTIFY, 0);                           /* nothing to run */
        CHECK(memcmp(e->snap, e->ram, RAM_SIZE) == 0);
        CHECK(image_is(e));
        env_free(e);
    }
}

GW_TEST(needs_reset_stops_the_device_until_reset)
{
    struct env *e = env_ready();
    kick_expect_reset(e, QNUM + 5);
    /* A good request behind the bad one is not served while NEEDS_RESET is set... */
    uint16_t slot = (uint16_t)(e->avail_idx - 1);
    memcpy(e->ram + AVAIL_GPA + 4 + 2u * (slot % QNUM), &(uint16_t){0}, 2);
    set_hdr(e, GW_VIRTIO_BLK_T_FLUSH, 0);
    desc(e, 0, HDR_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 1);
    desc(e, 1, STATUS_GPA, 1, GW_VIRTQ_DESC_F_WRITE, 0);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, 0);
    CHECK_EQ(used_idx(e), 0);
    CHECK_EQ(e->ram[STATUS_GPA], 0xee);
    /* ...the driver cannot clear the bit itself... */
    wr(e, GW_VMMIO_STATUS, S_ALL);
    CHECK(rd(e, GW_VMMIO_STATUS) & GW_VIRTIO_S_NEEDS_RESET);
    /* ...and a reset brings the device back, with the line lowered. */
    wr(e, GW_VMMIO_STATUS, 0);
    CHECK_EQ(rd(e, GW_VMMIO_STATUS), 0);
    CHECK_EQ(rd(e, GW_VMMIO_INTERRUPT_STATUS), 0);
    CHECK_EQ(e->irq.level, 0);
    CHECK_EQ(rd(e, GW_VMMIO_QUEUE_READY), 0);
    memset(e->ram + AVAIL_GPA, 0, 0x2000);                         /* fresh rings */
    e->avail_idx = 0;
    CHECK_EQ(driver_setup(e, F_LO, F_HI, QNUM), S_ALL);
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_FLUSH, 0, 0, 0), GW_VIRTIO_BLK_S_OK);
    CHECK_EQ(used_idx(e), 1);
    env_free(e);
}

GW_TEST(queue_registers_frozen_while_ready)
{
    struct env *e = env_ready();
    wr(e, GW_VMMIO_QUEUE_DESC_LOW, 0x80000);                       /* ignored while ready */
    wr(e, GW_VMMIO_QUEUE_NUM, 2);
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_FLUSH, 0, 0, 0), GW_VIRTIO_BLK_S_OK);
    CHECK_EQ(used_idx(e), 1);
    wr(e, GW_VMMIO_DRIVER_FEATURES_SEL, 0);                        /* fixed after FEATURES_OK */
    wr(e, GW_VMMIO_DRIVER_FEATURES, 0xffffffff);
    Godwit__V1__DeviceState ds;
    godwit__v1__device_state__init(&ds);
    CHECK_EQ(e->dev->ops->save(e->dev, &ds), 0);
    CHECK_EQ(ds.virtio_blk->mmio->driver_features, ((uint64_t)F_HI << 32) | F_LO);
    CHECK_EQ(ds.virtio_blk->mmio->queues[0]->desc_addr, DESC_GPA);
    CHECK_EQ(ds.virtio_blk->mmio->queues[0]->num, QNUM);
    env_free(e);
}

struct marks {
    uint8_t *byte;      /* one flag per guest RAM byte */
    unsigned calls;
    bool outside;       /* a range that is not inside RAM was reported */
};

static void mark(void *ctx, uint64_t gpa, uint64_t len)
{
    struct marks *m = ctx;
    m->calls++;
    if (gpa > RAM_SIZE || len > RAM_SIZE - gpa) { m->outside = true; return; }
    memset(m->byte + gpa, 1, len);
}

/* Every guest byte the device changed was reported to the write sink. */
static bool changes_all_marked(struct env *e, const struct marks *m)
{
    for (uint32_t i = 0; i < RAM_SIZE; i++)
        if (e->ram[i] != e->snap[i] && !m->byte[i]) return false;
    return true;
}

GW_TEST(write_sink_sees_every_device_write)
{
    struct env *e = env_ready();
    struct marks m = {.byte = calloc(1, RAM_SIZE)};
    pthread_mutex_lock(&e->dev->lock);
    CHECK_EQ(gw_virtio_blk_set_write_sink(e->dev, (struct gw_guest_write_sink){mark, &m}), 0);
    pthread_mutex_unlock(&e->dev->lock);
    /* A read over two buffers, through an indirect table. */
    set_hdr(e, GW_VIRTIO_BLK_T_IN, 3);
    put_desc(e, IND_GPA, 0, HDR_GPA, 16, GW_VIRTQ_DESC_F_NEXT, 1);
    put_desc(e, IND_GPA, 1, DATA2_GPA + 100, 512, GW_VIRTQ_DESC_F_NEXT | GW_VIRTQ_DESC_F_WRITE, 2);
    put_desc(e, IND_GPA, 2, DATA_GPA + 7, 1024, GW_VIRTQ_DESC_F_NEXT | GW_VIRTQ_DESC_F_WRITE, 3);
    put_desc(e, IND_GPA, 3, STATUS_GPA, 1, GW_VIRTQ_DESC_F_WRITE, 0);
    desc(e, 0, IND_GPA, 4 * 16, GW_VIRTQ_DESC_F_INDIRECT, 0);
    offer(e, 0);
    memcpy(e->snap, e->ram, RAM_SIZE);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, 0);
    CHECK_EQ(e->ram[STATUS_GPA], GW_VIRTIO_BLK_S_OK);
    CHECK(changes_all_marked(e, &m));
    CHECK(m.byte[DATA2_GPA + 100] && m.byte[DATA2_GPA + 611] && !m.byte[DATA2_GPA + 612]);
    CHECK(m.byte[DATA_GPA + 7] && m.byte[DATA_GPA + 1030] && !m.byte[DATA_GPA + 1031]);
    CHECK(m.byte[USED_GPA + 2] && m.byte[USED_GPA + 4] && m.byte[USED_GPA + 11]);
    CHECK(!m.byte[HDR_GPA] && !m.byte[IND_GPA]);              /* read, not written */
    /* GET_ID and a write: only the answer, status and used ring are reported. */
    memset(m.byte, 0, RAM_SIZE);
    build_request(e, GW_VIRTIO_BLK_T_GET_ID, 0, DATA_GPA + 2000, 20);
    memcpy(e->snap, e->ram, RAM_SIZE);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, 0);
    CHECK(changes_all_marked(e, &m));
    CHECK(m.byte[DATA_GPA + 2000] && m.byte[DATA_GPA + 2019]);
    memset(m.byte, 0, RAM_SIZE);
    build_request(e, GW_VIRTIO_BLK_T_OUT, 0, DATA_GPA, 512);
    memcpy(e->snap, e->ram, RAM_SIZE);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, 0);
    CHECK(changes_all_marked(e, &m));
    CHECK(!m.byte[DATA_GPA]);
    CHECK(!m.outside);
    /* Stopping the reports, and refusing a device that is not a disk. */
    unsigned calls = m.calls;
    CHECK_EQ(gw_virtio_blk_set_write_sink(e->dev, (struct gw_guest_write_sink){0}), 0);
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_FLUSH, 0, 0, 0), GW_VIRTIO_BLK_S_OK);
    CHECK_EQ(m.calls, calls);
    struct gw_device_ops other_ops = {0};
    struct gw_device other = {.ops = &other_ops, .name = "serial0"};
    CHECK_EQ(gw_virtio_blk_set_write_sink(&other, (struct gw_guest_write_sink){mark, &m}), -EINVAL);
    free(m.byte);
    env_free(e);
}

/* save -> protobuf bytes -> unpacked message. */
static Godwit__V1__DeviceState *save_packed(struct env *e)
{
    Godwit__V1__DeviceState ds;
    godwit__v1__device_state__init(&ds);
    pthread_mutex_lock(&e->dev->lock);
    CHECK_EQ(e->dev->ops->quiesce(e->dev), 0);
    CHECK_EQ(e->dev->ops->save(e->dev, &ds), 0);
    pthread_mutex_unlock(&e->dev->lock);
    size_t n = godwit__v1__device_state__get_packed_size(&ds);
    uint8_t *buf = malloc(n);
    CHECK_EQ(godwit__v1__device_state__pack(&ds, buf), n);
    Godwit__V1__DeviceState *u = godwit__v1__device_state__unpack(NULL, n, buf);
    free(buf);
    return u;
}

static int load(struct gw_device *d, const Godwit__V1__DeviceState *s)
{
    pthread_mutex_lock(&d->lock);
    int r = d->ops->load(d, s);
    pthread_mutex_unlock(&d->lock);
    return r;
}

/* Replaces e's device with a fresh one on the same image and RAM ("the destination"). */
static void new_device(struct env *e)
{
    e->dev->ops->destroy(e->dev);
    memset(&e->irq, 0, sizeof e->irq);
    REQUIRE(gw_virtio_blk_create(e->path, &e->mem, sink(e), GW_VIRTIO_MMIO_BASE, &e->dev) == 0);
}

GW_TEST(save_load_round_trip)
{
    struct env *e = env_ready();
    for (uint32_t i = 0; i < 1024; i++) e->ram[DATA_GPA + i] = (uint8_t)(i * 7);
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_OUT, 10, DATA_GPA, 1024), GW_VIRTIO_BLK_S_OK);
    memcpy(e->image + 10 * 512, e->ram + DATA_GPA, 1024);
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_IN, 10, DATA2_GPA, 1024), GW_VIRTIO_BLK_S_OK);
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_IN, SECTORS, DATA2_GPA, 512), GW_VIRTIO_BLK_S_IOERR);
    wr(e, GW_VMMIO_QUEUE_SEL, 0);
    /* Interrupt left pending on purpose: the destination must re-assert the line. */
    Godwit__V1__DeviceState *u = save_packed(e);
    REQUIRE(u != NULL);
    REQUIRE(u->kind_case == GODWIT__V1__DEVICE_STATE__KIND_VIRTIO_BLK);
    CHECK(strcmp(u->name, "vda") == 0);
    CHECK_EQ(u->virtio_blk->capacity_sectors, SECTORS);
    CHECK(strcmp(u->virtio_blk->image_path, e->path) == 0);
    CHECK_EQ(u->virtio_blk->mmio->queues[0]->last_avail_idx, 3);

    new_device(e);
    struct marks m = {.byte = calloc(1, RAM_SIZE)};
    CHECK_EQ(gw_virtio_blk_set_write_sink(e->dev, (struct gw_guest_write_sink){mark, &m}), 0);
    CHECK_EQ(load(e->dev, u), 0);
    CHECK_EQ(e->irq.level, 1);
    CHECK_EQ(rd(e, GW_VMMIO_STATUS), S_ALL);
    CHECK_EQ(rd(e, GW_VMMIO_INTERRUPT_STATUS), GW_VIRTIO_INT_USED);
    CHECK_EQ(rd(e, GW_VMMIO_QUEUE_READY), 1);
    wr(e, GW_VMMIO_INTERRUPT_ACK, GW_VIRTIO_INT_USED);
    CHECK_EQ(e->irq.level, 0);
    /* The restored queue carries on where the old one stopped. */
    memset(e->ram + DATA2_GPA, 0, 1024);
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_IN, 10, DATA2_GPA, 1024), GW_VIRTIO_BLK_S_OK);
    CHECK_EQ(used_idx(e), 4);
    CHECK_EQ(used_len(e, 3), 1025);
    CHECK(memcmp(e->ram + DATA2_GPA, e->ram + DATA_GPA, 1024) == 0);
    CHECK(m.byte[DATA2_GPA] && m.byte[STATUS_GPA]);               /* sink survived load */
    free(m.byte);
    Godwit__V1__DeviceState *v = save_packed(e);
    REQUIRE(v != NULL);
    CHECK_EQ(v->virtio_blk->requests, 4);
    CHECK_EQ(v->virtio_blk->write_bytes, 1024);
    CHECK_EQ(v->virtio_blk->read_bytes, 2048);
    CHECK_EQ(v->virtio_blk->errors, 1);
    CHECK_EQ(v->virtio_blk->mmio->queues[0]->used_idx, 4);
    CHECK_EQ(v->virtio_blk->mmio->driver_features, u->virtio_blk->mmio->driver_features);
    godwit__v1__device_state__free_unpacked(v, NULL);
    godwit__v1__device_state__free_unpacked(u, NULL);
    env_free(e);
}

GW_TEST(load_rejects_state_that_does_not_fit)
{
    struct env *e = env_ready();
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_FLUSH, 0, 0, 0), GW_VIRTIO_BLK_S_OK);
    Godwit__V1__DeviceState *u = save_packed(e);
    REQUIRE(u != NULL);
    Godwit__V1__VirtioMmioState *m = u->virtio_blk->mmio;
    Godwit__V1__VirtqueueState *q = m->queues[0];
    new_device(e);

    /* A different disk size. */
    struct env *other = env_new(SECTORS * 2);
    CHECK_EQ(load(other->dev, u), -EINVAL);
    env_free(other);

#define MUST_REFUSE(field, bad) do {                                    \
        __typeof__(field) saved_ = (field);                             \
        (field) = (bad);                                                \
        CHECK_EQ(load(e->dev, u), -EINVAL);                             \
        (field) = saved_;                                               \
    } while (0)
    MUST_REFUSE(u->kind_case, GODWIT__V1__DEVICE_STATE__KIND_SERIAL);
    MUST_REFUSE(u->name, "vdb");
    MUST_REFUSE(u->virtio_blk->mmio, NULL);
    MUST_REFUSE(u->virtio_blk->capacity_sectors, SECTORS + 1);
    MUST_REFUSE(m->n_queues, 0);
    MUST_REFUSE(m->status, 0x100);
    MUST_REFUSE(m->interrupt_status, 4);
    MUST_REFUSE(m->driver_features, m->driver_features | (1ull << 40));
    MUST_REFUSE(m->queues[0], NULL);
    MUST_REFUSE(q->num, 512);
    MUST_REFUSE(q->num, 3);
    MUST_REFUSE(q->desc_addr, RAM_SIZE);
    MUST_REFUSE(q->used_addr, UINT64_MAX - 3);
    MUST_REFUSE(q->last_avail_idx, q->used_idx + 1);               /* in flight */
    MUST_REFUSE(q->used_idx, 70000);
#undef MUST_REFUSE
    /* Nothing above changed the device: it is still fresh, and the good state loads. */
    CHECK_EQ(rd(e, GW_VMMIO_STATUS), 0);
    CHECK_EQ(rd(e, GW_VMMIO_QUEUE_READY), 0);
    CHECK_EQ(load(e->dev, u), 0);
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_FLUSH, 0, 0, 0), GW_VIRTIO_BLK_S_OK);
    CHECK_EQ(used_idx(e), 2);
    godwit__v1__device_state__free_unpacked(u, NULL);
    env_free(e);
}

/* Random well-formed requests: each gets a status, the device never needs a reset, and
 * the image changes exactly where an OUT request that succeeded said it would. */
GW_TEST(random_requests_keep_image_consistent)
{
    static const uint32_t types[] = {GW_VIRTIO_BLK_T_IN, GW_VIRTIO_BLK_T_OUT,
                                     GW_VIRTIO_BLK_T_FLUSH, GW_VIRTIO_BLK_T_GET_ID, 3, 99};
    static const uint64_t sectors[] = {0, 1, SECTORS / 2, SECTORS - 8, SECTORS - 1, SECTORS,
                                       SECTORS + 1, UINT64_MAX, UINT64_MAX / 512};
    struct env *e = env_ready();
    uint64_t s = 0x2545f4914f6cdd1dull;
    unsigned ok = 0, failed = 0;
    for (int i = 0; i < 3000; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        uint32_t type = types[s % 6];
        uint64_t sector = sectors[(s >> 8) % 9];
        uint32_t len = (uint32_t)((s >> 16) % 17) * 256;            /* half and whole sectors */
        for (uint32_t k = 0; k < len; k++) e->ram[DATA_GPA + k] = (uint8_t)(s >> 40) + (uint8_t)k;
        uint16_t before = used_idx(e);
        uint8_t st = request(e, type, sector, DATA_GPA, len);
        CHECK_EQ(used_idx(e), (uint16_t)(before + 1));
        CHECK(st <= GW_VIRTIO_BLK_S_UNSUPP);
        if (type == GW_VIRTIO_BLK_T_OUT && st == GW_VIRTIO_BLK_S_OK && len)
            memcpy(e->image + sector * 512, e->ram + DATA_GPA, len);
        if (type == GW_VIRTIO_BLK_T_IN && st == GW_VIRTIO_BLK_S_OK && len)
            CHECK(memcmp(e->ram + DATA_GPA, e->image + sector * 512, len) == 0);
        if (st == GW_VIRTIO_BLK_S_OK) ok++; else failed++;
        wr(e, GW_VMMIO_INTERRUPT_ACK, GW_VIRTIO_INT_USED);
    }
    CHECK(!(rd(e, GW_VMMIO_STATUS) & GW_VIRTIO_S_NEEDS_RESET));
    CHECK(image_is(e));
    CHECK(ok > 300 && failed > 300);
    CHECK_EQ(e->irq.level, 0);
    env_free(e);
}

/* Request k of a multi-request kick: descriptors 3k..3k+2, header at HDR_GPA + 16k, status
 * byte at STATUS_GPA + k, data at DATA_GPA + k pages; offered, not kicked. */
static void offer_nth(struct env *e, unsigned k, uint32_t type, uint64_t sector, uint32_t len, bool status)
{
    bool to_guest = type == GW_VIRTIO_BLK_T_IN || type == GW_VIRTIO_BLK_T_GET_ID;
    struct gw_virtio_blk_req_hdr h = {.type = type, .sector = sector};
    memcpy(e->ram + HDR_GPA + 16 * k, &h, sizeof h);
    e->ram[STATUS_GPA + k] = 0xee;
    uint16_t d = (uint16_t)(3 * k);
    desc(e, d, HDR_GPA + 16 * k, 16, GW_VIRTQ_DESC_F_NEXT, len ? d + 1 : d + 2);
    desc(e, d + 1, DATA_GPA + 0x1000u * k, len, GW_VIRTQ_DESC_F_NEXT | (to_guest ? GW_VIRTQ_DESC_F_WRITE : 0), d + 2);
    /* Without status: the chain ends read-only, which no request may. */
    desc(e, d + 2, STATUS_GPA + k, 1, status ? GW_VIRTQ_DESC_F_WRITE : 0, 0);
    offer(e, d);
}

GW_TEST(one_kick_many_requests_in_order_where_it_matters)
{
    /* Reads and writes of one kick run as one backend batch; a request that overlaps one
     * already gathered, a flush and GET_ID run after what came before them. */
    struct env *e = env_ready();
    memset(e->ram + DATA_GPA, 0xa1, 1024);                /* 0: write sectors 0-1 */
    memset(e->ram + DATA_GPA + 0x1000, 0xb2, 512);        /* 1: write sector 1 (overlaps 0) */
    offer_nth(e, 0, GW_VIRTIO_BLK_T_OUT, 0, 1024, true);
    offer_nth(e, 1, GW_VIRTIO_BLK_T_OUT, 1, 512, true);
    offer_nth(e, 2, GW_VIRTIO_BLK_T_IN, 0, 1024, true);  /* 2: read 0-1 (overlaps 1) */
    offer_nth(e, 3, GW_VIRTIO_BLK_T_FLUSH, 0, 0, true);
    offer_nth(e, 4, GW_VIRTIO_BLK_T_GET_ID, 0, 20, true);
    offer_nth(e, 5, GW_VIRTIO_BLK_T_IN, SECTORS, 512, true);   /* past the end */
    offer_nth(e, 6, GW_VIRTIO_BLK_T_IN, 8, 512, true);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, 0);
    CHECK_EQ(used_idx(e), 7);
    static const uint8_t want[7] = {GW_VIRTIO_BLK_S_OK, GW_VIRTIO_BLK_S_OK, GW_VIRTIO_BLK_S_OK, GW_VIRTIO_BLK_S_OK,
                                    GW_VIRTIO_BLK_S_OK, GW_VIRTIO_BLK_S_IOERR, GW_VIRTIO_BLK_S_OK};
    for (unsigned k = 0; k < 7; k++) CHECK_EQ(e->ram[STATUS_GPA + k], want[k]);
    uint8_t expect[1024];
    memset(expect, 0xa1, 512);
    memset(expect + 512, 0xb2, 512);
    CHECK(memcmp(e->ram + DATA_GPA + 0x2000, expect, 1024) == 0);   /* the later write won */
    CHECK(memcmp(e->ram + DATA_GPA + 0x4000, GW_VIRTIO_BLK_ID, sizeof GW_VIRTIO_BLK_ID - 1) == 0);
    CHECK(memcmp(e->ram + DATA_GPA + 0x6000, e->image + 8 * 512, 512) == 0);
    memcpy(e->image, expect, 1024);
    CHECK(image_is(e));
    /* A hostile chain after good ones: they complete, then the device needs a reset. */
    offer_nth(e, 0, GW_VIRTIO_BLK_T_OUT, 2, 512, true);
    offer_nth(e, 1, GW_VIRTIO_BLK_T_OUT, 3, 512, false);   /* no writable status byte */
    memset(e->ram + DATA_GPA, 0xc3, 512);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, 0);
    CHECK_EQ(used_idx(e), 8);
    CHECK_EQ(e->ram[STATUS_GPA], GW_VIRTIO_BLK_S_OK);
    CHECK(rd(e, GW_VMMIO_STATUS) & GW_VIRTIO_S_NEEDS_RESET);
    memset(e->image + 2 * 512, 0xc3, 512);
    CHECK(image_is(e));
    env_free(e);
}

/* Copy-before-write seam: the hook sees each write's range before its data lands (the image
 * still holds the old bytes then). */
struct hook_rec {
    const char *path;
    unsigned calls;
    uint64_t off, len;
    uint8_t old[512];
};

static void before_write(void *ctx, uint64_t off, uint64_t len)
{
    struct hook_rec *h = ctx;
    h->calls++;
    h->off = off;
    h->len = len;
    FILE *f = fopen(h->path, "rb");
    memset(h->old, 0, sizeof h->old);
    if (!f) return;
    if (fseek(f, (long)off, SEEK_SET) == 0 && fread(h->old, 1, sizeof h->old, f) != sizeof h->old) h->calls += 100;
    fclose(f);
}

GW_TEST(write_hook_dirty_bitmap_and_latency)
{
    /* 3 MiB: three blocks of the dirty bitmap. */
    struct env *e = env_new(6144);
    CHECK_EQ(driver_setup(e, F_LO, F_HI, QNUM), S_ALL);
    struct hook_rec h = {.path = e->path};
    pthread_mutex_lock(&e->dev->lock);
    CHECK_EQ(gw_virtio_blk_set_write_hook(e->dev, (struct gw_blk_write_hook){before_write, &h}), 0);
    pthread_mutex_unlock(&e->dev->lock);
    memset(e->ram + DATA_GPA, 0xab, 1024);
    uint64_t sector = (2ull << 20) / 512 + 8;          /* inside the third MiB */
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_OUT, sector, DATA_GPA, 1024), GW_VIRTIO_BLK_S_OK);
    CHECK_EQ(h.calls, 1);
    CHECK_EQ(h.off, sector * 512);
    CHECK_EQ(h.len, 1024);
    CHECK(memcmp(h.old, e->image + sector * 512, 512) == 0);   /* the old data, before the write */
    /* Reads and failed range checks never call it; a removed hook is not called. */
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_IN, 0, DATA2_GPA, 512), GW_VIRTIO_BLK_S_OK);
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_OUT, 6144, DATA_GPA, 512), GW_VIRTIO_BLK_S_IOERR);
    pthread_mutex_lock(&e->dev->lock);
    CHECK_EQ(gw_virtio_blk_set_write_hook(e->dev, (struct gw_blk_write_hook){0}), 0);
    pthread_mutex_unlock(&e->dev->lock);
    CHECK_EQ(request(e, GW_VIRTIO_BLK_T_OUT, 0, DATA_GPA, 512), GW_VIRTIO_BLK_S_OK);
    CHECK_EQ(h.calls, 1);

    /* The dirty bitmap: blocks 0 and 2 written; taken, it clears; its base follows backups. */
    pthread_mutex_lock(&e->dev->lock);
    struct gw_blk_dirty *d = gw_virtio_blk_dirty(e->dev);
    REQUIRE(d != NULL);
    CHECK_EQ(d->nbits, 3);
    CHECK_EQ(d->bits[0], 5);
    gw_blk_dirty_set_base(d, "backup-1");
    uint64_t *taken;
    char base[GW_BLK_DIRTY_BASE_MAX];
    CHECK_EQ(gw_blk_dirty_take(d, &taken, base), 0);
    CHECK_EQ(taken[0], 5);
    CHECK_EQ(d->bits[0], 0);
    CHECK(strcmp(base, "backup-1") == 0);
    CHECK(gw_blk_dirty_any(taken, 3, 2ull << 20, 1ull << 20));
    CHECK(!gw_blk_dirty_any(taken, 3, 1ull << 20, 1ull << 20));
    gw_blk_dirty_give_back(d, taken);                   /* a failed backup */
    CHECK_EQ(d->bits[0], 5);
    free(taken);
    gw_blk_dirty_set_base(d, "backup-2");
    struct gw_lat_hist lat;
    CHECK_EQ(gw_virtio_blk_latency(e->dev, &lat), 0);
    CHECK_EQ(lat.count, 4);                             /* IN, OUT, OUT, and the IOERR'd OUT */
    pthread_mutex_unlock(&e->dev->lock);

    /* It travels in the saved state; a state that does not fit leaves it unknown. */
    Godwit__V1__DeviceState *u = save_packed(e);
    REQUIRE(u != NULL);
    CHECK_EQ(u->virtio_blk->dirty_bitmap.len, 8);
    CHECK(strcmp(u->virtio_blk->dirty_base, "backup-2") == 0);
    new_device(e);
    CHECK_EQ(load(e->dev, u), 0);
    d = gw_virtio_blk_dirty(e->dev);
    CHECK_EQ(d->bits[0], 5);
    CHECK(strcmp(d->base, "backup-2") == 0);
    u->virtio_blk->dirty_block_bytes = 4096;            /* another block size: not ours */
    new_device(e);
    CHECK_EQ(load(e->dev, u), 0);
    d = gw_virtio_blk_dirty(e->dev);
    CHECK_EQ(d->bits[0], 0);
    CHECK(strcmp(d->base, "") == 0);
    godwit__v1__device_state__free_unpacked(u, NULL);
    env_free(e);
}
