/* Backup manifests (see manifest.h). */
#include "storage/manifest.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/aead.h"
#include "storage/chunk.h"
#include "storage/chunk_patch.h"
#include "storage/store.h"

#define MANIFEST_MAGIC "GWMANIF1"   /* plain store: the SHA-256 of the protobuf */
#define SEALED_MAGIC "GWMSEAL1"     /* encrypted store: AES-256-GCM bound to the object's name */
#define MANIFEST_HEADER 48u
#define SEAL_NONCE_OFF 16u
#define SEAL_TAG_OFF 28u

static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

int gw_manifest_object(const char *vm, const char *id, char *buf, size_t cap)
{
    if (!gw_store_name_ok(vm) || !gw_store_name_ok(id) || strlen(id) > GW_BACKUP_ID_MAX) return -EINVAL;
    return (size_t)snprintf(buf, cap, "m.%s.%s", vm, id) >= cap ? -ENAMETOOLONG : 0;
}

int gw_backup_index_name(const char *vm, char *buf, size_t cap)
{
    if (!gw_store_name_ok(vm)) return -EINVAL;
    return (size_t)snprintf(buf, cap, "b.%s", vm) >= cap ? -ENAMETOOLONG : 0;
}

void gw_chunk_object(const uint8_t hash[32], char *buf)
{
    buf[0] = 'c';
    buf[1] = '.';
    gw_chunk_name_hex(hash, buf + 2);
}

int gw_manifest_pack(const Godwit__V1__BackupManifest *m, const struct gw_chunk_keys *k, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    bool sealed = k && k->encrypted;
    char name[160];
    if (sealed && gw_manifest_object(m->vm_name, m->id, name, sizeof name)) return -EINVAL;
    size_t n = godwit__v1__backup_manifest__get_packed_size(m);
    if (n > GW_MANIFEST_MAX - MANIFEST_HEADER) return -EFBIG;
    uint8_t *b = malloc(MANIFEST_HEADER + n);
    if (!b) return -ENOMEM;
    memset(b, 0, MANIFEST_HEADER);
    memcpy(b, sealed ? SEALED_MAGIC : MANIFEST_MAGIC, 8);
    for (int i = 0; i < 4; i++) b[8 + i] = (uint8_t)(n >> (8 * i));
    godwit__v1__backup_manifest__pack(m, b + MANIFEST_HEADER);
    /* Sealed, the header is its own additional data: its tag field is still zero here, as the
     * reader zeroes it before checking. */
    if (!sealed) {
        SHA256(b + MANIFEST_HEADER, n, b + 16);
    } else if (RAND_bytes(b + SEAL_NONCE_OFF, GW_AEAD_NONCE) != 1 ||
               gw_aead_seal(k->manifest_key, b + SEAL_NONCE_OFF, b, MANIFEST_HEADER, (const uint8_t *)name, strlen(name),
                            b + MANIFEST_HEADER, n, b + SEAL_TAG_OFF)) {
        OPENSSL_cleanse(b, MANIFEST_HEADER + n);
        free(b);
        return -EIO;
    }
    *out = b;
    *len = MANIFEST_HEADER + n;
    return 0;
}

/* Page patches (chunk_patch.h): only in format 2 or later; one entry per chunk or none; a
 * patched chunk has its own name, a patch name and a base name, all 32 bytes, and is
 * patchable. Layered patches (a mid patch under the top one) only in format 3, one entry per
 * chunk or none, and only on a patched chunk. */
static int check_patches(const Godwit__V1__BackupImage *im, const char *what, uint32_t version, char *err, size_t errlen)
{
    if (!im->n_patches && !im->n_patch_bases && !im->n_patch_mids) return 0;
    if (version < GW_MANIFEST_VERSION_PATCHES) { snprintf(err, errlen, "manifest format %u lists %s patches", version, what); return -EBADMSG; }
    if (im->n_patch_mids && version < GW_MANIFEST_VERSION_LAYERS) {
        snprintf(err, errlen, "manifest format %u lists %s layered patches", version, what);
        return -EBADMSG;
    }
    if (im->n_patches != im->n_chunks || im->n_patch_bases != im->n_chunks || (im->n_patch_mids && im->n_patch_mids != im->n_chunks)) {
        snprintf(err, errlen, "manifest %s image lists %zu patches, %zu bases and %zu mid patches for %zu chunks", what,
                 im->n_patches, im->n_patch_bases, im->n_patch_mids, im->n_chunks);
        return -EBADMSG;
    }
    for (size_t i = 0; i < im->n_chunks; i++) {
        size_t pl = im->patches[i].len, bl = im->patch_bases[i].len, ml = im->n_patch_mids ? im->patch_mids[i].len : 0;
        if (pl == 0 && bl == 0 && ml == 0) continue;
        uint64_t off = i * (uint64_t)im->chunk_size, len = im->size - off < im->chunk_size ? im->size - off : im->chunk_size;
        if (pl != 32 || bl != 32 || (ml != 0 && ml != 32) || im->chunks[i].len != 32 || !gw_patch_max_pages(len)) {
            snprintf(err, errlen, "manifest %s chunk %zu has a bad patch entry (%zu-byte patch, %zu-byte base, %zu-byte mid)",
                     what, i, pl, bl, ml);
            return -EBADMSG;
        }
    }
    return 0;
}

bool gw_manifest_patched(const Godwit__V1__BackupImage *im, size_t i)
{
    return i < im->n_patches && im->patches[i].len == 32;
}

const uint8_t *gw_manifest_patch_mid(const Godwit__V1__BackupImage *im, size_t i)
{
    return gw_manifest_patched(im, i) && i < im->n_patch_mids && im->patch_mids[i].len == 32 ? im->patch_mids[i].data : NULL;
}

static int check_image(const Godwit__V1__BackupImage *im, const char *what, uint64_t max, uint32_t version, char *err,
                       size_t errlen)
{
    if (!im) { snprintf(err, errlen, "manifest has no %s image", what); return -EBADMSG; }
    if (im->size > max) { snprintf(err, errlen, "manifest %s image of %llu bytes is over the limit", what, (unsigned long long)im->size); return -EBADMSG; }
    if (im->size == 0 && im->n_chunks == 0) return check_patches(im, what, version, err, errlen);
    uint32_t cs = im->chunk_size;
    if (cs < 4096 || cs > GW_CHUNK_MAX || (cs & (cs - 1))) {
        snprintf(err, errlen, "manifest %s chunk size %u is not a power of two in 4 KiB..%u MiB", what, cs, GW_CHUNK_MAX >> 20);
        return -EBADMSG;
    }
    uint64_t want = (im->size + cs - 1) / cs;
    if (im->n_chunks != want) {
        snprintf(err, errlen, "manifest %s image lists %zu chunks, its size needs %llu", what, im->n_chunks, (unsigned long long)want);
        return -EBADMSG;
    }
    for (size_t i = 0; i < im->n_chunks; i++) {
        if (im->chunks[i].len != 0 && im->chunks[i].len != 32) {
            snprintf(err, errlen, "manifest %s chunk %zu has a %zu-byte name", what, i, im->chunks[i].len);
            return -EBADMSG;
        }
    }
    return check_patches(im, what, version, err, errlen);
}

/* The protobuf of obj, checked: its SHA-256 (plain) or opened under the manifest key with the
 * object's name as additional data (sealed, into a buffer of its own: *clear, freed by the
 * caller). NULL with the reason in err. */
static const uint8_t *payload(const uint8_t *obj, size_t len, const struct gw_chunk_keys *k, const char *name,
                              uint8_t **clear, char *err, size_t errlen)
{
    *clear = NULL;
    if (len < MANIFEST_HEADER) { snprintf(err, errlen, "manifest truncated (%zu bytes)", len); return NULL; }
    bool sealed = !memcmp(obj, SEALED_MAGIC, 8), enc = k && k->encrypted;
    if (!sealed && memcmp(obj, MANIFEST_MAGIC, 8)) { snprintf(err, errlen, "not a backup manifest (bad magic)"); return NULL; }
    uint32_t n = get32(obj + 8);
    if (n != len - MANIFEST_HEADER) {
        snprintf(err, errlen, "manifest truncated: %zu bytes of protobuf, its header says %u", len - MANIFEST_HEADER, n);
        return NULL;
    }
    if (get32(obj + 12)) { snprintf(err, errlen, "manifest header has unknown flags %#x", get32(obj + 12)); return NULL; }
    if (sealed && !enc) { snprintf(err, errlen, "manifest is encrypted: a key file is needed"); return NULL; }
    if (!sealed && enc) {
        /* Never read as plain: whoever can write the store could replace a sealed manifest
         * with a plain one and choose the restored VM's registers. */
        snprintf(err, errlen, "manifest is not sealed but the store is encrypted (forged, or written before manifests were sealed)");
        return NULL;
    }
    if (!sealed) {
        uint8_t h[32];
        SHA256(obj + MANIFEST_HEADER, n, h);
        if (memcmp(h, obj + 16, 32)) { snprintf(err, errlen, "manifest hash mismatch (corrupt)"); return NULL; }
        return obj + MANIFEST_HEADER;
    }
    uint8_t aad[MANIFEST_HEADER], *b = malloc(n ? n : 1);
    if (!b) { snprintf(err, errlen, "out of memory"); return NULL; }
    memcpy(aad, obj, MANIFEST_HEADER);
    memset(aad + SEAL_TAG_OFF, 0, GW_AEAD_TAG);
    memcpy(b, obj + MANIFEST_HEADER, n);
    if (gw_aead_open(k->manifest_key, obj + SEAL_NONCE_OFF, aad, sizeof aad, (const uint8_t *)name, strlen(name), b, n,
                     obj + SEAL_TAG_OFF)) {
        snprintf(err, errlen, "manifest fails authentication (wrong key, altered, or moved from another name)");
        free(b);
        return NULL;
    }
    *clear = b;
    return b;
}

int gw_manifest_unpack(const uint8_t *obj, size_t len, const struct gw_chunk_keys *k, const char *name,
                       Godwit__V1__BackupManifest **out, char *err, size_t errlen)
{
    *out = NULL;
    uint8_t *clear = NULL;
    const uint8_t *pb = payload(obj, len, k, name, &clear, err, errlen);
    if (!pb) return -EBADMSG;
    size_t n = len - MANIFEST_HEADER;
    Godwit__V1__BackupManifest *m = godwit__v1__backup_manifest__unpack(NULL, n, pb);
    if (clear) {
        OPENSSL_cleanse(clear, n);   /* the VM's registers and device state, in the clear */
        free(clear);
    }
    if (!m) { snprintf(err, errlen, "manifest does not decode"); return -EBADMSG; }
    int r = -EBADMSG;
    char want[160];
    if (m->format_version != GW_MANIFEST_VERSION && m->format_version != GW_MANIFEST_VERSION_PATCHES &&
        m->format_version != GW_MANIFEST_VERSION_LAYERS) { snprintf(err, errlen, "manifest format %u not supported", m->format_version); goto bad; }
    if (!gw_store_name_ok(m->vm_name) || !gw_store_name_ok(m->id) || strlen(m->id) > GW_BACKUP_ID_MAX) {
        snprintf(err, errlen, "manifest names an unsafe VM or backup id"); goto bad;
    }
    /* A manifest speaks for the backup it is stored as and no other: moved or copied under
     * another name (another VM's, an older id) it is refused, sealed or not. */
    if (gw_manifest_object(m->vm_name, m->id, want, sizeof want) || strcmp(want, name)) {
        snprintf(err, errlen, "manifest of backup %s of VM %s is stored as %s", m->id, m->vm_name, name); goto bad;
    }
    if (m->parent[0] && (!gw_store_name_ok(m->parent) || strlen(m->parent) > GW_BACKUP_ID_MAX)) {
        snprintf(err, errlen, "manifest names an unsafe parent"); goto bad;
    }
    if ((r = check_image(m->memory, "memory", GW_BACKUP_MAX_MEMORY, m->format_version, err, errlen)) ||
        (r = check_image(m->disk, "disk", GW_BACKUP_MAX_DISK, m->format_version, err, errlen)))
        goto bad;
    r = -EBADMSG;
    if (m->memory->size == 0) { snprintf(err, errlen, "manifest has an empty memory image"); goto bad; }
    if (!m->state || !m->state->config) { snprintf(err, errlen, "manifest has no VM state"); goto bad; }
    /* A backup saves the core state only; what changed since a backup is the runner's own
     * record. Taken from a manifest, it would vouch for chunk hashes nobody checked, and an
     * instant restore's next incremental backup would build its digest on them. */
    if (m->state->backup_since) { snprintf(err, errlen, "manifest carries dirty-tracking state (never written by a backup)"); goto bad; }
    if (m->state->config->memory_bytes != m->memory->size) {
        snprintf(err, errlen, "manifest memory image is %llu bytes, the VM has %llu", (unsigned long long)m->memory->size,
                 (unsigned long long)m->state->config->memory_bytes);
        goto bad;
    }
    if (m->memory_digest.len != 16) { snprintf(err, errlen, "manifest memory digest is %zu bytes, not 16", m->memory_digest.len); goto bad; }
    *out = m;
    return 0;
bad:
    godwit__v1__backup_manifest__free_unpacked(m, NULL);
    return r;
}

bool gw_manifest_sealed(const uint8_t *obj, size_t len)
{
    return len >= 8 && !memcmp(obj, SEALED_MAGIC, 8);
}

int gw_manifest_load(struct gw_store *s, const struct gw_chunk_keys *k, const char *vm, const char *id,
                     Godwit__V1__BackupManifest **m, char *err, size_t errlen)
{
    char obj[160];
    if (gw_manifest_object(vm, id, obj, sizeof obj)) { snprintf(err, errlen, "bad VM name or backup id"); return -EINVAL; }
    uint8_t *buf = NULL;
    size_t len = 0;
    int r = s->ops->get(s, obj, GW_MANIFEST_MAX, &buf, &len);
    if (r == -ENOENT) { snprintf(err, errlen, "no backup %s of VM %s in %s", id, vm, s->desc); return r; }
    if (r) { snprintf(err, errlen, "%s", gw_store_error(s)); return r; }
    char why[256];
    r = gw_manifest_unpack(buf, len, k, obj, m, why, sizeof why);
    free(buf);
    if (r) snprintf(err, errlen, "backup %s of VM %s: %s", id, vm, why);
    return r;
}
