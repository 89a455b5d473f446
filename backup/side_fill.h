/* How fast a write-protect backup must write so that it finishes before its side buffer
 * (the copies of pages the guest rewrote before the backup read them) is full: the floor of
 * the adaptive throttle (storage/throttle_ctl.h, need_rate).
 *
 * The buffer fills as the guest writes pages still protected and unread. Each page faults
 * once: after its copy (or after the backup has read it) the guest writes it freely. So under
 * a steady guest the fill is fastest at the point in time and slows as the pages the guest
 * writes are used up, roughly geometrically: a random dirtier of 512 MiB filled 3 % of a
 * 256 MiB buffer in its first 0.3 s (a straight line through that said 200 MiB/s were needed)
 * and stopped near 20 %. Projected as a straight line, that first speed made the throttle write
 * at 100-250 MiB/s for seconds while the guests' p99 was 4x its target. The forecast therefore
 * measures the speed over windows in a row; while it falls, the fill still to come is what a
 * geometric decay adds (speed x tau, tau from the two windows), and if half as much again
 * still leaves the buffer short of the throttle's hold mark (0.8) nothing is needed. Nor is
 * anything while the buffer is under a quarter full: the first burst of faults fills a few per
 * cent within a second, and the speed then says nothing yet of the rest (a projection from
 * 2-20 % full asked for 35-200 MiB/s, flipping with each window, of a backup whose buffer
 * peaked at 29 % at 10 MiB/s); a quarter of the buffer is room enough to see the fill's trend,
 * and the hold and lift marks stay behind it. A fill that does not
 * slow is projected as a straight line, as before. The throttle's own backstops (hold at 80 %,
 * lift at 90 %) stay behind it either way. */
#ifndef GW_BACKUP_SIDE_FILL_H
#define GW_BACKUP_SIDE_FILL_H

#include <stdint.h>

#define GW_SIDE_FILL_WINDOW_NS 500000000ull  /* a speed is measured over at least this */
#define GW_SIDE_FILL_FROM 0.25               /* below this fill nothing is needed */
#define GW_SIDE_FILL_SAFE 0.7                /* a decaying fill ending below this needs nothing */
#define GW_SIDE_FILL_MARGIN 1.5              /* the decaying rest, times this */

struct gw_side_fill {
    uint64_t t0_ns;       /* the point in time (copy-before-write began) */
    uint64_t win_ns;      /* start of the current window (0: none yet) */
    double win_at;        /* the fill then */
    double speed, prev;   /* fraction per second over the last window and the one before (0: not yet) */
    double speed_dt, prev_dt;   /* their lengths, seconds */
};

void gw_side_fill_init(struct gw_side_fill *f, uint64_t t0_ns);

/* The store rate (bytes/s) the backup needs at now_ns: full is the buffer's fill (0..1), done
 * the fraction of memory read, mem_bytes the memory's size and stored_bytes what the backup has
 * written so far (with done, the store bytes per memory byte; before 5 % is done, every byte
 * left counts). 0: nothing needed (or nothing known yet). */
double gw_side_fill_need(struct gw_side_fill *f, double full, double done, double mem_bytes, double stored_bytes,
                         uint64_t now_ns);

#endif
