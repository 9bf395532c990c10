"""Per-request table, time series and summary: every metric defined once (docs/metrics.md).

Plain NumPy/pandas on the records the simulation wrote; nothing here touches SimPy.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sim.config.schema import Config, has_trace
from sim.des.records import REASON_NAMES, ROUTE_API, ROUTE_GPU, ROUTE_NAMES, ROUTE_REJECTED, RecordArrays
from sim.pricing.cost import HOURS_PER_MONTH
from sim.workload.build import Workload

REQUEST_COLUMNS = (
    "id",
    "arrival_s",
    "prompt_tokens",
    "output_tokens",
    "cached_tokens",
    "route",
    "replica",
    "queue_s",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "finish_s",
    "preemptions",
    "reject_reason",
    "class",
    "served_output_tokens",
)


def requests_frame(workload: Workload, rec: RecordArrays) -> pd.DataFrame:
    arrival = workload.arrival_s
    out = np.where(rec.served_output >= 0, rec.served_output, workload.output_tokens)  # an API cap may cut it
    served = (rec.route == ROUTE_GPU) | (rec.route == ROUTE_API)
    ttft = np.where(served, rec.first_token - arrival, np.nan)
    e2e = np.where(served, rec.finish - arrival, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (e2e - ttft) / (out - 1), np.nan)
    route_names = np.array([ROUTE_NAMES[k] for k in (ROUTE_GPU, ROUTE_API, ROUTE_REJECTED)])
    reasons = np.array([REASON_NAMES[k] for k in sorted(REASON_NAMES)])
    return pd.DataFrame(
        {
            "id": np.arange(len(arrival), dtype=np.int64),
            "arrival_s": arrival,
            "prompt_tokens": workload.prompt_tokens,
            "output_tokens": workload.output_tokens,
            "cached_tokens": rec.cached,
            "route": route_names[rec.route],
            "replica": rec.replica,
            "queue_s": rec.start - arrival,
            "ttft_s": ttft,
            "tpot_s": tpot,
            "e2e_s": e2e,
            "finish_s": rec.finish,
            "preemptions": rec.preemptions,
            "reject_reason": reasons[rec.reason],
            "class": workload.class_of(),
            "served_output_tokens": out,
        }
    )


def _pct(values: np.ndarray, q: float) -> float:
    values = values[~np.isnan(values)]
    return float(np.percentile(values, q)) if len(values) else math.nan


def slo_thresholds(df: pd.DataFrame, cfg: Config, class_slo: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per-request TTFT and TPOT thresholds: the slo group's, or the request class's own."""
    ttft = np.full(len(df), cfg.slo.ttft_s)
    tpot = np.full(len(df), cfg.slo.tpot_s)
    if class_slo:
        cls = df["class"].to_numpy()
        for name, (t1, t2) in class_slo.items():
            mine = cls == name
            if t1 is not None:
                ttft[mine] = t1
            if t2 is not None:
                tpot[mine] = t2
    return ttft, tpot


def slo_mask(df: pd.DataFrame, ttft_s, tpot_s) -> np.ndarray:
    """Requests that met both thresholds (scalars or per-request arrays); one-token outputs have
    no TPOT to miss; rejected requests miss."""
    ttft = df["ttft_s"].to_numpy()
    tpot = df["tpot_s"].to_numpy()
    with np.errstate(invalid="ignore"):
        return (ttft <= ttft_s) & ((tpot <= tpot_s) | np.isnan(tpot)) & (df["route"].to_numpy() != "rejected")


def summarize(
    cfg: Config,
    df: pd.DataFrame,
    *,
    sim_duration_s: float,
    busy_s: float,
    occupancy_s: float,
    replica_seconds: float,
    gpu_cost: float,
    api_cost: float,
    ops_cost: float = 0.0,
    egress_cost: float = 0.0,
    arrival_span_s: float | None = None,
    capacity_rps: float = math.nan,
    mean_replicas: float = 0.0,
    max_replicas: int = 0,
    class_slo: dict | None = None,
    extra: dict | None = None,
) -> dict:
    route = df["route"].to_numpy()
    served = route != "rejected"
    ttft, tpot, e2e = df["ttft_s"].to_numpy(), df["tpot_s"].to_numpy(), df["e2e_s"].to_numpy()
    ok = slo_mask(df, *slo_thresholds(df, cfg, class_slo or {}))
    attainment, ttft_q, tpot_q, slo_met = _slo(cfg.slo, ok, ttft, tpot, served)
    in_tok, out_tok = (int(df[c].to_numpy()[served].sum()) for c in ("prompt_tokens", "served_output_tokens"))
    total_cost = gpu_cost + api_cost + ops_cost + egress_cost
    tokens = in_tok + out_tok
    span = arrival_span_s if arrival_span_s and arrival_span_s > 0 else sim_duration_s
    # egress is paid per token served, like the API: a rate over the arrival window
    per_hour = cost_rate(gpu_cost + ops_cost, sim_duration_s, api_cost + egress_cost, span)
    gpu_rows = route == "gpu"
    n_gpu = int(gpu_rows.sum())
    summary = {
        **{"n_requests": len(df), "n_gpu": n_gpu, "n_api": int((route == "api").sum())},
        "n_rejected": int((route == "rejected").sum()),
        **{f"ttft_p{q}": _pct(ttft, q) for q in (50, 90, 99)},
        **{f"tpot_p{q}": _pct(tpot, q) for q in (50, 90, 99)},
        **{f"e2e_p{q}": _pct(e2e, q) for q in (50, 99)},
        "slo_attainment": attainment,
        "slo_met": slo_met,
        **{"gpu_cost": gpu_cost, "api_cost": api_cost, "ops_cost": ops_cost, "egress_cost": egress_cost},
        "total_cost": total_cost,
        "cost_per_mtok": total_cost / tokens * 1e6 if tokens else math.nan,
        "input_tokens": in_tok,
        "output_tokens": out_tok,
        "gpu_utilization": _load(n_gpu, mean_replicas * span, capacity_rps),
        "mean_replicas": mean_replicas,
        "max_replicas": max_replicas,
        "preemptions": int(df["preemptions"].sum()),
        "sim_duration_s": sim_duration_s,
        "wall_time_s": 0.0,  # set by the caller once everything is built
    }
    summary.update(
        _more_figures(df, ttft_q, tpot_q, tokens, span, per_hour, sim_duration_s, busy_s, occupancy_s, replica_seconds)
    )
    summary["replica_capacity_rps"] = capacity_rps
    summary.update(_gpu_figures(df, busy_s, replica_seconds))
    summary.update(extra or {})
    summary.update(_per_class(df, ok, route, ttft, tpot, e2e))
    return summary


def _more_figures(
    df: pd.DataFrame,
    ttft_q: float,
    tpot_q: float,
    tokens: int,
    span: float,
    per_hour: float,
    sim_duration_s: float,
    busy_s: float,
    occupancy_s: float,
    replica_seconds: float,
) -> dict:
    """The summary's keys beyond the contract's, up to the capacity: means, the SLO percentiles,
    throughputs and cost rates."""
    served = df["route"].to_numpy() != "rejected"
    queue = df["queue_s"].to_numpy()
    return {
        "ttft_mean": _mean(df["ttft_s"].to_numpy()),
        "tpot_mean": _mean(df["tpot_s"].to_numpy()),
        "e2e_mean": _mean(df["e2e_s"].to_numpy()),
        "queue_mean": _mean(queue),
        "queue_p99": _pct(queue, 99),
        "ttft_slo_percentile": ttft_q,
        "tpot_slo_percentile": tpot_q,
        "throughput_req_s": float(served.sum() / sim_duration_s) if sim_duration_s else math.nan,
        "throughput_tok_s": tokens / sim_duration_s if sim_duration_s else math.nan,
        "cost_per_hour": per_hour,
        "cost_per_month": per_hour * HOURS_PER_MONTH,
        "cost_per_mtok_rate": per_hour / (tokens / span * 3600) * 1e6 if tokens and span else math.nan,
        "arrival_span_s": span,
        "engine_occupancy": occupancy_s / replica_seconds if replica_seconds else 0.0,
    }


def _gpu_figures(df: pd.DataFrame, busy_s: float, replica_seconds: float) -> dict:
    """What the GPUs served and how busy they were; the API's share."""
    route = df["route"].to_numpy()
    gpu_rows = route == "gpu"
    n_gpu = int(gpu_rows.sum())
    return {
        "gpu_mean_prompt_tokens": float(df["prompt_tokens"].to_numpy()[gpu_rows].mean()) if n_gpu else math.nan,
        "gpu_mean_output_tokens": float(df["output_tokens"].to_numpy()[gpu_rows].mean()) if n_gpu else math.nan,
        "gpu_busy": busy_s / replica_seconds if replica_seconds else 0.0,
        "api_share": float((route == "api").mean()) if len(df) else 0.0,
    }


def _slo(slo, ok: np.ndarray, ttft: np.ndarray, tpot: np.ndarray, served: np.ndarray):
    """(attainment, TTFT and TPOT at the SLO's percentile, whether the SLO is met)."""
    attainment = float(ok.mean()) if len(ok) else math.nan
    ttft_q = _pct(ttft, slo.percentile)
    tpot_q = _pct(tpot, slo.percentile)
    met = bool(
        (math.isnan(ttft_q) or ttft_q <= slo.ttft_s)
        and (math.isnan(tpot_q) or tpot_q <= slo.tpot_s)
        and attainment >= slo.attainment
        and served.any()
    )
    return attainment, ttft_q, tpot_q, met


def _load(n_gpu: int, replica_s: float, capacity_rps: float) -> float:
    """Load against capacity: the GPU-served requests over the arrival window against what the
    replicas (mean_replicas: every replica that exists) carry flat out at this token mix; an
    overloaded fleet reads above 1 (the drain after the last arrival does not dilute it)."""
    if n_gpu and replica_s > 0 and capacity_rps > 0:
        return n_gpu / (replica_s * capacity_rps)
    return 0.0


def _per_class(df: pd.DataFrame, ok: np.ndarray, route, ttft, tpot, e2e) -> dict:
    """A mix's main figures per class, as flat keys "<key>.<class>" (nothing for one class)."""
    out: dict = {}
    classes = df["class"].to_numpy()
    names = list(dict.fromkeys(classes.tolist()))
    if len(names) > 1:
        for name in names:
            mine = classes == name
            out[f"n_requests.{name}"] = int(mine.sum())
            out[f"slo_attainment.{name}"] = float(ok[mine].mean())
            out[f"ttft_p99.{name}"] = _pct(ttft[mine], 99)
            out[f"tpot_p99.{name}"] = _pct(tpot[mine], 99)
            out[f"e2e_p50.{name}"] = _pct(e2e[mine], 50)
            out[f"n_rejected.{name}"] = int((route[mine] == "rejected").sum())
            out[f"n_api.{name}"] = int((route[mine] == "api").sum())
    return out


def cost_rate(fleet_cost, sim_duration_s, api_cost, arrival_span_s):
    """The one cost rate every ranking uses ($/hour; scalars or arrays): what the fleet costs
    (GPU time, operations and other time-based lines) per hour of the run, which includes the
    drain after the last arrival, plus what the API costs per hour of arrivals (it bills per
    request, so a run's drain adds nothing to it)."""
    fleet_cost, sim_duration_s, api_cost, arrival_span_s = (
        np.asarray(x, dtype=float) for x in (fleet_cost, sim_duration_s, api_cost, arrival_span_s)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        fleet = np.where(sim_duration_s > 0, fleet_cost / sim_duration_s, 0.0)
        api = np.where(arrival_span_s > 0, api_cost / arrival_span_s, 0.0)
    out = (fleet + api) * 3600.0
    return float(out) if out.ndim == 0 else out


def arrival_span(wc, arrival_s) -> float:
    """The arrival window a run's request rate is measured over: `workload.duration_s` for
    synthetic (or looped) traffic; for a replayed trace, or a workload handed in that runs past
    duration_s, its last arrival."""
    last = float(arrival_s[-1]) if len(arrival_s) else 0.0
    if wc.duration_s is not None and last <= wc.duration_s and not (has_trace(wc) and not wc.loop):
        return float(wc.duration_s)
    return last if last > 0 else 1.0  # a trace's window ends with it (a longer duration_s adds no traffic)


def api_projection(api, api_cost: float, span_s: float) -> dict:
    """The API spend of a run projected to a month, judged against the tier's monthly cap: a
    10-minute run never reaches a monthly cap, yet the same traffic for a month may.

    With tiers that rise with lifetime spend (`api.tiers`), month after month the spend (capped
    by the tier in force) adds to lifetime spend and lifts the tier; the cap that counts is that
    of the tier the traffic settles on (`api_tier_settled`, after `api_months_to_settle` months,
    each earlier month refusing what exceeds its cap)."""
    month = api_cost / span_s * 3600.0 * HOURS_PER_MONTH if span_s > 0 else math.nan
    cap = api.monthly_cap_usd
    out: dict = {"api_cost_per_month": month}
    if api.tiers:
        tiers, lifetime, k, months = api.tiers, api.lifetime_spend_usd, -1, 0
        while True:
            while k + 1 < len(tiers) and tiers[k + 1].min_lifetime_spend_usd <= lifetime:
                k += 1
            cap = tiers[k].monthly_cap_usd if k >= 0 else api.monthly_cap_usd
            if cap is None or month <= cap or k + 1 == len(tiers) or months >= 120:
                break
            lifetime += min(month, cap)  # this month's spend, cut at the tier's cap
            months += 1
        out.update(api_tier_settled=api.tiers[k].name if k >= 0 else None, api_months_to_settle=months)
    out.update(
        api_monthly_cap=cap if cap is not None else math.nan, api_cap_exceeded=bool(cap is not None and month > cap)
    )
    return out


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else math.nan


def json_ready(summary: dict) -> dict:
    """NaN and infinities become null; NumPy scalars become Python numbers."""
    out = {}
    for key, value in summary.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out


def distinct(column: pd.Series) -> int:
    """Number of different values (None, NaN and text alike)."""
    return column.map(repr).nunique()
