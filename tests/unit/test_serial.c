/* Unit test for engine/vm/serial.c's console log: lines reach the file whole, and a guest that
 * writes without end cannot take the file past GW_SERIAL_LOG_MAX (it starts over, saying so). */
#include "engine/vm/serial.h"
#include "tests/lib/gw_test.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void put(struct gw_device *d, const char *text)
{
    for (const char *p = text; *p; p++) {
        uint8_t b = (uint8_t)*p;
        d->ops->access(d, 0, true, &b, 1);
    }
}

GW_TEST(console_log_is_capped)
{
    char path[] = "/tmp/gw-serial-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    close(fd);
    fd = open(path, O_WRONLY | O_APPEND);
    REQUIRE(fd >= 0);
    struct gw_device *d = NULL;
    REQUIRE(gw_serial_create(0x3f8, fd, &d) == 0);
    put(d, "hello\n");
    struct stat st;
    REQUIRE(fstat(fd, &st) == 0);
    CHECK_EQ(st.st_size, 6);
    /* 24 MiB of 128-byte lines, 1.5 times the limit. */
    char line[129];
    memset(line, 'x', 127);
    line[127] = '\n';
    line[128] = 0;
    uint64_t max_seen = 0;
    for (unsigned i = 0; i < (24u << 20) / 128; i++) {
        put(d, line);
        if ((i & 1023) == 0 && fstat(fd, &st) == 0 && (uint64_t)st.st_size > max_seen) max_seen = (uint64_t)st.st_size;
    }
    d->ops->destroy(d);
    REQUIRE(fstat(fd, &st) == 0);
    CHECK((uint64_t)st.st_size <= GW_SERIAL_LOG_MAX);
    CHECK(max_seen <= GW_SERIAL_LOG_MAX);
    CHECK((uint64_t)st.st_size > (4u << 20));   /* the recent output is there */
    char head[80] = "";
    int rfd = open(path, O_RDONLY);
    REQUIRE(rfd >= 0);
    CHECK(read(rfd, head, sizeof head - 1) > 0);
    close(rfd);
    CHECK(strstr(head, "earlier output dropped") != NULL);
    close(fd);
    unlink(path);
}
