/* The runner's main loop, status and exit summary (see runner.h). */
#include "engine/runner/runner.h"
#include "engine/vm/virtio_attach.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "engine/common/json.h"
#include "engine/common/log.h"
#include "engine/common/util.h"

void gw_runner_fill_status(struct gw_runner *r, Godwit__V1__RunnerStatus *st, Godwit__V1__GuestCounters *c)
{
    godwit__v1__runner_status__init(st);
    godwit__v1__guest_counters__init(c);
    struct gw_guest_totals t = {0};
    /* Instant restore: the counters live in guest memory that may still be in the store. */
    if (gw_runner_guest_readable(r)) gw_vm_guest_totals(r->vm, &t);
    c->pages_written = t.pages_written;
    c->bytes_written = t.bytes_written;
    c->pages_verified = t.pages_verified;
    c->verify_errors = t.verify_errors;
    c->verify_passes = t.verify_passes;
    c->disk_blocks_written = t.disk_blocks_written;
    c->disk_blocks_read = t.disk_blocks_read;
    c->disk_verify_errors = t.disk_verify_errors;
    c->disk_io_errors = t.disk_io_errors;
    c->ticks = t.ticks;
    c->vcpu_exits = t.vcpu_exits;
    st->counters = c;
    st->name = r->vm->name;
    st->memory_bytes = r->vm->mem.size;
    st->vcpus = r->vm->nvcpus;
    st->guest_spec = r->vm->guest_spec;
    st->uptime_ms = (gw_now_ns() - r->started_ns) / 1000000;
    pthread_mutex_lock(&r->vm->lock);
    st->guest_ready = r->vm->ready_vcpus >= r->vm->nvcpus;
    pthread_mutex_unlock(&r->vm->lock);
    int fatal = gw_vm_fatal(r->vm, r->status_err, sizeof r->status_err);
    st->state = (char *)gw_run_state_name(fatal ? GW_RUN_FAILED : r->state);
    st->paused_by = (char *)gw_pause_owners_name(r->pause_owners);
    if (gw_vm_disk_latency(r->vm, &r->status_disk_lat) == 0) {
        st->disk_requests = r->status_disk_lat.count;
        st->disk_p50_us = gw_lat_hist_quantile(&r->status_disk_lat, 0.5) / 1000;
        st->disk_p99_us = gw_lat_hist_quantile(&r->status_disk_lat, 0.99) / 1000;
        st->n_disk_latency_buckets = GW_LAT_HIST_BUCKETS;
        st->disk_latency_buckets = r->status_disk_lat.b;
        int nw = gw_vm_disk_latency_windows(r->vm, r->status_disk_windows, r->status_window_ends, GW_LAT_WINDOWS);
        st->n_disk_p99_windows_us = nw > 0 ? (size_t)nw : 0;
        st->disk_p99_windows_us = r->status_disk_windows;
        st->disk_window_ms = GW_LAT_WINDOW_MS;
        uint64_t now = gw_now_ns();
        for (int i = 0; i < nw; i++) {
            uint64_t age = now > r->status_window_ends[i] ? (now - r->status_window_ends[i]) / 1000000 : 0;
            r->status_window_ages[i] = age > UINT32_MAX ? UINT32_MAX : (uint32_t)age;
        }
        st->n_disk_window_ages_ms = st->n_disk_p99_windows_us;
        st->disk_window_ages_ms = r->status_window_ages;
    }
    /* Migration progress, in the API's JobProgress shape. */
    const struct gw_mig_progress *m = &r->last_mig;
    if (m->phase != GW_MIG_NONE) {
        Godwit__V1__JobProgress *jp = &r->status_mig;
        Godwit__V1__PagesByEncoding *pe = &r->status_pages;
        godwit__v1__job_progress__init(jp);
        godwit__v1__pages_by_encoding__init(pe);
        pe->zero = m->pages_zero;
        pe->raw = m->pages_raw;
        pe->lz4 = m->pages_lz4;
        jp->pages = pe;
        jp->total_bytes = m->total_bytes;
        jp->sent_bytes = m->sent_bytes;
        jp->remaining_bytes = m->remaining_bytes;
        jp->round = m->round;
        jp->dirty_rate_bytes_per_s = m->dirty_rate_bps;
        jp->throughput_bytes_per_s = m->throughput_bps;
        jp->expected_downtime_ms = m->expected_downtime_ns / 1000000;
        jp->measured_downtime_ms = m->measured_downtime_ns / 1000000;
        jp->setup_ms = m->setup_ns / 1000000;
        jp->total_ms = m->total_ns / 1000000;
        jp->phase = (char *)gw_mig_phase_name(m->phase);
        if (m->pc.used) {
            jp->postcopy_pages_requested = m->pc.pages_requested;
            jp->postcopy_pages_remaining = m->pc.pages_remaining;
            jp->postcopy_pages_resent = m->pc.pages_resent;
            jp->postcopy_request_p50_us = m->pc.req_p50_us;
            jp->postcopy_request_p99_us = m->pc.req_p99_us;
            jp->postcopy_request_max_us = m->pc.req_max_us;
            /* Up to the last non-empty bucket. */
            size_t nb = 32;
            while (nb && !m->pc.req_hist[nb - 1]) nb--;
            jp->n_postcopy_request_histogram = nb;
            jp->postcopy_request_histogram = (uint64_t *)m->pc.req_hist;
            jp->postcopy_blocked_ms = m->pc.blocked_ns / 1000000;
            jp->postcopy_ms = m->pc.postcopy_ns / 1000000;
            jp->postcopy_pages_refused = m->pc.refused;
            jp->postcopy_recoveries = m->pc.recoveries;
            jp->postcopy_recovery_ms = m->pc.recovery_ns / 1000000;
            for (unsigned i = 0; i < m->pc.nvcpus && i < 16; i++) r->status_vcpu_blocked_ms[i] = m->pc.vcpu_blocked_ns[i] / 1000000;
            jp->n_postcopy_vcpu_blocked_ms = m->pc.nvcpus < 16 ? m->pc.nvcpus : 16;
            jp->postcopy_vcpu_blocked_ms = r->status_vcpu_blocked_ms;
        }
        st->migration = jp;
        st->migration_error = (char *)m->error;
    }
    gw_runner_instant_status(r, st);
    st->error = fatal ? r->status_err : "";
}

void gw_runner_print_summary(struct gw_runner *r, bool json, const char *extra_json)
{
    Godwit__V1__RunnerStatus st;
    Godwit__V1__GuestCounters c;
    gw_runner_fill_status(r, &st, &c);
    bool failed = !strcmp(st.state, "failed");
    if (json) {
        printf("{\"status\":\"%s\",\"state\":\"%s\",\"error\":", failed ? "error" : "ok", st.state);
        gw_json_str(stdout, st.error);
        printf(",\"name\":");
        gw_json_str(stdout, st.name);
        printf(",\"memory_bytes\":%llu,\"vcpus\":%u,\"uptime_ms\":%llu,"
               "\"guest_pages_written\":%llu,\"guest_bytes_written\":%llu,"
               "\"guest_pages_verified\":%llu,\"guest_verify_errors\":%llu,\"guest_verify_passes\":%llu,"
               "\"guest_ticks\":%llu,\"disk_blocks_written\":%llu,\"disk_blocks_read\":%llu,"
               "\"disk_verify_errors\":%llu,\"disk_io_errors\":%llu,\"vcpu_exits\":%llu%s%s",
               (unsigned long long)st.memory_bytes, st.vcpus, (unsigned long long)st.uptime_ms,
               (unsigned long long)c.pages_written, (unsigned long long)c.bytes_written,
               (unsigned long long)c.pages_verified, (unsigned long long)c.verify_errors,
               (unsigned long long)c.verify_passes, (unsigned long long)c.ticks,
               (unsigned long long)c.disk_blocks_written, (unsigned long long)c.disk_blocks_read,
               (unsigned long long)c.disk_verify_errors, (unsigned long long)c.disk_io_errors,
               (unsigned long long)c.vcpu_exits, extra_json ? "," : "", extra_json ? extra_json : "");
        const struct gw_mig_progress *m = &r->last_mig;
        if (m->phase != GW_MIG_NONE) {
            printf(",\"migration_phase\":\"%s\",\"migration_rounds\":%u,\"migration_downtime_ms\":%.3f,"
                   "\"migration_total_ms\":%.1f,\"migration_setup_ms\":%.1f,\"migration_wire_bytes\":%llu,"
                   "\"migration_pages_zero\":%llu,\"migration_pages_raw\":%llu,\"migration_pages_lz4\":%llu,"
                   "\"migration_error\":", gw_mig_phase_name(m->phase), m->round + 1, m->measured_downtime_ns / 1e6,
                   m->total_ns / 1e6, m->setup_ns / 1e6, (unsigned long long)m->sent_bytes,
                   (unsigned long long)m->pages_zero, (unsigned long long)m->pages_raw, (unsigned long long)m->pages_lz4);
            gw_json_str(stdout, m->error);
            if (m->pc.used)
                printf(",\"postcopy_pages_requested\":%llu,\"postcopy_pages_remaining\":%llu,"
                       "\"postcopy_pages_resent\":%llu,\"postcopy_request_p50_us\":%llu,\"postcopy_request_p99_us\":%llu,"
                       "\"postcopy_request_max_us\":%llu,\"postcopy_blocked_ms\":%.3f,\"postcopy_ms\":%.1f,"
                       "\"postcopy_pages_refused\":%llu,\"postcopy_digest_ok\":%s,\"postcopy_recoveries\":%llu,"
                       "\"postcopy_recovery_ms\":%.1f",
                       (unsigned long long)m->pc.pages_requested, (unsigned long long)m->pc.pages_remaining,
                       (unsigned long long)m->pc.pages_resent, (unsigned long long)m->pc.req_p50_us,
                       (unsigned long long)m->pc.req_p99_us, (unsigned long long)m->pc.req_max_us,
                       m->pc.blocked_ns / 1e6, m->pc.postcopy_ns / 1e6, (unsigned long long)m->pc.refused,
                       m->pc.digest_ok ? "true" : "false", (unsigned long long)m->pc.recoveries,
                       m->pc.recovery_ns / 1e6);
            if (m->pc.used && m->pc.pages_requested) {
                /* Request latency, bucket i = [2^i, 2^(i+1)) us, up to the last bucket used. */
                unsigned nb = 32;
                while (nb && !m->pc.req_hist[nb - 1]) nb--;
                printf(",\"postcopy_request_histogram\":[");
                for (unsigned i = 0; i < nb; i++) printf("%s%llu", i ? "," : "", (unsigned long long)m->pc.req_hist[i]);
                printf("]");
            }
            if (m->pc.used && m->pc.nvcpus) {
                /* Per vCPU, as the destination measured it: time blocked on missing pages. */
                printf(",\"postcopy_vcpu_blocked_ms\":[");
                for (unsigned i = 0; i < m->pc.nvcpus && i < 16; i++)
                    printf("%s%.3f", i ? "," : "", m->pc.vcpu_blocked_ns[i] / 1e6);
                printf("]");
            }
        }
        gw_runner_instant_json(r);
        printf("}\n");
        fflush(stdout);
    } else {
        printf("vm %s: %s%s%s after %.1f s\n", st.name, st.state, failed ? ": " : "", st.error,
               st.uptime_ms / 1000.0);
        printf("  guest pages written   %llu (%llu MiB)\n", (unsigned long long)c.pages_written,
               (unsigned long long)(c.bytes_written >> 20));
        printf("  guest pages verified  %llu in %llu passes, verify errors %llu\n",
               (unsigned long long)c.pages_verified, (unsigned long long)c.verify_passes,
               (unsigned long long)c.verify_errors);
        if (c.disk_blocks_written || c.disk_blocks_read)
            printf("  disk blocks written   %llu, read %llu, verify errors %llu, io errors %llu\n",
                   (unsigned long long)c.disk_blocks_written, (unsigned long long)c.disk_blocks_read,
                   (unsigned long long)c.disk_verify_errors, (unsigned long long)c.disk_io_errors);
        printf("  timer ticks           %llu\n", (unsigned long long)c.ticks);
        printf("  vcpu exits            %llu\n", (unsigned long long)c.vcpu_exits);
        const struct gw_mig_progress *mp = &r->last_mig;
        if (mp->phase != GW_MIG_NONE)
            printf("  migration             %s%s%s: %u rounds, %.0f ms, guest paused %.2f ms, %llu MiB on the wire\n",
                   gw_mig_phase_name(mp->phase), mp->error[0] ? ": " : "", mp->error, mp->round + 1,
                   mp->total_ns / 1e6, mp->measured_downtime_ns / 1e6, (unsigned long long)(mp->sent_bytes >> 20));
        struct gw_guest_status gs;
        if (r->vm->nvcpus > 1 && gw_runner_guest_readable(r) && gw_vm_guest_status(r->vm, &gs))
            for (unsigned i = 0; i < r->vm->nvcpus; i++)
                printf("  vcpu %-2u  written %llu, verified %llu, errors %llu, ticks %llu\n", i,
                       (unsigned long long)gs.vcpu[i].pages_written, (unsigned long long)gs.vcpu[i].pages_verified,
                       (unsigned long long)gs.vcpu[i].verify_errors, (unsigned long long)gs.vcpu[i].ticks);
    }
    fflush(stdout);
}

int gw_runner_hold(struct gw_runner *r, unsigned owner)
{
    unsigned before = r->pause_owners;
    r->pause_owners |= owner;
    if (before) return 0;
    int rc = gw_vm_pause(r->vm);
    if (rc) r->pause_owners = before;
    return rc;
}

int gw_runner_release(struct gw_runner *r, unsigned owner)
{
    if (!(r->pause_owners & owner)) return 0;
    r->pause_owners &= ~owner;
    return r->pause_owners ? 0 : gw_vm_resume(r->vm);
}

int gw_runner_loop(struct gw_runner *r, uint64_t seconds)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) return -errno;
    uint64_t deadline = seconds ? gw_now_ns() + seconds * 1000000000ull : 0;
    while (!r->stop) {
        struct pollfd p[2] = {{.fd = sfd, .events = POLLIN}, {.fd = r->listen_fd, .events = POLLIN}};
        int n = poll(p, r->listen_fd >= 0 ? 2 : 1, 50);
        if (n < 0 && errno != EINTR) break;
        if (n > 0 && (p[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == sizeof si)
                gw_info("vm %s: signal %u, stopping", r->vm->name, si.ssi_signo);
            r->stop = true;
        }
        if (n > 0 && r->listen_fd >= 0 && (p[1].revents & POLLIN)) gw_runner_control_serve(r);
        gw_runner_poll_migration(r);
        gw_runner_poll_instant(r);
        if (r->state == GW_RUN_MIGRATED && gw_now_ns() >= r->linger_until_ns) break;
        if (gw_vm_wait(r->vm, 0)) break;
        if (deadline && gw_now_ns() >= deadline) break;
    }
    close(sfd);
    return 0;
}
