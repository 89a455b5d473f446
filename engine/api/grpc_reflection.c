/* gRPC server reflection, answered from an embedded FileDescriptorSet (see grpc_reflection.h).
 *
 * The set is walked in protobuf wire format directly (protobuf-c has no descriptor.proto
 * runtime): only the few fields reflection needs are read, every length is checked against
 * what remains of its enclosing message, and a set that does not parse is refused at start.
 *
 *   FileDescriptorSet    1 file (FileDescriptorProto)
 *   FileDescriptorProto  1 name, 2 package, 3 dependency, 4 message_type, 5 enum_type, 6 service
 *   DescriptorProto      1 name, 3 nested_type, 4 enum_type
 *   EnumDescriptorProto  1 name
 *   ServiceDescriptorProto 1 name, 2 method (MethodDescriptorProto: 1 name) */
#include "engine/api/grpc_reflection.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/api/grpc_server.h"
#include "grpc/reflection/v1/reflection.pb-c.h"

#define MAX_FILES 64
#define NAME_MAX_LEN 512
#define MAX_SERVICES 64

struct span {
    const uint8_t *p;
    size_t len;
};

struct file {
    struct span data, name, package;
};

struct gw_grpc_reflection {
    struct file files[MAX_FILES];
    size_t n;
};

/* ---- wire walking ----------------------------------------------------------------------- */

struct cur {
    const uint8_t *p, *end;
};

static bool varint(struct cur *c, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && c->p < c->end; shift += 7) {
        uint8_t b = *c->p++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return true;
    }
    return false;
}

/* The next field: its number, and for length-delimited ones the bytes. 1 = a field, 0 = the
 * end, -1 = malformed. */
static int next(struct cur *c, uint32_t *field, struct span *s)
{
    if (c->p == c->end) return 0;
    uint64_t key, v;
    if (!varint(c, &key) || key >> 3 == 0 || key >> 3 > UINT32_MAX) return -1;
    *field = (uint32_t)(key >> 3);
    s->p = NULL;
    s->len = 0;
    switch (key & 7) {
    case 0: return varint(c, &v) ? 1 : -1;
    case 1: if ((size_t)(c->end - c->p) < 8) return -1; c->p += 8; return 1;
    case 5: if ((size_t)(c->end - c->p) < 4) return -1; c->p += 4; return 1;
    case 2:
        if (!varint(c, &v) || v > (uint64_t)(c->end - c->p)) return -1;
        s->p = c->p;
        s->len = (size_t)v;
        c->p += v;
        return 1;
    default: return -1;
    }
}

static bool span_eq(struct span s, const char *str, size_t len)
{
    return s.len == len && !memcmp(s.p, str, len);
}

/* prefix + "." + name into out (prefix may be empty). false when too long. */
static bool join(char *out, const char *prefix, struct span name)
{
    size_t pl = strlen(prefix);
    if (pl + 1 + name.len + 1 > NAME_MAX_LEN) return false;
    size_t k = 0;
    if (pl) { memcpy(out, prefix, pl); out[pl] = '.'; k = pl + 1; }
    memcpy(out + k, name.p, name.len);
    out[k + name.len] = 0;
    return true;
}

static struct span field_str(struct span msg, uint32_t want)
{
    struct cur c = {msg.p, msg.p + msg.len};
    uint32_t f;
    struct span s, none = {0};
    while (next(&c, &f, &s) == 1)
        if (f == want && s.p) return s;
    return none;
}

/* Whether a message (or enum, kind 5/4) named under prefix defines sym, nested included. */
static bool msg_defines(struct span msg, const char *prefix, const char *sym, int depth)
{
    char full[NAME_MAX_LEN];
    if (depth > 32 || !join(full, prefix, field_str(msg, 1))) return false;
    if (!strcmp(full, sym)) return true;
    size_t fl = strlen(full);
    if (strncmp(sym, full, fl) || sym[fl] != '.') return false;
    struct cur c = {msg.p, msg.p + msg.len};
    uint32_t f;
    struct span s;
    while (next(&c, &f, &s) == 1) {
        if (f == 3 && s.p && msg_defines(s, full, sym, depth + 1)) return true;
        if (f == 4 && s.p) {
            char e[NAME_MAX_LEN];
            if (join(e, full, field_str(s, 1)) && !strcmp(e, sym)) return true;
        }
    }
    return false;
}

static bool file_defines(const struct file *fl, const char *sym)
{
    char pkg[NAME_MAX_LEN];
    if (fl->package.len >= sizeof pkg) return false;
    memcpy(pkg, fl->package.p, fl->package.len);
    pkg[fl->package.len] = 0;
    struct cur c = {fl->data.p, fl->data.p + fl->data.len};
    uint32_t f;
    struct span s;
    while (next(&c, &f, &s) == 1) {
        if (!s.p) continue;
        char full[NAME_MAX_LEN];
        if (f == 4 && msg_defines(s, pkg, sym, 0)) return true;
        if (f == 5 && join(full, pkg, field_str(s, 1)) && !strcmp(full, sym)) return true;
        if (f == 6 && join(full, pkg, field_str(s, 1))) {
            if (!strcmp(full, sym)) return true;
            size_t l = strlen(full);
            if (strncmp(sym, full, l) || sym[l] != '.') continue;
            struct cur m = {s.p, s.p + s.len};
            uint32_t mf;
            struct span ms;
            while (next(&m, &mf, &ms) == 1)
                if (mf == 2 && ms.p && span_eq(field_str(ms, 1), sym + l + 1, strlen(sym + l + 1))) return true;
        }
    }
    return false;
}

/* ---- answers ---------------------------------------------------------------------------- */

static int find_file(const struct gw_grpc_reflection *r, struct span name)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->files[i].name.len == name.len && !memcmp(r->files[i].name.p, name.p, name.len)) return (int)i;
    return -1;
}

/* Adds file i and (first) its imports to out, each once. */
static void add_with_deps(const struct gw_grpc_reflection *r, int i, bool *seen, ProtobufCBinaryData *out, size_t *n, int depth)
{
    if (i < 0 || seen[i] || depth > MAX_FILES) return;
    seen[i] = true;
    out[(*n)++] = (ProtobufCBinaryData){.len = r->files[i].data.len, .data = (uint8_t *)r->files[i].data.p};
    struct cur c = {r->files[i].data.p, r->files[i].data.p + r->files[i].data.len};
    uint32_t f;
    struct span s;
    while (next(&c, &f, &s) == 1)
        if (f == 3 && s.p) add_with_deps(r, find_file(r, s), seen, out, n, depth + 1);
}

static int handler(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    (void)msg;
    const struct gw_grpc_reflection *r = arg;
    size_t len;
    const uint8_t *raw = gw_grpc_call_request(call, &len);
    /* v1 and v1alpha are the same wire format: one decoder for both. */
    Grpc__Reflection__V1__ServerReflectionRequest *req = grpc__reflection__v1__server_reflection_request__unpack(NULL, len, raw);
    if (!req) return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "cannot parse the reflection request");
    Grpc__Reflection__V1__ServerReflectionResponse resp = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
    Grpc__Reflection__V1__FileDescriptorResponse fdr = GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
    Grpc__Reflection__V1__ListServiceResponse lsr = GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
    Grpc__Reflection__V1__ErrorResponse er = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
    ProtobufCBinaryData files[MAX_FILES];
    bool seen[MAX_FILES] = {0};
    Grpc__Reflection__V1__ServiceResponse svc[MAX_SERVICES], *svcp[MAX_SERVICES];
    char names[MAX_SERVICES][NAME_MAX_LEN];
    resp.valid_host = req->host;
    resp.original_request = req;
    int hit = -1;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        hit = find_file(r, (struct span){(const uint8_t *)req->file_by_filename, strlen(req->file_by_filename)});
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        for (size_t i = 0; i < r->n && hit < 0; i++)
            if (file_defines(&r->files[i], req->file_containing_symbol)) hit = (int)i;
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES: {
        size_t k = 0;
        for (size_t i = 0; i < r->n; i++) {
            char pkg[NAME_MAX_LEN];
            if (r->files[i].package.len >= sizeof pkg) continue;
            memcpy(pkg, r->files[i].package.p, r->files[i].package.len);
            pkg[r->files[i].package.len] = 0;
            struct cur c = {r->files[i].data.p, r->files[i].data.p + r->files[i].data.len};
            uint32_t f;
            struct span s;
            while (next(&c, &f, &s) == 1 && k < MAX_SERVICES) {
                if (f != 6 || !s.p || !join(names[k], pkg, field_str(s, 1))) continue;
                grpc__reflection__v1__service_response__init(&svc[k]);
                svc[k].name = names[k];
                svcp[k] = &svc[k];
                k++;
            }
        }
        lsr.n_service = k;
        lsr.service = svcp;
        resp.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        resp.list_services_response = &lsr;
        break;
    }
    default:
        break;
    }
    if (req->message_request_case != GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES) {
        if (hit >= 0) {
            size_t n = 0;
            add_with_deps(r, hit, seen, files, &n, 0);
            fdr.n_file_descriptor_proto = n;
            fdr.file_descriptor_proto = files;
            resp.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
            resp.file_descriptor_response = &fdr;
        } else {
            bool ext = req->message_request_case == GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION ||
                       req->message_request_case == GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE;
            er.error_code = ext ? GW_GRPC_UNIMPLEMENTED : GW_GRPC_NOT_FOUND;
            er.error_message = ext ? "extensions are not used by this server" : "not found";
            resp.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
            resp.error_response = &er;
        }
    }
    gw_grpc_call_send(call, &resp.base);
    grpc__reflection__v1__server_reflection_request__free_unpacked(req, NULL);
    return GW_GRPC_OK;
}

int gw_grpc_reflection_new(struct gw_grpc_server *s, const uint8_t *fds, size_t len, struct gw_grpc_reflection **out)
{
    struct gw_grpc_reflection *r = calloc(1, sizeof *r);
    if (!r) return -ENOMEM;
    struct cur c = {fds, fds + len};
    uint32_t f;
    struct span sp;
    int rc;
    while ((rc = next(&c, &f, &sp)) == 1) {
        if (f != 1 || !sp.p) continue;
        if (r->n == MAX_FILES) { rc = -1; break; }
        struct file *fl = &r->files[r->n++];
        fl->data = sp;
        fl->name = field_str(sp, 1);
        fl->package = field_str(sp, 2);
        /* Every file must walk cleanly: the handlers then only meet well-formed data. */
        struct cur fc = {sp.p, sp.p + sp.len};
        struct span x;
        int fr;
        while ((fr = next(&fc, &f, &x)) == 1) {}
        if (fr < 0 || !fl->name.len) { rc = -1; break; }
    }
    if (rc < 0) { free(r); return -EINVAL; }
    /* The methods point at r: the caller frees it after the server. */
    *out = r;
    static const char *const paths[] = {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"};
    for (size_t i = 0; i < 2; i++) {
        int e = gw_grpc_server_register(s, &(struct gw_grpc_method){
            .path = paths[i], .kind = GW_GRPC_BIDI_STREAM, .request = NULL, .handler = handler, .arg = r});
        if (e) return e;
    }
    return 0;
}

void gw_grpc_reflection_free(struct gw_grpc_reflection *r)
{
    free(r);
}
