/* Unit test for engine/common/checked_open.c: a link as the last component is never followed;
 * in strict mode (what godwitd sets for its runners) a link anywhere on the way is refused too,
 * so a directory swapped for a link after godwitd checked the path leads nowhere. */
#include "engine/common/checked_open.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

GW_TEST(links_on_the_way)
{
    char dir[] = "/tmp/gw-copen-XXXXXX", p[400];
    REQUIRE(mkdtemp(dir));
    snprintf(p, sizeof p, "%s/real", dir);
    REQUIRE(mkdir(p, 0700) == 0);
    snprintf(p, sizeof p, "%s/real/disk.img", dir);
    int fd = open(p, O_CREAT | O_WRONLY, 0600);
    REQUIRE(fd >= 0);
    close(fd);
    char link_dir[256], link_file[256], via_dir[300];
    snprintf(link_dir, sizeof link_dir, "%s/swapped", dir);
    REQUIRE(symlink("real", link_dir) == 0);
    snprintf(link_file, sizeof link_file, "%s/real/link.img", dir);
    REQUIRE(symlink("disk.img", link_file) == 0);
    snprintf(via_dir, sizeof via_dir, "%s/disk.img", link_dir);

    unsetenv(GW_STRICT_PATHS_ENV);
    CHECK(!gw_strict_paths());
    fd = gw_checked_open(p, O_RDONLY, 0);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    CHECK_EQ(gw_checked_open(link_file, O_RDONLY, 0), -ELOOP);   /* never the last component */
    fd = gw_checked_open(via_dir, O_RDONLY, 0);                  /* by hand: a linked directory is fine */
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);

    setenv(GW_STRICT_PATHS_ENV, "1", 1);
    CHECK(gw_strict_paths());
    fd = gw_checked_open(p, O_RDONLY, 0);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    CHECK_EQ(gw_checked_open(link_file, O_RDONLY, 0), -ELOOP);
    CHECK_EQ(gw_checked_open(via_dir, O_RDONLY, 0), -ELOOP);     /* under godwitd: refused */
    snprintf(p, sizeof p, "%s/new.img", link_dir);
    CHECK_EQ(gw_checked_open(p, O_WRONLY | O_CREAT | O_EXCL, 0600), -ELOOP);   /* nor created through one */
    unsetenv(GW_STRICT_PATHS_ENV);

    snprintf(p, sizeof p, "rm -rf %s", dir);
    CHECK(system(p) == 0);
}
