"""Disaggregated prefill/decode: one deployment whose requests prefill in one pool and decode in
another, each a fleet of its own (GPU, TP, engine, autoscaler, pricing) in one SimPy
environment, joined by a KV link.

It follows vLLM's disaggregated serving with a KV connector (the proxy in front of a prefill and
a decode instance): each arrival goes to the prefill pool as a request for one output token;
when a replica has prefilled it (the prefill pool's answer is back), the prompt's KV moves over
the link, taking KV bytes / bandwidth + the link's latency (`kv_transfer_s`; the bytes of the
prompt's tokens in the prefill side's KV dtype), one timeout per request; then the decode pool
gets the whole request with the KV of all prompt tokens but the last already there
(`computed = prompt - 1`: admission allocates the prompt's blocks, and the first iteration
recomputes the last prompt token and emits the first output token, as vLLM's decode instance
does with an external KV hit). The user's first token is the decode side's: TTFT counts from
the original arrival through the prefill, the transfer and the decode side's first iteration;
TPOT is the decode side's. A request the prefill pool rejects is not passed on, and one the
decode pool could never hold (prompt + output over its context) goes straight to the decode
pool, which rejects it, before any prefill is spent on it: every request ends once, served by the
decode pool or rejected by one of them. Each transfer has the link to itself (no contention), and
a decode replica's memory is not held while the KV is on its way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import simpy

from sim.config.schema import Config, DisaggConfig
from sim.des.fleet import Fleet
from sim.des.pools import PoolRun, close_fed, subset
from sim.des.records import ROUTE_GPU
from sim.des.simulate import outcome
from sim.hardware.kvcache import MemoryPlan, kv_bytes_per_token, kv_transfer_s
from sim.hardware.perf import PerfModel
from sim.workload.build import Workload


@dataclass
class DisaggRun:
    """What a disaggregated deployment's pools recorded: each pool's run (`ids`: the user
    requests it got, in the order it got them), and per user request its KV transfer."""

    prefill: PoolRun
    decode: PoolRun
    transfer_s: np.ndarray  # seconds on the link (NaN: never sent)
    kv_bytes: np.ndarray  # bytes moved (0: never sent)
    handoff_s: np.ndarray  # when the prefill pool's answer was back and the transfer started (NaN: never)


class Handoff:
    """The proxy between the pools: arrivals to the prefill pool, prefilled requests over the
    link, then to the decode pool (module docstring)."""

    def __init__(self, env: simpy.Environment, wl: Workload, dc: DisaggConfig, bytes_per_token: int):
        self.env = env
        self.wl = wl
        self.dc = dc
        self.bytes_per_token = bytes_per_token
        self.prompts, self.outputs = wl.prompt_tokens.tolist(), wl.output_tokens.tolist()
        n = len(wl)
        self.transfer_s = np.full(n, np.nan)
        self.kv_bytes = np.zeros(n, dtype=np.int64)
        self.handoff_s = np.full(n, np.nan)
        self.pre_users: list[int] = []  # prefill pool id -> user request
        self.dec_users: list[int] = []  # decode pool id -> user request
        self.in_flight = 0  # requests in the prefill pool or on the link
        self.arrivals_done = False
        self.prefill: Fleet | None = None
        self.decode: Fleet | None = None

    def arrive(self, u: int) -> None:
        """User request u arrives: to the prefill pool for one token, or (too long for the
        decode pool) straight to the decode pool, which rejects it."""
        p, o = self.prompts[u], self.outputs[u]
        if p + o > self.decode.plan.max_model_len:  # type: ignore[union-attr]
            self.dec_users.append(u)
            self.decode.inject(p, o)  # type: ignore[union-attr]
            return
        self.in_flight += 1
        self.pre_users.append(u)
        self.prefill.inject(p, 1)  # type: ignore[union-attr]

    def prefilled(self, i: int, now: float) -> None:
        """The prefill pool ended its request i (the `on_end` hook): served, its KV goes over
        the link once the answer is back; rejected, the user's request ends there."""
        u = self.pre_users[i]
        rec = self.prefill.records  # type: ignore[union-attr]
        if rec.route[i] != ROUTE_GPU:
            self._left()
            return
        p = self.prompts[u]
        back = rec.finish[i]  # (the API server's time outside the engine included)
        t = kv_transfer_s(p, self.bytes_per_token, self.dc.link_gb_s, self.dc.link_latency_ms)
        self.handoff_s[u] = back
        self.transfer_s[u] = t
        self.kv_bytes[u] = p * self.bytes_per_token
        self.env.timeout(back - now + t).callbacks.append(lambda _e, u=u: self._deliver(u))

    def _deliver(self, u: int) -> None:
        """The KV is on the decode side: the decode pool gets the whole request, the prompt's KV
        there but for the last token."""
        p = self.prompts[u]
        self.dec_users.append(u)
        self.decode.inject(p, self.outputs[u], computed=p - 1)  # type: ignore[union-attr]
        self._left()

    def _left(self) -> None:
        self.in_flight -= 1
        if self.arrivals_done and not self.in_flight:
            self.decode.end_feed()  # type: ignore[union-attr]

    def arrivals(self):
        """The workload's arrivals, one timeout each (SimPy process)."""
        env = self.env
        for u, t in enumerate(self.wl.arrival_s.tolist()):
            if t > env.now:
                yield env.timeout(t - env.now)
            self.arrive(u)
        self.arrivals_done = True
        self.prefill.end_feed()  # type: ignore[union-attr]
        if not self.in_flight:
            self.decode.end_feed()  # type: ignore[union-attr]


def simulate_disagg(
    cfgs: tuple[Config, Config],
    workload: Workload,
    perfs: tuple[PerfModel, PerfModel],
    plans: tuple[MemoryPlan, MemoryPlan],
    dc: DisaggConfig,
) -> DisaggRun:
    """Run the deployment's prefill and decode pools (`cfgs`, `perfs`, `plans`: prefill's, then
    decode's) on `workload` until every request has ended."""
    env = simpy.Environment()
    empty = Workload(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    pcfg, dcfg = cfgs
    proxy = Handoff(env, workload, dc, kv_bytes_per_token(pcfg.model, pcfg.engine.kv_cache_dtype))
    proxy.prefill = Fleet(env, pcfg, empty, perfs[0], plans[0], fed=True, on_end=proxy.prefilled, role="prefill")
    proxy.decode = Fleet(env, dcfg, empty, perfs[1], plans[1], fed=True, role="decode")
    env.process(proxy.arrivals())
    env.run(until=simpy.AllOf(env, [proxy.prefill.finished, proxy.decode.finished]))
    end = env.now
    runs = []
    for role, f, users in (("prefill", proxy.prefill, proxy.pre_users), ("decode", proxy.decode, proxy.dec_users)):
        records = close_fed(f, f"{role} pool")
        ids = np.asarray(users, dtype=np.int64)
        fed = f.fed  # type: ignore[union-attr]  # (arrival, prompt, output) as the pool got them
        part = replace(
            subset(workload, ids),
            arrival_s=np.array([a for a, _, _ in fed], dtype=np.float64),
            output_tokens=np.array([o for _, _, o in fed], dtype=np.int64),
        )
        runs.append(PoolRun(outcome(f, end, records), ids, part))
    return DisaggRun(runs[0], runs[1], proxy.transfer_s, proxy.kv_bytes, proxy.handoff_s)
