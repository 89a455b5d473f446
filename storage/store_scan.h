/* Walking a whole chunk store, and reading and removing objects with a guard: what garbage
 * collection needs beyond the ops table (store.h).
 *
 * A guard identifies one version of an object: rados: the object's version (every write bumps
 * it); dir: inode, mtime (ns) and size (every write is a new file renamed into place, so a new
 * inode). A guarded remove removes the object only if it is still that version: a chunk that a
 * backup has written again since the guard was taken is kept. */
#ifndef GW_STORAGE_STORE_SCAN_H
#define GW_STORAGE_STORE_SCAN_H

#include <stddef.h>
#include <stdint.h>

struct gw_store;

struct gw_obj_guard {
    uint64_t a, b, c;
};

/* Calls fn(name) for every object of the store except indexes and leases, in no order; a name
 * godwit never writes (bad characters, a temporary file, a non-file) goes to skip() with the
 * reason instead and is never passed on. fn's non-zero return stops the walk and is returned. */
#define GW_SCAN_MANIFESTS 1u   /* only manifests are wanted (a hint: dir skips the chunk tree) */
int gw_store_scan(struct gw_store *s, unsigned flags, int (*fn)(const char *name, void *ctx),
                  void (*skip)(void *ctx, const char *name, const char *reason), void *ctx);

/* Looks up n objects (batched): rc[i] = 1 present, 0 absent, -errno; size and guard of each. */
int gw_store_stat_guarded(struct gw_store *s, const char *const *names, size_t n, int *rc, uint64_t *size,
                          struct gw_obj_guard *g);

/* Removes each object whose guard still matches: rc[i] = 1 removed, 0 kept (changed since, or
 * gone already), -errno. Returns -errno only when the store itself fails. */
int gw_store_remove_guarded(struct gw_store *s, const char *const *names, const struct gw_obj_guard *g, size_t n,
                            int *rc);

#endif
