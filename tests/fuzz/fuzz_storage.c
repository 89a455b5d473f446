/* libFuzzer target for the storage decoders of outside input (what a store hands back):
 * chunk objects (storage/chunk.c) and backup manifests (storage/manifest.c). The first byte
 * picks the mode: 0 a chunk object decoded plain, 1 the same with an encryption key, 2 a
 * manifest object as stored, 3 a bare protobuf wrapped in a valid header and hash (so the
 * fuzzer reaches the field checks without having to learn SHA-256), 4 a page patch
 * (storage/chunk_patch.c) parsed for a chunk of 1..16 pages and applied when accepted, 5 a
 * manifest object as stored read with an encryption key, 6 a bare protobuf sealed under that
 * key (the sealed path to the field checks). A manifest is read as stored under the name its
 * own protobuf gives, when it decodes, so the fuzzer need not guess it. The output buffer has a
 * guard behind it that must never change. */
#include "storage/aead.h"
#include "storage/chunk.h"
#include "storage/chunk_patch.h"
#include "storage/manifest.h"

#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAP (64u << 10)
#define GUARD 4096u

static uint8_t out[CAP + GUARD];

/* The object name a manifest protobuf must be read from: its own, when it decodes to names
 * that make one, else any. */
static void name_of(const uint8_t *pb, size_t n, char name[160])
{
    Godwit__V1__BackupManifest *m = godwit__v1__backup_manifest__unpack(NULL, n, pb);
    if (!m || gw_manifest_object(m->vm_name, m->id, name, 160)) snprintf(name, 160, "m.vm.1");
    if (m) godwit__v1__backup_manifest__free_unpacked(m, NULL);
}

/* A bare protobuf in a valid object: hashed (k NULL) or sealed under k as name. */
static uint8_t *wrap(const uint8_t *pb, size_t n, const struct gw_chunk_keys *k, const char *name)
{
    uint8_t *obj = malloc(48 + n);
    if (!obj) return NULL;
    memset(obj, 0, 48);
    memcpy(obj, k ? "GWMSEAL1" : "GWMANIF1", 8);
    for (int i = 0; i < 4; i++) obj[8 + i] = (uint8_t)(n >> (8 * i));
    memcpy(obj + 48, pb, n);
    if (!k) {
        SHA256(pb, n, obj + 16);
    } else if (gw_aead_seal(k->manifest_key, obj + 16, obj, 48, (const uint8_t *)name, strlen(name), obj + 48, n, obj + 28)) {
        abort();
    }
    return obj;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned mode = data[0] % 7;
    data++;
    size--;
    memset(out + CAP, 0xA5, GUARD);
    char err[256];
    if (mode == 4) {
        /* A page patch for a chunk of 1..16 pages: parsed, and applied only when accepted. */
        if (size < 1) return 0;
        size_t chunk_len = 4096u * (1u + data[0] % 16u);
        struct gw_patch pt;
        if (gw_patch_parse(data + 1, size - 1, chunk_len, NULL, &pt, err, sizeof err) == 0) {
            if (pt.chunk_len != chunk_len || pt.npages == 0 || pt.npages > chunk_len / 4096 / 2) abort();
            gw_patch_apply(&pt, out);
        }
    } else if (mode < 2) {
        struct gw_chunk_keys k;
        memset(&k, 0, sizeof k);
        if (mode == 1) { k.encrypted = true; memset(k.name_key, 1, 32); memset(k.data_key, 2, 32); }
        uint8_t hash[32];
        SHA256(data, size, hash);
        long n = gw_chunk_decode(mode ? &k : NULL, hash, data, size, out, CAP, 0, err, sizeof err);
        if (n > (long)CAP) abort();
    } else {
        struct gw_chunk_keys k;
        memset(&k, 0, sizeof k);
        k.encrypted = true;
        memset(k.manifest_key, 3, 32);
        const struct gw_chunk_keys *keys = mode >= 5 ? &k : NULL;
        Godwit__V1__BackupManifest *m = NULL;
        char name[160];
        if (mode == 2 || mode == 5) {
            name_of(data + (size < 48 ? size : 48), size < 48 ? 0 : size - 48, name);
            gw_manifest_unpack(data, size, keys, name, &m, err, sizeof err);
        } else {
            name_of(data, size, name);
            uint8_t *obj = wrap(data, size, keys, name);
            if (!obj) return 0;
            int r = gw_manifest_unpack(obj, 48 + size, keys, name, &m, err, sizeof err);
            /* Sealed under the name it is read from, it must get past the tag. */
            if (r && keys && strstr(err, "authentication")) abort();
            free(obj);
        }
        if (m) {
            /* What the checks promise to every user of a manifest. */
            if (!m->memory || !m->disk || !m->state || !m->state->config || m->memory_digest.len != 16) abort();
            for (size_t i = 0; i < m->memory->n_chunks; i++)
                if (m->memory->chunks[i].len != 0 && m->memory->chunks[i].len != 32) abort();
            for (size_t i = 0; i < m->memory->n_chunks; i++)
                if (gw_manifest_patched(m->memory, i) && (m->memory->chunks[i].len != 32 || m->memory->patch_bases[i].len != 32))
                    abort();
            for (size_t i = 0; i < m->memory->n_chunks; i++)   /* a mid only under a patch */
                if (gw_manifest_patch_mid(m->memory, i) && !gw_manifest_patched(m->memory, i)) abort();
            for (size_t i = 0; i < m->memory->n_patch_mids; i++)
                if (m->memory->patch_mids[i].len && (!gw_manifest_patched(m->memory, i) || m->format_version < 3)) abort();
            godwit__v1__backup_manifest__free_unpacked(m, NULL);
        }
    }
    for (unsigned i = 0; i < GUARD; i++)
        if (out[CAP + i] != 0xA5) abort();
    return 0;
}
