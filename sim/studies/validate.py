"""`fleetsim-validate`: replay measured engine runs and report how far fleetsim's latencies are
from the measurements.

    fleetsim-validate FILE... [--out DIR] [--markdown PATH] [--runs ID,...]

--out DIR writes DIR/validation.csv (every figure compared) and DIR/validation.png (a picture:
simulated against measured whole-run means, and the published points' errors); --markdown PATH
writes the report with the same picture in img/ beside it.

A run file has the layout of ../shared/calibration/vllm_runs.yaml (docs/validation.md):
`models` (architectures), `token_inflation` (per tokenizer), and `runs`, each with the server
settings (GPU, precision, TP, max_num_seqs, max_num_batched_tokens, gpu_memory_utilization,
max_model_len, the KV blocks vLLM reported), the load generator's `workload_spec` and the
measured `actual_ms` per stage ('-1' the whole run).

The workload follows the load generator (inference-perf's shared-prefix workload and constant
load timer): `num_groups` groups, each with a system prompt of `system_prompt_len` tokens and
`prompts_per_group` distinct questions of `question_len` tokens; a request is one group's system
prompt plus one of its questions, at random; exactly `output_len` tokens come back (ignore_eos).
Prompt lengths are inflated by the tokenizer's factor (random token ids decoded and re-encoded
grow). Each stage sends int(rate x duration) requests whose exponential gaps are rescaled to sum
to the stage's duration, the first request one gap after the stage starts (inference-perf's
ConstantLoadTimer, inference_perf/loadgen/load_timer.py), and starts about 1 s after the previous
one has drained. Metrics follow the
ground truth: means and percentiles of TTFT and E2E over a stage's requests, and
itl_mean = (mean E2E - mean TTFT) / (mean client-counted output - 1), the count recovered from
each stage's three measured means (`client_count`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sim.config.errors import UserError
from sim.config.schema import Config, GpuConfig, load_option
from sim.hardware.architecture import model_config

METRICS = ("ttft_mean", "ttft_p90", "ttft_p99", "e2e_mean", "e2e_p90", "e2e_p99", "itl_mean")
BLOCK = 16  # vLLM's prefix-cache block: full blocks of 16 tokens are hashed and shared
DRAIN_GAP_S = 1.0  # the next stage starts about this long after the previous one drained
# tokens the client counts against those the server generated; the ground truth's ITL divides by
# the client's count (vllm_runs.yaml: "about 0.78x for Llama-2-7B", 0.96-1.01x for the others).
# A stage measured with all three means gives its own count (`client_count`); this table is the
# fallback for stages without them.
CLIENT_OUTPUT = {"llama2-sp": 0.78}
CLIENT_RANGE = (0.5, 1.5)  # a count recovered outside this share of output_len is not trusted


# ----------------------------------------------------------------------------- model and engine


def run_config(run: dict, models: dict, engine: dict | None = None) -> Config:
    """The scenario of one measured run: its model, GPU, engine settings (and `engine`'s
    overrides, e.g. fitted factors), one replica."""
    key = f"runs[{run.get('id')}]"
    if run.get("model") not in models:
        raise UserError(f"{key}: model {run.get('model')!r} is not in the file's models")
    m = model_config(run["model"], models[run["model"]])
    if str(run.get("precision", "")).upper() == "FP8":
        m.weight_dtype = "fp8"
    gpu: GpuConfig = load_option("gpu", str(run.get("gpu", "h100")).lower())
    e = dataclasses.replace(
        load_option("engine", "vllm"),
        max_num_seqs=int(run["max_num_seqs"]) if run.get("max_num_seqs") else None,  # None: vLLM's default
        max_num_batched_tokens=int(run["max_num_batched_tokens"]) if run.get("max_num_batched_tokens") else None,
        gpu_memory_utilization=float(run.get("gpu_memory_utilization", 0.9)),
        tensor_parallel_size=int(run.get("tp", 1)),
        max_model_len=int(run.get("max_model_len", 4096)),
        prefix_caching=bool(run.get("prefix_caching_real", True)),
        kv_blocks=int(run["vllm_gpu_kv_blocks"]) if run.get("vllm_gpu_kv_blocks") else None,
    )
    for key, value in (engine or {}).items():
        setattr(e, key, value)
    c = Config(model=m, gpu=gpu, engine=e)
    c.output.plots = False
    c.output.requests = True
    # the workload is handed in whole (`generate`); the config's describes its size for the checks
    stages = run.get("workload_spec", {}).get("stages") or [[1.0, 1.0]]
    c.workload.duration_s = float(sum(d for _, d in stages))
    c.workload.rate = sum(r * d for r, d in stages) / c.workload.duration_s
    return c


# ----------------------------------------------------------------------------- workload


@dataclass
class Stages:
    """The requests of a run, stage by stage (arrival times relative to each stage's start)."""

    rel_t: list[np.ndarray]
    prompt: list[np.ndarray]
    output: list[np.ndarray]
    offsets: list[np.ndarray]
    ids: list[np.ndarray]


RUN_WHOLE = ("tp", "max_num_seqs", "max_num_batched_tokens", "max_model_len", "vllm_gpu_kv_blocks")
SPEC_WHOLE = ("num_groups", "prompts_per_group", "question_len", "output_len")
MAX_REQUESTS = 1_000_000  # a run file's requests, all stages: the shared runs send at most 7,200


def check_run(run: dict) -> None:
    """A one-line error naming the key unless `run` has what its replay reads, in range."""
    key = f"runs[{run.get('id')}]"
    for name in RUN_WHOLE:
        if run.get(name) is not None:
            positive(run[name], f"{key}.{name}", whole=True)
    if run.get("client_output_factor") is not None:
        positive(run["client_output_factor"], f"{key}.client_output_factor")
    if (
        run.get("gpu_memory_utilization") is not None
        and positive(run["gpu_memory_utilization"], f"{key}.gpu_memory_utilization") > 1
    ):
        raise UserError(f"{key}.gpu_memory_utilization: must be at most 1, not {run['gpu_memory_utilization']!r}")
    stages = check_spec(run.get("workload_spec"), f"{key}.workload_spec", int(run.get("max_model_len") or 4096))
    check_actual(run.get("actual_ms"), key, stages)


def check_spec(spec, key: str, max_model_len: int) -> int:
    """A run's `workload_spec` checked (a one-line error naming the key); its number of stages."""
    if not isinstance(spec, dict):
        raise UserError(f"{key}: must be a mapping (num_groups, prompts_per_group, ..., stages)")
    sizes = {name: positive(spec.get(name), f"{key}.{name}", whole=True) for name in SPEC_WHOLE}
    sys_len = spec.get("system_prompt_len", 0)
    if isinstance(sys_len, bool) or not isinstance(sys_len, int) or sys_len < 0:
        raise UserError(f"{key}.system_prompt_len: must be a whole number >= 0, not {sys_len!r}")
    if sys_len + sizes["question_len"] + sizes["output_len"] > max_model_len:
        raise UserError(f"{key}: prompt + output exceed max_model_len ({max_model_len}); vLLM refuses such requests")
    stages = spec.get("stages")
    if not isinstance(stages, list) or not stages or not all(isinstance(st, list) and len(st) == 2 for st in stages):
        raise UserError(f"{key}.stages: must be a list of [rate req/s, duration s]")
    n = sum(
        positive(rate, f"{key}.stages rate") * positive(duration, f"{key}.stages duration") for rate, duration in stages
    )
    if n > MAX_REQUESTS:
        raise UserError(f"{key}.stages: {n:.3g} requests, more than fleetsim-validate replays ({MAX_REQUESTS:,})")
    return len(stages)


def check_actual(actual, key: str, stages: int) -> None:
    """`actual_ms`: stage ('-1': the whole run) -> metric -> milliseconds > 0."""
    if not isinstance(actual, dict) or not actual:
        raise UserError(f"{key}.actual_ms: must map stages ('-1': the whole run) to measured metrics")
    for st, got in actual.items():
        try:
            stage = int(str(st))
        except ValueError:
            stage = None
        if stage is None or not -1 <= stage < stages:
            raise UserError(f"{key}.actual_ms: stage {st!r} is not -1 or one of the {stages} stages")
        if not isinstance(got, dict):
            raise UserError(f"{key}.actual_ms.{st}: must map metrics (ttft_mean, itl_mean, ...) to milliseconds")
        for metric, value in got.items():
            positive(value, f"{key}.actual_ms.{st}.{metric}")


def inflation_factor(run: dict, models: dict, inflation: dict) -> float:
    """How much the server's tokenizer inflates the run's prompts (1.05 where not measured)."""
    tokenizer = models[run["model"]].get("tokenizer", "")
    return float((inflation.get(tokenizer) or {}).get("factor", 1.05))


def prompt_lengths(spec: dict, inflation: float) -> tuple[int, int]:
    """The system prompt's and the question's lengths as the server sees them (inflated)."""
    return round(spec["system_prompt_len"] * inflation), round(spec["question_len"] * inflation)


def prompt_tokens(run: dict, models: dict, inflation: dict) -> int:
    """The prompt length the server sees: system prompt plus question, each inflated."""
    return sum(prompt_lengths(run["workload_spec"], inflation_factor(run, models, inflation)))


def generate(spec: dict, inflation: float, seed: int, max_stage_s: float | None = None) -> Stages:
    """inference-perf's shared-prefix workload under its constant load timer, stage by stage."""
    from sim.workload.build import stream

    rng = stream(seed, "validation")
    groups, per_group = int(spec["num_groups"]), int(spec["prompts_per_group"])
    sys_len, q_len = prompt_lengths(spec, inflation)
    prompt_len = sys_len + q_len
    n_blocks = prompt_len // BLOCK
    sys_blocks = sys_len // BLOCK
    out = Stages([], [], [], [], [])
    for rate, duration in spec["stages"]:
        duration = min(duration, max_stage_s or duration)  # shortened stages for fitting
        n = int(rate * duration)
        gaps = rng.exponential(1.0, n)
        t = np.cumsum(gaps) / gaps.sum() * duration
        g = rng.integers(0, groups, n)
        q = rng.integers(0, per_group, n)
        j = np.arange(n_blocks)
        # full 16-token blocks: the group's system-prompt blocks, then blocks of (group, question)
        group_ids = g[:, None] * n_blocks + j[None, :]
        question_ids = groups * n_blocks + (g[:, None] * per_group + q[:, None]) * n_blocks + j[None, :]
        ids = np.where(j[None, :] < sys_blocks, group_ids, question_ids).ravel()
        out.rel_t.append(t)
        out.prompt.append(np.full(n, prompt_len, dtype=np.int64))
        out.output.append(np.full(n, int(spec["output_len"]), dtype=np.int64))
        out.offsets.append(np.arange(n + 1, dtype=np.int64) * n_blocks)
        out.ids.append(ids.astype(np.int64))
    return out


def workload(stages: Stages, starts: list[float]):
    """The first len(starts) stages laid out from their start times, as one workload, and the
    stage of each request."""
    from sim.workload.build import Workload

    k = len(starts)
    t = np.concatenate([s + rel for s, rel in zip(starts, stages.rel_t[:k], strict=True)])
    lengths = [len(o) - 1 for o in stages.offsets[:k]]
    bases = np.concatenate([[0], np.cumsum([o[-1] for o in stages.offsets[:k]])])
    offsets = np.concatenate([[0]] + [o[1:] + b for o, b in zip(stages.offsets[:k], bases[:k], strict=True)])
    return (
        Workload(
            arrival_s=t,
            prompt_tokens=np.concatenate(stages.prompt[:k]),
            output_tokens=np.concatenate(stages.output[:k]),
            hash_offsets=offsets,
            hash_ids=np.concatenate(stages.ids[:k]),
            block_tokens=BLOCK,
        ),
        np.repeat(np.arange(k), lengths),
    )


# ----------------------------------------------------------------------------- replay


def simulate(
    run: dict,
    models: dict,
    inflation: dict,
    seed: int = 0,
    engine: dict | None = None,
    max_stage_s: float | None = None,
) -> pd.DataFrame:
    """The run replayed: one row per (stage, metric) with the measured and simulated figure
    (`engine`: engine keys to override; `max_stage_s`: shorten long stages, for fitting)."""
    from sim.studies.run import run as simulate_run

    cfg = run_config(run, models, engine)
    tokenizer = models[run["model"]].get("tokenizer", "")
    stages = generate(run["workload_spec"], inflation_factor(run, models, inflation), seed, max_stage_s)
    starts: list[float] = []
    result = stage = None
    for _ in stages.rel_t:  # each stage starts once the previous one has drained
        starts.append(0.0 if result is None else float(result.requests["finish_s"].max()) + DRAIN_GAP_S)
        wl, stage = workload(stages, starts)
        result = simulate_run(cfg, workload=wl)
    df = result.requests.assign(stage=stage)
    rows = []
    for key, got in (run.get("actual_ms") or {}).items():
        st = int(key)
        sim = figures(df if st == -1 else df[df["stage"] == st], client_share(run, tokenizer, got))
        for metric in METRICS:
            if metric in got and metric in sim:
                m, s = float(got[metric]), sim[metric]
                rows.append(
                    {
                        "run": str(run.get("id")),
                        "model": run["model"],
                        "workload": run.get("workload", ""),
                        "stage": st,
                        "metric": metric,
                        "measured": m,
                        "simulated": s,
                        "error_pct": (s - m) / m * 100 if m else math.nan,
                    }
                )
    return pd.DataFrame(rows)


def client_share(run: dict, tokenizer: str, got: dict) -> float:
    """The share of output_len the client counted in a stage with measurements `got`: the run's
    `client_output_factor`; else the stage's own (`client_count`); else its tokenizer's."""
    pinned = run.get("client_output_factor")
    if pinned is not None:
        return float(pinned)
    return client_count(got, int(run["workload_spec"]["output_len"])) or CLIENT_OUTPUT.get(tokenizer, 1.0)


def client_count(got: dict, output_len: int) -> float | None:
    """The share of `output_len` the client counted in a stage, recovered from the stage's own
    measured means: the ground truth's itl_mean = (e2e_mean - ttft_mean) / (count - 1). None
    where a mean is missing or the count falls outside CLIENT_RANGE (a different ITL definition)."""
    try:
        e2e, ttft, itl = (float(got[k]) for k in ("e2e_mean", "ttft_mean", "itl_mean"))
    except (KeyError, TypeError, ValueError):
        return None
    if not (itl > 0 and e2e > ttft and output_len > 1):
        return None
    share = ((e2e - ttft) / itl + 1) / output_len
    return share if CLIENT_RANGE[0] <= share <= CLIENT_RANGE[1] else None


def figures(df: pd.DataFrame, client_output: float = 1.0) -> dict:
    """The ground truth's metrics (ms) over a stage's requests."""
    served = df[df["route"] != "rejected"]
    ttft, e2e = served["ttft_s"].to_numpy() * 1000, served["e2e_s"].to_numpy() * 1000
    if not len(ttft):
        return {}
    out_tokens = served["served_output_tokens"].to_numpy().mean() * client_output
    return {
        "ttft_mean": float(ttft.mean()),
        "ttft_p90": float(np.percentile(ttft, 90)),
        "ttft_p99": float(np.percentile(ttft, 99)),
        "e2e_mean": float(e2e.mean()),
        "e2e_p90": float(np.percentile(e2e, 90)),
        "e2e_p99": float(np.percentile(e2e, 99)),
        "itl_mean": float((e2e.mean() - ttft.mean()) / (out_tokens - 1)) if out_tokens > 1 else math.nan,
    }


# ----------------------------------------------------------------------------- published points

# a point names its model in words; these patterns map it to an architecture in `models`
POINT_MODELS = (
    (r"llama-?3(\.\d)?-8b", "llama-3.1-8b"),
    (r"llama-3(\.\d)? 70b|llama-3(\.\d)?-70b", "llama-3.1-70b"),
    (r"mixtral-8x7b", "mixtral-8x7b"),
    (r"qwen3-235b", "qwen3-235b-a22b"),
)
SHAREGPT_MEANS = (230, 195)  # the vLLM CI's ShareGPT sample: ~230 prompt, ~190-200 output tokens
# Stand-in samples a ShareGPT throughput point is read from. One sample's figure lies anywhere
# from about 20% below to 30% above the typical one with its longest output (10-90% of the
# draws), so a single draw says more about its seed than about the model. The figure is their
# median, the typical single sample (the point forecast for absolute errors, which the
# validation reports); 200 draws put its Monte Carlo standard error near 2%, and cost the three
# CI points about 600 short simulations.
SHAREGPT_DRAWS = 200


def sharegpt_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n (prompt, output) pairs standing in for the CI's ShareGPT sample, whose lengths are not
    published: lognormals with its means and a coefficient of variation of 1, under the
    benchmark's filters (both >= 4 tokens, prompt <= 1024, prompt + output <= 2048). A batch's
    end is set by its longest output, so this tail is an assumption the figure depends on."""
    from sim.workload.build import stream

    rng = stream(seed, "sharegpt")
    sigma = math.sqrt(math.log(2.0))  # cv = 1
    out_p: list[int] = []
    out_o: list[int] = []
    while len(out_p) < n:
        p = np.rint(rng.lognormal(math.log(SHAREGPT_MEANS[0]) - sigma**2 / 2, sigma, n)).astype(np.int64)
        o = np.rint(rng.lognormal(math.log(SHAREGPT_MEANS[1]) - sigma**2 / 2, sigma, n)).astype(np.int64)
        ok = (p >= 4) & (o >= 4) & (p <= 1024) & (p + o <= 2048)
        out_p += p[ok].tolist()
        out_o += o[ok].tolist()
    return np.array(out_p[:n], dtype=np.int64), np.array(out_o[:n], dtype=np.int64)


def catalog_arch(spec: dict) -> dict:
    """An architecture in the calibration catalog's spelling, in the run file's."""
    if not isinstance(spec, dict):
        raise UserError(f"models: an architecture must be a mapping of shapes, not {spec!r}")
    out = dict(spec)
    out.setdefault("experts_per_token", spec.get("experts_per_tok"))
    out.setdefault("tied", spec.get("tied_embeddings", False))
    out.setdefault("max_position", spec.get("max_position_embeddings", 131072))
    if spec.get("experts") and not spec.get("moe_intermediate"):
        out["moe_intermediate"] = spec["intermediate"]  # Mixtral: each expert is a full MLP
    return out


def point_model(point: dict, models: dict) -> str:
    """The key in `models` of a point's architecture: the point's `model` itself, or a published
    name (a Hugging Face id, say) one of `POINT_MODELS` recognises."""
    import re

    if point.get("model") in models:
        return str(point["model"])
    name = str(point.get("model", "")).lower()
    for pattern, key in POINT_MODELS:
        if re.search(pattern, name) and key in models:
            return key
    raise UserError(f"point {point.get('id')}: no architecture for model {point.get('model')!r} in `models`")


def point_config(point: dict, models: dict, usage: str, engine: dict | None = None) -> Config:
    key = point_model(point, models)
    m = model_config(key, catalog_arch(models[key]))
    if str(point.get("weights_dtype", "")).lower() in ("fp8", "int8", "w8a8"):
        m.weight_dtype = "fp8"
    gpu: GpuConfig = load_option("gpu", str(point.get("gpu", "h100")).lower())
    tp = int(point_number(point, "tp", 1, integer=True))
    e = dataclasses.replace(load_option("engine", "vllm"), tensor_parallel_size=tp, usage=usage)
    if str(point.get("kv_cache_dtype", "")).lower().startswith("fp8"):
        e.kv_cache_dtype = "fp8"
    for name, value in (engine or {}).items():
        setattr(e, name, value)
    c = Config(model=m, gpu=gpu, engine=e)
    c.output.plots = False
    c.output.requests = True
    return c


def positive(value, where: str, whole: bool = False) -> float:
    """`value` as a number > 0 (a whole one if `whole`), or a one-line error naming `where`. A
    string is refused too: YAML reads 1e9 (no dot) as one."""
    x = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    if not (math.isfinite(x) and x > 0) or (whole and not x.is_integer()):
        raise UserError(f"{where}: must be {'a whole number' if whole else 'a number'} > 0, not {value!r}")
    return x


def point_number(point: dict, key: str, default: float | None = None, integer: bool = False) -> float:
    """A point's positive number `key` (a whole one if `integer`), or a one-line error naming it."""
    return positive(point.get(key, default), f"point {point.get('id')}: `{key}`", integer)


def _tokens(point: dict, key: str, default: int | None = None) -> int:
    return int(point_number(point, key, default, integer=True))


def point_kind(point: dict) -> tuple[str, str]:
    """(metric, usage) of a published point, from its workload line."""
    import re

    wl = str(point.get("workload", ""))
    if "TTFT" in wl:  # one request's first token: its prompt's prefill
        return "ttft_ms", "api_server" if re.search(r"\bserve\b", wl) else "offline"
    if "benchmark_latency" in wl:
        return "batch_latency_ms", "offline"
    if "ITL" in wl:
        return "itl_ms", "api_server"
    if "requests/s" in wl:
        return "throughput_rps", "offline"
    if "output tokens/s" in wl:
        return "output_tokens_per_s", "offline"
    raise UserError(f"point {point.get('id')}: workload {wl!r} is not one fleetsim-validate replays")


def point_shape(point: dict, metric: str) -> tuple[int, int, int]:
    """(requests, prompt tokens, output tokens) a published point's benchmark sends at t = 0."""
    import re

    if metric == "throughput_rps":  # vLLM CI: 200 ShareGPT prompts at once (lengths: `sharegpt_like`)
        return 200, 0, 0
    p = _tokens(point, "input_tokens")
    if metric == "batch_latency_ms":  # one batch of 8: the batch's completion time
        return 8, p, _tokens(point, "output_tokens")
    if metric == "ttft_ms":  # one request alone: its prompt's prefill
        return 1, p, _tokens(point, "output_tokens", 1)
    o = _tokens(point, "output_tokens")
    if metric == "itl_ms":  # concurrency 1: one request, the decode steps between its tokens
        if o < 2:
            raise UserError(f"point {point.get('id')}: `output_tokens` must be at least 2 for an ITL, not {o}")
        return 1, p, o
    found = re.search(r"(\d+) requests", str(point["workload"]))  # trtllm-bench: N fixed-length requests
    return (int(found.group(1)) if found else 1000), p, o


def simulate_point(point: dict, models: dict, engine: dict | None = None) -> dict:
    """A published point replayed: its workload on its set-up, the metric it reports (`engine`:
    engine keys to override, e.g. fitted factors)."""
    metric, usage = point_kind(point)
    cfg = point_config(point, models, usage, engine)
    m = point_number(point, "measured")
    n, p, o = point_shape(point, metric)
    cfg.workload.duration_s, cfg.workload.rate = 1.0, float(n)
    band = (math.nan, math.nan)
    if metric == "throughput_rps":
        ends = [_batch(cfg, *sharegpt_like(n, seed))["finish_s"].max() for seed in range(SHAREGPT_DRAWS)]
        draws = n / np.array(ends)
        sim, band = float(np.median(draws)), tuple(float(x) for x in np.percentile(draws, [10, 90]))
    else:
        outputs = np.full(n, o, dtype=np.int64)
        df = _batch(cfg, np.full(n, p, dtype=np.int64), outputs)
        end = float(df["finish_s"].max())
        if metric == "batch_latency_ms":
            sim = end * 1000
        elif metric == "itl_ms":
            sim = float(((df["e2e_s"] - df["ttft_s"]) / (df["output_tokens"] - 1)).mean() * 1000)
        elif metric == "ttft_ms":
            sim = float(df["ttft_s"].iloc[0] * 1000)
        else:
            sim = float(outputs.sum()) / end
    return {
        "run": str(point.get("id")),
        "model": point_model(point, models),
        "workload": str(point.get("class", "")),
        "stage": -1,
        "metric": metric,
        "measured": m,
        "simulated": sim,
        "error_pct": (sim - m) / m * 100,
        "bound": "TensorRT" in str(point.get("engine", "")),  # another, faster engine: an upper bound
        "p10": band[0],  # ShareGPT throughput: 10-90% of the stand-in samples' figures
        "p90": band[1],
    }


def _batch(cfg: Config, prompts: np.ndarray, outputs: np.ndarray) -> pd.DataFrame:
    """The requests of one batch submitted at t = 0, simulated."""
    from sim.studies.run import run as simulate_run
    from sim.workload.build import Workload

    return simulate_run(cfg, workload=Workload(np.zeros(len(prompts)), prompts, outputs)).requests


COLUMNS = ["run", "stage", "metric", "measured", "simulated", "error_pct", "model", "workload"]
DECODE_METRICS = ("batch_latency_ms", "itl_ms")


def kv_points(files: list[Path], want: set | None) -> pd.DataFrame:
    """KV capacity as vLLM logged it at start-up against the memory plan (not pinned): every run
    with `vllm_gpu_kv_blocks`, and a points file's `kv_capacity_points` (sim.studies.kvprofile builds
    each one's set-up)."""
    from sim.studies import kvprofile

    points = []
    for path in files:
        data = load_file(path)
        if any(r.get("vllm_gpu_kv_blocks") for r in data.get("runs") or []):
            points += kvprofile.run_points_from(data)
        if data.get("kv_capacity_points"):
            points += kvprofile.published_points(path.parent)
    rows = []
    for p in points:
        if want is not None and not set(p.id.split(",")) & want:
            continue
        sim_blocks = p.blocks()
        rows.append(
            {
                "run": p.id,
                "model": p.label,
                "workload": p.engine.memory_profiler,
                "stage": -1,
                "metric": "kv_blocks",
                "measured": float(p.logged_blocks),
                "simulated": float(sim_blocks),
                "error_pct": (sim_blocks / p.logged_blocks - 1) * 100,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def kv_report(kv: pd.DataFrame) -> str:
    lines = [f"  {'KV capacity':<34s} {'configuration':<36s} {'logged':>8s} {'computed':>9s} {'error':>8s}"]
    for _, r in kv.iterrows():
        lines.append(
            f"  {r['run']:<34s} {r['model']:<36s} {r['measured']:>8.0f} {r['simulated']:>9.0f} {r['error_pct']:>+7.1f}%"
        )
    e = kv["error_pct"]
    lines.append(f"  KV blocks: median {e.median():+.1f}% / {e.abs().median():.1f}%, largest {e.abs().max():.1f}%")
    return "\n".join(lines)


def kv_markdown(kv: pd.DataFrame) -> list[str]:
    e = kv["error_pct"]
    lines = [
        "## KV capacity at start-up",
        "",
        "The KV blocks vLLM logged at start-up against the memory plan (docs/model.md: the GPU's",
        "memory as CUDA reports it x utilisation, minus weights, rotary table, the profiled",
        "activation peak and non-torch memory), not pinned: median "
        f"{e.median():+.1f}% signed, {e.abs().median():.1f}% absolute, largest {e.abs().max():.1f}%.",
        "",
        "| point | configuration | profiler | logged blocks | computed | error |",
        "|---|---|---|---:|---:|---:|",
    ]
    for _, r in kv.iterrows():
        lines.append(
            f"| {r['run']} | {r['model']} | {r['workload']} | {r['measured']:.0f} | {r['simulated']:.0f} "
            f"| {r['error_pct']:+.1f}% |"
        )
    return [*lines, ""]


def catalog_models(path: Path) -> dict:
    """Architectures for a points file without `models`: the calibration catalog beside it."""
    import yaml

    cat = path.parent / "catalog.yaml"
    if not cat.is_file():
        raise UserError(f"{path}: its points need `models` (architectures) or a catalog.yaml beside the file")
    return (yaml.safe_load(cat.read_text()) or {}).get("models") or {}


def point_groups(pts: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    vllm = pts[~pts["bound"].astype(bool)]
    return [
        ("vLLM decode / latency", vllm[vllm["metric"].isin(DECODE_METRICS)]),
        ("vLLM throughput", vllm[vllm["metric"] == "throughput_rps"]),
        ("vLLM prefill (one request's TTFT)", vllm[vllm["metric"] == "ttft_ms"]),
        ("TensorRT-LLM throughput (upper bound for vLLM)", pts[pts["bound"].astype(bool)]),
    ]


def points_report(pts: pd.DataFrame) -> str:
    lines = [f"  {'point':<34s} {'metric':<20s} {'measured':>10s} {'simulated':>10s} {'error':>8s}"]
    for _, r in pts.iterrows():
        tag = "  (bound)" if r["bound"] else f"  (one sample: {_band(r)}, 10-90%)" if _band(r) else ""
        lines.append(
            f"  {r['run']:<34s} {r['metric']:<20s} {r['measured']:>10.4g} {r['simulated']:>10.4g}"
            f" {r['error_pct']:>+7.1f}%{tag}"
        )
    for name, g in point_groups(pts):
        if len(g):
            e = g["error_pct"]
            lines.append(f"  {name}: median {e.median():+.1f}% / {e.abs().median():.1f}% ({len(g)} points)")
    return "\n".join(lines)


def _band(r: pd.Series, digits: int = 3) -> str:
    """A ShareGPT throughput's 10-90% range over its stand-in samples ("" for other points)."""
    if not math.isfinite(r.get("p10", math.nan)):
        return ""
    return f"{r['p10']:.{digits}g}-{r['p90']:.{digits}g}"


def load_file(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not (
        isinstance(data.get("runs"), list) or isinstance(data.get("performance_points"), list)
    ):
        raise UserError(f"{path}: needs a `runs` list (and `models`) or `performance_points`: see docs/validation.md")
    for key in ("runs", "performance_points"):
        if not isinstance(data.get(key) or [], list):
            raise UserError(f"{path}: `{key}` must be a list, not {data[key]!r}")
        for i, item in enumerate(data.get(key) or []):
            if not isinstance(item, dict):
                raise UserError(f"{path}: {key}[{i}] must be a mapping (id, model, gpu, ...), not {item!r}")
    return data


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Whole-run (stage -1) errors: one row per run, one column per metric."""
    whole = df[df["stage"] == -1]
    return whole.pivot_table(index=["run", "model", "workload"], columns="metric", values="error_pct", sort=False)


def medians(df: pd.DataFrame) -> pd.DataFrame:
    whole = df[df["stage"] == -1]
    g = whole.groupby("metric")["error_pct"]
    out = pd.DataFrame({"median_signed": g.median(), "median_abs": g.apply(lambda x: x.abs().median())})
    return out.reindex([m for m in METRICS if m in set(whole["metric"])])


def text_report(df: pd.DataFrame) -> str:
    t = summary_table(df)
    cols = [c for c in ("ttft_mean", "itl_mean", "e2e_mean") if c in t.columns]
    lines = [f"  {'run':<16s} {'model':<17s} {'workload':<15s}" + "".join(f"{c:>11s}" for c in cols)]
    for (run, model, wl), r in t.iterrows():
        lines.append(f"  {run:<16s} {model:<17s} {wl:<15s}" + "".join(f"{r[c]:>+10.1f}%" for c in cols))
    lines.append("  median signed / absolute error over the runs (whole run):")
    lines += [f"    {k:<10s} {r.median_signed:+6.1f}% / {r.median_abs:5.1f}%" for k, r in medians(df).iterrows()]
    return "\n".join(lines)


def markdown(
    df: pd.DataFrame,
    command: str,
    pts: pd.DataFrame | None = None,
    kv: pd.DataFrame | None = None,
    offload: list[str] | None = None,
    image: str | None = None,
) -> str:
    """The report (docs/validation.md), with the figure at `image` (a path relative to it) on top."""
    t = summary_table(df)
    cols = [c for c in METRICS if c in t.columns]
    lines = [
        "# Validation against measured vLLM runs",
        "",
        f"Generated by `{command}`. Each run's exact workload spec is replayed",
        "(sim/studies/validate.py says how) and compared with the measurement; signed error: + means",
        "fleetsim is slower than the real server.",
        "",
        *([f"![fleetsim-validate's figure]({image})", "", f"*{FIGURE_CAPTION}*", ""] if image else []),
        "## Medians over the runs (whole run, stage -1)",
        "",
        "| metric | median signed error | median absolute error |",
        "|---|---:|---:|",
        *[f"| {k} | {r.median_signed:+.1f}% | {r.median_abs:.1f}% |" for k, r in medians(df).iterrows()],
        "",
        "## Per run (whole run)",
        "",
        "| run | model | workload | " + " | ".join(cols) + " |",
        "|---|---|---|" + "---:|" * len(cols),
    ]
    for (run, model, wl), r in t.iterrows():
        lines.append(f"| {run} | {model} | {wl} | " + " | ".join(f"{r[c]:+.1f}%" for c in cols) + " |")
    if offload:
        lines += [
            "",
            f"Runs {', '.join(offload)} ran with CPU KV offloading on (`cpu_offload: true`), which fleetsim",
            "does not model.",
        ]
    lines += ["", "Per stage and metric, with the measured and simulated figures: `validation.csv`.", ""]
    if pts is not None and len(pts):
        lines += points_markdown(pts)
    if kv is not None and len(kv):
        lines += kv_markdown(kv)
    lines += [FORMAT]
    return "\n".join(lines)


def points_markdown(pts: pd.DataFrame) -> list[str]:
    lines = [
        "## Published points",
        "",
        "Each point's set-up replayed (`simulate_point`): vLLM's benchmark_latency as one batch of 8",
        "at t = 0 (the batch's completion time), concurrency-1 ITL as one request, a single request's",
        "TTFT (nothing cached, nothing else running: its prompt's prefill) as that request alone, the",
        "CI's ShareGPT throughput as 200 requests at t = 0 whose lengths stand in for the unpublished",
        "sample (lognormal, the sample's means, cv 1, the benchmark's filters), trtllm-bench as N",
        "fixed-length requests at t = 0. A ShareGPT batch ends with its longest output, so one",
        "stand-in sample's throughput lies 20% below to 30% above the typical one: the figure is the",
        f"median of {SHAREGPT_DRAWS} samples, the typical one (Monte Carlo standard error about 2%), and the",
        "table gives the range that holds 80% of single samples; if the stand-in is right, the",
        "measured figure is one such sample. TensorRT-LLM is a different, faster engine: its",
        "throughputs bound vLLM's from above, so a positive error there means fleetsim is optimistic",
        "for vLLM at saturation.",
        "",
        "| group | median signed | median abs | points |",
        "|---|---:|---:|---:|",
    ]
    for name, g in point_groups(pts):
        if len(g):
            e = g["error_pct"]
            lines.append(f"| {name} | {e.median():+.1f}% | {e.abs().median():.1f}% | {len(g)} |")
    lines += [
        "",
        "| point | metric | measured | simulated | error | one sample, 10-90% |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for _, r in pts.iterrows():
        lines.append(
            f"| {r['run']} | {r['metric']} | {r['measured']:.4g} | {r['simulated']:.4g}"
            f" | {r['error_pct']:+.1f}% | {_band(r, 4)} |"
        )
    return [*lines, ""]


FORMAT = """## Your own measurements

A run file is YAML with the layout of `../shared/calibration/vllm_runs.yaml`; add your runs and
validate them the same way (`fleetsim-validate mine.yaml --out DIR`: DIR/validation.csv and the
figure above, DIR/validation.png):

```yaml
models:                      # architectures, by name
  my-model: {layers: 32, hidden: 4096, heads: 32, kv_heads: 8, head_dim: 128, intermediate: 14336,
             vocab: 128256, tied: false, max_position: 131072, tokenizer: llama3-tiktoken}
             # MoE: experts, experts_per_token, moe_intermediate, shared_expert_intermediate
token_inflation:             # prompt growth of random token ids re-tokenised, per tokenizer (default 1.05)
  llama3-tiktoken: {factor: 1.05}
runs:
- id: my-run
  model: my-model
  gpu: h100                  # a fleetsim GPU option
  precision: FP16            # or FP8 (weights)
  tp: 1
  max_num_seqs: 128
  max_num_batched_tokens: 2048
  gpu_memory_utilization: 0.9
  max_model_len: 4096
  prefix_caching_real: true
  vllm_gpu_kv_blocks: 20000  # from vLLM's start-up log: pins the KV cache (engine.kv_blocks)
  # client_output_factor: 0.9  # output tokens the client counted / generated (ITL's denominator)
                               # for every stage; left out: each stage's own, from its three means
  workload: my-workload
  workload_spec:             # inference-perf's shared_prefix workload
    num_groups: 8
    prompts_per_group: 4
    system_prompt_len: 100
    question_len: 450
    output_len: 250
    stages: [[2.5, 600], [6.0, 600]]   # [rate req/s, duration s], run in order
  actual_ms:                 # measured, per stage ('-1': the whole run), milliseconds
    '-1': {ttft_mean: 60.0, ttft_p90: 75.0, ttft_p99: 110.0, e2e_mean: 5200.0, itl_mean: 21.0}
```

Each stage sends int(rate x duration) requests whose exponential gaps are rescaled to span the
stage exactly, and starts about 1 s after the previous one drained; a request is one group's
system prompt plus one of the group's questions, at random, and returns exactly `output_len`
tokens. `itl_mean` = (mean E2E - mean TTFT) / (mean client-counted output tokens - 1). A stage
that gives all three means gives that count too, and its simulated ITL divides by it (the
client's tokenizer can count fewer tokens than the server generated: 0.77-0.79x for Llama-2-7B,
0.98-1.00x for the others in the shared runs); `client_output_factor` overrides it for a whole
run, and a stage without the three means falls back to 0.78 for Llama-2's tokenizer, 1 otherwise.
With the three means the ITL error is the error of the mean decode span (E2E - TTFT), counted
per token: the measured ITL is derived from the other two means, not measured apart.

Single published figures go in a points file (`calibration/prefill_points.yaml` is one): `models`
as above and `performance_points`, each with `id`, `gpu`, `tp`, `model` (a key of `models`),
`weights_dtype`, `kv_cache_dtype`, `input_tokens`, `output_tokens`, `measured` and a
`workload` line whose words pick the replay: `TTFT` (one request alone, ms), `benchmark_latency`
(a batch of 8 at once, ms), `ITL` (one request's decode steps, ms), `requests/s` (ShareGPT, 200
at once) or `output tokens/s` (`N requests` of fixed lengths at once).
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="fleetsim-validate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("files", nargs="+", type=Path, help="run files (the layout of vllm_runs.yaml)")
    ap.add_argument("--out", type=Path, help="write DIR/validation.csv and DIR/validation.png (a figure)")
    ap.add_argument(
        "--markdown", type=Path, help="write a markdown report (docs/validation.md), its figure in img/ beside it"
    )
    ap.add_argument("--runs", help="only these run ids, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        if args.seed < 0:
            raise UserError(f"--seed {args.seed}: must be an integer >= 0")
        want = set(args.runs.split(",")) if args.runs else None
        frames, points, offload = _replay_files(args.files, want, args.seed)
        if not frames and not points:
            raise UserError("no run to validate (check --runs)")
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
        pts = pd.DataFrame(points, columns=[*COLUMNS, "bound", "p10", "p90"])
        if frames:
            print(text_report(df))
        if points:
            print(points_report(pts))
        kv = kv_points(args.files, want)
        if len(kv):
            print(kv_report(kv))
        _write(args, df, pts, kv, offload)
        return 0
    except UserError as exc:
        print(f"fleetsim-validate: error: {exc}", file=sys.stderr)
        return 2


FIGURE = "validation.png"
FIGURE_CAPTION = (
    "Simulated against measured: each run's whole-run mean TTFT, ITL and E2E (top; shaded: within"
    " \u00b110%), and each published point's signed error (bottom; TensorRT-LLM throughputs are upper"
    " bounds for vLLM's)."
)


def _write(args: argparse.Namespace, df: pd.DataFrame, pts: pd.DataFrame, kv: pd.DataFrame, offload: list) -> None:
    """--out: DIR/validation.csv and DIR/validation.png; --markdown PATH: the report, its figure in
    PATH's folder's img/."""
    drawn: Path | None = None  # the figure is drawn once and copied where else it goes
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        both = pd.concat([d for d in (df[COLUMNS], pts[COLUMNS], kv[COLUMNS]) if len(d)], ignore_index=True)
        both.to_csv(args.out / "validation.csv", index=False)
        drawn = figure(df, pts, args.out / FIGURE)
    if args.markdown:
        img = args.markdown.parent / "img" / FIGURE
        if drawn is None:
            figure(df, pts, img)
        else:
            img.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(drawn, img)
        cmd = " ".join(["fleetsim-validate", *map(str, args.files)])
        text = markdown(df, f"{cmd} --markdown {args.markdown}", pts, kv, offload, f"img/{FIGURE}")
        args.markdown.write_text(text)


def figure(df: pd.DataFrame, pts: pd.DataFrame, path: Path) -> Path:
    """The validation figure written to `path` (sim.output.validation, imported here so that
    importing this module loads no matplotlib)."""
    from sim.output.validation import validation_plot

    path.parent.mkdir(parents=True, exist_ok=True)
    validation_plot(df, point_groups(pts), path)
    return path


def _replay_files(files: list[Path], want: set | None, seed: int) -> tuple[list, list, list[str]]:
    """Each file's runs (frames) and published points replayed, and the runs with CPU offload."""
    frames: list = []
    points: list = []
    offload: list[str] = []
    for path in files:
        data = load_file(path)
        models, inflation = data.get("models") or {}, data.get("token_inflation") or {}
        if not isinstance(models, dict) or not isinstance(inflation, dict):
            raise UserError(f"{path}: `models` and `token_inflation` must be mappings (name: ...)")
        runs = [r for r in data.get("runs") or [] if want is None or str(r.get("id")) in want]
        for run in runs:
            check_run(run)
        frames += [simulate(run, models, inflation, seed) for run in runs]
        offload += [str(r.get("id")) for r in runs if r.get("cpu_offload")]
        chosen = [p for p in data.get("performance_points") or [] if want is None or str(p.get("id")) in want]
        if chosen:
            models = models or catalog_models(path)
            points += [simulate_point(p, models) for p in chosen]
    return frames, points, offload


def entry() -> None:
    sys.exit(main())
