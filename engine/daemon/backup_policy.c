/* Backup policies: checks, storage and the API (SetBackupPolicy, GetBackupPolicy,
 * ListBackupPolicies, DeleteBackupPolicy); see backup_sched.h. Every field is checked before
 * it is stored: the VM name, the cron expression and the time zone parse, the target is a name
 * of the daemon's config, counts and the window are bounded. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/api/grpc_server.h"
#include "engine/common/log.h"
#include "engine/daemon/backup_sched.h"
#include "engine/daemon/daemon.h"
#include "engine/daemon/db.h"
#include "engine/daemon/labels.h"

#define BAD(call, ...) gw_grpc_call_error((call), GW_GRPC_INVALID_ARGUMENT, __VA_ARGS__)

/* Read-modify-write of a stored policy (the API and the scheduler both write them). */
static pthread_mutex_t policy_mu = PTHREAD_MUTEX_INITIALIZER;

static int copy_str(char *dst, size_t cap, const char *src, const char *field, char *err, size_t errlen)
{
    if (strlen(src) >= cap) { snprintf(err, errlen, "%s: at most %zu bytes", field, cap - 1); return -EINVAL; }
    memcpy(dst, src, strlen(src) + 1);
    return 0;
}

int gw_policy_from_pb(const struct gw_daemon *d, const Godwit__V1__BackupPolicy *p, struct gw_policy *out, char *err,
                      size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!p) { snprintf(err, errlen, "policy: required"); return -EINVAL; }
    if (p->label[0]) {
        /* A label policy: the selector names VMs, not the vm field. */
        if (p->vm[0]) { snprintf(err, errlen, "vm: a label policy names no VM (vm or label, not both)"); return -EINVAL; }
        if (!gw_label_ok(p->label)) {
            snprintf(err, errlen, "label: KEY=VALUE (KEY 1-%u of [A-Za-z0-9._/-] starting with a letter or digit, "
                     "VALUE 0-%u of [A-Za-z0-9._-])", GW_LIMIT_LABEL_KEY_MAX, GW_LIMIT_LABEL_VALUE_MAX);
            return -EINVAL;
        }
        snprintf(out->label, sizeof out->label, "%s", p->label);
    } else if (!gw_vm_name_ok(p->vm)) {
        snprintf(err, errlen, "vm: 1-63 of [A-Za-z0-9._-], not starting with . or - (or a label policy: label)");
        return -EINVAL;
    }
    snprintf(out->vm, sizeof out->vm, "%s", p->vm);
    if (p->rate > GW_LIMIT_BACKUP_RATE_MAX) {
        snprintf(err, errlen, "rate: at most %llu bytes/s", (unsigned long long)GW_LIMIT_BACKUP_RATE_MAX);
        return -EINVAL;
    }
    if (p->ops > GW_LIMIT_BACKUP_OPS_MAX) { snprintf(err, errlen, "ops: at most %u/s", GW_LIMIT_BACKUP_OPS_MAX); return -EINVAL; }
    if (p->adaptive[0] && strcmp(p->adaptive, "on") && strcmp(p->adaptive, "off")) {
        snprintf(err, errlen, "adaptive: \"\" (the daemon's backup_adaptive), on or off");
        return -EINVAL;
    }
    out->thr = (struct gw_bk_throttle){.rate = p->rate, .ops = p->ops,
                                       .adaptive = !p->adaptive[0] ? -1 : !strcmp(p->adaptive, "on")};
    char why[256];
    struct gw_cron c;
    if (!p->schedule[0]) { snprintf(err, errlen, "schedule: required (5 cron fields or @daily, ...)"); return -EINVAL; }
    if (copy_str(out->schedule, sizeof out->schedule, p->schedule, "schedule", err, errlen)) return -EINVAL;
    if (gw_cron_parse(p->schedule, &c, why, sizeof why)) { snprintf(err, errlen, "schedule: %s", why); return -EINVAL; }
    if (copy_str(out->tz, sizeof out->tz, p->tz, "tz", err, errlen)) return -EINVAL;
    if (p->tz[0]) {
        struct gw_tz *tz = NULL;
        int r = gw_tz_load(p->tz, &tz, why, sizeof why);
        gw_tz_free(tz);
        if (r) { snprintf(err, errlen, "tz: %s", why); return -EINVAL; }
    }
    /* A schedule that never fires (e.g. "0 0 30 2 *") is refused now, not found out later. */
    int64_t next;
    if (gw_cron_next(&c, NULL, 0, &next)) { snprintf(err, errlen, "schedule: never fires"); return -EINVAL; }
    if (p->jitter_s > GW_CRON_MAX_JITTER_S) {
        snprintf(err, errlen, "jitter_s: at most %u seconds", GW_CRON_MAX_JITTER_S);
        return -EINVAL;
    }
    out->jitter_s = p->jitter_s;
    if (!p->target[0]) { snprintf(err, errlen, "target: required"); return -EINVAL; }
    if (copy_str(out->target, sizeof out->target, p->target, "target", err, errlen)) return -EINVAL;
    if (!gw_config_backup_target(&d->cfg, p->target)) {
        snprintf(err, errlen, "target: no backup target named %.63s in the daemon's config", p->target);
        return -EINVAL;
    }
    if (p->method[0] && strcmp(p->method, "wp") && strcmp(p->method, "dirty-log") && strcmp(p->method, "pause")) {
        snprintf(err, errlen, "method: wp, dirty-log or pause");
        return -EINVAL;
    }
    snprintf(out->method, sizeof out->method, "%s", p->method);
    out->keep = (struct gw_keep){p->keep_last, p->keep_hourly, p->keep_daily, p->keep_weekly, p->keep_monthly,
                                 p->keep_yearly};
    /* No keep-rule at all means: keep every backup (no pruning). */
    const struct gw_keep none = {0};
    if (memcmp(&out->keep, &none, sizeof none) && gw_keep_check(&out->keep, why, sizeof why)) {
        snprintf(err, errlen, "keep: %s", why);
        return -EINVAL;
    }
    return 0;
}

void gw_policy_to_pb(const struct gw_policy *p, Godwit__V1__BackupPolicy *out)
{
    godwit__v1__backup_policy__init(out);
    out->vm = (char *)p->vm;
    out->schedule = (char *)p->schedule;
    out->tz = (char *)p->tz;
    out->jitter_s = p->jitter_s;
    out->target = (char *)p->target;
    out->method = (char *)p->method;
    out->keep_last = p->keep.last;
    out->keep_hourly = p->keep.hourly;
    out->keep_daily = p->keep.daily;
    out->keep_weekly = p->keep.weekly;
    out->keep_monthly = p->keep.monthly;
    out->keep_yearly = p->keep.yearly;
    out->created_unix_s = p->created;
    out->last_fire_unix_s = p->last_fire;
    out->last_job = (char *)p->last_job;
    out->last_error = (char *)p->last_error;
    out->label = (char *)p->label;
    out->rate = p->thr.rate;
    out->ops = p->thr.ops;
    out->adaptive = p->thr.adaptive < 0 ? "" : p->thr.adaptive ? "on" : "off";
}

void gw_policy_key(const struct gw_policy *p, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s%s", p->vm, p->label[0] ? "@" : "", p->label);
}

struct load_ctx {
    struct gw_daemon *d;
    struct gw_policy *v;
    unsigned n, cap;
    unsigned dropped;              /* rows past GW_POLICY_ROWS_MAX */
    int err;
};

/* A stored record is checked again: the database is a file, not trusted more than the API. */
static void load_one(void *arg, const ProtobufCMessage *m)
{
    struct load_ctx *c = arg;
    const Godwit__V1__BackupPolicy *p = (const void *)m;
    struct gw_policy pol;
    char err[256];
    bool run_record = p->vm[0] && p->label[0];
    bool invalid = !run_record && gw_policy_from_pb(c->d, p, &pol, err, sizeof err) != 0;
    if (run_record) {
        /* Its history only; a malformed one is dropped (its label policy starts it afresh). */
        if (!gw_vm_name_ok(p->vm) || !gw_label_ok(p->label)) return;
        memset(&pol, 0, sizeof pol);
        snprintf(pol.vm, sizeof pol.vm, "%s", p->vm);
        snprintf(pol.label, sizeof pol.label, "%s", p->label);
        snprintf(pol.last_error, sizeof pol.last_error, "%s", p->last_error);
        pol.run_record = true;
    } else if (invalid) {
        /* Kept visible (truncated copies) so that the operator sees why it does not run. */
        if (p->label[0] ? !gw_label_ok(p->label) : !gw_vm_name_ok(p->vm)) return;   /* not even deletable */
        memset(&pol, 0, sizeof pol);
        snprintf(pol.vm, sizeof pol.vm, "%s", p->vm);
        snprintf(pol.label, sizeof pol.label, "%s", p->label);
        snprintf(pol.schedule, sizeof pol.schedule, "%s", p->schedule);
        snprintf(pol.tz, sizeof pol.tz, "%s", p->tz);
        snprintf(pol.target, sizeof pol.target, "%s", p->target);
        snprintf(pol.last_error, sizeof pol.last_error, "not run: %.200s", err);
        pol.invalid = true;
    } else {
        snprintf(pol.last_error, sizeof pol.last_error, "%s", p->last_error);
    }
    pol.created = p->created_unix_s;
    pol.last_fire = p->last_fire_unix_s;
    snprintf(pol.last_job, sizeof pol.last_job, "%s", p->last_job);
    if (c->n == c->cap) {
        if (c->cap >= GW_POLICY_ROWS_MAX) { c->dropped++; return; }
        unsigned cap = c->cap ? 2 * c->cap : 16;
        struct gw_policy *v = realloc(c->v, cap * sizeof *v);
        if (!v) { c->err = -ENOMEM; return; }
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n++] = pol;
}

/* The rows as last read and checked (policy_mu). The scheduler asks four times a second, and
 * only this file writes them: each write drops the copy, and the next read rebuilds it. With
 * 1,024 policies, reading and checking every row each time kept an idle daemon at 8.5% of a
 * core (stop 29: bench/sched_idle.py, docs/backups.md "What an idle scheduler costs"). */
static struct gw_policy *cached;
static unsigned ncached;
static bool cache_valid;

static void invalidate(void)
{
    cache_valid = false;
}

static int load_all_locked(struct gw_daemon *d, struct gw_policy **out, unsigned *n)
{
    if (!cache_valid) {
        struct load_ctx c = {.d = d};
        int r = gw_db_load_policies(d->db, &godwit__v1__backup_policy__descriptor, load_one, &c);
        if (!r) r = c.err;
        if (r) { free(c.v); return r; }
        if (c.dropped)   /* said, not silent: those policies do not run */
            gw_warn("backup policies: %u stored rows past the %u this daemon reads are ignored", c.dropped,
                    GW_POLICY_ROWS_MAX);
        free(cached);
        cached = c.v;
        ncached = c.n;
        cache_valid = true;
    }
    struct gw_policy *v = malloc((ncached ? ncached : 1) * sizeof *v);
    if (!v) return -ENOMEM;
    if (ncached) memcpy(v, cached, ncached * sizeof *v);
    *out = v;
    *n = ncached;
    return 0;
}

int gw_policy_load_all(struct gw_daemon *d, struct gw_policy **out, unsigned *n)
{
    pthread_mutex_lock(&policy_mu);
    int r = load_all_locked(d, out, n);
    pthread_mutex_unlock(&policy_mu);
    return r;
}

static int put(struct gw_daemon *d, const struct gw_policy *p)
{
    invalidate();
    Godwit__V1__BackupPolicy pb;
    gw_policy_to_pb(p, &pb);
    char key[GW_POLICY_KEY_MAX];
    gw_policy_key(p, key, sizeof key);
    uint64_t mark = gw_db_mark(d->db);
    int r = gw_db_put_policy(d->db, key, &pb.base);
    return r ? r : gw_db_flush_since(d->db, mark);
}

/* The stored row of (vm, label) into *out (policy_mu held): vm's own policy (label ""), a
 * label policy (vm "") or a run record (both). 0 or -ENOENT / -errno. */
static int find_locked(struct gw_daemon *d, const char *vm, const char *label, struct gw_policy *out)
{
    struct gw_policy *v = NULL;
    unsigned n = 0;
    int r = load_all_locked(d, &v, &n);
    if (r) return r;
    r = -ENOENT;
    for (unsigned i = 0; i < n && r; i++)
        if (!strcmp(v[i].vm, vm) && !strcmp(v[i].label, label)) { *out = v[i]; r = 0; }
    free(v);
    return r;
}

void gw_policy_record_run(struct gw_daemon *d, const char *vm, const char *label, int64_t created, int64_t fire,
                          const char *job, const char *error)
{
    pthread_mutex_lock(&policy_mu);
    struct gw_policy p, lp;
    bool ok = false;
    if (!label[0]) ok = !find_locked(d, vm, "", &p) && p.created == created && !p.invalid;
    else if (!find_locked(d, "", label, &lp) && lp.created == created && !lp.invalid) {
        /* The label policy's run record for vm: new (or from an earlier identity) starts empty. */
        if (find_locked(d, vm, label, &p) || p.created != created) {
            memset(&p, 0, sizeof p);
            snprintf(p.vm, sizeof p.vm, "%s", vm);
            snprintf(p.label, sizeof p.label, "%s", label);
            p.created = created;
            p.run_record = true;
        }
        ok = true;
    }
    if (ok) {
        if (fire) p.last_fire = fire;
        if (job) snprintf(p.last_job, sizeof p.last_job, "%s", job);
        snprintf(p.last_error, sizeof p.last_error, "%s", error ? error : "");
        if (put(d, &p)) gw_error("vm=%s: cannot store its backup policy's last run", vm);
    }
    pthread_mutex_unlock(&policy_mu);
}

int gw_policy_get(struct gw_daemon *d, const char *vm, struct gw_policy *out)
{
    pthread_mutex_lock(&policy_mu);
    int r = find_locked(d, vm, "", out);
    pthread_mutex_unlock(&policy_mu);
    return r;
}

static int find_in(const struct gw_policy *v, unsigned n, const char *vm, const char *label)
{
    for (unsigned i = 0; i < n; i++)
        if (!strcmp(v[i].vm, vm) && !strcmp(v[i].label, label)) return (int)i;
    return -1;
}

/* Whether (vm, label) may be stored among v[0..n): it is there already, or the policies (run
 * records aside) are fewer than GW_POLICY_MAX. The API's and an arrival's one bound. */
static bool policy_room(const struct gw_policy *v, unsigned n, const char *vm, const char *label)
{
    if (find_in(v, n, vm, label) >= 0) return true;
    unsigned policies = 0;
    for (unsigned i = 0; i < n; i++) policies += !v[i].run_record;
    return policies < GW_POLICY_MAX;
}

void gw_policy_adopt(struct gw_daemon *d, const char *vm, const Godwit__V1__BackupPolicy *p)
{
    struct gw_policy pol;
    char err[512];
    if (strcmp(p->vm, vm) || gw_policy_from_pb(d, p, &pol, err, sizeof err)) {
        gw_warn("vm=%s: its backup policy from the source is not taken over: %s", vm,
                strcmp(p->vm, vm) ? "it names another VM" : err);
        return;
    }
    /* Its run history comes along: a fire the source already ran is not run again here. */
    pol.created = p->created_unix_s;
    pol.last_fire = p->last_fire_unix_s;
    snprintf(pol.last_job, sizeof pol.last_job, "%s", p->last_job);
    pthread_mutex_lock(&policy_mu);
    /* Within the same bound SetBackupPolicy keeps: arrivals (a peer's word) must not push the
     * operator's policies past what the loader reads back. */
    unsigned n = 0;
    struct gw_policy *v = NULL;
    int r = load_all_locked(d, &v, &n);
    bool room = !r && policy_room(v, n, pol.vm, pol.label);
    free(v);
    if (!room)
        gw_warn("vm=%s: its backup policy from the source is not taken over: %s", vm,
                r ? "the policies cannot be read" : "this host keeps as many policies as it may");
    else if (put(d, &pol)) gw_error("vm=%s: cannot store its backup policy", vm);
    else gw_info("vm=%s: backup policy taken over from the source", vm);
    pthread_mutex_unlock(&policy_mu);
}

void gw_policy_forget(struct gw_daemon *d, const char *vm)
{
    pthread_mutex_lock(&policy_mu);
    invalidate();
    gw_db_delete_policy(d->db, vm);   /* queued: the caller may hold the table lock */
    gw_db_delete_policy_runs(d->db, vm);
    pthread_mutex_unlock(&policy_mu);
}

void gw_policy_forget_runs(struct gw_daemon *d, const char *vm)
{
    pthread_mutex_lock(&policy_mu);
    invalidate();
    gw_db_delete_policy_runs(d->db, vm);   /* queued, as above */
    pthread_mutex_unlock(&policy_mu);
}

/* ---- API ---- */

/* A request names a VM's own policy (vm) or a label policy (label): exactly one. */
static int which_check(struct gw_grpc_call *call, const char *vm, const char *label)
{
    if (label[0]) {
        if (vm[0]) return BAD(call, "vm: name a VM or a label, not both");
        return gw_label_ok(label) ? GW_GRPC_OK : BAD(call, "label: KEY=VALUE");
    }
    return gw_vm_name_ok(vm) ? GW_GRPC_OK : BAD(call, "vm: 1-63 of [A-Za-z0-9._-], not starting with . or -");
}

static int not_found(struct gw_grpc_call *call, const char *vm, const char *label)
{
    if (label[0])
        return gw_grpc_call_error_reason(call, GW_GRPC_NOT_FOUND, "POLICY_NOT_FOUND", "no backup policy for label %s",
                                         label);
    return gw_grpc_call_error_reason(call, GW_GRPC_NOT_FOUND, "POLICY_NOT_FOUND", "VM %s has no backup policy", vm);
}


/* p's API form, with when it runs next. A label policy (rows v[0..n) hold its run records)
 * lists its runs (in runs/ptrs, *used of them taken) and shows the latest as its own last run;
 * its next start is the first after that. Strings point into p and v. */
static void to_api(const struct gw_policy *p, const struct gw_policy *v, unsigned n, Godwit__V1__BackupPolicy *pb,
                   Godwit__V1__BackupPolicyRun *runs, Godwit__V1__BackupPolicyRun **ptrs, unsigned *used)
{
    struct gw_policy q = *p;
    const struct gw_policy *latest = NULL;
    unsigned first = *used;
    for (unsigned i = 0; p->label[0] && i < n; i++) {
        const struct gw_policy *r = &v[i];
        if (!r->run_record || strcmp(r->label, p->label) || r->created != p->created) continue;
        Godwit__V1__BackupPolicyRun *o = &runs[*used];
        godwit__v1__backup_policy_run__init(o);
        o->vm = (char *)r->vm;
        o->last_fire_unix_s = r->last_fire;
        o->last_job = (char *)r->last_job;
        o->last_error = (char *)r->last_error;
        ptrs[(*used)++] = o;
        if (!latest || r->last_fire > latest->last_fire) latest = r;
    }
    if (latest) q.last_fire = latest->last_fire;
    gw_policy_to_pb(p, pb);
    if (latest) {
        pb->last_fire_unix_s = latest->last_fire;
        pb->last_job = (char *)latest->last_job;
        pb->last_error = (char *)latest->last_error;
    }
    pb->n_runs = *used - first;
    pb->runs = pb->n_runs ? &ptrs[first] : NULL;
    char err[128];
    int64_t start;
    pb->next_unix_s = p->invalid || gw_sched_next(&q, &start, err, sizeof err) ? 0 : start;
}

/* Sends resp, whose policy field is *slot, with p's API form there. */
static int send_one(struct gw_grpc_call *call, const struct gw_policy *p, const struct gw_policy *v, unsigned n,
                    ProtobufCMessage *resp, Godwit__V1__BackupPolicy **slot)
{
    Godwit__V1__BackupPolicyRun *runs = calloc(n + 1, sizeof *runs);
    Godwit__V1__BackupPolicyRun **ptrs = calloc(n + 1, sizeof *ptrs);
    if (!runs || !ptrs) {
        free(runs);
        free(ptrs);
        return gw_grpc_call_error(call, GW_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    unsigned used = 0;
    Godwit__V1__BackupPolicy pb;
    to_api(p, v, n, &pb, runs, ptrs, &used);
    *slot = &pb;
    gw_grpc_call_send(call, resp);
    *slot = NULL;
    free(runs);
    free(ptrs);
    return GW_GRPC_OK;
}

static int set_policy(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__SetBackupPolicyRequest *req = (const void *)msg;
    struct gw_policy p;
    char err[512];
    if (gw_policy_from_pb(d, req->policy, &p, err, sizeof err)) return BAD(call, "%s", err);
    /* The first run is the first fire after now: setting a policy never fires a past time. */
    p.created = gw_sched_now(d);
    pthread_mutex_lock(&policy_mu);
    unsigned n = 0;
    struct gw_policy *v = NULL;
    int code = GW_GRPC_OK;
    int r = load_all_locked(d, &v, &n);
    int old = r ? -1 : find_in(v, n, p.vm, p.label);
    if (old >= 0 && v[old].created >= p.created) p.created = v[old].created + 1;   /* a new identity */
    if (r) code = gw_grpc_call_error(call, GW_GRPC_UNAVAILABLE, "cannot read the policies: %s", strerror(-r));
    else if (!policy_room(v, n, p.vm, p.label))
        code = gw_grpc_call_error(call, GW_GRPC_RESOURCE_EXHAUSTED, "at most %u backup policies", GW_POLICY_MAX);
    else if ((r = put(d, &p)))
        code = gw_grpc_call_error(call, GW_GRPC_UNAVAILABLE, "cannot store the policy: %s", strerror(-r));
    pthread_mutex_unlock(&policy_mu);
    if (!code) {
        gw_info("%s%s: backup policy set: \"%s\" %s to %s", p.label[0] ? "label=" : "vm=", p.label[0] ? p.label : p.vm,
                p.schedule, p.tz[0] ? p.tz : "UTC", p.target);
        Godwit__V1__SetBackupPolicyResponse resp = GODWIT__V1__SET_BACKUP_POLICY_RESPONSE__INIT;
        code = send_one(call, &p, v, r ? 0 : n, &resp.base, &resp.policy);
    }
    free(v);
    return code;
}

static int get_policy(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__GetBackupPolicyRequest *req = (const void *)msg;
    int code = which_check(call, req->vm, req->label);
    if (code) return code;
    struct gw_policy *v = NULL;
    unsigned n = 0;
    int r = gw_policy_load_all(d, &v, &n);
    if (r) return gw_grpc_call_error(call, GW_GRPC_UNAVAILABLE, "cannot read the policies: %s", strerror(-r));
    int i = find_in(v, n, req->vm, req->label);
    Godwit__V1__GetBackupPolicyResponse resp = GODWIT__V1__GET_BACKUP_POLICY_RESPONSE__INIT;
    code = i < 0 ? not_found(call, req->vm, req->label) : send_one(call, &v[i], v, n, &resp.base, &resp.policy);
    free(v);
    return code;
}

static int list_policies(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    (void)msg;
    struct gw_policy *v = NULL;
    unsigned n = 0;
    int r = gw_policy_load_all(d, &v, &n);
    if (r) return gw_grpc_call_error(call, GW_GRPC_UNAVAILABLE, "cannot read the policies: %s", strerror(-r));
    Godwit__V1__BackupPolicy *pbs = calloc(n + 1, sizeof *pbs);
    Godwit__V1__BackupPolicy **ptrs = calloc(n + 1, sizeof *ptrs);
    Godwit__V1__BackupPolicyRun *runs = calloc(n + 1, sizeof *runs);
    Godwit__V1__BackupPolicyRun **rptrs = calloc(n + 1, sizeof *rptrs);
    int code = GW_GRPC_OK;
    if (!pbs || !ptrs || !runs || !rptrs) {
        code = gw_grpc_call_error(call, GW_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    } else {
        unsigned k = 0, used = 0;   /* each run record belongs to one label policy: n runs suffice */
        for (unsigned i = 0; i < n; i++) {
            if (v[i].run_record) continue;
            to_api(&v[i], v, n, &pbs[k], runs, rptrs, &used);
            ptrs[k] = &pbs[k];
            k++;
        }
        Godwit__V1__ListBackupPoliciesResponse resp = GODWIT__V1__LIST_BACKUP_POLICIES_RESPONSE__INIT;
        resp.n_policies = k;
        resp.policies = ptrs;
        gw_grpc_call_send(call, &resp.base);
    }
    free(pbs);
    free(ptrs);
    free(runs);
    free(rptrs);
    free(v);
    return code;
}

static int delete_policy(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__DeleteBackupPolicyRequest *req = (const void *)msg;
    int code = which_check(call, req->vm, req->label);
    if (code) return code;
    struct gw_policy *v = NULL;
    unsigned n = 0;
    pthread_mutex_lock(&policy_mu);
    uint64_t mark = gw_db_mark(d->db);
    int r = load_all_locked(d, &v, &n);
    int i = r ? -1 : find_in(v, n, req->vm, req->label);
    if (!r && i < 0) r = -ENOENT;
    char key[GW_POLICY_KEY_MAX];
    if (!r) { gw_policy_key(&v[i], key, sizeof key); invalidate(); r = gw_db_delete_policy(d->db, key); }
    /* A label policy's run records go with it. */
    for (unsigned k = 0; !r && req->label[0] && k < n; k++)
        if (v[k].run_record && !strcmp(v[k].label, req->label)) {
            gw_policy_key(&v[k], key, sizeof key);
            invalidate();
            r = gw_db_delete_policy(d->db, key);
        }
    if (!r) r = gw_db_flush_since(d->db, mark);
    pthread_mutex_unlock(&policy_mu);
    free(v);
    if (r == -ENOENT) return not_found(call, req->vm, req->label);
    if (r) return gw_grpc_call_error(call, GW_GRPC_UNAVAILABLE, "cannot delete the policy: %s", strerror(-r));
    gw_info("%s%s: backup policy deleted", req->label[0] ? "label=" : "vm=", req->label[0] ? req->label : req->vm);
    Godwit__V1__DeleteBackupPolicyResponse resp = GODWIT__V1__DELETE_BACKUP_POLICY_RESPONSE__INIT;
    gw_grpc_call_send(call, &resp.base);
    return GW_GRPC_OK;
}

int gw_service_register_policy(struct gw_daemon *d)
{
    static const struct {
        const char *path; const ProtobufCMessageDescriptor *desc; gw_grpc_handler_fn fn;
    } m[] = {
        {"/godwit.v1.GodwitBackup/SetBackupPolicy", &godwit__v1__set_backup_policy_request__descriptor, set_policy},
        {"/godwit.v1.GodwitBackup/GetBackupPolicy", &godwit__v1__get_backup_policy_request__descriptor, get_policy},
        {"/godwit.v1.GodwitBackup/ListBackupPolicies", &godwit__v1__list_backup_policies_request__descriptor,
         list_policies},
        {"/godwit.v1.GodwitBackup/DeleteBackupPolicy", &godwit__v1__delete_backup_policy_request__descriptor,
         delete_policy},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        int r = gw_grpc_server_register(d->srv, &(struct gw_grpc_method){
            .path = m[i].path, .kind = GW_GRPC_UNARY, .request = m[i].desc, .handler = m[i].fn, .arg = d});
        if (r) return r;
    }
    return 0;
}
