/* The runner's record of what changed since the last backup (backup_since.h). */
#include "backup/backup_since.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/dirty/dirty.h"
#include "engine/vm/vm.h"
#include "storage/store.h"

static void since_free(void *ctx)
{
    struct gw_backup_since *s = ctx;
    if (!s) return;
    gw_dirty_detach(s->dirty);
    if (s->cd_valid) gw_chunk_digest_free(&s->cd);
    free(s->changed);
    free(s);
}

/* ---- carried with the VM's state (VmState.backup_since) ---- */

struct saved {
    Godwit__V1__BackupSinceState pb;
    uint8_t *changed, *hashes;
};

static int since_save(void *ctx, Godwit__V1__VmState *st)
{
    struct gw_backup_since *s = ctx;
    gw_backup_since_take(s);   /* the VM is paused: everything written so far is in */
    if (!s->base_id[0] || !s->dirty) return 0;
    struct saved *v = calloc(1, sizeof *v);
    size_t clen = s->words * 8, hlen = s->cd_valid ? s->cd.nchunks * 16 : 0;
    if (!v || !(v->changed = malloc(clen ? clen : 1)) || (hlen && !(v->hashes = malloc(hlen)))) {
        if (v) free(v->changed);
        free(v);
        return -ENOMEM;
    }
    godwit__v1__backup_since_state__init(&v->pb);
    for (uint64_t w = 0; w < s->words; w++)
        for (int k = 0; k < 8; k++) v->changed[w * 8 + k] = (uint8_t)(s->changed[w] >> (8 * k));
    for (uint64_t i = 0; i < hlen / 8; i++)
        for (int k = 0; k < 8; k++) v->hashes[i * 8 + k] = (uint8_t)(s->cd.hashes[i] >> (8 * k));
    v->pb.changed.data = v->changed;
    v->pb.changed.len = clen;
    v->pb.digest_hashes.data = v->hashes;
    v->pb.digest_hashes.len = hlen;
    v->pb.base_id = s->base_id;
    v->pb.base_store = s->base_store;
    v->pb.base_vm = s->base_vm;
    st->backup_since = &v->pb;
    return 0;
}

static void since_free_saved(Godwit__V1__VmState *st)
{
    struct saved *v = (struct saved *)st->backup_since;   /* pb is the first member */
    if (!v) return;
    free(v->changed);
    free(v->hashes);
    free(v);
    st->backup_since = NULL;
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t x = 0;
    for (int k = 7; k >= 0; k--) x = x << 8 | p[k];
    return x;
}

static int since_load(void *ctx, const Godwit__V1__VmState *st, char *err, unsigned errlen)
{
    struct gw_backup_since *s = ctx;
    const Godwit__V1__BackupSinceState *v = st->backup_since;
    if (!v) return 0;
    uint64_t nchunks = s->vm->mem.size / (GW_CHUNK_DIGEST_PAGES * 4096ull);
    if (v->changed.len != s->words * 8) { snprintf(err, errlen, "bitmap of %zu bytes for %llu", v->changed.len, (unsigned long long)s->words * 8); return -EINVAL; }
    if (v->digest_hashes.len && v->digest_hashes.len != nchunks * 16) { snprintf(err, errlen, "digest state of %zu bytes", v->digest_hashes.len); return -EINVAL; }
    if (!v->base_id || strlen(v->base_id) >= sizeof s->base_id || !gw_store_name_ok(v->base_id) || !v->base_store ||
        strlen(v->base_store) >= sizeof s->base_store || !v->base_vm || strlen(v->base_vm) >= sizeof s->base_vm ||
        (v->base_vm[0] && !gw_store_name_ok(v->base_vm))) {
        snprintf(err, errlen, "bad base backup id or store");
        return -EINVAL;
    }
    if (s->dirty || s->cd_valid) { snprintf(err, errlen, "the VM already tracks changes"); return -EBUSY; }
    /* Tracking starts before the guest runs: nothing written here is missed. */
    char why[200] = "";
    int r = gw_dirty_attach(s->vm, GW_DIRTY_KVM_BITMAP, &s->dirty, why, sizeof why);
    if (r) { snprintf(err, errlen, "no dirty tracking: %s", why[0] ? why : strerror(-r)); s->disabled = true; return r; }
    /* KVM may start its log with every page set (KVM_DIRTY_LOG_INITIALLY_SET): the guest has
     * not run since the state was saved, so what the log holds now is not a change. */
    if (!(r = gw_dirty_fetch(s->dirty, NULL))) r = gw_dirty_clear(s->dirty, 0, s->dirty->npages);
    if (r) {
        snprintf(err, errlen, "cannot reset the dirty log: %s", strerror(-r));
        gw_dirty_detach(s->dirty);
        s->dirty = NULL;
        return r;
    }
    if (v->digest_hashes.len) {
        if ((r = gw_chunk_digest_init(&s->cd, s->vm->mem.base, s->vm->mem.size))) { snprintf(err, errlen, "out of memory"); return r; }
        for (uint64_t i = 0; i < nchunks * 2; i++) s->cd.hashes[i] = le64(v->digest_hashes.data + i * 8);
        s->cd_valid = true;   /* every group is stale after init: the final digest regroups */
    }
    for (uint64_t w = 0; w < s->words; w++) s->changed[w] = le64(v->changed.data + w * 8);
    snprintf(s->base_id, sizeof s->base_id, "%s", v->base_id);
    snprintf(s->base_store, sizeof s->base_store, "%s", v->base_store);
    snprintf(s->base_vm, sizeof s->base_vm, "%s", v->base_vm);
    uint64_t n = 0;
    for (uint64_t w = 0; w < s->words; w++) n += (uint64_t)__builtin_popcountll(s->changed[w]);
    gw_info("backup: changes since backup %s carried over (%llu pages changed, %s)", s->base_id, (unsigned long long)n,
            s->cd_valid ? "with its digest" : "no digest");
    return 0;
}

static struct gw_backup_since *since_new(struct gw_vm *vm)
{
    struct gw_backup_since *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->vm = vm;
    s->words = (vm->mem.size / GW_PAGE_SIZE + 63) / 64;
    s->changed = calloc(s->words ? s->words : 1, sizeof *s->changed);
    struct gw_vm_state_ext ext = {.save = since_save, .free_saved = since_free_saved, .load = since_load,
                                  .release = since_free, .ctx = s};
    if (!s->changed || gw_vm_set_state_ext(vm, &ext)) { free(s->changed); free(s); return NULL; }
    return s;
}

struct gw_backup_since *gw_backup_since_get(struct gw_vm *vm)
{
    if (vm->state_ext.save == since_save) return vm->state_ext.ctx;
    return since_new(vm);
}

int gw_backup_since_make(struct gw_vm *vm)
{
    return since_new(vm) ? 0 : -ENOMEM;
}

int gw_backup_since_arm(struct gw_backup_since *s)
{
    if (s->dirty) return 0;
    if (s->disabled) return -ENOTSUP;
    char why[200] = "";
    int r = gw_dirty_attach(s->vm, GW_DIRTY_KVM_BITMAP, &s->dirty, why, sizeof why);
    if (r) {
        s->disabled = true;
        gw_warn("backup: no dirty tracking between backups (%s): every backup reads all memory",
                why[0] ? why : strerror(-r));
    }
    /* Nothing was tracked before now: there is no base to be incremental on yet. */
    s->base_id[0] = 0;
    s->base_vm[0] = 0;
    return r;
}

void gw_backup_since_take(struct gw_backup_since *s)
{
    if (!s->dirty) return;
    int r = gw_dirty_fetch(s->dirty, NULL);
    if (!r) {
        for (uint64_t w = 0; w < s->words; w++) s->changed[w] |= s->dirty->bitmap[w];
        r = gw_dirty_clear(s->dirty, 0, s->dirty->npages);
    }
    if (r) {
        gw_warn("backup: dirty log unreadable (%s): the next backup reads all memory", strerror(-r));
        s->base_id[0] = 0;
    }
}

bool gw_backup_since_unchanged(const struct gw_backup_since *s, uint64_t pfn, uint64_t n)
{
    for (uint64_t p = pfn; p < pfn + n;) {
        uint64_t w = s->changed[p / 64] >> (p % 64);
        uint64_t span = 64 - p % 64;
        if (span > pfn + n - p) { span = pfn + n - p; w &= (1ull << span) - 1; }
        if (w) return false;
        p += span;
    }
    return true;
}

int gw_backup_since_restored(struct gw_vm *vm, const char *from_vm, const char *id, const char *store)
{
    struct gw_backup_since *s = gw_backup_since_get(vm);
    if (!s) return -ENOMEM;
    if (strlen(id) >= sizeof s->base_id || strlen(store) >= sizeof s->base_store || strlen(from_vm) >= sizeof s->base_vm)
        return -ENAMETOOLONG;
    int r = gw_backup_since_arm(s);
    /* The restore wrote memory before the guest ran: whatever the log holds is no change. */
    if (!r && !(r = gw_dirty_fetch(s->dirty, NULL))) r = gw_dirty_clear(s->dirty, 0, s->dirty->npages);
    if (r) return r;
    gw_backup_since_rebase(s, id, store);
    snprintf(s->base_vm, sizeof s->base_vm, "%s", strcmp(from_vm, vm->name) ? from_vm : "");
    return 0;
}

const char *gw_backup_since_base_vm(const struct gw_backup_since *s)
{
    return s->base_vm[0] ? s->base_vm : s->vm->name;
}

void gw_backup_since_rebase(struct gw_backup_since *s, const char *id, const char *store)
{
    s->base_vm[0] = 0;   /* the VM's own backup */
    snprintf(s->base_id, sizeof s->base_id, "%s", id);
    snprintf(s->base_store, sizeof s->base_store, "%s", store);
    memset(s->changed, 0, s->words * sizeof *s->changed);
}
