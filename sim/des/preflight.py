"""Whether a scenario can run, checked before anything is allocated: the replica's values
(`sim.config.schema.validate_replica`), then what needs the hardware model (the weights fit and
leave room for KV, requests fit the context, a full iteration takes a finite time), then the
fleet's, the API's and the run's values, then whether the run's work stays within `limits`.
Raises `ConfigError` naming the key, on the first problem."""

from __future__ import annotations

import math

from sim.config.schema import (
    Config,
    WorkloadConfig,
    batch_limits,
    length_lower_bound,
    length_upper_bound,
    require,
    validate_replica,
    validate_service,
)
from sim.hardware.kvcache import MemoryPlan, memory_plan
from sim.hardware.perf import build_perf
from sim.workload.limits import check_config


def validate(cfg: Config) -> None:
    """Check every value of `cfg`, then that the scenario fits its hardware and limits."""
    validate_replica(cfg)
    fits(cfg)
    validate_service(cfg)
    check_config(cfg)


def fits(cfg: Config) -> None:
    """The weights fit and leave room for KV; requests fit the context; iterations are finite."""
    m, g, e, w = cfg.model, cfg.gpu, cfg.engine, cfg.workload
    tp = e.tensor_parallel_size
    seqs, tokens = batch_limits(e, g)
    plan = memory_plan(m, g, e)
    per_gpu = plan.weight_bytes_per_gpu / 2**30
    usable = (plan.usable_bytes_per_gpu - plan.non_kv_bytes_per_gpu + plan.weight_bytes_per_gpu) / 2**30
    what = "reserve" if e.reserve_gib is not None else "activations and buffers vLLM profiles"
    require(
        plan.kv_blocks > 0,
        "model.params_b",
        m.params_b,
        f"{m.name} weights need {per_gpu:.1f} GiB per GPU ({m.weight_dtype}, TP={tp}) but {g.name} "
        f"leaves {usable:.1f} GiB (memory x utilisation - {what}); raise engine.tensor_parallel_size "
        "or use a smaller model.weight_dtype",
    )
    if e.max_model_len is not None:
        require(
            e.max_model_len <= plan.kv_tokens,
            "engine.max_model_len",
            e.max_model_len,
            f"exceeds the KV cache ({plan.kv_tokens} tokens for {m.name} on {tp}x{g.name}); "
            "lower it or add memory (TP, KV dtype)",
        )
    if not e.enable_chunked_prefill:
        require(
            tokens >= plan.max_model_len,
            "engine.max_num_batched_tokens",
            tokens,
            f"without chunked prefill must be >= max_model_len ({plan.max_model_len}); "
            "set engine.max_model_len lower or enable chunked prefill",
        )
    _requests_fit(w, plan)

    if e.perf_table is None:  # the slowest iteration the engine can run must be a number of seconds
        worst = build_perf(m, g, e).iteration_time(seqs, plan.kv_tokens, [(tokens, 0)])
        require(
            math.isfinite(worst) and worst <= 3600,
            "engine.max_num_batched_tokens",
            tokens,
            f"a full engine iteration of {m.name} on {g.name} would take {worst:.3g} s: check the model, GPU and "
            "engine figures (parameters, FLOPS, bandwidth, efficiency factors, step overhead)",
        )


def _requests_fit(w: WorkloadConfig, plan: MemoryPlan) -> None:
    """A synthetic source whose shortest request exceeds the context would reject everything."""
    for name, src in (w.sources or {"": w}).items():
        if src.arrival == "trace" or src.pairs.path or src.pairs.values:
            continue  # lengths come from data: over-long requests are rejected one by one
        prefix = f"workload.sources.{name}" if name else "workload"
        p_low = length_lower_bound(src.prompt_tokens) * w.prompt_scale
        o_low = length_lower_bound(src.output_tokens) * w.output_scale
        if w.prompt_scale != 1 or w.output_scale != 1:  # the scale is what went too far
            key, value = ("workload.prompt_scale", w.prompt_scale)
            if w.output_scale != 1 and o_low > plan.max_model_len / 2:
                key, value = ("workload.output_scale", w.output_scale)
        else:
            key, value = f"{prefix}.prompt_tokens", length_upper_bound(src.prompt_tokens)
        require(
            p_low + o_low <= plan.max_model_len,
            key,
            value,
            f"every request would exceed the context limit: at most {plan.max_model_len} prompt + output tokens fit "
            f"(max_model_len {plan.max_model_len}, KV cache {plan.kv_tokens} tokens)",
        )
