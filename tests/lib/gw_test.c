/* Runner for the gw_test.h harness: runs every registered test (or those named on the
 * command line) and exits 0 when all passed, 1 on any failure, 77 when skipped. */
#include "tests/lib/gw_test.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_TESTS 256
static struct { const char *name; gw_test_fn fn; } tests[MAX_TESTS];
static int ntests;
static int current_failures;
static const char *skip_reason;

void gw_test_register(const char *name, gw_test_fn fn)
{
    if (ntests < MAX_TESTS) { tests[ntests].name = name; tests[ntests].fn = fn; ntests++; }
}

void gw_test_fail(const char *file, int line, const char *expr)
{
    fprintf(stderr, "  FAIL %s:%d: %s\n", file, line, expr);
    current_failures++;
}

void gw_test_skip(const char *why) { skip_reason = why; }

bool gw_test_have_kvm(void)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) return false;
    close(fd);
    return true;
}

static bool selected(int argc, char **argv, const char *name)
{
    if (argc < 2) return true;
    for (int i = 1; i < argc; i++) if (!strcmp(argv[i], name)) return true;
    return false;
}

int main(int argc, char **argv)
{
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < ntests; i++) {
        if (!selected(argc, argv, tests[i].name)) continue;
        current_failures = 0;
        skip_reason = NULL;
        tests[i].fn();
        if (current_failures) { printf("FAIL %s\n", tests[i].name); failed++; }
        else if (skip_reason) { printf("SKIP %s: %s\n", tests[i].name, skip_reason); skipped++; }
        else { printf("ok   %s\n", tests[i].name); passed++; }
        fflush(stdout);
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    if (failed) return 1;
    if (skipped && !passed) return 77;
    return 0;
}
