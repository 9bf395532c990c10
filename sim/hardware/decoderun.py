"""Closed-form runs of decode-only iterations: the engine's hot path.

While a replica's batch does not change, each iteration's context grows by the batch size, so
the roofline's memory and compute terms are lines in the step index and a run's total time and
its inverse have closed forms (`LinearDecodeRun`). `sim.hardware.perf` and
`sim.hardware.speculative` build them.
"""

from __future__ import annotations

import math
from typing import Protocol

Chunks = list[tuple[int, int]]  # (prefill tokens this iteration, tokens already in the KV cache)


class DecodeRun(Protocol):
    """Consecutive decode-only iterations of a fixed batch."""

    def time(self, n: int) -> float:
        """Total duration of the first n iterations."""
        ...

    def steps_within(self, elapsed: float) -> int:
        """Number of iterations that have completed `elapsed` seconds after the run started."""
        ...


class LinearDecodeRun:
    """t_k = c0 + max(am + bm k, ac + bc k): closed-form sums and their inverse."""

    __slots__ = ("_a1", "_a2", "_b1", "_b2", "_c0", "_k", "_t_k")

    def __init__(self, c0: float, am: float, bm: float, ac: float, bc: float):
        self._c0 = c0
        d0, d1 = am - ac, bm - bc  # memory minus compute at step k: d0 + d1 k
        k_switch: float = math.inf  # one regime throughout unless the lines cross
        # (float literals below: a float compared with a float is the interpreter's fast path)
        if d1 > 0.0 and d0 < 0.0:  # compute-bound first, memory-bound from the first k with d >= 0
            crossing = -d0 / d1
            if crossing < 1e15:
                k_switch = math.ceil(crossing)
        elif d1 < 0.0 and d0 >= 0.0:  # memory-bound first, compute-bound once d < 0
            crossing = d0 / -d1
            if crossing < 1e15:
                k_switch = math.floor(crossing) + 1
        first_mem = d0 >= 0.0
        if first_mem:
            self._a1, self._b1, self._a2, self._b2 = am, bm, ac, bc
        else:
            self._a1, self._b1, self._a2, self._b2 = ac, bc, am, bm
        self._k = k_switch
        self._t_k = self._sum1(k_switch) if k_switch != math.inf else math.inf

    def _sum1(self, n: float) -> float:
        return n * (self._c0 + self._a1) + self._b1 * n * (n - 1) / 2

    def time(self, n: int) -> float:
        if n <= self._k:  # (_sum1, inline: the hot path)
            return n * (self._c0 + self._a1) + self._b1 * n * (n - 1) / 2
        k = self._k
        m = n - k
        return self._t_k + m * (self._c0 + self._a2) + self._b2 * m * (n - 1 + k) / 2

    def steps_within(self, elapsed: float) -> int:
        if elapsed <= 0.0:
            return 0
        if elapsed < self._t_k:
            m = _solve(self._c0 + self._a1 - self._b1 / 2, self._b1 / 2, elapsed)
        else:
            k = self._k
            # second regime: sum_{j<m} (c0 + a2 + b2 (k + j)) = elapsed - T_k
            lin = self._c0 + self._a2 + self._b2 * k - self._b2 / 2
            m = k + _solve(lin, self._b2 / 2, elapsed - self._t_k)
        n = max(0, int(m))
        while self.time(n + 1) <= elapsed:
            n += 1
        while n > 0 and self.time(n) > elapsed:
            n -= 1
        return n


def _solve(lin: float, quad: float, y: float) -> float:
    """Positive root of quad m^2 + lin m = y (numerically stable form)."""
    if quad == 0.0:
        return y / lin
    return 2 * y / (lin + math.sqrt(lin * lin + 4 * quad * y))
