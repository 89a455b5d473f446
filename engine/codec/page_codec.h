/* Page batches: the payload of a PAGE_BATCH record, and the codec that makes and applies it.
 *
 * Guest memory is one host mapping `mem` of `mem_size` bytes (a multiple of 4096); a page is
 * named by its frame number pfn = offset / 4096 in that mapping. Layout (little-endian):
 *
 *   off  size       field
 *     0     4       npages      1 .. GW_WIRE_MAX_BATCH_PAGES
 *     4     4       reserved    0
 *     8     16*n    descriptors { u64 pfn; u8 enc; u8 pad[3] = 0; u32 len }
 *     8+16n ...     data        the `len` bytes of each page, in descriptor order
 *
 *   enc RAW  (0): len == 4096, the page as is
 *   enc ZERO (1): len == 0, the page is all zero bytes
 *   enc LZ4  (2): 1 <= len <= GW_PAGE_LZ4_MAX, one LZ4 block that decodes to exactly 4096 bytes
 *   enc PLACED (3): len == 0, the page's raw bytes were already written into its place by the
 *                 sender (RDMA WRITE into the receiver's registered guest memory, posted
 *                 before this record on the same queue pair, so delivered before it). Only a
 *                 receiver that registered its memory for the sender accepts it
 *                 (engine/pump/page_recv.h); gw_page_apply refuses it (-EBADMSG).
 *
 * The payload must end exactly after the last page's data. One descriptor per page keeps the
 * decoder a single bounded loop; 16 bytes is 0.4% of a raw page. */
#ifndef GW_CODEC_PAGE_CODEC_H
#define GW_CODEC_PAGE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define GW_PAGE_BATCH_HDR 8u
#define GW_PAGE_DESC_SIZE 16u
/* An lz4 block must save at least 64 bytes to be worth the decoder's time. */
#define GW_PAGE_LZ4_MAX (4096u - 64u)

enum gw_page_enc { GW_PAGE_RAW = 0, GW_PAGE_ZERO = 1, GW_PAGE_LZ4 = 2, GW_PAGE_PLACED = 3, GW_PAGE_NENC = 4 };

enum gw_codec_mode {
    GW_CODEC_AUTO = 0,  /* lz4 while it pays (ratio and link speed), else raw; a batch that
                         * tries lz4 gives up after 32 pages that do not compress */
    GW_CODEC_LZ4 = 1,   /* always try lz4 */
    GW_CODEC_NONE = 2,  /* zero markers and raw pages only */
};

/* Counters of one encoder or decoder. bytes_in is what was read (guest memory for the
 * encoder, payload for the decoder), bytes_out what was produced. */
struct gw_codec_stats {
    uint64_t pages[GW_PAGE_NENC];   /* by enum gw_page_enc */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t batches;
    uint64_t ns;                    /* time spent encoding or decoding */
};

/* Encoder state: one per sender thread (not thread-safe). Plain struct, no allocation. */
struct gw_page_encoder {
    enum gw_codec_mode mode;
    int accel;                 /* LZ4_compress_fast acceleration, >= 1 */
    uint64_t link_bps;         /* link bytes/s as the caller measures it; 0 = unknown */
    double ratio;              /* recent lz4 output/input over non-zero pages, 1.0 = no gain */
    double comp_bps;           /* recent compressor throughput, bytes/s; 0 = not measured */
    unsigned since_probe;      /* batches since lz4 was last tried while skipping */
    bool last_compressed;      /* whether the last batch tried lz4 (for tests and stats) */
    struct gw_codec_stats st;
};

/* Sets up e with mode and acceleration (values < 1 become 1). */
void gw_page_encoder_init(struct gw_page_encoder *e, enum gw_codec_mode mode, int accel);

/* Tells the encoder how fast the link is (bytes/s, 0 = unknown). In AUTO mode lz4 is skipped
 * when compressing cannot make a batch reach the peer sooner:
 * link_bps >= compressor_bps * (1 - ratio). */
void gw_page_encoder_set_link_rate(struct gw_page_encoder *e, uint64_t link_bps);

/* Largest payload a batch of npages can take; npages <= GW_WIRE_MAX_BATCH_PAGES. */
static inline size_t gw_page_batch_bound(uint32_t npages)
{
    return GW_PAGE_BATCH_HDR + (size_t)npages * (GW_PAGE_DESC_SIZE + 4096u);
}

/* Scratch an iovec encoding of npages needs: header, descriptors and lz4 blocks; raw
 * pages stay in guest memory. npages <= GW_WIRE_MAX_BATCH_PAGES. */
static inline size_t gw_page_batch_scratch_bound(uint32_t npages)
{
    return GW_PAGE_BATCH_HDR + (size_t)npages * (GW_PAGE_DESC_SIZE + GW_PAGE_LZ4_MAX);
}

/* Encodes like gw_page_encode_batch but copies no raw page: the payload is described by
 * iov[0..*iovcnt) (room for npages + 1 entries): the header and descriptors and the lz4
 * blocks lie in scratch[0..cap) (cap >= gw_page_batch_scratch_bound(n)), RAW page data is
 * pointed to in mem, and adjacent pieces are merged (consecutive raw pages are one entry).
 * *out_len is the payload size. The pages are read again when the iovecs are sent: a page
 * that changes in between goes as it is then (torn, like a page changing while copied;
 * the dirty log sends it again). Errors as gw_page_encode_batch (-ENOBUFS: cap too small). */
int gw_page_encode_batch_iov(struct gw_page_encoder *e, const uint8_t *mem, uint64_t mem_size,
                             const uint64_t *pfns, uint32_t n, uint8_t *scratch, size_t cap,
                             struct iovec *iov, int *iovcnt, size_t *out_len);

/* Encodes the pages pfns[0..n) of mem[0..mem_size) into out[0..cap) and sets *out_len.
 * Reads only mem; the caller owns every buffer. Returns 0, -EINVAL when n is 0 or over
 * GW_WIRE_MAX_BATCH_PAGES, -ERANGE when a pfn is outside mem_size, -ENOBUFS when
 * cap < gw_page_batch_bound(n). A page that changes while it is read is sent as it was
 * read (a torn page); the dirty log sends it again in the next round. */
int gw_page_encode_batch(struct gw_page_encoder *e, const uint8_t *mem, uint64_t mem_size,
                         const uint64_t *pfns, uint32_t n, uint8_t *out, size_t cap,
                         size_t *out_len);

/* Memory that decoded pages are applied to in place, and what is noted about them: the
 * buffer decoder's target (gw_page_decode_batch_mem) and the rules the direct page placer
 * (engine/pump/page_placer.h) applies through gw_page_apply. Owned by the caller. */
struct gw_page_mem {
    uint8_t *mem;            /* guest memory, mem_size bytes */
    uint64_t mem_size;       /* multiple of 4096 */
    /* Optional (NULL = none), one bit per page (bit pfn % 64 of word pfn / 64), at least
     * mem_size / 4096 bits rounded up to 64: */
    uint64_t *touched;       /* set (atomic OR, release) for every page applied, any encoding,
                              * zero markers included */
    uint64_t *written;       /* fresh memory: pages written since it was all holes. A ZERO
                              * page whose bit is clear is left alone entirely (not even read:
                              * reading a memfd hole through a shared mapping allocates it);
                              * the bit is set (atomic OR) for every page written. */
};

/* A checked page descriptor (see the layout above). */
struct gw_page_desc {
    uint64_t pfn;
    uint8_t enc;
    uint32_t len;
};

/* Parses the 8-byte batch header: *n = npages. Returns 0 or -EBADMSG (count 0 or over
 * GW_WIRE_MAX_BATCH_PAGES, reserved not 0). */
int gw_page_batch_header(const uint8_t hdr[GW_PAGE_BATCH_HDR], uint32_t *n);

/* Checks the n descriptors in table[0..n * GW_PAGE_DESC_SIZE) of a batch whose whole payload
 * is payload_len bytes, against mem_size, and fills out[0..n): every pfn inside memory, every
 * encoding known with a length it allows, padding 0, and the data lengths adding up to
 * exactly what follows the table. Returns 0, -EBADMSG or -ERANGE (first bad descriptor
 * decides). Nothing is written to guest memory, so a receiver can check a whole batch
 * before it lets any of its bytes in. */
int gw_page_batch_descs(const uint8_t *table, uint32_t n, size_t payload_len, uint64_t mem_size,
                        struct gw_page_desc *out);

/* Applies one checked descriptor whose data is src[0..d->len) (RAW data already in place at
 * its page is fine: src == the page). Returns 0, -EILSEQ for lz4 that does not decode to
 * exactly 4096 bytes, or -EBADMSG for an unknown encoding. */
int gw_page_apply(const struct gw_page_mem *sink, const struct gw_page_desc *d, const uint8_t *src);

/* gw_page_decode_batch into a sink (touched / written bitmaps as described there). */
int gw_page_decode_batch_mem(const uint8_t *p, size_t len, const struct gw_page_mem *sink,
                              struct gw_codec_stats *st, uint32_t *npages);

/* Applies a PAGE_BATCH payload p[0..len) to mem[0..mem_size): every page is written at
 * pfn * 4096 (a ZERO page only when it is not already zero, so untouched memfd pages stay
 * unallocated). Checks every field before it is used and never reads past p+len or writes
 * outside the addressed page. Returns 0 and sets *npages (may be NULL), or -EBADMSG for a
 * malformed payload (truncated, bad counts, encodings or lengths, trailing bytes), -EILSEQ
 * for lz4 that does not decode to exactly 4096 bytes, -ERANGE for a pfn outside mem_size. The whole
 * descriptor table is checked before any page is written; on an lz4 error the pages before
 * the bad one may have been written. st (may be NULL) gets the counters. */
int gw_page_decode_batch(const uint8_t *p, size_t len, uint8_t *mem, uint64_t mem_size,
                         struct gw_codec_stats *st, uint32_t *npages);

/* Adds b's counters to a. */
void gw_codec_stats_add(struct gw_codec_stats *a, const struct gw_codec_stats *b);

#endif
