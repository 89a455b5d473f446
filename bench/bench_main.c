/* godwit-bench: benchmarks that print figures and a ratio against a named baseline.
 *   godwit-bench vm --memory 256M --ws 64M --rate 32M --seconds 3 --json
 *   godwit-bench snapshot --memory 1G --ws 512M --rate 32M --json
 *   godwit-bench migrate --memory 1G --ws 512M --rate 64M --pattern random --streams 2 --json
 *   godwit-bench wire --ws 512M --streams 2 --json
 *   godwit-bench net --json
 *   godwit-bench api --seconds 5 --json
 *   godwit-bench backup --memory 1G --ws 512M --target dir:PATH|rados:auto --json
 *   godwit-bench backup --instant-restore --target dir:PATH|rados:auto --json
 *   godwit-bench backup --contention --target dir:PATH|rados:auto --json
 *   godwit-bench backup --gc --target dir:PATH|rados:auto [--chunks N] --json */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench.h"
#include "engine/vm/kvm.h"

int gw_bench_need_kvm(const char *what)
{
    const char *dev = gw_kvm_device_path();   /* the device godwit-vm opens */
    int fd = open(dev, O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    fprintf(stderr, "godwit-bench %s: %s is not usable here (%s); this benchmark runs VMs\n", what, dev, strerror(errno));
    return 4;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        fprintf(argc < 2 ? stderr : stdout, "usage: godwit-bench vm|snapshot|migrate|wire|backup|net|api|evacuate|rbd [options] [--json]\n");
        return argc < 2 ? 2 : 0;
    }
    signal(SIGPIPE, SIG_IGN);
    /* wire, rbd and api run no VM; backup checks for itself (its --gc runs none). */
    static const char *const with_vms[] = {"vm", "snapshot", "migrate", "net", "evacuate"};
    for (size_t i = 0; i < sizeof with_vms / sizeof with_vms[0]; i++) {
        int r = strcmp(argv[1], with_vms[i]) ? 0 : gw_bench_need_kvm(argv[1]);
        if (r) return r;
    }
    if (!strcmp(argv[1], "vm")) return gw_bench_vm(argc - 1, argv + 1);
    if (!strcmp(argv[1], "snapshot")) return gw_bench_snapshot(argc - 1, argv + 1);
    if (!strcmp(argv[1], "migrate")) return gw_bench_migrate(argc - 1, argv + 1);
    if (!strcmp(argv[1], "wire")) return gw_bench_wire(argc - 1, argv + 1);
    if (!strcmp(argv[1], "backup")) return gw_bench_backup(argc - 1, argv + 1);
    if (!strcmp(argv[1], "rbd")) return gw_bench_rbd(argc - 1, argv + 1);
    if (!strcmp(argv[1], "net")) return gw_bench_net(argc - 1, argv + 1);
    if (!strcmp(argv[1], "api")) return gw_bench_api(argc - 1, argv + 1);
    if (!strcmp(argv[1], "evacuate")) return gw_bench_evacuate(argc - 1, argv + 1);
    fprintf(stderr, "godwit-bench: unknown benchmark '%s'\n", argv[1]);
    return 2;
}
