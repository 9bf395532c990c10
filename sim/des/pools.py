"""Mixed pools: one deployment served by pools of different GPU types (a reserved H100 base and
an autoscaled L40S burst pool, say), each a fleet of its own (GPU, engine, autoscaler, pricing)
in one SimPy environment, behind one front router.

The front router sends each arrival to the pool where it would wait least: the requests a pool
holds (at its replicas and in its router queue), plus this one, over the rate its ready replicas
complete them (replicas x one replica's saturated throughput at the workload's token mix,
`saturation_throughput`); a pool with replicas starting adds the cold start still to come, and
one with none (an autoscaled pool at zero) a whole cold start, so a burst pool takes requests
once the others' backlog would keep them waiting longer than it takes to start, and its own
autoscaler then sees them. A faster pool drains its backlog sooner, so it gets the larger share,
in proportion to its capacity when all are busy. Ties go to the pool declared first. The choice
reads the pools' state and draws nothing: the same seed, the same routing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import simpy

from sim.config.errors import ConfigError
from sim.config.schema import Config, batch_limits
from sim.des.fleet import Fleet
from sim.des.records import ACTIVE, PROVISIONING, ROUTE_NONE, STOPPED, WAKING, Outcome
from sim.des.simulate import outcome
from sim.hardware.kvcache import MemoryPlan
from sim.hardware.perf import PerfModel, saturation_throughput
from sim.workload.build import Workload


@dataclass
class PoolRun:
    """One pool's part of a mixed-pool run: what it recorded, and which requests it served
    (`ids`: their positions in the deployment's workload, in the order the pool got them)."""

    outcome: Outcome
    ids: np.ndarray
    workload: Workload  # the requests it got, as a workload of their own


def replica_rate(cfg: Config, perf: PerfModel, plan: MemoryPlan, wl: Workload) -> float:
    """Requests per second one replica of a pool completes, saturated by the workload's mix."""
    prompt = float(wl.prompt_tokens.mean()) if len(wl) else 1.0
    output = float(wl.output_tokens.mean()) if len(wl) else 1.0
    return saturation_throughput(perf, plan.kv_tokens, *batch_limits(cfg.engine, cfg.gpu), prompt, output)


class FrontRouter:
    """The pool where a new request would wait least (module docstring)."""

    def __init__(self, fleets: list[Fleet], rates: list[float]):
        self.fleets = fleets
        self.rates = rates
        self.sent = [0] * len(fleets)

    def wait(self, j: int) -> float:
        f, rate = self.fleets[j], self.rates[j]
        if not f.gpu_possible or rate <= 0:
            return math.inf
        held = sum(n.out for n in f.nodes if n.state != STOPPED) + len(f.router_queue) + 1
        ready = f.life.count(ACTIVE)
        if ready:
            return held / (ready * rate)
        starting = f.life.count(PROVISIONING, WAKING)
        return f.cold_start_s + held / (max(starting, 1) * rate)

    def choose(self) -> int:
        waits = [self.wait(j) for j in range(len(self.fleets))]
        j = int(np.argmin(waits))  # the first of equals
        self.sent[j] += 1
        return j


def simulate_pools(
    cfgs: list[Config], workload: Workload, perfs: list[PerfModel], plans: list[MemoryPlan]
) -> tuple[list[PoolRun], list[int]]:
    """Run the deployment's pools behind the front router until every request has ended; each
    pool's records and requests, and the requests each pool was sent."""
    env = simpy.Environment()
    empty = Workload(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    fleets = [Fleet(env, c, empty, perf, plan, fed=True) for c, perf, plan in zip(cfgs, perfs, plans, strict=True)]
    rates = [replica_rate(c, perf, plan, workload) for c, perf, plan in zip(cfgs, perfs, plans, strict=True)]
    front = FrontRouter(fleets, rates)
    pool_of = np.full(len(workload), -1, dtype=np.int64)
    env.process(_arrivals(env, workload, fleets, front, pool_of))
    env.run(until=simpy.AllOf(env, [f.finished for f in fleets]))
    end = env.now
    runs = []
    for j, f in enumerate(fleets):
        records = close_fed(f, f"pool {j}")
        ids = np.flatnonzero(pool_of == j)
        runs.append(PoolRun(outcome(f, end, records), ids, subset(workload, ids)))
    return runs, front.sent


def _arrivals(env: simpy.Environment, wl: Workload, fleets: list[Fleet], front: FrontRouter, pool_of: np.ndarray):
    times, prompts, outputs = wl.arrival_s.tolist(), wl.prompt_tokens.tolist(), wl.output_tokens.tolist()
    for i, t in enumerate(times):
        if t > env.now:
            yield env.timeout(t - env.now)
        j = front.choose()
        pool_of[i] = j
        fleets[j].inject(prompts[i], outputs[i])
    for f in fleets:
        f.end_feed()


def close_fed(f: Fleet, label: str):
    """End a fed pool's run: its last sample, its replicas stopped, its records cut to the
    requests it was handed (every one must have ended served or rejected)."""
    f.take_sample()
    f.life.stop_all()
    f.records.resize(len(f.fed))  # type: ignore[arg-type]
    records = f.records.arrays()
    if int((records.route == ROUTE_NONE).sum()):
        raise RuntimeError(f"{label}: request(s) ended neither served nor rejected")
    return records


def subset(wl: Workload, ids: np.ndarray) -> Workload:
    """The requests `ids` of a workload, as a workload of their own."""
    return Workload(
        arrival_s=wl.arrival_s[ids],
        prompt_tokens=wl.prompt_tokens[ids],
        output_tokens=wl.output_tokens[ids],
        classes=None if wl.classes is None else wl.classes[ids],
        class_names=wl.class_names,
        class_slo=wl.class_slo,
        clock_start_s=wl.clock_start_s,
        start_weekday=wl.start_weekday,
        span_s=wl.span_s,
    )


def check_pools(cfgs: list[Config], names: list[str]) -> None:
    """What pools of one deployment must agree on: the model (they serve the same requests)."""
    first = cfgs[0]
    for c, name in zip(cfgs, names, strict=True):
        key = f"platform.deployments.{name}"
        if c.model.name != first.model.name:
            raise ConfigError(
                f"{key}: model", c.model.name, f"a pool serves its deployment's model ({first.model.name})"
            )
