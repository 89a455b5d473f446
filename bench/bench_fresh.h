/* What a page of fresh memory costs this host right now, for benchmarks whose work lands in
 * new memory (a migration's destination, a restore).
 *
 * On a VM host the first write to a page the kernel hands out can fault in the hypervisor
 * below us as well: measured on the Firecracker machines this project runs on, a page that
 * host has taken back (free page reporting returns the guest's free memory to it within
 * seconds) costs 6-8 us to touch, a page still backed 0.7 us. The same migration then takes
 * 0.4 s or 1.7 s depending on which kind the destination was given, so the benchmarks print
 * the cost they sampled next to their figures instead of leaving the spread unexplained. */
#ifndef GW_BENCH_FRESH_H
#define GW_BENCH_FRESH_H

#include <stddef.h>

#define GW_BENCH_FRESH_SAMPLE (16u << 20)   /* small: the sample itself warms what it touches */

/* Maps `bytes` of new anonymous memory, writes every page once, unmaps it, and puts the mean
 * time per 4 KiB page in *us. 0 or -errno (nothing measured). */
int gw_bench_fresh_page_us(size_t bytes, double *us);

/* The destination's floor: writes `bytes` of non-zero data once into a new memfd of that size
 * (pwrite of 256 KiB runs from one thread: how a migration's receiver places raw pages, and
 * the fastest way measured here; a second thread only queues on the file's lock) and puts the
 * time in *ms. No receiver can put the same bytes into fresh guest memory faster, so a
 * transfer's time is at least this whatever the wire does. 0 or -errno. */
int gw_bench_place_floor_ms(size_t bytes, double *ms);

#endif
