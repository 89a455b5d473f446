/* The migration port's HELLO decoder (see migport.h), alone in its file so that a fuzz
 * target can instrument exactly it. */
#include "engine/daemon/migport.h"

#include <stdio.h>
#include <string.h>

#include "engine/daemon/daemon.h"

_Static_assert(GW_VM_NAME_MAX < sizeof ((struct gw_migport_hello *)0)->name, "a VM name fits the HELLO's");

static uint32_t le32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

/* The announced session is one the port can hand over; stream 0 names a valid VM. */
static bool acceptable(const Godwit__V1__MigHello *h)
{
    if (h->session_id.len != GW_WIRE_SESSION_ID_SIZE || h->nstreams == 0 ||
        h->nstreams > GW_MIGPORT_MAX_STREAMS || h->stream_index >= h->nstreams)
        return false;
    if (h->stream_index) return true;
    return h->config && h->config->name && strlen(h->config->name) <= GW_VM_NAME_MAX &&
           gw_vm_name_ok(h->config->name);
}

int gw_migport_parse_hello(const uint8_t *buf, size_t n, struct gw_migport_hello *out)
{
    if (n < GW_WIRE_HEADER_SIZE) return 0;
    uint32_t len = le32(buf + 8);
    if (le32(buf) != GW_WIRE_MAGIC || buf[4] != GW_WIRE_HELLO || buf[5] || buf[6] || buf[7] ||
        len > GW_WIRE_MAX_HANDSHAKE_PAYLOAD)
        return -1;
    if (n - GW_WIRE_HEADER_SIZE < len) return 0;
    Godwit__V1__MigHello *hello = godwit__v1__mig_hello__unpack(NULL, len, buf + GW_WIRE_HEADER_SIZE);
    if (!hello) return -1;
    int r = -1;
    if (acceptable(hello)) {
        memcpy(out->session_id, hello->session_id.data, GW_WIRE_SESSION_ID_SIZE);
        out->stream_index = hello->stream_index;
        out->nstreams = hello->nstreams;
        snprintf(out->name, sizeof out->name, "%s", hello->stream_index ? "" : hello->config->name);
        r = 1;
    }
    godwit__v1__mig_hello__free_unpacked(hello, NULL);
    return r;
}
