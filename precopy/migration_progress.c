/* Phase names (see migration_progress.h). */
#include "precopy/migration_progress.h"

const char *gw_mig_phase_name(enum gw_mig_phase p)
{
    switch (p) {
    case GW_MIG_NONE: return "";
    case GW_MIG_SETUP: return "setup";
    case GW_MIG_PRECOPY: return "precopy";
    case GW_MIG_SWITCHOVER: return "switchover";
    case GW_MIG_COMPLETED: return "completed";
    case GW_MIG_FAILED: return "failed";
    case GW_MIG_CANCELLED: return "cancelled";
    case GW_MIG_IN_DOUBT: return "in-doubt";
    case GW_MIG_POSTCOPY_ACTIVE: return "postcopy-active";
    case GW_MIG_POSTCOPY_PAUSED: return "postcopy-paused";
    case GW_MIG_POSTCOPY_RECOVER: return "postcopy-recover";
    }
    return "?";
}
