/* gRPC server reflection (grpc.reflection.v1 and v1alpha ServerReflectionInfo) on our server,
 * answered from a serialized google.protobuf.FileDescriptorSet that the caller embeds at build
 * time (protoc-c cannot embed descriptors; engine/daemon builds the set with grpc_tools'
 * protoc). Clients such as grpcurl or the grpcio reflection client then list the services
 * and fetch the schema without any .proto file.
 *
 * ServerReflectionInfo is a bidirectional stream: each request is answered as it arrives, in
 * order, while the client keeps the stream open (grpcurl asks its questions one after the
 * other on one stream and waits for each answer); the client's half-close ends the call. */
#ifndef GW_API_GRPC_REFLECTION_H
#define GW_API_GRPC_REFLECTION_H

#include <stddef.h>
#include <stdint.h>

struct gw_grpc_server;
struct gw_grpc_reflection;

/* Registers both reflection services on s. fds (len bytes) must outlive the server (static
 * data); it is parsed now and refused (-EINVAL) when malformed. *out (set whenever the
 * methods may point at it, even on a later error) is freed with gw_grpc_reflection_free
 * after the server. 0 or -errno. */
int gw_grpc_reflection_new(struct gw_grpc_server *s, const uint8_t *fds, size_t len, struct gw_grpc_reflection **out);
void gw_grpc_reflection_free(struct gw_grpc_reflection *r);

#endif
