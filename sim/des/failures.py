"""The autoscaler's failure modes as they happen (docs/metrics.md, "Failure modes"): scaling
decisions that reverse the one before within a window (oscillation), the cold starts such
reversals cause, and scale-ups decided while a replica was still warming up after its cold
start (its slow first iterations inflate the load the autoscaler sees). The fleet tells
`ScaleEvents` of each decision that changed its size; the lifecycle counts the rest (requests
dropped by a scale-down without drain, waits for a GPU). Plain Python: no SimPy."""

from __future__ import annotations

import math

EPS = 1e-9


class ScaleEvents:
    """Counters over one run's scaling decisions, and a mark per decision for the fleet plot."""

    def __init__(self, window_s: float):
        """`window_s`: a change of direction within this many seconds of the last change reverses it."""
        self.window_s = window_s
        self.reversals = 0
        self.reversal_cold_starts = 0
        self.scaleups_during_warmup = 0
        self.marks: list[tuple[float, int, bool]] = []  # (time, +1 up / -1 down, a reversal)
        self._last = (0, -math.inf)  # (direction, time) of the last change

    def scaled(self, now: float, direction: int, changed: int, started: int = 0, warming: bool = False) -> None:
        """A decision moved `changed` replicas in `direction` (+1 up, -1 down), `started` of them
        new (cold starts); `warming`: some replica was in its warm-up when it was decided."""
        if changed <= 0:
            return
        last, when = self._last
        reversal = last == -direction and now - when <= self.window_s + EPS
        if reversal:
            self.reversals += 1
            if direction > 0:
                self.reversal_cold_starts += started
        if direction > 0 and warming:
            self.scaleups_during_warmup += 1
        self._last = (direction, now)
        self.marks.append((now, direction, reversal))
