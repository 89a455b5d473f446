/* TLS for the gRPC API (server and client), on the same OpenSSL stack as the migration
 * streams: TLS 1.2 or 1.3, ALPN "h2" (gRPC over TLS requires it), the server's certificate
 * and key from files, and optionally mutual TLS (clients must show a certificate of a given
 * CA). h2c (plaintext HTTP/2) stays for loopback and for an explicit operator choice. */
#ifndef GW_API_GRPC_TLS_H
#define GW_API_GRPC_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

/* A server context: cert (chain) and key files; client_ca NULL/"" = no client certificates,
 * else every client must present one signed by it. 0, or -errno with a reason in err. */
int gw_grpc_tls_server_ctx(const char *cert, const char *key, const char *client_ca, SSL_CTX **out, char *err,
                           size_t errlen);

/* A client context: ca verifies the server (NULL/"" = the system's roots); cert and key (both
 * or neither) are this client's certificate for mutual TLS. 0 or -errno with err. */
int gw_grpc_tls_client_ctx(const char *ca, const char *cert, const char *key, SSL_CTX **out, char *err,
                           size_t errlen);

/* Whether "host:port" / "[v6]:port" / "unix:/path" names this machine only (a unix socket,
 * localhost, 127.0.0.0/8 or ::1). */
bool gw_grpc_addr_is_loopback(const char *addr);

#endif
