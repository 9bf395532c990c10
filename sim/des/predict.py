"""Quick estimates of the TTFT and TPOT a new request would get on a replica, from the replica's
state as it stands (`Replica.view`): what the SLO overflow policies decide on (`sim.des.overflow`).
Estimates, not simulations: they read the replica, they never advance it."""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

import simpy

from sim.config.schema import Config
from sim.des.records import PROVISIONING, SLEEPING, WAKING
from sim.hardware.perf import PerfModel
from sim.workload.build import Workload

if TYPE_CHECKING:
    from sim.des.engine import Replica, Request


def cold_start_s(cfg: Config) -> float:
    """A new replica's time to serve: GPU acquisition, image start, weight load, engine init."""
    from sim.config.schema import WEIGHT_BYTES

    c = cfg.fleet.cold_start
    if c.fixed_s is not None:
        return c.fixed_s
    per_gpu = cfg.model.params_b * WEIGHT_BYTES[cfg.model.weight_dtype] / cfg.engine.tensor_parallel_size  # GB
    return c.acquire_s + c.image_s + per_gpu / c.load_gbps + c.init_s


def wake_s(cfg: Config) -> float:
    """A sleeping replica's time to serve again: weights back from host memory (level 1) or
    reloaded (level 2), plus the engine's own wake-up."""
    from sim.config.schema import WEIGHT_BYTES

    s = cfg.fleet.sleep
    if s.wake_s is not None:
        return s.wake_s
    per_gpu = cfg.model.params_b * WEIGHT_BYTES[cfg.model.weight_dtype] / cfg.engine.tensor_parallel_size
    gbps = s.l1_gbps if s.level == 1 else cfg.fleet.cold_start.load_gbps
    return per_gpu / gbps + s.wake_extra_s


class Predictor:
    """The fleet's estimates. It reads the fleet's live slot list and router queue (the same
    objects the fleet updates), and the SLO thresholds of each request's class."""

    def __init__(
        self,
        env: simpy.Environment,
        cfg: Config,
        workload: Workload,
        perf: PerfModel,
        nodes: list[Any],
        router_queue: deque,
        max_tokens: int,
        cold_start: float,
        wake: float,
    ):
        self.env = env
        self.cfg = cfg
        self.workload = workload
        self.perf = perf
        self.nodes = nodes
        self.router_queue = router_queue
        self.cold_start_s = cold_start  # the fleet's (`cold_start_s`, `wake_s` below)
        self.wake_s = wake
        self.prefill_per_token = perf.iteration_time(0, 0, [(max_tokens, 0)]) / max_tokens

    def slo_of(self, req: Request) -> tuple[float, float]:
        """(TTFT, TPOT) thresholds of this request's class."""
        wl = self.workload
        ttft, tpot = self.cfg.slo.ttft_s, self.cfg.slo.tpot_s
        if wl.class_slo and wl.classes is not None:
            own = wl.class_slo.get(wl.class_names[int(wl.classes[req.id])])
            if own is not None:
                ttft = own[0] if own[0] is not None else ttft
                tpot = own[1] if own[1] is not None else tpot
        return ttft, tpot

    def _prefill_step(self, eng: Replica, view, extra_context: int = 0) -> tuple[float, int]:
        """(duration, prefill tokens) of a step that fills the token budget next to the decoders."""
        room = max(eng.max_tokens - view.n_dec, 1)
        return self.perf.iteration_time(view.n_dec, view.context + extra_context, [(room, 0)]), room

    def ttft(self, node: Any, req: Request, view=None) -> float:
        """A quick estimate of the TTFT this request would get on `node` (None: no replica can take
        it now): the wait for a replica; then the prefill queued ahead plus its own, at the rate
        of steps that share the token budget with the running decoders; plus, when the batch is
        full, the wait for the batch slots the requests ahead and this one need. `view`: the
        replica's `Replica.view()` when the caller has it already."""
        now = self.env.now
        if node is None:
            pending = [n.ready_at for n in self.nodes if n.state in (PROVISIONING, WAKING)]
            wait = (min(pending) - now) if pending else self.cold_start_s
            ahead = sum(r.prompt for r in self.router_queue)
            return max(wait, 0.0) + (ahead + req.prompt) * self.prefill_per_token
        eng: Replica = node.engine  # type: ignore[assignment]
        view = eng.view() if view is None else view
        step, room = self._prefill_step(eng, view)
        t = (view.backlog + req.prompt) / room * step
        if len(eng.running) + len(eng.waiting) >= eng.max_seqs:
            t += eng.seat_wait(len(eng.running) + len(eng.waiting) - eng.max_seqs + 1, view)
        if node.state == WAKING:
            t += max(node.ready_at - now, 0.0)
        elif node.state == SLEEPING:
            t += self.wake_s
        return t

    def tpot(self, node: Any, req: Request, view=None) -> float:
        """A quick estimate of this request's time per output token on `node`: over its output,
        the steps that clear the current prefill backlog carry a budget-filling chunk, the rest
        are decode steps with its decoders plus this request."""
        if node is None:
            return 0.0  # a replica that is starting up has no backlog yet
        eng: Replica = node.engine  # type: ignore[assignment]
        view = eng.view() if view is None else view
        steps = max(req.output - 1, 1)
        chunk_step, room = self._prefill_step(eng, view, req.prompt)
        heavy = min(steps, math.ceil(view.backlog / room))
        decode = self.perf.iteration_time(view.n_dec + 1, view.context + req.prompt, [])
        return (heavy * chunk_step + (steps - heavy) * decode) / steps
