"""Fleet: arrivals, the router and the replicas wired into one SimPy environment.

The fleet owns the per-request records (preallocated NumPy columns, written once when a request
ends) and the time series sampler. It is the seam where autoscaling, replica lifecycle and the
API backend plug in.
"""

from __future__ import annotations

import numpy as np
import simpy

from sim.config import Config
from sim.engine import Replica, Request
from sim.kvcache import MemoryPlan
from sim.perf import PerfModel
from sim.router import make_router
from sim.workload import Workload

ROUTE_NONE, ROUTE_GPU, ROUTE_API, ROUTE_REJECTED = -1, 0, 1, 2
ROUTE_NAMES = {ROUTE_GPU: "gpu", ROUTE_API: "api", ROUTE_REJECTED: "rejected"}
REASON_NONE, REASON_CONTEXT = 0, 1
REASON_NAMES = {REASON_NONE: "", REASON_CONTEXT: "exceeds_max_model_len"}


class Records:
    """One slot per request; filled when the request completes or is rejected."""

    def __init__(self, n: int):
        self.route = np.full(n, ROUTE_NONE, np.int8)
        self.reason = np.zeros(n, np.int8)
        self.replica = np.full(n, -1, np.int32)
        self.start = np.full(n, np.nan)
        self.first_token = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.preemptions = np.zeros(n, np.int32)
        self.cached = np.zeros(n, np.int64)


class Fleet:
    def __init__(self, env: simpy.Environment, cfg: Config, workload: Workload, perf: PerfModel, plan: MemoryPlan):
        self.env = env
        self.cfg = cfg
        self.workload = workload
        self.plan = plan
        self.records = Records(len(workload))
        e = cfg.engine
        self.replicas = [
            Replica(
                env,
                i,
                perf,
                plan,
                max_num_seqs=e.max_num_seqs,
                max_num_batched_tokens=e.max_num_batched_tokens,
                chunked_prefill=e.enable_chunked_prefill,
                fast_forward=e.fast_forward,
                on_done=self._done,
            )
            for i in range(cfg.fleet.replicas)
        ]
        self.router = make_router(cfg.fleet.router)
        self.loads = [0] * len(self.replicas)  # requests waiting or running, per replica
        self.n_total = len(workload)
        self.n_closed = 0
        self.finished = env.event()
        self._arrivals_done = False
        # live accounting for the time series
        self._in_system = 0
        self._area = 0.0  # integral of requests in system since the last sample
        self._last = 0.0
        self._arrivals = 0
        self._completions = 0
        self._busy_prev = 0.0
        self._occ_prev = 0.0
        self.samples: list[tuple] = []
        self._bin_start = 0.0
        env.process(self.arrive())
        env.process(self.sample(cfg.output.timeseries_interval_s))

    # ------------------------------------------------------------------ processes

    def arrive(self):
        env = self.env
        wl = self.workload
        prompts = wl.prompt_tokens.tolist()
        outputs = wl.output_tokens.tolist()
        max_len = self.plan.max_model_len
        replicas = self.replicas
        loads = self.loads
        choose = self.router.choose
        for i, t in enumerate(wl.arrival_s.tolist()):
            if t > env.now:
                yield env.timeout(t - env.now)
            self._arrivals += 1
            p, o = prompts[i], outputs[i]
            if p + o > max_len:
                self._reject(i, REASON_CONTEXT)
                continue
            self._account(1)
            req = Request(i, t, p, o)
            k = choose(loads, req)
            loads[k] += 1
            req.replica = k
            replicas[k].submit(req)
        self._arrivals_done = True

    def sample(self, interval: float):
        env = self.env
        k = 0
        while True:
            k += 1
            yield env.timeout(k * interval - env.now)
            self.take_sample()
            if (
                self._arrivals_done
                and not self.finished.triggered
                and all(not r.running and not r.waiting for r in self.replicas)
            ):  # a bug, never a user error: requests went missing
                raise RuntimeError(
                    f"{self.n_total - self.n_closed} request(s) neither served nor rejected at t={env.now:.1f}"
                )

    # ------------------------------------------------------------------ records

    def _account(self, delta: int) -> None:
        now = self.env.now
        self._area += self._in_system * (now - self._last)
        self._last = now
        self._in_system += delta

    def _done(self, req: Request, now: float) -> None:
        k = req.replica
        self.loads[k] -= 1
        i = req.id
        rec = self.records
        rec.route[i] = ROUTE_GPU
        rec.replica[i] = k
        rec.start[i] = req.start
        rec.first_token[i] = req.first_token
        rec.finish[i] = now
        if req.preemptions:
            rec.preemptions[i] = req.preemptions
        if req.cached:
            rec.cached[i] = req.cached
        self._area += self._in_system * (now - self._last)  # live time-series accounting
        self._last = now
        self._in_system -= 1
        self._completions += 1
        self.n_closed += 1
        if self.n_closed == self.n_total:
            self.finished.succeed()

    def _reject(self, i: int, reason: int) -> None:
        self.records.route[i] = ROUTE_REJECTED
        self.records.reason[i] = reason
        self.records.finish[i] = self.env.now
        self._close()

    def _close(self) -> None:
        self.n_closed += 1
        if self.n_closed == self.n_total:
            self.finished.succeed()

    # ------------------------------------------------------------------ time series

    def busy_seconds(self) -> float:
        now = self.env.now
        return sum(rep.busy_time(now) for rep in self.replicas)

    def occupancy_seconds(self) -> float:
        now = self.env.now
        return sum(rep.occupancy_time(now) for rep in self.replicas)

    def take_sample(self) -> None:
        """Close the current time-series bin at env.now."""
        now = self.env.now
        for rep in self.replicas:
            rep.sync()
        self._account(0)
        span = now - self._bin_start
        if span <= 0:
            return
        busy = self.busy_seconds()
        occ = self.occupancy_seconds()
        n_rep = len(self.replicas)
        used = sum(rep.kv_blocks_used() for rep in self.replicas)
        self.samples.append(
            (
                self._bin_start,
                span,
                self._arrivals,
                self._completions,
                self._area / span,
                sum(len(r.waiting) for r in self.replicas),
                sum(len(r.running) for r in self.replicas),
                used / (self.plan.kv_blocks * n_rep),
                (occ - self._occ_prev) / (span * n_rep),
                (busy - self._busy_prev) / (span * n_rep),
                n_rep,
            )
        )
        self._busy_prev = busy
        self._occ_prev = occ
        self._arrivals = self._completions = 0
        self._area = 0.0
        self._bin_start = now


SAMPLE_COLUMNS = (
    "time_s",
    "interval_s",
    "arrivals",
    "completions",
    "in_system",
    "queued",
    "running",
    "kv_util",
    "gpu_utilization",
    "gpu_busy",
    "replicas_active",
)
