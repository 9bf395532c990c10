"""`simulate`: one scenario's requests through its fleet, in one SimPy environment.

The only entry into the simulation for the layers above: a workload (or closed-loop users, who
send as answers come back) goes in; the fleet comes out holding its records (one slot per
request), time-series samples, replica spans and counters, with its clock at the end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import simpy

from sim.config.schema import Config
from sim.des.fleet import Fleet
from sim.des.records import ROUTE_NONE
from sim.hardware.kvcache import MemoryPlan
from sim.hardware.perf import PerfModel
from sim.workload.build import Workload

if TYPE_CHECKING:
    from sim.workload.closedloop import ClosedLoop


def simulate(
    cfg: Config, workload: Workload, perf: PerfModel, plan: MemoryPlan, users: ClosedLoop | None = None
) -> tuple[Fleet, float]:
    """Run the fleet until every request has ended; the fleet and the simulated end time."""
    env = simpy.Environment()
    fleet = Fleet(env, cfg, workload, perf, plan, users=users)
    env.run(until=fleet.finished)
    fleet.take_sample()
    end = env.now
    fleet.stop_all()
    if users is not None:
        fleet.records.resize(len(users.workload()))
    lost = int((fleet.records.route == ROUTE_NONE).sum())
    if lost:
        raise RuntimeError(f"{lost} request(s) ended neither served nor rejected")
    return fleet, end
