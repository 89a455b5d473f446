/* Record header packing and validation, and checked unpacking of the control messages.
 * Every field that arrives from the peer is checked here once, so the transport and the
 * migration engine can trust a message they get from these functions. */
#include "engine/codec/wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[] = {
    [GW_WIRE_HELLO] = "HELLO",           [GW_WIRE_CHALLENGE] = "CHALLENGE",
    [GW_WIRE_AUTH] = "AUTH",             [GW_WIRE_PAGE_BATCH] = "PAGE_BATCH",
    [GW_WIRE_END_OF_ROUND] = "END_OF_ROUND", [GW_WIRE_STATE] = "STATE",
    [GW_WIRE_DIGEST] = "DIGEST",         [GW_WIRE_SWITCHOVER] = "SWITCHOVER",
    [GW_WIRE_COMMIT] = "COMMIT",         [GW_WIRE_ACK] = "ACK",
    [GW_WIRE_ERROR] = "ERROR",           [GW_WIRE_GO] = "GO",
    [GW_WIRE_RUNNING] = "RUNNING",     [GW_WIRE_SYNC] = "SYNC",
    [GW_WIRE_SYNCED] = "SYNCED",       [GW_WIRE_POSTCOPY] = "POSTCOPY",
    [GW_WIRE_RDMA_REGIONS] = "RDMA_REGIONS",
};

const char *gw_wire_type_name(unsigned type)
{
    if (type == 0 || type > GW_WIRE_TYPE_MAX) return "unknown";
    return type_names[type];
}

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

void gw_wire_header_pack(const struct gw_wire_header *h, uint8_t out[GW_WIRE_HEADER_SIZE])
{
    put32(out, h->magic);
    out[4] = h->type;
    out[5] = h->flags;
    out[6] = (uint8_t)h->reserved;
    out[7] = (uint8_t)(h->reserved >> 8);
    put32(out + 8, h->length);
    put32(out + 12, h->stream);
    put64(out + 16, h->seq);
}

int gw_wire_header_parse(const uint8_t in[GW_WIRE_HEADER_SIZE], struct gw_wire_header *h)
{
    h->magic = get32(in);
    h->type = in[4];
    h->flags = in[5];
    h->reserved = (uint16_t)(in[6] | in[7] << 8);
    h->length = get32(in + 8);
    h->stream = get32(in + 12);
    h->seq = get64(in + 16);
    if (h->magic != GW_WIRE_MAGIC || h->flags || h->reserved) return -EBADMSG;
    if (h->type == 0 || h->type > GW_WIRE_TYPE_MAX) return -EPROTO;
    if (h->length > GW_WIRE_MAX_PAYLOAD) return -EMSGSIZE;
    return 0;
}

int gw_wire_record_split(const uint8_t *buf, size_t len, struct gw_wire_header *h,
                         const uint8_t **payload, size_t *used)
{
    if (len < GW_WIRE_HEADER_SIZE) return -EAGAIN;
    int r = gw_wire_header_parse(buf, h);
    if (r) return r;
    if (len - GW_WIRE_HEADER_SIZE < h->length) return -EAGAIN;
    *payload = buf + GW_WIRE_HEADER_SIZE;
    *used = GW_WIRE_HEADER_SIZE + (size_t)h->length;
    return 0;
}

const char *gw_wire_strerror(int err)
{
    switch (err) {
    case -EBADMSG: return "malformed record (bad header fields, lengths or payload layout)";
    case -EILSEQ: return "corrupt lz4 block (it does not decode to exactly one 4 KiB page)";
    case -EPROTO: return "unknown or unexpected record type";
    case -EMSGSIZE: return "record length over the maximum";
    case -EAGAIN: return "truncated record";
    case -ERANGE: return "page frame number outside guest memory";
    case -EACCES: return "authentication failed";
    default: return "wire error";
    }
}

/* protobuf-c checks the encoding; these check what the encoding cannot say. */
#define UNPACK_OR_FAIL(type, fn, p, len, err)                                  \
    type *m = fn(NULL, len, p);                                                \
    if (!m) { *err = -EBADMSG; return NULL; }

static void *bad(ProtobufCMessage *m, int *err)
{
    protobuf_c_message_free_unpacked(m, NULL);
    *err = -EBADMSG;
    return NULL;
}

Godwit__V1__MigHello *gw_wire_unpack_hello(const uint8_t *p, size_t len, int *err)
{
    UNPACK_OR_FAIL(Godwit__V1__MigHello, godwit__v1__mig_hello__unpack, p, len, err);
    if (m->version == 0 || m->nonce.len != GW_WIRE_NONCE_SIZE ||
        m->session_id.len != GW_WIRE_SESSION_ID_SIZE || m->nstreams == 0 ||
        m->nstreams > GW_WIRE_MAX_STREAMS || m->stream_index >= m->nstreams ||
        m->mem_size % 4096 != 0 || m->mem_size == 0)
        return bad(&m->base, err);
    return m;
}

Godwit__V1__MigChallenge *gw_wire_unpack_challenge(const uint8_t *p, size_t len, int *err)
{
    UNPACK_OR_FAIL(Godwit__V1__MigChallenge, godwit__v1__mig_challenge__unpack, p, len, err);
    if (m->version == 0 || m->nonce.len != GW_WIRE_NONCE_SIZE) return bad(&m->base, err);
    return m;
}

Godwit__V1__MigAuth *gw_wire_unpack_auth(const uint8_t *p, size_t len, int *err)
{
    UNPACK_OR_FAIL(Godwit__V1__MigAuth, godwit__v1__mig_auth__unpack, p, len, err);
    if (m->mac.len != GW_WIRE_MAC_SIZE) return bad(&m->base, err);
    return m;
}

Godwit__V1__MigEndOfRound *gw_wire_unpack_end_of_round(const uint8_t *p, size_t len, int *err)
{
    UNPACK_OR_FAIL(Godwit__V1__MigEndOfRound, godwit__v1__mig_end_of_round__unpack, p, len, err);
    return m;
}

Godwit__V1__MigDigest *gw_wire_unpack_digest(const uint8_t *p, size_t len, int *err)
{
    UNPACK_OR_FAIL(Godwit__V1__MigDigest, godwit__v1__mig_digest__unpack, p, len, err);
    if (m->xxh3_128.len != 16) return bad(&m->base, err);
    return m;
}

Godwit__V1__MigError *gw_wire_unpack_error(const uint8_t *p, size_t len, int *err)
{
    UNPACK_OR_FAIL(Godwit__V1__MigError, godwit__v1__mig_error__unpack, p, len, err);
    return m;
}

int gw_wire_pack_msg(const ProtobufCMessage *msg, uint8_t **out, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (n > GW_WIRE_MAX_PAYLOAD) return -EMSGSIZE;
    /* malloc(0) may return NULL; an empty message is legal, so ask for one byte. */
    uint8_t *b = malloc(n ? n : 1);
    if (!b) return -ENOMEM;
    *len = protobuf_c_message_pack(msg, b);
    *out = b;
    return 0;
}
