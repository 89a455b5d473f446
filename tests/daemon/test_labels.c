/* Unit tests for VM labels and selectors (engine/daemon/labels.c): the canonical form, every
 * refusal (shape, length, count, duplicate keys), selectors matching whole labels only, and
 * stored strings checked again (what the database or a migration's source says is not
 * trusted more than the API). */
#include "engine/daemon/labels.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int canon(char *const *v, size_t n, char *out)
{
    char err[200];
    err[0] = 0;
    int r = gw_labels_canon(v, n, out, GW_LIMIT_LABELS_BUF, err, sizeof err);
    if (r) CHECK(!strncmp(err, "labels:", 7));   /* the field first, as the API says it */
    return r;
}

GW_TEST(labels_canonical_form)
{
    char out[GW_LIMIT_LABELS_BUF];
    char *v[] = {"tier=web", "env=prod", "team/a=x_1", "empty="};
    CHECK_EQ(canon(v, 4, out), 0);
    CHECK(!strcmp(out, "empty=,env=prod,team/a=x_1,tier=web"));
    CHECK(gw_labels_canon_ok(out));
    CHECK_EQ(canon(NULL, 0, out), 0);
    CHECK(!strcmp(out, ""));
    CHECK(gw_labels_canon_ok(""));
    /* The most: 16 labels of the longest key and value fit the buffer. */
    static char big[GW_LIMIT_VM_LABELS][GW_LIMIT_LABEL_KEY_MAX + GW_LIMIT_LABEL_VALUE_MAX + 2];
    char *bv[GW_LIMIT_VM_LABELS + 1];
    for (unsigned i = 0; i < GW_LIMIT_VM_LABELS; i++) {
        memset(big[i], 'v', sizeof big[i] - 1);
        big[i][sizeof big[i] - 1] = 0;
        snprintf(big[i], GW_LIMIT_LABEL_KEY_MAX + 1, "k%02u%060u", i, 0u);
        big[i][GW_LIMIT_LABEL_KEY_MAX] = '=';
        bv[i] = big[i];
    }
    CHECK_EQ(strlen(big[0]), GW_LIMIT_LABEL_KEY_MAX + 1 + GW_LIMIT_LABEL_VALUE_MAX);
    CHECK_EQ(canon(bv, GW_LIMIT_VM_LABELS, out), 0);
    CHECK(gw_labels_canon_ok(out));
    bv[GW_LIMIT_VM_LABELS] = "one=more";
    CHECK_EQ(canon(bv, GW_LIMIT_VM_LABELS + 1, out), -EINVAL);
}

GW_TEST(labels_refused)
{
    char out[GW_LIMIT_LABELS_BUF];
    char key64[80], val64[80];
    memset(key64, 'k', 64);
    snprintf(key64 + 64, sizeof key64 - 64, "=v");
    snprintf(val64, sizeof val64, "k=");
    memset(val64 + 2, 'v', 64);
    val64[66] = 0;
    const char *bad[] = {"", "tier", "=web", "tier=web,env=x", "tier=a b", "-x=1", "/x=1", "x=1=2", "ti\xc3\xa9r=1",
                         "x=\n", key64, val64};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *v[] = {(char *)bad[i]};
        CHECK_EQ(canon(v, 1, out), -EINVAL);
        CHECK(!gw_label_ok(bad[i]));
    }
    char *dup[] = {"tier=a", "env=x", "tier=b"};
    CHECK_EQ(canon(dup, 3, out), -EINVAL);
    char *same[] = {"tier=a", "tier=a"};
    CHECK_EQ(canon(same, 2, out), -EINVAL);
    /* Stored strings: only what gw_labels_canon would write. */
    CHECK(!gw_labels_canon_ok("tier=web,env=prod"));   /* not sorted */
    CHECK(!gw_labels_canon_ok("tier=web,,env=prod"));
    CHECK(!gw_labels_canon_ok(",tier=web"));
    CHECK(!gw_labels_canon_ok("tier=web,"));
    CHECK(!gw_labels_canon_ok("a=1,a=2"));
    CHECK(!gw_labels_canon_ok("a b=1"));
}

GW_TEST(labels_selectors_match_whole_labels)
{
    const char *c = "env=prod,tier=web";
    CHECK(gw_labels_match(c, "tier=web"));
    CHECK(gw_labels_match(c, "env=prod"));
    CHECK(!gw_labels_match(c, "tier=we"));
    CHECK(!gw_labels_match(c, "ier=web"));
    CHECK(!gw_labels_match(c, "env=prod,tier=web"));
    CHECK(!gw_labels_match(c, "env=pro"));
    CHECK(!gw_labels_match("", "tier=web"));
    CHECK(gw_labels_match("e=", "e="));
}

