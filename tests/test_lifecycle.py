"""The replica lifecycle on its own (milliseconds each): a bare SimPy environment, a stub engine
and the hooks recorded, no fleet, router or workload."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from sim.config.schema import Config
from sim.des.lifecycle import Lifecycle
from sim.des.recorder import Recorder
from sim.des.records import ACTIVE, DRAINING, PROVISIONING, SLEEPING, STOPPED, WAKING
from sim.des.router import NOT_ROUTABLE, SLEEP_PENALTY, WAKE_PENALTY
from sim.pricing.cost import STATES

COLD, WAKE = 30.0, 5.0


class StubEngine:
    """What the lifecycle asks of a replica's engine; `held` are the requests on it."""

    def __init__(self, uid: int, on_idle):
        self.uid = uid
        self.on_idle = on_idle
        self.pool = None
        self.paused = True
        self.stopped = False
        self.held: list[str] = []
        self.waiting: list[str] = []
        self.running: dict = {}

    def resume(self) -> None:
        self.paused = False

    def pause(self) -> None:
        self.paused = True

    def evacuate(self) -> list[str]:
        out, self.held = self.held, []
        self.stopped = True
        return out

    def sync(self) -> None:
        pass

    def kv_blocks_used(self) -> int:
        return 0

    def busy_time(self, now: float) -> float:
        return now / 2  # busy half the time

    def occupancy_time(self, now: float) -> float:
        return now / 4

    def idle(self) -> None:
        """The engine ran out of work (as `Replica._next` reports it)."""
        self.on_idle(self)


def _life(cfg: Config | None = None):
    cfg = cfg or Config()
    env = simpy.Environment()
    calls: dict[str, list] = {"ready": [], "evacuated": []}
    life = Lifecycle(
        env,
        cfg,
        np.random.default_rng(0),
        Recorder(),
        {"cold_starts": 0, "wakes": 0, "sleeps": 0, "spot_preemptions": 0},
        (COLD, WAKE),
        make_engine=StubEngine,
        on_ready=lambda: calls["ready"].append(env.now),
        on_evacuated=lambda reqs: calls["evacuated"].append((env.now, reqs)),
    )
    return env, life, calls


def _sleepy(min_awake: int) -> Config:
    cfg = Config()
    cfg.fleet.sleep.enabled = True
    cfg.fleet.sleep.idle_s = 10.0
    cfg.fleet.sleep.min_awake = min_awake
    return cfg


def test_a_cold_start_ends_active_after_the_cold_start_time():
    env, life, calls = _life()
    life.launch(1, warm=False)
    node = life.nodes[0]
    assert node.state == PROVISIONING and life.loads == [NOT_ROUTABLE] and node.ready_at == COLD
    env.run(until=COLD + 1)
    assert node.state == ACTIVE and life.loads == [0] and calls["ready"] == [COLD]
    assert [(s.state, s.start, s.end) for s in life.spans] == [(PROVISIONING, 0.0, COLD)]
    assert life.stats["cold_starts"] == 1 and not node.engine.paused


def test_an_idle_replica_sleeps_after_idle_s_but_min_awake_stay_up():
    env, life, _ = _life(_sleepy(min_awake=1))
    life.launch(2, warm=True)
    for n in life.nodes:
        n.engine.idle()
    env.run(until=11)
    assert [n.state for n in life.nodes] == [SLEEPING, ACTIVE]
    assert life.loads == [SLEEP_PENALTY, 0] and life.stats["sleeps"] == 1 and life.nodes[0].engine.paused


def test_work_before_the_idle_timer_keeps_a_replica_awake():
    env, life, _ = _life(_sleepy(min_awake=0))
    life.launch(1, warm=True)
    node = life.nodes[0]
    node.engine.idle()
    node.idle_epoch += 1  # a request came (the fleet's submit) and went
    env.run(until=11)
    assert node.state == ACTIVE and life.stats["sleeps"] == 0


def test_a_woken_replica_serves_after_the_wake_time():
    env, life, calls = _life(_sleepy(min_awake=0))
    life.launch(1, warm=True)
    node = life.nodes[0]
    node.engine.idle()
    env.run(until=20)
    assert node.state == SLEEPING
    life.wake(node)
    assert node.state == WAKING and life.loads == [WAKE_PENALTY] and node.ready_at == 20 + WAKE
    env.run(until=20 + WAKE + 0.5)
    assert node.state == ACTIVE and calls["ready"] == [20 + WAKE] and life.stats["wakes"] == 1
    assert [s.state for s in life.spans] == [ACTIVE, SLEEPING, WAKING]


def test_a_busy_replica_drains_then_stops_and_its_slot_is_reused():
    env, life, _ = _life()
    life.launch(1, warm=True)
    node = life.nodes[0]
    node.out = 1  # one request on it
    env.run(until=4)
    life.drain(node)
    assert node.state == DRAINING and life.loads[0] >= NOT_ROUTABLE  # (plus its request)
    env.run(until=6)
    node.out = 0
    node.engine.idle()  # its last request ended
    assert node.state == STOPPED and node.engine.stopped and life.free_slots == [0]
    assert [(s.state, s.start, s.end) for s in life.spans] == [(ACTIVE, 0.0, 4.0), (DRAINING, 4.0, 6.0)]
    assert life.awake_seconds() == 6.0
    again = life.provision()
    assert again.slot == 0 and again.uid == 1 and life.nodes == [again] and len(life.all_nodes) == 2


def test_spot_preemption_hands_the_requests_back_and_stops_the_replica():
    cfg = Config()
    cfg.fleet.pricing.kind = "spot"
    cfg.fleet.pricing.spot_preemptions_per_hour = 3600.0  # one a second on average
    env, life, calls = _life(cfg)
    life.launch(1, warm=True)
    node = life.nodes[0]
    node.engine.held = ["r1", "r2"]
    node.out = 2
    env.run(until=60)
    assert len(calls["evacuated"]) == 1
    when, reqs = calls["evacuated"][0]
    assert reqs == ["r1", "r2"] and 0 < when < 60
    assert node.state == STOPPED and node.out == 0 and life.loads == [NOT_ROUTABLE]
    assert life.stats["spot_preemptions"] == 1 and life.spans[-1].end == when


def test_census_counts_states_and_accrues_cost_per_state():
    cfg = _sleepy(min_awake=1)
    cfg.fleet.sleep.cost_fraction = 0.25
    env, life, _ = _life(cfg)
    life.launch(2, warm=True)
    for n in life.nodes:
        n.engine.idle()
    env.run(until=3610)  # replica 0 asleep for 3600 s, replica 1 idle and awake throughout
    counts, queued, running, kv, awake, cost = life.census(kv_blocks=100)
    price = cfg.gpu.price_per_hour
    assert {s: c for s, c in zip(STATES, counts, strict=True) if c} == {"idle": 1, SLEEPING: 1}
    assert (queued, running, kv) == (0, 0, 0.0)
    assert awake == pytest.approx(10 + 3610)
    assert cost == pytest.approx(price * (10 + 3600 * 0.25 + 3610) / 3600)
    assert life.max_replicas_seen == 2
    assert life.engine_seconds() == (2 * 3610 / 2, 2 * 3610 / 4)  # over every replica started
