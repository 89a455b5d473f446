/* Tiny JSON helpers for the one-line reports our tools print, and for reading back the
 * flat objects they print (benchmarks read the runner's output). Not a general parser. */
#ifndef GW_COMMON_JSON_H
#define GW_COMMON_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Writes s as a JSON string literal (quotes included), escaping what must be escaped. */
void gw_json_str(FILE *f, const char *s);

/* In a flat JSON object text, finds "key": and parses a number / bool / string value.
 * Return 0, or -ENOENT when the key is absent or of another type. */
int gw_json_get_u64(const char *json, const char *key, uint64_t *out);
int gw_json_get_double(const char *json, const char *key, double *out);
int gw_json_get_bool(const char *json, const char *key, bool *out);
int gw_json_get_str(const char *json, const char *key, char *out, size_t outlen);

#endif
