"""The autoscaler's failure modes, counted and priced for the summary (docs/metrics.md,
"Failure modes"): oscillation (direction reversals and the cold starts they cause), scale-ups
decided during a replica's warm-up, GPUs held through zero traffic, requests dropped by a
scale-down without drain, and waits for GPU capacity. From what the simulation recorded
(`des.records.Outcome`); no SimPy."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.config.schema import Config
from sim.des.records import Outcome
from sim.pricing.cost import HOURS_PER_MONTH, state_weight


def zero_traffic_windows(arrival: np.ndarray, finish: np.ndarray, end: float, min_s: float) -> np.ndarray:
    """The stretches of [0, end] with no request in the system (none arrived and not yet
    finished) lasting at least `min_s`, as rows (start, stop), in time order."""
    if len(arrival) == 0:
        return np.array([[0.0, end]]) if end >= min_s else np.zeros((0, 2))
    order = np.argsort(arrival, kind="stable")
    a = arrival[order]
    f = np.maximum.accumulate(np.nan_to_num(finish[order], nan=end))  # the system is busy until then
    starts = np.concatenate([[0.0], f])  # a gap opens when all earlier requests are done ...
    stops = np.concatenate([a, [end]])  # ... and closes with the next arrival
    keep = stops - starts >= min_s
    return np.column_stack([starts[keep], stops[keep]])


def held_in_windows(spans: list, windows: np.ndarray, sleep_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Per span: its billed GPU-seconds within the windows (GPUs x overlap x the state's billing
    weight), and whether it is a spot replica's."""
    if not spans or not len(windows):
        return np.zeros(len(spans)), np.zeros(len(spans), dtype=bool)
    lengths = np.concatenate([[0.0], np.cumsum(windows[:, 1] - windows[:, 0])])

    def covered(t: np.ndarray) -> np.ndarray:  # window time before t
        k = np.searchsorted(windows[:, 0], t, side="right")  # windows that start at or before t
        j = np.maximum(k - 1, 0)
        partial = np.clip(t - windows[j, 0], 0.0, windows[j, 1] - windows[j, 0])
        return np.where(k > 0, lengths[j] + partial, 0.0)

    start = np.array([s.start for s in spans])
    stop = np.array([s.end for s in spans])
    weight = np.array([s.gpus * state_weight(s.state, sleep_fraction) for s in spans])
    return (covered(stop) - covered(start)) * weight, np.array([s.spot for s in spans], dtype=bool)


def failure_summary(cfg: Config, df: pd.DataFrame, out: Outcome) -> dict:
    """The failure-mode keys of the summary (`output.failure_modes`, docs/metrics.md)."""
    f, price = cfg.fleet, cfg.gpu.price_per_hour
    fails = dict(out.failures)
    rev_cost = fails["reversal_cold_starts"] * out.cold_start_s * cfg.engine.tensor_parallel_size * price / 3600.0
    windows = zero_traffic_windows(
        df["arrival_s"].to_numpy(float),
        df["finish_s"].to_numpy(float),
        out.end_s,
        cfg.output.failure_modes.zero_traffic_s,
    )
    gpu_s, spot = held_in_windows(out.spans, windows, f.sleep.cost_fraction)
    idle_cost = float((gpu_s * np.where(spot, f.pricing.spot_fraction, 1.0)).sum()) * price / 3600.0
    waits = np.array([e - s for _, s, e in out.pending])
    cost = rev_cost + idle_cost
    return {
        "autoscale_reversals": fails["autoscale_reversals"],
        "reversal_cold_starts": fails["reversal_cold_starts"],
        "reversal_cold_start_cost": rev_cost,
        "scaleups_during_warmup": fails["scaleups_during_warmup"],
        "dropped_on_scale_down": fails["dropped_on_scale_down"],
        "zero_traffic_s": float((windows[:, 1] - windows[:, 0]).sum()) if len(windows) else 0.0,
        "idle_zero_traffic_gpu_s": float(gpu_s.sum()),
        "idle_zero_traffic_cost": idle_cost,
        "pending_gpu_waits": len(waits),
        "pending_gpu_wait_s_mean": float(waits.mean()) if len(waits) else 0.0,
        "pending_gpu_wait_s_p95": float(np.percentile(waits, 95)) if len(waits) else 0.0,
        "pending_gpu_wait_s_total": float(waits.sum()),
        **{k: v for k, v in fails.items() if k.endswith(("_correction_mean", "_correction_max"))},
        "failure_cost": cost,
        "failure_cost_per_month": cost / out.end_s * 3600.0 * HOURS_PER_MONTH if out.end_s > 0 else 0.0,
    }
