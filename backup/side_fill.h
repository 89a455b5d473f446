/* How fast a write-protect backup must write so that it finishes before its side buffer
 * (the copies of pages the guest rewrote before the backup read them) is full: the floor of
 * the adaptive throttle (storage/throttle_ctl.h, need_rate).
 *
 * Each page faults once: after its copy (or after the backup has read it) the guest writes it
 * freely. So under a steady guest the copies come fastest at the point in time and slow as
 * the guest's pages are used up; the backup's reads slow them too (a read page needs no
 * copy) and free the slots of the copies they read. A straight line through the fill's first
 * speed (a random dirtier of 512 MiB filled 3 % of a 256 MiB buffer in 0.3 s) said 200 MiB/s
 * were needed by a backup whose buffer peaked at 44 % at a few MiB/s, and the rush put the
 * other guests' p99 at several times their baseline (docs/backups.md, "The forecast").
 *
 * The copies' speed now, v, and its decay rate, lambda (0 when it does not fall by a tenth),
 * come from the copies ever made (a count that only grows; the fill itself also falls as
 * reads free copies, and over short windows its speed swung up and down), over two windows of
 * half the time since the point in time each (0.5 to 4 s). The guest's writes to come are
 * taken to lie like the copies the buffer holds (the snapshot counts them in bins over guest
 * RAM; with no bins, spread evenly over the memory not read yet). If the rest of memory is
 * read evenly over t seconds, U(x), the part of those copies beyond the read front at x, is
 * the part of each copy made from now on that is still held when the front is at x, so at s
 * seconds from now
 *     fill(s) = U(front at s) x (full + copies made by s),  copies made by s = v (1 - e^-lambda s) / lambda
 * (v s when lambda is 0). The need is the store bytes left over the longest t whose peak
 * stays under GW_SIDE_FILL_SAFE (the peak grows with t: found by halving), the copies' speed
 * taken GW_SIDE_FILL_MARGIN times over. Nothing is needed while the buffer is under a quarter
 * full (the first burst of faults fills a few per cent within a second; a quarter is room to
 * see the trend), when the copies still to come, unread, leave the buffer under the mark,
 * or when no pace is too slow. The forecast runs again every interval, and the throttle's
 * hold and lift marks (80 %, 90 %) stay behind it. */
#ifndef GW_BACKUP_SIDE_FILL_H
#define GW_BACKUP_SIDE_FILL_H

#include <stdint.h>

#define GW_SIDE_FILL_FROM 0.25               /* below this fill nothing is needed */
#define GW_SIDE_FILL_SAFE 0.7                /* the peak the need keeps the buffer under */
#define GW_SIDE_FILL_MARGIN 1.5              /* the copies' speed, times this */
#define GW_SIDE_FILL_WIN_MIN 0.5             /* a window: half the time since the point in time, */
#define GW_SIDE_FILL_WIN_MAX 4.0             /* within these (seconds) */
#define GW_SIDE_FILL_STEP_NS 100000000ull    /* samples kept at least this far apart */
#define GW_SIDE_FILL_SAMPLES 96              /* 9.6 s of them: two windows of the longest */
#define GW_SIDE_FILL_STEPS 128               /* points in time a peak is looked for at */
#define GW_SIDE_FILL_LONGEST 3600.0          /* s: a pace slower than an hour's needs nothing */
#define GW_SIDE_FILL_MAX_BINS 256            /* more bins than this: taken as an even spread */

struct gw_side_fill_sample {
    uint64_t t_ns;
    double copied;   /* the copies ever made then */
};

struct gw_side_fill {
    uint64_t t0_ns;   /* the point in time (copy-before-write began; nothing copied then) */
    struct gw_side_fill_sample ring[GW_SIDE_FILL_SAMPLES];
    unsigned n, next; /* samples held; where the next goes */
};

void gw_side_fill_init(struct gw_side_fill *f, uint64_t t0_ns);

/* What the forecast reads, each interval. */
struct gw_side_fill_state {
    double full;          /* the buffer's fill, 0..1 */
    double copied;        /* every copy made so far, in the same unit (only grows; may pass 1) */
    const double *held;   /* the copies held, by where their pages lie: bins over memory, in order */
    unsigned bins;        /* (0 or held NULL: taken as spread evenly over the memory not read yet) */
    double done;          /* the fraction of memory read (the backup reads it in order) */
    double mem_bytes;     /* the memory's size */
    double stored_bytes;  /* what the backup has written so far: with done, the store bytes per
                           * memory byte (before 5 % is done, every byte left counts) */
};

/* The store rate (bytes/s) the backup needs at now_ns. 0: nothing needed (or nothing known
 * yet). */
double gw_side_fill_need(struct gw_side_fill *f, const struct gw_side_fill_state *st, uint64_t now_ns);

#endif
