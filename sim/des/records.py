"""The per-request records the fleet fills as requests end, and the codes they use. No SimPy:
the results layer reads these without loading the simulator."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.pricing.cost import STATES

# a replica's lifecycle states (the spans record them)
PROVISIONING, ACTIVE, SLEEPING, WAKING, DRAINING, STOPPED = (
    "provisioning",
    "active",
    "sleeping",
    "waking",
    "draining",
    "stopped",
)

ROUTE_NONE, ROUTE_GPU, ROUTE_API, ROUTE_REJECTED = -1, 0, 1, 2
ROUTE_NAMES = {ROUTE_GPU: "gpu", ROUTE_API: "api", ROUTE_REJECTED: "rejected"}
REASON_NONE, REASON_CONTEXT, REASON_NO_GPU = 0, 1, 2
REASON_NAMES = {REASON_NONE: "", REASON_CONTEXT: "exceeds_max_model_len", REASON_NO_GPU: "api_refused_and_no_gpu"}


# (column, dtype, value of an empty slot)
RECORD_COLUMNS = (
    ("route", np.int8, ROUTE_NONE),
    ("reason", np.int8, REASON_NONE),
    ("replica", np.int32, -1),
    ("start", np.float64, float("nan")),
    ("first_token", np.float64, float("nan")),
    ("finish", np.float64, float("nan")),
    ("preemptions", np.int32, 0),
    ("cached", np.int64, 0),
    ("served_output", np.int64, -1),  # >= 0: the API cut the output to this many tokens
)


class Records:
    """One slot per request; filled when the request is served or rejected. The columns are
    Python lists while the simulation writes them one slot at a time (a list's item assignment
    costs a third of a numpy array's); `arrays` hands them on as numpy arrays."""

    def __init__(self, n: int):
        for name, _, empty in RECORD_COLUMNS:
            setattr(self, name, [empty] * n)

    def __len__(self) -> int:
        return len(self.route)  # type: ignore[attr-defined]

    def resize(self, n: int) -> None:
        """Keep the first n slots, or add empty ones up to n (closed-loop users send as they go)."""
        for name, _, empty in RECORD_COLUMNS:
            column = getattr(self, name)
            if n <= len(column):
                del column[n:]
            else:
                column.extend([empty] * (n - len(column)))

    def arrays(self) -> RecordArrays:
        return RecordArrays(**{name: np.array(getattr(self, name), dtype) for name, dtype, _ in RECORD_COLUMNS})


@dataclass
class RecordArrays:
    """The records as numpy arrays, one element per request (what the results layer reads)."""

    route: np.ndarray
    reason: np.ndarray
    replica: np.ndarray
    start: np.ndarray
    first_token: np.ndarray
    finish: np.ndarray
    preemptions: np.ndarray
    cached: np.ndarray
    served_output: np.ndarray


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


@dataclass
class ApiOutcome:
    """What the pay-per-token API did over a run."""

    spend: float
    refusals: dict[str, int]
    truncated: int  # requests whose output the cap cut short
    warmups: int
    billed_s: float  # execution seconds billed (per-second billing)
    tier_name: str | None  # the usage tier reached (tiered APIs)


@dataclass
class Outcome:
    """What a simulation leaves for the results layer: plain data, no SimPy (`des.simulate`)."""

    end_s: float  # the simulated clock when the last request ended
    records: RecordArrays
    samples: list[tuple]  # the time series, SAMPLE_COLUMNS per row
    spans: list  # replica lifecycle records (sim.pricing.cost.Span)
    idle_s: dict[int, float]  # per replica uid: seconds awake without work
    gpu_possible: bool  # whether the fleet could ever run a replica
    busy_s: float  # replica-seconds with work on the engine
    occupancy_s: float  # replica-seconds weighted by the engine's occupancy
    replica_seconds: float  # replica-seconds awake (active or draining)
    max_replicas: int  # the most replicas alive at once
    replicas_started: int
    cold_start_s: float
    wake_s: float
    engine: dict[str, int]  # iterations, engine_events, engine_batches (all replicas)
    stats: dict[str, int]  # cold starts, wakes, sleeps, spot preemptions, router queue maximum
    prefix: bool  # prefix caching was on
    prefix_lookups: int = 0
    prefix_hits: int = 0
    api: ApiOutcome | None = None
    # the autoscaler's failure modes (sim.des.failures): counters, the scaling decisions
    # (time, +1/-1, a reversal) and the waits for a GPU (uid, start, end)
    failures: dict = field(default_factory=dict)
    scale_marks: list = field(default_factory=list)
    pending: list = field(default_factory=list)
