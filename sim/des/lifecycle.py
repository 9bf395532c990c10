"""Lifecycle: the fleet's replicas from start to stop, and what they cost while alive.

A replica (a `Node` around an engine `Replica`) moves through
    provisioning -> active <-> sleeping/waking -> draining -> stopped
and every move closes a record (`spans`) that billing (`sim.pricing.cost`) and the time series
read. Provisioning takes the cold start and waking the wake time (one timeout each); an active
replica with no work sleeps after `fleet.sleep.idle_s`; a draining one stops when its last
request ends; a spot replica may be taken back at any time, its requests handed back.

The lifecycle owns the replica slots and the router's view of them (`loads`: requests on a slot
plus a penalty for its state, `sim.des.router`), and knows nothing of requests beyond counting
them. It calls back into the fleet through three hooks given at construction: `make_engine`
(build a replica's engine), `on_ready` (a replica became active: requests waiting for one may
go) and `on_evacuated` (a preempted replica's requests, to route again).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import simpy

from sim.config.schema import Config
from sim.des.records import ACTIVE, DRAINING, PROVISIONING, SLEEPING, STOPPED, WAKING
from sim.des.router import NOT_ROUTABLE, SLEEP_PENALTY, WAKE_PENALTY
from sim.hardware.perf import SlowedPerf
from sim.pricing.cost import STATES, Span, state_weight

if TYPE_CHECKING:
    import numpy as np

    from sim.des.engine import Replica, Request
    from sim.des.prefix import BlockPool
    from sim.des.recorder import Recorder

PENALTY = {ACTIVE: 0, WAKING: WAKE_PENALTY, SLEEPING: SLEEP_PENALTY}


class Node:
    """One replica's lifecycle around its engine."""

    __slots__ = (
        "cache",
        "engine",
        "gpus",
        "idle_epoch",
        "idle_s",
        "idle_since",
        "out",
        "ready_at",
        "since",
        "slot",
        "spot",
        "state",
        "uid",
        "wait_from",
        "warm_until",
    )

    def __init__(self, uid: int, slot: int, gpus: int, spot: bool, now: float):
        self.uid = uid
        self.slot = slot
        self.gpus = gpus
        self.spot = spot
        self.state = PROVISIONING
        self.since = now
        self.engine: Replica | None = None
        self.out = 0  # requests waiting or running on it
        self.idle_since: float | None = None
        self.idle_s = 0.0
        self.idle_epoch = 0
        self.ready_at = now  # when provisioning or waking ends
        self.cache: BlockPool | None = None  # its replica's prefix cache
        self.wait_from = now  # when it began to wait for a GPU (fleet.pending_gpu); billed from `since`
        self.warm_until = -1.0  # its first iterations run slower until then (fleet.warmup)


EngineFactory = Callable[[int, Callable[["Replica"], None]], "Replica"]


class Lifecycle:
    """The replicas of one run: their slots, states, spans and state-time costs."""

    def __init__(
        self,
        env: simpy.Environment,
        cfg: Config,
        rng: np.random.Generator,
        rec: Recorder,
        stats: dict[str, int],
        times: tuple[float, float],
        make_engine: EngineFactory,
        on_ready: Callable[[], None],
        on_evacuated: Callable[[list[Request]], None],
    ):
        """`rng`: the fleet's generator (spot preemption times); `rec`: the time series, told of
        each closed span; `stats`: the run's counters, where the lifecycle counts cold starts,
        wakes, sleeps and spot preemptions; `times`: (cold start, wake) in seconds;
        `make_engine(uid, on_idle)`: a new replica's engine, created paused."""
        self.env = env
        self.cfg = cfg
        self.rng = rng
        self.rec = rec
        self.stats = stats
        self.cold_start_s, self.wake_s = times
        self.make_engine = make_engine
        self.on_ready = on_ready
        self.on_evacuated = on_evacuated
        self.tp = cfg.engine.tensor_parallel_size
        self.nodes: list[Node] = []  # by slot (slots of stopped replicas are reused)
        self.all_nodes: list[Node] = []  # by uid
        self.loads: list[int] = []  # per slot: requests on it + a penalty for its state
        self.free_slots: list[int] = []
        self.spans: list[Span] = []
        self.max_replicas_seen = 0
        self.pending: list[tuple[int, float, float]] = []  # (uid, start, end) of each wait for a GPU
        self.dropped = 0  # requests in flight on replicas stopped without drain (fleet.drain=false)
        # the autoscaler's last answer for the load: an idle replica stays awake while the
        # replicas awake or starting are not more than it (None: a fixed fleet, no autoscaler)
        self.desired: int | None = None if cfg.fleet.autoscaler.name == "fixed" else cfg.fleet.replicas

    # ------------------------------------------------------------------ the fleet's calls

    def launch(self, n: int, warm: bool) -> None:
        """The replicas at t = 0: active at once when `warm`, else each after a cold start."""
        for _ in range(n):
            node = self.new_node()
            if warm:
                self._set_state(node, ACTIVE)
                node.engine.resume()  # type: ignore[union-attr]
            else:
                self._provision_timer(node)

    def count(self, *states: str) -> int:
        return sum(1 for n in self.nodes if n.state in states)

    def provision(self) -> Node:
        """A new replica, serving after its cold start."""
        node = self.new_node()
        self._provision_timer(node)
        return node

    def wake(self, node: Node) -> None:
        """A sleeping replica wakes: active after the wake time."""
        self._set_state(node, WAKING)
        self.stats["wakes"] += 1
        node.ready_at = self.env.now + self.wake_s
        t = self.env.timeout(self.wake_s)
        t.callbacks.append(lambda _e, n=node: self._woken(n))

    def drain(self, node: Node) -> None:
        """Stop the replica once its requests end (at once if it has none, or is not serving)."""
        if node.state in (PROVISIONING, SLEEPING) or (node.state == ACTIVE and node.out == 0):
            self._stop(node)
        else:
            self._set_state(node, DRAINING)

    def drop(self, node: Node) -> list[Request]:
        """Stop the replica now, without drain: its requests, handed back to be routed again."""
        if node.state != ACTIVE or node.out == 0:
            self.drain(node)
            return []
        requests = node.engine.evacuate()  # type: ignore[union-attr]
        self.dropped += len(requests)
        node.out = 0
        self._stop(node)
        return requests

    def stop_all(self) -> None:
        """End of the simulation: every replica still alive stops (billing ends now)."""
        for node in self.nodes:
            if node.state != STOPPED:
                self._set_state(node, STOPPED)

    # ------------------------------------------------------------------ states

    def new_node(self) -> Node:
        f = self.cfg.fleet
        spot = f.pricing.kind == "spot"
        if f.pricing.kind == "reserved" and f.pricing.burst == "spot":  # beyond the reservation: spot
            held = sum(n.gpus for n in self.nodes if n.state != STOPPED and not n.spot)
            spot = held + self.tp > f.pricing.reserved_gpus
        slot = self.free_slots.pop() if self.free_slots else len(self.nodes)
        node = Node(len(self.all_nodes), slot, self.tp, spot, self.env.now)
        node.engine = self.make_engine(node.uid, lambda _eng, n=node: self._idle(n))
        node.cache = node.engine.pool
        if slot == len(self.nodes):
            self.nodes.append(node)
            self.loads.append(NOT_ROUTABLE)
        else:
            self.nodes[slot] = node
            self.loads[slot] = NOT_ROUTABLE
        self.all_nodes.append(node)
        if spot and f.pricing.spot_preemptions_per_hour > 0:
            t = self.env.timeout(self.rng.exponential(3600.0 / f.pricing.spot_preemptions_per_hour))
            t.callbacks.append(lambda _e, n=node: self._spot_preempt(n))
        alive = self.count(PROVISIONING, ACTIVE, SLEEPING, WAKING, DRAINING)
        self.max_replicas_seen = max(self.max_replicas_seen, alive)
        return node

    def _set_state(self, node: Node, state: str) -> None:
        now = self.env.now
        if node.since > node.wait_from:  # it waited for a GPU: until now (cancelled) or its cold start
            self.pending.append((node.uid, node.wait_from, min(now, node.since)))
            node.wait_from = node.since = min(now, node.since)
        if now > node.since:
            self.spans.append(Span(node.uid, node.gpus, node.spot, node.state, node.since, now))
            awake = now - node.since if node.state in (ACTIVE, DRAINING) else 0.0
            self.rec.span_closed(self._accrued(node, node.state, now - node.since), awake)
        if node.state == ACTIVE and node.idle_since is not None:
            node.idle_s += now - node.idle_since
            node.idle_since = None
        node.state = state
        node.since = node.wait_from = now
        if state == ACTIVE and node.out == 0:
            node.idle_since = now
        self.loads[node.slot] = node.out + PENALTY.get(state, NOT_ROUTABLE)

    def _accrued(self, node: Node, state: str, seconds: float) -> float:
        p = self.cfg.fleet.pricing
        rate = self.cfg.gpu.price_per_hour * (p.spot_fraction if node.spot else 1.0)
        return seconds / 3600.0 * rate * node.gpus * state_weight(state, self.cfg.fleet.sleep.cost_fraction)

    def _provision_timer(self, node: Node) -> None:
        """The cold start, after a wait for a GPU (`pending_wait`), during which nothing bills:
        the replica's first span starts when the wait ends."""
        self.stats["cold_starts"] += 1
        wait = self.pending_wait()
        if wait > 0:
            node.since = self.env.now + wait
        node.ready_at = self.env.now + wait + self.cold_start_s
        t = self.env.timeout(wait + self.cold_start_s)
        t.callbacks.append(lambda _e, n=node: self._ready(n))

    def pending_wait(self) -> float:
        """A wait for GPU capacity, from the fleet's generator (fleet.pending_gpu; 0: none)."""
        p = self.cfg.fleet.pending_gpu
        if p.dist == "exponential":
            return float(self.rng.exponential(p.mean_s))
        if p.dist == "lognormal":
            return float(self.rng.lognormal(math.log(p.mean_s) - p.sigma**2 / 2, p.sigma))
        return 0.0

    def _ready(self, node: Node) -> None:
        if node.state == PROVISIONING:  # (else cancelled while starting)
            self._activate(node, cold=True)

    def _activate(self, node: Node, cold: bool = False) -> None:
        """A started or woken replica serves: the router's queue drains into the fleet; with
        nothing to do it is idle from now (and may sleep). After a cold start its first
        iterations run `fleet.warmup.factor` times slower for `duration_s`."""
        w = self.cfg.fleet.warmup
        if cold and w.factor != 1.0 and w.duration_s > 0:
            eng = node.engine
            base = eng.perf  # type: ignore[union-attr]
            eng.set_perf(SlowedPerf(base, w.factor))  # type: ignore[union-attr]
            node.warm_until = self.env.now + w.duration_s
            t = self.env.timeout(w.duration_s)
            t.callbacks.append(lambda _e, n=node, b=base: self._warmed(n, b))
        self._set_state(node, ACTIVE)
        node.engine.resume()  # type: ignore[union-attr]
        self.on_ready()
        if node.out == 0:
            self._idle(node)

    def _idle(self, node: Node) -> None:
        if node.state == DRAINING:
            self._stop(node)
            return
        if node.state != ACTIVE:
            return
        if node.idle_since is None:
            node.idle_since = self.env.now
        s = self.cfg.fleet.sleep
        if s.enabled:
            epoch = node.idle_epoch
            t = self.env.timeout(s.idle_s)
            t.callbacks.append(lambda _e, n=node, ep=epoch: self._maybe_sleep(n, ep))

    def _maybe_sleep(self, node: Node, epoch: int) -> None:
        if node.state != ACTIVE or node.out or node.idle_epoch != epoch:
            return
        if self.count(ACTIVE, WAKING) <= self.cfg.fleet.sleep.min_awake:
            return
        if self.desired is not None and self.count(PROVISIONING, ACTIVE, WAKING) - 1 < self.desired:
            return  # the autoscaler wants it awake (it would wake it at its next decision)
        node.engine.pause()  # type: ignore[union-attr]
        if node.cache is not None:
            node.cache.clear()
        self._set_state(node, SLEEPING)
        self.stats["sleeps"] += 1

    def _warmed(self, node: Node, base) -> None:
        if node.state != STOPPED:
            node.engine.set_perf(base)  # type: ignore[union-attr]

    def _woken(self, node: Node) -> None:
        if node.state == WAKING:
            self._activate(node)

    def _stop(self, node: Node) -> None:
        self._set_state(node, STOPPED)
        node.engine.stopped = True  # type: ignore[union-attr]
        self.loads[node.slot] = NOT_ROUTABLE
        self.free_slots.append(node.slot)

    def _spot_preempt(self, node: Node) -> None:
        """The provider takes the GPU back: the replica's requests go back to the fleet."""
        if node.state == STOPPED:
            return
        self.stats["spot_preemptions"] += 1
        requests = node.engine.evacuate()  # type: ignore[union-attr]
        node.out = 0
        self._stop(node)
        self.on_evacuated(requests)

    # ------------------------------------------------------------------ accounting

    def census(self, kv_blocks: int) -> tuple[list[int], int, int, float, float, float]:
        """The replicas alive now, in one pass over the slots: counts by state (`STATES`; an
        active replica with nothing to do counts as idle), requests queued and running on them,
        the KV use of the awake ones (of `kv_blocks` each), replica-seconds awake so far
        (as `awake_seconds`) and the GPU cost so far (closed spans plus the open ones' accrual).
        Engines synced first. The open spans are summed afresh in slot order: a running total
        (closed + awake count x now - the sum of their starts) would round differently."""
        now = self.env.now
        for n in self.nodes:
            if n.state != STOPPED:
                n.engine.sync()  # type: ignore[union-attr]
        counts = dict.fromkeys(STATES, 0)
        used = blocks = queued = running = 0
        awake = cost = 0  # summed in slot order, as awake_seconds and gpu_cost_so_far do
        for n in self.nodes:
            if n.state == STOPPED:
                continue
            state = "idle" if n.state == ACTIVE and n.out == 0 else n.state
            counts[state] += 1
            eng = n.engine
            queued += len(eng.waiting)  # type: ignore[union-attr]
            running += len(eng.running)  # type: ignore[union-attr]
            cost += self._accrued(n, n.state, now - n.since if n.since <= now else 0.0)
            if n.state in (ACTIVE, DRAINING):
                awake += now - n.since
                used += eng.kv_blocks_used()  # type: ignore[union-attr]
                blocks += kv_blocks
        kv = used / blocks if blocks else 0.0
        awake_s, cost_so_far = self.rec.awake_closed + awake, self.rec.gpu_cost_closed + cost
        return [counts[s] for s in STATES], queued, running, kv, awake_s, cost_so_far

    def engine_seconds(self) -> tuple[float, float]:
        """(busy, occupancy): seconds every replica so far spent running iterations, and the
        integral of its occupancy (`Replica.busy_time`, `Replica.occupancy_time`), in one pass.
        Summed over all replicas in start order each time: a running total kept apart for the
        stopped ones would add the same terms in another order, and change the sums' last bits."""
        now = self.env.now
        busy = occupancy = 0
        for n in self.all_nodes:
            eng = n.engine
            busy += eng.busy_time(now)  # type: ignore[union-attr]
            occupancy += eng.occupancy_time(now)  # type: ignore[union-attr]
        return busy, occupancy

    def awake_seconds(self) -> float:
        """Replica-seconds spent able to run iterations (active or draining)."""
        now = self.env.now
        return self.rec.awake_closed + sum(now - n.since for n in self.nodes if n.state in (ACTIVE, DRAINING))
