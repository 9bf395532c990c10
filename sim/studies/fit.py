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

`eta_flops` stays at its kernel fit: the measured runs hit the prefix cache on almost every
prompt, so they hardly measure prefill compute.

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
FIT_METRICS = ("ttft_mean", "itl_mean")
FIT_STAGE_S = 300.0  # stages shortened to this for the fit (the report replays them whole)


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


def engine_of(theta) -> dict:
    return {k: float(v) for k, v in zip(PARAMS, theta, strict=True)}


def _one(args) -> pd.DataFrame:
    item, models, inflation, engine, max_stage_s = args
    if inflation is None:  # a published point
        return pd.DataFrame([simulate_point(item, models, engine)]).assign(source="point")
    return simulate(item, models, inflation, 0, engine, max_stage_s).assign(source="run")


def replay(data: Runs, theta, max_stage_s: float | None = None, workers: int = 1) -> pd.DataFrame:
    """Every run and point replayed with the factors `theta` (`source`: run or point)."""
    engine = engine_of(theta)
    jobs = [(r, data.models, data.inflation, engine, max_stage_s) for r in data.runs]
    jobs += [(p, data.point_models, None, engine, None) for p in data.points]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            frames = list(pool.map(_one, jobs))
    else:
        frames = [_one(j) for j in jobs]
    return pd.concat(frames, ignore_index=True)


def residuals(df: pd.DataFrame) -> np.ndarray:
    """log(simulated / measured) of each stage's fitted metrics (stages, not the whole run, so
    a two-stage run is not counted three times) and of each point."""
    runs = (df["source"] == "run") & (df["stage"] >= 0) & df["metric"].isin(FIT_METRICS)
    rows = df[runs | (df["source"] == "point")]
    return np.log(rows["simulated"].to_numpy() / rows["measured"].to_numpy())


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
        f_scale=0.05,
        xtol=1e-3,
        ftol=1e-4,
        max_nfev=80,
    )
    return sol.x


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
