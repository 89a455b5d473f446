/* The KVM dirty-ring backend (see dirty.h): the VM's rings (engine/vm/dirty_ring.h) are
 * collected at each harvest; resetting them re-protects the pages, so there is nothing for
 * clear to do (as in classic mode, a page is logged again by its next write after the
 * harvest that took it). */
#include <stdio.h>
#include <string.h>

#include "engine/dirty/dirty_backend.h"
#include "engine/vm/dirty_ring.h"
#include "engine/vm/vm.h"

static int ring_start(struct gw_dirty_tracker *t, char *why, unsigned whylen)
{
    /* Anything a previous tracker left pending belongs to no consumer. */
    gw_dirty_ring_collect(t->vm, NULL);
    memset(t->scratch, 0, t->words * 8);
    gw_dirty_ring_take(t->vm, t->scratch);
    int r = gw_dirty_kvm_set_logging(t->vm, true);
    if (r && why) snprintf(why, whylen, "cannot start KVM dirty logging: %s", strerror(-r));
    return r;
}

static int ring_get(struct gw_dirty_tracker *t, uint64_t *out)
{
    int r = gw_dirty_ring_collect(t->vm, NULL);
    gw_dirty_ring_take(t->vm, out);   /* what vCPUs collected on a full ring, too */
    return r;
}

static void ring_stop(struct gw_dirty_tracker *t)
{
    gw_dirty_kvm_set_logging(t->vm, false);
    gw_dirty_ring_collect(t->vm, NULL);
    memset(t->scratch, 0, t->words * 8);
    gw_dirty_ring_take(t->vm, t->scratch);
}

const struct gw_dirty_backend_ops gw_dirty_kvm_ring_ops = {
    .name = "kvm-ring", .start = ring_start, .get = ring_get, .clear = NULL, .stop = ring_stop,
};
