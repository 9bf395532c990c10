"""Disaggregated deployments of a platform (`platform.disaggregated`): running one (its prefill
and decode pools in one simulation, `sim.des.disagg`), the users' view of its requests (one row
per request, the two pools' records combined), its figures, and the planner's choice of the
prefill:decode ratio (a grid of the two pools' replica counts, the cheapest that meets the SLO).
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pandas as pd

from sim.config.errors import ConfigError
from sim.config.schema import Config, DisaggConfig, is_closed, is_sessions
from sim.results.metrics import _pct, _slo, slo_mask
from sim.studies.run import Result, named

VIEW_COLUMNS = (
    "id",
    "arrival_s",
    "prompt_tokens",
    "output_tokens",
    "route",
    "rejected_in",
    "prefill_replica",
    "replica",
    "prefill_s",
    "transfer_s",
    "kv_bytes",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "finish_s",
    "preemptions",
)


def check_disagg(group: str, dc: DisaggConfig, cfgs: tuple[Config, Config]) -> None:
    """What the two pools must agree on, and what is not modelled yet."""
    key = f"platform.disaggregated.{group}"
    pre, dec = cfgs
    if dec.model.name != pre.model.name:
        raise ConfigError(
            f"{key}.decode: model", dec.model.name, f"decodes the prefill pool's model ({pre.model.name})"
        )
    for role, c in zip(("prefill", "decode"), cfgs, strict=True):
        if c.api.enabled:
            raise ConfigError(
                f"{key}.{role}: api", c.api.name, "a disaggregated pool has no API fallback yet (api=none)"
            )
        if c.seeds:
            raise ConfigError(f"{key}.{role}: seeds", c.seeds, "a disaggregated deployment runs one seed at a time")
    if is_closed(pre.workload) or is_sessions(pre.workload):
        raise ConfigError(key, dc.prefill, "closed-loop users and sessions are not disaggregated yet")


def run_disagg(
    group: str, dc: DisaggConfig, cfgs: tuple[Config, Config]
) -> tuple[dict[str, Result], dict, pd.DataFrame]:
    """The deployment on the prefill pool's traffic: each pool's run (its requests keep their ids
    in the deployment's workload), its figures as its users saw them (judged on the prefill
    deployment's SLO), and one row per user request."""
    from sim.des.disagg import simulate_disagg
    from sim.des.preflight import validate
    from sim.hardware.kvcache import memory_plan
    from sim.hardware.perf import build_perf
    from sim.results.summary import summarize_run
    from sim.workload.build import build_workload
    from sim.workload.limits import check_workload as check_limits

    check_disagg(group, dc, cfgs)
    for name, c in zip((dc.prefill, dc.decode), cfgs, strict=True):
        named(name, validate, c)
    pre = cfgs[0]
    wall0 = time.perf_counter()
    wl = build_workload(pre.workload, pre.seed, pre.limits)
    check_limits(pre, wl.arrival_s, wl.prompt_tokens, wl.output_tokens, len(wl.class_names))
    if wl.hash_offsets is not None:
        raise ConfigError(
            f"platform.disaggregated.{group}", dc.prefill, "prefix-sharing workloads are not disaggregated yet"
        )
    plans = tuple(memory_plan(c.model, c.gpu, c.engine) for c in cfgs)
    perfs = tuple(build_perf(c.model, c.gpu, c.engine) for c in cfgs)
    run = simulate_disagg(cfgs, wl, perfs, plans, dc)  # type: ignore[arg-type]
    results = {}
    for name, c, r, perf, plan in zip(
        (dc.prefill, dc.decode), cfgs, (run.prefill, run.decode), perfs, plans, strict=True
    ):
        t = summarize_run(c, r.workload, r.outcome, plan, perf)
        t.summary["wall_time_s"] = time.perf_counter() - wall0
        requests = t.requests.assign(id=r.ids)
        results[name] = Result(
            c, t.summary, requests, t.timeseries, plan, t.engine, bills=t.bills, spans=r.outcome.spans
        )
    view = user_view(wl, results[dc.prefill].requests, results[dc.decode].requests, run)
    return results, disagg_summary(view, results[dc.prefill], results[dc.decode]), view


def user_view(wl, pre: pd.DataFrame, dec: pd.DataFrame, run) -> pd.DataFrame:
    """One row per user request, as the proxy's client saw it: decoded (route gpu) or rejected
    by one pool (`rejected_in`); TTFT and end-to-end from the original arrival; TPOT the decode
    side's; `prefill_s` the prefill pool's answer time, `transfer_s` the KV's time on the link."""
    n = len(wl)
    arrival = wl.arrival_s
    v = {
        "id": np.arange(n, dtype=np.int64),
        "arrival_s": arrival,
        "prompt_tokens": wl.prompt_tokens,
        "output_tokens": wl.output_tokens,
        "route": np.full(n, "", dtype=object),
        "rejected_in": np.full(n, "", dtype=object),
        "prefill_replica": np.full(n, -1, dtype=np.int64),
        "replica": np.full(n, -1, dtype=np.int64),
        "prefill_s": np.full(n, np.nan),
        "transfer_s": run.transfer_s,
        "kv_bytes": run.kv_bytes,
        "ttft_s": np.full(n, np.nan),
        "tpot_s": np.full(n, np.nan),
        "e2e_s": np.full(n, np.nan),
        "finish_s": np.full(n, np.nan),
        "preemptions": np.zeros(n, dtype=np.int64),
    }
    ids = pre["id"].to_numpy()
    rejected = pre["route"].to_numpy() == "rejected"
    v["route"][ids[rejected]] = "rejected"
    v["rejected_in"][ids[rejected]] = "prefill"
    v["finish_s"][ids[rejected]] = pre["finish_s"].to_numpy()[rejected]
    v["prefill_replica"][ids] = pre["replica"].to_numpy()
    v["prefill_s"][ids] = pre["e2e_s"].to_numpy()
    v["preemptions"][ids] += pre["preemptions"].to_numpy()
    ids = dec["id"].to_numpy()
    route = dec["route"].to_numpy()
    v["route"][ids] = route
    v["rejected_in"][ids[route == "rejected"]] = "decode"
    v["replica"][ids] = dec["replica"].to_numpy()
    entry = dec["arrival_s"].to_numpy()
    v["ttft_s"][ids] = entry + dec["ttft_s"].to_numpy() - arrival[ids]
    v["e2e_s"][ids] = entry + dec["e2e_s"].to_numpy() - arrival[ids]
    v["tpot_s"][ids] = dec["tpot_s"].to_numpy()
    v["finish_s"][ids] = dec["finish_s"].to_numpy()
    v["preemptions"][ids] += dec["preemptions"].to_numpy()
    lost = int((v["route"] == "").sum())
    if lost:  # a bug, never a user error
        raise RuntimeError(f"{lost} request(s) of a disaggregated deployment ended neither decoded nor rejected")
    return pd.DataFrame(v, columns=list(VIEW_COLUMNS))


def disagg_summary(view: pd.DataFrame, pre: Result, dec: Result) -> dict:
    """The deployment as its users saw it, on the prefill deployment's SLO; its cost (both
    pools), the GPUs of each pool and the link's figures."""
    cfg = pre.config
    ok = slo_mask(view, cfg.slo.ttft_s, cfg.slo.tpot_s)
    ttft, tpot, e2e = (view[c].to_numpy() for c in ("ttft_s", "tpot_s", "e2e_s"))
    served = view["route"].to_numpy() != "rejected"
    attainment, ttft_q, tpot_q, met = _slo(cfg.slo, ok, ttft, tpot, served)
    tokens = float(dec.summary["input_tokens"] + dec.summary["output_tokens"])
    cost = pre.summary["total_cost"] + dec.summary["total_cost"]
    gpus = {
        r: x.summary["mean_replicas"] * x.summary["gpus_per_replica"] for r, x in (("prefill", pre), ("decode", dec))
    }
    out = {
        "n_requests": len(view),
        "n_rejected": int((~served).sum()),
        "slo_attainment": attainment,
        "slo_met": met,
        "ttft_slo_percentile": ttft_q,
        "tpot_slo_percentile": tpot_q,
        **{f"ttft_p{q}": _pct(ttft, q) for q in (50, 95, 99)},
        **{f"tpot_p{q}": _pct(tpot, q) for q in (50, 95, 99)},
        "e2e_p50": _pct(e2e, 50),
        "prefill_s_p50": _pct(view["prefill_s"].to_numpy(), 50),
        "transfer_s_mean": float(np.nanmean(view["transfer_s"])) if served.any() else math.nan,
        "transfer_s_p99": _pct(view["transfer_s"].to_numpy(), 99),
        "kv_gb": float(view["kv_bytes"].sum()) / 1e9,
        "total_cost": cost,
        "cost_per_hour": pre.summary["cost_per_hour"] + dec.summary["cost_per_hour"],
        "tokens": tokens,
        "cost_per_mtok": cost / tokens * 1e6 if tokens else math.nan,
        "prefill_gpus": gpus["prefill"],
        "decode_gpus": gpus["decode"],
    }
    return out


# ----------------------------------------------------------------------------- planning the ratio


def with_replicas(cfg: Config, n: int) -> Config:
    """The pool's scenario with a fixed fleet of n replicas and no API."""
    from sim.config.schema import ApiConfig, FixedAutoscaler

    fleet = dataclasses.replace(cfg.fleet, replicas=n, autoscaler=FixedAutoscaler())
    return dataclasses.replace(cfg, fleet=fleet, api=ApiConfig())


def _grid_point(args) -> dict:
    group, dc, cfgs, p, d = args
    _, s, _ = run_disagg(group, dc, (with_replicas(cfgs[0], p), with_replicas(cfgs[1], d)))
    keys = ("slo_met", "slo_attainment", "ttft_slo_percentile", "tpot_slo_percentile", "ttft_p50", "tpot_p50")
    return {
        "prefill_replicas": p,
        "decode_replicas": d,
        **{k: s[k] for k in keys},
        "cost_per_hour": s["cost_per_hour"],
        "cost_per_mtok": s["cost_per_mtok"],
    }


def plan_ratio(
    group: str, dc: DisaggConfig, cfgs: tuple[Config, Config], grid: list[int], workers: int = 1
) -> pd.DataFrame:
    """Every (prefill replicas, decode replicas) of `grid` x `grid` as fixed fleets, simulated on
    the deployment's traffic; ranked: the SLO-meeting ones by cost per hour (rank 1 the
    cheapest; then the higher attainment), the others unranked (NaN)."""
    jobs = [(group, dc, cfgs, p, d) for p in grid for d in grid]
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            rows = list(pool.map(_grid_point, jobs))
    else:
        rows = [_grid_point(j) for j in jobs]
    df = pd.DataFrame(rows)
    ok = df[df["slo_met"]].sort_values(["cost_per_hour", "slo_attainment"], ascending=[True, False], kind="stable")
    df["rank"] = np.nan
    df.loc[ok.index, "rank"] = np.arange(1, len(ok) + 1, dtype=float)
    df["pd_ratio"] = df["prefill_replicas"] * cfgs[0].engine.tensor_parallel_size
    df["pd_ratio"] = df["pd_ratio"] / (df["decode_replicas"] * cfgs[1].engine.tensor_parallel_size)
    return df


def ratio_report(group: str, dc: DisaggConfig, df: pd.DataFrame) -> str:
    """disagg_plan.md: the cheapest ratio that meets the SLO, and the grid."""
    lines = [f"# fleetsim disaggregated plan: {group} (prefill {dc.prefill}, decode {dc.decode})", ""]
    best = df[df["rank"] == 1]
    if best.empty:
        lines.append("**No plan**: no prefill x decode size of the grid meets the SLO; widen plan.disagg_replicas.")
    else:
        b = best.iloc[0]
        lines.append(
            f"**Cheapest meeting the SLO: {int(b.prefill_replicas)} prefill + {int(b.decode_replicas)} decode "
            f"replicas** (P:D {b.pd_ratio:.2g} in GPUs), ${b.cost_per_hour:,.2f}/hour, attainment "
            f"{b.slo_attainment:.1%}."
        )
    lines += ["", "| prefill | decode | $/hour | attainment | TTFT @SLO pct | TPOT @SLO pct | SLO | rank |"]
    lines.append("|---:|---:|---:|---:|---:|---:|---|---:|")
    for _, r in df.iterrows():
        rank = "" if math.isnan(r["rank"]) else f"{int(r['rank'])}"
        lines.append(
            f"| {int(r.prefill_replicas)} | {int(r.decode_replicas)} | ${r.cost_per_hour:,.2f} | "
            f"{r.slo_attainment:.1%} | {r.ttft_slo_percentile:.3f} s | {r.tpot_slo_percentile * 1000:.1f} ms | "
            f"{'met' if r.slo_met else 'missed'} | {rank} |"
        )
    return "\n".join([*lines, ""])
