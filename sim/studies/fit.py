"""End-to-end fit of the engine's time factors to measured runs, with leave-one-model-out
cross-validation.

The kernel-level calibration (`sim.studies.calibrate`) fits the roofline to micro-benchmarks; this fit
adjusts the factors that only whole-server measurements reveal, by replaying measured runs
(`sim.studies.validate`) and minimising the log errors of each stage's mean TTFT and mean ITL:

- `step_overhead_ms`: time per iteration outside the roofline (scheduling, launch, sampling);
- `step_overhead_per_seq_us`: its growth with the batch (input preparation, sampling, output
  processing per sequence);
- `request_overhead_ms`: client-visible time outside the engine (HTTP, tokenising, streaming);
- `eta_weights`, `eta_kv`: achieved bandwidth reading weights and the KV cache;
- `eta_moe`: expert-weight reads relative to dense ones (grouped GEMMs over few tokens).

`eta_flops` (decoding sequences' matmuls) stays at its kernel fit, and `eta_prefill` (prefill
chunks end to end) at its default. The runs hit the prefix cache on almost every prompt, except
their first requests: each distinct prompt is prefilled whole the first time. Where those cold
prompts are at least 1% of the first stage (and the model has their prefill compute-bound), the
stage's TTFT p99 falls among them: `fit_prefill` reads the eta_prefill they would ask for if
prefill set them, reported beside the fit (docs/calibration.md), not adopted: vLLM's prefill
timed directly (calibration/prefill_points.yaml) matches the default, so it is not their cause.

Published vLLM step-time points on the runs' GPU (batch latency, concurrency-1 ITL: a points
file in the layout of published_points.yaml) join the fit, one log error each: they add models
the runs lack (a second MoE, Mixtral), so a held-out model's factors are not left at their
starting values. Throughput points stay out: their figures hang on assumed ShareGPT lengths.

Leave-one-model-out: for each model, fit on the runs and points of the other models and predict
the held-out model's; the cross-validated error is what a user should expect on a model the fit
has not seen.
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sim.studies.validate import DECODE_METRICS, point_kind, point_model, simulate, simulate_point

PARAMS = (
    "step_overhead_ms",
    "step_overhead_per_seq_us",
    "request_overhead_ms",
    "eta_weights",
    "eta_moe",
)
LOWER = np.array([0.0, 0.0, 0.0, 0.4, 0.3])
UPPER = np.array([10.0, 200.0, 50.0, 1.0, 1.0])
START = np.array([0.773, 5.0, 5.0, 0.716, 1.0])
PREFILL_LOW = 0.15  # the least eta_prefill `fit_prefill` tries (the most: the GEMMs' eta_flops)
FIT_METRICS = ("ttft_mean", "itl_mean")
COLD_SHARE = 0.01  # a first stage's TTFT p99 falls among its cold prompts when they are >= 1% of it
F_SCALE = 0.05  # the robust loss's scale: log errors beyond ~5% count linearly, not squared
FIT_STAGE_S = 300.0  # stages shortened to this for the fit (the report replays them whole)
DIGITS = 4  # significant digits conf/engine/vllm.yaml stores of each fitted factor
ROUGH_STEP, ROUGH_TRIES = 1e-4, 4  # `roughness`: each factor moved by 0.01%, four times
RESOLUTION = 0.005  # a refit replaces the shipped factors only if it lowers the loss by more than this share


@dataclass
class Runs:
    """Measured runs and published points, and what replaying them needs."""

    runs: list[dict]
    models: dict
    inflation: dict
    points: list[dict] = field(default_factory=list)  # published step-time points (`fit_points`)
    point_models: dict = field(default_factory=dict)  # their architectures (the catalog's)

    def model_names(self) -> list[str]:
        return sorted({r["model"] for r in self.runs} | {point_model(p, self.point_models) for p in self.points})

    def subset(self, keep) -> Runs:
        """The runs and points whose model name passes `keep`."""
        return Runs(
            [r for r in self.runs if keep(r["model"])],
            self.models,
            self.inflation,
            [p for p in self.points if keep(point_model(p, self.point_models))],
            self.point_models,
        )


def fit_points(points: list[dict], gpu: str = "h100") -> list[dict]:
    """The published points the fit uses: vLLM's own step-time measurements (batch latency,
    concurrency-1 ITL) on `gpu`. Other engines' figures are bounds, not targets; throughput
    figures depend on lengths the sources do not publish."""
    return [
        p
        for p in points
        if "TensorRT" not in str(p.get("engine", ""))
        and str(p.get("gpu", "")).lower() == gpu
        and point_kind(p)[0] in DECODE_METRICS
    ]


def engine_of(theta, **extra) -> dict:
    return {**{k: float(v) for k, v in zip(PARAMS, theta, strict=True)}, **extra}


def _one(args) -> pd.DataFrame:
    item, models, inflation, engine, max_stage_s = args
    if inflation is None:  # a published point
        return pd.DataFrame([simulate_point(item, models, engine)]).assign(source="point")
    return simulate(item, models, inflation, 0, engine, max_stage_s).assign(source="run")


def replay(data: Runs, theta, max_stage_s: float | None = None, workers: int = 1, **extra) -> pd.DataFrame:
    """Every run and point replayed with the factors `theta` and `extra` engine keys (`source`:
    run or point)."""
    engine = engine_of(theta, **extra)
    jobs = [(r, data.models, data.inflation, engine, max_stage_s) for r in data.runs]
    jobs += [(p, data.point_models, None, engine, None) for p in data.points]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            frames = list(pool.map(_one, jobs))
    else:
        frames = [_one(j) for j in jobs]
    return pd.concat(frames, ignore_index=True)


def cold_prefill(run: dict, models: dict, inflation: dict) -> bool:
    """Whether a run's first-stage TTFT p99 can measure prefill compute (`eta_prefill`): it was
    measured; the stage's distinct prompts, each prefilled the first time beyond its group's
    cached system prompt (the prefix cache starts empty), are at least COLD_SHARE of its
    requests, so its slowest 1% can fall among them (in the replays they do at eta_prefill ~0.35;
    at the GEMMs' 0.637 warm requests set two runs' p99); and the model has that prefill
    compute-bound even at the GEMMs' efficiency, so eta_prefill at or below it acts on it (an
    MoE's is bound by its expert-weight reads)."""
    import dataclasses

    from sim.hardware.perf import Roofline
    from sim.studies.validate import prompt_tokens, run_config

    spec = run["workload_spec"]
    rate, duration = spec["stages"][0]
    if "ttft_p99" not in ((run.get("actual_ms") or {}).get("0") or {}):
        return False
    if int(spec["num_groups"]) * int(spec["prompts_per_group"]) < COLD_SHARE * int(rate * duration):
        return False
    cfg = run_config(run, models)
    engine = dataclasses.replace(cfg.engine, eta_prefill=None)  # the GEMMs' efficiency
    chunk = min(prompt_tokens(run, models, inflation), engine.max_num_batched_tokens or math.inf)
    _, mem, comp = Roofline(cfg.model, cfg.gpu, engine).pass_terms(0, 1, 0, [(int(chunk), 0)])
    return comp > mem


def residuals(df: pd.DataFrame) -> np.ndarray:
    """log(simulated / measured) of each stage's fitted metrics (stages, not the whole run, so
    a two-stage run is not counted three times) and of each point."""
    runs = (df["source"] == "run") & (df["stage"] >= 0) & df["metric"].isin(FIT_METRICS)
    rows = df[runs | (df["source"] == "point")]
    return np.log(rows["simulated"].to_numpy() / rows["measured"].to_numpy())


def _soft_l1(z: np.ndarray) -> float:
    """least_squares' soft-L1 loss at f_scale F_SCALE, summed."""
    return float(np.sum(2 * F_SCALE**2 * (np.sqrt(1 + (z / F_SCALE) ** 2) - 1)))


def first_stage(run: dict) -> dict:
    """The run cut to its first stage and that stage's measurements."""
    spec = {**run["workload_spec"], "stages": run["workload_spec"]["stages"][:1]}
    return {**run, "workload_spec": spec, "actual_ms": {"0": (run.get("actual_ms") or {}).get("0", {})}}


def cold_runs(data: Runs) -> Runs:
    """The runs whose first stage measures prefill (`cold_prefill`), cut to that stage."""
    keep = [first_stage(r) for r in data.runs if cold_prefill(r, data.models, data.inflation)]
    return Runs(keep, data.models, data.inflation)


def fit_prefill(data: Runs, theta, workers: int = 1) -> float | None:
    """The eta_prefill the cold prefills would ask for, given the other factors `theta`: the value whose
    replays of the cold runs' first stages (whole) match their TTFT p99 best (soft-L1 on the log
    errors). None without cold runs."""
    from scipy.optimize import minimize_scalar

    cold = cold_runs(data)
    if not cold.runs:
        return None

    def loss(eta: float) -> float:
        df = replay(cold, theta, None, workers, eta_prefill=eta)
        p99 = df[(df["stage"] == 0) & (df["metric"] == "ttft_p99")]
        return _soft_l1(np.log(p99["simulated"].to_numpy() / p99["measured"].to_numpy()))

    from sim.config.schema import load_option

    top = load_option("engine", "vllm").eta_flops
    return float(minimize_scalar(loss, bounds=(PREFILL_LOW, top), method="bounded", options={"xatol": 2e-3}).x)


def fit(data: Runs, workers: int = 1, start=START) -> np.ndarray:
    from scipy.optimize import least_squares

    def f(theta):
        return residuals(replay(data, theta, FIT_STAGE_S, workers))

    sol = least_squares(
        f,
        np.clip(start, LOWER, UPPER),
        bounds=(LOWER, UPPER),
        x_scale=np.maximum(np.abs(start), 0.1),
        diff_step=0.02,
        loss="soft_l1",  # robust: a run the model cannot explain does not drag the rest
        f_scale=F_SCALE,
        xtol=1e-3,
        ftol=1e-4,
        max_nfev=80,
    )
    return sol.x


def loss(data: Runs, theta, workers: int = 1, max_stage_s: float | None = FIT_STAGE_S) -> float:
    """The fit's objective at `theta`: the soft-L1 sum of the log errors (`residuals`), stages cut
    to `max_stage_s` (the fit's shortcut) or whole (None: the replays the reports show)."""
    return _soft_l1(residuals(replay(data, theta, max_stage_s, workers)))


def shippable(theta) -> np.ndarray:
    """The factors as conf/engine/vllm.yaml stores them: DIGITS significant digits."""
    return np.array([float(f"{float(v):.{DIGITS}g}") for v in theta])


def roughness(data: Runs, theta, workers: int = 1, tries: int = ROUGH_TRIES) -> float:
    """How much the whole-replay loss moves, as a share of its value at `theta`, when every factor
    moves by ROUGH_STEP of itself (signs drawn with a fixed seed; within LOWER..UPPER): the largest
    of `tries`. A replay is piecewise in the factors (whole steps, discrete admissions), so the
    loss has a grain; a difference of that size says nothing about which factors fit better."""
    rng = np.random.default_rng(0)
    base = loss(data, theta, workers, None)
    steps = [1 + ROUGH_STEP * rng.choice([-1.0, 1.0], len(theta)) for _ in range(tries)]
    moved = [loss(data, np.clip(np.asarray(theta, float) * s, LOWER, UPPER), workers, None) for s in steps]
    return max(abs(m / base - 1) for m in moved)


def shipped() -> np.ndarray:
    """The factors conf/engine/vllm.yaml ships."""
    from sim.config.schema import load_option

    engine = load_option("engine", "vllm")
    return np.array([float(getattr(engine, p)) for p in PARAMS])


@dataclass
class Settled:
    """The factors to ship (`theta`) and how they were chosen (`settle`)."""

    theta: np.ndarray
    fitted: np.ndarray  # the fit's optimum, as it would be stored (`shippable`)
    fitted_loss: float  # whole-replay losses (`loss` with whole stages)
    shipped_loss: float
    kept: bool  # theta is the shipped factors
    grain: float = math.nan  # the loss's `roughness` at the shipped factors, where measured


def settle(data: Runs, fitted, current, workers: int = 1) -> Settled:
    """The fit's optimum, unless the shipped factors `current` score within RESOLUTION of it. Both
    are scored as they would ship (`shippable`: the optimum's later digits are not stored, and the
    loss moves at that scale) on whole stages (the fit's 300 s cut chooses candidates; the
    replays the reports show decide). The per-step and per-sequence overheads trade for each other
    along a valley of nearly equal loss, so refits land at different points of it; moving to one
    would shift every figure derived from the factors by a gain the data cannot show. A
    non-finite loss never wins."""
    fitted, current = shippable(fitted), np.array(current, float)
    new, old = loss(data, fitted, workers, None), loss(data, current, workers, None)
    keep = math.isfinite(old) and not (new < old * (1 - RESOLUTION))
    return Settled(current if keep else fitted, fitted, new, old, keep)


def _fold(args):
    data, model, workers = args
    theta = fit(data.subset(lambda m: m != model), workers)
    held = replay(data.subset(lambda m: m == model), theta)
    return model, theta, held


def leave_one_model_out(data: Runs, workers: int = 1) -> tuple[pd.DataFrame, dict]:
    """Each model's runs and points predicted by a fit to the other models'."""
    models = data.model_names()
    jobs = [(data, m, 1) for m in models]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            out = list(pool.map(_fold, jobs))
    else:
        out = [_fold(j) for j in jobs]
    return pd.concat([held for _, _, held in out], ignore_index=True), {m: t for m, t, _ in out}


def medians(df: pd.DataFrame) -> dict:
    """Median signed and absolute whole-run error per metric, over the runs."""
    whole = df[(df["stage"] == -1) & (df["source"] == "run")]
    out = {}
    for metric, g in whole.groupby("metric"):
        out[metric] = (float(g["error_pct"].median()), float(g["error_pct"].abs().median()))
    return out


def fmt(theta) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in zip(PARAMS, theta, strict=True))


def is_finite(theta) -> bool:
    return all(math.isfinite(float(v)) for v in theta)
