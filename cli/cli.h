/* The godwit CLI's shared pieces: global options, the connection to godwitd, calls with
 * their status mapped to exit codes, and output helpers. */
#ifndef GW_CLI_CLI_H
#define GW_CLI_CLI_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/api/grpc_client.h"
#include "godwit/v1/api.pb-c.h"

/* Exit codes (also listed by `godwit --help`). */
enum {
    GW_EXIT_OK = 0,
    GW_EXIT_FAIL = 1,          /* any other error; a job that failed */
    GW_EXIT_USAGE = 2,         /* bad command line, or INVALID_ARGUMENT */
    GW_EXIT_NOT_FOUND = 3,
    GW_EXIT_CONFLICT = 4,      /* ALREADY_EXISTS, FAILED_PRECONDITION */
    GW_EXIT_AUTH = 5,          /* UNAUTHENTICATED, PERMISSION_DENIED */
    GW_EXIT_UNAVAILABLE = 6,   /* daemon unreachable, UNAVAILABLE */
    GW_EXIT_TIMEOUT = 7,       /* DEADLINE_EXCEEDED */
    GW_EXIT_CANCELLED = 8,     /* a job that was cancelled; CANCELLED */
};

struct gw_cli {
    char addr[512];
    char token[1024];
    char tls_ca[1024], tls_cert[1024], tls_key[1024];   /* tls_ca "" = h2c */
    bool json;
    uint32_t timeout_ms;
    struct gw_grpc_client *client;
};

/* Connects (once) to cli->addr. Returns 0 or an exit code, with a message on stderr. */
int gw_cli_connect(struct gw_cli *cli);
/* A unary call to /godwit.v1.Godwit/<method> (or /godwit.v1.<method> when it holds a '/'). On GW_EXIT_OK *resp holds the response (free
 * with protobuf_c_message_free_unpacked); otherwise the error is on stderr. */
int gw_cli_call(struct gw_cli *cli, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp);
/* The exit code for a gRPC status code. */
int gw_cli_exit_for(int grpc_code);
/* Prints msg as one JSON line. */
void gw_cli_print_json(const ProtobufCMessage *msg);

/* Formatting. */
void gw_fmt_bytes(uint64_t b, char *out, size_t len);         /* "1.5 GiB" */
void gw_fmt_ms_ago(uint64_t unix_ms, char *out, size_t len);  /* "3m ago" */
const char *gw_vm_state_name(int s);                          /* "running" */
const char *gw_job_state_name(int s);
int gw_parse_vm_state(const char *s);                         /* -1 when unknown */
int gw_parse_job_state(const char *s);

/* Subcommands: argv[0] is the subcommand's own name ("vm", "job", ...). */
int gw_cmd_vm(struct gw_cli *cli, int argc, char **argv);
int gw_cmd_job(struct gw_cli *cli, int argc, char **argv);
int gw_cmd_migrate(struct gw_cli *cli, int argc, char **argv);
int gw_cmd_host(struct gw_cli *cli, int argc, char **argv);
int gw_cmd_cluster(struct gw_cli *cli, int argc, char **argv);                 /* cmd_cluster.c */
int gw_cmd_backup(struct gw_cli *cli, int argc, char **argv);                  /* cmd_backup.c */
int gw_cmd_backup_policy(struct gw_cli *cli, int argc, char **argv);           /* cmd_backup_policy.c */
const char *gw_job_kind_name(int kind);                                        /* "migrate" */
int gw_cmd_host_maintenance(struct gw_cli *cli, int argc, char **argv);       /* argv[0] "maintenance" */
/* Follows a job until it ends (progress bar on a terminal); returns the exit code for its
 * final state. */
int gw_cli_watch_job(struct gw_cli *cli, const char *id);

#endif
