/* The standard gRPC health service (grpc.health.v1.Health: Check and Watch) on a
 * gw_grpc_server. Statuses are kept per service name; "" is the server as a whole and starts
 * SERVING. Watch streams the current status at once and then every change. */
#ifndef GW_API_GRPC_HEALTH_H
#define GW_API_GRPC_HEALTH_H

#include "engine/api/grpc_server.h"

#include <stdbool.h>

struct gw_grpc_health;

/* Status values: those of grpc.health.v1.HealthCheckResponse.ServingStatus. */
enum gw_health_status {
    GW_HEALTH_UNKNOWN = 0,
    GW_HEALTH_SERVING = 1,
    GW_HEALTH_NOT_SERVING = 2,
    GW_HEALTH_SERVICE_UNKNOWN = 3,
};

/* Creates the service and registers Check and Watch on s (before gw_grpc_server_start).
 * require_auth=false lets probes call it without the bearer token. Returns 0 or -errno. */
int gw_grpc_health_new(struct gw_grpc_server *s, bool require_auth, struct gw_grpc_health **out);
/* Sets the status of service ("" = the whole server); thread-safe; watchers are told.
 * Returns 0 or -ENOMEM; service names longer than 255 bytes are -EINVAL. */
int gw_grpc_health_set(struct gw_grpc_health *h, const char *service, enum gw_health_status st);
/* Frees the service. Call after gw_grpc_server_stop and before gw_grpc_server_free: it drops
 * the references it holds on open Watch calls. */
void gw_grpc_health_free(struct gw_grpc_health *h);

#endif
