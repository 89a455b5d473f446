/* godwitd: the per-host Godwit daemon.
 *
 *   godwitd --config /etc/godwit/godwitd.conf [--listen ADDR] [--state-dir DIR]
 *
 * The config file is described in engine/daemon/config.h and docs/control-plane.md.
 *
 * Serves godwit.v1.Godwit (and the internal GodwitPeer service, and grpc.health.v1.Health)
 * until SIGTERM or SIGINT. Prints "listening on HOST:PORT" once it serves. Exit codes:
 * 0 clean stop, 1 runtime failure, 2 usage or configuration error. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/common/checked_open.h"
#include "engine/api/grpc_server.h"
#include "engine/common/log.h"
#include "engine/daemon/config.h"
#include "engine/daemon/daemon.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: godwitd --config FILE [--listen ADDR] [--state-dir DIR]\n"
               "  the config file is INI with a [daemon] section: listen, state_dir, token_file, runner,\n"
               "  migration_host, migration_port, migration_advertise, secret_file, max_migrations,\n"
               "  max_incoming, hostname, workers (see docs/control-plane.md)\n");
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"config", 1, 0, 'c'}, {"listen", 1, 0, 'l'}, {"state-dir", 1, 0, 's'},
                                       {"help", 0, 0, 'h'}, {0}};
    const char *config = NULL, *listen = NULL, *state_dir = NULL;
    int c;
    /* Every runner this daemon starts inherits it: paths the daemon checked are opened with no
     * symbolic link anywhere on the way (engine/common/checked_open.h). Set before any thread. */
    setenv(GW_STRICT_PATHS_ENV, "1", 1);
    while ((c = getopt_long(argc, argv, "c:h", lo, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 'l': listen = optarg; break;
        case 's': state_dir = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!config || optind != argc) { usage(stderr); return 2; }
    gw_log_set_tag("godwitd");
    struct gw_daemon_config cfg;
    char err[1024] = "";
    if (gw_daemon_config_load(config, &cfg, err, sizeof err)) {
        fprintf(stderr, "godwitd: %s\n", err);
        return 2;
    }
    if (listen) snprintf(cfg.listen, sizeof cfg.listen, "%s", listen);
    if (state_dir) snprintf(cfg.state_dir, sizeof cfg.state_dir, "%s", state_dir);

    /* Signals are taken synchronously by this thread: block them before any thread exists. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    static struct gw_daemon d;
    int code = 0;
    if (gw_daemon_init(&d, &cfg, err, sizeof err) || gw_daemon_start(&d, err, sizeof err)) {
        fprintf(stderr, "godwitd: %s\n", err);
        code = 1;
    } else {
        int port = gw_grpc_server_port(d.srv);
        if (port) {
            char host[GW_CFG_STR];
            snprintf(host, sizeof host, "%s", cfg.listen);
            char *colon = strrchr(host, ':');
            if (colon) *colon = 0;
            printf("listening on %s:%d\n", host, port);
        } else {
            printf("listening on %s\n", cfg.listen);
        }
        fflush(stdout);
        gw_info("serving on %s (host %s, state in %s)", cfg.listen, cfg.hostname, cfg.state_dir);
        int sig = 0;
        for (;;) {
            if (sigwait(&set, &sig)) break;
            if (sig != SIGHUP) break;
            gw_info("SIGHUP: nothing to reload yet");
        }
        gw_info("signal %d: shutting down (VMs keep running)", sig);
    }
    gw_daemon_shutdown(&d);
    return code;
}
