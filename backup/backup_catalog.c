/* Opening a backup target, and the catalog of a VM's backups: list, latest, delete. */
#include "backup/backup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/manifest.h"
#include "storage/store.h"

int gw_backup_target_open(const Godwit__V1__StoreSpec *spec, struct gw_backup_target *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    if (!spec) { snprintf(err, errlen, "no store named"); return -EINVAL; }
    struct gw_store_params p = {
        .spec = spec->target,
        .ceph_conf = spec->ceph_conf && *spec->ceph_conf ? spec->ceph_conf : NULL,
        .ceph_id = spec->ceph_id && *spec->ceph_id ? spec->ceph_id : NULL,
        .keyring = spec->keyring && *spec->keyring ? spec->keyring : NULL,
        .osd_op_timeout_s = spec->osd_op_timeout_s,
        .mon_op_timeout_s = spec->mon_op_timeout_s,
        .mount_timeout_s = spec->mon_op_timeout_s,
        .max_inflight = spec->max_inflight,
    };
    if (spec->key_file && *spec->key_file) {
        int r = gw_chunk_keys_load(spec->key_file, &t->keys, err, errlen);
        if (r) return r;
    }
    int r = gw_store_open(&p, &t->store, err, errlen);
    if (r) gw_chunk_keys_wipe(&t->keys);
    return r;
}

void gw_backup_target_close(struct gw_backup_target *t)
{
    gw_store_close(t->store);
    t->store = NULL;
    gw_chunk_keys_wipe(&t->keys);
}

struct id_list {
    char (*ids)[GW_BACKUP_ID_BUF];
    size_t n, cap;
};

static int collect(const char *key, const char *val, void *ctx)
{
    (void)val;
    struct id_list *l = ctx;
    if (strlen(key) >= GW_BACKUP_ID_BUF) return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        void *n = realloc(l->ids, cap * GW_BACKUP_ID_BUF);
        if (!n) return -ENOMEM;
        l->ids = n;
        l->cap = cap;
    }
    snprintf(l->ids[l->n++], GW_BACKUP_ID_BUF, "%s", key);
    return 0;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

int gw_backup_list(struct gw_backup_target *t, const char *vm, char (**ids)[GW_BACKUP_ID_BUF], size_t *n)
{
    char index[160];
    *ids = NULL;
    *n = 0;
    if (gw_backup_index_name(vm, index, sizeof index)) return gw_store_fail(t->store, -EINVAL, "bad VM name '%s'", vm);
    struct id_list l = {0};
    int r = t->store->ops->index_list(t->store, index, collect, &l);
    if (r) { free(l.ids); return r; }
    if (l.n) qsort(l.ids, l.n, GW_BACKUP_ID_BUF, cmp_id);  /* ids sort by creation time */
    *ids = l.ids;
    *n = l.n;
    return 0;
}

int gw_backup_latest(struct gw_backup_target *t, const char *vm, char *id)
{
    char (*ids)[GW_BACKUP_ID_BUF];
    size_t n;
    int r = gw_backup_list(t, vm, &ids, &n);
    if (r) return r;
    if (!n) { free(ids); return -ENOENT; }
    snprintf(id, GW_BACKUP_ID_BUF, "%s", ids[n - 1]);
    free(ids);
    return 0;
}

int gw_backup_delete(struct gw_backup_target *t, const char *vm, const char *id, char *err, size_t errlen)
{
    char index[160], obj[160];
    if (gw_backup_index_name(vm, index, sizeof index) || gw_manifest_object(vm, id, obj, sizeof obj)) {
        snprintf(err, errlen, "bad VM name or backup id");
        return -EINVAL;
    }
    struct gw_store *s = t->store;
    int r = s->ops->stat(s, obj, NULL);
    if (r == 0) { snprintf(err, errlen, "no backup %s of VM %s in %s", id, vm, s->desc); return -ENOENT; }
    /* Unlisted first: a crash between the two steps leaves an unlisted manifest, never a
     * listed backup without one. */
    if (r > 0) r = s->ops->index_del(s, index, id);
    if (!r) r = s->ops->remove(s, obj);
    if (!r) r = s->ops->wait(s);
    if (r) snprintf(err, errlen, "%s", gw_store_error(s));
    return r;
}
