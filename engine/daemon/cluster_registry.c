/* The host's side of the cluster registry: its state (active, draining, maintenance, kept in
 * the state directory so that a restart stays draining), the heartbeat thread that republishes
 * its record every GW_CLUSTER_HEARTBEAT_MS, and the reads of the other hosts' records with
 * their liveness. Liveness is judged on this host's monotonic clock (when a record last
 * changed), not on the other host's wall clock: clocks of two hosts may disagree, the time
 * between two of our own reads may not. The record's own time only places a change within
 * that interval (a host that reads rarely must not see a dead host's last beat as new). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "engine/api/grpc_server.h"
#include "engine/common/durable.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/daemon/cluster.h"
#include "engine/daemon/daemon.h"

bool gw_cluster_name_ok(const char *name)
{
    return gw_vm_name_ok(name) && strlen(name) <= GW_CLUSTER_NAME_MAX;
}

static const char *state_word(int s)
{
    return s == GODWIT__V1__CLUSTER_HOST__STATE__DRAINING ? "draining"
           : s == GODWIT__V1__CLUSTER_HOST__STATE__MAINTENANCE ? "maintenance" : "active";
}

static int load_state(struct gw_cluster *c)
{
    c->state = GODWIT__V1__CLUSTER_HOST__STATE__ACTIVE;
    FILE *f = fopen(c->state_path, "re");
    if (!f) return errno == ENOENT ? 0 : -errno;
    char w[32] = "";
    if (!fgets(w, sizeof w, f)) w[0] = 0;
    fclose(f);
    if (!strncmp(w, "draining", 8)) c->state = GODWIT__V1__CLUSTER_HOST__STATE__DRAINING;
    else if (!strncmp(w, "maintenance", 11)) c->state = GODWIT__V1__CLUSTER_HOST__STATE__MAINTENANCE;
    else if (strncmp(w, "active", 6)) {
        /* Only this daemon writes the file, whole: what it cannot read was not its word, and
         * a host that takes no VMs is the safe reading until the operator says otherwise. */
        gw_warn("%s: unreadable host state: taking no VMs (maintenance) until one is set", c->state_path);
        c->state = GODWIT__V1__CLUSTER_HOST__STATE__MAINTENANCE;
    }
    return 0;
}

/* Another host announced a change (a back end's thread): whoever waits on the cluster
 * (an evacuation placing work, a return home) looks again now. */
static void announced(void *arg)
{
    struct gw_daemon *d = arg;
    pthread_mutex_lock(&d->lock);
    d->cluster->notifies++;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

int gw_cluster_init(struct gw_daemon *d, char *err, size_t errlen)
{
    struct gw_cluster *c = calloc(1, sizeof *c);
    if (!c) return -ENOMEM;
    d->cluster = c;
    snprintf(c->state_path, sizeof c->state_path, "%s/host-state", d->cfg.state_dir);
    int r = load_state(c);
    if (r) { snprintf(err, errlen, "%s: %s", c->state_path, strerror(-r)); return r; }
    const char *spec = d->cfg.cluster;
    if (!spec[0]) return 0;
    /* The registry names the hosts; only TLS proves an address is one. Without peer_ca the
     * peers' credential goes over h2c to whatever address a record gives (docs/security.md). */
    if (!d->cfg.peer_ca[0])
        gw_warn("cluster = %s without peer_ca: peer calls (and their credential) go in plaintext to every "
                "address the registry gives; configure peer_ca", spec);
    if (!gw_cluster_name_ok(d->cfg.hostname)) {
        snprintf(err, errlen, "hostname %s cannot join a cluster: 1-63 characters of [A-Za-z0-9._-]", d->cfg.hostname);
        return -EINVAL;
    }
    if (!strncmp(spec, "dir:", 4)) c->ops = &gw_cluster_dir_ops;
    else if (!strncmp(spec, "rados:", 6)) c->ops = &gw_cluster_rados_ops;
    if (!c->ops) {
        snprintf(err, errlen, "cluster = %s: unknown registry (dir:/path or rados:POOL[/NAMESPACE])", spec);
        return -EINVAL;
    }
    struct gw_cluster_open o = {.where = strchr(spec, ':') + 1, .cfg = &d->cfg, .changed = announced, .arg = d};
    return c->ops->open(&o, &c->be, err, errlen);
}

int gw_cluster_set_state(struct gw_daemon *d, int state)
{
    struct gw_cluster *c = d->cluster;
    if (c->state == state) return 0;
    /* Whole or not at all, and never through a link planted at a temporary name: a host in
     * maintenance that came back "active" after a power cut would take VMs again. */
    char line[32];
    int n = snprintf(line, sizeof line, "%s\n", state_word(state));
    int r = gw_durable_write(c->state_path, line, (size_t)n);
    if (r) { gw_error("host state: cannot save it: %s", strerror(-r)); return r; }
    gw_info("host %s: %s -> %s", d->cfg.hostname, state_word(c->state), state_word(state));
    c->state = state;
    pthread_cond_broadcast(&d->cond);   /* the heartbeat publishes it now */
    return 0;
}

bool gw_cluster_accepts_vms(const struct gw_daemon *d)
{
    return !d->cluster || d->cluster->state == GODWIT__V1__CLUSTER_HOST__STATE__ACTIVE;
}

static uint64_t mix(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;   /* FNV-1a */
    return h;
}

/* Packs this host's record (lock held). *out is malloc'ed; *digest sums up what the other
 * hosts must hear of at once (state, VMs and where they are going), not the heartbeat. */
static int pack_record(struct gw_daemon *d, uint8_t **out, size_t *len, uint64_t *digest)
{
    uint64_t dg = mix(0xcbf29ce484222325ull, &d->cluster->state, sizeof d->cluster->state);
    Godwit__V1__ClusterHost h = GODWIT__V1__CLUSTER_HOST__INIT;
    char mig[GW_CFG_STR + 16] = "";
    if (d->cfg.migration_port)
        snprintf(mig, sizeof mig, "%s:%u", d->cfg.migration_advertise[0] ? d->cfg.migration_advertise
                                                                         : d->cfg.migration_host, d->cfg.migration_port);
    h.name = d->cfg.hostname;
    /* Listening on port 0, the registry must say the port the kernel gave. */
    char api[GW_CFG_STR + 16];
    const char *colon = strrchr(d->cfg.listen, ':');
    if (colon && !strcmp(colon, ":0") && d->srv && gw_grpc_server_port(d->srv) > 0)
        snprintf(api, sizeof api, "%.*s:%d", (int)(colon - d->cfg.listen), d->cfg.listen, gw_grpc_server_port(d->srv));
    else
        snprintf(api, sizeof api, "%s", d->cfg.listen);
    h.api_address = api;
    h.migration_address = mig;
    h.memory_bytes = d->cfg.capacity_memory;
    if (!h.memory_bytes) {
        struct sysinfo si;
        if (!sysinfo(&si)) h.memory_bytes = (uint64_t)si.totalram * si.mem_unit;
    }
    h.vcpus = d->cfg.capacity_vcpus ? d->cfg.capacity_vcpus : (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
    h.state = d->cluster->state;
    h.heartbeat_unix_ms = gw_unix_ms();
    h.started_unix_ms = h.heartbeat_unix_ms - (gw_now_ns() - d->started_ns) / 1000000;
    h.migration_bandwidth_bytes_per_s = d->cluster->fit.bw;
    h.migration_overhead_ms = d->cluster->fit.overhead_ms;
    h.migration_link_bytes_per_s = d->cluster->fit.link_bw;
    h.migration_nonconverging_pct = d->cluster->fit.nonconverging_pct;
    size_t n = 0;
    for (struct gw_vm_rec *r = d->vms; r; r = r->next) n++;
    Godwit__V1__ClusterVm *vms = calloc(n + 1, sizeof *vms);
    Godwit__V1__ClusterVm **ptrs = calloc(n + 1, sizeof *ptrs);
    char roots[sizeof d->cfg.image_roots];
    char *rootv[GW_CLUSTER_MAX_IMAGE_ROOTS];
    size_t nroots = 0;
    snprintf(roots, sizeof roots, "%s", d->cfg.image_roots);
    for (char *save = NULL, *t = strtok_r(roots, ", ", &save); t && nroots < GW_CLUSTER_MAX_IMAGE_ROOTS;
         t = strtok_r(NULL, ", ", &save))
        rootv[nroots++] = t;
    int ret = -ENOMEM;
    if (!vms || !ptrs) goto out;
    size_t k = 0;
    uint64_t now_ms = gw_unix_ms();
    for (struct gw_vm_rec *r = d->vms; r; r = r->next, k++) {
        Godwit__V1__ClusterVm *v = &vms[k];
        godwit__v1__cluster_vm__init(v);
        v->name = r->name;
        v->memory_bytes = r->memory_bytes;
        v->vcpus = r->vcpus;
        v->anti_affinity = r->anti_affinity;
        v->priority = r->priority;
        v->state = r->state;
        v->origin_host = r->origin_host;
        v->disk_path = r->disk;
        if (r->started_ms && now_ms > r->started_ms + 1000 && r->proc.pid)
            v->dirty_rate_bytes_per_s = r->pages_written * 4096 * 1000 / (now_ms - r->started_ms);
        ptrs[k] = v;
        bool holds = r->state == GODWIT__V1__VM__STATE__RUNNING || r->state == GODWIT__V1__VM__STATE__MIGRATING ||
                     r->incoming || r->busy;
        if (holds) { h.memory_allocated_bytes += r->memory_bytes; h.vcpus_allocated += r->vcpus; }
        int flags[3] = {r->state, r->incoming, r->busy};
        dg = mix(mix(dg, r->name, strlen(r->name) + 1), flags, sizeof flags);
    }
    h.n_vms = n;
    h.vms = ptrs;
    h.n_image_roots = nroots;
    h.image_roots = rootv;
    *len = protobuf_c_message_get_packed_size(&h.base);
    *out = malloc(*len ? *len : 1);
    if (*out) { protobuf_c_message_pack(&h.base, *out); ret = 0; }
    *digest = dg;
out:
    free(vms);
    free(ptrs);
    return ret;
}

int gw_cluster_publish(struct gw_daemon *d)
{
    struct gw_cluster *c = d->cluster;
    if (!c || !c->ops) return 0;
    uint8_t *buf;
    size_t len;
    uint64_t digest = 0;
    pthread_mutex_lock(&d->lock);
    int r = pack_record(d, &buf, &len, &digest);
    bool announce = digest != c->published_digest;
    pthread_mutex_unlock(&d->lock);
    if (r) return r;
    r = c->ops->publish(c->be, d->cfg.hostname, buf, len, announce);
    free(buf);
    if (!r && announce) {
        pthread_mutex_lock(&d->lock);
        c->published_digest = digest;
        pthread_mutex_unlock(&d->lock);
    }
    return r;
}

static void *heartbeat_main(void *arg)
{
    struct gw_daemon *d = arg;
    struct gw_cluster *c = d->cluster;
    int last_err = 0;
    pthread_mutex_lock(&d->lock);
    while (!c->hb_stop) {
        int published_state = c->state;
        pthread_mutex_unlock(&d->lock);
        int r = gw_cluster_publish(d);
        if (r && r != last_err) {
            char why[300];
            gw_cluster_describe(d, r, why, sizeof why);
            gw_warn("cluster: cannot publish this host's record: %s", why);
        } else if (!r && last_err) gw_info("cluster: this host's record is published again");
        last_err = r;
        pthread_mutex_lock(&d->lock);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += GW_CLUSTER_HEARTBEAT_MS / 1000;
        ts.tv_nsec += (GW_CLUSTER_HEARTBEAT_MS % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        /* Woken by any state change of the daemon; a change of the host's state is published
         * at once, anything else at the next beat. */
        while (!c->hb_stop && c->state == published_state && pthread_cond_timedwait(&d->cond, &d->lock, &ts) == 0) {}
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

int gw_cluster_start(struct gw_daemon *d, char *err, size_t errlen)
{
    struct gw_cluster *c = d->cluster;
    if (!c->ops) return 0;
    /* A registry that cannot be reached now (Ceph away) does not keep the daemon from serving
     * its VMs: the heartbeat publishes once it is back. */
    int r = gw_cluster_publish(d);
    if (r) {
        char why[300];
        gw_cluster_describe(d, r, why, sizeof why);
        gw_warn("cluster: cannot publish this host's record yet: %s", why);
    }
    r = pthread_create(&c->hb_thread, NULL, heartbeat_main, d);
    if (r) { snprintf(err, errlen, "cluster: cannot start the heartbeat: %s", strerror(r)); return -r; }
    c->hb_started = true;
    return 0;
}

void gw_cluster_stop(struct gw_daemon *d)
{
    struct gw_cluster *c = d->cluster;
    if (!c) return;
    pthread_mutex_lock(&d->lock);
    c->hb_stop = true;
    pthread_cond_broadcast(&d->cond);
    bool ret = c->return_joinable;
    c->return_joinable = false;
    pthread_mutex_unlock(&d->lock);
    if (ret) pthread_join(c->return_thread, NULL);
    if (c->hb_started) pthread_join(c->hb_thread, NULL);
    c->hb_started = false;
}

void gw_cluster_free(struct gw_daemon *d)
{
    struct gw_cluster *c = d->cluster;
    if (!c) return;
    if (c->ops && c->be) c->ops->close(c->be);
    free(c);
    d->cluster = NULL;
}

/* ---- the time model ------------------------------------------------------------------- */

void gw_cluster_job_done(struct gw_daemon *d, const struct gw_job *j)
{
    struct gw_cluster *c = d->cluster;
    if (!c || j->kind != GODWIT__V1__JOB__KIND__MIGRATE || j->state != GODWIT__V1__JOB__STATE__SUCCEEDED ||
        !j->started_ms || j->finished_ms <= j->started_ms || !j->progress.total_bytes)
        return;
    /* x is the guest's memory, not the bytes sent: the planner knows the memory of a VM
     * before it moves, and zero pages cost next to nothing on the wire, so what a typical
     * guest's working set adds is part of the fitted rate. */
    c->samples[c->next_sample].bytes = j->progress.total_bytes;
    c->samples[c->next_sample].ms = j->finished_ms - j->started_ms;
    c->samples[c->next_sample].wire_bw = j->progress.throughput_bytes_per_s;
    c->next_sample = (c->next_sample + 1) % GW_CLUSTER_SAMPLES;
    if (c->n_samples < GW_CLUSTER_SAMPLES) c->n_samples++;
    uint64_t x[GW_CLUSTER_SAMPLES], y[GW_CLUSTER_SAMPLES], w[GW_CLUSTER_SAMPLES];
    for (unsigned i = 0; i < c->n_samples; i++) {
        x[i] = c->samples[i].bytes;
        y[i] = c->samples[i].ms;
        w[i] = c->samples[i].wire_bw;
    }
    gw_cluster_fit_samples(x, y, w, c->n_samples, &c->fit);
}

void gw_cluster_model(struct gw_daemon *d, Godwit__V1__ClusterHost *const *hosts, size_t n, struct gw_cluster_fit *fit)
{
    pthread_mutex_lock(&d->lock);
    unsigned samples = d->cluster->n_samples;
    *fit = d->cluster->fit;
    pthread_mutex_unlock(&d->lock);
    if (samples >= 2 && fit->bw) return;
    /* Too few of our own: the other hosts' published fits, averaged (each part over the hosts
     * that measured it). */
    uint64_t sbw = 0, soh = 0, slink = 0, spct = 0, k = 0, kl = 0, kp = 0;
    for (size_t i = 0; i < n; i++) {
        const Godwit__V1__ClusterHost *h = hosts[i];
        if (h->down || !h->migration_bandwidth_bytes_per_s || !strcmp(h->name, d->cfg.hostname)) continue;
        if (!gw_cluster_fit_plausible(h)) continue;   /* a record from the store is not trusted */
        sbw += h->migration_bandwidth_bytes_per_s;
        soh += h->migration_overhead_ms;
        k++;
        if (h->migration_link_bytes_per_s) { slink += h->migration_link_bytes_per_s; kl++; }
        if (h->migration_nonconverging_pct) { spct += h->migration_nonconverging_pct; kp++; }
    }
    if (k) {
        *fit = (struct gw_cluster_fit){.bw = sbw / k, .overhead_ms = soh / k, .link_bw = kl ? slink / kl : 0,
                                       .nonconverging_pct = kp ? (uint32_t)(spct / kp) : 0};
    } else if (!fit->bw) {
        *fit = (struct gw_cluster_fit){.bw = GW_EVAC_DEFAULT_BW};
    }
}

/* ---- reading the registry ---------------------------------------------------------------- */

struct collect {
    Godwit__V1__ClusterHost **hosts;
    size_t n;
};

/* Unpacking costs memory out of proportion to a record's bytes: each 2-byte empty string of a
 * repeated field is a pointer, an allocation and a slot of the parser's scratch, some 40 times
 * its size (a 1 MiB record, 40 MiB; GW_CLUSTER_MAX_HOSTS of them per listing). The unpack
 * allocator refuses past a budget: a few times the record's size (its strings) plus the fixed
 * costs of the largest record a host publishes (GW_CLUSTER_MAX_VMS_PER_HOST VMs). Its blocks
 * come from malloc, so the record is freed with the default allocator. */
#define UNPACK_BUDGET_FACTOR 4
#define UNPACK_BUDGET_PER_VM 512
struct unpack_budget { size_t left; };

static void *budget_alloc(void *arg, size_t size)
{
    struct unpack_budget *b = arg;
    size_t cost = (size + 31) & ~(size_t)15;   /* malloc's: a header, then 16-byte steps */
    if (cost < size || cost > b->left) return NULL;
    b->left -= cost;
    return malloc(size);
}

static void budget_free(void *arg, void *p)
{
    (void)arg;
    free(p);
}

/* The record name's key holds, unpacked, or NULL when it is none a host of ours wrote: over
 * the budget, past pack_record's caps, or about another host (a copied file is not that host). */
static Godwit__V1__ClusterHost *unpack_record(const char *name, const uint8_t *rec, size_t len)
{
    struct unpack_budget b = {.left = UNPACK_BUDGET_FACTOR * len +
                                      (size_t)GW_CLUSTER_MAX_VMS_PER_HOST * UNPACK_BUDGET_PER_VM};
    ProtobufCAllocator a = {.alloc = budget_alloc, .free = budget_free, .allocator_data = &b};
    Godwit__V1__ClusterHost *h = godwit__v1__cluster_host__unpack(&a, len, rec);
    if (!h) return NULL;
    if (strcmp(h->name, name) || h->n_vms > GW_CLUSTER_MAX_VMS_PER_HOST ||
        h->n_image_roots > GW_CLUSTER_MAX_IMAGE_ROOTS) {
        godwit__v1__cluster_host__free_unpacked(h, NULL);
        return NULL;
    }
    return h;
}

static bool collect_one(void *arg, const char *name, const uint8_t *rec, size_t len)
{
    struct collect *c = arg;
    if (c->n >= GW_CLUSTER_MAX_HOSTS) return false;
    Godwit__V1__ClusterHost *h = unpack_record(name, rec, len);
    if (!h) return false;
    c->hosts[c->n++] = h;
    return true;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(Godwit__V1__ClusterHost *const *)a)->name, (*(Godwit__V1__ClusterHost *const *)b)->name);
}

/* A host this host's listings no longer show is forgotten after this long unread; sooner
 * when the hosts a listing does show need its slot. */
#define GW_CLUSTER_FORGET_MS (10ull * GW_CLUSTER_DOWN_MS)

static int name_vs_host(const void *name, const void *h)
{
    return strcmp(name, (*(Godwit__V1__ClusterHost *const *)h)->name);
}

/* Drops from the liveness table the hosts that listing hosts (n, sorted by name) does not
 * hold, once unread for GW_CLUSTER_FORGET_MS or when their slots are wanted: every host of
 * the listing must find one (lock held). The table only grew, and once full, every host new
 * to it read as down until a restart. A host kept a while is one a listing missed once (a
 * file briefly unreadable): its liveness history survives that. */
static void forget_absent(struct gw_cluster *c, Godwit__V1__ClusterHost *const *hosts, size_t n)
{
    uint64_t now = gw_now_ns();
    size_t room = n < GW_CLUSTER_MAX_HOSTS ? GW_CLUSTER_MAX_HOSTS - n : 0;   /* slots for absent hosts */
    unsigned kept = 0, absent = 0;
    for (unsigned i = 0; i < c->n_seen; i++) {
        const struct gw_cluster_seen *s = &c->seen[i];
        bool listed = bsearch(s->name, hosts, n, sizeof *hosts, name_vs_host) != NULL;
        if (!listed && (now - s->read_ns > GW_CLUSTER_FORGET_MS * 1000000 || absent >= room)) continue;
        absent += !listed;
        if (kept != i) c->seen[kept] = *s;
        kept++;
    }
    c->n_seen = kept;
}

/* Liveness from our own clock (lock held). */
static void judge(struct gw_cluster *c, Godwit__V1__ClusterHost *h)
{
    uint64_t now = gw_now_ns();
    struct gw_cluster_seen *s = NULL;
    for (unsigned i = 0; i < c->n_seen; i++)
        if (!strcmp(c->seen[i].name, h->name)) s = &c->seen[i];
    if (!s && c->n_seen < GW_CLUSTER_MAX_HOSTS) {
        s = &c->seen[c->n_seen++];
        snprintf(s->name, sizeof s->name, "%s", h->name);
        /* First sight: the record's own age is all we have (bounded to the down window). */
        uint64_t wall = gw_unix_ms(), age = wall > h->heartbeat_unix_ms ? wall - h->heartbeat_unix_ms : 0;
        if (age > 2 * GW_CLUSTER_DOWN_MS) age = 2 * GW_CLUSTER_DOWN_MS;
        s->heartbeat_unix_ms = h->heartbeat_unix_ms;
        s->changed_ns = now > age * 1000000 ? now - age * 1000000 : 0;
        s->read_ns = now;
    }
    if (!s) { h->down = true; return; }
    if (s->heartbeat_unix_ms != h->heartbeat_unix_ms) {
        /* It changed since our last read: when exactly, the record's own clock tells, but
         * only within that interval (a skewed clock cannot move it further back). */
        uint64_t wall = gw_unix_ms(), age = wall > h->heartbeat_unix_ms ? wall - h->heartbeat_unix_ms : 0;
        uint64_t since_read = (now - s->read_ns) / 1000000;
        if (age > since_read) age = since_read;
        s->heartbeat_unix_ms = h->heartbeat_unix_ms;
        s->changed_ns = now - age * 1000000;
    }
    s->read_ns = now;
    h->heartbeat_age_ms = (now - s->changed_ns) / 1000000;
    h->down = h->heartbeat_age_ms > GW_CLUSTER_DOWN_MS;
}

int gw_cluster_hosts(struct gw_daemon *d, Godwit__V1__ClusterHost ***hosts, size_t *n)
{
    struct gw_cluster *c = d->cluster;
    *hosts = NULL;
    *n = 0;
    if (!c || !c->ops) return 0;
    struct collect col = {.hosts = calloc(GW_CLUSTER_MAX_HOSTS, sizeof *col.hosts)};
    if (!col.hosts) return -ENOMEM;
    int r = c->ops->list(c->be, collect_one, &col);
    if (r) { gw_cluster_hosts_free(col.hosts, col.n); return r; }
    qsort(col.hosts, col.n, sizeof *col.hosts, by_name);
    pthread_mutex_lock(&d->lock);
    forget_absent(c, col.hosts, col.n);
    for (size_t i = 0; i < col.n; i++) {
        judge(c, col.hosts[i]);
        /* This host's own state as it is now, not as last published: the heartbeat publishes
         * a change a moment later, and an evacuation that has SUCCEEDED must already read as
         * maintenance here (seen once in CI: DRAINING right after the job ended). */
        if (!strcmp(col.hosts[i]->name, d->cfg.hostname)) col.hosts[i]->state = c->state;
    }
    pthread_mutex_unlock(&d->lock);
    *hosts = col.hosts;
    *n = col.n;
    return 0;
}

void gw_cluster_hosts_free(Godwit__V1__ClusterHost **hosts, size_t n)
{
    for (size_t i = 0; i < n; i++) godwit__v1__cluster_host__free_unpacked(hosts[i], NULL);
    free(hosts);
}

void gw_cluster_describe(const struct gw_daemon *d, int r, char *buf, size_t len)
{
    const char *spec = d->cfg.cluster;
    if (r == -ETIMEDOUT)
        snprintf(buf, len, "the registry %.160s did not answer in time (Ceph monitor or OSD down?)", spec);
    else
        snprintf(buf, len, "the registry %.160s: %s", spec, strerror(-r));
}

const char *gw_cluster_reason(int err)
{
    switch (err) {
    case -ENOENT: return "NOT_IN_CLUSTER";
    case -EHOSTDOWN: return "HOST_DOWN";
    case -EBUSY: return "HOST_NOT_ACTIVE";
    case -EINVAL: return "SAME_HOST";
    default: return "REGISTRY_UNAVAILABLE";
    }
}

int gw_cluster_check_destination(struct gw_daemon *d, const char *addr, char *why, size_t whylen)
{
    Godwit__V1__ClusterHost **hosts;
    size_t n;
    int r = gw_cluster_hosts(d, &hosts, &n);
    if (r) {
        char what[300];
        gw_cluster_describe(d, r, what, sizeof what);
        snprintf(why, whylen, "cannot read the cluster registry: %s", what);
        return -EIO;
    }
    r = -ENOENT;
    snprintf(why, whylen, "%s is not a host of the cluster registry", addr);
    for (size_t i = 0; i < n; i++) {
        const Godwit__V1__ClusterHost *h = hosts[i];
        if (strcmp(h->api_address, addr)) continue;
        if (!strcmp(h->name, d->cfg.hostname)) { snprintf(why, whylen, "%s is this host", addr); r = -EINVAL; }
        else if (h->down) { snprintf(why, whylen, "host %s is down (no heartbeat for %llu ms)", h->name,
                                     (unsigned long long)h->heartbeat_age_ms); r = -EHOSTDOWN; }
        else if (h->state != GODWIT__V1__CLUSTER_HOST__STATE__ACTIVE) {
            snprintf(why, whylen, "host %s is %s", h->name, state_word(h->state));
            r = -EBUSY;
        } else r = 0;
        break;
    }
    gw_cluster_hosts_free(hosts, n);
    return r;
}
