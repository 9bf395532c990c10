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
- `schedule`: replicas per hour of the day, the predictive baseline for daily traffic.
The fleet clamps the answer to [min_replicas, max_replicas] and counts replicas still starting
up as capacity, so a cold start does not trigger more scale-up.
"""

from __future__ import annotations

import math
from collections import deque

from sim.config.names import AUTOSCALER_METRICS
from sim.config.schema import (
    AutoscalerConfig,
    FixedAutoscaler,
    RayAutoscaler,
    ScheduleAutoscaler,
    TargetAutoscaler,
)

METRICS = AUTOSCALER_METRICS


class Fixed:
    def __init__(self, cfg: FixedAutoscaler, replicas: int, clock_start_s: float = 0.0):
        self.replicas = replicas

    def decide(self, now: float, load: float, ready: int, capacity: int) -> int:
        return self.replicas


class Target:
    def __init__(self, cfg: TargetAutoscaler, replicas: int, clock_start_s: float = 0.0):
        self.cfg = cfg
        self._loads: deque[tuple[float, float]] = deque()
        self._wanted: deque[tuple[float, int]] = deque()  # recent desired counts (scale-down delay)
        self._panic_until = -math.inf
        # last time the load was non-zero: a fleet that starts with replicas keeps them for the
        # grace period; one that starts at zero has nothing to keep
        self._last_load = 0.0 if replicas > 0 else -math.inf

    def decide(self, now: float, load: float, ready: int, capacity: int) -> int:
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
    def __init__(self, cfg: RayAutoscaler, replicas: int, clock_start_s: float = 0.0):
        self.cfg = cfg
        self._direction = 0
        self._since = 0.0

    def decide(self, now: float, load: float, ready: int, capacity: int) -> int:
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
    def __init__(self, cfg: ScheduleAutoscaler, replicas: int, clock_start_s: float = 0.0):
        self.hours = list(cfg.schedule or [replicas] * 24)
        self.clock = clock_start_s

    def decide(self, now: float, load: float, ready: int, capacity: int) -> int:
        return self.hours[int(((self.clock + now) / 3600.0) % 24)]


AUTOSCALERS: dict[str, type] = {"fixed": Fixed, "target": Target, "ray": Ray, "schedule": Schedule}


def make_autoscaler(cfg: AutoscalerConfig, replicas: int, clock_start_s: float = 0.0):
    return AUTOSCALERS[cfg.name](cfg, replicas, clock_start_s)
