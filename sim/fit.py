"""End-to-end fit of the engine's time factors to measured runs, with leave-one-model-out
cross-validation.

The kernel-level calibration (`sim.calibrate`) fits the roofline to micro-benchmarks; this fit
adjusts the factors that only whole-server measurements reveal, by replaying measured runs
(`sim.validate`) and minimising the log errors of each stage's mean TTFT and mean ITL:

- `step_overhead_ms`: time per iteration outside the roofline (scheduling, launch, sampling);
- `step_overhead_per_seq_us`: its growth with the batch (input preparation, sampling, output
  processing per sequence);
- `request_overhead_ms`: client-visible time outside the engine (HTTP, tokenising, streaming);
- `eta_weights`, `eta_kv`: achieved bandwidth reading weights and the KV cache;
- `eta_moe`: expert-weight reads relative to dense ones (grouped GEMMs over few tokens).

`eta_flops` stays at its kernel fit: the measured runs hit the prefix cache on almost every
prompt, so they hardly measure prefill compute.

Leave-one-model-out: for each model, fit on the runs of the other models and predict the
held-out model's runs; the cross-validated error is what a user should expect on a model the
fit has not seen.
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.validate import simulate

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
    """Measured runs and what replaying them needs."""

    runs: list[dict]
    models: dict
    inflation: dict

    def subset(self, keep) -> Runs:
        return Runs([r for r in self.runs if keep(r)], self.models, self.inflation)


def engine_of(theta) -> dict:
    return {k: float(v) for k, v in zip(PARAMS, theta, strict=True)}


def _one(args) -> pd.DataFrame:
    run, models, inflation, engine, max_stage_s = args
    return simulate(run, models, inflation, 0, engine, max_stage_s)


def replay(data: Runs, theta, max_stage_s: float | None = None, workers: int = 1) -> pd.DataFrame:
    """Every run replayed with the factors `theta`."""
    jobs = [(r, data.models, data.inflation, engine_of(theta), max_stage_s) for r in data.runs]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            frames = list(pool.map(_one, jobs))
    else:
        frames = [_one(j) for j in jobs]
    return pd.concat(frames, ignore_index=True)


def residuals(df: pd.DataFrame) -> np.ndarray:
    """log(simulated / measured) of each stage's fitted metrics (stages, not the whole run, so
    a two-stage run is not counted three times)."""
    rows = df[(df["stage"] >= 0) & df["metric"].isin(FIT_METRICS)]
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
    theta = fit(data.subset(lambda r: r["model"] != model), workers)
    held = replay(data.subset(lambda r: r["model"] == model), theta)
    return model, theta, held


def leave_one_model_out(data: Runs, workers: int = 1) -> tuple[pd.DataFrame, dict]:
    """Each model's runs predicted by a fit to the other models' runs."""
    models = sorted({r["model"] for r in data.runs})
    jobs = [(data, m, 1) for m in models]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            out = list(pool.map(_fold, jobs))
    else:
        out = [_fold(j) for j in jobs]
    return pd.concat([held for _, _, held in out], ignore_index=True), {m: t for m, t, _ in out}


def medians(df: pd.DataFrame) -> dict:
    whole = df[df["stage"] == -1]
    out = {}
    for metric, g in whole.groupby("metric"):
        out[metric] = (float(g["error_pct"].median()), float(g["error_pct"].abs().median()))
    return out


def fmt(theta) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in zip(PARAMS, theta, strict=True))


def is_finite(theta) -> bool:
    return all(math.isfinite(float(v)) for v in theta)
