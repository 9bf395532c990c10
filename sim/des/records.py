"""The per-request records the fleet fills as requests end, and the codes they use. No SimPy:
the results layer reads these without loading the simulator."""

from __future__ import annotations

import numpy as np

from sim.pricing.cost import STATES

ROUTE_NONE, ROUTE_GPU, ROUTE_API, ROUTE_REJECTED = -1, 0, 1, 2
ROUTE_NAMES = {ROUTE_GPU: "gpu", ROUTE_API: "api", ROUTE_REJECTED: "rejected"}
REASON_NONE, REASON_CONTEXT, REASON_NO_GPU = 0, 1, 2
REASON_NAMES = {REASON_NONE: "", REASON_CONTEXT: "exceeds_max_model_len", REASON_NO_GPU: "api_refused_and_no_gpu"}


class Records:
    """One slot per request; filled when the request is served or rejected."""

    def __init__(self, n: int):
        self.route = np.full(n, ROUTE_NONE, np.int8)
        self.reason = np.zeros(n, np.int8)
        self.replica = np.full(n, -1, np.int32)
        self.start = np.full(n, np.nan)
        self.first_token = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.preemptions = np.zeros(n, np.int32)
        self.cached = np.zeros(n, np.int64)
        self.served_output = np.full(n, -1, np.int64)  # >= 0: the API cut the output to this many tokens

    def resize(self, n: int) -> None:
        """Keep the first n slots, or add empty ones up to n (closed-loop users send as they go)."""
        empty = Records(max(n - len(self.route), 0))
        for name, column in vars(self).items():
            setattr(self, name, np.concatenate([column[:n], getattr(empty, name)]))


# the time series: one row per output.timeseries_interval_s (Fleet.take_sample)
SAMPLE_COLUMNS = (
    "time_s",
    "interval_s",
    "arrivals",
    "completions",
    "in_system",
    "router_queue",
    "queued",
    "running",
    "kv_util",
    "engine_occupancy",
    "gpu_busy",
    *(f"replicas_{s}" for s in STATES),
    "api_started",
    "gpu_cost_so_far",
    "api_cost_so_far",
    "cost_so_far",
)
