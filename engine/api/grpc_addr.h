/* Socket addresses as the API writes them: "host:port", "[v6addr]:port" or "unix:/path". */
#ifndef GW_API_GRPC_ADDR_H
#define GW_API_GRPC_ADDR_H

/* Binds and listens on addr (non-blocking, close-on-exec, SO_REUSEADDR; a stale unix socket
 * file is replaced). *port_out gets the bound TCP port, 0 for unix. Returns fd or -errno
 * (-EINVAL for an address that does not parse). */
int gw_grpc_addr_listen(const char *addr, int backlog, int *port_out);
/* Connects to addr within timeout_ms (0 = the system's timeout), TCP_NODELAY set. Returns a
 * non-blocking, close-on-exec fd or -errno (-ETIMEDOUT, -ECONNREFUSED, -EINVAL...). */
int gw_grpc_addr_connect(const char *addr, int timeout_ms);

#endif
