/* KvmBlob helpers (see kvm_blob.h). */
#include "engine/vm/kvm_blob.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

Godwit__V1__KvmBlob *gw_blob_new(const void *p, size_t len)
{
    Godwit__V1__KvmBlob *b = malloc(sizeof *b);
    if (!b) return NULL;
    godwit__v1__kvm_blob__init(b);
    b->data.data = malloc(len ? len : 1);
    if (!b->data.data) { free(b); return NULL; }
    memcpy(b->data.data, p, len);
    b->data.len = len;
    b->size = (uint32_t)len;
    return b;
}

void gw_blob_free(Godwit__V1__KvmBlob *b)
{
    if (!b) return;
    free(b->data.data);
    free(b);
}

int gw_blob_get(const Godwit__V1__KvmBlob *b, void *dst, size_t len)
{
    if (!b) return -ENOENT;
    if (b->size != len || b->data.len != len) return -EINVAL;
    memcpy(dst, b->data.data, len);
    return 0;
}
