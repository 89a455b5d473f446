/* VM labels and label selectors (docs/backups.md "Policies by label").
 *
 * A label is "KEY=VALUE": KEY 1..GW_LIMIT_LABEL_KEY_MAX of [A-Za-z0-9._/-] starting with a
 * letter or digit, VALUE 0..GW_LIMIT_LABEL_VALUE_MAX of [A-Za-z0-9._-]. A VM has at most
 * GW_LIMIT_VM_LABELS, keys unique, kept as one canonical string: the labels sorted (as strings) and
 * joined by ',' (neither ',' nor '=' can occur inside a key or value, so it parses back
 * unambiguously). A selector is one label: a VM matches when it carries exactly that label. */
#ifndef GW_DAEMON_LABELS_H
#define GW_DAEMON_LABELS_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/common/limits.h"

/* Checks n labels and writes their canonical string into out (cap >= GW_LIMIT_LABELS_BUF is
 * always enough). 0, or -EINVAL with "labels: why" in err. */
int gw_labels_canon(char *const *labels, size_t n, char *out, size_t cap, char *err, size_t errlen);

/* Whether s is a canonical string as gw_labels_canon writes it ("" = no labels): what comes
 * from the database or a migration's source is checked again before use. */
bool gw_labels_canon_ok(const char *s);

/* Whether s is one well-formed label (a selector). */
bool gw_label_ok(const char *s);

/* Whether the canonical string canon carries the label sel (well-formed). */
bool gw_labels_match(const char *canon, const char *sel);

#endif
