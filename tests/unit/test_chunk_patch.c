/* Unit tests for storage/chunk_patch.c and the patch lists of storage/manifest.c: a patch
 * rebuilds its chunk plain and encrypted; every hostile patch (truncated, bad magic, version,
 * lying page count or length, pages out of range or out of order, another base) and every
 * hostile patch list in a manifest is refused with its own reason, before a byte is applied. */
#include "storage/chunk.h"
#include "storage/chunk_patch.h"
#include "storage/manifest.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CS (256u << 10)             /* 64 pages: a patch carries at most 32 */
#define PG 4096u

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static void fill_random(uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; p[i] = (uint8_t)rng; }
}

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }

/* A base chunk, the chunk with pages {0, 5, 63} changed, and the patch between them. */
struct fixture {
    uint8_t *base, *data, *patch, hb[32], hd[32];
    size_t plen;
};

static void fixture_make(struct fixture *f)
{
    f->base = malloc(CS);
    f->data = malloc(CS);
    f->patch = malloc(gw_patch_max_size(CS));
    fill_random(f->base, CS);
    memcpy(f->data, f->base, CS);
    uint32_t pages[] = {0, 5, 63};
    for (int k = 0; k < 3; k++) fill_random(f->data + pages[k] * PG, PG);
    gw_chunk_hash(NULL, f->base, CS, f->hb);
    gw_chunk_hash(NULL, f->data, CS, f->hd);
    long n = gw_patch_encode(f->hb, f->data, CS, pages, 3, f->patch, gw_patch_max_size(CS));
    f->plen = n > 0 ? (size_t)n : 0;
}

static void fixture_free(struct fixture *f)
{
    free(f->base);
    free(f->data);
    free(f->patch);
}

GW_TEST(patch_roundtrip)
{
    struct fixture f;
    fixture_make(&f);
    REQUIRE(f.plen == gw_patch_size(3));
    CHECK_EQ(gw_patch_max_pages(CS), 32);
    struct gw_patch pt;
    char err[256] = "";
    CHECK_EQ(gw_patch_parse(f.patch, f.plen, CS, f.hb, &pt, err, sizeof err), 0);
    CHECK_EQ(pt.npages, 3);
    uint8_t *out = malloc(CS);
    memcpy(out, f.base, CS);
    gw_patch_apply(&pt, out);
    CHECK(!memcmp(out, f.data, CS));
    fixture_free(&f);
    free(out);
}

/* The patch as a stored object: named by its own hash (an HMAC when encrypted), AES-GCM,
 * rebuilt over the base and checked against the chunk's name. */
static void finish_with(const struct gw_chunk_keys *k)
{
    struct fixture f;
    fixture_make(&f);
    uint8_t hp[32], hb[32], hd[32];
    gw_chunk_hash(k, f.patch, f.plen, hp);
    gw_chunk_hash(k, f.data, CS, hd);
    /* The base named as the store names it; the patch must carry that name. */
    gw_chunk_hash(k, f.base, CS, hb);
    uint32_t pages[] = {0, 5, 63};
    REQUIRE(gw_patch_encode(hb, f.data, CS, pages, 3, f.patch, gw_patch_max_size(CS)) == (long)f.plen);
    gw_chunk_hash(k, f.patch, f.plen, hp);
    size_t cap = gw_chunk_encoded_cap(f.plen);
    uint8_t *obj = malloc(cap), *out = malloc(CS);
    long n = gw_chunk_encode(k, f.patch, f.plen, true, obj, cap);
    REQUIRE(n > 0);
    if (k && k->encrypted) CHECK(memmem(obj, (size_t)n, f.data + 5 * PG, 64) == NULL);   /* pages not in the clear */
    char err[256] = "";
    memcpy(out, f.base, CS);
    CHECK_EQ(gw_patch_finish(k, hp, hb, hd, obj, (size_t)n, out, CS, err, sizeof err), 0);
    CHECK(!memcmp(out, f.data, CS));
    /* The rebuilt data must be the chunk the manifest names. */
    uint8_t other[32];
    memcpy(other, hd, 32);
    other[3] ^= 1;
    memcpy(out, f.base, CS);
    CHECK_EQ(gw_patch_finish(k, hp, hb, other, obj, (size_t)n, out, CS, err, sizeof err), -EBADMSG);
    CHECK(strstr(err, "does not match its name") != NULL);
    /* A patch object altered in the store fails its own name first. */
    obj[n - 1] ^= 1;
    memcpy(out, f.base, CS);
    CHECK_EQ(gw_patch_finish(k, hp, hb, hd, obj, (size_t)n, out, CS, err, sizeof err), -EBADMSG);
    CHECK(strstr(err, "patch: chunk") != NULL);
    free(obj);
    free(out);
    fixture_free(&f);
}

GW_TEST(patch_object_plain_and_encrypted)
{
    finish_with(NULL);
    char dir[] = "/tmp/gwpatchXXXXXX";
    REQUIRE(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/key", dir);
    FILE *fp = fopen(path, "w");
    REQUIRE(fp);
    fprintf(fp, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n");
    fclose(fp);
    struct gw_chunk_keys k;
    char err[256];
    int r = gw_chunk_keys_load(path, &k, err, sizeof err);
    unlink(path);
    rmdir(dir);
    REQUIRE(r == 0);
    finish_with(&k);
    gw_chunk_keys_wipe(&k);
}

/* A layered patch (manifest format 3): the mid patch over the whole base chunk, the top patch
 * over the base with the mid applied, naming the mid object. The rebuild takes the mid
 * unchecked and checks the end result; a top patch that names another layer is refused. */
GW_TEST(patch_layered_over_mid)
{
    struct fixture f;
    fixture_make(&f);                      /* mid: base with pages 0, 5, 63 changed (f.data) */
    uint8_t *top_data = malloc(CS), *top = malloc(gw_patch_max_size(CS)), *out = malloc(CS);
    memcpy(top_data, f.data, CS);
    fill_random(top_data + 9 * PG, PG);    /* the clone changes page 9 only */
    uint8_t hm[32], ht[32], hd[32];
    size_t ecap = gw_chunk_encoded_cap(gw_patch_max_size(CS));
    uint8_t *mobj = malloc(ecap), *tobj = malloc(ecap);
    long mn = gw_chunk_encode(NULL, f.patch, f.plen, true, mobj, ecap);
    gw_chunk_hash(NULL, f.patch, f.plen, hm);
    uint32_t pages[] = {9};
    long tl = gw_patch_encode(hm, top_data, CS, pages, 1, top, gw_patch_max_size(CS));
    REQUIRE(mn > 0 && tl == (long)gw_patch_size(1));
    gw_chunk_hash(NULL, top, (size_t)tl, ht);
    gw_chunk_hash(NULL, top_data, CS, hd);
    long tn = gw_chunk_encode(NULL, top, (size_t)tl, true, tobj, ecap);
    REQUIRE(tn > 0);
    char err[256] = "";
    memcpy(out, f.base, CS);
    CHECK_EQ(gw_patch_finish(NULL, hm, f.hb, NULL, mobj, (size_t)mn, out, CS, err, sizeof err), 0);
    CHECK(!memcmp(out, f.data, CS));
    CHECK_EQ(gw_patch_finish(NULL, ht, hm, hd, tobj, (size_t)tn, out, CS, err, sizeof err), 0);
    CHECK(!memcmp(out, top_data, CS));
    /* The top patch names the mid: as a patch straight over the base it is refused. */
    memcpy(out, f.base, CS);
    CHECK_EQ(gw_patch_finish(NULL, ht, f.hb, hd, tobj, (size_t)tn, out, CS, err, sizeof err), -EBADMSG);
    CHECK(strstr(err, "another base") != NULL);
    /* A mid that names another base is refused too, with the layer in the reason. */
    uint8_t other[32];
    memcpy(other, f.hb, 32);
    other[0] ^= 1;
    CHECK_EQ(gw_patch_finish(NULL, hm, other, NULL, mobj, (size_t)mn, out, CS, err, sizeof err), -EBADMSG);
    CHECK(strstr(err, "mid patch") != NULL && strstr(err, "another base") != NULL);
    /* Without the mid applied the end result is wrong: the final check catches it. */
    memcpy(out, f.base, CS);
    CHECK_EQ(gw_patch_finish(NULL, ht, hm, hd, tobj, (size_t)tn, out, CS, err, sizeof err), -EBADMSG);
    CHECK(strstr(err, "does not match its name") != NULL);
    free(top_data);
    free(top);
    free(out);
    free(mobj);
    free(tobj);
    fixture_free(&f);
}

static void expect_bad(const uint8_t *p, size_t len, size_t chunk_len, const uint8_t *base, const char *want)
{
    struct gw_patch pt;
    char err[256] = "";
    CHECK_EQ(gw_patch_parse(p, len, chunk_len, base, &pt, err, sizeof err), -EBADMSG);
    if (!strstr(err, want)) { fprintf(stderr, "  reason '%s' lacks '%s'\n", err, want); CHECK(0); }
}

GW_TEST(patch_hostile_refused)
{
    struct fixture f;
    fixture_make(&f);
    REQUIRE(f.plen);
    uint8_t *c = malloc(gw_patch_max_size(CS) + PG);
#define MUT(stmt, want) do { memcpy(c, f.patch, f.plen); stmt; expect_bad(c, f.plen, CS, f.hb, want); } while (0)
    expect_bad(f.patch, 20, CS, f.hb, "truncated");
    expect_bad(f.patch, f.plen - 1, CS, f.hb, "bytes, not");
    MUT(c[1] ^= 1, "magic");
    MUT(put32(c + 8, 2), "format 2");
    MUT(c[20] = 1, "reserved");
    MUT(put32(c + 12, CS * 2), "rebuilds");
    MUT(put32(c + 16, 0), "carries 0 pages");
    MUT(put32(c + 16, 0xffffffffu), "carries 4294967295 pages");
    MUT(put32(c + 16, 33), "carries 33 pages");
    MUT(put32(c + 16, 2), "bytes, not");                 /* fewer pages than the length holds */
    MUT(put32(c + 56 + 8, 64), "outside");               /* page 64 of a 64-page chunk */
    MUT(put32(c + 56 + 4, 0), "increasing");             /* 0, 0, 63 */
    MUT(c[24] ^= 1, "another base");
    /* A length the patch does not claim, with room behind it: still refused. */
    memcpy(c, f.patch, f.plen);
    memset(c + f.plen, 0, PG);
    expect_bad(c, f.plen + PG, CS, f.hb, "bytes, not");
    /* Chunks a patch cannot describe. */
    expect_bad(f.patch, f.plen, 0, f.hb, "cannot be patched");
    expect_bad(f.patch, f.plen, CS + 1, f.hb, "cannot be patched");
    expect_bad(f.patch, f.plen, GW_CHUNK_MAX + PG, f.hb, "cannot be patched");
    expect_bad(f.patch, f.plen, PG, f.hb, "cannot be patched");   /* one page: nothing to patch */
#undef MUT
    /* The encoder refuses what the decoder would. */
    uint32_t none[] = {0}, twice[] = {3, 3}, far[] = {64}, many[33];
    for (uint32_t k = 0; k < 33; k++) many[k] = k;
    size_t cap = gw_patch_max_size(CS);
    CHECK_EQ(gw_patch_encode(f.hb, f.data, CS, none, 0, c, cap), -EINVAL);
    CHECK_EQ(gw_patch_encode(f.hb, f.data, CS, twice, 2, c, cap), -EINVAL);
    CHECK_EQ(gw_patch_encode(f.hb, f.data, CS, far, 1, c, cap), -EINVAL);
    CHECK_EQ(gw_patch_encode(f.hb, f.data, CS, many, 33, c, cap), -EINVAL);
    CHECK_EQ(gw_patch_encode(f.hb, f.data, CS, many, 32, c, gw_patch_size(32) - 1), -ENOSPC);
    CHECK_EQ(gw_patch_encode(f.hb, f.data, CS - 100, many, 1, c, cap), -EINVAL);
    free(c);
    fixture_free(&f);
}

/* A manifest of four 64 KiB chunks; chunk 2 patched when patched is set. */
static Godwit__V1__BackupManifest *manifest(bool patched)
{
    static Godwit__V1__BackupManifest m;
    static Godwit__V1__BackupImage mem, disk;
    static Godwit__V1__VmState st;
    static Godwit__V1__VmConfig cfg;
    static ProtobufCBinaryData chunks[4], patches[4], bases[4], mids[4];
    static uint8_t names[4][32], pn[32], bn[32], mn[32], dg[16] = {1};
    fill_random(&names[0][0], sizeof names);
    fill_random(pn, 32);
    fill_random(bn, 32);
    godwit__v1__backup_manifest__init(&m);
    godwit__v1__backup_image__init(&mem);
    godwit__v1__backup_image__init(&disk);
    godwit__v1__vm_state__init(&st);
    godwit__v1__vm_config__init(&cfg);
    for (int i = 0; i < 4; i++) {
        chunks[i] = (ProtobufCBinaryData){32, names[i]};
        patches[i] = (ProtobufCBinaryData){i == 2 ? 32 : 0, pn};
        bases[i] = (ProtobufCBinaryData){i == 2 ? 32 : 0, bn};
        mids[i] = (ProtobufCBinaryData){i == 2 ? 32 : 0, mn};
    }
    mem.n_patch_mids = 0;
    mem.patch_mids = mids;   /* listed only when a test sets n_patch_mids */
    mem.size = cfg.memory_bytes = 4 * 65536;
    mem.chunk_size = 65536;
    mem.n_chunks = 4;
    mem.chunks = chunks;
    if (patched) {
        mem.n_patches = mem.n_patch_bases = 4;
        mem.patches = patches;
        mem.patch_bases = bases;
    }
    st.config = &cfg;
    m.format_version = patched ? GW_MANIFEST_VERSION_PATCHES : GW_MANIFEST_VERSION;
    m.id = "20261130-120000-000001";
    m.vm_name = "clone1";
    m.state = &st;
    m.memory = &mem;
    m.disk = &disk;
    m.memory_digest = (ProtobufCBinaryData){16, dg};
    return &m;
}

static int unpack(const Godwit__V1__BackupManifest *m, Godwit__V1__BackupManifest **out, char *err, size_t errlen)
{
    uint8_t *b;
    size_t len;
    if (gw_manifest_pack(m, NULL, &b, &len)) return -ENOMEM;
    int r = gw_manifest_unpack(b, len, NULL, "m.clone1.20261130-120000-000001", out, err, errlen);
    free(b);
    return r;
}

static void expect_manifest_bad(const Godwit__V1__BackupManifest *m, const char *want)
{
    Godwit__V1__BackupManifest *out = NULL;
    char err[256] = "";
    CHECK_EQ(unpack(m, &out, err, sizeof err), -EBADMSG);
    if (!strstr(err, want)) { fprintf(stderr, "  reason '%s' lacks '%s'\n", err, want); CHECK(0); }
    CHECK(out == NULL);
}

GW_TEST(manifest_patch_lists)
{
    Godwit__V1__BackupManifest *out = NULL;
    char err[256] = "";
    /* Format 1 without patches (what older writers wrote) and format 2 with them. */
    CHECK_EQ(unpack(manifest(false), &out, err, sizeof err), 0);
    REQUIRE(out);
    CHECK(!gw_manifest_patched(out->memory, 2));
    godwit__v1__backup_manifest__free_unpacked(out, NULL);
    CHECK_EQ(unpack(manifest(true), &out, err, sizeof err), 0);
    REQUIRE(out);
    CHECK(gw_manifest_patched(out->memory, 2));
    CHECK(!gw_manifest_patched(out->memory, 1));
    CHECK(!gw_manifest_patched(out->memory, 99));        /* out of range: no */
    godwit__v1__backup_manifest__free_unpacked(out, NULL);
    Godwit__V1__BackupManifest *m = manifest(true);
    m->format_version = GW_MANIFEST_VERSION;
    expect_manifest_bad(m, "format 1 lists memory patches");
    m = manifest(true);
    m->memory->n_patches = 3;
    expect_manifest_bad(m, "3 patches, 4 bases");
    m = manifest(true);
    m->memory->n_patch_bases = 5;
    expect_manifest_bad(m, "4 patches, 5 bases");
    m = manifest(true);
    m->memory->patches[2].len = 31;
    expect_manifest_bad(m, "bad patch entry");
    m = manifest(true);
    m->memory->patch_bases[2].len = 0;                   /* a patch without a base */
    expect_manifest_bad(m, "bad patch entry");
    m = manifest(true);
    m->memory->patch_bases[1].len = 32;                  /* a base without a patch */
    expect_manifest_bad(m, "bad patch entry");
    m = manifest(true);
    m->memory->chunks[2].len = 0;                        /* a zero chunk is never patched */
    expect_manifest_bad(m, "bad patch entry");
    m = manifest(true);
    m->memory->chunk_size = 4096;                        /* one-page chunks cannot be patched */
    m->memory->size = m->state->config->memory_bytes = 4 * 4096;
    expect_manifest_bad(m, "bad patch entry");
    /* Patches on an empty disk image. */
    m = manifest(true);
    m->disk->n_patches = 1;
    m->disk->patches = m->memory->patches;
    expect_manifest_bad(m, "disk image lists 1 patches");
}

/* Format 3: a mid patch under chunk 2's patch. */
static Godwit__V1__BackupManifest *layered(void)
{
    Godwit__V1__BackupManifest *m = manifest(true);
    m->format_version = GW_MANIFEST_VERSION_LAYERS;
    m->memory->n_patch_mids = 4;
    return m;
}

GW_TEST(manifest_layered_patch_lists)
{
    Godwit__V1__BackupManifest *out = NULL;
    char err[256] = "";
    CHECK_EQ(unpack(layered(), &out, err, sizeof err), 0);
    REQUIRE(out);
    CHECK(gw_manifest_patch_mid(out->memory, 2) != NULL);
    CHECK(gw_manifest_patch_mid(out->memory, 1) == NULL);
    CHECK(gw_manifest_patch_mid(out->memory, 99) == NULL);
    godwit__v1__backup_manifest__free_unpacked(out, NULL);
    /* Format 2 without mids still reads, and its chunks have none. */
    CHECK_EQ(unpack(manifest(true), &out, err, sizeof err), 0);
    REQUIRE(out);
    CHECK(gw_manifest_patch_mid(out->memory, 2) == NULL);
    godwit__v1__backup_manifest__free_unpacked(out, NULL);
    Godwit__V1__BackupManifest *m = layered();
    m->format_version = GW_MANIFEST_VERSION_PATCHES;     /* an older reader must not misread it */
    expect_manifest_bad(m, "format 2 lists memory layered patches");
    m = layered();
    m->format_version = 4;
    expect_manifest_bad(m, "format 4 not supported");
    m = layered();
    m->memory->n_patch_mids = 3;
    expect_manifest_bad(m, "3 mid patches");
    m = layered();
    m->memory->patch_mids[2].len = 31;
    expect_manifest_bad(m, "bad patch entry");
    m = layered();
    m->memory->patch_mids[1].len = 32;                   /* a mid on a chunk stored whole */
    expect_manifest_bad(m, "bad patch entry");
    m = layered();
    m->memory->n_patches = m->memory->n_patch_bases = 0; /* mids without patches */
    expect_manifest_bad(m, "0 patches, 0 bases and 4 mid patches");
}
