/* google.rpc.Status details for errors: a machine-readable reason (google.rpc.ErrorInfo,
 * domain "godwit") carried in the grpc-status-details-bin trailer, so that clients branch on
 * NO_CAPACITY or MIGRATION_NOT_CONVERGING rather than on the words of a message. */
#ifndef GW_API_GRPC_STATUS_H
#define GW_API_GRPC_STATUS_H

#include <stddef.h>

#define GW_GRPC_REASON_MAX 48
#define GW_GRPC_ERROR_DOMAIN "godwit"

/* Writes base64 (unpadded, as gRPC's -bin headers) of google.rpc.Status{code, message,
 * details: [Any{type.googleapis.com/google.rpc.ErrorInfo, ErrorInfo{reason, domain}}]} into
 * out (cap bytes, NUL-terminated). Returns its length, 0 when it does not fit. */
size_t gw_grpc_status_details(int code, const char *message, const char *reason, char *out, size_t cap);

#endif
