/* godwit-bench subcommands. Each prints one JSON line with --json. */
#ifndef GW_BENCH_BENCH_H
#define GW_BENCH_BENCH_H

#include <stdint.h>
#include <sys/types.h>

int gw_bench_vm(int argc, char **argv);
int gw_bench_snapshot(int argc, char **argv);
int gw_bench_migrate(int argc, char **argv);
int gw_bench_backup(int argc, char **argv);  /* bench_backup.c */
/* 0 when godwit-vm's KVM device opens; else a line to stderr and 4 (godwit-vm's exit for no
 * KVM): a benchmark that runs VMs says so at once, not after starting a Ceph cluster and
 * waiting minutes for a guest (bench_main.c). */
int gw_bench_need_kvm(const char *what);
int gw_bench_instant_restore(int argc, char **argv);  /* bench_instant_restore.c: backup --instant-restore */
int gw_bench_backup_contention(int argc, char **argv);  /* bench_backup_contention.c: --contention */
int gw_bench_backup_gc(int argc, char **argv);  /* bench_backup_gc.c: backup --gc */
int gw_bench_wire(int argc, char **argv);
/* `migrate --tls both`: the same migration in plaintext and over TLS, and their ratio. */
int gw_bench_migrate_tls_both(int argc, char **argv, unsigned pairs);
/* `migrate --mode postcopy|hybrid` with --link, --cut-link-for or --no-priority-channel (bench_postcopy_link.c). */
int gw_bench_migrate_postcopy_link(int argc, char **argv);
int gw_bench_net(int argc, char **argv);   /* bench_net.c: virtio-net echo and a migration */
int gw_bench_api(int argc, char **argv);   /* bench_api.c, built with the control plane */
int gw_bench_evacuate(int argc, char **argv);   /* bench_evacuate.c: three godwitd, one evacuation */
int gw_bench_rbd(int argc, char **argv);   /* bench_rbd.c: the RBD disk backend, serial vs batched */
int gw_bench_rbd_backup(int argc, char **argv);   /* bench_rbd_backup.c: --backup, the pause on RBD */

/* bench_wire.c: sends `bytes` over `streams` (1..16) plain loopback TCP connections and
 * sets the rate (MiB/s) and time (ms) from the first byte sent to the last received.
 * Returns 0 or -errno. */
int gw_bench_wire_limit(uint64_t bytes, unsigned streams, double *mib_s, double *ms);

/* bench_backup.c: fills buf with incompressible bytes (an xorshift stream; a tail under 8
 * bytes is left alone), what raw store writes carry so that nothing compresses them. */
void gw_bench_fill_random(uint8_t *buf, size_t len);

/* bench_proc.c: resident memory of pid beyond its shared memory (guest RAM is a shared
 * memfd mapping): VmRSS - RssShmem, in bytes. Returns 0 or -errno. */
int gw_bench_rss_private(pid_t pid, uint64_t *bytes);

#endif
