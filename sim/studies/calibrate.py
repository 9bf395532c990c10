"""Calibration of the roofline's efficiency factors against published measurements.

Each factor is fitted (least squares on log(predicted / measured), calibration/points.yaml) to
the data that measures it:
1. eta_kv from the slopes of vLLM's decode step time against context (each extra context token
   is one more KV read);
2. step_overhead_ms and eta_weights jointly on vLLM's decode step times at batch 1 and Vidur's
   linear-op kernel times at <= 64 tokens (weight reads); batch-1 latencies alone cannot tell
   fixed overhead from weight reads;
3. eta_flops on the kernel times at >= 1024 tokens (compute-bound GEMMs).
Points in between (256 tokens) and the `check` points, simulated end to end with the fitted
factors, are reported, not fitted. `scripts/calibrate.py` runs this and writes
docs/calibration.md.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.config.schema import Config, EngineConfig, GpuConfig, load_option
from sim.hardware.kvcache import kv_bytes_per_token
from sim.hardware.perf import Roofline

PARAMS = ("step_overhead_ms", "eta_weights", "eta_kv", "eta_flops")
# the factors this fit sets as defaults; the others are refitted end to end to measured vLLM
# runs by scripts/fit_engine.py (sim.studies.fit), starting from this fit
KERNEL_OWNED = ("eta_kv", "eta_flops")
LOWER = (0.0, 0.3, 0.3, 0.2)
UPPER = (5.0, 1.0, 1.0, 1.0)
POINTS = Path(__file__).resolve().parents[2] / "calibration" / "points.yaml"


MEMORY_BOUND_TOKENS = 64  # Vidur points at or below this many tokens fit eta_weights
COMPUTE_BOUND_TOKENS = 1024  # ... at or above this many tokens fit eta_flops


@dataclass
class Row:
    group: str
    id: str
    what: str
    measured: float
    predicted: float = math.nan
    stage: str = ""  # which factor(s) the point fits; "" for reported-only points

    @property
    def fitted(self) -> bool:
        return bool(self.stage)

    @property
    def error(self) -> float:
        return self.predicted / self.measured - 1


def load_points(path: Path = POINTS) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text())


def with_factors(engine: EngineConfig, theta) -> EngineConfig:
    return dataclasses.replace(engine, **dict(zip(PARAMS, (float(x) for x in theta), strict=True)))


def _layer_params(arch: dict) -> float:
    h, hd = arch["hidden"], arch["head_dim"]
    qkv = h * (arch["heads"] + 2 * arch["kv_heads"]) * hd
    out = arch["heads"] * hd * h
    mlp = 3 * h * arch["intermediate"]
    return float(qkv + out + mlp)


def _reference(gpu: GpuConfig) -> GpuConfig:
    """The GPU as this fit sees it: peak figures at one shared efficiency (gpu.efficiency = 1)."""
    return dataclasses.replace(gpu, efficiency=1.0)


class Fit:
    """The fit points with everything each prediction needs, resolved once."""

    def __init__(self, points: dict):
        self.engine = load_option("engine", "vllm")
        self.rows: list[Row] = []
        self._itl = []  # (model, gpu, kv dtype, context)
        self._lin = []  # (gpu, params per layer per rank, tokens)
        self.slopes: list[Row] = []
        self._slope_bytes_per_s = []  # KV bytes per token / peak bandwidth, per slope row
        # One efficiency for every generation: this fit needs H100 and B200 together to tell fixed
        # overhead from weight reads, so it cannot also scale B200 by the generation factor that
        # scripts/fit_engine.py derives from these same points afterwards (gpu.efficiency).
        for e in points["fit"]["itl"]:
            model, gpu = load_option("model", e["model"]), _reference(load_option("gpu", e["gpu"]))
            self.slopes.append(
                Row("kv_slope", e["id"], "ms per 1k context", e["slope_ms_per_token"] * 1000, stage="kv")
            )
            kv_bytes = kv_bytes_per_token(model, e["kv_cache_dtype"])
            self._slope_bytes_per_s.append(kv_bytes / (gpu.mem_bw_tbps * 1e12))
            for c in e["contexts"]:
                ms = e["intercept_ms"] + e["slope_ms_per_token"] * c
                self.rows.append(Row("itl", e["id"], f"context {c}", ms, stage="step"))
                # the measured requests decode 128 tokens: mean context is input + 64
                self._itl.append((model, gpu, e["kv_cache_dtype"], c + 64))
        for e in points["fit"]["linear_layers"]:
            gpu = _reference(load_option("gpu", e["gpu"]))
            params = _layer_params(e["arch"]) / e["tp"]
            for tok, ms in e["ms_by_tokens"].items():
                tok = int(tok)
                stage = "step" if tok <= MEMORY_BOUND_TOKENS else "flops" if tok >= COMPUTE_BOUND_TOKENS else ""
                self.rows.append(Row("linear", e["id"], f"{tok} tokens", float(ms), stage=stage))
                self._lin.append((gpu, params, int(tok)))

    def predict(self, theta) -> np.ndarray:
        _step, eta_w, _eta_kv, eta_f = theta  # step and eta_kv act through the Roofline
        out = []
        for model, gpu, kv, ctx in self._itl:
            eng = dataclasses.replace(with_factors(self.engine, theta), kv_cache_dtype=kv)
            out.append(Roofline(model, gpu, eng).iteration_time(1, ctx, []) * 1000)
        for gpu, params, tok in self._lin:
            weights = params * 2 / (eta_w * gpu.mem_bw_tbps * 1e12)
            flops = 2 * params * tok / (eta_f * gpu.bf16_tflops * 1e12)
            out.append(max(weights, flops) * 1000)
        return np.array(out)

    def residuals(self, theta, stage: str) -> np.ndarray:
        pred = self.predict(theta)
        pick = [i for i, r in enumerate(self.rows) if r.stage == stage]
        measured = np.array([self.rows[i].measured for i in pick])
        return np.log(pred[pick] / measured)

    def solve(self) -> np.ndarray:
        from scipy.optimize import least_squares

        x0 = np.clip([getattr(self.engine, p) for p in PARAMS], np.array(LOWER) + 1e-6, np.array(UPPER) - 1e-6)
        step, eta_w, eta_kv, eta_f = x0
        # 1. KV efficiency: slope = KV bytes per token / (eta_kv x bandwidth)
        ideal = np.array(self._slope_bytes_per_s) * 1e6  # ms per 1k tokens at peak bandwidth
        measured = np.array([r.measured for r in self.slopes])
        eta_kv = float(np.clip(np.exp(np.mean(np.log(ideal / measured))), LOWER[2], UPPER[2]))
        # 2. fixed overhead and weight-read efficiency
        step, eta_w = least_squares(
            lambda x: self.residuals([x[0], x[1], eta_kv, eta_f], "step"),
            [step, eta_w],
            bounds=((LOWER[0], LOWER[1]), (UPPER[0], UPPER[1])),
            x_scale=[1.0, 0.1],
        ).x
        # 3. FLOP efficiency on compute-bound GEMMs
        eta_f = least_squares(
            lambda x: self.residuals([step, eta_w, eta_kv, x[0]], "flops"), [eta_f], bounds=(LOWER[3], UPPER[3])
        ).x[0]
        theta = np.round([step, eta_w, eta_kv, eta_f], 3)
        for row, ideal_ms in zip(self.slopes, ideal, strict=True):
            row.predicted = float(ideal_ms / theta[2])
        for row, pred in zip(self.rows, self.predict(theta), strict=True):
            row.predicted = float(pred)
        return theta


# ----------------------------------------------------------------------------- checks


def _config(model: str, gpu: str, engine: EngineConfig, **overrides) -> Config:
    c = Config(model=load_option("model", model), gpu=load_option("gpu", gpu), engine=engine)
    for key, value in overrides.items():
        group, field = key.split(".")
        setattr(getattr(c, group), field, value)
    c.output.plots = False
    return c


def simulate_throughput(entry: dict, engine: EngineConfig, isl: int, osl: int) -> float:
    """Output tokens/s of `requests` requests all arriving at t=0 (a max-throughput benchmark)."""
    from sim.studies.run import run
    from sim.workload.build import Workload

    n = int(entry["requests"])
    eng = dataclasses.replace(
        engine,
        tensor_parallel_size=int(entry["tp"]),
        kv_cache_dtype=entry.get("kv_cache_dtype", "auto"),
        max_num_seqs=1024,
        gpu_memory_utilization=0.95,
    )
    c = _config(entry["model"], entry["gpu"], eng, **{"model.weight_dtype": entry.get("weight_dtype", "bf16")})
    wl = Workload(np.zeros(n), np.full(n, isl, np.int64), np.full(n, osl, np.int64))
    r = run(c, workload=wl)
    return float(r.requests.output_tokens.sum() / r.requests.finish_s.max())


def simulate_batch_latency(entry: dict, engine: EngineConfig) -> float:
    from sim.studies.run import run
    from sim.workload.build import Workload

    n = int(entry["batch"])
    c = _config(entry["model"], entry["gpu"], dataclasses.replace(engine, tensor_parallel_size=int(entry["tp"])))
    wl = Workload(np.zeros(n), np.full(n, entry["input"], np.int64), np.full(n, entry["output"], np.int64))
    return float(run(c, workload=wl).requests.e2e_s.mean() * 1000)


def checks(points: dict, engine: EngineConfig) -> list[Row]:
    rows = []
    for e in points["check"]["throughput"]:
        for shape, tok_s in e["output_tok_s"].items():
            isl, osl = (int(x) for x in shape.split("/"))
            row = Row("throughput", e["id"], f"ISL/OSL {shape}", float(tok_s))
            row.predicted = simulate_throughput(e, engine, isl, osl)
            rows.append(row)
    for e in points["check"]["batch_latency"]:
        row = Row("batch_latency", e["id"], f"bs{e['batch']} in{e['input']} out{e['output']}", float(e["mean_ms"]))
        row.predicted = simulate_batch_latency(e, engine)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- report


def _table(rows: list[Row], unit: str) -> list[str]:
    out = [f"| point | setting | measured ({unit}) | fleetsim ({unit}) | error | fitted |", "|---|---|---|---|---|---|"]
    for r in rows:
        fitted = "yes" if r.fitted else "no"
        out.append(f"| {r.id} | {r.what} | {r.measured:,.4g} | {r.predicted:,.4g} | {r.error:+.1%} | {fitted} |")
    errs = np.abs([r.error for r in rows])
    out.append(f"| **all** | {len(rows)} points | | | mean abs {errs.mean():.1%}, max {errs.max():.1%} | |")
    return out


def _check_section(check_rows: list[Row]) -> list[str]:
    lines: list[str] = []
    if check_rows:
        thr = [r for r in check_rows if r.group == "throughput"]
        lat = [r for r in check_rows if r.group == "batch_latency"]
        lines += [
            "Maximum output throughput, all requests at t=0, fixed lengths (TensorRT-LLM's published",
            "numbers: a different, faster engine; fleetsim models vLLM, so it is expected to be lower):",
            "",
            *_table(thr, "tok/s"),
            "",
            "Mean end-to-end latency of one fixed batch (an older vLLM release with more CPU overhead):",
            "",
            *_table(lat, "ms"),
            "",
        ]
    else:
        lines += ["(skipped: run without --no-check)", ""]
    return lines


MISSES = [
    "## Where the model misses",
    "",
    "- **Prefill-heavy FP8 shapes are optimistic** (2048/128 and 5000/500 above, where fleetsim's",
    "  vLLM beats TensorRT-LLM, the faster engine; the catalogue puts TensorRT-LLM's own 2048/128",
    "  figure at about 45% of the FP8 peak). Long BF16 prefills are not the cause: vLLM's prefill",
    "  of Llama-3.1-8B in BF16 on an H100, timed directly as one request's TTFT at 10k-100k tokens,",
    "  matches fleetsim's default within 5%, median 3.0% (`calibration/prefill_points.yaml`,",
    "  docs/validation.md); prompts of a few thousand tokens are not timed there. FP8 GEMMs are a",
    "  candidate: fleetsim times them at the BF16 kernels' share (`eta_flops`) of a doubled peak,",
    "  and no vLLM FP8 prefill timing is at hand to fit them. For prefill-heavy FP8 plans, lower",
    "  `engine.eta_prefill` as a sensitivity check (it slows prefill chunks only, not decoding).",
    "- **Long contexts under an unbounded queue** (20000/2000): with a deep queue, vLLM-style chunked",
    "  prefill puts a full token-budget chunk into every iteration, so the KV-limited decode batch",
    "  advances one token per long iteration. TensorRT-LLM's scheduler does better there; fleetsim",
    "  reports what the vLLM policy does.",
    "- **H100 vs B200 batch-1 decode**: one set of factors is +6-13% on H100 and -1-6% on B200; the",
    "  two engines' published intercepts imply more fixed overhead per step on B200.",
    "",
]


def report(theta, fit_rows: list[Row], slope_rows: list[Row], check_rows: list[Row], sources: dict) -> str:
    lines = [
        "# Calibration of the performance model",
        "",
        "Generated by `python scripts/calibrate.py` from `calibration/points.yaml`; do not edit by hand.",
        "",
        "The roofline iteration time (see `sim/hardware/perf.py` and docs/model.md) has four free factors. Each",
        "is fitted by least squares on log(predicted / measured) to the data that measures it:",
        "",
        "1. `eta_kv` from the slopes of vLLM's decode step time against context: each extra token of",
        "   context is one more KV read;",
        "2. `step_overhead_ms` and `eta_weights` jointly on vLLM's decode step times at batch 1 and on",
        "   GEMM kernel times at <= 64 tokens, where a layer's time is its weight read (batch-1",
        "   latencies alone cannot tell fixed overhead from weight reads: H100 and B200 together",
        "   would need a weight-read efficiency above 1). The fit takes one efficiency for both",
        "   generations (`gpu.efficiency` = 1 here), so it does not lean on the generation factor",
        "   the end-to-end fit derives from the same B200 points;",
        "3. `eta_flops` on GEMM kernel times at >= 1024 tokens, where they are compute-bound.",
        "",
        "Points marked `fitted: no` are reported with the error the fitted model makes there. Target",
        "engine: **vLLM v0.19** (the release the decode-latency fits were measured on); releases move",
        "these figures.",
        "",
        "This kernel-level fit sets the defaults of `eta_kv` and `eta_flops` (which prefill chunks",
        "use too while `eta_prefill` is null, its default). The other factors",
        "(`step_overhead_ms`, `eta_weights`) and the ones only whole-server measurements reveal are",
        "refitted end to end to measured vLLM runs: the last section (`scripts/fit_engine.py`). The",
        "figures in the tables below use this section's factors, not the shipped defaults.",
        "",
        "## Fitted factors (eta_kv and eta_flops are the defaults in conf/engine/vllm.yaml)",
        "",
        "| factor | value | meaning |",
        "|---|---|---|",
        f"| step_overhead_ms | {theta[0]:.3f} | fixed time per iteration (scheduling, launch, sampling) |",
        f"| eta_weights | {theta[1]:.3f} | achieved / peak HBM bandwidth reading weights |",
        f"| eta_kv | {theta[2]:.3f} | achieved / peak HBM bandwidth reading the KV cache |",
        f"| eta_flops | {theta[3]:.3f} | achieved / peak dense tensor FLOPS in matmuls and attention |",
        "",
        "## Fit points",
        "",
        "Slope of the decode step time against context (KV read per token):",
        "",
        *_table(slope_rows, "ms"),
        "",
        "Decode step (inter-token latency) at batch 1 against context, from vLLM's published linear fits:",
        "",
        *_table([r for r in fit_rows if r.group == "itl"], "ms"),
        "",
        "Linear layers of one decoder layer on one TP rank (Vidur kernel profiles, fp16, kernel time only):",
        "",
        *_table([r for r in fit_rows if r.group == "linear"], "ms"),
        "",
        "## Check points (simulated end to end, not fitted)",
        "",
    ]
    lines += _check_section(check_rows) + MISSES
    lines += ["## Sources", ""]
    lines += [f"- `{k}`: {v}" for k, v in sources.items()]
    return "\n".join(lines) + "\n"


def sources_of(points: dict) -> dict:
    """Point id -> source, in file order."""
    return {e["id"]: e["source"] for section in points.values() for entries in section.values() for e in entries}


def write_engine_defaults(path: Path, theta) -> None:
    """Replace the lines of the factors this fit owns in conf/engine/vllm.yaml, keeping
    everything else."""
    lines = path.read_text().splitlines()
    values = {k: v for k, v in zip(PARAMS, theta, strict=True) if k in KERNEL_OWNED}
    out = []
    for line in lines:
        key = line.split(":", 1)[0].strip()
        out.append(f"{key}: {values[key]:g}" if key in values and not line.startswith(" ") else line)
    path.write_text("\n".join(out) + "\n")
