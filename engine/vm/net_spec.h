/* A VM's network interface as the runner's --net and the API's CreateVmRequest.net spell it:
 * "tap:NAME[,mac=aa:bb:cc:dd:ee:ff]". One parser for the runner and godwitd (no KVM here), so
 * that the API refuses exactly what the runner would, and both derive the same default MAC. */
#ifndef GW_VM_NET_SPEC_H
#define GW_VM_NET_SPEC_H

#include <stdbool.h>
#include <stdint.h>

#define GW_NET_TAP_NAME_MAX 15u   /* IFNAMSIZ - 1 */

struct gw_net_spec {
    char tap[GW_NET_TAP_NAME_MAX + 1];   /* 1-15 of [A-Za-z0-9._-], not "." or ".." */
    uint8_t mac[6];                      /* the given MAC, else gw_net_default_mac(vm_name) */
    bool mac_given;
};

/* Parses spec for the VM vm_name into out. Returns 0; -EINVAL when the spec is malformed
 * (not "tap:", a bad tap name, an unknown option); -EADDRNOTAVAIL when mac= is not a unicast
 * address. err gets one line saying why. */
int gw_net_spec_parse(const char *spec, const char *vm_name, struct gw_net_spec *out, char *err, unsigned errlen);

/* 52:54:00 and three bytes of an FNV-1a hash of the VM's name: a VM keeps its MAC wherever it
 * is recreated. */
void gw_net_default_mac(const char *vm_name, uint8_t mac[6]);

/* Parses "aa:bb:cc:dd:ee:ff" into mac; -EINVAL unless it is a unicast address. */
int gw_net_parse_mac(const char *s, uint8_t mac[6]);

/* "aa:bb:cc:dd:ee:ff" (17 characters and the NUL). */
void gw_net_format_mac(const uint8_t mac[6], char out[18]);

#endif
