/* Whole-store walks and guarded removal for both backends (see store_scan.h). */
#include "storage/store_scan.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <rados/librados.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/chunk.h"
#include "storage/store.h"

static int is_hex(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) return 0;
    return 1;
}

/* ---- dir ---- */

/* Digits just before n[end]: how many. */
static size_t digits_before(const char *n, size_t end)
{
    size_t k = end;
    while (k && n[k - 1] >= '0' && n[k - 1] <= '9') k--;
    return end - k;
}

static bool ends_with(const char *n, size_t end, const char *suffix)
{
    size_t l = strlen(suffix);
    return end > l && !memcmp(n + end - l, suffix, l);
}

/* The temporary names this store makes, matched at the end only: NAME.tmp.PID.SEQ (a write
 * before its rename, store_dir.c) and NAME.gc.PID (a chunk the collector set aside). A VM may
 * well be named web.gc.1 or app.tmp.x: its manifests are not temporary, and the collector
 * that skipped them took their chunks for orphans. No name the store keeps ends so: a
 * manifest ends with its backup id (20261202-101010-000123), a chunk with hex digits. */
static bool temp_name(const char *n)
{
    size_t end = strlen(n), d = digits_before(n, end);
    if (!d) return false;
    end -= d;
    if (ends_with(n, end, ".gc.")) return true;
    if (!ends_with(n, end, ".") || !(d = digits_before(n, end - 1))) return false;
    return ends_with(n, end - 1 - d, ".tmp.");
}

static int dir_walk(struct gw_store *s, int dfd, const char *sub, const char *fan, int (*fn)(const char *, void *),
                    void (*skip)(void *, const char *, const char *), void *ctx)
{
    char rel[64];
    snprintf(rel, sizeof rel, fan ? "%s/%s" : "%s", sub, fan);
    int fd = openat(dfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return errno == ENOENT ? 0 : gw_store_fail(s, -errno, "%s/%s: %s", s->desc, rel, strerror(errno));
    DIR *d = fdopendir(fd);
    if (!d) { close(fd); return gw_store_fail(s, -errno, "%s/%s: %s", s->desc, rel, strerror(errno)); }
    int r = 0;
    struct dirent *e;
    char what[400];
    while (!r && (e = readdir(d))) {
        const char *n = e->d_name;
        if (!strcmp(n, ".") || !strcmp(n, "..")) continue;
        snprintf(what, sizeof what, "%s/%s", rel, n);
        bool chunks = !strcmp(sub, "chunks");
        if (chunks && !fan) {
            /* Fan-out directories: two hex digits. */
            if (strlen(n) == 2 && is_hex(n, 2) && e->d_type == DT_DIR) r = dir_walk(s, dfd, sub, n, fn, skip, ctx);
            else if (skip) skip(ctx, what, "not a fan-out directory of the chunk store");
            continue;
        }
        if (e->d_type != DT_REG) { if (skip) skip(ctx, what, "not a regular file"); continue; }
        if (temp_name(n)) { if (skip) skip(ctx, what, "temporary file (a write or collection in progress, or one that crashed)"); continue; }
        if (!gw_store_name_ok(n)) { if (skip) skip(ctx, what, "not a name godwit writes"); continue; }
        if (chunks && (strlen(n) != 2 + GW_CHUNK_NAME_LEN || strncmp(n, "c.", 2) || !is_hex(n + 2, GW_CHUNK_NAME_LEN) ||
                       strncmp(n + 2, fan, 2))) {
            if (skip) skip(ctx, what, "not a chunk name (c.<64 hex digits> in its fan-out directory)");
            continue;
        }
        r = fn(n, ctx);
    }
    closedir(d);
    return r;
}

static int chunk_path(const char *obj, char *buf, size_t cap)
{
    if (!strncmp(obj, "c.", 2) && strlen(obj) > 4) return snprintf(buf, cap, "chunks/%.2s/%s", obj + 2, obj) >= (int)cap;
    return snprintf(buf, cap, "objects/%s", obj) >= (int)cap;
}

static void guard_of(const struct stat *sb, struct gw_obj_guard *g)
{
    g->a = (uint64_t)sb->st_ino;
    g->b = (uint64_t)sb->st_mtim.tv_sec * 1000000000ull + (uint64_t)sb->st_mtim.tv_nsec;
    g->c = (uint64_t)sb->st_size;
}

static int dir_stat_guarded(struct gw_store *s, int dfd, const char *const *names, size_t n, int *rc, uint64_t *size,
                            struct gw_obj_guard *g)
{
    (void)s;
    for (size_t i = 0; i < n; i++) {
        char path[256];
        struct stat sb;
        memset(&g[i], 0, sizeof g[i]);
        size[i] = 0;
        if (!gw_store_name_ok(names[i]) || chunk_path(names[i], path, sizeof path)) { rc[i] = -EINVAL; continue; }
        if (fstatat(dfd, path, &sb, AT_SYMLINK_NOFOLLOW) < 0) { rc[i] = errno == ENOENT ? 0 : -errno; continue; }
        guard_of(&sb, &g[i]);
        size[i] = (uint64_t)sb.st_size;
        rc[i] = 1;
    }
    return 0;
}

/* Rename aside (atomic), compare, then unlink or put back: a backup that wrote the chunk again
 * after the guard was taken made a new file (new inode), which is put back; one that writes it
 * while it is aside simply makes it exist again. */
static int dir_remove_guarded(struct gw_store *s, int dfd, const char *const *names, const struct gw_obj_guard *g,
                              size_t n, int *rc)
{
    for (size_t i = 0; i < n; i++) {
        char path[256], aside[300];
        struct stat sb;
        if (!gw_store_name_ok(names[i]) || chunk_path(names[i], path, sizeof path)) { rc[i] = -EINVAL; continue; }
        snprintf(aside, sizeof aside, "%s.gc.%d", path, (int)getpid());
        if (renameat(dfd, path, dfd, aside) < 0) { rc[i] = errno == ENOENT ? 0 : -errno; continue; }
        struct gw_obj_guard now;
        if (fstatat(dfd, aside, &sb, AT_SYMLINK_NOFOLLOW) < 0) { rc[i] = -errno; continue; }
        guard_of(&sb, &now);
        if (!memcmp(&now, &g[i], sizeof now)) {
            rc[i] = unlinkat(dfd, aside, 0) < 0 ? -errno : 1;
            continue;
        }
        rc[i] = 0;
        if (renameat2(dfd, aside, dfd, path, RENAME_NOREPLACE) < 0) {
            if (errno == EEXIST) unlinkat(dfd, aside, 0);   /* a newer copy is in place already */
            else rc[i] = gw_store_fail(s, -errno, "%s: putting %s back: %s", s->desc, path, strerror(errno));
        }
    }
    return 0;
}

/* ---- rados ---- */

static int rados_scan(struct gw_store *s, rados_ioctx_t io, int (*fn)(const char *, void *),
                      void (*skip)(void *, const char *, const char *), void *ctx)
{
    rados_list_ctx_t lc;
    int r = rados_nobjects_list_open(io, &lc);
    if (r < 0) return gw_store_fail_op(s, r, "listing", "the objects");
    for (;;) {
        const char *entry = NULL, *key = NULL, *nspace = NULL;
        size_t elen = 0, klen = 0, nlen = 0;
        r = rados_nobjects_list_next2(lc, &entry, &key, &nspace, &elen, &klen, &nlen);
        if (r == -ENOENT) { r = 0; break; }
        if (r < 0) { r = gw_store_fail_op(s, r, "listing", "the objects"); break; }
        char name[128];
        if (elen == 0 || elen >= sizeof name || memchr(entry, 0, elen)) {
            if (skip) {
                char shown[64];
                snprintf(shown, sizeof shown, "%.*s", (int)(elen < 40 ? elen : 40), entry);
                skip(ctx, shown, "not a name godwit writes (length or NUL)");
            }
            continue;
        }
        memcpy(name, entry, elen);
        name[elen] = 0;
        if (!strncmp(name, "i.", 2) || !strncmp(name, "l.", 2)) continue;   /* indexes, leases */
        if (!gw_store_name_ok(name)) { if (skip) skip(ctx, name, "not a name godwit writes"); continue; }
        if ((r = fn(name, ctx))) break;
    }
    rados_nobjects_list_close(lc);
    return r;
}

static int rados_stat_guarded(struct gw_store *s, rados_ioctx_t io, const char *const *names, size_t n, int *rc,
                              uint64_t *size, struct gw_obj_guard *g)
{
    uint64_t *version = malloc((n ? n : 1) * sizeof *version);
    if (!version) return gw_store_fail(s, -ENOMEM, "%s: out of memory", s->desc);
    gw_store_rados_stat_batch(io, names, n, rc, size, version);
    for (size_t i = 0; i < n; i++) g[i] = (struct gw_obj_guard){.a = version[i]};   /* the object's version */
    free(version);
    return 0;
}

static int rados_remove_guarded(struct gw_store *s, rados_ioctx_t io, const char *const *names,
                                const struct gw_obj_guard *g, size_t n, int *rc)
{
    (void)s;
    enum { BATCH = 64 };
    rados_completion_t comp[BATCH];
    rados_write_op_t op[BATCH];
    for (size_t base = 0; base < n; base += BATCH) {
        size_t k = n - base < BATCH ? n - base : BATCH;
        for (size_t i = 0; i < k; i++) {
            comp[i] = NULL;
            op[i] = rados_create_write_op();
            int r = op[i] ? rados_aio_create_completion2(NULL, NULL, &comp[i]) : -ENOMEM;
            if (!r) {
                /* Removed only if nobody wrote it since the guard was taken. */
                rados_write_op_assert_version(op[i], g[base + i].a);
                rados_write_op_remove(op[i]);
                r = rados_aio_write_op_operate(op[i], io, comp[i], names[base + i], NULL, LIBRADOS_OPERATION_FULL_TRY);
            }
            rc[base + i] = r;
            if (r && comp[i]) { rados_aio_release(comp[i]); comp[i] = NULL; }
        }
        for (size_t i = 0; i < k; i++) {
            if (comp[i]) {
                rados_aio_wait_for_complete(comp[i]);
                int r = rados_aio_get_return_value(comp[i]);
                rados_aio_release(comp[i]);
                rc[base + i] = r == 0 ? 1 : (r == -ERANGE || r == -EOVERFLOW || r == -ENOENT) ? 0 : r;
            }
            if (op[i]) rados_release_write_op(op[i]);
        }
    }
    return 0;
}

int gw_store_scan(struct gw_store *s, unsigned flags, int (*fn)(const char *, void *),
                  void (*skip)(void *, const char *, const char *), void *ctx)
{
    int dfd = gw_store_dir_fd(s);
    if (dfd >= 0) {
        int r = dir_walk(s, dfd, "objects", NULL, fn, skip, ctx);
        return r || (flags & GW_SCAN_MANIFESTS) ? r : dir_walk(s, dfd, "chunks", NULL, fn, skip, ctx);
    }
    rados_ioctx_t io = gw_store_rados_ioctx(s);
    if (io) return rados_scan(s, io, fn, skip, ctx);
    return gw_store_fail(s, -EOPNOTSUPP, "%s: cannot be walked", s->desc);
}

int gw_store_stat_guarded(struct gw_store *s, const char *const *names, size_t n, int *rc, uint64_t *size,
                          struct gw_obj_guard *g)
{
    int dfd = gw_store_dir_fd(s);
    if (dfd >= 0) return dir_stat_guarded(s, dfd, names, n, rc, size, g);
    rados_ioctx_t io = gw_store_rados_ioctx(s);
    if (io) return rados_stat_guarded(s, io, names, n, rc, size, g);
    return gw_store_fail(s, -EOPNOTSUPP, "%s: no guarded lookups", s->desc);
}

int gw_store_remove_guarded(struct gw_store *s, const char *const *names, const struct gw_obj_guard *g, size_t n,
                            int *rc)
{
    int dfd = gw_store_dir_fd(s);
    if (dfd >= 0) return dir_remove_guarded(s, dfd, names, g, n, rc);
    rados_ioctx_t io = gw_store_rados_ioctx(s);
    if (io) return rados_remove_guarded(s, io, names, g, n, rc);
    return gw_store_fail(s, -EOPNOTSUPP, "%s: no guarded removal", s->desc);
}
