"""The `hydra/sweeper=cost_slo` plugin class; the search is `sim.apps.cost_slo_sweeper`."""

import sim.apps.cost_slo_sweeper as impl


class CostSloSweeper(impl.CostSloSweeperImpl):
    """Optuna TPE: the cheapest configuration meeting the SLO (conf/hydra/sweeper/cost_slo.yaml)."""
