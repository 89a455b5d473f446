/* The runner's side of outgoing migrations: turning a control request into a pre-copy job,
 * reporting its progress, and acting on its end (leave when the VM runs elsewhere, run on
 * when it failed). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/instant_restore.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/runner/handover.h"
#include "engine/runner/runner.h"
#include "engine/vm/virtio_attach.h"
#include "engine/transport/tls.h"
#include "postcopy/postcopy_dest.h"
#include "postcopy/postcopy_source.h"
#include "precopy/precopy_source.h"

int gw_runner_read_secret(const char *path, uint8_t *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t n = read(fd, buf, cap);
    int e = errno;
    close(fd);
    if (n < 0) return -e;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t')) n--;
    return n < (ssize_t)GW_SEC_MIN_SECRET ? -EINVAL : (int)n;
}

int gw_runner_migrate(struct gw_runner *r, const Godwit__V1__RunnerMigrateRequest *req, char *err, size_t errlen)
{
    /* The run state (run_state.c) already refused a second migration. A VM that arrived by
     * post-copy leaves only once all of its pages are here. */
    if (r->postcopy_in && !gw_postcopy_in_finished(r->postcopy_in)) {
        snprintf(err, errlen, "the VM's pages are still arriving by post-copy");
        return -EBUSY;
    }
    if (r->instant && !gw_instant_restore_finished(r->instant)) {
        snprintf(err, errlen, "the VM's memory is still being restored from its backup");
        return -EBUSY;
    }
    char why[256];
    if (gw_vm_fatal(r->vm, why, sizeof why)) { snprintf(err, errlen, "the VM has failed: %s", why); return -ESRCH; }
    if (!req->destination || !*req->destination) { snprintf(err, errlen, "migrate needs a destination"); return -EINVAL; }
    const Godwit__V1__MigrationPolicy *pol = req->policy;
    /* Test builds (GODWIT_TEST_HOOKS) may carry a fault from --test-fault; production
     * runners have no way to set one. */
    struct gw_precopy_params p = {.url = req->destination, .fault = (enum gw_mig_fault)r->test_fault};
    if (pol) {
        if (pol->streams > 16) { snprintf(err, errlen, "streams must be 1..16"); return -EINVAL; }
        p.streams = pol->streams;
        p.codec = pol->compression == GODWIT__V1__MIGRATION_POLICY__COMPRESSION__NONE ? GW_CODEC_NONE
                  : pol->compression == GODWIT__V1__MIGRATION_POLICY__COMPRESSION__LZ4 ? GW_CODEC_LZ4
                  : GW_CODEC_AUTO;
        p.policy.downtime_limit_ns = (uint64_t)pol->downtime_limit_ms * 1000000ull;
        p.policy.bandwidth_limit_bps = pol->bandwidth_limit_bytes_per_s;
        p.policy.timeout_ns = (uint64_t)pol->timeout_s * 1000000000ull;
        p.policy.auto_converge = pol->auto_converge;
        p.policy.max_rounds = pol->max_rounds;
    }
    const char *sf = req->secret_file && *req->secret_file ? req->secret_file : r->secret_file;
    if (!*sf) { snprintf(err, errlen, "no cluster secret: start the runner with --secret-file or name one"); return -EINVAL; }
    uint8_t secret[1024];
    int n = gw_runner_read_secret(sf, secret, sizeof secret);
    if (n < 0) {
        snprintf(err, errlen, "cluster secret %s: %s", sf, n == -EINVAL ? "shorter than 32 bytes" : strerror(-n));
        return n;
    }
    p.secret = secret;
    p.secret_len = (size_t)n;
    if (req->session_token.len && req->session_token.len != sizeof p.token) {
        snprintf(err, errlen, "a session token has %u bytes", GW_SEC_TOKEN_SIZE);
        return -EINVAL;
    }
    if (req->session_token.len) memcpy(p.token, req->session_token.data, sizeof p.token);
    /* Every TCP stream starts with its preamble; TLS unless explicitly off. */
    bool tcp = !strncmp(req->destination, "tcp:", 4);
    p.preamble = tcp;
    if (!req->tls_off && !tcp) {
        memset(secret, 0, sizeof secret);
        snprintf(err, errlen, "migration TLS runs over TCP only; turn it off for %s", req->destination);
        return -EPROTONOSUPPORT;
    }
    struct gw_sec_cfg sec = {.tls = !req->tls_off, .secret = secret, .secret_len = (size_t)n,
                             .cert = req->tls_cert, .key = req->tls_key, .ca = req->tls_ca,
                             .aes128 = req->tls_aes128};
    struct gw_err e = {0};
    int rc = gw_tls_ctx_new(&sec, false, &p.tls, &e);
    if (rc) {
        memset(secret, 0, sizeof secret);
        snprintf(err, errlen, "%s", e.msg);
        return rc;
    }
    if (req->tls_off) gw_warn("vm %s: migration to %s in plaintext (TLS turned off)", r->vm->name, req->destination);
    bool hybrid = pol && pol->mode == GODWIT__V1__MIGRATION_POLICY__MODE__HYBRID;
    if (pol && (pol->mode == GODWIT__V1__MIGRATION_POLICY__MODE__POSTCOPY || hybrid)) {
        if (!tcp) {
            gw_tls_ctx_free(p.tls);
            memset(secret, 0, sizeof secret);
            snprintf(err, errlen, "post-copy runs over TCP only");
            return -EPROTONOSUPPORT;
        }
        struct gw_postcopy_params pp = {
            .url = p.url, .lanes = p.streams, .codec = p.codec, .secret = p.secret, .secret_len = p.secret_len,
            .bandwidth_limit_bps = p.policy.bandwidth_limit_bps, .timeout_ns = p.policy.timeout_ns,
            .preamble = p.preamble, .tls = p.tls,
            /* Hybrid: at most max_rounds pre-copy rounds (default 3), fewer when the projected
             * downtime fits the limit or stays above it (postcopy_source.h). */
            .precopy_rounds = hybrid ? (pol->max_rounds ? pol->max_rounds : GW_HYBRID_DEFAULT_ROUNDS) : 0,
            .downtime_limit_ns = p.policy.downtime_limit_ns,
            .recover_timeout_ns = (uint64_t)pol->recover_timeout_s * 1000000000ull,
            .link_timeout_ms = pol->link_timeout_ms,
            .no_priority = pol->postcopy_no_priority_channel,
            .dirty_rate_pct = pol->hybrid_dirty_rate_pct,
            .ns_per_gib = (uint64_t)pol->hybrid_ms_per_gib * 1000000ull,
        };
        memcpy(pp.token, p.token, sizeof pp.token);
        rc = gw_postcopy_start(r->vm, &pp, &r->postcopy);
    } else {
        rc = gw_precopy_start(r->vm, &p, &r->migration);
    }
    memset(secret, 0, sizeof secret);
    if (rc) { snprintf(err, errlen, "cannot start the migration: %s", strerror(-rc)); return rc; }
    r->state = GW_RUN_MIGRATING;
    snprintf(r->record_path, sizeof r->record_path, "%s", req->record_path ? req->record_path : "");
    snprintf(r->job_id, sizeof r->job_id, "%s", req->job_id ? req->job_id : "");
    snprintf(r->peer, sizeof r->peer, "%s", req->peer ? req->peer : "");
    snprintf(r->mig_url, sizeof r->mig_url, "%s", req->destination);
    gw_info("vm %s: migrating to %s by %s%s%s", r->vm->name, req->destination,
            r->postcopy ? (hybrid ? "hybrid migration" : "post-copy") : "pre-copy", r->job_id[0] ? " job=" : "", r->job_id);
    return 0;
}

/* Leaves the hand-over record for the daemon (see handover.h). A failure is logged: the
 * runner's exit summary still says the same, but a daemon restart would not know. */
static void write_record(struct gw_runner *r, const char *state)
{
    if (!r->record_path[0]) return;
    Godwit__V1__HandoverRecord rec = GODWIT__V1__HANDOVER_RECORD__INIT;
    rec.state = (char *)state;
    rec.vm = r->vm->name;
    rec.job_id = r->job_id;
    rec.peer = r->peer;
    rec.destination = r->mig_url;
    rec.unix_ms = gw_wall_ns() / 1000000;
    rec.error = r->last_mig.error;
    int rc = gw_handover_write(r->record_path, &rec);
    if (rc) gw_error("vm %s: cannot write the hand-over record %s: %s", r->vm->name, r->record_path, strerror(-rc));
}

int gw_runner_resume_migration(struct gw_runner *r, const char *url, char *err, size_t errlen)
{
    if (!r->postcopy) { snprintf(err, errlen, "resume-migration refused: no post-copy migration is paused"); return -EALREADY; }
    if (url && *url && strncmp(url, "tcp:", 4)) { snprintf(err, errlen, "post-copy runs over TCP only"); return -EINVAL; }
    int rc = gw_postcopy_resume(r->postcopy, url && *url ? url : NULL);
    if (rc == -EINVAL) snprintf(err, errlen, "resume-migration refused: a bad address");
    else if (rc) snprintf(err, errlen, "resume-migration refused: post-copy is not paused");
    else if (url && *url) snprintf(r->mig_url, sizeof r->mig_url, "%s", url);
    if (!rc) gw_info("vm %s: resuming post-copy%s%s on the operator's word", r->vm->name, url && *url ? " to " : "",
                     url && *url ? url : "");
    return rc;
}

int gw_runner_resolve(struct gw_runner *r, bool keep_source, char *err, size_t errlen)
{
    if (r->postcopy) {
        /* A post-copy still recovering: it stops trying, and the VM stays paused here. */
        gw_postcopy_abandon(r->postcopy);
        gw_postcopy_progress(r->postcopy, &r->last_mig);
        gw_postcopy_free(r->postcopy);
        r->postcopy = NULL;
    }
    if (keep_source) {
        /* The destination never started the VM: this copy is the only one. Its disk lock
         * was let go at GO; a destination that took it does run the VM: refuse. */
        int rc = gw_vm_disk_lock(r->vm, true, 0);
        if (rc) {
            snprintf(err, errlen, "the disk is locked by another VM or host (the destination runs it?): %s",
                     rc == -EAGAIN ? "lock held elsewhere" : strerror(-rc));
            return rc;
        }
        rc = gw_runner_release(r, GW_PAUSE_IN_DOUBT);
        if (rc) { snprintf(err, errlen, "cannot resume the VM: %s", strerror(-rc)); return rc; }
        r->state = GW_RUN_RUNNING;
        if (r->record_path[0] && unlink(r->record_path) && errno != ENOENT)
            gw_warn("vm %s: cannot remove %s: %s", r->vm->name, r->record_path, strerror(errno));
        gw_info("vm %s: in-doubt hand-over resolved: the VM runs on here", r->vm->name);
        return 0;
    }
    r->state = GW_RUN_MIGRATED;
    write_record(r, "migrated");
    r->linger_until_ns = gw_now_ns() + 1500000000ull;
    gw_info("vm %s: in-doubt hand-over resolved: the VM runs on the destination; discarding it here", r->vm->name);
    return 0;
}

/* An outgoing migration (pre-copy or post-copy) ended: its final phase sets the run state. */
static void settle_outgoing(struct gw_runner *r)
{
    switch (r->last_mig.phase) {
    case GW_MIG_COMPLETED:
        /* Terminal: the record first, so that whoever finds this runner gone knows why.
         * Then stay a moment so whoever polls our status sees "completed" before we go;
         * every request but STATUS and STOP is refused meanwhile. */
        r->state = GW_RUN_MIGRATED;
        write_record(r, "migrated");
        r->linger_until_ns = gw_now_ns() + 1500000000ull;
        break;
    case GW_MIG_IN_DOUBT:          /* pre-copy: GO sent, RUNNING lost */
    case GW_MIG_POSTCOPY_PAUSED:   /* post-copy broke after the hand-over: this copy holds pages
                                    * the destination has not got */
        /* The VM stays paused; that pause is now the in-doubt owner's, and only RESOLVE (an
         * operator's decision) lifts it. */
        gw_runner_hold(r, GW_PAUSE_IN_DOUBT);
        r->state = GW_RUN_IN_DOUBT;
        write_record(r, "in-doubt");
        break;
    default:
        r->state = GW_RUN_RUNNING;   /* failed or cancelled before the hand-over: resumed here */
        break;
    }
}

/* Post-copy, either way: progress, and the end of an outgoing one. */
static void poll_postcopy(struct gw_runner *r)
{
    if (r->postcopy_in) {
        gw_postcopy_in_progress(r->postcopy_in, &r->last_mig);
        /* Arrived by post-copy and its source is gone: the VM is held paused (never runs on
         * half its memory) and no RESUME may lift that, only a finished fill. */
        enum gw_mig_phase ph = r->last_mig.phase;
        bool broken = ph == GW_MIG_POSTCOPY_PAUSED || ph == GW_MIG_POSTCOPY_RECOVER || ph == GW_MIG_FAILED;
        if (broken && r->state == GW_RUN_RUNNING) {
            gw_runner_hold(r, GW_PAUSE_IN_DOUBT);
            r->state = GW_RUN_PAUSED;
            r->pc_held = true;
        } else if (!broken && r->pc_held) {
            /* The source took post-copy up again: the VM runs on (unless an operator holds it). */
            r->pc_held = false;
            if (!gw_runner_release(r, GW_PAUSE_IN_DOUBT) && !r->pause_owners) r->state = GW_RUN_RUNNING;
        }
    }
    if (!r->postcopy) return;
    gw_postcopy_progress(r->postcopy, &r->last_mig);
    enum gw_mig_phase ph = r->last_mig.phase;
    bool broken = ph == GW_MIG_POSTCOPY_PAUSED || ph == GW_MIG_POSTCOPY_RECOVER;
    if (broken && r->state == GW_RUN_MIGRATING) {
        /* The link broke after GO: the VM is paused here (by the migration) and held so; the
         * migration reconnects by itself, and only RESUME_MIGRATION or RESOLVE act meanwhile. */
        gw_runner_hold(r, GW_PAUSE_IN_DOUBT);
        r->state = GW_RUN_IN_DOUBT;
        write_record(r, "in-doubt");
    } else if (!broken && r->state == GW_RUN_IN_DOUBT) {
        r->pause_owners &= ~(unsigned)GW_PAUSE_IN_DOUBT;   /* never resumed here: the migration keeps it paused */
        r->state = GW_RUN_MIGRATING;
    }
    if (!gw_postcopy_finished(r->postcopy)) return;
    gw_postcopy_free(r->postcopy);
    r->postcopy = NULL;
    settle_outgoing(r);
}

void gw_runner_poll_migration(struct gw_runner *r)
{
    poll_postcopy(r);
    if (!r->migration) return;
    gw_precopy_progress(r->migration, &r->last_mig);
    if (!gw_precopy_finished(r->migration)) return;
    gw_precopy_free(r->migration);
    r->migration = NULL;
    settle_outgoing(r);
}
