/* libFuzzer target for the spellings an operator or a client hands in as text, through the API
 * (CreateVmRequest's guest, net and disk; a migration's destination; a backup's CPU priority)
 * or the command line: guest specs (engine/vm/guest_spec.c), network specs and MACs
 * (engine/vm/net_spec.c), RBD disk specs (engine/vm/blk_rbd.c), transport URLs
 * (engine/transport/conn.c), CPU priorities (engine/common/cpu_prio.c) and sizes
 * (engine/common/util.c). The first byte picks the parser; the rest, cut at a NUL, is the text.
 * What a parser accepts is checked for what its header promises, and what can be written back
 * is read again to the same value. */
#include "engine/common/cpu_prio.h"
#include "engine/common/util.h"
#include "engine/transport/conn.h"
#include "engine/vm/blk_rbd.h"
#include "engine/vm/guest_spec.h"
#include "engine/vm/net_spec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_MAX 1024

static void check_name(const char *s, size_t cap, size_t min)
{
    size_t n = strnlen(s, cap);
    if (n == cap || n < min) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned mode = data[0] % 7;
    char text[TEXT_MAX + 1];
    size_t n = size - 1 < TEXT_MAX ? size - 1 : TEXT_MAX;
    memcpy(text, data + 1, n);
    text[n] = 0;
    char err[256];
    if (mode == 0) {
        struct gw_guest_spec g;
        gw_guest_spec_parse(text, &g, err, sizeof err);
    } else if (mode == 1) {
        struct gw_net_spec ns;
        if (gw_net_spec_parse(text, "fuzz-vm", &ns, err, sizeof err) == 0) {
            check_name(ns.tap, sizeof ns.tap, 1);
            if ((ns.mac[0] & 1) || !memcmp(ns.mac, "\0\0\0\0\0\0", 6)) abort();   /* unicast, not zero */
        }
    } else if (mode == 2) {
        uint8_t mac[6], again[6];
        char out[18];
        if (gw_net_parse_mac(text, mac) == 0) {
            gw_net_format_mac(mac, out);
            if (gw_net_parse_mac(out, again) || memcmp(mac, again, 6)) abort();
        }
    } else if (mode == 3) {
        struct gw_rbd_spec r;
        if (gw_rbd_spec_parse(text, &r, err, sizeof err) == 0) {
            check_name(r.pool, sizeof r.pool, 1);
            check_name(r.image, sizeof r.image, 1);
            check_name(r.conf, sizeof r.conf, 0);
            check_name(r.keyring, sizeof r.keyring, 0);
            check_name(r.id, sizeof r.id, 0);
        }
    } else if (mode == 4) {
        char scheme[16], host[64];
        uint16_t port;
        if (gw_url_parse(text, scheme, sizeof scheme, host, sizeof host, &port) == 0) {
            check_name(scheme, sizeof scheme, 1);
            check_name(host, sizeof host, 1);
        }
    } else if (mode == 5) {
        struct gw_cpu_prio p, q;
        char name[32];
        if (gw_cpu_prio_parse(text, &p) == 0) {
            if (p.nice < 0 || p.nice > 19) abort();
            gw_cpu_prio_name(&p, name, sizeof name);
            if (gw_cpu_prio_parse(name, &q) || q.cls != p.cls || q.nice != p.nice) abort();
        }
    } else {
        uint64_t v;
        gw_parse_size(text, &v);
    }
    return 0;
}
