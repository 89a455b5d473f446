/* KvmBlob helpers: a kernel struct saved as bytes with its size, checked on the way back. */
#ifndef GW_VM_KVM_BLOB_H
#define GW_VM_KVM_BLOB_H

#include <stddef.h>

#include "godwit/v1/state.pb-c.h"

/* Allocates a blob holding a copy of len bytes at p; NULL when out of memory. */
Godwit__V1__KvmBlob *gw_blob_new(const void *p, size_t len);
void gw_blob_free(Godwit__V1__KvmBlob *b);
/* Copies the blob into dst (len bytes): -ENOENT when absent, -EINVAL when sizes differ. */
int gw_blob_get(const Godwit__V1__KvmBlob *b, void *dst, size_t len);

#endif
