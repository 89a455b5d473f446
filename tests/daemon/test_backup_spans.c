/* Unit tests for what godwitd tells a backup about the host's other backups
 * (engine/daemon/backup_throttle.c: gw_bkjob_spans_begin and gw_bkjob_throttle_end, over
 * engine/common/busy_spans.h). The first backup hears of none. A second, started while the
 * first runs, hears of one running span. A third, after both ended, hears of both, oldest
 * start first, with their ages. A verify's or a restore's span (opened and closed by its job
 * thread) is passed on as well. */
#include "engine/daemon/backup_jobs.h"
#include "engine/daemon/daemon.h"
#include "tests/lib/gw_test.h"

#include <pthread.h>
#include <unistd.h>

static struct gw_daemon d;

#define INIT GODWIT__V1__RUNNER_BACKUP_REQUEST__INIT

GW_TEST(backups_hear_of_the_hosts_other_backups)
{
    pthread_mutex_init(&d.lock, NULL);
    static struct gw_bk_buckets k1, k2, k3, k4;
    Godwit__V1__RunnerBackupRequest b1 = INIT, b2 = INIT, b3 = INIT, b4 = INIT;
    gw_bkjob_spans_begin(&d, &b1, &k1);
    CHECK_EQ(b1.n_host_backups, 0);
    CHECK(k1.span_id != 0);
    usleep(60000);
    gw_bkjob_spans_begin(&d, &b2, &k2);
    REQUIRE(b2.n_host_backups == 1);
    CHECK(b2.host_backups[0]->running);
    CHECK(b2.host_backups[0]->started_age_ms >= 50 && b2.host_backups[0]->started_age_ms < 2000);
    CHECK_EQ(b2.host_backups[0]->ended_age_ms, 0);
    CHECK(k2.span_id != k1.span_id);
    usleep(60000);
    gw_bkjob_throttle_end(&d, NULL, &k1);   /* no cluster budget joined: t is not read */
    CHECK_EQ(k1.span_id, 0);
    usleep(30000);
    gw_bkjob_throttle_end(&d, NULL, &k2);
    gw_bkjob_throttle_end(&d, NULL, &k2);   /* twice: the second changes nothing */
    usleep(30000);
    gw_bkjob_spans_begin(&d, &b3, &k3);
    REQUIRE(b3.n_host_backups == 2);
    const Godwit__V1__BusySpan *first = b3.host_backups[0], *second = b3.host_backups[1];
    CHECK(!first->running && !second->running);
    CHECK(first->started_age_ms > second->started_age_ms);      /* oldest start first */
    CHECK(first->ended_age_ms > second->ended_age_ms);          /* the first ended first */
    CHECK(first->ended_age_ms >= 50 && first->ended_age_ms < first->started_age_ms);
    CHECK(second->ended_age_ms >= 20 && second->ended_age_ms < second->started_age_ms);
    gw_bkjob_throttle_end(&d, NULL, &k3);
    /* A fourth hears of the three, all ended. (That spans ended past the horizon are not
     * passed on is busy_spans' own test, on a clock of its own: test_throttle.) */
    gw_bkjob_spans_begin(&d, &b4, &k4);
    CHECK_EQ(b4.n_host_backups, 3);
    for (size_t i = 0; i < b4.n_host_backups; i++) CHECK(!b4.host_backups[i]->running);
    gw_bkjob_throttle_end(&d, NULL, &k4);
    /* A verify or a restore counts as well: its job thread opens a span and closes it. */
    uint64_t v = gw_bkjob_span_open(&d);
    CHECK(v != 0);
    usleep(20000);
    gw_bkjob_span_close(&d, v);
    gw_bkjob_span_close(&d, 0);               /* a backup's job: nothing opened, nothing closed */
    static struct gw_bk_buckets k5;
    Godwit__V1__RunnerBackupRequest b5 = INIT;
    gw_bkjob_spans_begin(&d, &b5, &k5);
    REQUIRE(b5.n_host_backups == 5);                /* the four backups', then the verify's */
    const Godwit__V1__BusySpan *ver = b5.host_backups[4];
    CHECK(!ver->running);
    CHECK(ver->started_age_ms >= 15 && ver->started_age_ms < 2000);
    CHECK(ver->started_age_ms <= b5.host_backups[3]->started_age_ms);
    gw_bkjob_throttle_end(&d, NULL, &k5);
}
