/* A throw-away Ceph cluster for unit tests (see gw_ceph.h). */
#include "tests/lib/gw_ceph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char conf[512], script[512];
static int state;   /* 0 not tried, 1 running, -1 cannot start */

static void stop(void)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s stop %s >/dev/null 2>&1", script, conf);
    if (system(cmd) != 0) fprintf(stderr, "  stopping the Ceph cluster failed\n");
}

const char *gw_test_ceph_conf(const char *source_dir)
{
    if (state) return state > 0 ? conf : NULL;
    state = -1;
    snprintf(script, sizeof script, "%s/scripts/ceph-cluster", source_dir);
    char cmd[700], line[512] = "";
    snprintf(cmd, sizeof cmd, "%s start --store memstore 2>&1", script);
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    while (fgets(line, sizeof line, p)) { line[strcspn(line, "\n")] = 0; snprintf(conf, sizeof conf, "%s", line); }
    if (pclose(p) != 0) { fprintf(stderr, "  ceph-cluster: %s\n", conf); return NULL; }
    state = 1;
    atexit(stop);
    return conf;
}
