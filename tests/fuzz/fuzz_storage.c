/* libFuzzer target for the storage decoders of outside input (what a store hands back):
 * chunk objects (storage/chunk.c) and backup manifests (storage/manifest.c). The first byte
 * picks the mode: 0 a chunk object decoded plain, 1 the same with an encryption key, 2 a
 * manifest object as stored, 3 a bare protobuf wrapped in a valid header and hash (so the
 * fuzzer reaches the field checks without having to learn SHA-256), 4 a page patch
 * (storage/chunk_patch.c) parsed for a chunk of 1..16 pages and applied when accepted. The output buffer has a
 * guard behind it that must never change. */
#include "storage/chunk.h"
#include "storage/chunk_patch.h"
#include "storage/manifest.h"

#include <openssl/sha.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CAP (64u << 10)
#define GUARD 4096u

static uint8_t out[CAP + GUARD];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned mode = data[0] % 5;
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
        Godwit__V1__BackupManifest *m = NULL;
        if (mode == 2) {
            gw_manifest_unpack(data, size, &m, err, sizeof err);
        } else {
            uint8_t *obj = malloc(48 + size);
            if (!obj) return 0;
            memset(obj, 0, 48);
            memcpy(obj, "GWMANIF1", 8);
            for (int i = 0; i < 4; i++) obj[8 + i] = (uint8_t)(size >> (8 * i));
            SHA256(data, size, obj + 16);
            memcpy(obj + 48, data, size);
            gw_manifest_unpack(obj, 48 + size, &m, err, sizeof err);
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
