/* Linux guests and networks of daemon-managed VMs: the checks that keep a kernel, an initrd,
 * a command line and a tap within what this host's operator allowed.
 *
 * Files: a kernel or initrd path must be absolute, canonical (realpath(path) == path: no
 * symbolic link on the way) and inside one of image_roots, the rule disks follow; the runner
 * then opens exactly that path with O_NOFOLLOW. The rule is applied when the VM is defined,
 * when it arrives from another host (its path is the source's claim: this host's roots
 * decide), and before every cold start (roots change; files get replaced).
 *
 * Taps: only names the host's net_taps list allows. The daemon never creates taps or
 * bridges: the operator (or the orchestration above us) owns the host's network, its bridges,
 * VLANs and multi-queue taps for on-host migration; the daemon needs no network privilege of
 * its own and leaves nothing to clean up when a VM moves or the daemon restarts. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine/api/grpc_wire.h"
#include "engine/daemon/daemon.h"
#include "engine/vm/guest_spec.h"
#include "engine/vm/net_spec.h"

static int refuse(int code, const char *r, const char **reason, char *why, size_t whylen, const char *fmt,
                  const char *a, const char *b)
{
    *reason = r;
    snprintf(why, whylen, fmt, a, b);
    return code;
}

/* printable ASCII: the command line goes through argv and into the kernel's boot page */
static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) return false;
    return true;
}

static int check_image(const struct gw_daemon_config *cfg, const char *path, const char *what, const char **reason,
                       char *why, size_t whylen)
{
    const char *r, *msg = gw_config_image_refused(cfg, path, what, &r);
    if (!msg) return GW_GRPC_OK;
    /* A malformed path is the caller's mistake; the rest is this host's state. */
    int code = !strcmp(r, "IMAGE_PATH_INVALID") ? GW_GRPC_INVALID_ARGUMENT : GW_GRPC_FAILED_PRECONDITION;
    return refuse(code, r, reason, why, whylen, "%s: %s", path, msg);
}

int gw_vm_boot_check(const struct gw_daemon_config *cfg, const char *name, const char *guest, const char *kernel,
                     const char *initrd, const char *cmdline, const char *net, struct gw_vm_boot *out,
                     const char **reason, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    int code;
    if (!kernel[0] && (initrd[0] || cmdline[0]))
        return refuse(GW_GRPC_INVALID_ARGUMENT, "BOOT_KERNEL_REQUIRED", reason, why, whylen,
                      "boot.initrd and boot.cmdline need boot.kernel%s%s", "", "");
    if (!kernel[0] && !strcmp(guest, "linux"))
        return refuse(GW_GRPC_INVALID_ARGUMENT, "BOOT_KERNEL_REQUIRED", reason, why, whylen,
                      "guest linux needs boot.kernel%s%s", "", "");
    if (kernel[0] && guest[0] && strcmp(guest, "linux"))
        return refuse(GW_GRPC_INVALID_ARGUMENT, "BOOT_GUEST_CONFLICT", reason, why, whylen,
                      "boot.kernel boots Linux: guest must be \"\" or \"linux\", not %.64s%s", guest, "");
    if (kernel[0]) {
        if ((code = check_image(cfg, kernel, "kernel", reason, why, whylen))) return code;
        if (initrd[0] && (code = check_image(cfg, initrd, "initrd", reason, why, whylen))) return code;
        if (strlen(cmdline) > GW_LIMIT_CMDLINE_MAX) {
            char lim[16];
            snprintf(lim, sizeof lim, "%u", GW_LIMIT_CMDLINE_MAX);
            return refuse(GW_GRPC_INVALID_ARGUMENT, "CMDLINE_TOO_LONG", reason, why, whylen,
                          "boot.cmdline is longer than %s bytes%s", lim, "");
        }
        if (!printable(cmdline))
            return refuse(GW_GRPC_INVALID_ARGUMENT, "CMDLINE_INVALID", reason, why, whylen,
                          "boot.cmdline must be printable ASCII%s%s", "", "");
        memcpy(out->kernel, kernel, strlen(kernel) + 1);
        memcpy(out->initrd, initrd, strlen(initrd) + 1);
        memcpy(out->cmdline, cmdline, strlen(cmdline) + 1);
    }
    if (net[0]) {
        struct gw_net_spec ns;
        char err[160];
        int r = gw_net_spec_parse(net, name, &ns, err, sizeof err);
        if (r) return refuse(GW_GRPC_INVALID_ARGUMENT, r == -EADDRNOTAVAIL ? "MAC_INVALID" : "NET_INVALID", reason,
                             why, whylen, "net: %s%s", err, "");
        if (!gw_config_tap_allowed(cfg, ns.tap))
            return refuse(GW_GRPC_FAILED_PRECONDITION, "TAP_NOT_ALLOWED", reason, why, whylen,
                          "tap %s is not one this host's net_taps allow%s", ns.tap,
                          cfg->net_taps[0] ? "" : " (none configured: VMs get no network here)");
        snprintf(out->net, sizeof out->net, "tap:%s", ns.tap);
        gw_net_format_mac(ns.mac, out->mac);
    } else {
        struct gw_guest_spec gs;
        char err[160];
        if (!gw_guest_spec_parse(guest[0] ? guest : GW_DEFAULT_GUEST, &gs, err, sizeof err) &&
            gs.workload == GW_WL_NET_ECHO)
            return refuse(GW_GRPC_INVALID_ARGUMENT, "NET_REQUIRED", reason, why, whylen,
                          "guest %.64s needs a network (net tap:NAME)%s", guest, "");
    }
    return GW_GRPC_OK;
}

int gw_vm_boot_recheck(const struct gw_daemon_config *cfg, const char *name, const struct gw_vm_boot *b, char *why,
                       size_t whylen)
{
    char spec[64];
    if (b->net[0]) snprintf(spec, sizeof spec, "%s,mac=%s", b->net, b->mac);
    else spec[0] = 0;
    struct gw_vm_boot again;
    const char *reason;
    int code = gw_vm_boot_check(cfg, name, b->kernel[0] ? "linux" : "", b->kernel, b->initrd, b->cmdline, spec,
                                &again, &reason, why, whylen);
    return code ? -EPERM : 0;
}

void gw_vm_boot_argv(const struct gw_vm_boot *b, bool with_boot, char **argv, int *n, char *netbuf, size_t netlen)
{
    if (with_boot && b->kernel[0]) {
        argv[(*n)++] = "--kernel"; argv[(*n)++] = (char *)b->kernel;
        if (b->initrd[0]) { argv[(*n)++] = "--initrd"; argv[(*n)++] = (char *)b->initrd; }
        if (b->cmdline[0]) { argv[(*n)++] = "--cmdline"; argv[(*n)++] = (char *)b->cmdline; }
    }
    if (b->net[0]) {
        snprintf(netbuf, netlen, "%s,mac=%s", b->net, b->mac);
        argv[(*n)++] = "--net"; argv[(*n)++] = netbuf;
    }
}
