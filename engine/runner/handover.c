/* The hand-over record (see handover.h). */
#include "engine/runner/handover.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/common/durable.h"
#include "engine/common/util.h"

int gw_handover_write(const char *path, const Godwit__V1__HandoverRecord *rec)
{
    size_t len = godwit__v1__handover_record__get_packed_size(rec);
    if (len > GW_HANDOVER_MAX) return -EFBIG;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return -ENOMEM;
    godwit__v1__handover_record__pack(rec, buf);
    int r = gw_durable_write(path, buf, len);
    free(buf);
    return r;
}

int gw_handover_decode(const uint8_t *buf, size_t len, Godwit__V1__HandoverRecord **out)
{
    if (len > GW_HANDOVER_MAX) return -EFBIG;
    Godwit__V1__HandoverRecord *rec = godwit__v1__handover_record__unpack(NULL, len, buf);
    if (!rec) return -EBADMSG;
    if (strcmp(rec->state, "migrated") && strcmp(rec->state, "in-doubt")) {
        godwit__v1__handover_record__free_unpacked(rec, NULL);
        return -EBADMSG;
    }
    *out = rec;
    return 0;
}

int gw_handover_read(const char *path, Godwit__V1__HandoverRecord **out)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct stat sb;
    int r = fstat(fd, &sb) < 0 ? -errno : 0;
    if (!r && (!S_ISREG(sb.st_mode) || sb.st_size > GW_HANDOVER_MAX)) r = -EFBIG;
    uint8_t *buf = NULL;
    size_t len = r ? 0 : (size_t)sb.st_size;
    if (!r && !(buf = malloc(len ? len : 1))) r = -ENOMEM;
    if (!r) r = gw_read_full(fd, buf, len);
    close(fd);
    if (!r) r = gw_handover_decode(buf, len, out);
    free(buf);
    return r;
}
