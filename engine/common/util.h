/* Small helpers every module uses: clocks, size parsing, checked arithmetic, full I/O. */
#ifndef GW_COMMON_UTIL_H
#define GW_COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define GW_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define GW_PAGE_SIZE 4096u
#define GW_PAGE_SHIFT 12
#define GW_KIB (1024ull)
#define GW_MIB (1024ull * 1024)
#define GW_GIB (1024ull * 1024 * 1024)

/* Monotonic time in nanoseconds. */
uint64_t gw_now_ns(void);
/* Wall-clock time in nanoseconds since the epoch. */
uint64_t gw_wall_ns(void);

/* Parses "4096", "64K", "256M", "1G", "2T" (binary units; optional trailing "iB"/"B").
 * Returns 0 and sets *out, or -EINVAL for garbage and -ERANGE on overflow. */
int gw_parse_size(const char *s, uint64_t *out);
/* Parses an unsigned decimal integer that must fit in [min, max]. */
int gw_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* a + b and a * b into *out; false when the result would not fit in 64 bits. */
static inline bool gw_add_ok(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_add_overflow(a, b, out); }
static inline bool gw_mul_ok(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_mul_overflow(a, b, out); }
/* x as a uint64_t, saturated: NaN and below 0 give 0, 2^64 and above (infinity too) give
 * UINT64_MAX. A plain cast of a double out of range is undefined behaviour. */
static inline uint64_t gw_u64_of_double(double x)
{
    if (!(x > 0)) return 0;
    return x >= 18446744073709551616.0 ? UINT64_MAX : (uint64_t)x;
}

/* True when [off, off+len) lies inside [0, size) without overflow. */
static inline bool gw_range_ok(uint64_t off, uint64_t len, uint64_t size)
{
    return off <= size && len <= size - off;
}

/* Reads or writes exactly len bytes, retrying on EINTR and short transfers.
 * Return 0, -errno, or -EPIPE for a read that hit end of file early. */
int gw_read_full(int fd, void *buf, size_t len);
int gw_write_full(int fd, const void *buf, size_t len);
int gw_pread_full(int fd, void *buf, size_t len, off_t off);
int gw_pwrite_full(int fd, const void *buf, size_t len, off_t off);

/* Reads a small text file (/proc, /sys, a test hook's file) into buf, NUL-terminated: at most
 * cap - 1 bytes. Returns the length read (> 0), or -errno (-ENODATA when it is empty). */
int gw_read_small_file(const char *path, char *buf, size_t cap);

/* The median of v[0..n): the middle value, or the mean of the middle two when n is even; 0
 * when n is 0. Sorts v in place. */
double gw_median(double *v, size_t n);

/* True when the len bytes at p are all zero (fast path for page-sized, aligned buffers). */
bool gw_is_zero(const void *p, size_t len);

/* Hex digits: one's value (0-15, either case), or -1. */
int gw_hex_digit(int c);
/* The 2n hex digits at hex (either case) into out[0..n): 0, or -EINVAL at the first pair that
 * is not two digits (out is then partly written). Reads no further than the first bad digit. */
int gw_hex_decode(const char *hex, uint8_t *out, size_t n);
/* in[0..n) as 2n lowercase hex digits and a NUL into out[2n + 1]. */
void gw_hex_encode(const uint8_t *in, size_t n, char *out);

#endif
