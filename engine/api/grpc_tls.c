/* TLS contexts for the gRPC API (see grpc_tls.h). */
#include "engine/api/grpc_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <stdio.h>
#include <string.h>

static const unsigned char ALPN_H2[] = "\x02h2";

static const char *why(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e) ERR_error_string_n(e, buf, len);
    else snprintf(buf, len, "no detail");
    ERR_clear_error();
    return buf;
}

/* The server picks "h2" or refuses the connection: gRPC runs on nothing else. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned inlen, void *arg)
{
    (void)ssl; (void)arg;
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, ALPN_H2, sizeof ALPN_H2 - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *base_ctx(bool server)
{
    SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!c) return NULL;
    if (!SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION)) { SSL_CTX_free(c); return NULL; }
    SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return c;
}

int gw_grpc_tls_server_ctx(const char *cert, const char *key, const char *client_ca, SSL_CTX **out, char *err,
                           size_t errlen)
{
    char w[256];
    SSL_CTX *c = base_ctx(true);
    if (!c) { snprintf(err, errlen, "TLS: %s", why(w, sizeof w)); return -ENOMEM; }
    int r = -EACCES;
    if (SSL_CTX_use_certificate_chain_file(c, cert) != 1) { snprintf(err, errlen, "API certificate %s: %s", cert, why(w, sizeof w)); goto fail; }
    if (SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(c) != 1) {
        snprintf(err, errlen, "API key %s: %s", key, why(w, sizeof w));
        goto fail;
    }
    if (client_ca && *client_ca) {
        if (SSL_CTX_load_verify_locations(c, client_ca, NULL) != 1) {
            snprintf(err, errlen, "API client CA %s: %s", client_ca, why(w, sizeof w));
            goto fail;
        }
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    SSL_CTX_set_alpn_select_cb(c, alpn_select, NULL);
    *out = c;
    return 0;
fail:
    SSL_CTX_free(c);
    return r;
}

int gw_grpc_tls_client_ctx(const char *ca, const char *cert, const char *key, SSL_CTX **out, char *err,
                           size_t errlen)
{
    char w[256];
    SSL_CTX *c = base_ctx(false);
    if (!c) { snprintf(err, errlen, "TLS: %s", why(w, sizeof w)); return -ENOMEM; }
    int r = -EACCES;
    if (ca && *ca ? SSL_CTX_load_verify_locations(c, ca, NULL) != 1 : SSL_CTX_set_default_verify_paths(c) != 1) {
        snprintf(err, errlen, "API CA %s: %s", ca && *ca ? ca : "(system)", why(w, sizeof w));
        goto fail;
    }
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    if ((cert && *cert) != (key && *key)) { snprintf(err, errlen, "a client certificate needs its key"); r = -EINVAL; goto fail; }
    if (cert && *cert && (SSL_CTX_use_certificate_chain_file(c, cert) != 1 ||
                          SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1)) {
        snprintf(err, errlen, "client certificate %s: %s", cert, why(w, sizeof w));
        goto fail;
    }
    if (SSL_CTX_set_alpn_protos(c, ALPN_H2, sizeof ALPN_H2 - 1) != 0) { snprintf(err, errlen, "ALPN"); goto fail; }
    *out = c;
    return 0;
fail:
    SSL_CTX_free(c);
    return r;
}

bool gw_grpc_addr_is_loopback(const char *addr)
{
    if (!strncmp(addr, "unix:", 5)) return true;
    char host[256];
    const char *end;
    if (addr[0] == '[') {
        end = strchr(addr, ']');
        if (!end) return false;
        addr++;
    } else {
        end = strrchr(addr, ':');
        if (!end) return false;
    }
    size_t n = (size_t)(end - addr);
    if (n == 0 || n >= sizeof host) return false;
    memcpy(host, addr, n);
    host[n] = 0;
    if (!strcmp(host, "localhost")) return true;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}
