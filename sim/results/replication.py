"""Replications over seeds: one summary from several runs' summaries, with the mean of every
number, 95% Student-t intervals for the figures that decide a plan, and a pessimistic verdict on
the SLO and the API's monthly cap. No SimPy."""

from __future__ import annotations

import math

import pandas as pd

from sim.config.schema import Config

# summary keys reported with a 95% interval when a run is replicated over seeds
INTERVAL_KEYS = (
    "total_cost",
    "cost_per_hour",
    "cost_per_mtok",
    "ttft_p99",
    "tpot_p99",
    "slo_attainment",
    "ttft_slo_percentile",
    "tpot_slo_percentile",
)


COUNTS = ("api_refusals", "n_requests", "n_gpu", "n_api", "n_rejected")


def interval(values) -> tuple[float, float]:
    """95% Student-t interval of the mean of `values` (NaNs, i.e. seeds that measured nothing,
    left out); NaN bounds with fewer than two values."""
    import numpy as np
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return math.nan, math.nan
    m, half = float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m - half, m + half


def _mean(values: list):
    """The mean over seeds of one summary value: booleans all-true, numbers averaged (NaN and
    missing left out), dicts key by key, anything else (names) the first seed's."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, bool):
        return bool(all(present))
    if isinstance(first, (int, float)):
        nums = [float(v) for v in present if isinstance(v, (int, float)) and math.isfinite(v)]
        return sum(nums) / len(nums) if nums else math.nan
    if isinstance(first, dict):
        keys = list(dict.fromkeys(k for v in present if isinstance(v, dict) for k in v))
        return {k: _mean([v.get(k) for v in present if isinstance(v, dict)]) for k in keys}
    return first


def combine(cfg: Config, summaries: list[dict], how: str) -> tuple[dict, pd.DataFrame]:
    """The replicated summary and the per-seed table (`how`: what varied between the runs)."""
    # counts a seed reports only when they happened (api_refusals.<reason>, the requests of a
    # class that sent none) are 0 in the others; a missing latency or attainment stays missing
    keys = list(dict.fromkeys(k for s in summaries for k in s))
    for s in summaries:
        s.update({k: 0 for k in keys if k not in s and k.split(".", 1)[0] in COUNTS})
    per_seed = pd.DataFrame([{"seed": seed, **s} for seed, s in zip(cfg.seeds, summaries, strict=True)])
    summary = {key: _mean([s.get(key) for s in summaries]) for key in keys}
    for key in INTERVAL_KEYS:
        values = per_seed[key].to_numpy(dtype=float)
        low, high = interval(values)
        top = 1.0 if key == "slo_attainment" else math.inf  # clip to the quantity's range
        summary[f"{key}_ci_low"] = min(max(low, 0.0), top) if math.isfinite(low) else math.nan
        summary[f"{key}_ci_high"] = min(max(high, 0.0), top) if math.isfinite(high) else math.nan
    slo = cfg.slo
    served = (per_seed["n_requests"] - per_seed["n_rejected"] > 0).all()
    summary["slo_met"] = bool(
        not summary["ttft_slo_percentile_ci_high"] > slo.ttft_s  # NaN (nothing measured) passes
        and not summary["tpot_slo_percentile_ci_high"] > slo.tpot_s
        and summary["slo_attainment_ci_low"] >= slo.attainment
        and served
    )
    summary["slo_met_seeds"] = float(per_seed["slo_met"].mean())
    if "api_cap_exceeded" in per_seed:  # pessimistic, like slo_met: any seed, or the mean, over the cap
        cap = cfg.api.monthly_cap_usd if not cfg.api.tiers else summary.get("api_monthly_cap")
        over_mean = cap is not None and math.isfinite(cap) and summary["api_cost_per_month"] > cap
        summary["api_cap_exceeded"] = bool(per_seed["api_cap_exceeded"].astype(bool).any() or over_mean)
    summary["n_seeds"] = len(summaries)
    # what varies between the replications: the synthetic draws (seeds), a block bootstrap of a
    # replayed trace, or nothing but the simulation's own randomness (a fixed trace)
    summary["replication"] = how
    summary["wall_time_s"] = float(per_seed["wall_time_s"].sum())
    return summary, per_seed
