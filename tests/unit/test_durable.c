/* Crash-safe file replacement (engine/common/durable.c) and the hand-over record read with it
 * (engine/runner/handover.c): the temporary file has a fresh random name and is created with
 * O_EXCL|O_NOFOLLOW, so a link planted where it goes is never followed and never overwritten; the target is replaced whole;
 * a record behind a symlink, too large, or naming no state is refused. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/common/durable.h"
#include "engine/runner/handover.h"
#include "tests/lib/gw_test.h"

static char dir[64];

static void path_of(char *out, size_t len, const char *leaf) { snprintf(out, len, "%s/%s", dir, leaf); }

/* Temporary files of path left in its directory. */
static int leftovers(const char *path)
{
    const char *leaf = strrchr(path, '/') + 1;
    size_t n = strlen(leaf);
    DIR *d = opendir(dir);
    if (!d) return -1;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, leaf, n) && !strncmp(e->d_name + n, ".tmp.", 5)) count++;
    closedir(d);
    return count;
}

static int read_all(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0) return -1;
    buf[n] = 0;
    return (int)n;
}

GW_TEST(write_and_replace_whole)
{
    char p[128], buf[64];
    path_of(p, sizeof p, "file");
    CHECK_EQ(gw_durable_write(p, "first", 5), 0);
    CHECK_EQ(read_all(p, buf, sizeof buf), 5);
    CHECK(!strcmp(buf, "first"));
    CHECK_EQ(gw_durable_write(p, "second!", 7), 0);
    CHECK_EQ(read_all(p, buf, sizeof buf), 7);
    CHECK(!strcmp(buf, "second!"));
    CHECK_EQ(leftovers(p), 0);   /* no temporary file left behind */
}

/* A link planted at the old predictable temporary name, and a file left there by a killed
 * writer of the same pid: neither is followed, touched, or stops the write (before stop 29 the
 * name was "PATH.tmp.PID" and either made every write of PATH fail). */
GW_TEST(planted_link_is_not_followed)
{
    char p[128], victim[128], tmp[160], other[160], buf[64];
    path_of(p, sizeof p, "target");
    path_of(victim, sizeof victim, "victim");
    CHECK_EQ(gw_durable_write(victim, "precious", 8), 0);
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", p, (int)getpid());
    REQUIRE(symlink(victim, tmp) == 0);
    CHECK_EQ(gw_durable_write(p, "mine", 4), 0);
    CHECK_EQ(read_all(victim, buf, sizeof buf), 8);
    CHECK(!strcmp(buf, "precious"));
    CHECK_EQ(read_all(p, buf, sizeof buf), 4);
    CHECK(!strcmp(buf, "mine"));
    struct stat sb;
    CHECK(lstat(tmp, &sb) == 0 && S_ISLNK(sb.st_mode));   /* someone else's: left alone */
    unlink(tmp);
    /* Every name a write tries is fresh: two at once get two names. */
    int fd1 = gw_durable_create_tmp(p, tmp, sizeof tmp), fd2 = gw_durable_create_tmp(p, other, sizeof other);
    CHECK(fd1 >= 0 && fd2 >= 0 && strcmp(tmp, other));
    if (fd1 >= 0) { close(fd1); unlink(tmp); }
    if (fd2 >= 0) { close(fd2); unlink(other); }
}

GW_TEST(handover_record_round_trip_and_refusals)
{
    char p[128], link[128];
    path_of(p, sizeof p, "handover.pb");
    Godwit__V1__HandoverRecord rec = GODWIT__V1__HANDOVER_RECORD__INIT;
    rec.state = "migrated";
    rec.vm = "web1";
    rec.job_id = "job-1";
    rec.peer = "10.0.0.2:7400";
    CHECK_EQ(gw_handover_write(p, &rec), 0);
    Godwit__V1__HandoverRecord *got = NULL;
    REQUIRE(gw_handover_read(p, &got) == 0);
    CHECK(!strcmp(got->state, "migrated") && !strcmp(got->peer, "10.0.0.2:7400") && !strcmp(got->job_id, "job-1"));
    godwit__v1__handover_record__free_unpacked(got, NULL);
    /* Behind a symlink: refused (O_NOFOLLOW). */
    path_of(link, sizeof link, "link.pb");
    REQUIRE(symlink(p, link) == 0);
    CHECK_EQ(gw_handover_read(link, &got), -ELOOP);
    /* No state, or an unknown one: refused. */
    rec.state = "teleported";
    CHECK_EQ(gw_handover_write(p, &rec), 0);
    CHECK_EQ(gw_handover_read(p, &got), -EBADMSG);
    CHECK_EQ(gw_handover_decode((const uint8_t *)"\xff\xff\xff", 3, &got), -EBADMSG);
    /* Larger than any record: refused unread. */
    char *big = calloc(1, GW_HANDOVER_MAX + 1);
    REQUIRE(big);
    CHECK_EQ(gw_durable_write(p, big, GW_HANDOVER_MAX + 1), 0);
    CHECK_EQ(gw_handover_read(p, &got), -EFBIG);
    free(big);
    path_of(p, sizeof p, "absent.pb");
    CHECK_EQ(gw_handover_read(p, &got), -ENOENT);
}

__attribute__((constructor)) static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/gw-test-durable-XXXXXX");
    if (!mkdtemp(dir)) abort();
}

__attribute__((destructor)) static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) { /* best effort */ }
}
