"""`simulate`: one scenario's requests through its fleet, in one SimPy environment.

The only entry into the simulation for the layers above: a workload (or closed-loop users, who
send as answers come back) goes in; the fleet comes out holding its records (one slot per
request), time-series samples, replica spans and counters, with its clock at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import simpy

from sim.config.schema import Config
from sim.des.fleet import Fleet
from sim.des.records import ROUTE_NONE, ApiOutcome, Outcome, RecordArrays
from sim.hardware.kvcache import MemoryPlan
from sim.hardware.perf import PerfModel
from sim.workload.build import Workload

if TYPE_CHECKING:
    from sim.workload.closedloop import Conversations


def simulate(
    cfg: Config,
    workload: Workload,
    perf: PerfModel,
    plan: MemoryPlan,
    users: Conversations | None = None,
    progress: Callable[[float], None] | None = None,
    every_s: float = 60.0,
) -> Outcome:
    """Run the fleet until every request has ended; what it recorded. `progress`, when given, is
    called with the clock every `every_s` simulated seconds (a progress bar); it only reads the
    clock, so what the fleet records is the same with or without it."""
    env = simpy.Environment()
    fleet = Fleet(env, cfg, workload, perf, plan, users=users)
    if progress is not None:
        env.process(_ticks(env, fleet.finished, progress, every_s))
    env.run(until=fleet.finished)
    fleet.take_sample()
    end = env.now
    fleet.life.stop_all()
    if users is not None:
        fleet.records.resize(users.sent)  # the requests the users sent
    records = fleet.records.arrays()
    lost = int((records.route == ROUTE_NONE).sum())
    if lost:
        raise RuntimeError(f"{lost} request(s) ended neither served nor rejected")
    return outcome(fleet, end, records)


def _ticks(env: simpy.Environment, finished: simpy.Event, progress: Callable[[float], None], every_s: float):
    while not finished.triggered:
        progress(env.now)
        yield env.timeout(every_s)


def outcome(fleet: Fleet, end: float, records: RecordArrays) -> Outcome:
    """The fleet's records and counters as plain data."""
    life = fleet.life
    nodes = life.all_nodes
    busy, occupancy = life.engine_seconds()
    caches = [n.cache for n in nodes if n.cache is not None]
    api = fleet.api
    engine = {
        "iterations": sum(n.engine.iterations for n in nodes),
        "engine_events": sum(n.engine.timers for n in nodes),
        "engine_batches": sum(n.engine.segments for n in nodes),
    }
    if any(c.host_cap for c in caches):  # engine.kv_offload: prefix blocks reloaded from host memory
        engine["kv_offload_reloaded_blocks"] = sum(c.reloads * c.k for c in caches)
        engine["kv_offload_reload_s"] = sum(c.reloads * c.reload_s for c in caches)
    return Outcome(
        end_s=end,
        records=records,
        samples=fleet.rec.samples,
        spans=life.spans,
        idle_s={n.uid: n.idle_s for n in nodes},
        gpu_possible=fleet.gpu_possible,
        busy_s=busy,
        occupancy_s=occupancy,
        replica_seconds=life.awake_seconds(),
        max_replicas=life.max_replicas_seen,
        replicas_started=len(nodes),
        cold_start_s=fleet.cold_start_s,
        wake_s=fleet.wake_s,
        engine=engine,
        stats=dict(fleet.stats),
        prefix=bool(fleet.prefix),
        prefix_lookups=sum(c.lookups for c in caches),
        prefix_hits=sum(c.hits for c in caches),
        api=None
        if api is None
        else ApiOutcome(api.spend, dict(api.refusals), api.truncated, api.warmups, api.billed_s, api.tier_name),
        failures={
            "autoscale_reversals": fleet.failures.reversals,
            "reversal_cold_starts": fleet.failures.reversal_cold_starts,
            "scaleups_during_warmup": fleet.failures.scaleups_during_warmup,
            "dropped_on_scale_down": life.dropped,
            **_corrections(fleet.autoscaler),
        },
        scale_marks=list(fleet.failures.marks),
        pending=list(life.pending),
    )


def _corrections(autoscaler) -> dict:
    """Dynamo's correction factors as observed over the run (observed over expected ITL, and
    TTFT on a prefill pool; capacity estimates that cold starts' slow first iterations can
    pollute), where it used them."""
    out = {}
    observed = getattr(autoscaler, "observed", {})
    role = autoscaler.model.role if getattr(autoscaler, "model", None) is not None else "whole"
    for kind in ("ttft", "itl") if role == "prefill" else ("itl",):
        got = observed.get(kind)
        if got:
            out[f"{kind}_correction_mean"] = sum(got) / len(got)
            out[f"{kind}_correction_max"] = max(got)
    return out
