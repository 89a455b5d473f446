/* The hand-over record (HandoverRecord in runner.proto): a source runner writes it when its
 * VM has moved ("migrated") or the move fell in doubt ("in-doubt"), before it exits; the
 * daemon reads it when the runner ended while nobody followed the migration (a daemon
 * restart). One packed protobuf, written durably (engine/common/durable.h). */
#ifndef GW_RUNNER_HANDOVER_H
#define GW_RUNNER_HANDOVER_H

#include <stddef.h>

#include "godwit/v1/runner.pb-c.h"

#define GW_HANDOVER_MAX 65536   /* larger files are refused unread */

/* Writes rec to path durably. 0 or -errno. */
int gw_handover_write(const char *path, const Godwit__V1__HandoverRecord *rec);
/* Reads path into *out (free with godwit__v1__handover_record__free_unpacked). -ENOENT when
 * there is none, -EFBIG when too large, -EBADMSG when it does not decode or names no state. */
int gw_handover_read(const char *path, Godwit__V1__HandoverRecord **out);
/* Decodes a record from memory (the reader's and the fuzzer's entry point). */
int gw_handover_decode(const uint8_t *buf, size_t len, Godwit__V1__HandoverRecord **out);

#endif
