"""The `hydra/sweeper=cost_slo` plugin class; the search is `sim.apps.cost_slo_sweeper`."""

from sim.apps.cost_slo_sweeper import CostSloSweeperImpl


class CostSloSweeper(CostSloSweeperImpl):
    """Optuna TPE: the cheapest configuration meeting the SLO (conf/hydra/sweeper/cost_slo.yaml)."""
