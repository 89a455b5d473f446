/* A minimal unit-test harness: tests register themselves, CHECK records a failure with its
 * place and goes on, the runner prints one line per test and "N passed, N failed".
 * A test may call gw_test_skip() (for example when /dev/kvm is absent): the binary then
 * exits 77, which ctest reports as skipped, never as passed. */
#ifndef GW_TEST_H
#define GW_TEST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef void (*gw_test_fn)(void);
void gw_test_register(const char *name, gw_test_fn fn);
void gw_test_fail(const char *file, int line, const char *expr);
void gw_test_skip(const char *why);
/* Whether /dev/kvm can be opened (the KVM tests skip without it). */
bool gw_test_have_kvm(void);

#define GW_TEST(name)                                                          \
    static void name(void);                                                    \
    __attribute__((constructor)) static void name##_register(void)             \
    { gw_test_register(#name, name); }                                         \
    static void name(void)

#define CHECK(cond) do { if (!(cond)) gw_test_fail(__FILE__, __LINE__, #cond); } while (0)
#define CHECK_EQ(a, b) do {                                                    \
        long long _a = (long long)(a), _b = (long long)(b);                    \
        if (_a != _b) {                                                        \
            char _m[256];                                                      \
            snprintf(_m, sizeof _m, "%s == %s (%lld != %lld)", #a, #b, _a, _b);\
            gw_test_fail(__FILE__, __LINE__, _m);                              \
        }                                                                      \
    } while (0)
/* Stops the current test at once when cond is false (for preconditions). */
#define REQUIRE(cond) do { if (!(cond)) { gw_test_fail(__FILE__, __LINE__, #cond); return; } } while (0)

#endif
