"""One simulated run's tables and summary, from what the simulation recorded (`des.records.Outcome`):
the requests table, the time series, the replica bills, and the summary with its costs, capacity
and counters. No SimPy."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from sim.config.schema import Config, batch_limits, failure_modes_on
from sim.des.records import SAMPLE_COLUMNS, Outcome
from sim.hardware.kvcache import MemoryPlan
from sim.hardware.perf import PerfModel, saturation_throughput
from sim.hardware.speculative import tokens_per_step
from sim.pricing.cost import fleet_costs
from sim.results.failures import failure_summary
from sim.results.metrics import api_projection, arrival_span, requests_frame, summarize
from sim.workload.build import Workload


@dataclass
class ClosedRun:
    """What closed-loop users (generated, or sessions replayed from a trace) add to a run's results."""

    columns: dict  # per-request columns (user, session, turn, ...)
    counters: dict  # summary keys (users, sessions, ...)


@dataclass
class RunTables:
    summary: dict
    requests: pd.DataFrame
    timeseries: pd.DataFrame
    bills: pd.DataFrame  # one row per replica: life, seconds by state, billed cost
    engine: dict  # iterations, engine events, engine batches


def summarize_run(
    cfg: Config, wl: Workload, out: Outcome, plan: MemoryPlan, perf: PerfModel, closed: ClosedRun | None = None
) -> RunTables:
    """The run's tables and summary (`wl`: every request the run saw, in arrival order)."""
    df = requests_frame(wl, out.records)
    if closed is not None:
        df = df.assign(**closed.columns)
    ts = pd.DataFrame(out.samples, columns=list(SAMPLE_COLUMNS))
    f = cfg.fleet
    most = (f.replicas if f.autoscaler.name == "fixed" else f.max_replicas) * cfg.engine.tensor_parallel_size
    costs, bills = fleet_costs(
        out.spans,
        f.pricing,
        cfg.gpu.price_per_hour,
        f.sleep.cost_fraction,
        out.end_s,
        out.idle_s,
        runs_gpus=out.gpu_possible,
        max_gpus=most,
    )
    api_cost = out.api.spend if out.api is not None else 0.0
    span = wl.span_s if wl.span_s is not None else arrival_span(cfg.workload, wl.arrival_s)
    extra = _counters(cfg, wl, out, plan, costs, api_cost, span, closed)
    egress = float(df.loc[df["route"] == "gpu", "served_output_tokens"].sum()) * f.pricing.bytes_per_token / 1e9
    extra["egress_gb"] = egress
    if failure_modes_on(cfg):
        extra.update(failure_summary(cfg, df, out))
    end = out.end_s
    alive = sum(s.end - s.start for s in out.spans if s.state != "stopped")
    summary = summarize(
        cfg,
        df,
        sim_duration_s=end,
        busy_s=out.busy_s,
        occupancy_s=out.occupancy_s,
        replica_seconds=out.replica_seconds,
        gpu_cost=costs["gpu_cost"],
        api_cost=api_cost,
        ops_cost=costs["ops_cost"],
        egress_cost=egress * f.pricing.egress_per_gb,
        arrival_span_s=span,
        capacity_rps=capacity(cfg, df, perf, plan),
        mean_replicas=alive / end if end > 0 else 0.0,
        max_replicas=out.max_replicas,
        class_slo=wl.class_slo,
        extra=extra,
    )
    return RunTables(summary, df, ts, bills, dict(out.engine))


def _counters(
    cfg: Config,
    wl: Workload,
    out: Outcome,
    plan: MemoryPlan,
    costs: dict,
    api_cost: float,
    span: float,
    closed: ClosedRun | None,
) -> dict:
    """The summary's counters and settings beyond the latency and cost figures, in their order."""
    extra = {
        "gpus_per_replica": cfg.engine.tensor_parallel_size,
        "kv_tokens_per_replica": plan.kv_tokens,
        "max_model_len": plan.max_model_len,
        **out.engine,
        **{k: v for k, v in costs.items() if k != "gpu_cost"},
        "cold_start_s": out.cold_start_s,
        "replicas_started": out.replicas_started,
        **out.stats,
    }
    if cfg.fleet.sleep.enabled:
        extra["wake_s"] = out.wake_s
    if wl.shared_fraction is not None:
        extra["prefix_shared_fraction"] = wl.shared_fraction
    if closed is not None:
        extra.update(closed.counters)
    if cfg.engine.speculative.method != "none":
        spec = cfg.engine.speculative
        extra["spec_tokens_per_step"] = tokens_per_step(spec.acceptance, spec.k)
    if out.prefix:
        extra["prefix_block_hit_rate"] = out.prefix_hits / out.prefix_lookups if out.prefix_lookups else 0.0
    if out.api is not None:
        for reason, count in out.api.refusals.items():
            extra[f"api_refusals.{reason}"] = count
        extra.update(api_projection(cfg.api, api_cost, span))
        extra.update(api_truncated=out.api.truncated, api_warmups=out.api.warmups, api_billed_s=out.api.billed_s)
        if cfg.api.tiers:
            extra["api_tier"] = out.api.tier_name
    return extra


def capacity(cfg: Config, df: pd.DataFrame, perf: PerfModel, plan: MemoryPlan) -> float:
    """Requests per second one replica completes when saturated by the run's GPU token mix
    (`replica_capacity_rps`); NaN when the GPUs served nothing."""
    served = df["route"].to_numpy() == "gpu"
    if not served.any():
        return math.nan
    prompt = float(df["prompt_tokens"].to_numpy()[served].mean())
    cached = float(df["cached_tokens"].to_numpy()[served].mean())
    return saturation_throughput(
        perf,
        plan.kv_tokens,
        *batch_limits(cfg.engine, cfg.gpu),
        prompt,
        float(df["output_tokens"].to_numpy()[served].mean()),
        prefill=prompt - cached,
    )
