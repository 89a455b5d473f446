/* A migration job, source side. The job thread
 *   1. waits for a migration slot (max_migrations per host; the job is QUEUED meanwhile),
 *   2. asks the destination daemon (GodwitPeer.PrepareIncoming over gRPC, peer credential) to
 *      expect the VM, and gets the URL to send it to: the destination's migration port for
 *      any number of streams (it hands all of them to one runner), or, on a host without
 *      one, a per-migration listener,
 *   3. tells our runner to migrate there (RunnerMigrateRequest) and polls its status every
 *      200 ms, turning RunnerStatus.migration into job progress events,
 *   4. ends when the runner exits after handing the VM over (SUCCEEDED: the VM record moves
 *      to the destination's database), or reports phase "failed"/"cancelled" (the VM keeps
 *      running here).
 * CancelJob asks the runner to cancel; a policy timeout does the same. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/api/grpc_client.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/daemon/backup_sched.h"
#include "engine/daemon/daemon.h"
#include "engine/daemon/db.h"
#include "engine/runner/runner_client.h"
#include "godwit/v1/daemon.pb-c.h"

#define POLL_MS 200
#define PEER_TIMEOUT_MS 30000
/* No byte moved for this long before the hand-over: the destination has stalled (frozen,
 * or its network is gone without a reset). The migration is cancelled; the VM runs on. */
#define STALL_NS (10000ull * 1000 * 1000)

struct mig {
    struct gw_daemon *d;
    struct gw_job *j;
    struct gw_vm_rec *rec;           /* kept alive by rec->busy */
    char sock[108];
    char url[600];
    uint8_t token[32];               /* the destination's one-time session token */
    bool has_token;
    uint64_t exit_seq;
    bool url_prepared;
    bool tls_aes128;                 /* the destination takes the faster suite with the PSK */
    char last_state[32];
    int outcome;                     /* FAILED or CANCELLED once decided, 0 before */
    bool in_doubt;                   /* GO sent, RUNNING lost: owner.c settles the job */
    char record[1200];               /* the runner's hand-over record */
};

/* Records the job's failed or cancelled outcome (lock held). It is published (the job's final
 * state) only after finish(): whoever sees the job end must find the VM running here again
 * and the destination cleaned up. */
static void fail(struct mig *m, int state, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(struct mig *m, int state, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->j->error, sizeof m->j->error, fmt, ap);
    va_end(ap);
    m->outcome = state;
}

/* A gRPC client to the destination daemon, with the cluster's peer credential: the
 * operator's API token never leaves this host. */
int gw_peer_connect(struct gw_daemon *d, const char *addr, struct gw_grpc_client **c)
{
    int r;
    if (d->cfg.peer_ca[0]) {
        char err[512];
        struct gw_grpc_client_tls t = {.ca = d->cfg.peer_ca, .cert = d->cfg.api_cert, .key = d->cfg.api_key};
        r = gw_grpc_client_connect_tls(addr, 5000, &t, c, err, sizeof err);
        if (r) gw_warn("peer %s: %s", addr, err);
    } else {
        r = gw_grpc_client_connect(addr, 5000, c);
    }
    if (r) return r;
    if (d->peer_token[0]) gw_grpc_client_set_token(*c, d->peer_token);
    return 0;
}

/* Step 2 (lock not held). 0, or -1 with the job failed. */
static int prepare_destination(struct mig *m, const Godwit__V1__PrepareIncomingRequest *req)
{
    struct gw_grpc_client *c;
    char dest[256];
    pthread_mutex_lock(&m->d->lock);
    snprintf(dest, sizeof dest, "%s", m->j->destination);
    pthread_mutex_unlock(&m->d->lock);
    int r = gw_peer_connect(m->d, dest, &c);
    if (r) {
        pthread_mutex_lock(&m->d->lock);
        fail(m, GODWIT__V1__JOB__STATE__FAILED, "destination %s unreachable: %s", dest, strerror(-r));
        pthread_mutex_unlock(&m->d->lock);
        return -1;
    }
    struct gw_grpc_status st;
    ProtobufCMessage *resp = NULL;
    gw_grpc_client_unary(c, "/godwit.v1.GodwitPeer/PrepareIncoming", &req->base,
                         &godwit__v1__prepare_incoming_response__descriptor, &resp, PEER_TIMEOUT_MS, &st);
    gw_grpc_client_close(c);
    pthread_mutex_lock(&m->d->lock);
    if (st.code != GW_GRPC_OK) {
        fail(m, GODWIT__V1__JOB__STATE__FAILED, "destination %s: %s: %s", dest, gw_grpc_code_name(st.code), st.message);
    } else {
        const Godwit__V1__PrepareIncomingResponse *pr = (const void *)resp;
        snprintf(m->url, sizeof m->url, "%s", pr->url);
        m->url_prepared = true;
        m->tls_aes128 = pr->tls_aes128;
        if (pr->session_token.len == sizeof m->token) {
            memcpy(m->token, pr->session_token.data, sizeof m->token);
            m->has_token = true;
        }
    }
    pthread_mutex_unlock(&m->d->lock);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return m->outcome ? -1 : 0;
}

static void abort_destination(struct mig *m)
{
    struct gw_grpc_client *c;
    if (!m->url_prepared || gw_peer_connect(m->d, m->j->destination, &c)) return;
    Godwit__V1__AbortIncomingRequest req = GODWIT__V1__ABORT_INCOMING_REQUEST__INIT;
    req.vm = m->j->vm;
    req.job_id = m->j->id;
    struct gw_grpc_status st;
    ProtobufCMessage *resp = NULL;
    gw_grpc_client_unary(c, "/godwit.v1.GodwitPeer/AbortIncoming", &req.base,
                         &godwit__v1__abort_incoming_response__descriptor, &resp, 5000, &st);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    gw_grpc_client_close(c);
}

/* Step 3: start the runner's migration (lock not held). 0 or -1 (job failed). */
static int start_runner(struct mig *m)
{
    Godwit__V1__RunnerRequest req = GODWIT__V1__RUNNER_REQUEST__INIT;
    Godwit__V1__RunnerMigrateRequest mr = GODWIT__V1__RUNNER_MIGRATE_REQUEST__INIT;
    Godwit__V1__MigrationPolicy pol;
    pthread_mutex_lock(&m->d->lock);
    pol = m->j->policy;
    pthread_mutex_unlock(&m->d->lock);
    mr.destination = m->url;
    mr.policy = &pol;
    mr.secret_file = m->d->cfg.secret_file;
    if (m->has_token) {
        mr.session_token.data = m->token;
        mr.session_token.len = sizeof m->token;
    }
    mr.tls_off = !m->d->cfg.migration_tls;
    mr.tls_cert = m->d->cfg.tls_cert;
    mr.tls_key = m->d->cfg.tls_key;
    mr.tls_ca = m->d->cfg.tls_ca;
    mr.tls_aes128 = m->tls_aes128;
    /* The runner leaves a record of the hand-over for whoever finds it gone (owner.c). */
    mr.record_path = m->record;
    mr.job_id = m->j->id;
    mr.peer = m->j->destination;
    req.op_case = GODWIT__V1__RUNNER_REQUEST__OP_MIGRATE;
    req.migrate = &mr;
    Godwit__V1__RunnerReply *rep = NULL;
    int r = gw_runner_call(m->sock, &req, &rep, 10000);
    pthread_mutex_lock(&m->d->lock);
    if (r) fail(m, GODWIT__V1__JOB__STATE__FAILED, "runner: %s", strerror(-r));
    else if (!rep->ok) fail(m, GODWIT__V1__JOB__STATE__FAILED, "runner refused the migration: %s", rep->error);
    else {
        snprintf(m->j->phase, sizeof m->j->phase, "setup");
        gw_job_progress(m->j, "migration started");
    }
    pthread_mutex_unlock(&m->d->lock);
    if (rep) godwit__v1__runner_reply__free_unpacked(rep, NULL);
    return m->outcome ? -1 : 0;
}

/* ResumeMigration: the runner reconnects now, to url when not "" (lock not held). */
static void resume_runner(struct mig *m, const char *url)
{
    Godwit__V1__RunnerResumeMigrationRequest rm = GODWIT__V1__RUNNER_RESUME_MIGRATION_REQUEST__INIT;
    rm.destination = (char *)url;
    Godwit__V1__RunnerRequest req = GODWIT__V1__RUNNER_REQUEST__INIT;
    req.op_case = GODWIT__V1__RUNNER_REQUEST__OP_RESUME_MIGRATION;
    req.resume_migration = &rm;
    Godwit__V1__RunnerReply *rep = NULL;
    int r = gw_runner_call(m->sock, &req, &rep, 5000);
    if (r || !rep->ok)
        gw_warn("job=%s: the runner did not take the resume: %s", m->j->id, r ? strerror(-r) : rep->error);
    else if (*url)
        snprintf(m->url, sizeof m->url, "%s", url);
    if (rep) godwit__v1__runner_reply__free_unpacked(rep, NULL);
}

/* Step 3's loop (lock not held). Returns with the job in a final state. */
static void follow(struct mig *m)
{
    uint64_t t0 = gw_now_ns();
    bool cancel_sent = false, switch_sent = false;
    uint64_t done_ns = 0, silent_since = 0;
    uint64_t last_sent = UINT64_MAX, moved_ns = t0;
    bool stalled = false;
    for (;;) {
        usleep(POLL_MS * 1000);
        pthread_mutex_lock(&m->d->lock);
        struct gw_job *j = m->j;
        if (m->d->stopping) { pthread_mutex_unlock(&m->d->lock); return; }
        bool want_cancel = j->cancel;
        bool want_switch = j->switch_postcopy;
        bool want_resume = j->resume_migration;
        char resume_to[sizeof j->resume_to];
        snprintf(resume_to, sizeof resume_to, "%s", j->resume_to);
        j->resume_migration = false;
        bool timed_out = j->policy.timeout_s && gw_now_ns() - t0 > (uint64_t)j->policy.timeout_s * 1000000000ull;
        bool exited = m->rec->exit_seq != m->exit_seq;
        pthread_mutex_unlock(&m->d->lock);

        if (exited) {
            pthread_mutex_lock(&m->d->lock);
            if (gw_job_final(j->state)) { /* completed: the runner has now left too */ }
            /* Only the runner's word counts as a hand-over: exit code 0 also ends a runner
             * stopped mid-migration, whose VM never left. */
            else if (!strcmp(m->last_state, "migrated") || !strcmp(m->rec->exit_state, "migrated"))
                gw_job_set_state(j, GODWIT__V1__JOB__STATE__SUCCEEDED, "VM now runs on the destination");
            else if (m->rec->stop_requested)
                fail(m, GODWIT__V1__JOB__STATE__FAILED, "runner %s during the migration", m->rec->exit_why);
            else {
                /* It died without a word: perhaps after GO, with the VM running there (the
                 * status polls cannot close that window). Never taken for a crash before the
                 * destination says it does not have the VM: finish() hands it to owner.c. */
                m->in_doubt = true;
                snprintf(j->error, sizeof j->error, "runner %s during the migration, leaving no record of the "
                         "hand-over", m->rec->exit_why);
            }
            pthread_mutex_unlock(&m->d->lock);
            return;
        }
        if (gw_job_final(j->state) && !done_ns) done_ns = gw_now_ns();
        if (done_ns && gw_now_ns() - done_ns > 10000000000ull) {
            /* A runner that completed but does not leave: it must not run the VM twice. */
            pthread_mutex_lock(&m->d->lock);
            gw_proc_signal(&m->rec->proc, SIGKILL);
            pthread_mutex_unlock(&m->d->lock);
            done_ns = gw_now_ns();
        }
        if (stalled && !cancel_sent) gw_warn("job=%s vm=%s: no progress for %llu s: cancelling the migration", j->id,
                                             j->vm, STALL_NS / 1000000000ull);
        if ((want_cancel || timed_out || stalled) && !cancel_sent && !gw_job_final(j->state)) {
            Godwit__V1__RunnerReply *rep = NULL;
            gw_runner_op(m->sock, GODWIT__V1__RUNNER_REQUEST__OP_CANCEL_MIGRATION, &rep, 5000);
            if (rep) godwit__v1__runner_reply__free_unpacked(rep, NULL);
            cancel_sent = true;
        }
        if (want_switch && !switch_sent && !gw_job_final(j->state)) {
            Godwit__V1__RunnerReply *srep = NULL;
            gw_runner_op(m->sock, GODWIT__V1__RUNNER_REQUEST__OP_SWITCH_TO_POSTCOPY, &srep, 5000);
            /* Until the runner took it, or its pre-copy is over anyway (the migration may not
             * have reached the runner yet). */
            switch_sent = srep && (srep->ok || (srep->error && strstr(srep->error, "not in pre-copy")));
            if (srep) godwit__v1__runner_reply__free_unpacked(srep, NULL);
        }
        if (want_resume && !gw_job_final(j->state)) resume_runner(m, resume_to);
        Godwit__V1__RunnerReply *rep = NULL;
        if (gw_runner_op(m->sock, GODWIT__V1__RUNNER_REQUEST__OP_STATUS, &rep, 2000)) {
            /* Alive (no exit seen) but not answering: after 30 s the job gives up on it. */
            if (!silent_since) silent_since = gw_now_ns();
            if (gw_now_ns() - silent_since > 30000000000ull && !gw_job_final(j->state)) {
                pthread_mutex_lock(&m->d->lock);
                fail(m, GODWIT__V1__JOB__STATE__FAILED, "the runner stopped answering during the migration");
                pthread_mutex_unlock(&m->d->lock);
                return;
            }
            continue;
        }
        silent_since = 0;
        pthread_mutex_lock(&m->d->lock);
        const Godwit__V1__RunnerStatus *st = rep->status;
        bool done = false;
        if (st) {
            snprintf(m->last_state, sizeof m->last_state, "%s", st->state ? st->state : "");
            if (st->migration) gw_job_take_progress(j, st->migration);
            const char *ph = st->migration && st->migration->phase ? st->migration->phase : "";
            uint64_t sent = st->migration ? st->migration->sent_bytes : 0;
            if (sent != last_sent) { last_sent = sent; moved_ns = gw_now_ns(); }
            /* A bandwidth limit spaces progress updates out: allow three 4 MiB batches more. */
            uint64_t bw = j->policy.bandwidth_limit_bytes_per_s;
            uint64_t stall_ns = STALL_NS + (bw ? 3 * (4ull << 20) * 1000000000ull / bw : 0);
            if (sent == last_sent && !strcmp(m->last_state, "migrating") && gw_now_ns() - moved_ns > stall_ns)
                stalled = true;
            if (gw_job_final(j->state)) {
                /* Succeeded: waiting for the runner to leave (it lingers ~1.5 s). */
            } else if (!strcmp(ph, "completed") || !strcmp(m->last_state, "migrated")) {
                gw_job_set_state(j, GODWIT__V1__JOB__STATE__SUCCEEDED, "VM now runs on the destination");
            } else if (!strcmp(ph, "in-doubt")) {
                /* GO went out, RUNNING never came back: the VM may run there. It stays
                 * paused here; owner.c asks the destination and ends the job. */
                done = true;
                m->in_doubt = true;
                snprintf(j->error, sizeof j->error, "%s", st->migration_error ? st->migration_error : "hand-over in doubt");
            } else if ((!strcmp(ph, "postcopy-paused") || !strcmp(ph, "postcopy-recover")) &&
                       !strcmp(m->last_state, "in-doubt")) {
                /* The link broke after GO: the runner reconnects by itself, and once it gave
                 * up it waits (paused) for ResumeMigration or ResolveVm. The job goes on. */
                gw_job_progress(j, st->migration_error);
            } else if (!strcmp(ph, "failed") || !strcmp(ph, "cancelled") || !strcmp(ph, "postcopy-paused")) {
                /* postcopy-paused (resolved keep-source, or stopped for good): the runner
                 * says why in its error. */
                done = true;
                if (stalled && !want_cancel) {
                    fail(m, GODWIT__V1__JOB__STATE__FAILED, "no progress for %llu s: the destination %s stopped taking "
                         "data (stalled); the migration was cancelled and the VM runs on %s",
                         STALL_NS / 1000000000ull, j->destination, m->d->cfg.hostname);
                } else if (!strcmp(ph, "cancelled") || (cancel_sent && !timed_out)) {
                    fail(m, GODWIT__V1__JOB__STATE__CANCELLED, "cancelled; the VM keeps running on %s",
                         m->d->cfg.hostname);
                } else if (timed_out) {
                    fail(m, GODWIT__V1__JOB__STATE__FAILED, "timed out after %u s", j->policy.timeout_s);
                } else {
                    fail(m, GODWIT__V1__JOB__STATE__FAILED, "%s", st->migration_error && *st->migration_error
                         ? st->migration_error : "migration failed");
                }
            } else {
                gw_job_progress(j, NULL);
            }
        }
        pthread_mutex_unlock(&m->d->lock);
        godwit__v1__runner_reply__free_unpacked(rep, NULL);
        if (done) return;
        gw_job_save_progress(m->d, j);
    }
}

/* The end: give the VM up or keep it (lock held). */
static void finish(struct mig *m)
{
    struct gw_daemon *d = m->d;
    struct gw_vm_rec *rec = m->rec;
    rec->migrating_out = false;
    rec->busy = false;
    d->running_migrations--;
    if (m->j->state != GODWIT__V1__JOB__STATE__SUCCEEDED && !rec->proc.pid && rec->exit_seq != m->exit_seq) {
        /* The runner left: its hand-over record says whether the VM moved or is in doubt. */
        enum gw_settle s = gw_owner_settle_exit(d, rec);
        if (s != GW_SETTLE_NONE) {
            m->outcome = 0;   /* the job was ended (moved) or is left to the resolver */
            pthread_cond_broadcast(&d->cond);
            return;
        }
    }
    if (m->in_doubt) {
        gw_owner_in_doubt(d, rec, m->j->destination, m->j->id, m->j->error);
        return;
    }
    if (m->j->state == GODWIT__V1__JOB__STATE__SUCCEEDED) {
        gw_info("vm=%s job=%s: migrated to %s", rec->name, m->j->id, m->j->destination);
        if (rec->proc.pidfd >= 0) {   /* only on shutdown paths: never leave a watched fd behind */
            gw_proc_signal(&rec->proc, SIGKILL);
            close(rec->proc.pidfd);
        }
        gw_vm_unlink(d, rec);
        gw_db_delete_vm(d->db, rec->name);
        gw_policy_forget(d, rec->name);   /* the destination took it over */
        gw_owner_remove_record(d, rec->name);   /* else a return home would read as handed over */
        free(rec);
    } else if (rec->proc.pid) {
        rec->state = GODWIT__V1__VM__STATE__RUNNING;
        gw_vm_persist(d, rec);
        /* Whoever reads the job must learn where the VM is. */
        size_t n = strlen(m->j->error);
        if (m->outcome && !strstr(m->j->error, d->cfg.hostname) && n < sizeof m->j->error - 1)
            snprintf(m->j->error + n, sizeof m->j->error - n, "; the VM runs on %s", d->cfg.hostname);
    } else if (rec->exit_seq != m->exit_seq) {
        char why[200];
        snprintf(why, sizeof why, "runner %s during a migration", rec->exit_why);
        gw_sup_crashed(d, rec, why);
    }
    pthread_cond_broadcast(&d->cond);
}

static void *job_main(void *arg)
{
    struct mig *m = arg;
    struct gw_daemon *d = m->d;
    struct gw_job *j = m->j;
    pthread_mutex_lock(&d->lock);
    while (!d->stopping && !gw_job_final(j->state) && d->running_migrations >= d->cfg.max_migrations)
        pthread_cond_wait(&d->cond, &d->lock);
    if (d->stopping || gw_job_final(j->state)) goto out;   /* shut down, or cancelled while queued */
    m->rec = gw_vm_find(d, j->vm);
    if (!m->rec || m->rec->busy || m->rec->state != GODWIT__V1__VM__STATE__RUNNING || !m->rec->proc.pid) {
        fail(m, GODWIT__V1__JOB__STATE__FAILED, "VM %s is not running here any more", j->vm);
        goto out;
    }
    struct gw_vm_rec *rec = m->rec;
    rec->busy = true;
    rec->migrating_out = true;
    rec->state = GODWIT__V1__VM__STATE__MIGRATING;
    gw_vm_persist(d, rec);
    d->running_migrations++;
    memcpy(m->sock, rec->control, sizeof m->sock);
    gw_handover_path(d, rec->name, m->record, sizeof m->record);
    m->exit_seq = rec->exit_seq;
    snprintf(j->phase, sizeof j->phase, "prepare");
    gw_job_set_state(j, GODWIT__V1__JOB__STATE__RUNNING, "preparing the destination");

    Godwit__V1__PrepareIncomingRequest req = GODWIT__V1__PREPARE_INCOMING_REQUEST__INIT;
    Godwit__V1__Vm vm;
    Godwit__V1__RestartPolicy rp;
    Godwit__V1__VmCounters c;
    gw_vm_to_proto(d, rec, &vm, &rp, &c);
    /* The message is packed by the client while the lock is not held: copy what it uses. */
    char name[sizeof rec->name], guest[sizeof rec->guest], disk[sizeof rec->disk];
    memcpy(name, rec->name, sizeof name);
    memcpy(guest, rec->guest, sizeof guest);
    memcpy(disk, rec->disk, sizeof disk);
    vm.name = name; vm.guest = guest; vm.disk_path = disk; vm.error = ""; vm.host = d->cfg.hostname;
    req.vm = &vm;
    req.job_id = j->id;
    req.source_host = d->cfg.hostname;
    req.streams = j->policy.streams;
    pthread_mutex_unlock(&d->lock);
    struct gw_policy bpol;
    Godwit__V1__BackupPolicy bpb;
    if (!gw_policy_get(d, name, &bpol) && !bpol.invalid) { gw_policy_to_pb(&bpol, &bpb); req.backup_policy = &bpb; }

    if (!prepare_destination(m, &req) && !start_runner(m)) follow(m);

    pthread_mutex_lock(&d->lock);
    if (!gw_job_final(j->state) && !m->outcome && !m->in_doubt && !d->stopping)
        fail(m, GODWIT__V1__JOB__STATE__FAILED, "the migration ended without an outcome");
    /* Shutting down: leave the migration to the runners and the job open in the database
     * (the next daemon reports it interrupted); cancelling it would turn a daemon restart
     * into a failed migration. */
    if (d->stopping && !gw_job_final(j->state)) goto out;
    /* finish() first: a runner that left may have handed the VM over (or be in doubt), and
     * then the destination must not be told to drop it. */
    finish(m);
    if (m->outcome && m->url_prepared) {
        pthread_mutex_unlock(&d->lock);
        abort_destination(m);
        pthread_mutex_lock(&d->lock);
    }
out:
    if (m->outcome && !gw_job_final(j->state)) gw_job_set_state(j, m->outcome, j->error);
    j->has_thread = false;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    free(m);
    return NULL;
}

int gw_migrate_start(struct gw_daemon *d, struct gw_job *j)
{
    struct mig *m = calloc(1, sizeof *m);
    if (!m) return -ENOMEM;
    m->d = d;
    m->j = j;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int r = pthread_create(&j->thread, &at, job_main, m);
    pthread_attr_destroy(&at);
    if (r) { free(m); return -r; }
    j->has_thread = true;
    return 0;
}

void gw_migrate_cancel(struct gw_daemon *d, struct gw_job *j)
{
    j->cancel = true;
    if (j->state == GODWIT__V1__JOB__STATE__QUEUED) {
        snprintf(j->error, sizeof j->error, "cancelled while queued");
        gw_job_set_state(j, GODWIT__V1__JOB__STATE__CANCELLED, "cancelled while queued");
    }
    pthread_cond_broadcast(&d->cond);
}
