/* Unit test for gw_budget_share (engine/daemon/backup_budget.c): a cluster rate divided by the
 * hosts holding its lease, bounded against holders that are not hosts. */
#include "engine/daemon/backup_budget.h"
#include "engine/daemon/cluster.h"
#include "tests/lib/gw_test.h"

GW_TEST(share_of_a_cluster_rate)
{
    CHECK_EQ(gw_budget_share(400u << 20, 1), 400u << 20);
    CHECK_EQ(gw_budget_share(400u << 20, 4), 100u << 20);
    CHECK_EQ(gw_budget_share(400u << 20, 0), 400u << 20);
    /* A thousand forged lock holders: no smaller than the rate over the most hosts a cluster
     * has, and more holders than bytes per second never make it 0 ("unlimited"). */
    CHECK_EQ(gw_budget_share(400u << 20, 1000), (400u << 20) / GW_CLUSTER_MAX_HOSTS);
    CHECK_EQ(gw_budget_share(100, 200), 1);
    CHECK_EQ(gw_budget_share(100, 100000), 1);
}
