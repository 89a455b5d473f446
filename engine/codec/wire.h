/* The migration wire format: a byte stream of framed records. Each record is a fixed 24-byte
 * little-endian header followed by `length` payload bytes:
 *
 *   off size field
 *     0    4 magic     GW_WIRE_MAGIC ("GWM1")
 *     4    1 type      enum gw_wire_type
 *     5    1 flags     must be 0 (no flag is defined yet; features are negotiated in HELLO)
 *     6    2 reserved  must be 0
 *     8    4 length    payload bytes, <= GW_WIRE_MAX_PAYLOAD
 *    12    4 stream    index of the connection within the session
 *    16    8 seq       per-stream sequence number, starting at 0
 *
 * A fixed binary header lets a receiver check the length before it reads or allocates
 * anything. Control payloads are protobuf (proto/godwit/v1/migration.proto); PAGE_BATCH is a
 * compact binary layout (engine/codec/page_codec.h); STATE is a VmState message.
 * Nothing here does I/O: engine/transport/ moves the bytes. */
#ifndef GW_CODEC_WIRE_H
#define GW_CODEC_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "godwit/v1/migration.pb-c.h"

#define GW_WIRE_MAGIC 0x314D5747u     /* "GWM1" read as little-endian bytes */
#define GW_WIRE_VERSION 1u
#define GW_WIRE_HEADER_SIZE 24u
/* Largest payload: a page batch of GW_WIRE_MAX_BATCH_PAGES raw pages plus its tables fits. */
#define GW_WIRE_MAX_PAYLOAD (16u * 1024 * 1024 + 64u * 1024)
#define GW_WIRE_MAX_BATCH_PAGES 4096u
/* Records before authentication are small; an unauthenticated peer gets no 16 MiB buffers. */
#define GW_WIRE_MAX_HANDSHAKE_PAYLOAD (64u * 1024)
#define GW_WIRE_NONCE_SIZE 32u
#define GW_WIRE_SESSION_ID_SIZE 16u
#define GW_WIRE_MAC_SIZE 32u
#define GW_WIRE_MAX_STREAMS 64u
/* Regions in one RDMA_REGIONS record: a few per stream (one per guest memory slot). */
#define GW_WIRE_MAX_RDMA_REGIONS 256u

/* Feature bits announced in HELLO and agreed in CHALLENGE. */
#define GW_WIRE_F_LZ4 (1ull << 0)
/* The source wants post-copy (postcopy/pc_wire.h): a destination that grants it hands the
 * session to its post-copy receiver. */
#define GW_WIRE_F_POSTCOPY (1ull << 1)
/* A post-copy source reconnecting after a broken link (postcopy/pc_resume.h): only the
 * destination runner that holds that migration takes such a session. */
#define GW_WIRE_F_PC_RESUME (1ull << 2)
/* A hybrid source may name the stale pre-copied pages before the pause (STALE, pc_wire.h), so
 * that the destination drops them while the VM still runs at the source. */
#define GW_WIRE_F_PC_STALE (1ull << 3)
/* Both ends can do RDMA WRITE on this stream (engine/transport/rdma_mem.h): the destination
 * sends its registered guest memory in RDMA_REGIONS, and the source writes raw pages there and
 * names them in its PAGE_BATCH records as GW_PAGE_PLACED. Offered and agreed per connection,
 * only where the connection has RDMA verbs. */
#define GW_WIRE_F_RDMA_WRITE (1ull << 4)
#define GW_WIRE_F_ALL \
    (GW_WIRE_F_LZ4 | GW_WIRE_F_POSTCOPY | GW_WIRE_F_PC_RESUME | GW_WIRE_F_PC_STALE | GW_WIRE_F_RDMA_WRITE)

enum gw_wire_type {
    GW_WIRE_HELLO = 1,
    GW_WIRE_CHALLENGE = 2,
    GW_WIRE_AUTH = 3,
    GW_WIRE_PAGE_BATCH = 4,
    GW_WIRE_END_OF_ROUND = 5,
    GW_WIRE_STATE = 6,
    GW_WIRE_DIGEST = 7,
    GW_WIRE_SWITCHOVER = 8,
    GW_WIRE_COMMIT = 9,
    GW_WIRE_ACK = 10,
    GW_WIRE_ERROR = 11,
    /* Second phase of the commit (docs/migration-wire.md): ACK now means "ready", GO tells
     * the destination to run the guest, RUNNING says it does. */
    GW_WIRE_GO = 12,
    GW_WIRE_RUNNING = 13,
    /* Before pausing the guest the source asks SYNC and waits for SYNCED: the destination
     * answers once every stream has applied everything sent so far, so the data still in
     * socket buffers is moved while the guest runs, not during its pause. */
    GW_WIRE_SYNC = 14,
    GW_WIRE_SYNCED = 15,
    /* Post-copy's own records (page requests, hand-over, completion): a fixed 32-byte
     * header with an op code, see postcopy/pc_wire.h. */
    GW_WIRE_POSTCOPY = 16,
    /* The destination's registered guest memory for RDMA WRITE (MigRdmaRegions). */
    GW_WIRE_RDMA_REGIONS = 17,
    GW_WIRE_TYPE_MAX = GW_WIRE_RDMA_REGIONS,
};

struct gw_wire_header {
    uint32_t magic;
    uint8_t type;
    uint8_t flags;
    uint16_t reserved;
    uint32_t length;
    uint32_t stream;
    uint64_t seq;
};

/* Name of a record type for messages ("PAGE_BATCH"); "unknown" for anything else. */
const char *gw_wire_type_name(unsigned type);

/* Writes h into out[GW_WIRE_HEADER_SIZE]. Does not validate. */
void gw_wire_header_pack(const struct gw_wire_header *h, uint8_t out[GW_WIRE_HEADER_SIZE]);

/* Parses and validates in[GW_WIRE_HEADER_SIZE]: magic, known type, zero flags and reserved,
 * length <= GW_WIRE_MAX_PAYLOAD. Returns 0, or -EBADMSG (bad magic, flags, reserved),
 * -EPROTO (unknown type) or -EMSGSIZE (length over the maximum). *h is filled either way so
 * that a caller can report what it saw. */
int gw_wire_header_parse(const uint8_t in[GW_WIRE_HEADER_SIZE], struct gw_wire_header *h);

/* Splits the first record off buf[0..len): on success *h is the header, *payload points
 * into buf and *used = GW_WIRE_HEADER_SIZE + h->length. Returns -EAGAIN when buf holds
 * less than a whole record (truncated), or the errors of gw_wire_header_parse. */
int gw_wire_record_split(const uint8_t *buf, size_t len, struct gw_wire_header *h,
                         const uint8_t **payload, size_t *used);

/* Short description of a wire error code, for messages ("bad magic or reserved bits"). */
const char *gw_wire_strerror(int err);

/* Control payloads. Each unpack returns a message the caller frees with the matching
 * godwit__v1__*__free_unpacked(msg, NULL), or NULL with *err set to -EBADMSG when the bytes
 * are not a valid message or a field is out of bounds (wrong nonce, MAC or digest size,
 * stream index >= nstreams, nstreams > GW_WIRE_MAX_STREAMS, version 0). */
Godwit__V1__MigHello *gw_wire_unpack_hello(const uint8_t *p, size_t len, int *err);
Godwit__V1__MigChallenge *gw_wire_unpack_challenge(const uint8_t *p, size_t len, int *err);
Godwit__V1__MigAuth *gw_wire_unpack_auth(const uint8_t *p, size_t len, int *err);
Godwit__V1__MigEndOfRound *gw_wire_unpack_end_of_round(const uint8_t *p, size_t len, int *err);
Godwit__V1__MigDigest *gw_wire_unpack_digest(const uint8_t *p, size_t len, int *err);
Godwit__V1__MigError *gw_wire_unpack_error(const uint8_t *p, size_t len, int *err);

/* Packs any protobuf-c message into a new malloc'd buffer (*out, *len; caller frees).
 * Returns 0, -ENOMEM, or -EMSGSIZE when the packed size exceeds GW_WIRE_MAX_PAYLOAD. */
int gw_wire_pack_msg(const ProtobufCMessage *msg, uint8_t **out, size_t *len);

#endif
