/* Making a backup of a running VM (see backup.h for the method and its guarantees). */
#include "backup/backup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/dirty/dirty.h"
#include "engine/vm/chunk_digest.h"
#include "engine/vm/mem_data.h"
#include "engine/vm/virtio_attach.h"
#include "engine/vm/vm.h"
#include "backup/wp_snapshot.h"
#include "storage/chunk_sink.h"
#include "storage/gc.h"
#include "storage/manifest.h"
#include "storage/store.h"

struct bk {
    struct gw_vm *vm;
    struct gw_backup_target *t;
    uint32_t cs;
    uint64_t nchunks;
    uint8_t (*names)[32];       /* memory chunk names; all zero = a zero chunk */
    uint8_t *has_data;          /* per chunk: holds data in the memfd */
    struct gw_chunk_sink sink;
    struct gw_chunk_digest cd;
    bool cd_ready;
    struct gw_dirty_consumer *dirty;
    uint64_t *pending;          /* pages dirtied and not yet re-stored */
    uint64_t words;
    uint8_t *cbuf;              /* one chunk */
    uint64_t *fpfns;            /* pages taken inside the final pause */
    uint8_t *fpages;
    uint64_t nfp;
    uint8_t *disk;              /* disk image read inside the pause */
    uint64_t disk_size;
    uint64_t pause_ns;
    unsigned rounds;
    struct gw_wp_snapshot *wp;
    struct gw_wp_stats wp_stats;
    struct gw_gc_guard *guard;  /* registered with the collector for the whole backup */
    char *err;
    size_t errlen;
};

static int fail(struct bk *b, int rc, const char *fmt, const char *detail)
{
    snprintf(b->err, b->errlen, fmt, detail);
    return rc;
}

static uint64_t chunk_len(const struct bk *b, uint64_t i, uint64_t size)
{
    uint64_t off = i * b->cs;
    return size - off < b->cs ? size - off : b->cs;
}

static int note_data(uint64_t off, uint64_t len, void *ctx)
{
    struct bk *b = ctx;
    for (uint64_t c = off / b->cs; c <= (off + len - 1) / b->cs; c++) b->has_data[c] = 1;
    if (!b->wp) gw_chunk_digest_mark(&b->cd, off / GW_PAGE_SIZE, len / GW_PAGE_SIZE);
    return 0;
}

/* Which chunks hold data at all (holes are zero chunks, never read). */
static int map_data(struct bk *b)
{
    memset(b->has_data, 0, b->nchunks);
    int r = gw_mem_for_each_data(&b->vm->mem, note_data, b);
    return r ? fail(b, r, "scanning guest memory: %s", strerror(-r)) : 0;
}

static int put_mem_chunk(struct bk *b, uint64_t i, const uint8_t *data)
{
    bool zero;
    int r = gw_chunk_sink_put(&b->sink, data, chunk_len(b, i, b->vm->mem.size), b->names[i], &zero);
    if (r) return fail(b, r, "%s", gw_store_error(b->t->store));
    return 0;
}

/* Round 0: every chunk that holds data. */
static int copy_all(struct bk *b)
{
    int r = map_data(b);
    if (r) return r;
    for (uint64_t i = 0; i < b->nchunks; i++) {
        if (!b->has_data[i]) { memset(b->names[i], 0, 32); b->sink.chunks++; b->sink.zero_chunks++; continue; }
        if ((r = put_mem_chunk(b, i, b->vm->mem.base + i * b->cs))) return r;
    }
    return 0;
}

static bool chunk_pending(const struct bk *b, uint64_t i)
{
    uint64_t p0 = i * b->cs / GW_PAGE_SIZE, p1 = (i * b->cs + chunk_len(b, i, b->vm->mem.size)) / GW_PAGE_SIZE;
    for (uint64_t p = p0; p < p1; p += 64 - (p % 64)) {
        uint64_t w = b->pending[p / 64];
        if (p % 64) w >>= p % 64;
        if (w) return true;
    }
    return false;
}

static void fold_fetch(struct bk *b)
{
    for (uint64_t w = 0; w < b->words; w++) b->pending[w] |= b->dirty->bitmap[w];
}

/* Rounds 1..n over the dirty log while the guest runs; returns when little is left. */
static int dirty_rounds(struct bk *b, unsigned max_rounds)
{
    for (unsigned round = 1; round <= max_rounds; round++) {
        uint64_t count;
        int r = gw_dirty_fetch(b->dirty, &count);
        if (r) return fail(b, r, "reading the dirty log: %s", strerror(-r));
        fold_fetch(b);
        uint64_t npend = 0, nchunks = 0, ndata = 0;
        for (uint64_t w = 0; w < b->words; w++) npend += (uint64_t)__builtin_popcountll(b->pending[w]);
        for (uint64_t i = 0; i < b->nchunks; i++) { nchunks += chunk_pending(b, i); ndata += b->has_data[i]; }
        /* Few pages left: their copies in the pause cost less than another round. Writes
         * spread over more than a quarter of the chunks: another round would rewrite them
         * all and find as many again, so it cannot converge. */
        if (npend * GW_PAGE_SIZE <= 4ull * b->cs || nchunks * 4 > ndata || round == max_rounds) break;
        r = gw_dirty_clear(b->dirty, 0, b->dirty->npages);
        if (r) return fail(b, r, "clearing the dirty log: %s", strerror(-r));
        b->rounds = round;
        for (uint64_t i = 0; i < b->nchunks; i++) {
            if (!chunk_pending(b, i)) continue;
            if ((r = put_mem_chunk(b, i, b->vm->mem.base + i * b->cs))) return r;
        }
        gw_chunk_digest_mark_bitmap(&b->cd, b->pending, b->words, 1);
        gw_chunk_digest_refresh(&b->cd);
    }
    return 0;
}

static int read_disk(struct bk *b)
{
    b->disk_size = 0;
    if (!b->vm->disk_path[0]) return 0;
    int fd = open(b->vm->disk_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(b, -errno, "cannot read the disk image: %s", strerror(errno));
    struct stat sb;
    int r = fstat(fd, &sb) < 0 ? -errno : 0;
    if (!r && (uint64_t)sb.st_size > GW_BACKUP_MAX_PAUSE_DISK) r = -EFBIG;
    if (!r && !(b->disk = malloc(sb.st_size ? (size_t)sb.st_size : 1))) r = -ENOMEM;
    if (!r) r = gw_pread_full(fd, b->disk, (size_t)sb.st_size, 0);
    close(fd);
    if (r) return fail(b, r, "reading the disk image: %s", r == -EFBIG ? "larger than the 1 GiB a pause may read" : strerror(-r));
    b->disk_size = (uint64_t)sb.st_size;
    return 0;
}

/* The pause: last dirty pages to a side buffer, digest, state, disk image. */
static int take_point_in_time(struct bk *b, enum gw_backup_method method, Godwit__V1__VmState **st, uint8_t digest[16])
{
    struct gw_vm *vm = b->vm;
    bool was_paused = gw_vm_is_paused(vm);
    gw_vm_flush_devices(vm);   /* while the guest runs: the pause then has little to flush */
    if (method == GW_BACKUP_WP) {
        int ar = gw_wp_arm(b->wp);
        if (ar) return fail(b, ar, "cannot write-protect guest memory: %s", strerror(-ar));
    }
    uint64_t t0 = gw_now_ns();
    int r = gw_vm_pause(vm);
    if (r) return fail(b, r, "cannot pause the VM: %s", strerror(-r));
    uint64_t t_paused = gw_now_ns(), t_mem = 0, t_state = 0;
    if (method == GW_BACKUP_PAUSE) {
        r = copy_all(b);
    } else if (method == GW_BACKUP_WP) {
        /* The data map is taken after the pause (wp_copy): holes only ever fill, and a hole
         * the guest fills after the point in time faults like any page, so its copy is zeros. */
        t_mem = gw_now_ns();
        if ((r = gw_wp_freeze(b->wp))) fail(b, r, "cannot write-protect guest memory: %s", strerror(-r));
    } else {
        uint64_t count;
        r = gw_dirty_fetch(b->dirty, &count);
        if (r) fail(b, r, "reading the dirty log: %s", strerror(-r));
        else {
            fold_fetch(b);
            uint64_t n = 0;
            for (uint64_t w = 0; w < b->words; w++) n += (uint64_t)__builtin_popcountll(b->pending[w]);
            b->fpfns = malloc((n ? n : 1) * sizeof *b->fpfns);
            b->fpages = malloc((n ? n : 1) * GW_PAGE_SIZE);
            if (!b->fpfns || !b->fpages) r = fail(b, -ENOMEM, "out of memory%s", "");
            for (uint64_t w = 0; !r && w < b->words; w++) {
                for (uint64_t bits = b->pending[w]; bits; bits &= bits - 1) {
                    uint64_t pfn = w * 64 + (uint64_t)__builtin_ctzll(bits);
                    memcpy(b->fpages + b->nfp * GW_PAGE_SIZE, vm->mem.base + pfn * GW_PAGE_SIZE, GW_PAGE_SIZE);
                    b->fpfns[b->nfp++] = pfn;
                }
            }
            gw_chunk_digest_mark_bitmap(&b->cd, b->pending, b->words, 0);
        }
    }
    if (!r && method != GW_BACKUP_WP) gw_chunk_digest_final(&b->cd, digest);
    if (!r && (r = gw_vm_save_state(vm, st))) fail(b, r, "cannot read the VM state: %s", strerror(-r));
    t_state = gw_now_ns();
    if (!r) r = read_disk(b);
    uint64_t t_disk = gw_now_ns();
    if (!was_paused) gw_vm_resume(vm);
    b->pause_ns = gw_now_ns() - t0;
    gw_debug("backup pause: stop vCPUs %.2f ms, memory %.2f ms, protect and state %.2f ms, disk %.2f ms, total %.2f ms",
             (t_paused - t0) / 1e6, t_mem ? (t_mem - t_paused) / 1e6 : 0.0, (t_state - (t_mem ? t_mem : t_paused)) / 1e6,
             (t_disk - t_state) / 1e6, b->pause_ns / 1e6);
    return r;
}

/* Write-protect: every chunk as it was at the point in time, read while the guest runs. */
static int put_batch(struct bk *b, uint8_t *bufs, const uint64_t *idx, size_t n)
{
    const uint8_t *data[GW_CHUNK_SINK_BATCH] = {0};
    size_t len[GW_CHUNK_SINK_BATCH] = {0};
    uint8_t hash[GW_CHUNK_SINK_BATCH][32];
    bool zero[GW_CHUNK_SINK_BATCH];
    for (size_t k = 0; k < n; k++) { data[k] = bufs + k * b->cs; len[k] = chunk_len(b, idx[k], b->vm->mem.size); }
    int r = gw_chunk_sink_put_many(&b->sink, data, len, n, true, hash, zero);
    if (r) return fail(b, r, "%s", gw_store_error(b->t->store));
    for (size_t k = 0; k < n; k++) memcpy(b->names[idx[k]], hash[k], 32);
    return 0;
}

static int wp_copy(struct bk *b, uint8_t digest[16])
{
    int r = map_data(b);
    if (r) return r;
    uint8_t *bufs = malloc((size_t)GW_CHUNK_SINK_BATCH * b->cs);
    if (!bufs) return fail(b, -ENOMEM, "out of memory%s", "");
    uint64_t idx[GW_CHUNK_SINK_BATCH];
    size_t n = 0;
    for (uint64_t i = 0; i < b->nchunks && !r; i++) {
        uint64_t off = i * b->cs, len = chunk_len(b, i, b->vm->mem.size);
        if (!b->has_data[i]) {
            memset(b->names[i], 0, 32);
            continue;
        }
        uint8_t *buf = bufs + n * b->cs;
        r = gw_wp_read(b->wp, off, len, buf);
        if (r) {
            char why[160];
            gw_wp_failed(b->wp, why, sizeof why);
            fail(b, r, "live snapshot failed: %s", why);
            break;
        }
        gw_chunk_digest_set_from(&b->cd, off / GW_PAGE_SIZE, len / GW_PAGE_SIZE, buf);
        idx[n++] = i;
        if (n == GW_CHUNK_SINK_BATCH) { r = put_batch(b, bufs, idx, n); n = 0; }
    }
    if (!r && n) r = put_batch(b, bufs, idx, n);
    free(bufs);
    if (!r) gw_chunk_digest_final(&b->cd, digest);
    return r;
}

/* After the pause: chunks touched by the last pages, rebuilt from their stored version. */
static int rebuild_final_chunks(struct bk *b)
{
    int r = b->t->store->ops->wait(b->t->store);  /* earlier versions must be readable */
    if (r) return fail(b, r, "%s", gw_store_error(b->t->store));
    uint64_t pages_per_chunk = b->cs / GW_PAGE_SIZE;
    for (uint64_t k = 0; k < b->nfp;) {
        uint64_t i = b->fpfns[k] / pages_per_chunk, len = chunk_len(b, i, b->vm->mem.size);
        static const uint8_t zero[32];
        if (!memcmp(b->names[i], zero, 32)) memset(b->cbuf, 0, len);
        else {
            char why[256];
            r = gw_chunk_fetch(b->t->store, &b->t->keys, b->names[i], b->cbuf, len, why, sizeof why);
            if (r) return fail(b, r, "re-reading a chunk to finish it: %s", why);
        }
        for (; k < b->nfp && b->fpfns[k] / pages_per_chunk == i; k++)
            memcpy(b->cbuf + (b->fpfns[k] % pages_per_chunk) * GW_PAGE_SIZE, b->fpages + k * GW_PAGE_SIZE, GW_PAGE_SIZE);
        if ((r = put_mem_chunk(b, i, b->cbuf))) return r;
    }
    return 0;
}

static void make_id(char *id)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%04d%02d%02d-%02d%02d%02d-%06ld", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000);
    snprintf(id, GW_BACKUP_ID_BUF, "%.40s", tmp);
}

static void seed_known(struct bk *b, const Godwit__V1__BackupImage *im)
{
    for (size_t i = 0; im && i < im->n_chunks; i++)
        if (im->chunks[i].len == 32 && !gw_gc_guard_distrusts(b->sink.guard, im->chunks[i].data))
            gw_chunk_sink_know(&b->sink, im->chunks[i].data);
}

static int write_manifest(struct bk *b, Godwit__V1__BackupManifest *m, struct gw_backup_result *res)
{
    struct gw_store *s = b->t->store;
    uint8_t *buf;
    size_t len;
    char obj[160], index[160], val[256];
    int r = gw_manifest_pack(m, &buf, &len);
    if (r) return fail(b, r, "out of memory%s", "");
    if (len > GW_MANIFEST_MAX) { free(buf); return fail(b, -EFBIG, "manifest too large%s", ""); }
    r = gw_manifest_object(m->vm_name, m->id, obj, sizeof obj);
    if (!r) r = gw_backup_index_name(m->vm_name, index, sizeof index);
    if (r) { free(buf); return fail(b, r, "VM name '%s' cannot name a backup", m->vm_name); }
    /* Every chunk durable first, then the manifest, then the index entry that lists it; and
     * only while this backup's lease still keeps the collector off its chunks. */
    r = s->ops->wait(s);
    if (!r && (r = gw_gc_guard_check(b->guard, b->err, b->errlen))) { free(buf); return r; }
    if (!r) r = s->ops->put(s, obj, buf, len);
    if (!r) r = s->ops->wait(s);
    free(buf);
    if (r) return fail(b, r, "%s", gw_store_error(s));
    snprintf(val, sizeof val, "parent=%s memory=%llu disk=%llu new_bytes=%llu", m->parent[0] ? m->parent : "-",
             (unsigned long long)m->memory->size, (unsigned long long)m->disk->size, (unsigned long long)m->new_bytes);
    r = s->ops->index_set(s, index, m->id, val);
    if (r) return fail(b, r, "%s", gw_store_error(s));
    res->pb.new_bytes += len;
    return 0;
}

int gw_backup_create(struct gw_vm *vm, struct gw_backup_target *t, const struct gw_backup_params *p,
                     struct gw_backup_result *res, char *err, size_t errlen)
{
    uint64_t t0 = gw_now_ns();
    memset(res, 0, sizeof *res);
    godwit__v1__runner_backup_result__init(&res->pb);
    struct bk b = {.vm = vm, .t = t, .err = err, .errlen = errlen};
    b.cs = p->chunk_size ? p->chunk_size : GW_BACKUP_CHUNK_SIZE;
    if (b.cs < 4096 || b.cs > GW_CHUNK_MAX || (b.cs & (b.cs - 1))) { snprintf(err, errlen, "chunk size must be a power of two in 4 KiB..16 MiB"); return -EINVAL; }
    if (!gw_store_name_ok(vm->name)) { snprintf(err, errlen, "VM name '%s' cannot name a backup", vm->name); return -EINVAL; }
    b.nchunks = (vm->mem.size + b.cs - 1) / b.cs;
    b.words = (vm->mem.size / GW_PAGE_SIZE + 63) / 64;
    Godwit__V1__BackupManifest *parent = NULL;
    Godwit__V1__VmState *st = NULL;
    char parent_id[GW_BACKUP_ID_BUF] = "";
    int r = 0;
    if (!p->parent || !*p->parent) {
        if (gw_backup_latest(t, vm->name, parent_id)) parent_id[0] = 0;
    } else if (strcmp(p->parent, "none")) {
        snprintf(parent_id, sizeof parent_id, "%s", p->parent);
    }
    /* Before the parent's chunk list or any lookup: the collector must know we are here. */
    if ((r = gw_gc_guard_enter(t->store, vm->name, &b.guard, err, errlen))) return r;
    if (parent_id[0] && (r = gw_manifest_load(t->store, vm->name, parent_id, &parent, err, errlen))) {
        gw_gc_guard_leave(b.guard);
        return r;
    }

    b.names = calloc(b.nchunks, 32);
    b.has_data = calloc(b.nchunks, 1);
    b.pending = calloc(b.words, 8);
    b.cbuf = malloc(b.cs);
    if (!b.names || !b.has_data || !b.pending || !b.cbuf) { r = fail(&b, -ENOMEM, "out of memory%s", ""); goto out; }
    if ((r = gw_chunk_sink_init(&b.sink, t->store, &t->keys, b.cs, true))) { fail(&b, r, "out of memory%s", ""); goto out; }
    b.sink.guard = b.guard;
    if ((r = gw_chunk_digest_init(&b.cd, vm->mem.base, vm->mem.size))) { fail(&b, r, "digest: %s", strerror(-r)); goto out; }
    b.cd_ready = true;
    if (parent) { seed_known(&b, parent->memory); seed_known(&b, parent->disk); }

    uint8_t digest[16];
    enum gw_backup_method method = p->method;
    if (method == GW_BACKUP_WP) {
        char why[256];
        /* The side buffer holds pages the guest rewrites before we read them: a quarter of RAM. */
        r = gw_wp_open(vm->mem.base, vm->mem.size, vm->mem.size / 4, &b.wp, why, sizeof why);
        if (r) { gw_warn("backup: %s: using dirty-log rounds", why); method = GW_BACKUP_DIRTY_LOG; r = 0; }
    }
    if (method == GW_BACKUP_DIRTY_LOG) {
        /* A consumer of its own: a migration may track the same VM at the same time, and
         * device writes reach every consumer through the tracker. */
        char why[200] = "";
        r = gw_dirty_attach(vm, GW_DIRTY_KVM_BITMAP, &b.dirty, why, sizeof why);
        if (r) { gw_warn("backup: dirty logging unavailable (%s): pausing for the copy", why[0] ? why : strerror(-r)); method = GW_BACKUP_PAUSE; r = 0; }
    }
    if (method == GW_BACKUP_DIRTY_LOG) {
        r = copy_all(&b);
        if (!r) { gw_chunk_digest_refresh(&b.cd); r = dirty_rounds(&b, p->max_rounds ? p->max_rounds : GW_BACKUP_MAX_ROUNDS); }
    }
    if (!r) r = take_point_in_time(&b, method, &st, digest);
    gw_dirty_detach(b.dirty);
    b.dirty = NULL;
    if (!r && method == GW_BACKUP_DIRTY_LOG) r = rebuild_final_chunks(&b);
    if (!r && method == GW_BACKUP_WP) r = wp_copy(&b, digest);
    if (b.wp) { gw_wp_close(b.wp, &b.wp_stats); b.wp = NULL; }
    if (r) goto out;

    /* The disk image, read inside the pause. */
    uint64_t dchunks = (b.disk_size + b.cs - 1) / b.cs;
    ProtobufCBinaryData *mem_list = calloc(b.nchunks, sizeof *mem_list);
    ProtobufCBinaryData *disk_list = calloc(dchunks ? dchunks : 1, sizeof *disk_list);
    uint8_t (*dnames)[32] = calloc(dchunks ? dchunks : 1, 32);
    if (!mem_list || !disk_list || !dnames) { r = fail(&b, -ENOMEM, "out of memory%s", ""); goto out_lists; }
    for (uint64_t i = 0; i < dchunks && !r; i++) {
        bool zero;
        uint64_t len = b.disk_size - i * b.cs < b.cs ? b.disk_size - i * b.cs : b.cs;
        r = gw_chunk_sink_put(&b.sink, b.disk + i * b.cs, len, dnames[i], &zero);
        if (r) fail(&b, r, "%s", gw_store_error(t->store));
        disk_list[i].data = dnames[i];
        disk_list[i].len = zero ? 0 : 32;
    }
    static const uint8_t zero32[32];
    uint64_t zero_count = 0;
    for (uint64_t i = 0; i < b.nchunks; i++) {
        mem_list[i].data = b.names[i];
        mem_list[i].len = memcmp(b.names[i], zero32, 32) ? 32 : 0;
        zero_count += mem_list[i].len == 0;
    }
    for (uint64_t i = 0; i < dchunks; i++) zero_count += disk_list[i].len == 0;
    if (r) goto out_lists;

    make_id(res->id);
    Godwit__V1__BackupManifest m = GODWIT__V1__BACKUP_MANIFEST__INIT;
    Godwit__V1__BackupImage mi = GODWIT__V1__BACKUP_IMAGE__INIT, di = GODWIT__V1__BACKUP_IMAGE__INIT;
    mi.size = vm->mem.size;
    mi.chunk_size = b.cs;
    mi.n_chunks = b.nchunks;
    mi.chunks = mem_list;
    di.size = b.disk_size;
    di.chunk_size = b.disk_size ? b.cs : 0;
    di.n_chunks = dchunks;
    di.chunks = disk_list;
    m.format_version = GW_MANIFEST_VERSION;
    m.id = res->id;
    m.vm_name = vm->name;
    m.created_unix_ns = gw_wall_ns();
    m.parent = parent_id;
    m.state = st;
    m.memory = &mi;
    m.disk = &di;
    m.memory_digest.data = digest;
    m.memory_digest.len = 16;
    m.encrypted = t->keys.encrypted;
    m.new_bytes = b.sink.new_bytes;
    m.reused_chunks = b.sink.reused_chunks;
    m.pause_ns = b.pause_ns;
    m.method = method == GW_BACKUP_WP ? "wp" : method == GW_BACKUP_PAUSE ? "pause" : "dirty-log";
    res->pb.new_bytes = b.sink.new_bytes;
    r = write_manifest(&b, &m, res);
    if (r) goto out_lists;

    for (int i = 0; i < 16; i++) snprintf(res->digest_hex + 2 * i, 3, "%02x", digest[i]);
    res->pb.id = res->id;
    res->pb.memory_bytes = vm->mem.size;
    res->pb.disk_bytes = b.disk_size;
    res->pb.chunks = b.nchunks + dchunks;
    res->pb.new_chunks = b.sink.new_chunks;
    res->pb.reused_chunks = b.sink.reused_chunks;
    res->pb.zero_chunks = zero_count;
    res->pb.pause_ns = b.pause_ns;
    res->pb.elapsed_ns = gw_now_ns() - t0;
    res->pb.memory_digest = res->digest_hex;
    res->pb.rounds = b.rounds;
    res->pb.method = (char *)m.method;
    gw_info("vm %s: %s backup %s to %s: %llu chunks, %llu new (%llu KiB), %llu reused, pause %.2f ms, %.0f ms; "
            "wp faults %llu, pages copied %llu", vm->name, m.method,
            res->id, t->store->desc, (unsigned long long)res->pb.chunks, (unsigned long long)b.sink.new_chunks,
            (unsigned long long)(res->pb.new_bytes >> 10), (unsigned long long)b.sink.reused_chunks, b.pause_ns / 1e6,
            res->pb.elapsed_ns / 1e6, (unsigned long long)b.wp_stats.faults, (unsigned long long)b.wp_stats.pages_copied);
out_lists:
    free(mem_list);
    free(disk_list);
    free(dnames);
out:
    if (b.wp) gw_wp_close(b.wp, NULL);   /* never leave the guest write-protected */
    gw_dirty_detach(b.dirty);
    if (r) gw_error("vm %s: backup to %s failed: %s", vm->name, t->store->desc, err);
    if (r) t->store->ops->wait(t->store);  /* nothing of ours stays in flight */
    if (b.cd_ready) gw_chunk_digest_free(&b.cd);
    gw_chunk_sink_free(&b.sink);
    gw_gc_guard_leave(b.guard);
    gw_vm_state_free(st);
    if (parent) godwit__v1__backup_manifest__free_unpacked(parent, NULL);
    free(b.names);
    free(b.has_data);
    free(b.pending);
    free(b.cbuf);
    free(b.fpfns);
    free(b.fpages);
    free(b.disk);
    return r;
}
