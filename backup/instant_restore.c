/* Instant restore (see instant_restore.h): the fault thread, the fetch workers and the end
 * of the fill. */
#include "backup/instant_restore.h"

#include "backup/instant_disk.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "guest/abi.h"
#include "engine/common/util.h"
#include "storage/throttle.h"
#include "engine/vm/chunk_digest.h"
#include "engine/vm/device_bus.h"
#include "engine/vm/vcpu.h"
#include "engine/vm/vm.h"
#include "postcopy/uffd_placer.h"
#include "storage/chunk_patch.h"
#include "storage/manifest.h"
#include "storage/store.h"

#define FAULT_BATCH 64
#define BACKOFF_MIN_MS 20u
#define BACKOFF_MAX_MS 500u
#define NO_CHUNK UINT64_MAX
#define FILL_PACED (UINT64_MAX - 1)   /* only the paced fill has work, later */
#define FILL_PACE_SLICE_MS 10u          /* a paced worker looks for faults at least this often */

/* Per chunk, under mu. */
enum { CH_NONE = 0, CH_QUEUED, CH_INFLIGHT, CH_DONE };

enum { FETCH_OK = GW_FETCH_OK, FETCH_UNREACHABLE = GW_FETCH_UNREACHABLE, FETCH_BAD = GW_FETCH_BAD };

struct worker {
    struct gw_instant_restore *ir;
    pthread_t thr;
    bool faults_only;
    bool started;
};

struct gw_instant_restore {
    struct gw_backup_target t;
    Godwit__V1__BackupManifest *man;
    const Godwit__V1__BackupImage *im;
    struct gw_vm *vm;
    struct gw_uffd_placer u;
    bool placer_open;
    struct gw_chunk_digest cd;    /* the backup's digest, from checked chunk contents */
    pthread_mutex_t cd_mu;        /* set_from is not safe against itself */
    uint32_t cs;
    uint64_t nchunks, pages;
    size_t enc_cap;
    unsigned outage_ms;

    pthread_mutex_t mu;
    pthread_cond_t cv;            /* CLOCK_MONOTONIC */
    pthread_cond_t stop_cv;       /* CLOCK_MONOTONIC: only stop wakes a retry's backoff early */
    uint8_t *state;               /* per chunk: CH_* */
    uint64_t *fq;                 /* ring of chunks queued by faults (capacity nchunks) */
    uint64_t fq_head, fq_len;
    uint64_t cursor;              /* the background fill's next chunk */
    struct gw_bucket fill_rate;   /* the background fill's pace (rate 0: unlimited) */
    uint64_t fill_next_ns;        /* the fill's debt is paid then: no fill chunk before */
    uint64_t outage_since;        /* first failed read of the current outage, 0 when none */
    bool stop;
    struct gw_instant_progress prog;

    int stop_fd;                  /* eventfd: wakes the fault thread */
    pthread_t fault_thr;
    bool fault_started;
    unsigned nworkers;
    struct worker w[GW_INSTANT_MAX_WORKERS];

    /* Seeing the guest run (the benchmark's first instruction): the heartbeats in its status
     * page as the backup holds them, compared with memory once those pages are in. */
    struct gw_instant_disk *disk; /* the disk's fill, NULL without a disk */
    struct gw_device *disk_dev;   /* the disk device whose hook it is */
    uint64_t status_off;          /* offset of struct gw_guest_status in memory, UINT64_MAX: none */
    uint64_t beat0;               /* under mu */
    bool have_beat0;              /* under mu */
};

const char *gw_instant_phase_name(enum gw_instant_phase ph)
{
    switch (ph) {
    case GW_INSTANT_FILLING: return "filling";
    case GW_INSTANT_STALLED: return "stalled";
    case GW_INSTANT_COMPLETE: return "complete";
    case GW_INSTANT_FAILED: return "failed";
    }
    return "?";
}

static bool chunk_is_zero(const struct gw_instant_restore *ir, uint64_t c) { return ir->im->chunks[c].len != 32; }

static size_t chunk_len(const struct gw_instant_restore *ir, uint64_t c)
{
    uint64_t off = c * ir->cs;
    return ir->im->size - off < ir->cs ? (size_t)(ir->im->size - off) : ir->cs;
}

/* Under mu: the first failure decides and wakes everyone. */
static void fail_locked(struct gw_instant_restore *ir, const char *why)
{
    if (ir->prog.phase == GW_INSTANT_FAILED || ir->prog.phase == GW_INSTANT_COMPLETE) return;
    ir->prog.phase = GW_INSTANT_FAILED;
    snprintf(ir->prog.error, sizeof ir->prog.error, "%s", why);
    pthread_cond_broadcast(&ir->cv);
    gw_error("vm %s: instant restore failed: %s", ir->vm->name, why);
}

static void fail(struct gw_instant_restore *ir, const char *why)
{
    pthread_mutex_lock(&ir->mu);
    fail_locked(ir, why);
    pthread_mutex_unlock(&ir->mu);
}

/* Every non-zero chunk is placed: prove the digest, unregister, and it is an ordinary VM. */
static void complete(struct gw_instant_restore *ir)
{
    uint8_t dg[16];
    pthread_mutex_lock(&ir->cd_mu);
    gw_chunk_digest_final(&ir->cd, dg);
    pthread_mutex_unlock(&ir->cd_mu);
    char hex[33], why[200];
    for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", dg[i]);
    bool equal = !memcmp(dg, ir->man->memory_digest.data, 16);
    /* The zero chunks never placed are holes: once unregistered they read as zero. */
    int r = equal ? gw_uffd_placer_unregister(&ir->u) : 0;
    pthread_mutex_lock(&ir->mu);
    memcpy(ir->prog.digest_hex, hex, sizeof hex);
    ir->prog.digest_ok = equal;
    if (!equal) {
        snprintf(why, sizeof why, "restored memory digest %s differs from the backup's", hex);
        fail_locked(ir, why);
    } else if (r) {
        snprintf(why, sizeof why, "cannot unregister guest memory: %s", strerror(-r));
        fail_locked(ir, why);
    } else if (ir->prog.phase != GW_INSTANT_FAILED) {
        ir->prog.phase = GW_INSTANT_COMPLETE;
        ir->prog.error[0] = 0;
        ir->prog.fill_ns = gw_now_ns() - ir->prog.start_ns;
        gw_info("vm %s: instant restore complete: %llu chunks (%llu faulted) in %.1f ms, digest %s", ir->vm->name,
                (unsigned long long)ir->prog.chunks_placed, (unsigned long long)ir->prog.chunks_faulted,
                ir->prog.fill_ns / 1e6, hex);
    }
    pthread_cond_broadcast(&ir->cv);
    pthread_mutex_unlock(&ir->mu);
    uint64_t one = 1;
    if (write(ir->stop_fd, &one, sizeof one) < 0) {}
}

/* ---- fault thread ---- */

static uint64_t beats(const struct gw_instant_restore *ir, const uint8_t *status)
{
    struct gw_guest_status gs;
    memcpy(&gs, status, sizeof gs);
    uint64_t sum = 0;
    for (unsigned i = 0; i < ir->vm->nvcpus && i < GW_MAX_VCPUS; i++) sum += gs.vcpu[i].heartbeat + gs.vcpu[i].ticks;
    return sum;
}

/* Under mu: chunk c's checked contents (NULL: a zero chunk) hold the status page as backed up. */
static void note_beat0_locked(struct gw_instant_restore *ir, uint64_t c, const uint8_t *raw)
{
    uint64_t off = c * ir->cs, len = chunk_len(ir, c);
    if (ir->have_beat0 || ir->status_off < off || ir->status_off + sizeof(struct gw_guest_status) > off + len) return;
    ir->beat0 = raw ? beats(ir, raw + (ir->status_off - off)) : 0;
    ir->have_beat0 = true;
}

/* True once the guest has run: a vCPU exit, or its heartbeat moved (read only when those
 * pages are in: this thread must never fault on guest memory itself). */
static bool guest_has_run(struct gw_instant_restore *ir)
{
    uint64_t exits = 0;
    for (unsigned i = 0; i < ir->vm->nvcpus; i++) exits += __atomic_load_n(&ir->vm->vcpus[i]->exits, __ATOMIC_RELAXED);
    bool ran = exits != 0;
    pthread_mutex_lock(&ir->mu);
    bool have = ir->have_beat0;
    uint64_t b0 = ir->beat0;
    pthread_mutex_unlock(&ir->mu);
    if (!ran && have && ir->status_off != UINT64_MAX) {
        uint64_t first = ir->status_off / 4096, last = (ir->status_off + sizeof(struct gw_guest_status) - 1) / 4096;
        bool present = true;
        for (uint64_t p = first; p <= last; p++) present = present && gw_uffd_placer_has(&ir->u, p);
        ran = present && beats(ir, ir->vm->mem.base + ir->status_off) != b0;
    }
    if (!ran) return false;
    pthread_mutex_lock(&ir->mu);
    if (!ir->prog.first_run_ns) ir->prog.first_run_ns = gw_now_ns();
    pthread_mutex_unlock(&ir->mu);
    return true;
}

/* A zero chunk the guest touched: placed here (no read), the whole chunk at once. */
static void place_zero_chunk(struct gw_instant_restore *ir, uint64_t c)
{
    uint64_t ppc = ir->cs / 4096;
    int r = gw_uffd_placer_place_run(&ir->u, c * ppc, chunk_len(ir, c) / 4096, NULL);
    pthread_mutex_lock(&ir->mu);
    if (r && ir->prog.phase != GW_INSTANT_COMPLETE) {
        char why[128];
        snprintf(why, sizeof why, "placing zero chunk %llu: %s", (unsigned long long)c, strerror(-r));
        fail_locked(ir, why);
    } else {
        ir->state[c] = CH_DONE;
        ir->prog.zero_chunks_placed++;
        note_beat0_locked(ir, c, NULL);
    }
    pthread_mutex_unlock(&ir->mu);
}

static void *fault_main(void *arg)
{
    struct gw_instant_restore *ir = arg;
    uint64_t pfns[FAULT_BATCH];
    uint64_t ppc = ir->cs / 4096;
    bool seen_run = false;
    for (;;) {
        pthread_mutex_lock(&ir->mu);
        bool done = ir->stop || ir->prog.phase == GW_INSTANT_COMPLETE || ir->prog.phase == GW_INSTANT_FAILED;
        pthread_mutex_unlock(&ir->mu);
        if (done) break;
        /* Until the guest is seen running, look every millisecond (the benchmark's figure). */
        struct pollfd pf[2] = {{.fd = ir->u.uffd, .events = POLLIN}, {.fd = ir->stop_fd, .events = POLLIN}};
        int pr = poll(pf, 2, seen_run ? 200 : 1);
        /* Given up after 10 s: a guest without our status page may never show it. */
        if (!seen_run) seen_run = guest_has_run(ir) || gw_now_ns() - ir->prog.start_ns > 10000000000ull;
        if (pr < 0 && errno != EINTR) { fail(ir, "poll on userfaultfd failed"); break; }
        if (pr <= 0 || !(pf[0].revents & POLLIN)) continue;
        int n = gw_uffd_read_faults(&ir->u, pfns, NULL, FAULT_BATCH);
        if (n < 0) {
            char why[128];
            snprintf(why, sizeof why, "reading page faults: %s", strerror(-n));
            fail(ir, why);
            break;
        }
        uint64_t now = gw_now_ns();
        for (int i = 0; i < n; i++) {
            uint64_t c = pfns[i] / ppc, zero = 0;
            if (c >= ir->nchunks) continue;
            bool first = __atomic_compare_exchange_n(&ir->u.req_ns[pfns[i]], &zero, now, false, __ATOMIC_ACQ_REL,
                                                     __ATOMIC_RELAXED);
            pthread_mutex_lock(&ir->mu);
            if (first) ir->prog.pages_faulted++;
            bool place_zero = false;
            if (ir->state[c] == CH_NONE) {
                if (chunk_is_zero(ir, c)) {
                    ir->state[c] = CH_INFLIGHT;
                    place_zero = true;
                } else {
                    ir->state[c] = CH_QUEUED;
                    ir->fq[(ir->fq_head + ir->fq_len++) % ir->nchunks] = c;
                    ir->prog.chunks_faulted++;
                    pthread_cond_broadcast(&ir->cv);
                }
            }
            pthread_mutex_unlock(&ir->mu);
            if (place_zero) place_zero_chunk(ir, c);
        }
    }
    return NULL;
}

/* ---- fetch workers ---- */

/* Under mu: the next chunk to fetch, faults first; NO_CHUNK when there is none for now. */
static uint64_t take(struct gw_instant_restore *ir, bool faults_only)
{
    while (ir->fq_len) {
        uint64_t c = ir->fq[ir->fq_head];
        ir->fq_head = (ir->fq_head + 1) % ir->nchunks;
        ir->fq_len--;
        if (ir->state[c] == CH_QUEUED) return c;
    }
    if (faults_only) return NO_CHUNK;
    bool paced = ir->fill_rate.rate > 0;   /* unpaced (the default): no clock read per chunk */
    uint64_t now = paced ? gw_now_ns() : 0;
    if (paced && ir->cursor < ir->nchunks && now < ir->fill_next_ns) return FILL_PACED;
    while (ir->cursor < ir->nchunks) {
        uint64_t c = ir->cursor++;
        if (ir->state[c] == CH_NONE && !chunk_is_zero(ir, c)) {
            if (paced) ir->fill_next_ns = now + gw_bucket_take(&ir->fill_rate, (double)chunk_len(ir, c), now);
            return c;
        }
    }
    return NO_CHUNK;
}

/* A page patch (chunk_patch.h): the base, its mid patch if any, and the patch, read one after
 * the other. */
static int fetch_patched(struct gw_backup_target *t, const Godwit__V1__BackupImage *im, uint64_t c, uint8_t *raw,
                         size_t *len, uint64_t *nread, char *why, size_t whylen)
{
    uint64_t off = c * im->chunk_size;
    *len = im->size - off < im->chunk_size ? (size_t)(im->size - off) : im->chunk_size;
    char bad[400];
    int r = gw_patch_fetch(t->store, &t->keys, im->chunks[c].data, im->patches[c].data, im->patch_bases[c].data,
                           gw_manifest_patch_mid(im, c), raw, *len, bad, sizeof bad);
    if (r == -EBADMSG || r == -ENOMEM) {
        snprintf(why, whylen, "chunk number %llu: %s", (unsigned long long)c, bad);
        return GW_FETCH_BAD;
    }
    if (r) {
        snprintf(why, whylen, "%s: chunk number %llu: %s", t->store->desc, (unsigned long long)c, bad);
        return GW_FETCH_UNREACHABLE;
    }
    *nread = *len;   /* about: the base is a whole chunk, the patch a share of one */
    return GW_FETCH_OK;
}

int gw_backup_fetch_chunk(struct gw_backup_target *t, const Godwit__V1__BackupImage *im, uint64_t c, uint8_t *enc,
                          size_t enc_cap, uint8_t *raw, size_t *len, uint64_t *nread, char *why, size_t whylen)
{
    char name[80];
    const uint8_t *hash = im->chunks[c].data;
    gw_chunk_object(hash, name);
    if (gw_manifest_patched(im, c)) return fetch_patched(t, im, c, raw, len, nread, why, whylen);
    struct gw_store_read rd = {.name = name, .buf = enc, .cap = enc_cap};
    int r = t->store->ops->get_batch(t->store, &rd, 1);
    if (!r) r = rd.rc;
    if (r) {
        snprintf(why, whylen, "%s: reading chunk %s (number %llu): %s", t->store->desc, name + 2,
                 (unsigned long long)c, r == -ENOENT ? "missing from the store" : strerror(-r));
        return GW_FETCH_UNREACHABLE;
    }
    *nread = rd.len;
    uint64_t off = c * im->chunk_size;
    *len = im->size - off < im->chunk_size ? (size_t)(im->size - off) : im->chunk_size;
    char bad[256];
    long got = gw_chunk_decode(t->keys.encrypted ? &t->keys : NULL, hash, enc, rd.len, raw, *len, *len, bad, sizeof bad);
    if (got < 0) {
        snprintf(why, whylen, "chunk %s (number %llu): %s", name + 2, (unsigned long long)c, bad);
        return GW_FETCH_BAD;
    }
    return GW_FETCH_OK;
}

/* Reads chunk c, checks it and places it. why gets the reason of anything but FETCH_OK. */
static int fetch_place(struct gw_instant_restore *ir, uint64_t c, uint8_t *enc, uint8_t *raw, uint64_t *nread,
                       char *why, size_t whylen)
{
    size_t len;
    int r = gw_backup_fetch_chunk(&ir->t, ir->im, c, enc, ir->enc_cap, raw, &len, nread, why, whylen);
    if (r) return r;
    uint64_t pfn = c * (ir->cs / 4096);
    /* The digest takes the checked contents before the guest can change them. */
    pthread_mutex_lock(&ir->cd_mu);
    gw_chunk_digest_set_from(&ir->cd, pfn, len / 4096, raw);
    pthread_mutex_unlock(&ir->cd_mu);
    r = gw_uffd_placer_place_run(&ir->u, pfn, len / 4096, raw);
    if (r) {
        snprintf(why, whylen, "placing chunk %llu: %s", (unsigned long long)c, strerror(-r));
        return FETCH_BAD;
    }
    return FETCH_OK;
}

/* Under mu: a read failed; the chunk goes back where it came from and the outage is noted. */
static void unreachable_locked(struct gw_instant_restore *ir, uint64_t c, bool faulted, const char *why)
{
    ir->prog.read_errors++;
    if (faulted) {
        ir->state[c] = CH_QUEUED;
        ir->fq_head = (ir->fq_head + ir->nchunks - 1) % ir->nchunks;   /* to the front: it is waited for */
        ir->fq[ir->fq_head] = c;
        ir->fq_len++;
    } else {
        ir->state[c] = CH_NONE;
        if (c < ir->cursor) ir->cursor = c;
    }
    uint64_t now = gw_now_ns();
    if (!ir->outage_since) {
        ir->outage_since = now;
        gw_warn("vm %s: instant restore: %s; retrying", ir->vm->name, why);
    }
    if (ir->prog.phase == GW_INSTANT_FILLING && now - ir->outage_since >= ir->outage_ms * 1000000ull) {
        ir->prog.phase = GW_INSTANT_STALLED;
        ir->prog.stalls++;
        snprintf(ir->prog.error, sizeof ir->prog.error, "the backup store is unreachable: %s", why);
        gw_warn("vm %s: instant restore stalled for %u ms: %s", ir->vm->name, ir->outage_ms, why);
    }
}

static void reachable_locked(struct gw_instant_restore *ir)
{
    if (!ir->outage_since) return;
    ir->outage_since = 0;
    if (ir->prog.phase == GW_INSTANT_STALLED) {
        ir->prog.phase = GW_INSTANT_FILLING;
        ir->prog.error[0] = 0;
        gw_info("vm %s: instant restore: the store answers again, filling", ir->vm->name);
    }
}

static void wait_ms(struct gw_instant_restore *ir, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&ir->stop_cv, &ir->mu, &ts);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct gw_instant_restore *ir = w->ir;
    uint8_t *enc = malloc(ir->enc_cap), *raw = malloc(ir->cs);
    if (!enc || !raw) { fail(ir, "out of memory"); free(enc); free(raw); return NULL; }
    unsigned backoff = 0;
    char why[512];
    pthread_mutex_lock(&ir->mu);
    for (;;) {
        if (ir->stop || ir->prog.phase == GW_INSTANT_FAILED || ir->prog.phase == GW_INSTANT_COMPLETE) break;
        uint64_t c = take(ir, w->faults_only);
        if (c == FILL_PACED) {
            uint64_t left_ms = (ir->fill_next_ns - gw_now_ns()) / 1000000 + 1;
            wait_ms(ir, left_ms < FILL_PACE_SLICE_MS ? (unsigned)left_ms : FILL_PACE_SLICE_MS);
            continue;
        }
        if (c == NO_CHUNK) {
            if (!w->faults_only && ir->cursor >= ir->nchunks && ir->prog.chunks_placed == ir->prog.chunks_total)
                break;
            pthread_cond_wait(&ir->cv, &ir->mu);
            continue;
        }
        bool faulted = ir->state[c] == CH_QUEUED;
        ir->state[c] = CH_INFLIGHT;
        pthread_mutex_unlock(&ir->mu);
        uint64_t nread = 0;
        int r = fetch_place(ir, c, enc, raw, &nread, why, sizeof why);
        pthread_mutex_lock(&ir->mu);
        if (r == FETCH_BAD) { fail_locked(ir, why); break; }
        if (r == FETCH_UNREACHABLE) {
            unreachable_locked(ir, c, faulted, why);
            pthread_cond_broadcast(&ir->cv);
            backoff = backoff ? (backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2) : BACKOFF_MIN_MS;
            if (!ir->stop) wait_ms(ir, backoff);
            continue;
        }
        backoff = 0;
        reachable_locked(ir);
        note_beat0_locked(ir, c, raw);
        ir->state[c] = CH_DONE;
        ir->prog.chunks_placed++;
        ir->prog.bytes_placed += chunk_len(ir, c);
        ir->prog.bytes_read += nread;
        if (ir->prog.chunks_placed == ir->prog.chunks_total) {
            pthread_mutex_unlock(&ir->mu);
            complete(ir);
            pthread_mutex_lock(&ir->mu);
        }
    }
    pthread_cond_broadcast(&ir->cv);
    pthread_mutex_unlock(&ir->mu);
    free(enc);
    free(raw);
    return NULL;
}

/* ---- life cycle ---- */

static int check_image(const struct gw_instant_restore *ir, const Godwit__V1__BackupManifest *man, char *err,
                       size_t errlen)
{
    if (man->memory->size != ir->vm->mem.size) {
        snprintf(err, errlen, "backup memory is %llu bytes, the VM has %llu", (unsigned long long)man->memory->size,
                 (unsigned long long)ir->vm->mem.size);
        return -EINVAL;
    }
    if (man->encrypted != ir->t.keys.encrypted) {
        snprintf(err, errlen, man->encrypted ? "the backup is encrypted: give its key file"
                                             : "the backup is not encrypted, but a key file was given");
        return -EINVAL;
    }
    /* The digest is kept per 16 KiB; the manifest's own checks made it a power of two. */
    if (man->memory->chunk_size % (GW_CHUNK_DIGEST_PAGES * 4096) || man->memory->size % (GW_CHUNK_DIGEST_PAGES * 4096)) {
        snprintf(err, errlen, "instant restore needs memory chunks of 16 KiB or more (this backup has %u bytes)",
                 man->memory->chunk_size);
        return -EINVAL;
    }
    return 0;
}

static int start_threads(struct gw_instant_restore *ir, char *err, size_t errlen)
{
    int r = -pthread_create(&ir->fault_thr, NULL, fault_main, ir);
    if (r) { snprintf(err, errlen, "cannot start the fault thread: %s", strerror(-r)); return r; }
    ir->fault_started = true;
    for (unsigned i = 0; i < ir->nworkers; i++) {
        /* With more than one worker, the first serves faults only: always free for them. */
        ir->w[i] = (struct worker){.ir = ir, .faults_only = i == 0 && ir->nworkers > 1};
        r = -pthread_create(&ir->w[i].thr, NULL, worker_main, &ir->w[i]);
        if (r) { snprintf(err, errlen, "cannot start a fetch worker: %s", strerror(-r)); return r; }
        ir->w[i].started = true;
    }
    return 0;
}

int gw_instant_restore_start(struct gw_backup_target *t, Godwit__V1__BackupManifest *man, struct gw_vm *vm,
                             const struct gw_instant_params *p, struct gw_instant_restore **out, char *err,
                             size_t errlen)
{
    struct gw_instant_restore *ir = calloc(1, sizeof *ir);
    if (!ir) {
        gw_backup_target_close(t);
        godwit__v1__backup_manifest__free_unpacked(man, NULL);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    ir->t = *t;
    memset(t, 0, sizeof *t);
    ir->man = man;
    ir->im = man->memory;
    ir->vm = vm;
    ir->stop_fd = -1;
    const uint8_t *sp = gw_guest_mem_ptr(&vm->mem, GW_GPA_STATUS, sizeof(struct gw_guest_status));
    ir->status_off = sp ? (uint64_t)(sp - vm->mem.base) : UINT64_MAX;
    ir->prog.start_ns = gw_now_ns();
    pthread_mutex_init(&ir->mu, NULL);
    pthread_mutex_init(&ir->cd_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ir->cv, &ca);
    pthread_cond_init(&ir->stop_cv, &ca);
    pthread_condattr_destroy(&ca);
    unsigned nw = p && p->workers ? p->workers : GW_INSTANT_DEFAULT_WORKERS;
    ir->nworkers = nw > GW_INSTANT_MAX_WORKERS ? GW_INSTANT_MAX_WORKERS : nw;
    ir->outage_ms = p && p->outage_pause_ms ? p->outage_pause_ms : GW_INSTANT_DEFAULT_OUTAGE_MS;
    int r = check_image(ir, man, err, errlen);
    if (r) goto fail;
    ir->cs = ir->im->chunk_size;
    gw_bucket_init(&ir->fill_rate, p ? p->fill_rate : 0, (double)ir->cs, gw_now_ns());
    ir->nchunks = ir->im->n_chunks;
    ir->pages = vm->mem.size / 4096;
    ir->enc_cap = gw_chunk_encoded_cap(ir->cs);
    ir->state = calloc(ir->nchunks ? ir->nchunks : 1, 1);
    ir->fq = calloc(ir->nchunks ? ir->nchunks : 1, sizeof *ir->fq);
    ir->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!ir->state || !ir->fq || ir->stop_fd < 0 || gw_chunk_digest_init(&ir->cd, vm->mem.base, vm->mem.size)) {
        r = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (uint64_t c = 0; c < ir->nchunks; c++) {
        if (chunk_is_zero(ir, c)) continue;
        ir->prog.chunks_total++;
        ir->prog.bytes_total += chunk_len(ir, c);
    }
    struct gw_err e = {0};
    r = gw_uffd_placer_open(&ir->u, vm->mem.base, vm->mem.size, &e);
    if (r) { snprintf(err, errlen, "instant restore needs userfaultfd: %s", e.msg); goto fail; }
    ir->placer_open = true;
    if (man->disk->size && p && p->disk) {
        struct gw_device *dev = gw_bus_find(&vm->bus, "vda");
        if (!dev) { r = -ENODEV; snprintf(err, errlen, "the VM has no disk to restore into"); goto fail; }
        r = gw_instant_disk_start(&ir->t, man->disk, dev, ir->outage_ms, p->fill_rate, &ir->disk, err, errlen);
        if (r) goto fail;
        ir->disk_dev = dev;
        pthread_mutex_lock(&ir->disk_dev->lock);
        r = gw_virtio_blk_set_fill(ir->disk_dev, gw_instant_disk_fill(ir->disk));
        pthread_mutex_unlock(&ir->disk_dev->lock);
        if (r) { snprintf(err, errlen, "the VM's disk cannot be filled behind"); goto fail; }
    }
    if ((r = start_threads(ir, err, errlen))) goto fail;
    if (!ir->prog.chunks_total) complete(ir);
    /* The state loads while memory fills: whatever it touches faults in like the guest. */
    char why[256];
    r = gw_vm_load_state(vm, man->state, why, sizeof why);
    if (r) { snprintf(err, errlen, "the VM state does not load: %s", why); goto fail; }
    *out = ir;
    return 0;
fail:
    fail(ir, err);
    gw_instant_restore_free(ir);
    return r;
}

void gw_instant_restore_progress(struct gw_instant_restore *ir, struct gw_instant_progress *out)
{
    pthread_mutex_lock(&ir->mu);
    *out = ir->prog;
    pthread_mutex_unlock(&ir->mu);
    if (ir->disk) {
        /* One phase for both: complete when both are, failed or stalled when either is. */
        struct gw_instant_disk_progress dp;
        gw_instant_disk_progress(ir->disk, &dp);
        out->disk_chunks_total = dp.chunks_total;
        out->disk_chunks_done = dp.chunks_done;
        out->disk_chunks_demand = dp.chunks_demand;
        out->disk_chunks_overwritten = dp.chunks_overwritten;
        if (dp.failed && out->phase != GW_INSTANT_FAILED) {
            out->phase = GW_INSTANT_FAILED;
            snprintf(out->error, sizeof out->error, "%s", dp.error);
        } else if (dp.stalled && out->phase == GW_INSTANT_FILLING) {
            out->phase = GW_INSTANT_STALLED;
            snprintf(out->error, sizeof out->error, "%s", dp.error);
        } else if (out->phase == GW_INSTANT_COMPLETE && !dp.complete) {
            out->phase = dp.stalled ? GW_INSTANT_STALLED : GW_INSTANT_FILLING;
            snprintf(out->error, sizeof out->error, "%s", dp.stalled ? dp.error : "");
            out->fill_ns = 0;
        } else if (out->phase == GW_INSTANT_COMPLETE && dp.fill_ns > out->fill_ns) {
            out->fill_ns = dp.fill_ns;
        }
    }
    if (ir->placer_open) {
        out->fault_p50_us = gw_uffd_placer_latency_us(&ir->u, 50);
        out->fault_p99_us = gw_uffd_placer_latency_us(&ir->u, 99);
        out->fault_max_us = __atomic_load_n(&ir->u.lat_max_ns, __ATOMIC_RELAXED) / 1000;
    }
}

bool gw_instant_restore_finished(struct gw_instant_restore *ir)
{
    struct gw_instant_progress p;
    gw_instant_restore_progress(ir, &p);
    return p.phase == GW_INSTANT_COMPLETE || p.phase == GW_INSTANT_FAILED;
}

bool gw_instant_restore_readable(struct gw_instant_restore *ir, uint64_t off, uint64_t len)
{
    pthread_mutex_lock(&ir->mu);
    bool complete = ir->prog.phase == GW_INSTANT_COMPLETE;
    pthread_mutex_unlock(&ir->mu);
    if (complete) return true;
    if (!ir->placer_open || !len || !gw_range_ok(off, len, ir->vm->mem.size)) return false;
    for (uint64_t p = off / 4096; p <= (off + len - 1) / 4096; p++)
        if (!gw_uffd_placer_has(&ir->u, p)) return false;
    return true;
}

void gw_instant_restore_free(struct gw_instant_restore *ir)
{
    if (!ir) return;
    pthread_mutex_lock(&ir->mu);
    ir->stop = true;
    bool completed = ir->prog.phase == GW_INSTANT_COMPLETE;
    pthread_cond_broadcast(&ir->cv);
    pthread_cond_broadcast(&ir->stop_cv);
    pthread_mutex_unlock(&ir->mu);
    if (ir->stop_fd >= 0) {
        uint64_t one = 1;
        if (write(ir->stop_fd, &one, sizeof one) < 0) {}
    }
    for (unsigned i = 0; i < ir->nworkers; i++)
        if (ir->w[i].started) pthread_join(ir->w[i].thr, NULL);
    if (ir->fault_started) pthread_join(ir->fault_thr, NULL);
    if (ir->disk) {
        /* A request waiting for a disk block fails now; then the device forgets the hook. */
        gw_instant_disk_stop(ir->disk);
        if (ir->disk_dev) {
            pthread_mutex_lock(&ir->disk_dev->lock);
            gw_virtio_blk_set_fill(ir->disk_dev, (struct gw_blk_fill){0});
            pthread_mutex_unlock(&ir->disk_dev->lock);
        }
        gw_instant_disk_free(ir->disk);
    }
    if (ir->placer_open) {
        /* Short of completion: nothing may read a missing page as zero, and KVM's waiters
         * must end for the VM to be destroyed (docs/postcopy.md). */
        if (!completed) {
            int r = gw_uffd_placer_poison_missing(&ir->u);
            if (r) gw_warn("vm %s: cannot poison the pages never restored: %s", ir->vm->name, strerror(-r));
        }
        gw_uffd_placer_close(&ir->u);
    }
    gw_chunk_digest_free(&ir->cd);
    if (ir->stop_fd >= 0) close(ir->stop_fd);
    free(ir->state);
    free(ir->fq);
    gw_backup_target_close(&ir->t);
    if (ir->man) godwit__v1__backup_manifest__free_unpacked(ir->man, NULL);
    pthread_cond_destroy(&ir->cv);
    pthread_cond_destroy(&ir->stop_cv);
    pthread_mutex_destroy(&ir->mu);
    pthread_mutex_destroy(&ir->cd_mu);
    free(ir);
}
