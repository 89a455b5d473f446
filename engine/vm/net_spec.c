/* Parsing of a VM's network spec (see net_spec.h). */
#include "engine/vm/net_spec.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine/common/util.h"

void gw_net_default_mac(const char *vm_name, uint8_t mac[6])
{
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    for (const char *p = vm_name; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ull;
    mac[0] = 0x52; mac[1] = 0x54; mac[2] = 0x00;
    mac[3] = (uint8_t)(h >> 16); mac[4] = (uint8_t)(h >> 8); mac[5] = (uint8_t)h;
}

int gw_net_parse_mac(const char *s, uint8_t mac[6])
{
    /* Exactly six pairs of hex digits with colons between: not sscanf's %x, which also takes
     * blanks, a sign and a 0x in a pair (" 2:54:..." and "+2:54:..." read as 02). */
    if (strlen(s) != 17) return -EINVAL;
    for (int i = 0; i < 6; i++)
        if (gw_hex_decode(s + 3 * i, &mac[i], 1) || (i < 5 && s[3 * i + 2] != ':')) return -EINVAL;
    if (mac[0] & 1) return -EINVAL;   /* multicast bit */
    static const uint8_t zero[6];
    return memcmp(mac, zero, 6) ? 0 : -EINVAL;
}

void gw_net_format_mac(const uint8_t mac[6], char out[18])
{
    snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
}

static bool tap_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

int gw_net_spec_parse(const char *spec, const char *vm_name, struct gw_net_spec *out, char *err, unsigned errlen)
{
    memset(out, 0, sizeof *out);
    if (strncmp(spec, "tap:", 4)) {
        snprintf(err, errlen, "network '%.64s' is not supported: tap:NAME[,mac=aa:bb:cc:dd:ee:ff] is", spec);
        return -EINVAL;
    }
    const char *name = spec + 4, *comma = strchr(name, ',');
    size_t n = comma ? (size_t)(comma - name) : strlen(name);
    bool ok = n >= 1 && n <= GW_NET_TAP_NAME_MAX && !(n == 1 && name[0] == '.') &&
              !(n == 2 && name[0] == '.' && name[1] == '.');
    for (size_t i = 0; ok && i < n; i++) ok = tap_char_ok(name[i]);
    if (!ok) {
        snprintf(err, errlen, "tap name must be 1-%u characters of [A-Za-z0-9._-]", GW_NET_TAP_NAME_MAX);
        return -EINVAL;
    }
    memcpy(out->tap, name, n);
    out->tap[n] = 0;
    if (comma) {
        if (strncmp(comma + 1, "mac=", 4)) {
            snprintf(err, errlen, "network option '%.32s' is unknown (mac= is the only one)", comma + 1);
            return -EINVAL;
        }
        if (gw_net_parse_mac(comma + 5, out->mac)) {
            snprintf(err, errlen, "mac '%.32s' is not a unicast address aa:bb:cc:dd:ee:ff", comma + 5);
            return -EADDRNOTAVAIL;
        }
        out->mac_given = true;
    } else {
        gw_net_default_mac(vm_name ? vm_name : "", out->mac);
    }
    return 0;
}
