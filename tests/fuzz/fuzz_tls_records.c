/* libFuzzer target for the TLS 1.3 record layer Godwit builds itself
 * (engine/transport/tls_records.c): what a peer, or a machine in the middle, can put on a
 * migration stream after the handshake. A random byte stream alone would stop at the first
 * tag, so the input is a program instead: each step seals a record under the stream's real
 * keys (application data, alerts, KeyUpdates, any inner type, padding, lengths past 2^14), or
 * breaks one (a flipped tag, a skipped sequence number, a wrong outer header), or writes raw
 * bytes. A model of the receiver's rules, written here from RFC 8446 and tls_records.h, says
 * which application bytes must come out and whether the stream then ends cleanly or fails;
 * the receiver, reading through a real socket in reads whose sizes the input also picks, must
 * deliver exactly those bytes and end the same way. Nothing may crash, leak or read past a
 * buffer, and no byte of a record that failed may ever be reported. */
#include "engine/transport/conn.h"
#include "engine/transport/tls_records.h"
#include "tests/fuzz/fuzz_input.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_PLAIN 16384u
#define TAG 16u
#define STREAM_MAX (1u << 20)   /* bytes of records per input */
#define STEPS_MAX 64u

/* What the model says the receiver must do once it has read everything. */
enum end { END_EOF, END_ERROR, END_EITHER };

struct sealer {
    EVP_CIPHER_CTX *cx;
    const EVP_CIPHER *cipher;
    const EVP_MD *md;
    uint8_t secret[48];
    size_t slen;
    uint8_t iv[12];
    uint64_t seq;
};

/* The stream being built, and what the model expects from it. */
struct program {
    uint8_t *wire;
    size_t wlen;
    uint8_t *expect;      /* application bytes the receiver must deliver, in order */
    size_t elen;
    bool settled;         /* the receiver stops reading at or before this point */
    enum end end;
};

static int sealer_keys(struct sealer *s)
{
    uint8_t key[32];
    int klen = EVP_CIPHER_get_key_length(s->cipher);
    if (gw_tls13_expand_label(s->md, s->secret, s->slen, "key", key, (size_t)klen) ||
        gw_tls13_expand_label(s->md, s->secret, s->slen, "iv", s->iv, sizeof s->iv) ||
        EVP_EncryptInit_ex(s->cx, s->cipher, NULL, key, NULL) != 1)
        return -1;
    s->seq = 0;
    return 0;
}

static int sealer_update(struct sealer *s)
{
    uint8_t next[48];
    if (gw_tls13_expand_label(s->md, s->secret, s->slen, "traffic upd", next, s->slen)) return -1;
    memcpy(s->secret, next, s->slen);
    return sealer_keys(s);
}

/* Appends one record: header (as given), then plain[0, len) encrypted, then the tag. */
static int seal(struct sealer *s, struct program *pg, const uint8_t hdr[5], const uint8_t *plain, size_t len,
                bool flip_tag)
{
    if (pg->wlen + 5 + len + TAG > STREAM_MAX) return -1;
    uint8_t nonce[12];
    memcpy(nonce, s->iv, sizeof nonce);
    for (int i = 0; i < 8; i++) nonce[11 - i] ^= (uint8_t)(s->seq >> (8 * i));
    uint8_t *out = pg->wire + pg->wlen;
    memcpy(out, hdr, 5);
    int n;
    if (EVP_EncryptInit_ex(s->cx, NULL, NULL, NULL, nonce) != 1 || EVP_EncryptUpdate(s->cx, NULL, &n, hdr, 5) != 1 ||
        (len && EVP_EncryptUpdate(s->cx, out + 5, &n, plain, (int)len) != 1) ||
        EVP_EncryptFinal_ex(s->cx, out + 5 + len, &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(s->cx, EVP_CTRL_AEAD_GET_TAG, TAG, out + 5 + len) != 1)
        return -1;
    if (flip_tag) out[5 + len + TAG - 1] ^= 1;
    pg->wlen += 5 + len + TAG;
    s->seq++;
    return 0;
}

static void settle(struct program *pg, enum end e)
{
    if (pg->settled) return;
    pg->settled = true;
    pg->end = e;
}

/* One step of the program. -1 when the stream is full (the program ends there). */
static int step(struct sealer *s, struct program *pg, struct input *in, uint8_t *plain)
{
    unsigned op = take(in) % 8, flags = take(in);
    size_t len = 0, pad = (flags & 0x30) == 0x30 ? 1 + (flags & 3) : 0;
    uint8_t type = 23;
    bool flip = false;
    uint8_t hdr[5] = {23, 3, 3, 0, 0};
    switch (op) {
    case 0: case 1: case 2: {   /* application data, up to one byte past 2^14 */
        len = ((size_t)take(in) << 8 | take(in)) % (MAX_PLAIN + 2);
        uint8_t seed = (uint8_t)take(in);
        for (size_t i = 0; i < len; i++) plain[i] = (uint8_t)(seed + i * 7);
        break;
    }
    case 3: {                   /* any inner type, a few bytes of the input as content */
        type = (uint8_t)take(in);
        len = take(in) % 96;
        for (size_t i = 0; i < len; i++) plain[i] = (uint8_t)take(in);
        break;
    }
    case 4:                     /* KeyUpdate; request_update from the input */
        type = 22;
        len = 5;
        memcpy(plain, (uint8_t[]){24, 0, 0, 1, (flags & 0x40) ? (uint8_t)take(in) : 0}, 5);
        break;
    case 5:                     /* an alert: close_notify, or whatever the input says */
        type = 21;
        len = 2;
        plain[0] = (flags & 0x80) ? (uint8_t)take(in) : 1;
        plain[1] = (flags & 0x40) ? (uint8_t)take(in) : 0;
        break;
    case 6: {                   /* raw bytes: the stream is no longer made of records */
        size_t k = take(in) % 48;
        if (pg->wlen + k > STREAM_MAX) return -1;
        for (size_t i = 0; i < k; i++) pg->wire[pg->wlen++] = (uint8_t)take(in);
        if (k) settle(pg, END_EITHER);
        return 0;
    }
    default: {                  /* a record broken on the way */
        len = take(in) % 200;
        memset(plain, 0x5a, len);
        switch (flags % 5) {
        case 0: flip = true; break;
        case 1: s->seq++; break;                           /* one sequence number skipped */
        case 2: hdr[0] = (uint8_t)(flags >> 3 | 1); if (hdr[0] == 23) hdr[0] = 22; break;
        case 3: hdr[2] = 4; break;
        default: hdr[1] = 2; break;
        }
        settle(pg, END_ERROR);
        break;
    }
    }
    /* The record: content, inner type, zero padding. */
    plain[len] = type;
    memset(plain + len + 1, 0, pad);
    size_t plen = len + 1 + pad, clen = plen + TAG;
    if (clen > 0xffff) return -1;
    hdr[3] = (uint8_t)(clen >> 8);
    hdr[4] = (uint8_t)clen;
    if (seal(s, pg, hdr, plain, plen, flip)) return -1;
    if (pg->settled) return 0;
    /* What the receiver must make of it. */
    if (clen > MAX_PLAIN + 256 || len + pad > MAX_PLAIN || pad || type == 0) { settle(pg, END_ERROR); return 0; }
    if (type == 23) {
        memcpy(pg->expect + pg->elen, plain, len);
        pg->elen += len;
    } else if (type == 21) {
        settle(pg, len == 2 && plain[1] == 0 ? END_EOF : END_ERROR);
    } else if (type == 22 && len == 5 && plain[0] == 24 && !plain[1] && !plain[2] && plain[3] == 1 && !plain[4]) {
        if (sealer_update(s)) return -1;
    } else {
        settle(pg, END_ERROR);
    }
    return 0;
}

struct writer {
    int fd;
    const uint8_t *p;
    size_t n;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    for (size_t off = 0; off < w->n;) {
        ssize_t k = send(w->fd, w->p + off, w->n - off, MSG_NOSIGNAL);
        if (k <= 0) break;   /* the reader stopped (it failed, as the model may say it must) */
        off += (size_t)k;
    }
    close(w->fd);
    return NULL;
}

/* Reads everything through the record layer in reads the input sizes, and checks it against
 * the model. */
static void receive(struct gw_conn *c, const struct program *pg, struct input *in)
{
    static const size_t sizes[] = {1, 5, 63, 64, 100, 4096, 16383, 16384, 16385, 70000};
    enum { NSIZES = sizeof sizes / sizeof *sizes };
    size_t cap = 70000 * 3;
    uint8_t *buf = malloc(cap);
    if (!buf) abort();
    size_t got = 0;
    long r;
    struct gw_err err = {0};
    for (;;) {
        struct iovec iov[3];
        /* Once the input's sizes run out, whole-buffer reads (one byte at a time would only be
         * slow). */
        int cnt = in->n ? 1 + (int)(take(in) % 3) : 3;
        size_t off = 0;
        for (int i = 0; i < cnt; i++) {
            size_t pick = in->n ? take(in) % NSIZES : NSIZES - 1;
            iov[i] = (struct iovec){buf + off, sizes[pick]};
            off += iov[i].iov_len;
        }
        r = c->ops->recvv(c, iov, cnt, &err);
        if (r <= 0) break;
        /* Every byte reported is the next byte the model expects. */
        if (got + (size_t)r > pg->elen) abort();
        size_t k = (size_t)r;
        for (int i = 0; k; i++) {
            size_t part = iov[i].iov_len < k ? iov[i].iov_len : k;
            if (memcmp(iov[i].iov_base, pg->expect + got, part)) abort();
            got += part;
            k -= part;
        }
    }
    if (got != pg->elen) abort();
    enum end e = pg->settled ? pg->end : END_EOF;
    if ((e == END_EOF && r != 0) || (e == END_ERROR && r >= 0)) abort();
    if (r < 0 && !err.msg[0]) abort();   /* a failure names itself */
    /* The end holds: a failed stream keeps failing, an ended one keeps ending. */
    struct iovec one = {buf, 1};
    long again = c->ops->recvv(c, &one, 1, &err);
    if ((r == 0 && again != 0) || (r < 0 && again >= 0)) abort();
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    bool aes256 = take(&in) & 1;
    struct sealer s = {.cipher = aes256 ? EVP_aes_256_gcm() : EVP_aes_128_gcm(), .md = aes256 ? EVP_sha384() : EVP_sha256()};
    s.slen = (size_t)EVP_MD_get_size(s.md);
    for (size_t i = 0; i < s.slen; i++) s.secret[i] = (uint8_t)(i * 13 + 1);
    struct gw_tls_traffic tr = {.cipher_nid = aes256 ? NID_aes_256_gcm : NID_aes_128_gcm, .md = s.md,
                                .len = s.slen, .what = "tls13-psk", .suite = "fuzz"};
    memcpy(tr.rx, s.secret, s.slen);
    memset(tr.tx, 0x77, s.slen);
    struct program pg = {.wire = malloc(STREAM_MAX), .expect = malloc(STREAM_MAX)};
    uint8_t *plain = malloc(MAX_PLAIN + 256);
    s.cx = EVP_CIPHER_CTX_new();
    if (!pg.wire || !pg.expect || !plain || !s.cx || sealer_keys(&s)) abort();
    /* The program: steps until the input or the stream runs out. The read sizes come from
     * the input's last bytes, so they do not shift with the steps. */
    size_t tail = in.n / 4;
    struct input reads = {in.p + in.n - tail, tail};
    in.n -= tail;
    for (unsigned i = 0; i < STEPS_MAX && in.n; i++)
        if (step(&s, &pg, &in, plain)) break;
    EVP_CIPHER_CTX_free(s.cx);
    free(plain);

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) abort();
    struct gw_conn *c = NULL;
    struct gw_err err = {0};
    if (gw_conn_from_fd(sv[1], &c, &err)) abort();
    gw_conn_set_timeout(c, 10000);   /* a hang is a finding, not a wait */
    if (gw_tls_records_wrap(&c, &tr, &err)) abort();
    struct writer w = {sv[0], pg.wire, pg.wlen};
    pthread_t t;
    if (pthread_create(&t, NULL, writer_main, &w)) abort();
    receive(c, &pg, &reads);
    gw_conn_shutdown(c);   /* a writer still blocked on a full socket fails now */
    pthread_join(t, NULL);
    gw_conn_close(c);
    free(pg.wire);
    free(pg.expect);
    return 0;
}
