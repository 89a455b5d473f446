/* The migration port's HELLO decoder (see migport.h), alone in its file so that a fuzz
 * target can instrument exactly it. */
#include "engine/daemon/migport.h"

#include <stdio.h>
#include <string.h>

#include "engine/daemon/daemon.h"

static uint32_t le32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

int gw_migport_parse_hello(const uint8_t *buf, size_t n, char *name, size_t namelen)
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
    if (hello->stream_index == 0 && hello->nstreams == 1 && hello->config && hello->config->name &&
        strlen(hello->config->name) < namelen && gw_vm_name_ok(hello->config->name)) {
        snprintf(name, namelen, "%s", hello->config->name);
        r = 1;
    }
    godwit__v1__mig_hello__free_unpacked(hello, NULL);
    return r;
}
