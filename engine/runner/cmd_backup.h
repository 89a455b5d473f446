/* godwit-vm's backup client commands (cmd_backup.c). */
#ifndef GW_RUNNER_CMD_BACKUP_H
#define GW_RUNNER_CMD_BACKUP_H

#include <stdbool.h>

#include "godwit/v1/backup.pb-c.h"

/* True for backup, verify-backup, list-backups and delete-backup. */
bool gw_runner_is_backup_verb(const char *verb);
/* Runs one of them; argv[0] is the verb. Returns the process exit code. */
int gw_runner_cmd_backup(const char *verb, int argc, char **argv);
/* Applies store option --name val to spec: 0 taken, 1 not a store option, -1 bad value. */
int gw_backup_store_opt(const char *name, const char *val, Godwit__V1__StoreSpec *spec);

/* Store maintenance (cmd_prune.c): prune and gc. */
bool gw_runner_is_store_verb(const char *verb);
int gw_runner_cmd_store(const char *verb, int argc, char **argv);

#endif
