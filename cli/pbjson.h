/* Any protobuf-c message as JSON, driven by its descriptor: field names as in the .proto,
 * enums as their names, 64-bit integers as JSON numbers (exact up to 2^53, which sizes and
 * counters stay well below). Used for the CLI's --json output of every API response. */
#ifndef GW_CLI_PBJSON_H
#define GW_CLI_PBJSON_H

#include <protobuf-c/protobuf-c.h>
#include <stdio.h>

/* Writes msg as one JSON object (no newline). Fields at their default value are included,
 * so that scripts see every key. */
void gw_pbjson_write(FILE *f, const ProtobufCMessage *msg);

#endif
