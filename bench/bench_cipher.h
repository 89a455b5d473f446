/* What the crypto alone costs this host: floors under the benchmarks' figures. First the
 * migration channel's cipher, for `godwit-bench migrate --tls both`: the floor under TLS's
 * extra time. A TLS migration seals every page once on the
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

/* The same kind of floor for a restore, which checks every chunk against its name: SHA-256 of
 * `bytes` in chunks of chunk_bytes from a buffer larger than the caches, one thread, into *ms.
 * 0, -EINVAL, -ENOMEM or -EIO. */
int gw_bench_sha256_ms(uint64_t bytes, uint32_t chunk_bytes, double *ms);

#endif
