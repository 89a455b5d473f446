/* Prometheus metrics over HTTP on metrics_listen (GET /metrics, text format 0.0.4), with
 * KubeVirt-style names:
 *
 *   godwit_vm_migration_data_remaining_bytes{vm,job}   gauge, each migration in flight
 *   godwit_vm_migration_data_processed_bytes{vm,job}   gauge
 *   godwit_vm_migration_dirty_rate_bytes{vm,job}       gauge
 *   godwit_migrations_total{result}                    counter (succeeded, failed, cancelled)
 *   godwit_migration_downtime_seconds                  histogram
 *   godwit_migration_duration_seconds                  histogram
 *   godwit_backup_bytes_total{kind}                    counter: bytes backups read from guests
 *                                                      ("read") and wrote to stores ("written")
 *   godwit_backups_total{result}                       counter (succeeded, failed, cancelled)
 *   godwit_evacuation_vms{state}                       gauge, the newest evacuation's steps
 *   godwit_host_state{state}                           1 for the host's state
 *   godwit_cluster_announcements_total                 counter, other hosts' changes heard (rados notify)
 *   godwit_vms{state}                                  gauge
 *
 * One thread serves one short connection at a time: a scrape is a few KiB built under the
 * daemon's lock (no I/O there) and written after it. A client gets 2 s to send its request;
 * requests are read into a fixed buffer and anything but GET /metrics is answered 404. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/api/grpc_addr.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/daemon/cluster.h"
#include "engine/daemon/daemon.h"
#include "engine/daemon/metrics.h"

#define REQ_MAX 4096
#define REQ_TIMEOUT_MS 2000

static const double DOWNTIME_BUCKETS[GW_METRICS_BUCKETS] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const double DURATION_BUCKETS[GW_METRICS_BUCKETS] = {0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};

static void observe(struct gw_histogram *h, const double *bounds, double v)
{
    for (int i = 0; i < GW_METRICS_BUCKETS; i++)
        if (v <= bounds[i]) h->bucket[i]++;
    h->count++;
    h->sum += v;
}

void gw_metrics_job_done(struct gw_daemon *d, const struct gw_job *j)
{
    struct gw_metrics *m = d->metrics;
    if (m && j->kind == GODWIT__V1__JOB__KIND__BACKUP) {
        /* Failed backups count too: their chunks were written (a later backup reuses them). */
        m->backup_bytes_read += j->progress.backup_bytes_read;
        m->backup_bytes_written += j->progress.backup_bytes_written;
        m->backups[j->state == GODWIT__V1__JOB__STATE__SUCCEEDED ? 0 : j->state == GODWIT__V1__JOB__STATE__CANCELLED ? 2 : 1]++;
        return;
    }
    if (!m || j->kind != GODWIT__V1__JOB__KIND__MIGRATE) return;
    if (j->state == GODWIT__V1__JOB__STATE__SUCCEEDED) {
        m->migrations_succeeded++;
        observe(&m->downtime, DOWNTIME_BUCKETS, (double)j->progress.measured_downtime_ms / 1000.0);
        observe(&m->duration, DURATION_BUCKETS, (double)j->progress.total_ms / 1000.0);
    } else if (j->state == GODWIT__V1__JOB__STATE__CANCELLED) {
        m->migrations_cancelled++;
    } else {
        m->migrations_failed++;
    }
}

struct buf {
    char *p;
    size_t len, cap;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct buf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = b->p ? vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap) : -1;
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) { b->len += (size_t)n; return; }
        size_t cap = b->cap ? b->cap * 2 : 16384;
        /* The limit before the realloc: one that succeeded has already freed the old block. */
        if (cap > (64u << 20)) return;   /* the scrape is cut short */
        char *p = realloc(b->p, cap);
        if (!p) return;   /* out of memory: the same */
        b->p = p;
        b->cap = cap;
    }
}

static void histogram(struct buf *b, const char *name, const char *help, const struct gw_histogram *h,
                      const double *bounds)
{
    put(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (int i = 0; i < GW_METRICS_BUCKETS; i++)
        put(b, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i], (unsigned long long)h->bucket[i]);
    put(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)h->count, name,
        h->sum, name, (unsigned long long)h->count);
}

/* The whole scrape (lock held). Names come from our own tables: VM names and job ids are
 * [A-Za-z0-9._-], nothing to escape in a label. */
static void render(struct gw_daemon *d, struct buf *b)
{
    struct gw_metrics *m = d->metrics;
    put(b, "# HELP godwit_vm_migration_data_remaining_bytes Bytes of guest memory still to send.\n"
           "# TYPE godwit_vm_migration_data_remaining_bytes gauge\n");
    for (struct gw_job *j = d->jobs; j; j = j->next)
        if (j->kind == GODWIT__V1__JOB__KIND__MIGRATE && j->state == GODWIT__V1__JOB__STATE__RUNNING)
            put(b, "godwit_vm_migration_data_remaining_bytes{vm=\"%s\",job=\"%s\"} %llu\n", j->vm, j->id,
                (unsigned long long)j->progress.remaining_bytes);
    put(b, "# HELP godwit_vm_migration_data_processed_bytes Bytes sent so far.\n"
           "# TYPE godwit_vm_migration_data_processed_bytes gauge\n");
    for (struct gw_job *j = d->jobs; j; j = j->next)
        if (j->kind == GODWIT__V1__JOB__KIND__MIGRATE && j->state == GODWIT__V1__JOB__STATE__RUNNING)
            put(b, "godwit_vm_migration_data_processed_bytes{vm=\"%s\",job=\"%s\"} %llu\n", j->vm, j->id,
                (unsigned long long)j->progress.sent_bytes);
    put(b, "# HELP godwit_vm_migration_dirty_rate_bytes Guest memory dirtied per second.\n"
           "# TYPE godwit_vm_migration_dirty_rate_bytes gauge\n");
    for (struct gw_job *j = d->jobs; j; j = j->next)
        if (j->kind == GODWIT__V1__JOB__KIND__MIGRATE && j->state == GODWIT__V1__JOB__STATE__RUNNING)
            put(b, "godwit_vm_migration_dirty_rate_bytes{vm=\"%s\",job=\"%s\"} %llu\n", j->vm, j->id,
                (unsigned long long)j->progress.dirty_rate_bytes_per_s);
    put(b, "# HELP godwit_migrations_total Outgoing migrations ended since the daemon started.\n"
           "# TYPE godwit_migrations_total counter\n"
           "godwit_migrations_total{result=\"succeeded\"} %llu\n"
           "godwit_migrations_total{result=\"failed\"} %llu\n"
           "godwit_migrations_total{result=\"cancelled\"} %llu\n",
        (unsigned long long)m->migrations_succeeded, (unsigned long long)m->migrations_failed,
        (unsigned long long)m->migrations_cancelled);
    put(b, "# HELP godwit_backup_bytes_total Bytes backups read from guest memory and wrote to backup targets.\n"
           "# TYPE godwit_backup_bytes_total counter\n"
           "godwit_backup_bytes_total{kind=\"read\"} %llu\n"
           "godwit_backup_bytes_total{kind=\"written\"} %llu\n"
           "# HELP godwit_backups_total Backup jobs ended since the daemon started.\n"
           "# TYPE godwit_backups_total counter\n"
           "godwit_backups_total{result=\"succeeded\"} %llu\n"
           "godwit_backups_total{result=\"failed\"} %llu\n"
           "godwit_backups_total{result=\"cancelled\"} %llu\n",
        (unsigned long long)m->backup_bytes_read, (unsigned long long)m->backup_bytes_written,
        (unsigned long long)m->backups[0], (unsigned long long)m->backups[1], (unsigned long long)m->backups[2]);
    histogram(b, "godwit_migration_downtime_seconds", "Guest pause of each successful migration.", &m->downtime,
              DOWNTIME_BUCKETS);
    histogram(b, "godwit_migration_duration_seconds", "Duration of each successful migration.", &m->duration,
              DURATION_BUCKETS);
    unsigned ev[6] = {0};
    gw_evac_count_states(d, ev);
    static const char *const ev_names[6] = {"unspecified", "pending", "running", "moved", "failed", "cancelled"};
    put(b, "# HELP godwit_evacuation_vms VMs of the newest evacuation by state.\n# TYPE godwit_evacuation_vms gauge\n");
    for (int i = 1; i < 6; i++) put(b, "godwit_evacuation_vms{state=\"%s\"} %u\n", ev_names[i], ev[i]);
    int hs = d->cluster ? d->cluster->state : GODWIT__V1__CLUSTER_HOST__STATE__ACTIVE;
    put(b, "# HELP godwit_host_state The host's cluster state.\n# TYPE godwit_host_state gauge\n"
           "godwit_host_state{state=\"active\"} %d\ngodwit_host_state{state=\"draining\"} %d\n"
           "godwit_host_state{state=\"maintenance\"} %d\n",
        hs == GODWIT__V1__CLUSTER_HOST__STATE__ACTIVE, hs == GODWIT__V1__CLUSTER_HOST__STATE__DRAINING,
        hs == GODWIT__V1__CLUSTER_HOST__STATE__MAINTENANCE);
    put(b, "# HELP godwit_cluster_announcements_total Changes other hosts announced through the registry.\n"
           "# TYPE godwit_cluster_announcements_total counter\ngodwit_cluster_announcements_total %llu\n",
        (unsigned long long)(d->cluster ? d->cluster->notifies : 0));
    unsigned vs[6] = {0};
    for (struct gw_vm_rec *r = d->vms; r; r = r->next)
        if (r->state >= 0 && r->state < 6) vs[r->state]++;
    static const char *const vm_names[6] = {"unspecified", "defined", "running", "stopped", "migrating", "crashed"};
    put(b, "# HELP godwit_vms VMs on this host by state.\n# TYPE godwit_vms gauge\n");
    for (int i = 1; i < 6; i++) put(b, "godwit_vms{state=\"%s\"} %u\n", vm_names[i], vs[i]);
}

static void serve_one(struct gw_daemon *d, int fd)
{
    char req[REQ_MAX + 1];
    size_t got = 0;
    uint64_t end = gw_now_ns() + (uint64_t)REQ_TIMEOUT_MS * 1000000;
    while (got < REQ_MAX && !memmem(req, got, "\r\n\r\n", 4) && !memmem(req, got, "\n\n", 2)) {
        uint64_t now = gw_now_ns();
        if (now >= end) return;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)((end - now) / 1000000) + 1) <= 0) return;
        ssize_t n = recv(fd, req + got, REQ_MAX - got, 0);
        if (n <= 0) return;
        got += (size_t)n;
    }
    req[got] = 0;
    struct buf b = {0};
    const char *status = "200 OK";
    if (strncmp(req, "GET /metrics ", 13) && strncmp(req, "GET /metrics?", 13)) {
        status = "404 Not Found";
        put(&b, "only GET /metrics here\n");
    } else {
        pthread_mutex_lock(&d->lock);
        render(d, &b);
        pthread_mutex_unlock(&d->lock);
    }
    char head[256];
    int hl = snprintf(head, sizeof head, "HTTP/1.0 %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n", status, b.len);
    /* The socket is blocking for the reply, bounded by SO_SNDTIMEO. */
    if (!gw_write_full(fd, head, (size_t)hl) && b.len) gw_write_full(fd, b.p, b.len);
    free(b.p);
}

static void *metrics_main(void *arg)
{
    struct gw_daemon *d = arg;
    struct gw_metrics *m = d->metrics;
    for (;;) {
        struct pollfd p[2] = {{.fd = m->listen_fd, .events = POLLIN}, {.fd = m->stop_fd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR) break;
        if (p[1].revents) break;
        if (!(p[0].revents & POLLIN)) continue;
        int fd = accept4(m->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue;
        struct timeval tv = {.tv_sec = 2};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        serve_one(d, fd);
        close(fd);
    }
    return NULL;
}

int gw_metrics_init(struct gw_daemon *d)
{
    d->metrics = calloc(1, sizeof *d->metrics);
    if (!d->metrics) return -ENOMEM;
    d->metrics->listen_fd = d->metrics->stop_fd = -1;
    return 0;
}

int gw_metrics_start(struct gw_daemon *d, char *err, size_t errlen)
{
    struct gw_metrics *m = d->metrics;
    if (!d->cfg.metrics_listen[0]) return 0;
    int port = 0;
    m->listen_fd = gw_grpc_addr_listen(d->cfg.metrics_listen, 16, &port);
    if (m->listen_fd < 0) {
        int r = m->listen_fd;
        snprintf(err, errlen, "metrics_listen = %s: %s", d->cfg.metrics_listen, strerror(-r));
        m->listen_fd = -1;
        return r;
    }
    m->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (m->stop_fd < 0 || pthread_create(&m->thread, NULL, metrics_main, d)) {
        snprintf(err, errlen, "metrics: cannot start the server");
        return -EAGAIN;
    }
    m->started = true;
    gw_info("metrics on http://%s/metrics", d->cfg.metrics_listen);
    return 0;
}

void gw_metrics_stop(struct gw_daemon *d)
{
    struct gw_metrics *m = d->metrics;
    if (!m) return;
    if (m->started) {
        uint64_t one = 1;
        if (write(m->stop_fd, &one, sizeof one) != sizeof one) gw_warn("metrics: cannot wake the server");
        pthread_join(m->thread, NULL);
        m->started = false;
    }
    if (m->listen_fd >= 0) close(m->listen_fd);
    if (m->stop_fd >= 0) close(m->stop_fd);
    m->listen_fd = m->stop_fd = -1;
}

void gw_metrics_free(struct gw_daemon *d)
{
    free(d->metrics);
    d->metrics = NULL;
}
