"""Fleet: the wiring of one run's replicas, router, autoscaler and API fallback, in one SimPy
environment.

The replicas' lifecycle (provisioning, active, sleeping/waking, draining, stopped; spot
preemption; the spans billing reads) is `sim.des.lifecycle`; the fleet builds each replica's
engine for it and answers its hooks: a replica became ready (the router queue drains into the
fleet) and a preempted replica's requests (routed again). The router sends each arrival to an
active replica (a waking one if none is active, a sleeping one, which it wakes, as a last
resort); with none it waits in the router queue until a replica is ready. The overflow policy
may send it to the pay-per-token API instead; a request the API refuses backs off and retries,
or comes back to the GPU queue. Every request ends served by a replica, served by the API, or
rejected with a reason. The autoscaler's decisions start, wake and drain replicas through the
lifecycle.

With closed-loop users (`sim.workload.closedloop`, or sessions replayed from a trace,
`sim.workload.sessions`) the arrivals are not known ahead: each request that
ends (any route) hands its user back to the loop, whose next request arrives after the user's
think time (one timeout per request).

The fleet owns the per-request records (preallocated columns, written when a request is
decided) and the time-series sampler.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import simpy

from sim.config.errors import ConfigError
from sim.config.schema import Config, batch_limits, long_prefill_threshold
from sim.des.api import REFUSE_CAP, REFUSE_LENGTH, REFUSE_TOO_LARGE, ApiBackend
from sim.des.autoscale import FleetModel, Signals, make_autoscaler
from sim.des.engine import Replica, Request
from sim.des.failures import ScaleEvents
from sim.des.lifecycle import Lifecycle, Node
from sim.des.overflow import OVERFLOW
from sim.des.predict import Predictor, cold_start_s, wake_s
from sim.des.prefix import BlockPool
from sim.des.recorder import Recorder
from sim.des.records import (
    ACTIVE,
    DRAINING,
    PROVISIONING,
    REASON_CONTEXT,
    REASON_NO_GPU,
    ROUTE_API,
    ROUTE_GPU,
    ROUTE_REJECTED,
    SLEEPING,
    STOPPED,
    WAKING,
    Records,
)
from sim.des.router import NOT_ROUTABLE, SLEEP_PENALTY, make_router
from sim.hardware.kvcache import MemoryPlan
from sim.hardware.perf import PerfModel, saturation_throughput, slo_throughput
from sim.workload.build import Workload, stream

if TYPE_CHECKING:
    from collections.abc import Callable

    from sim.workload.closedloop import Conversations


class _Timer(simpy.Timeout):
    """A timeout with one callback, scheduled at `priority` (SimPy's NORMAL, or URGENT as a
    process's start is)."""

    def __init__(
        self,
        env: simpy.Environment,
        delay: float,
        callback: Callable[[simpy.Event], None],
        priority: int = simpy.events.NORMAL,
    ):
        self.env = env
        self.callbacks = [callback]
        self._value = None
        self._delay = delay
        self._ok = True
        env.schedule(self, priority, delay)


def _prefix_caching(cfg: Config, workload: Workload, plan: MemoryPlan) -> bool:
    """Whether the replicas cache prefix blocks: only whole KV blocks are cached, so prefix ids
    finer than a block leave nothing to share."""
    prefix = (
        cfg.engine.prefix_caching and workload.hash_offsets is not None and workload.block_tokens >= plan.block_size
    )
    if prefix and workload.block_tokens % plan.block_size:
        raise ConfigError(
            "engine.block_size",
            plan.block_size,
            f"must divide the workload's prefix block of {workload.block_tokens} tokens for prefix caching",
        )
    gib = cfg.engine.kv_offload.cpu_gib
    if gib and not prefix:  # the host tier holds cached prefix blocks: without them it would hold nothing
        why = (
            "needs engine.prefix_caching=true" if not cfg.engine.prefix_caching else "needs a workload with prefix ids"
        )
        raise ConfigError(
            "engine.kv_offload.cpu_gib", gib, f"{why} (a trace with hash ids, shared prefixes or sessions); 0: off"
        )
    if gib and gib * 2**30 < workload.block_tokens * plan.kv_bytes_per_token:
        need = workload.block_tokens * plan.kv_bytes_per_token / 2**30
        raise ConfigError("engine.kv_offload.cpu_gib", gib, f"holds no prefix block (one takes {need:.3g} GiB)")
    return bool(prefix)


class Fleet:
    def __init__(
        self,
        env: simpy.Environment,
        cfg: Config,
        workload: Workload,
        perf: PerfModel,
        plan: MemoryPlan,
        users: Conversations | None = None,
        fed: bool = False,
        on_end: Callable[[int, float], None] | None = None,
        role: str = "whole",
    ):
        """`users`: closed-loop users who send the requests (`workload` is then what they have
        sent so far: nothing, but its prefix-block layout). `fed`: a pool whose requests are
        handed to it (`inject`, then `end_feed`; `sim.des.pools`, `sim.des.disagg`). `on_end(i,
        now)`: called once request i's GPU or rejection record is written (`sim.des.disagg`).
        `role`: a disaggregated pool's "prefill" or "decode" (`replica_rps`), else "whole"."""
        self.env = env
        self.role = role
        self.on_end = on_end
        self.cfg = cfg
        self.workload = workload
        self.perf = perf
        self.plan = plan
        self.users = users
        self.fed: list[tuple[float, int, int]] | None = [] if fed else None  # (arrival, prompt, output) handed in
        # one slot per request (fed: grows as requests are handed in)
        self.records = Records(1024 if fed else len(workload) if users is None else users.capacity())
        f = cfg.fleet
        self.max_seqs, self.max_tokens = batch_limits(cfg.engine, cfg.gpu)
        self.long_prefill = long_prefill_threshold(cfg.engine, plan.max_model_len)
        # client-visible time outside the engine, on every GPU-served stream (an API server's)
        self.request_overhead = cfg.engine.request_overhead_ms / 1000 if cfg.engine.usage == "api_server" else 0.0
        self.fixed = f.autoscaler.name == "fixed"
        self.gpu_possible = (f.replicas > 0) if self.fixed else (f.max_replicas > 0)
        self.cold_start_s = cold_start_s(cfg)
        self.wake_s = wake_s(cfg)
        self.rng = stream(cfg.seed, "fleet")

        self.router_queue: deque[Request] = deque()
        self._init_accounting(workload, users)
        self._init_lifecycle()
        self.prefix = _prefix_caching(cfg, workload, plan)
        self.router = make_router(f.router, self)
        self.overflow = OVERFLOW[cfg.api.overflow](cfg.api) if cfg.api.enabled else None
        self.api = ApiBackend(cfg.api, stream(cfg.seed, "api")) if cfg.api.enabled else None
        clock = workload.clock_start_s or 0.0
        self.autoscaler = make_autoscaler(f.autoscaler, f.replicas, clock, self._fleet_model())
        self._needs: frozenset[str] = self.autoscaler.needs  # the signals its decisions read
        self._observe = "latency" in self._needs
        self._seen: tuple[float, int, float, int] = (0.0, 0, 0.0, 0)  # "latency" signals (Signals)
        self.predict = Predictor(
            env, cfg, workload, perf, self.nodes, self.router_queue, self.max_tokens, self.cold_start_s, self.wake_s
        )
        self._start(users)

    def _init_accounting(self, workload: Workload, users: Conversations | None) -> None:
        """Counters and the time series' live integrals."""
        # closed loop or fed: known when all users stop, or the feed ends
        self.n_total: float = len(workload) if users is None and self.fed is None else math.inf
        self.n_closed = 0
        self._users_left = 0
        self.finished = self.env.event()
        self._arrivals_done = False
        # counters and live accounting for the time series
        self.rec = Recorder()  # the time series and its live integrals
        self._tokens_prev = 0
        self._tokens_rate = 0.0  # tokens_per_s over the last autoscaler interval
        self._sent = [0, 0, 0]  # closed loop, fed pool: requests sent so far, their prompt and output tokens
        self._cum: tuple[np.ndarray, np.ndarray] | None = None  # open workload: cumulative tokens by arrival
        self._rps: dict[tuple[int, int, float], float] = {}  # one replica's capacity by token mix (FleetModel)
        self.stats = {"cold_starts": 0, "wakes": 0, "sleeps": 0, "spot_preemptions": 0, "router_queue_max": 0}
        a = self.cfg.fleet.autoscaler
        period = getattr(a, "adjustment_interval_s", a.interval_s)  # how often it decides (Dynamo: adjusts)
        self.failures = ScaleEvents(self.cfg.output.failure_modes.reversal_intervals * period)

    def _init_lifecycle(self) -> None:
        """The replicas' lifecycle, with the fleet's hooks, and its slot lists (the same objects),
        which routing reads and updates."""
        self.life = Lifecycle(
            self.env,
            self.cfg,
            self.rng,
            self.rec,
            self.stats,
            (self.cold_start_s, self.wake_s),
            make_engine=self._engine,
            on_ready=self._release_queue,
            on_evacuated=self._evacuated,
        )
        self.nodes: list[Node] = self.life.nodes
        self.loads: list[int] = self.life.loads
        self._all_nodes: list[Node] = self.life.all_nodes  # by uid (the same list, which the lifecycle grows)

    def _start(self, users: Conversations | None) -> None:
        """The replicas at t = 0 and the fleet's processes: arrivals (or users), sampling, and
        the autoscaler when anything can change the fleet's size."""
        f, env = self.cfg.fleet, self.env
        self.life.launch(f.replicas, f.start_warm)
        if users is not None:
            self._start_users()
        elif self.fed is None:
            _Timer(env, 0.0, self._first_arrival, simpy.events.URGENT)  # when a process would start
        env.process(self.sample(self.cfg.output.timeseries_interval_s))
        if not self.fixed or f.pricing.kind == "spot" or f.pricing.burst == "spot" or not f.start_warm:
            env.process(self.autoscale())

    # ------------------------------------------------------------------ replicas (the lifecycle's hooks)

    def _engine(self, uid: int, on_idle: Callable[[Replica], None]) -> Replica:
        """A new replica's engine, paused until the lifecycle resumes it."""
        e = self.cfg.engine
        return Replica(
            self.env,
            uid,
            self.perf,
            self.plan,
            max_num_seqs=self.max_seqs,
            max_num_batched_tokens=self.max_tokens,
            chunked_prefill=e.enable_chunked_prefill,
            fast_forward=e.fast_forward,
            async_scheduling=e.async_scheduling,
            pool=self._pool() if self.prefix else None,
            hash_tokens=self.workload.block_tokens if self.prefix else 0,
            long_prefill_token_threshold=self.long_prefill,
            full_prompt_admission=e.admission == "full_prompt",
            on_done=self._done,
            on_idle=on_idle,
            paused=True,
        )

    def _pool(self) -> BlockPool:
        """A replica's prefix cache, with its host tier (engine.kv_offload) when one is set: the
        ids host memory holds (each id's KV for the whole replica), and the seconds one id takes
        to copy back (each GPU its shard, over its own PCIe link)."""
        k = self.workload.block_tokens // self.plan.block_size
        off = self.cfg.engine.kv_offload
        if not off.cpu_gib:
            return BlockPool(k)
        tokens = self.workload.block_tokens
        host_ids = int(off.cpu_gib * 2**30 // (tokens * self.plan.kv_bytes_per_token))
        reload_s = tokens * self.plan.kv_bytes_per_token_per_gpu / (off.pcie_gb_s * 1e9)
        return BlockPool(k, host_ids, reload_s)

    def _evacuated(self, requests: list[Request]) -> None:
        """A spot preemption handed back these requests: none is lost, each is routed again."""
        for req in requests:
            req.replica = -1
            self._to_gpu(req, None)
        if self.fixed:
            self._autoscale_now()  # the fixed fleet orders a replacement at once

    # ------------------------------------------------------------------ routing

    def _first_arrival(self, clock: simpy.Event) -> None:
        """The arrivals from a workload known ahead, on one clock: an event that is scheduled again
        for the next arrival each time it fires (SimPy detaches an event's callbacks as it
        processes them, so a fired event can be pushed again with new ones), and whose callback
        routes the arrival and every one due with it. No SimPy process: its resumption costs as
        much again as a timeout, and a new timeout each arrival as much again as pushing one back."""
        wl = self.workload
        self._arrivals = (wl.arrival_s.tolist(), wl.prompt_tokens.tolist(), wl.output_tokens.tolist())
        simple = self.api is None and not self.prefix  # no API, no prefix cache: the hot path
        self._tick = [self._arrive_simple if simple else self._arrive]  # the clock's callbacks
        self._i = 0
        times = self._arrivals[0]
        if not times:
            self._arrivals_done = True
        elif times[0] > self.env.now:
            clock.callbacks = self._tick
            self.env.schedule(clock, simpy.events.NORMAL, times[0] - self.env.now)
        else:
            self._tick[0](clock)

    def _next_arrival(self, clock: simpy.Event, i: int) -> bool:
        """After arrival i - 1: whether arrival i is due now; if not, the clock is set for it."""
        times = self._arrivals[0]
        if i == len(times):
            self._arrivals_done = True
            return False
        now = self.env.now
        if times[i] > now:
            self._i = i
            clock.callbacks = self._tick
            self.env.schedule(clock, simpy.events.NORMAL, times[i] - now)
            return False
        return True

    def _arrive(self, clock: simpy.Event) -> None:
        """Arrival i (its clock has fired, or it came with the one before), then those due now."""
        times, prompts, outputs = self._arrivals
        i = self._i
        while True:
            req = self._enter(i, times[i], prompts[i], outputs[i])
            if req is not None:
                self.dispatch(req)
            i += 1
            if not self._next_arrival(clock, i):
                return

    def _arrive_simple(self, clock: simpy.Event) -> None:
        """`_arrive` without an API or prefix caches, `_enter`, `_submit` and `_next_arrival`
        inlined: the hot path. The clock stands still in a callback: `now` is read once."""
        env, loads, nodes, choose, rec = self.env, self.loads, self.nodes, self.router.choose, self.rec
        times, prompts, outputs = self._arrivals
        i, n, now, max_len = self._i, len(times), env.now, self.plan.max_model_len
        while True:
            p, o = prompts[i], outputs[i]
            rec.arrived()
            if p + o > max_len:  # no replica can hold it, and there is no API
                self._reject(i, REASON_CONTEXT)
            else:
                rec.entered(now)
                req = Request(i, times[i], p, o)
                k = choose(loads, req) if loads else None
                if k is not None and loads[k] < SLEEP_PENALTY:
                    loads[k] += 1
                    node = nodes[k]
                    node.out += 1
                    if node.idle_since is not None:
                        node.idle_s += now - node.idle_since
                        node.idle_since = None
                        node.idle_epoch += 1
                    req.replica = node.uid
                    node.engine.submit(req)  # type: ignore[union-attr]
                else:
                    self._to_gpu(req, k)
            i += 1
            if i == n:
                self._arrivals_done = True
                return
            if times[i] > now:
                self._i = i
                clock.callbacks = self._tick
                env.schedule(clock, simpy.events.NORMAL, times[i] - now)
                return

    def _enter(self, i: int, t: float, p: int, o: int) -> Request | None:
        """Request i arrives: rejected at once if no replica could ever hold it and the API will
        not take it, sent to the API if only the API can serve it, else returned for routing."""
        self.rec.arrived()
        too_long = p + o > self.plan.max_model_len  # no replica can hold it; the API may serve it
        if too_long and (self.api is None or not self.overflow.serves_too_long or not self.api.eligible(o)):  # type: ignore[union-attr]
            self._reject(i, REASON_CONTEXT)
            return None
        self.rec.entered(self.env.now)
        req = Request(i, t, p, o)
        if too_long:
            self._to_api(req, 0)
            return None
        return req

    def dispatch(self, req: Request) -> None:
        """Decide GPU or API for a new request (the overflow policy, `sim.des.overflow`)."""
        k = None
        if self.api is not None and self.api.eligible(req.output):
            to_api, k = self.overflow.decide(self, req)  # type: ignore[union-attr]
            if to_api:
                self._to_api(req, 0)
                return
        self._to_gpu(req, k)

    def _to_gpu(self, req: Request, k: int | None) -> None:
        if req.prompt + req.output > self.plan.max_model_len:  # the API refused a request only it could serve
            self._reject(req.id, REASON_CONTEXT, served=False)
            return
        if not self.gpu_possible:
            self._reject(req.id, REASON_NO_GPU, served=False)
            return
        if k is None and self.loads:
            k = self.router.choose(self.loads, req)
        if k is None or self.loads[k] >= NOT_ROUTABLE:
            self.router_queue.append(req)
            self.stats["router_queue_max"] = max(self.stats["router_queue_max"], len(self.router_queue))
            self._poke()
            return
        node = self.nodes[k]
        if node.state == SLEEPING:
            self.life.wake(node)
        self._submit(node, req)

    def _submit(self, node: Node, req: Request) -> None:
        now = self.env.now
        if self.prefix and req.hashes is None:  # looked up in the replica's cache when scheduled
            req.hashes = self.blocks_of(req).tolist()  # type: ignore[union-attr]
        self.loads[node.slot] += 1
        node.out += 1
        if node.idle_since is not None:
            node.idle_s += now - node.idle_since
            node.idle_since = None
            node.idle_epoch += 1
        req.replica = node.uid
        node.engine.submit(req)  # type: ignore[union-attr]

    def _release_queue(self) -> None:
        q = self.router_queue
        while q and self.loads:
            req = q[0]
            k = self.router.choose(self.loads, req)
            if self.loads[k] >= NOT_ROUTABLE:
                return
            q.popleft()
            node = self.nodes[k]
            if node.state == SLEEPING:
                self.life.wake(node)
            self._submit(node, req)

    def blocks_of(self, req: Request) -> np.ndarray | None:
        wl = self.workload
        if wl.hash_offsets is None:
            return None
        if self.users is not None:
            return self.users.blocks(req.id)
        return wl.hash_ids[wl.hash_offsets[req.id] : wl.hash_offsets[req.id + 1]]  # type: ignore[index]

    # ------------------------------------------------------------------ API

    def _to_api(self, req: Request, attempt: int) -> None:
        api = self.api
        now = self.env.now
        wait = api.warm_wait(now)  # type: ignore[union-attr]
        if wait > 0:  # a cold endpoint: the request queues until the warm-up ends
            t = self.env.timeout(wait)
            t.callbacks.append(lambda _e, r=req, a=attempt: self._to_api(r, a))
            return
        n_out = api.served_output(req.output)  # type: ignore[union-attr]
        per_second = self.cfg.api.billing == "per_second"
        if per_second:  # the bill is the execution time, so the latency is drawn first
            ttft, per_token = api.latency(req.prompt)  # type: ignore[union-attr]
            reason = api.admit(now, req.prompt, req.output, ttft + (n_out - 1) * per_token)  # type: ignore[union-attr]
        else:
            reason = api.admit(now, req.prompt, req.output)  # type: ignore[union-attr]
        if reason is None:
            if not per_second:
                ttft, per_token = api.latency(req.prompt)  # type: ignore[union-attr]
            i = req.id
            rec = self.records
            rec.route[i] = ROUTE_API
            rec.start[i] = now
            rec.first_token[i] = now + ttft
            rec.finish[i] = now + ttft + (n_out - 1) * per_token
            if n_out != req.output:
                rec.served_output[i] = n_out
            api.running_until(rec.finish[i])  # type: ignore[union-attr]
            self.rec.api_started()
            t = self.env.timeout(rec.finish[i] - now)
            t.callbacks.append(lambda _e, r=req: self._api_done(r))
        elif reason in (REFUSE_LENGTH, REFUSE_CAP, REFUSE_TOO_LARGE) or self.cfg.api.on_limit == "gpu":
            self._to_gpu(req, None)
        else:
            t = self.env.timeout(api.retry_delay(attempt))  # type: ignore[union-attr]
            t.callbacks.append(lambda _e, r=req, a=attempt + 1: self._to_api(r, a))

    def _api_done(self, req: Request) -> None:
        self.rec.served(self.env.now, req.prompt + req.output)
        self._close()
        if self.users is not None:
            out = int(self.records.served_output[req.id])
            self._answered(req.id, out if out >= 0 else req.output)

    # ------------------------------------------------------------------ a pool, fed by a front router

    def inject(self, prompt: int, output: int, computed: int = 0) -> int:
        """A request handed to this pool now (by a front router, `sim.des.pools`; by a
        disaggregated deployment's prefill pool, `sim.des.disagg`, with the KV of `computed`
        prompt tokens already here); its id in this pool."""
        fed = self.fed
        i = len(fed)  # type: ignore[arg-type]
        fed.append((self.env.now, prompt, output))  # type: ignore[union-attr]
        sent = self._sent  # (what an autoscaler's "window" signals count)
        sent[0] += 1
        sent[1] += prompt
        sent[2] += output
        if i >= len(self.records):
            self.records.resize(2 * (i + 1))
        req = self._enter(i, self.env.now, prompt, output)
        if req is not None:
            req.computed = computed
            self.dispatch(req)
        return i

    def end_feed(self) -> None:
        """No more requests will come: the pool finishes when those it has end."""
        self._arrivals_done = True
        self.n_total = len(self.fed)  # type: ignore[arg-type]
        if self.n_closed == self.n_total and not self.finished.triggered:
            self.finished.succeed()

    # ------------------------------------------------------------------ closed loop

    def _start_users(self) -> None:
        users: Conversations = self.users  # type: ignore[assignment]
        self._users_left = users.users
        for u, t in enumerate(users.starts()):
            self.env.timeout(t).callbacks.append(lambda _e, u=u: self._send(u))

    def _send(self, u: int) -> None:
        """User u sends its next request now (or stops)."""
        now = self.env.now
        got = self.users.send(u, now)  # type: ignore[union-attr]
        if got is None:
            self._user_stopped()
            return
        i, p, o = got
        sent = self._sent
        sent[0] += 1
        sent[1] += p
        sent[2] += o
        if i >= len(self.records):
            self.records.resize(2 * (i + 1))
        req = self._enter(i, now, p, o)
        if req is not None:
            self.dispatch(req)

    def _answered(self, i: int, served: int | None, delay: float = 0.0) -> None:
        """Request i has ended (`served` output tokens; None: rejected) and its user has the
        answer `delay` later (the API server's time outside the engine): the user thinks, then
        sends again, or stops."""
        seen = self.env.now + delay
        think = self.users.answered(i, seen, served)  # type: ignore[union-attr]
        if think is None:
            self._user_stopped()
            return
        u = self.users.user_of(i)  # type: ignore[union-attr]
        self.env.timeout(delay + think).callbacks.append(lambda _e, u=u: self._send(u))

    def _user_stopped(self) -> None:
        self._users_left -= 1
        if self._users_left:
            return
        self._arrivals_done = True
        self.n_total = self.users.sent  # type: ignore[union-attr]
        if self.n_closed == self.n_total:
            self.finished.succeed()

    # ------------------------------------------------------------------ autoscaling

    def autoscale(self):
        interval = self.cfg.fleet.autoscaler.interval_s
        ticks, most = 0, self.cfg.limits.max_ticks
        while True:
            ticks += 1
            if ticks > most:
                raise ConfigError(
                    "fleet.autoscaler.interval_s",
                    interval,
                    f"{most:,} autoscaler decisions (limits.max_ticks) by {self.env.now:,.4g} s; raise the interval",
                )
            yield self.env.timeout(interval)
            # tokens_per_s is measured over whole intervals (a poke between ticks reuses it)
            self._tokens_rate = (self.rec.tokens_done - self._tokens_prev) / interval
            self._tokens_prev = self.rec.tokens_done
            self._autoscale_now()

    def load(self) -> float:
        metric = getattr(self.cfg.fleet.autoscaler, "metric", "concurrency")
        if metric == "concurrency":
            return float(sum(n.out for n in self.nodes if n.state != STOPPED) + len(self.router_queue))
        if metric in ("running", "kv"):
            live = [n.engine for n in self.nodes if n.state != STOPPED]
            for eng in live:
                eng.sync()  # type: ignore[union-attr]  # admissions at a passed cut, as in the reference mode
            if metric == "running":
                return float(sum(len(eng.running) for eng in live))  # type: ignore[union-attr]
            return sum(eng.kv_blocks_used() for eng in live) / self.plan.kv_blocks  # type: ignore[union-attr]
        return self._tokens_rate

    def _autoscale_now(self) -> None:
        f = self.cfg.fleet
        total = self.life.count(PROVISIONING, ACTIVE, SLEEPING, WAKING)
        if self.fixed:  # keep the fleet at its size (replace what spot preemption takes)
            for _ in range(max(0, f.replicas - total)):
                self.life.provision()
            return
        capacity = self.life.count(PROVISIONING, ACTIVE, WAKING)  # awake or about to be
        ready = self.life.count(ACTIVE)
        signals = self.signals() if self._needs else None
        desired = min(f.max_replicas, self.autoscaler.decide(self.env.now, self.load(), ready, capacity, signals))
        if self.router_queue and self.autoscaler.activator:
            desired = max(desired, 1)  # requests wait for a replica: never down to zero (scale from zero)
        dropped: list[Request] = []
        if desired > capacity:  # wake parked replicas first, then start new ones
            self._scale_up(desired - capacity, total)
        elif desired < total:  # shed down to desired, sleepers first; min_replicas bounds the fleet
            dropped = self._scale_down(desired, capacity, total)
        self.life.desired = desired  # what the load asks for (min_replicas may keep more, asleep)
        total = self.life.count(PROVISIONING, ACTIVE, SLEEPING, WAKING)  # after this decision
        for _ in range(max(0, f.min_replicas - total)):
            self.life.provision()
        if dropped:  # stopped without drain: each is routed again, none lost
            self._evacuated(dropped)

    def _scale_up(self, need: int, total: int) -> None:
        """`need` more replicas awake: sleepers woken first, then new ones (up to max_replicas)."""
        woken = 0
        for node in [n for n in self.nodes if n.state == SLEEPING][:need]:
            self.life.wake(node)
            woken += 1
        started = max(0, min(need - woken, self.cfg.fleet.max_replicas - total))
        for _ in range(started):
            self.life.provision()
        now = self.env.now
        warming = any(n.state == ACTIVE and n.warm_until > now for n in self.nodes)
        self.failures.scaled(now, 1, woken + started, started, warming)

    def _scale_down(self, desired: int, capacity: int, total: int) -> list[Request]:
        """Shed down to `desired`: sleepers first, then replicas starting, then the active ones
        with the fewest requests; drained, or (fleet.drain=false) stopped at once, their requests
        returned to be routed again."""
        f = self.cfg.fleet
        shed = max(0, min(total - desired, total - f.min_replicas))
        asleep = sorted((n for n in self.nodes if n.state == SLEEPING), key=lambda n: -n.uid)
        starting = sorted((n for n in self.nodes if n.state == PROVISIONING), key=lambda n: -n.uid)
        active = sorted((n for n in self.nodes if n.state == ACTIVE), key=lambda n: (n.out, -n.uid))
        victims = asleep[:shed]
        victims += (starting + active)[: min(shed - len(victims), max(capacity - desired, 0))]
        dropped: list[Request] = []
        for node in victims:
            if f.drain:
                self.life.drain(node)
            else:
                dropped += self.life.drop(node)
        self.failures.scaled(self.env.now, -1, len(victims))
        return dropped

    # ------------------------------------------------------------------ autoscaler signals

    def _fleet_model(self) -> FleetModel:
        """The figures an autoscaler may size the fleet with (`sim.des.autoscale.FleetModel`)."""
        prefill_s = self.perf.iteration_time(0, 0, [(self.max_tokens, 0)]) / self.max_tokens
        slo = self.cfg.slo
        return FleetModel(
            self.replica_rps, 1.0 / prefill_s, slo.ttft_s, slo.tpot_s, self._decode_step, self._ttft_expected, self.role
        )

    def _decode_step(self, batch: float, context: float) -> float:
        """The profile's decode step at this batch and context (Dynamo's expected ITL)."""
        return self.perf.iteration_time(max(round(batch), 1), round(context), [])

    def _ttft_expected(self, prompt: float) -> float:
        """The profile's TTFT of a prompt on an idle replica, in chunks of the token budget, with
        the API server's time (Dynamo's expected TTFT)."""
        left, context, t = max(round(prompt), 1), 0, self.request_overhead
        while left > 0:
            c = min(left, self.max_tokens)
            t += self.perf.iteration_time(0, 0, [(c, context)])
            left, context = left - c, context + c
        return t

    def replica_rps(self, prompt: float, output: float, tpot_s: float | None = None) -> float:
        """Requests/s one replica sustains at this mix within the TPOT SLO (`slo_throughput`),
        cached by the whole-token mix and the TPOT target (`tpot_s`, the SLO's by default; Dynamo's
        correction moves it). A disaggregated prefill pool's replica is sized by its
        saturated prefill throughput (its requests emit one token: no TPOT to keep), a decode
        pool's by decoding within the TPOT SLO with the prompt's KV there but nothing to
        prefill (Dynamo's planner sizes the two pools apart the same way)."""
        tpot = self.cfg.slo.tpot_s if tpot_s is None else round(tpot_s, 4)  # (0.1 ms: the cache hits)
        key = (round(prompt), round(output), tpot)
        got = self._rps.get(key)
        if got is None:
            kv = self.plan.kv_tokens
            if self.role == "prefill":
                got = saturation_throughput(self.perf, kv, self.max_seqs, self.max_tokens, key[0], 1.0)
            else:
                fill = 1.0 if self.role == "decode" else None
                got = slo_throughput(self.perf, kv, self.max_seqs, self.max_tokens, key[0], key[1], tpot, fill)
            self._rps[key] = got
        return got

    def signals(self) -> Signals:
        """The fleet now, for an autoscaler that `needs` more than its load figure: only the
        groups it names are read."""
        needs = self._needs
        arrived = self._arrived() if "window" in needs else (0, 0, 0)
        engines = self._engine_signals() if "engines" in needs else (0, 0, 0.0, 0)
        ttft = math.nan
        if "ttft" in needs:
            ttft = self._predicted_ttft(arrived[1] / arrived[0] if arrived[0] else 1.0)
        concurrency = sum(n.out for n in self.nodes if n.state != STOPPED) + len(self.router_queue)
        seen = self._seen if "latency" in needs else (0.0, 0, 0.0, 0)
        return Signals(float(concurrency), self._tokens_rate, *arrived, *engines, ttft, *seen)  # type: ignore[arg-type]

    def _arrived(self) -> tuple[int, int, int]:
        """Requests arrived by now and their prompt and output tokens (open workloads: from the
        arrival times known ahead; closed loops and fed pools: counted as requests come)."""
        if self.users is not None or self.fed is not None:
            return self._sent[0], self._sent[1], self._sent[2]
        wl = self.workload
        if self._cum is None:
            zero = np.zeros(1, dtype=np.int64)
            self._cum = (
                np.concatenate([zero, np.cumsum(wl.prompt_tokens, dtype=np.int64)]),
                np.concatenate([zero, np.cumsum(wl.output_tokens, dtype=np.int64)]),
            )
        k = int(np.searchsorted(wl.arrival_s, self.env.now, side="right"))
        return k, int(self._cum[0][k]), int(self._cum[1][k])

    def _engine_signals(self) -> tuple[int, int, float, int]:
        """(waiting requests, running sequences, KV use of the awake replicas, prompt tokens still
        to prefill), the router queue's requests counted as waiting and their prompts as backlog."""
        queued, backlog = len(self.router_queue), sum(r.prompt for r in self.router_queue)
        running = used = blocks = 0
        for n in self.nodes:
            if n.state == STOPPED:
                continue
            eng = n.engine
            view = eng.view()  # type: ignore[union-attr]  # synced, the same in both engine modes
            queued += len(eng.waiting)  # type: ignore[union-attr]
            running += len(eng.running)  # type: ignore[union-attr]
            backlog += view.backlog
            if n.state in (ACTIVE, DRAINING):
                used += eng.kv_blocks_used()  # type: ignore[union-attr]
                blocks += self.plan.kv_blocks
        return queued, running, used / blocks if blocks else 0.0, backlog

    def _predicted_ttft(self, prompt: float) -> float:
        """The TTFT a request of this prompt would get now on the best active replica (the
        router's pick), or waiting for one to start (`Predictor.ttft`)."""
        probe = Request(-1, self.env.now, max(round(prompt), 1), 1)
        active = [n for n in self.nodes if n.state == ACTIVE]
        if not active:
            return self.predict.ttft(None, probe)
        return min(self.predict.ttft(n, probe) for n in active)

    def _poke(self) -> None:
        """A request waits with no replica able to take it: decide now, as Knative's activator does
        (an autoscaler without one, KEDA's, decides at its own ticks only)."""
        if not self.fixed and self.autoscaler.activator and not self.life.count(PROVISIONING, WAKING):
            self._autoscale_now()

    # ------------------------------------------------------------------ records

    def _done(self, req: Request, now: float) -> None:
        node = self._all_nodes[req.replica]
        self.loads[node.slot] -= 1
        node.out -= 1
        i = req.id
        rec = self.records
        rec.route[i] = ROUTE_GPU
        rec.replica[i] = req.replica
        rec.start[i] = req.start
        ov = self.request_overhead
        rec.first_token[i] = req.first_token + ov
        rec.finish[i] = now + ov
        if req.preemptions:
            rec.preemptions[i] = req.preemptions
        if req.cached:
            rec.cached[i] = req.cached
        self.rec.served(now, req.prompt + req.output)
        if self._observe:  # what requests saw, for an autoscaler's correction factors
            self._saw(req, now, ov)
        self.n_closed += 1
        if self.n_closed == self.n_total:
            self.finished.succeed()
        if self.on_end is not None:
            self.on_end(i, now)
        if self.users is not None:
            if node.cache is not None:  # the KV of the answer stays cached, as the prompt's does
                node.cache.insert(self.users.answer_blocks(i, req.output))
            self._answered(i, req.output, ov)

    def _saw(self, req: Request, now: float, ov: float) -> None:
        """Add a finished request's decode time, spaced tokens and TTFT to the "latency" signals."""
        itl_sum, itl_tokens, ttft_sum, ttft_n = self._seen
        if req.output > 1:
            itl_sum += now - req.first_token
            itl_tokens += req.output - 1
        self._seen = (itl_sum, itl_tokens, ttft_sum + req.first_token + ov - req.arrival, ttft_n + 1)

    def _reject(self, i: int, reason: int, *, served: bool = True) -> None:
        """Record a rejection; `served=False` for a request already counted in the system."""
        self.records.route[i] = ROUTE_REJECTED
        self.records.reason[i] = reason
        self.records.finish[i] = self.env.now
        if not served:
            self.rec.dropped(self.env.now)
        self._close()
        if self.on_end is not None:
            self.on_end(i, self.env.now)
        if self.users is not None:
            self._answered(i, None)

    def _close(self) -> None:
        self.n_closed += 1
        if self.n_closed == self.n_total:
            self.finished.succeed()

    # ------------------------------------------------------------------ time series

    def sample(self, interval: float):
        env = self.env
        k = 0
        most = self.cfg.limits.max_samples
        while True:
            k += 1
            if k > most:  # the run goes on far longer than its arrivals: a runaway horizon
                raise ConfigError(
                    "output.timeseries_interval_s",
                    interval,
                    f"the simulation passed {env.now:,.4g} s ({most:,} time-series rows, limits.max_samples) with "
                    f"{self.n_total - self.n_closed:,} requests unfinished: iterations this slow (check the engine "
                    "and performance keys) or a fleet this small cannot finish the workload",
                )
            yield env.timeout(k * interval - env.now)
            self.take_sample()
            if (
                self._arrivals_done
                and not self.finished.triggered
                and not self.router_queue
                and all(
                    not n.engine.running and not n.engine.waiting
                    for n in self.nodes  # type: ignore[union-attr]
                )
                and not self._api_in_flight()
            ):
                # a bug, never a user error: requests went missing
                raise RuntimeError(
                    f"{self.n_total - self.n_closed} request(s) neither served nor rejected at t={env.now:.1f}"
                )

    def _api_in_flight(self) -> bool:
        return self.api is not None and self.rec.in_system > sum(n.out for n in self.nodes) + len(self.router_queue)

    def take_sample(self) -> None:
        """Close the current time-series bin at env.now (`Recorder.close_bin`)."""
        life = self.life
        counts, queued, running, kv, awake, gpu_cost = life.census(self.plan.kv_blocks)
        state = (len(self.router_queue), queued, running, kv, counts)
        costs = (gpu_cost, self.api.spend if self.api is not None else 0.0)
        busy, occupancy = life.engine_seconds()
        self.rec.close_bin(self.env.now, busy, occupancy, awake, state, costs)
