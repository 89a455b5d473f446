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

struct gw_backup_since *gw_backup_since_new(struct gw_vm *vm)
{
    struct gw_backup_since *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->vm = vm;
    s->words = (vm->mem.size / GW_PAGE_SIZE + 63) / 64;
    s->changed = calloc(s->words ? s->words : 1, sizeof *s->changed);
    if (!s->changed) { free(s); return NULL; }
    return s;
}

void gw_backup_since_free(struct gw_backup_since *s)
{
    if (!s) return;
    gw_dirty_detach(s->dirty);
    if (s->cd_valid) gw_chunk_digest_free(&s->cd);
    free(s->changed);
    free(s);
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

void gw_backup_since_rebase(struct gw_backup_since *s, const char *id, const char *store)
{
    snprintf(s->base_id, sizeof s->base_id, "%s", id);
    snprintf(s->base_store, sizeof s->base_store, "%s", store);
    memset(s->changed, 0, s->words * sizeof *s->changed);
}
