/* Prometheus metrics of godwitd over HTTP (metrics.c). Counters and histograms are guarded
 * by the daemon's lock; gw_metrics_job_done is called under it when a job ends. */
#ifndef GW_DAEMON_METRICS_H
#define GW_DAEMON_METRICS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_METRICS_BUCKETS 10

struct gw_daemon;
struct gw_job;

struct gw_histogram {
    uint64_t bucket[GW_METRICS_BUCKETS];   /* cumulative: observations <= the bucket's bound */
    uint64_t count;
    double sum;
};

struct gw_metrics {
    uint64_t migrations_succeeded, migrations_failed, migrations_cancelled;
    struct gw_histogram downtime, duration;
    uint64_t backup_bytes_read, backup_bytes_written, backups[3];   /* succeeded, failed, cancelled */
    int listen_fd, stop_fd;
    bool started;
    pthread_t thread;
};

int gw_metrics_init(struct gw_daemon *d);                              /* counters only */
/* Serves GET /metrics on cfg.metrics_listen when set. 0 or -errno with the reason in err. */
int gw_metrics_start(struct gw_daemon *d, char *err, size_t errlen);
void gw_metrics_stop(struct gw_daemon *d);
void gw_metrics_free(struct gw_daemon *d);
/* A job reached its final state (lock held). */
void gw_metrics_job_done(struct gw_daemon *d, const struct gw_job *j);

#endif
