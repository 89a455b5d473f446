/* Reading a fuzzer's input as a program: bytes taken one at a time from the front, 0 once it
 * runs out, so that every input, however short, is a whole program. */
#ifndef GW_TESTS_FUZZ_INPUT_H
#define GW_TESTS_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>

struct input {
    const uint8_t *p;
    size_t n;
};

static inline unsigned take(struct input *in)
{
    if (!in->n) return 0;
    in->n--;
    return *in->p++;
}

#endif
