"""Speculative decoding as a performance model: what one engine iteration costs when a drafter
proposes k tokens per sequence and the target verifies them in one pass.

The engine is unchanged: it still emits one token per decoding sequence per iteration. With
speculation on, such an iteration stands for 1/E of a target step, where a target step emits
E tokens per sequence in expectation (Leviathan et al. 2023, eq. 1; the acceptances are
independent with probability a, so the accepted prefix is a truncated geometric and the target
adds one token of its own):

    E = (1 - a^(k+1)) / (1 - a)

A target step costs the target's verify pass over k + 1 query tokens per sequence (weights read
once, each sequence's KV read once, k + 1 times the matmul FLOPs and attention pairs) plus the
drafter's k passes of one token per sequence: a draft model's own roofline on the same GPUs, or
the target's MTP layers (`mtp_layers / layers` of a target decode pass each). A decode-only
iteration costs T_step / E, so a decode run keeps its closed form (the coefficients of two
`LinearDecodeRun`s, summed) and fast-forward stays exact. An iteration with prefill chunks is
charged the mixed target step minus the (E - 1) / E of a decode-only step its decoders' other
tokens are charged in the iterations after it, so the time of a real mixed step is conserved.
The engine's KV grows one token per sequence per iteration: E per target step, right in
expectation (the per-request spread of accepted tokens is not drawn; docs/model.md).
"""

from __future__ import annotations

from typing import Protocol

from sim.config.schema import ModelConfig
from sim.hardware.decoderun import Chunks, LinearDecodeRun


class PassModel(Protocol):
    """What speculation needs of a roofline (`sim.hardware.perf.Roofline`): its forward passes
    with q query tokens per sequence, and the engine's overheads outside them."""

    def step_overhead(self, seqs: int) -> float: ...

    def pass_terms(self, n_decode: int, q: int, context: float, chunks: Chunks) -> tuple[float, float, float]: ...

    def pass_run(self, n_decode: int, q: int, context: float) -> tuple[float, float, float, float, float]: ...


def tokens_per_step(acceptance: float, k: int) -> float:
    """Expected tokens one target step emits per sequence: the accepted prefix of k drafts, each
    accepted independently with probability `acceptance`, plus the target's own token."""
    a = acceptance
    if a == 0.0:
        return 1.0
    return (1.0 - a ** (k + 1)) / (1.0 - a)


class SpeculativePerf:
    """A `PerfModel` whose decode iterations are 1/E of a speculative target step."""

    def __init__(self, target: PassModel, k: int, acceptance: float, drafter: PassModel, draft_fraction: float):
        self.target = target
        self.k = k
        self.tokens_per_step = tokens_per_step(acceptance, k)
        self._drafter = drafter
        self._frac = draft_fraction  # share of a drafter pass one draft pass costs (MTP: layers)

    def _pass(self, perf: PassModel, n_decode: int, q: int, context: float, chunks: Chunks) -> float:
        fixed, mem, comp = perf.pass_terms(n_decode, q, context, chunks)
        return fixed + (mem if mem >= comp else comp)

    def draft_time(self, n_decode: int, context: int, chunks: Chunks) -> float:
        """The drafter's k passes of one token per sequence (at the mean context over the k
        passes); the first one also runs the prefill chunks, so the drafter has their KV."""
        if not n_decode and not chunks:
            return 0.0
        ctx = context + n_decode * (self.k - 1) / 2
        per = self._pass(self._drafter, n_decode, 1, ctx, []) if n_decode else 0.0
        first = self._pass(self._drafter, n_decode, 1, ctx, chunks) if chunks else per
        return self._frac * (first + (self.k - 1) * per)

    def verify_time(self, n_decode: int, context: int, chunks: Chunks) -> float:
        """The target's pass over k + 1 tokens per decoding sequence plus the chunks, with the
        engine's per-iteration overheads."""
        t = self.target
        return t.step_overhead(n_decode + len(chunks)) + self._pass(t, n_decode, self.k + 1, context, chunks)

    def step_time(self, n_decode: int, context: int, chunks: Chunks) -> float:
        """One target step: verify pass plus draft passes."""
        return self.verify_time(n_decode, context, chunks) + self.draft_time(n_decode, context, chunks)

    def iteration_time(self, n_decode: int, context: int, chunks: Chunks) -> float:
        e = self.tokens_per_step
        if not chunks:
            return self.step_time(n_decode, context, chunks) / e
        t = self.step_time(n_decode, context, chunks)
        if n_decode:  # the decoders' other E - 1 tokens are charged in the decode iterations after it
            t -= (1.0 - 1.0 / e) * self.step_time(n_decode, context, [])
        return t

    def decode_run(self, n_decode: int, context: int, n_max: int) -> SumDecodeRun:
        b, e, k = n_decode, self.tokens_per_step, self.k
        c0, am, bm, ac, bc = self.target.pass_run(b, k + 1, context)
        c0 += self.target.step_overhead(b)
        verify = LinearDecodeRun(c0 / e, am / e, bm / e, ac / e, bc / e)
        s = self._frac * k / e
        c0, am, bm, ac, bc = self._drafter.pass_run(b, 1, context + b * (k - 1) / 2)
        draft = LinearDecodeRun(s * c0, s * am, s * bm, s * ac, s * bc)
        return SumDecodeRun(verify, draft)


class SumDecodeRun:
    """Two decode runs' iterations summed (verify and draft): the time is the sum of their closed
    forms; the iterations within a time, found by bisection between bounds from each run."""

    __slots__ = ("_a", "_b")

    def __init__(self, a: LinearDecodeRun, b: LinearDecodeRun):
        self._a = a
        self._b = b

    def time(self, n: int) -> float:
        return self._a.time(n) + self._b.time(n)

    def steps_within(self, elapsed: float) -> int:
        if elapsed <= 0.0:
            return 0
        hi = min(self._a.steps_within(elapsed), self._b.steps_within(elapsed))  # each alone is faster
        lo = min(self._a.steps_within(elapsed / 2), self._b.steps_within(elapsed / 2))
        while lo < hi:  # the largest n in [lo, hi] with time(n) <= elapsed (time(lo) <= elapsed)
            mid = (lo + hi + 1) // 2
            if self.time(mid) <= elapsed:
                lo = mid
            else:
                hi = mid - 1
        return lo


def mtp_fraction(model: ModelConfig, mtp_layers: int) -> float:
    """One MTP draft pass as a share of a target decode pass: its layers over the target's."""
    return mtp_layers / model.layers
