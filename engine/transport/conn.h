/* A connection that carries migration records, behind one ops table with two back ends:
 * TCP (tcp.c) and RDMA (rdma.c), chosen by the URL scheme in one place (conn.c). Everything
 * above the socket or verbs calls (record framing, handshake, multi-stream sessions) is
 * shared, so it is tested over TCP.
 *
 * URLs: "tcp:HOST:PORT" and "rdma:HOST:PORT"; HOST may be a name, an IPv4 address or an
 * IPv6 address in brackets ("tcp:[::1]:7000"). PORT 0 in a listen URL picks a free port.
 *
 * Errors are negative errno values; functions that can fail take a struct gw_err (may be
 * NULL) that receives a one-line message for the operator. A connection may be used by one
 * sending and one receiving thread at the same time, not by two of either. */
#ifndef GW_TRANSPORT_CONN_H
#define GW_TRANSPORT_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "engine/codec/wire.h"
#include "engine/transport/rdma_verbs.h"

struct gw_err {
    int code;        /* negative errno, 0 = none */
    char msg[256];
};

/* Sets e (when not NULL) and returns code, so that `return gw_err_set(e, -EIO, ...)` works. */
int gw_err_set(struct gw_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

struct gw_conn;

struct gw_conn_ops {
    const char *name;
    /* Sends every byte of iov[0..iovcnt) (any count; iov is not modified); 0 or -errno
     * (-ETIMEDOUT, -EPIPE, ...). */
    int (*sendv)(struct gw_conn *c, const struct iovec *iov, int iovcnt, struct gw_err *err);
    /* Receives 1..len bytes into buf: the count, 0 when the peer closed, or -errno. */
    long (*recv_some)(struct gw_conn *c, void *buf, size_t len, struct gw_err *err);
    /* Optional: receives 1..(sum of lengths) bytes scattered over iov[0..iovcnt)
     * (iovcnt <= IOV_MAX), as recv_some. Saves a copy when pages go straight to memory. */
    long (*recvv)(struct gw_conn *c, const struct iovec *iov, int iovcnt, struct gw_err *err);
    /* Wakes threads blocked on c (they then fail); the connection must still be closed. */
    void (*shutdown)(struct gw_conn *c);
    /* Releases c and everything it holds. */
    void (*close)(struct gw_conn *c);
};

#define GW_CONN_ANY_STREAM UINT32_MAX

struct gw_conn {
    const struct gw_conn_ops *ops;
    void *priv;           /* back end state */
    int fd;               /* socket (TCP) or -1 */
    int timeout_ms;       /* per send/receive; 0 = none */
    uint32_t stream;      /* stream index stamped on sent records and expected on received
                           * ones; GW_CONN_ANY_STREAM accepts any (before the HELLO) */
    uint64_t send_seq;    /* next sequence number to send (sending thread only) */
    uint64_t recv_seq;    /* next sequence number expected (receiving thread only) */
    uint64_t bytes_sent;  /* sending thread only */
    uint64_t bytes_recv;  /* receiving thread only */
    uint32_t max_payload; /* tighter receive limit than GW_WIRE_MAX_PAYLOAD; 0 = none */
    /* The record being received (receiving thread only): its header, and payload bytes
     * not yet read. */
    struct gw_wire_header rec;
    uint32_t rec_left;
    char peer[96];        /* "tcp:1.2.3.4:5678" for messages */
    /* The session token of the stream's preamble (tls.h), repeated in the source's HELLO and
     * compared there by the destination; all zero = none. */
    uint8_t token[32];
    /* RDMA WRITE and friends (rdma_verbs.h): set by the RDMA back end, or by a test double;
     * ops NULL on every other connection. Owned by whoever set it. */
    struct gw_rdma_verbs rdma;
};

struct gw_listener;
struct gw_listener_ops {
    int (*accept)(struct gw_listener *l, int timeout_ms, struct gw_conn **out, struct gw_err *err);
    void (*close)(struct gw_listener *l);
};
struct gw_listener {
    const struct gw_listener_ops *ops;
    void *priv;
    int fd;
    char url[96];         /* the bound address, with the real port */
};

/* Splits "scheme:host:port". host gets the host without brackets. Returns 0 or -EINVAL. */
int gw_url_parse(const char *url, char *scheme, size_t scheme_len, char *host, size_t host_len,
                 uint16_t *port);

/* Connects to url within timeout_ms (0 = the system's). *out is owned by the caller and
 * released with gw_conn_close. */
int gw_conn_connect(const char *url, int timeout_ms, struct gw_conn **out, struct gw_err *err);

/* Listens on url; *out is released with gw_listener_close. */
int gw_listen(const char *url, struct gw_listener **out, struct gw_err *err);

/* Waits up to timeout_ms (< 0: forever) for a connection. -ETIMEDOUT when none came. */
int gw_listener_accept(struct gw_listener *l, int timeout_ms, struct gw_conn **out,
                       struct gw_err *err);
void gw_listener_close(struct gw_listener *l);

/* Wraps a connected stream socket (accepted elsewhere, or one end of a socketpair) as a TCP
 * connection that owns fd from then on. */
int gw_conn_from_fd(int fd, struct gw_conn **out, struct gw_err *err);

/* Sets the send and receive timeout (ms, 0 = none). */
int gw_conn_set_timeout(struct gw_conn *c, int timeout_ms);

/* TCP knobs (tcp_tune.c), for bulk traffic that shares a bottleneck with urgent traffic.
 * Each works on any connection with a socket (TCP, TLS over TCP) and returns 0, -ENOTSUP
 * when there is none (RDMA), or the system's -errno: callers treat them as best effort. */
struct gw_conn_tcp_stats {
    uint32_t rtt_us, min_rtt_us;   /* smoothed and lowest round trip seen */
    uint64_t bytes_acked;          /* payload bytes the peer acknowledged, since connect */
    uint32_t notsent_bytes;        /* written but not yet sent */
    uint64_t delivery_rate;        /* the kernel's latest delivery rate sample, bytes/s */
};
int gw_conn_tcp_stats(struct gw_conn *c, struct gw_conn_tcp_stats *out);
/* Caps the kernel's pacing of c to bytes_per_s (0: no cap). */
int gw_conn_set_max_pacing(struct gw_conn *c, uint64_t bytes_per_s);
/* A send blocks (poll waits) while more than bytes sit unsent in c's socket. */
int gw_conn_set_notsent_lowat(struct gw_conn *c, uint32_t bytes);
/* Marks c's packets urgent: DSCP EF, the interactive band of the host's queues, and a
 * congestion control that does not pace (small records leave at once). */
int gw_conn_mark_urgent(struct gw_conn *c);

void gw_conn_shutdown(struct gw_conn *c);
void gw_conn_close(struct gw_conn *c);

/* Growable receive buffer owned by its user; free with gw_rbuf_free. */
struct gw_rbuf {
    uint8_t *data;
    size_t cap;
};
void gw_rbuf_free(struct gw_rbuf *b);

/* Sends one record: header (type, c->stream, c->send_seq++) and payload[0..len).
 * len <= GW_WIRE_MAX_PAYLOAD, else -EMSGSIZE. */
int gw_conn_send_record(struct gw_conn *c, enum gw_wire_type type, const void *payload,
                        size_t len, struct gw_err *err);

/* Sends one record whose payload is iov[1..iovcnt) back to back (any count, total <=
 * GW_WIRE_MAX_PAYLOAD, else -EMSGSIZE), so page data goes from guest memory to the socket
 * without a copy. iov[0] is a free slot of the caller's that this call points at the
 * record header (valid during the call only); the other entries are not modified. */
int gw_conn_send_recordv(struct gw_conn *c, enum gw_wire_type type, struct iovec *iov,
                         int iovcnt, struct gw_err *err);

/* The two halves of gw_conn_recv_record, for a receiver that puts a payload's parts in
 * different places: the header (checked as below; errors as below), then the payload in
 * one or more gw_conn_recv_payload calls that together read exactly h->length bytes,
 * before the next header. */
int gw_conn_recv_header(struct gw_conn *c, struct gw_wire_header *h, struct gw_err *err);
/* Reads the next bytes of the current record's payload into iov[0..iovcnt) (any count),
 * filling every entry. -EMSGSIZE when that is more than the record has left (nothing is
 * read), -EPIPE when the peer hung up ("mid-record" with how far it got), -ETIMEDOUT, or the
 * back end's -errno. */
int gw_conn_recv_payload(struct gw_conn *c, const struct iovec *iov, int iovcnt, struct gw_err *err);

/* Receives one whole record: validates the header (gw_wire_header_parse), the stream index
 * and the sequence number, grows buf to the payload length (bounded by GW_WIRE_MAX_PAYLOAD)
 * and reads the payload into buf->data. Returns 0; -ESHUTDOWN when the peer closed between
 * records; -EPIPE when it closed inside a record; -EBADMSG/-EPROTO/-EMSGSIZE for a bad
 * header, stream or sequence; -ETIMEDOUT; -ENOMEM; or the back end's -errno. */
int gw_conn_recv_record(struct gw_conn *c, struct gw_wire_header *h, struct gw_rbuf *buf,
                        struct gw_err *err);

/* Sends an ERROR record (code, message); best effort, for telling the peer why we stop. */
void gw_conn_send_error(struct gw_conn *c, int code, const char *msg);

/* Back end constructors, for conn.c. */
int gw_tcp_connect(const char *host, uint16_t port, int timeout_ms, struct gw_conn **out,
                   struct gw_err *err);
int gw_tcp_listen(const char *host, uint16_t port, struct gw_listener **out, struct gw_err *err);
int gw_rdma_connect(const char *host, uint16_t port, int timeout_ms, struct gw_conn **out,
                    struct gw_err *err);
int gw_rdma_listen(const char *host, uint16_t port, struct gw_listener **out, struct gw_err *err);

#endif
