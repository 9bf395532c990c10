"""Execution-time predictor: how long one engine iteration takes on one replica.

The default is a roofline per GPU of the tensor-parallel group:

    T = T_fixed + max(T_mem, T_compute) + T_allreduce
    T_mem     = weight bytes read / (eta_w BW) + KV bytes read / (eta_kv BW)
    T_compute = (2 P_flop n_dec + 4 L H d_head pairs_dec) / (TP eta_f FLOPS)
              + (2 P_flop n_pre + 4 L H d_head pairs_pre) / (TP eta_p FLOPS)

where n_dec counts one token per decoding sequence, n_pre the prefill-chunk tokens and pairs_*
the (query, key) pairs their attention computes. Decoding sequences' matmuls run at the GEMM
kernels' efficiency eta_f; a prefill chunk at its end-to-end efficiency eta_p (attention, norms,
activations and the gaps between kernels count too). The weight bytes are every weight but the
embedding table, of which a pass gathers only its tokens' rows (the lm_head is read whole, in bf16
in a quantized checkpoint). MoE models read only the experts the batch's tokens touch. A measured
table (batch_size, tokens, context -> iteration_ms) can replace the formula.

A run of decode-only iterations with a fixed batch is the engine's hot path: the context grows
by the batch size every step, so both roofline terms are linear in the step index and the
run's total time and its inverse have closed forms (`sim.hardware.decoderun`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import numpy as np

from sim.config.errors import ConfigError
from sim.config.schema import WEIGHT_BYTES, EngineConfig, GpuConfig, ModelConfig, draft_model_config
from sim.hardware.decoderun import Chunks, DecodeRun, LinearDecodeRun
from sim.hardware.kvcache import kv_bytes_per_token, streamed_weight_bytes
from sim.hardware.speculative import SpeculativePerf, mtp_fraction


class PerfModel(Protocol):
    def iteration_time(self, n_decode: int, context: int, chunks: Chunks) -> float:
        """Duration of one iteration: n_decode sequences holding `context` KV tokens in total,
        plus prefill chunks."""
        ...

    def decode_run(self, n_decode: int, context: int, n_max: int) -> DecodeRun:
        """Iterations of n_decode sequences starting with `context` KV tokens (grows n_decode/step)."""
        ...


class Roofline:
    """Roofline iteration time with efficiency factors (see module docstring)."""

    def __init__(self, model: ModelConfig, gpu: GpuConfig, engine: EngineConfig):
        tp = engine.tensor_parallel_size
        # gpu.efficiency: this generation's achieved share of peak relative to the H100 the
        # engine factors were fitted on (docs/calibration.md)
        bw = gpu.mem_bw_tbps * 1e12 * gpu.efficiency
        total = model.params_b
        active = model.active_params_b or total
        if model.experts:
            per_expert = (total - active) / (model.experts - model.experts_per_token)
            expert_params = per_expert * model.experts
            self._miss = 1.0 - model.experts_per_token / model.experts
        else:
            expert_params = 0.0
            self._miss = 0.0
        # per GPU: a pass reads every weight but the embedding table (a lookup of its tokens' rows)
        expert_bytes = expert_params * 1e9 * WEIGHT_BYTES[model.weight_dtype] / tp
        dense_bytes = streamed_weight_bytes(model) / tp - expert_bytes
        self._w_dense = dense_bytes / (engine.eta_weights * bw)
        # grouped expert GEMMs stream their weights less efficiently than dense layers: eta_moe
        self._w_expert = expert_bytes / (engine.eta_weights * engine.eta_moe * bw)
        kv_gpu = kv_bytes_per_token(model, engine.kv_cache_dtype) / min(tp, model.kv_heads)
        self._kv = kv_gpu / (engine.eta_kv * bw)  # s per KV token read
        fp8 = model.weight_dtype == "fp8" and gpu.fp8_tflops
        flops = (gpu.fp8_tflops if fp8 else gpu.bf16_tflops) * 1e12 * engine.eta_flops * tp * gpu.efficiency
        flop_params = model.flop_params_b or active
        self._tok = 2 * flop_params * 1e9 / flops  # s per decoding token through the matmuls
        self._pair = 4 * model.layers * model.heads * model.head_dim / flops  # s per (q, k) pair
        # a prefill chunk reaches a lower share of peak end to end than the GEMM kernels alone
        # (attention, norms, activations, launch gaps between them): eta_prefill, not eta_flops
        pre = (engine.eta_prefill or engine.eta_flops) / engine.eta_flops  # null: the GEMMs' efficiency
        self._tok_p, self._pair_p = self._tok / pre, self._pair / pre
        self._fixed = engine.step_overhead_ms / 1000
        self._per_seq = engine.step_overhead_per_seq_us * 1e-6
        self._pass_fixed = 0.0  # fixed time of any forward pass (a draft's too): the all-reduce latency
        if tp > 1:  # two all-reduces per layer; ring: 2 (tp-1)/tp of the activations cross links
            # a small all-reduce's latency grows with the log of the group (tree / one-shot
            # algorithms): gpu.allreduce_latency_us is the figure for 2 GPUs
            self._pass_fixed = 2 * model.layers * gpu.allreduce_latency_us * 1e-6 * math.log2(tp)
            self._fixed += self._pass_fixed
            self._ar_tok = 2 * model.layers * 2 * (tp - 1) / tp * model.hidden * 2 / (gpu.link_gbps * 1e9)
        else:
            self._ar_tok = 0.0

    def weight_time(self, n_tokens: int) -> float:
        """Weight-read time: dense part plus the share of experts the tokens route to."""
        if self._w_expert:
            return self._w_dense + self._w_expert * (1.0 - self._miss**n_tokens)
        return self._w_dense

    def iteration_time(self, n_decode: int, context: int, chunks: Chunks) -> float:
        n = n_decode
        kv = context + n_decode
        comp = self._tok * n_decode + self._pair * kv
        for c, k0 in chunks:
            n += c
            kv += k0 + c
            comp += self._tok_p * c + self._pair_p * (c * k0 + c * (c + 1) / 2)
        # (weight_time, inline)
        mem = (
            self._w_dense + self._w_expert * (1.0 - self._miss**n) if self._w_expert else self._w_dense
        ) + self._kv * kv
        return (
            self._fixed + self._per_seq * (n_decode + len(chunks)) + (mem if mem >= comp else comp) + self._ar_tok * n
        )

    def step_overhead(self, seqs: int) -> float:
        """The engine's per-iteration time outside forward passes (scheduler, sampler, launch)."""
        return self._fixed - self._pass_fixed + self._per_seq * seqs

    def pass_terms(self, n_decode: int, q: int, context: float, chunks: Chunks) -> tuple[float, float, float]:
        """(fixed, memory, compute) seconds of one forward pass without the engine's overheads:
        n_decode sequences holding `context` KV tokens in all each run q query tokens (1: a
        decode step; k + 1: a speculative verify pass), plus prefill chunks."""
        n = q * n_decode
        kv = context + n
        comp = self._tok * n + self._pair * (q * context + n_decode * q * (q + 1) / 2)
        for c, k0 in chunks:
            n += c
            kv += k0 + c
            comp += self._tok_p * c + self._pair_p * (c * k0 + c * (c + 1) / 2)
        return (
            self._pass_fixed + self._ar_tok * n,
            self.weight_time(n) + self._kv * kv,
            comp,
        )

    def pass_run(self, n_decode: int, q: int, context: float) -> tuple[float, float, float, float, float]:
        """`pass_terms` of decode-only passes as lines in the step index j, the context growing by
        n_decode a step: (fixed, memory at j = 0, its slope, compute at j = 0, its slope)."""
        b = n_decode
        n = q * b
        return (
            self._pass_fixed + self._ar_tok * n,
            self.weight_time(n) + self._kv * (context + n),
            self._kv * b,
            self._tok * n + self._pair * (q * context + b * q * (q + 1) / 2),
            self._pair * q * b,
        )

    def decode_run(self, n_decode: int, context: int, n_max: int) -> LinearDecodeRun:
        b = n_decode
        kv0 = context + b
        w = self._w_dense + self._w_expert * (1.0 - self._miss**b) if self._w_expert else self._w_dense  # weight_time
        return LinearDecodeRun(
            self._fixed + (self._per_seq + self._ar_tok) * b,
            w + self._kv * kv0,
            self._kv * b,
            self._tok * b + self._pair * kv0,
            self._pair * b,
        )


class TablePerf:
    """Iteration time interpolated (multilinear, extrapolating) in a measured grid.

    CSV columns: batch_size (sequences in the iteration), tokens (tokens processed), context (KV
    tokens read), iteration_ms. The rows must form a full grid over the three columns.
    """

    COLUMNS = ("batch_size", "tokens", "context", "iteration_ms")

    def __init__(self, path: str):
        import pandas as pd
        from scipy.interpolate import RegularGridInterpolator

        key = "engine.perf_table"
        try:
            df = pd.read_csv(path)
        except Exception as exc:
            raise ConfigError(key, path, f"cannot read CSV: {exc}") from None
        missing = [c for c in self.COLUMNS if c not in df.columns]
        if missing:
            raise ConfigError(key, path, f"missing columns {missing}; need {list(self.COLUMNS)}")
        values = df[list(self.COLUMNS)].apply(pd.to_numeric, errors="coerce")
        bad = values.isna().any(axis=1) | (values["iteration_ms"] <= 0)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 2  # header is line 1
            raise ConfigError(key, path, f"row {row}: non-numeric or non-positive value")
        axes = [np.unique(values[c].to_numpy(float)) for c in self.COLUMNS[:3]]
        if any(len(a) < 2 for a in axes) or len(values) != math.prod(len(a) for a in axes):
            shape = "x".join(str(len(a)) for a in axes)
            raise ConfigError(
                key,
                path,
                f"rows must form a full grid with >= 2 values per column (got {len(values)} rows, axes {shape})",
            )
        grid = values.sort_values(list(self.COLUMNS[:3]))["iteration_ms"].to_numpy(float)
        self._interp = RegularGridInterpolator(
            axes, grid.reshape([len(a) for a in axes]) / 1000, bounds_error=False, fill_value=None
        )
        self.path = Path(path)
        self._floor = float(grid.min()) / 1000  # no iteration is faster than the fastest measured

    def iteration_time(self, n_decode: int, context: int, chunks: Chunks) -> float:
        tokens = n_decode + sum(c for c, _ in chunks)
        ctx = context + n_decode + sum(c + k0 for c, k0 in chunks)
        return max(float(self._interp([(n_decode + len(chunks), tokens, ctx)])[0]), self._floor)

    def decode_run(self, n_decode: int, context: int, n_max: int) -> TableDecodeRun:
        k = np.arange(n_max, dtype=float)
        pts = np.column_stack([np.full(n_max, n_decode), np.full(n_max, n_decode), context + n_decode + n_decode * k])
        times = np.maximum(self._interp(pts), self._floor)  # extrapolation may not go below the table
        return TableDecodeRun(np.concatenate([[0.0], np.cumsum(times)]))


class TableDecodeRun:
    __slots__ = ("_cum",)

    def __init__(self, cum: np.ndarray):
        self._cum = cum

    def time(self, n: int) -> float:
        return float(self._cum[n])

    def steps_within(self, elapsed: float) -> int:
        return int(np.searchsorted(self._cum, elapsed, side="right")) - 1


class SlowedPerf:
    """`perf` `factor` times slower: every iteration, and every decode run (a replica warming up
    after a cold start, fleet.warmup)."""

    __slots__ = ("factor", "perf")

    def __init__(self, perf: PerfModel, factor: float):
        self.perf = perf
        self.factor = factor

    def iteration_time(self, n_decode: int, context: int, chunks: Chunks) -> float:
        return self.perf.iteration_time(n_decode, context, chunks) * self.factor

    def decode_run(self, n_decode: int, context: int, n_max: int) -> SlowedRun:
        return SlowedRun(self.perf.decode_run(n_decode, context, n_max), self.factor)


class SlowedRun:
    """A decode run `factor` times slower."""

    __slots__ = ("factor", "run")

    def __init__(self, run: DecodeRun, factor: float):
        self.run = run
        self.factor = factor

    def time(self, n: int) -> float:
        return self.run.time(n) * self.factor

    def steps_within(self, elapsed: float) -> int:
        return self.run.steps_within(elapsed / self.factor)


def build_perf(model: ModelConfig, gpu: GpuConfig, engine: EngineConfig) -> PerfModel:
    if engine.perf_table:
        return TablePerf(engine.perf_table)
    if engine.speculative.method != "none":
        return _speculative(model, gpu, engine)
    return Roofline(model, gpu, engine)


def _speculative(model: ModelConfig, gpu: GpuConfig, engine: EngineConfig) -> SpeculativePerf:
    """The target's roofline wrapped for speculative decoding, drafting with a draft model's own
    roofline on the same GPUs or with the target's MTP layers."""
    spec = engine.speculative
    target = Roofline(model, gpu, engine)
    draft = draft_model_config(engine)
    if draft is not None:
        drafter, frac = Roofline(draft, gpu, engine), 1.0
    else:
        drafter, frac = target, mtp_fraction(model, spec.mtp_layers)
    return SpeculativePerf(target, spec.k, spec.acceptance, drafter, frac)


def saturation_throughput(
    perf: PerfModel,
    kv_tokens: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    prompt: float,
    output: float,
    prefill: float | None = None,
) -> float:
    """Requests per second one replica completes when saturated by requests of `prompt` input and
    `output` output tokens (means; `prefill`: the prompt tokens that must be computed, fewer with
    prefix-cache hits).

    In steady state B sequences decode together and every finished sequence is replaced by a
    waiting one, whose prompt is prefilled in the next iteration. B is the largest batch the
    three limits allow: `max_num_seqs`, the token budget (B (1 + prefill / output) <=
    max_num_batched_tokens) and the KV cache: the batch whose sequences can all grow to prompt +
    output without preempting (an engine that admits more keeps its cache full but loses the
    difference to preemption and recompute). Sequences finish at B / output per iteration, so an
    iteration carries k new prompts with k ~ Poisson(B / output) (capped by the token budget): its
    time is the roofline's for B decodes plus those prompts, and the mean over k matters because
    an iteration without prefill is memory-bound and one with it compute-bound. Throughput = B /
    (output x mean iteration time).
    """
    p, n = max(prompt, 1.0), max(output, 1.0)
    fill = p if prefill is None else min(max(prefill, 0.0), p)  # prompt tokens computed per request
    b = _saturated_batch(kv_tokens, max_num_seqs, max_num_batched_tokens, p, n, fill)
    context = round(b * (p + n / 2))
    lam = b / n  # new prompts per iteration
    room = max(max_num_batched_tokens - b, 0)
    k_max = int(lam + 8 * math.sqrt(lam) + 8)
    pmf = math.exp(-lam)

    def step(tokens: float) -> float:
        whole, part = divmod(tokens, fill) if fill >= 1 else (0, 0.0)
        chunks = [(round(fill), round(p - fill))] * int(whole)
        if part >= 1:
            chunks.append((round(part), round(p - fill + (fill - part) / 2)))
        return perf.iteration_time(b, context, chunks)

    mean_t = mass = carried = 0.0
    for k in range(k_max + 1):
        if k:
            pmf *= lam / k
        tokens = min(k * fill, room)
        carried += pmf * (k * fill - tokens)
        mean_t += pmf * step(tokens)
        mass += pmf
    mean_t /= mass
    if carried > 0 and room > 0:  # prompts over the budget spill into later iterations: their marginal time
        mean_t += carried / mass * (step(room) - step(0)) / room
    return b / (n * mean_t)


def _saturated_batch(
    kv_tokens: int, max_num_seqs: int, max_num_batched_tokens: int, p: float, n: float, fill: float
) -> int:
    """The steady-state batch of `saturation_throughput`: the smallest of the three limits."""
    b = min(max_num_seqs, max_num_batched_tokens / (1 + fill / n), kv_tokens / (p + n))
    return max(1, math.floor(b))


def slo_throughput(
    perf: PerfModel,
    kv_tokens: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    prompt: float,
    output: float,
    tpot_s: float,
    prefill: float | None = None,
) -> float:
    """Requests per second one replica completes at the largest batch whose mean iteration time
    (the time per output token its sequences see) stays within `tpot_s`: `saturation_throughput`
    with `max_num_seqs` capped, as a planner sizes a pool from profiled throughput under its
    inter-token-latency SLO. If even one sequence misses the SLO, the one-sequence rate.
    `prefill`: prompt tokens computed per request (a disaggregated decode pool computes 1)."""
    p, n = max(prompt, 1.0), max(output, 1.0)
    fill = p if prefill is None else min(max(prefill, 0.0), p)

    def rate(cap: int) -> tuple[float, float]:  # (requests/s, mean iteration time)
        thr = saturation_throughput(perf, kv_tokens, cap, max_num_batched_tokens, p, n, fill)
        return thr, _saturated_batch(kv_tokens, cap, max_num_batched_tokens, p, n, fill) / (n * thr)

    lo, hi = 1, max(1, max_num_seqs)
    best = rate(hi)
    if best[1] <= tpot_s:
        return best[0]
    best = rate(lo)
    while hi - lo > 1:  # the iteration time grows with the batch: the largest cap within the SLO
        mid = (lo + hi) // 2
        got = rate(mid)
        if got[1] <= tpot_s:
            lo, best = mid, got
        else:
            hi = mid
    return best[0]
