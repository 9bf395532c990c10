"""Questions answered with many runs: one run with its replications, sweep aggregation, the planner
and break-even, validation against measured runs, calibration fits. No Hydra.
"""
