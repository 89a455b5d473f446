/* godwit: the command-line client of godwitd's API (godwit.v1.Godwit over gRPC).
 *
 * The server address and token come from, in order of precedence: the flags --addr,
 * --token / --token-file; the environment GODWIT_ADDR, GODWIT_TOKEN / GODWIT_TOKEN_FILE; a
 * config file (--config, GODWIT_CONFIG, or ~/.config/godwit/godwit.conf) with a [client]
 * section holding addr, token_file or token; the default 127.0.0.1:7400. */
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include "cli/cli.h"
#include "engine/common/util.h"
#include "engine/daemon/config.h"

static const char usage[] =
    "usage: godwit [global options] COMMAND ...\n"
    "commands:\n"
    "  vm create|list|show|start|stop|delete|resolve   define and run VMs (godwit vm --help)\n"
    "  migrate VM --to HOST:PORT [--wait]      live-migrate a VM (godwit migrate --help)\n"
    "  job list|show|watch|cancel              follow and control jobs (godwit job --help)\n"
    "  backup create|list|show|verify|restore|delete|targets   backups (godwit backup --help)\n"
    "  host                                    the host's capacity, VMs and running jobs\n"
    "  host maintenance enter|exit             evacuate the host / bring it back (--help)\n"
    "  cluster hosts                           the cluster's hosts, their state and room\n"
    "global options (anywhere on the line):\n"
    "  --addr HOST:PORT    godwitd's API address (GODWIT_ADDR; default 127.0.0.1:7400)\n"
    "  --token TOKEN       bearer token (GODWIT_TOKEN)\n"
    "  --token-file FILE   file holding the token (GODWIT_TOKEN_FILE)\n"
    "  --config FILE       client config, INI [client] addr/token/token_file (GODWIT_CONFIG;\n"
    "                      default ~/.config/godwit/godwit.conf)\n"
    "  --timeout-ms N      deadline of each call (default 60000)\n"
    "  --tls-ca FILE       speak TLS, trusting this CA for godwitd's certificate (GODWIT_TLS_CA;\n"
    "                      config tls_ca); \"system\" = the system's roots\n"
    "  --tls-cert FILE --tls-key FILE   client certificate for mutual TLS (GODWIT_TLS_CERT/_KEY)\n"
    "  --json              machine-readable output (one JSON object per line)\n"
    "exit status: 0 ok, 1 error or job failed, 2 usage or invalid argument, 3 not found,\n"
    "  4 conflict (exists / wrong state), 5 authentication, 6 daemon unavailable, 7 timeout,\n"
    "  8 job cancelled\n";

struct conf { char addr[512]; char token[1024]; char token_file[1024]; char tls_ca[1024], tls_cert[1024], tls_key[1024]; };

static int on_conf(void *arg, const char *section, const char *key, const char *value)
{
    struct conf *c = arg;
    if (strcmp(section, "client")) return 1;   /* other sections belong to other tools */
    if (!strcmp(key, "addr")) snprintf(c->addr, sizeof c->addr, "%s", value);
    else if (!strcmp(key, "token")) snprintf(c->token, sizeof c->token, "%s", value);
    else if (!strcmp(key, "token_file")) snprintf(c->token_file, sizeof c->token_file, "%s", value);
    else if (!strcmp(key, "tls_ca")) snprintf(c->tls_ca, sizeof c->tls_ca, "%s", value);
    else if (!strcmp(key, "tls_cert")) snprintf(c->tls_cert, sizeof c->tls_cert, "%s", value);
    else if (!strcmp(key, "tls_key")) snprintf(c->tls_key, sizeof c->tls_key, "%s", value);
    else return 0;
    return 1;
}

/* Takes the global options out of argv (wherever they are); the rest stays in order. */
static int take_globals(int *argc, char **argv, const char **opt, const char *const *names, size_t n, bool *json)
{
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        char *a = argv[i];
        if (!strcmp(a, "--")) { while (i < *argc) argv[out++] = argv[i++]; break; }
        if (!strcmp(a, "--json")) { *json = true; continue; }
        bool taken = false;
        for (size_t k = 0; k < n && !taken; k++) {
            size_t len = strlen(names[k]);
            if (strncmp(a, names[k], len)) continue;
            if (a[len] == '=') { opt[k] = a + len + 1; taken = true; }
            else if (!a[len]) {
                if (i + 1 >= *argc) { fprintf(stderr, "godwit: %s needs a value\n", names[k]); return -1; }
                opt[k] = argv[++i];
                taken = true;
            }
        }
        if (!taken) argv[out++] = a;
    }
    *argc = out;
    argv[out] = NULL;
    return 0;
}

int main(int argc, char **argv)
{
    enum { O_ADDR, O_TOKEN, O_TOKEN_FILE, O_CONFIG, O_TIMEOUT, O_TLS_CA, O_TLS_CERT, O_TLS_KEY, O_N };
    static const char *const names[O_N] = {"--addr", "--token", "--token-file", "--config", "--timeout-ms",
                                           "--tls-ca", "--tls-cert", "--tls-key"};
    const char *opt[O_N] = {0};
    struct gw_cli cli = {.timeout_ms = 60000};
    signal(SIGPIPE, SIG_IGN);
    if (take_globals(&argc, argv, opt, names, O_N, &cli.json)) return GW_EXIT_USAGE;
    if (argc < 2) { fputs(usage, stderr); return GW_EXIT_USAGE; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(usage, stdout);
        return GW_EXIT_OK;
    }

    /* Config file, then environment, then flags: each overrides the one before. */
    struct conf conf = {0};
    const char *cfg_path = opt[O_CONFIG] ? opt[O_CONFIG] : getenv("GODWIT_CONFIG");
    char home_cfg[1024];
    if (!cfg_path && getenv("HOME")) {
        snprintf(home_cfg, sizeof home_cfg, "%s/.config/godwit/godwit.conf", getenv("HOME"));
        if (!access(home_cfg, R_OK)) cfg_path = home_cfg;
    }
    if (cfg_path) {
        int line = ini_parse(cfg_path, on_conf, &conf);
        if (line) {
            fprintf(stderr, "godwit: %s: %s\n", cfg_path, line < 0 ? "cannot read it" : "bad line");
            return GW_EXIT_USAGE;
        }
    }
    snprintf(cli.addr, sizeof cli.addr, "%s", conf.addr[0] ? conf.addr : "127.0.0.1:7400");
    const char *token = conf.token[0] ? conf.token : NULL;
    const char *token_file = conf.token_file[0] ? conf.token_file : NULL;
    if (getenv("GODWIT_ADDR") && *getenv("GODWIT_ADDR")) snprintf(cli.addr, sizeof cli.addr, "%s", getenv("GODWIT_ADDR"));
    if (getenv("GODWIT_TOKEN_FILE") && *getenv("GODWIT_TOKEN_FILE")) { token_file = getenv("GODWIT_TOKEN_FILE"); token = NULL; }
    if (getenv("GODWIT_TOKEN") && *getenv("GODWIT_TOKEN")) { token = getenv("GODWIT_TOKEN"); token_file = NULL; }
    if (opt[O_ADDR]) snprintf(cli.addr, sizeof cli.addr, "%s", opt[O_ADDR]);
    if (opt[O_TOKEN_FILE]) { token_file = opt[O_TOKEN_FILE]; token = NULL; }
    if (opt[O_TOKEN]) { token = opt[O_TOKEN]; token_file = NULL; }
    if (token_file) {
        int r = gw_read_token_file(token_file, cli.token, sizeof cli.token);
        if (r) { fprintf(stderr, "godwit: token file %s: %s\n", token_file, r == -EINVAL ? "empty or too long" : strerror(-r)); return GW_EXIT_USAGE; }
    } else if (token) {
        snprintf(cli.token, sizeof cli.token, "%s", token);
    }
    /* TLS: config, then environment, then flags, as above. */
    const char *tls[3] = {conf.tls_ca, conf.tls_cert, conf.tls_key};
    static const char *const envs[3] = {"GODWIT_TLS_CA", "GODWIT_TLS_CERT", "GODWIT_TLS_KEY"};
    for (int k = 0; k < 3; k++) {
        if (getenv(envs[k]) && *getenv(envs[k])) tls[k] = getenv(envs[k]);
        if (opt[O_TLS_CA + k]) tls[k] = opt[O_TLS_CA + k];
        snprintf(k == 0 ? cli.tls_ca : k == 1 ? cli.tls_cert : cli.tls_key, sizeof cli.tls_ca, "%s", tls[k]);
    }
    if ((cli.tls_cert[0] || cli.tls_key[0]) && !cli.tls_ca[0]) {
        fprintf(stderr, "godwit: a client certificate needs --tls-ca (TLS)\n");
        return GW_EXIT_USAGE;
    }
    if (opt[O_TIMEOUT]) {
        uint64_t t;
        if (gw_parse_u64(opt[O_TIMEOUT], 1, 86400000, &t)) { fprintf(stderr, "godwit: bad --timeout-ms\n"); return GW_EXIT_USAGE; }
        cli.timeout_ms = (uint32_t)t;
    }

    const char *cmd = argv[1];
    int code;
    if (!strcmp(cmd, "vm")) code = gw_cmd_vm(&cli, argc - 1, argv + 1);
    else if (!strcmp(cmd, "migrate")) code = gw_cmd_migrate(&cli, argc - 1, argv + 1);
    else if (!strcmp(cmd, "job")) code = gw_cmd_job(&cli, argc - 1, argv + 1);
    else if (!strcmp(cmd, "host")) code = gw_cmd_host(&cli, argc - 1, argv + 1);
    else if (!strcmp(cmd, "cluster")) code = gw_cmd_cluster(&cli, argc - 1, argv + 1);
    else if (!strcmp(cmd, "backup")) code = gw_cmd_backup(&cli, argc - 1, argv + 1);
    else { fprintf(stderr, "godwit: unknown command '%s'\n%s", cmd, usage); code = GW_EXIT_USAGE; }
    if (cli.client) gw_grpc_client_close(cli.client);
    return code;
}
