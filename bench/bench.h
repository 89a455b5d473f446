/* godwit-bench subcommands. Each prints one JSON line with --json. */
#ifndef GW_BENCH_BENCH_H
#define GW_BENCH_BENCH_H

int gw_bench_vm(int argc, char **argv);
int gw_bench_snapshot(int argc, char **argv);
int gw_bench_migrate(int argc, char **argv);
int gw_bench_net(int argc, char **argv);   /* bench_net.c: virtio-net echo and a migration */
int gw_bench_api(int argc, char **argv);   /* bench_api.c, built with the control plane */

#endif
