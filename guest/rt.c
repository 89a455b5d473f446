/* Freestanding helpers for the guest (see rt.h). The compiler may call memset/memcpy itself,
 * so they must exist even where our code does not name them. */
#include "guest/rt.h"

void *memset(void *d, int c, size_t n)
{
    uint8_t *p = d;
    while (n--) *p++ = (uint8_t)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    uint8_t *p = d;
    const uint8_t *q = s;
    while (n--) *p++ = *q++;
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *p = a, *q = b;
    for (; n; n--, p++, q++)
        if (*p != *q) return *p < *q ? -1 : 1;
    return 0;
}

void gw_puts(const char *s)
{
    while (*s) gw_syscall2(GW_SYS_OUTB, GW_PORT_COM1, (uint8_t)*s++);
}

void gw_put_kv(const char *label, uint64_t v)
{
    char buf[24];
    int i = (int)sizeof buf - 1;
    buf[i] = 0;
    do { buf[--i] = (char)('0' + v % 10); v /= 10; } while (v && i > 0);
    gw_puts(label);
    gw_puts("=");
    gw_puts(&buf[i]);
    gw_puts("\n");
}
