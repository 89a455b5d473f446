/* What the migration channel's cipher alone costs this host, for `godwit-bench migrate --tls
 * both`: the floor under TLS's extra time. A TLS migration seals every page once on the
 * source and opens it once on the destination, and on a loopback bench both happen on this
 * host's cores. Sealing and opening the same bytes in records of the same size, with nothing
 * else to do, is the least CPU time TLS can add; spread over every online core it is the
 * least wall time, so (plaintext + that) / plaintext is the best ratio this host allows. */
#ifndef GW_BENCH_CIPHER_H
#define GW_BENCH_CIPHER_H

#include <stdint.h>

/* Seals `bytes` (rounded up to whole records) in 16 KiB TLS 1.3 records with AES-128-GCM
 * (the PSK suite) from a buffer larger than the caches, then opens them all again, each in
 * one thread. *seal_ms and *open_ms: the time of each pass. 0, -ENOMEM, or -EIO (OpenSSL
 * failed, or an opened record did not verify). */
int gw_bench_cipher_ms(uint64_t bytes, double *seal_ms, double *open_ms);

#endif
