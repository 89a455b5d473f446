/* Unit tests for the post-copy resume route (engine/daemon/resume_route.c): a route made at
 * spawn is found again by a fresh record (a restarted daemon) and hands streams over on a
 * fresh connection each time; a token file of the wrong size, or no socket, gives no route;
 * a runner that no longer listens is reported, and forget leaves nothing behind. */
#include "engine/daemon/daemon.h"
#include "engine/daemon/resume_route.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static struct gw_daemon d;

static struct gw_vm_rec *rec_for(const char *name, uint8_t fill)
{
    if (!d.vms_dir[0]) {
        snprintf(d.vms_dir, sizeof d.vms_dir, "/tmp/gw-route-XXXXXX");
        if (!mkdtemp(d.vms_dir)) return NULL;
    }
    struct gw_vm_rec *r;
    if (gw_vm_rec_new(&d, name, &r)) return NULL;
    memset(r->resume_token, fill, sizeof r->resume_token);
    return r;
}

static bool exists(const char *name, const char *leaf)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/%s/%s", d.vms_dir, name, leaf);
    return access(p, F_OK) == 0;
}

/* Takes one hand-over on the listening socket l: the fds in it, how many, or -1. */
static int take(int l, int *fds, unsigned cap)
{
    int c = accept4(l, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0) return -1;
    char ctl[CMSG_SPACE(sizeof(int) * 16)];
    uint32_t count = 0;
    struct iovec iov = {.iov_base = &count, .iov_len = sizeof count};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
    ssize_t got = recvmsg(c, &mh, MSG_CMSG_CLOEXEC);
    close(c);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    if (got != sizeof count || !cm || cm->cmsg_type != SCM_RIGHTS) return -1;
    unsigned n = (unsigned)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    if (n != count || n > cap) return -1;
    memcpy(fds, CMSG_DATA(cm), n * sizeof(int));
    return (int)n;
}

GW_TEST(route_found_again_after_restart)
{
    struct gw_vm_rec *rec = rec_for("vm1", 0xa5);
    REQUIRE(rec);
    char err[256], path[GW_RESUME_SOCK_MAX];
    int l = gw_resume_route_open(&d, rec, err, sizeof err);
    REQUIRE(l >= 0);
    gw_resume_route_taken(rec);
    CHECK(rec->resume_route);
    CHECK(exists("vm1", "resume.sock") && exists("vm1", "resume.token"));
    /* A restarted daemon's fresh record of the same VM. */
    struct gw_vm_rec *again = rec_for("vm1", 0);
    REQUIRE(again);
    gw_resume_route_reattach(&d, again);
    CHECK(again->resume_route);
    CHECK(!memcmp(again->resume_token, rec->resume_token, sizeof rec->resume_token));
    /* Two hand-overs, each on its own connection: the fds arrive as themselves. */
    REQUIRE(!gw_resume_route_path(&d, "vm1", path));
    for (int round = 0; round < 2; round++) {
        int p[2], got[16];
        REQUIRE(!pipe2(p, O_CLOEXEC));
        CHECK_EQ(gw_resume_route_hand(path, p, 2), 0);
        CHECK_EQ(take(l, got, 16), 2);
        CHECK_EQ(write(got[1], "x", 1), 1);
        char c = 0;
        CHECK_EQ(read(p[0], &c, 1), 1);
        CHECK_EQ(c, 'x');
        close(got[0]);
        close(got[1]);
        close(p[0]);
        close(p[1]);
    }
    int one[1] = {0};
    CHECK_EQ(gw_resume_route_hand(path, one, 0), -EINVAL);
    CHECK_EQ(gw_resume_route_hand(path, one, 17), -EINVAL);
    /* The runner is gone: the port is told, and forget removes the names. */
    close(l);
    CHECK_EQ(gw_resume_route_hand(path, one, 1), -ECONNREFUSED);
    gw_resume_route_forget(&d, again);
    CHECK(!again->resume_route);
    CHECK(!exists("vm1", "resume.sock") && !exists("vm1", "resume.token"));
    gw_resume_route_reattach(&d, again);
    CHECK(!again->resume_route);
    free(rec);
    free(again);
}

GW_TEST(bad_token_file_or_no_socket_gives_no_route)
{
    struct gw_vm_rec *rec = rec_for("vm2", 0x3c);
    REQUIRE(rec);
    char err[256], tok[1200];
    int l = gw_resume_route_open(&d, rec, err, sizeof err);
    REQUIRE(l >= 0);
    snprintf(tok, sizeof tok, "%s/vm2/resume.token", d.vms_dir);
    struct gw_vm_rec *again = rec_for("vm2", 0);
    REQUIRE(again);
    static const size_t sizes[] = {0, 31, 33, 4096};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        REQUIRE(!truncate(tok, (off_t)sizes[i]));
        again->resume_route = true;
        gw_resume_route_reattach(&d, again);
        CHECK(!again->resume_route);
    }
    REQUIRE(!truncate(tok, 32));
    gw_resume_route_reattach(&d, again);
    CHECK(again->resume_route);
    /* A regular file where the socket was: not a route either. */
    char sock[GW_RESUME_SOCK_MAX];
    REQUIRE(!gw_resume_route_path(&d, "vm2", sock));
    close(l);
    REQUIRE(!unlink(sock));
    int f = open(sock, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    REQUIRE(f >= 0);
    close(f);
    gw_resume_route_reattach(&d, again);
    CHECK(!again->resume_route);
    /* Making the route again replaces whatever was left. */
    l = gw_resume_route_open(&d, rec, err, sizeof err);
    CHECK(l >= 0);
    if (l >= 0) close(l);
    gw_resume_route_forget(&d, rec);
    CHECK(!exists("vm2", "resume.sock") && !exists("vm2", "resume.token"));
    free(rec);
    free(again);
}

__attribute__((destructor)) static void remove_dir(void)
{
    char cmd[700];
    if (!d.vms_dir[0]) return;
    snprintf(cmd, sizeof cmd, "rm -rf %s", d.vms_dir);
    if (system(cmd)) fprintf(stderr, "cannot remove %s\n", d.vms_dir);
}
