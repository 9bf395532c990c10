"""Autoscalers: how many replicas the fleet wants, decided every `interval_s` from its load.

Each policy is a small class with `decide(now, load, ready, capacity) -> desired`, looked up by
name in `AUTOSCALERS`, configured by its own dataclass (sim.config.schema.AUTOSCALER_CONFIGS) and
YAML file (conf/fleet/autoscaler/NAME.yaml, chosen with `fleet/autoscaler=NAME`):
- `fixed`: the configured size (the fleet replaces replicas it loses);
- `target`: Knative's KPA. desired = ceil(load / target) on a stable-window average; when the
  short panic-window average reaches `panic_threshold` x target x ready replicas it scales on
  the panic window and never down until the stable window has passed; scale-up and scale-down
  rates are bounded, a lower count must hold for `scale_down_delay_s`, and a fleet may go to
  zero after `scale_to_zero_grace_s` without load;
- `ray`: Ray Serve's, desired = ceil(ongoing requests / target), acted on once the same
  direction has held for `upscale_delay_s` / `downscale_delay_s`;
- `schedule`: replicas per hour of the day, the predictive baseline for daily traffic;
- `dynamo`: NVIDIA Dynamo's planner. `throughput` mode forecasts the next adjustment interval's
  request rate and token mix and asks for ceil(rate / one replica's capacity under the TPOT SLO);
  `load` mode steps one replica up or down from the interval's mean KV-cache use and waiting
  requests against thresholds;
- `keda`: KEDA on the router's signals, as llm-d deploys it: the HPA's desired = ceil(signal /
  target) with its tolerance and scale-down stabilisation window; KEDA's activation threshold,
  polling interval and cooldown for scale from and to zero.
The fleet clamps the answer to [min_replicas, max_replicas] and counts replicas still starting
up as capacity, so a cold start does not trigger more scale-up. Scaling up wakes sleeping
replicas before it starts new ones, whichever autoscaler asked.

Policies that read more than the one load figure declare what they read in `needs` ("window":
arrivals and their tokens so far; "engines": the engines' queues, running sequences, KV use and
prefill backlog; "ttft": a predicted TTFT), and the fleet then passes a `Signals` snapshot built
for them; `capacity_model` gives the fleet's static figures (`FleetModel`). The others get None.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sim.config.names import AUTOSCALER_METRICS
from sim.config.schema import (
    AutoscalerConfig,
    DynamoAutoscaler,
    FixedAutoscaler,
    KedaAutoscaler,
    RayAutoscaler,
    ScheduleAutoscaler,
    TargetAutoscaler,
)

METRICS = AUTOSCALER_METRICS
EPS = 1e-9  # clock slack when a period's end is compared with the autoscaler's tick


@dataclass(frozen=True, slots=True)
class Signals:
    """The fleet at one decision, read-only; only the groups the policy `needs` are filled (the
    others stay 0 / NaN). Counts and tokens of arrivals are cumulative since t = 0, so a policy
    takes differences over its own period, whatever the ticks between."""

    concurrency: float = 0.0  # requests in the system on GPUs: queued at the router or on a replica
    tokens_per_s: float = 0.0  # prompt + output tokens served per second over the last interval
    arrivals: int = 0  # "window": requests arrived so far (rejected ones included)
    prompt_tokens: int = 0  # "window": their prompt tokens
    output_tokens: int = 0  # "window": their output tokens
    queued: int = 0  # "engines": waiting at the router and in the engines' waiting queues
    running: int = 0  # "engines": sequences in the engines' batches
    kv: float = 0.0  # "engines": KV-cache use of the awake replicas, 0-1
    prefill_backlog: int = 0  # "engines": prompt tokens still to prefill (router queue included)
    ttft_s: float = math.nan  # "ttft": the TTFT a request of the mean prompt would get now
    # "latency": what requests finished so far saw (cumulative): decode seconds and the tokens
    # they spaced (their mean is the token-weighted ITL), and the sum and count of TTFTs
    itl_s_sum: float = 0.0
    itl_tokens: int = 0
    ttft_s_sum: float = 0.0
    ttft_n: int = 0


@dataclass(frozen=True)
class FleetModel:
    """What the fleet knows ahead (its "profile"): one replica's requests/s at a (prompt, output)
    mix under a TPOT target (the SLO's by default), its prefill tokens/s, the TTFT SLO, and for
    Dynamo's correction factors the expected decode step at a batch and context and the
    expected TTFT of a prompt; `role`: a disaggregated pool's "prefill" or "decode", else "whole"."""

    replica_rps: Callable[..., float]
    prefill_tokens_per_s: float
    ttft_slo_s: float
    tpot_slo_s: float = math.inf
    decode_step_s: Callable[[float, float], float] | None = None
    ttft_expected_s: Callable[[float], float] | None = None
    role: str = "whole"


class Fixed:
    needs: frozenset[str] = frozenset()
    activator = True  # a request waiting at the router starts a replica at once (Knative's activator)

    def __init__(
        self, cfg: FixedAutoscaler, replicas: int, clock_start_s: float = 0.0, model: FleetModel | None = None
    ):
        self.replicas = replicas

    def decide(self, now: float, load: float, ready: int, capacity: int, signals: Signals | None = None) -> int:
        return self.replicas


class Target:
    needs: frozenset[str] = frozenset()
    activator = True

    def __init__(
        self, cfg: TargetAutoscaler, replicas: int, clock_start_s: float = 0.0, model: FleetModel | None = None
    ):
        self.cfg = cfg
        self._loads: deque[tuple[float, float]] = deque()
        self._wanted: deque[tuple[float, int]] = deque()  # recent desired counts (scale-down delay)
        self._panic_until = -math.inf
        # last time the load was non-zero: a fleet that starts with replicas keeps them for the
        # grace period; one that starts at zero has nothing to keep
        self._last_load = 0.0 if replicas > 0 else -math.inf

    def decide(self, now: float, load: float, ready: int, capacity: int, signals: Signals | None = None) -> int:
        c = self.cfg
        loads = self._loads
        loads.append((now, load))
        while loads and loads[0][0] <= now - c.stable_window_s:
            loads.popleft()
        stable = sum(v for _, v in loads) / len(loads)
        recent = [v for t, v in loads if t > now - c.panic_window_s] or [load]
        panic_load = sum(recent) / len(recent)
        if load > 0:
            self._last_load = now
        want_stable = math.ceil(stable / c.target)
        want_panic = math.ceil(panic_load / c.target)
        if panic_load >= c.panic_threshold * c.target * max(ready, 1) and want_panic > ready:
            self._panic_until = now + c.stable_window_s
        if now < self._panic_until:
            desired = max(want_panic, capacity)  # panic: scale on the short window, never down
        else:
            desired = want_stable
        # rates: at most max_scale_up_rate x, at least current / max_scale_down_rate
        base = max(capacity, 1)
        desired = min(desired, math.ceil(base * c.max_scale_up_rate))
        desired = max(desired, math.floor(capacity / c.max_scale_down_rate))
        # a lower count must hold for the scale-down delay
        self._wanted.append((now, desired))
        while len(self._wanted) > 1 and self._wanted[0][0] <= now - c.scale_down_delay_s:
            self._wanted.popleft()
        if desired < capacity:
            desired = min(capacity, max(d for _, d in self._wanted))
        if desired == 0 and now - self._last_load < c.scale_to_zero_grace_s:
            desired = 1
        return desired


class Ray:
    needs: frozenset[str] = frozenset()
    activator = True

    def __init__(self, cfg: RayAutoscaler, replicas: int, clock_start_s: float = 0.0, model: FleetModel | None = None):
        self.cfg = cfg
        self._direction = 0
        self._since = 0.0

    def decide(self, now: float, load: float, ready: int, capacity: int, signals: Signals | None = None) -> int:
        c = self.cfg
        raw = math.ceil(load / c.target)
        direction = (raw > capacity) - (raw < capacity)
        if direction != self._direction:
            self._direction, self._since = direction, now
        if direction > 0 and now - self._since >= c.upscale_delay_s:
            return raw
        if direction < 0 and now - self._since >= c.downscale_delay_s:
            return raw
        return capacity


class Schedule:
    needs: frozenset[str] = frozenset()
    activator = True

    def __init__(
        self, cfg: ScheduleAutoscaler, replicas: int, clock_start_s: float = 0.0, model: FleetModel | None = None
    ):
        self.hours = list(cfg.schedule or [replicas] * 24)
        self.clock = clock_start_s

    def decide(self, now: float, load: float, ready: int, capacity: int, signals: Signals | None = None) -> int:
        return self.hours[int(((self.clock + now) / 3600.0) % 24)]


def predict_next(history: deque[float], how: str) -> float:
    """The next value of a series sampled once per adjustment interval: the last value
    (`constant`, Dynamo's default), the mean of the window (`moving_average`), or a least-squares
    line through the window carried one step on (`linear`), never below zero."""
    if not history:
        return 0.0
    k = len(history)
    if how == "constant" or k == 1:
        return history[-1]
    if how == "moving_average":
        return sum(history) / k
    mx, my = (k - 1) / 2, sum(history) / k
    sxx = sum((x - mx) ** 2 for x in range(k))
    slope = sum((x - mx) * (y - my) for x, y in enumerate(history)) / sxx
    return max(0.0, my + slope * (k - mx))


class Dynamo:
    """NVIDIA Dynamo's planner on one pool, deciding every `adjustment_interval_s` and holding
    its answer between. On a disaggregated deployment each pool has its own, and the fleet's
    capacity model counts only that pool's work (`Fleet.replica_rps`): prefill and decode are
    scaled separately, as Dynamo's planner does."""

    activator = True

    def __init__(
        self, cfg: DynamoAutoscaler, replicas: int, clock_start_s: float = 0.0, model: FleetModel | None = None
    ):
        self.cfg = cfg
        self.model = model
        needs = {"window", "latency"} if cfg.correction else {"window"}
        self.needs = frozenset(needs if cfg.mode == "throughput" else {"engines"})
        self._seen = (0.0, 0, 0.0, 0)  # latency signals at the last adjustment
        # Dynamo's correction factors as last observed (kept through an interval with nothing to
        # observe), and every one observed: TTFT (prefill), ITL (decode)
        self._factors = (1.0, 1.0)
        self.observed: dict[str, list[float]] = {"ttft": [], "itl": []}
        self._desired = replicas
        self._next = cfg.adjustment_interval_s
        self._last = (0.0, 0, 0, 0)  # (time, arrivals, prompt tokens, output tokens) at the last adjustment
        self._rates: deque[float] = deque(maxlen=cfg.predictor_window)
        self._prompts: deque[float] = deque(maxlen=cfg.predictor_window)
        self._outputs: deque[float] = deque(maxlen=cfg.predictor_window)
        self._kv: list[float] = []  # load mode: samples since the last adjustment
        self._waiting: list[float] = []

    def decide(self, now: float, load: float, ready: int, capacity: int, signals: Signals | None = None) -> int:
        s = signals or Signals()
        if self.cfg.mode == "load":
            self._kv.append(s.kv)
            self._waiting.append(s.queued / max(capacity, 1))
        if now < self._next - EPS:
            return self._desired
        while self._next <= now + EPS:
            self._next += self.cfg.adjustment_interval_s
        if self.cfg.mode == "throughput":
            self._desired = self._throughput(now, s, ready)
        else:
            self._desired = self._load(ready, capacity)
        return self._desired

    def _throughput(self, now: float, s: Signals, ready: int) -> int:
        """Observe the interval's rate and mean lengths, forecast the next, and size the pool."""
        t0, a0, p0, o0 = self._last
        span = now - t0
        n = s.arrivals - a0
        if now > t0:
            self._rates.append(n / (now - t0))
        if n:
            self._prompts.append((s.prompt_tokens - p0) / n)
            self._outputs.append((s.output_tokens - o0) / n)
        self._last = (now, s.arrivals, s.prompt_tokens, s.output_tokens)
        how = self.cfg.predictor
        rate = predict_next(self._rates, how)
        if rate <= 0 or not self._prompts or self.model is None:
            return 1  # Dynamo keeps at least one worker
        prompt = max(predict_next(self._prompts, how), 1.0)
        output = max(predict_next(self._outputs, how), 1.0)
        m = self.model
        pre, dec = self._corrections(s, span, ready, prompt, output) if self.cfg.correction else (1.0, 1.0)
        if m.role == "prefill":  # Dynamo: the prefill load scaled by min(1, correction)
            return max(1, math.ceil(rate * min(1.0, pre) / m.replica_rps(prompt, output) - EPS))
        rps = m.replica_rps(prompt, output, m.tpot_slo_s / dec) if dec != 1.0 else m.replica_rps(prompt, output)
        return max(1, math.ceil(rate / rps - EPS))

    def _corrections(self, s: Signals, span: float, ready: int, prompt: float, output: float) -> tuple[float, float]:
        """Dynamo's correction factors over the interval just ended: observed over expected TTFT
        (expected: the profile's for the mean prompt) and ITL (expected: the profile's decode
        step at the batch the observed decode rate and ITL imply, Little's law, and Dynamo's
        context isl + osl / 2). A factor with nothing to observe in the interval keeps its last
        value (1.0 before any)."""
        i0, k0, t0, n0 = self._seen
        self._seen = (s.itl_s_sum, s.itl_tokens, s.ttft_s_sum, s.ttft_n)
        m = self.model
        pre, dec = self._factors
        if s.ttft_n > n0 and m.ttft_expected_s is not None:
            pre = (s.ttft_s_sum - t0) / (s.ttft_n - n0) / m.ttft_expected_s(prompt)
            self.observed["ttft"].append(pre)
        if s.itl_tokens > k0 and m.decode_step_s is not None and span > 0 and ready > 0:
            itl = (s.itl_s_sum - i0) / (s.itl_tokens - k0)
            batch = max((s.itl_tokens - k0) / span / ready * itl, 1.0)
            dec = itl / m.decode_step_s(batch, batch * (prompt + output / 2))
            self.observed["itl"].append(dec)
        self._factors = (pre, dec)
        return pre, dec

    def _load(self, ready: int, capacity: int) -> int:
        """One replica up when the interval's mean KV use or waiting requests per replica pass
        the high thresholds, one down when both are under the low ones; no change while a
        replica is still starting (Dynamo's planner waits for an adjustment to finish)."""
        c = self.cfg
        kv = sum(self._kv) / len(self._kv) if self._kv else 0.0
        waiting = sum(self._waiting) / len(self._waiting) if self._waiting else 0.0
        self._kv, self._waiting = [], []
        if capacity > ready:
            return capacity
        if kv > c.kv_high or waiting > c.queue_high:
            return capacity + 1
        if kv < c.kv_low and waiting < c.queue_low:
            return max(1, capacity - 1)
        return max(1, capacity)


class Keda:
    """KEDA with the HPA it creates, on one of llm-d's router signals, and optionally a second
    trigger on running sequences per replica (llm-d pairs queued and running targets). The HPA
    runs every `interval_s`: each trigger proposes ceil(value / target) (`ttft`, a fleet-wide
    ratio: ceil(replicas x value / target)), left alone within `tolerance`, and the largest wins;
    scale-up at once, scale-down to the highest proposal of the stabilisation window. KEDA polls
    every `polling_interval_s`: from zero it activates one replica when a trigger passes
    `activation_threshold`, and it scales to zero after `cooldown_period_s` without activity."""

    activator = False  # nothing starts a replica between polls: requests wait at the router

    def __init__(self, cfg: KedaAutoscaler, replicas: int, clock_start_s: float = 0.0, model: FleetModel | None = None):
        self.cfg = cfg
        self.model = model
        needs = {"window", "ttft"} if cfg.signal == "ttft" else {"engines"}
        self.needs = frozenset(needs | ({"engines"} if cfg.running_target is not None else set()))
        self._next_poll = 0.0
        self._last_active = 0.0 if replicas > 0 else -math.inf
        self._recs: deque[tuple[float, int]] = deque()  # recent proposals (scale-down window)

    def value(self, s: Signals) -> float:
        """The scaler's metric: waiting requests, seconds of queued prefill, or TTFT / SLO."""
        sig = self.cfg.signal
        if sig == "queue":
            return float(s.queued)
        if sig == "backlog_s":
            rate = self.cfg.prefill_tokens_per_s or (self.model.prefill_tokens_per_s if self.model else math.inf)
            return s.prefill_backlog / rate
        slo = self.model.ttft_slo_s if self.model else math.inf
        return 0.0 if math.isnan(s.ttft_s) else s.ttft_s / slo

    def decide(self, now: float, load: float, ready: int, capacity: int, signals: Signals | None = None) -> int:
        c = self.cfg
        s = signals or Signals()
        m = self.value(s)
        running = float(s.running) if c.running_target is not None else 0.0
        active = max(m, running) > c.activation_threshold
        poll = now >= self._next_poll - EPS
        if poll:
            while self._next_poll <= now + EPS:
                self._next_poll += c.polling_interval_s
            if active:
                self._last_active = now
        if capacity == 0:  # KEDA activates the workload; the HPA takes it from one replica
            return 1 if poll and active else 0
        if poll and now - self._last_active >= c.cooldown_period_s:
            self._recs.clear()
            return 0
        raw = self._propose(m, c.target, capacity, fleet_wide=c.signal == "ttft")
        if c.running_target is not None:
            raw = max(raw, self._propose(running, c.running_target, capacity))
        return self._stabilised(now, max(raw, 1), capacity)

    def _propose(self, value: float, target: float, capacity: int, fleet_wide: bool = False) -> int:
        """The HPA's count for one trigger: an average value per replica (or a fleet-wide ratio)."""
        ratio = value / target if fleet_wide else value / (target * capacity)
        if abs(ratio - 1) <= self.cfg.tolerance:
            return capacity
        return math.ceil((capacity * ratio if fleet_wide else value / target) - EPS)

    def _stabilised(self, now: float, raw: int, capacity: int) -> int:
        """Up at once, by at most the HPA's default scale-up policies (double, or four more,
        whichever is more); down only to the highest proposal of the stabilisation window."""
        recs = self._recs
        recs.append((now, raw))
        while recs and recs[0][0] < now - self.cfg.stabilization_window_s - EPS:
            recs.popleft()
        if raw >= capacity:
            return min(raw, max(2 * capacity, capacity + 4))
        return min(capacity, max(r for _, r in recs))


AUTOSCALERS: dict[str, type] = {
    "fixed": Fixed,
    "target": Target,
    "ray": Ray,
    "schedule": Schedule,
    "dynamo": Dynamo,
    "keda": Keda,
}


def make_autoscaler(cfg: AutoscalerConfig, replicas: int, clock_start_s: float = 0.0, model: FleetModel | None = None):
    return AUTOSCALERS[cfg.name](cfg, replicas, clock_start_s, model)
