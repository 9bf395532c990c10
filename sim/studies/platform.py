"""Several deployments in one scenario (`platform=NAME`): each the base scenario with its own
overrides (model, GPU, engine, fleet, SLO, traffic), on GPUs of its own, and optionally a
cascade that chains some of them as tiers.

Deployments outside a cascade share nothing, so each is simulated on its own, exactly as a
separate run of its config: per-deployment results are those runs' results, and the totals add
their costs and tokens. A cascade's tiers run in order: tier 1 takes the traffic; each request it
answers (by a replica or by an API) is passed on to tier 2 with the escalation model's
probability, at the moment tier 1 ended it, the same prompt and output lengths (the request is
answered again, by a bigger model); and so on. A tier sees only what reached it, so it runs once
the tier before has ended, on that traffic; nothing flows back. What the user sees is the last
tier's answer: its TTFT counts from the original arrival (the earlier tiers' whole answers
included), its TPOT is the last tier's. The cascade is judged on the first tier's SLO, the one
its users were promised. A rejected request is not passed on. Each tier's fleet is paid from the
start until its own last request ends.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from sim.config.errors import ConfigError, UserError
from sim.config.schema import Config, PlatformConfig, is_closed, is_sessions, validate_platform
from sim.results.metrics import _pct, _slo, json_ready, slo_mask
from sim.studies.run import Result, named, run
from sim.workload.build import Workload, stream

TOTAL_KEYS = ("total_cost", "gpu_cost", "api_cost", "cost_per_hour", "cost_per_month")
PART_KEYS = (
    "n_requests",
    "n_api",
    "slo_attainment",
    "slo_met",
    "ttft_slo_percentile",
    "tpot_slo_percentile",
    "total_cost",
    "cost_per_hour",
    "cost_per_month",
    "cost_per_mtok",
    "mean_replicas",
    "gpus_per_replica",
)


@dataclass
class PlatformResult:
    platform: PlatformConfig
    parts: dict[str, Result]  # each deployment's run (a cascade tier: on the traffic that reached it)
    summary: dict
    cascade: pd.DataFrame | None = None  # one row per request that entered the cascade, as its user saw it
    configs: dict[str, Config] = field(default_factory=dict)
    # each disaggregated deployment's requests, one row per user request (sim.studies.disagg)
    disaggregated: dict[str, pd.DataFrame] = field(default_factory=dict)

    def save(self, out_dir: str | Path) -> Path:
        """Each deployment's outputs in deployments/NAME/, the cascade's requests in
        cascade.parquet, then summary.json (totals and per-deployment figures), last. A
        directory holding an earlier run's outputs is refused."""
        from sim.studies.run import earlier_outputs

        out = Path(out_dir)
        earlier = earlier_outputs(out)
        if earlier:
            raise UserError(f"{out}: holds an earlier run's outputs ({', '.join(earlier[:3])})")
        out.mkdir(parents=True, exist_ok=True)
        for name, result in self.parts.items():
            result.save(out / "deployments" / name)
        if self.cascade is not None:
            self.cascade.to_parquet(out / "cascade.parquet", index=False)
        for name, view in self.disaggregated.items():
            (out / "disaggregated").mkdir(exist_ok=True)
            view.to_parquet(out / "disaggregated" / f"{name}.parquet", index=False)
        from sim.output.report import platform_report

        (out / "report.md").write_text(platform_report(self.summary, self.platform))
        tmp = out / ".summary.json.tmp"
        tmp.write_text(json.dumps(json_ready(self.summary), indent=2) + "\n")
        os.replace(tmp, out / "summary.json")
        return out


def run_platform(configs: dict[str, Config], pc: PlatformConfig, seed: int = 0) -> PlatformResult:
    """Simulate every deployment (`configs`: name -> its composed scenario) and the cascade."""
    validate_platform(pc)
    missing = [n for n in pc.deployments if n not in configs]
    if missing:
        raise ConfigError(f"platform.deployments.{missing[0]}", "?", "has no composed config")
    for tier in pc.cascade:
        if configs[tier].seeds:
            raise ConfigError(
                "seeds",
                configs[tier].seeds,
                f"a cascade runs one seed at a time (tier {tier}): run it per seed (seed=N) and compare",
            )
    grouped = grouped_members(pc)
    parts = {
        name: _run(name, configs[name]) for name in pc.deployments if name not in pc.cascade and name not in grouped
    }
    groups = {}
    for group, members in pc.pools.items():
        results, groups[group] = run_pools(group, members, [configs[m] for m in members])
        parts.update(results)
    split, views = {}, {}
    for group, dc in pc.disaggregated.items():
        from sim.studies.disagg import run_disagg

        results, split[group], views[group] = run_disagg(group, dc, (configs[dc.prefill], configs[dc.decode]))
        parts.update(results)
    cascade = None
    if pc.cascade:
        tiers, cascade = run_cascade({t: configs[t] for t in pc.cascade}, pc, seed)
        parts.update(zip(pc.cascade, tiers, strict=True))
    parts = {name: parts[name] for name in pc.deployments}  # in the declared order
    summary = combine(parts, pc, cascade, configs[pc.cascade[0]] if pc.cascade else None, groups, split)
    return PlatformResult(pc, parts, summary, cascade, configs, views)


def grouped_members(pc: PlatformConfig) -> set[str]:
    """The deployments that are pools of a pooled or disaggregated deployment (run in a group)."""
    out = {m for members in pc.pools.values() for m in members}
    out.update(m for dc in pc.disaggregated.values() for m in (dc.prefill, dc.decode))
    return out


def _run(name: str, cfg: Config, workload: Workload | None = None) -> Result:
    """One deployment's run; a value it refuses is named with the deployment."""
    return named(name, run, cfg, workload)


# ----------------------------------------------------------------------------- cascade


def escalation_probability(pc: PlatformConfig, boundary: int, classes: np.ndarray) -> np.ndarray:
    """Each request's probability of being passed on at `boundary` (0: tier 1 to tier 2)."""
    e = pc.escalation
    if e.kind == "share":
        return np.full(len(classes), e.share[boundary])
    if e.kind == "class_share":
        p = np.zeros(len(classes))
        for name, shares in e.class_share.items():
            p[classes == name] = shares[boundary]
        unknown = sorted(set(classes) - set(e.class_share))
        if unknown:
            raise ConfigError(
                "platform.escalation.class_share",
                unknown[0],
                f"request class without shares (classes: {', '.join(sorted(set(classes)))})",
            )
        return p
    return np.full(len(classes), stats.beta.cdf(e.threshold[boundary], e.confidence_a, e.confidence_b))


def escalated(pc: PlatformConfig, boundary: int, tier: pd.DataFrame, seed: int) -> np.ndarray:
    """Which of a tier's requests go on: answered, and drawn under their probability (one
    uniform draw per request, in the tier's order, from the boundary's own stream; for the
    confidence model the draw is the confidence itself, passed on under the threshold)."""
    answered = tier["route"].to_numpy() != "rejected"
    rng = stream(seed, f"escalation.{boundary}")
    if pc.escalation.kind == "confidence":
        e = pc.escalation
        confidence = rng.beta(e.confidence_a, e.confidence_b, len(tier))
        return answered & (confidence < e.threshold[boundary])
    p = escalation_probability(pc, boundary, tier["class"].to_numpy().astype(str))
    return answered & (rng.random(len(tier)) < p)


def next_workload(tier: pd.DataFrame, go: np.ndarray) -> tuple[Workload, np.ndarray]:
    """The traffic a tier passes on: the requests in `go`, arriving when this tier ended them,
    in arrival order; and each one's row in `tier`."""
    rows = np.flatnonzero(go)
    order = np.argsort(tier["finish_s"].to_numpy()[rows], kind="stable")
    rows = rows[order]
    sent = tier.iloc[rows]
    names, classes = np.unique(sent["class"].to_numpy().astype(str), return_inverse=True)
    wl = Workload(
        arrival_s=sent["finish_s"].to_numpy(dtype=np.float64),
        prompt_tokens=sent["prompt_tokens"].to_numpy(dtype=np.int64),
        output_tokens=sent["output_tokens"].to_numpy(dtype=np.int64),
        classes=classes.astype(np.int32),
        class_names=tuple(names) or ("default",),
    )
    return wl, rows


def run_cascade(tiers: dict[str, Config], pc: PlatformConfig, seed: int) -> tuple[list[Result], pd.DataFrame]:
    """The tiers' runs, and one row per request as its user saw it (`tier`: the tier whose
    answer it got, 1-based; `ttft_s`, `e2e_s` from the original arrival; the last tier's TPOT)."""
    names, cfgs = list(tiers), list(tiers.values())
    first = _run(names[0], cfgs[0])
    results = [first]
    req = first.requests
    n = len(req)
    view = pd.DataFrame(
        {
            "id": req["id"].to_numpy(),
            "arrival_s": req["arrival_s"].to_numpy(),
            "class": req["class"].to_numpy(),
            "prompt_tokens": req["prompt_tokens"].to_numpy(),
            "output_tokens": req["output_tokens"].to_numpy(),
            "tier": np.ones(n, dtype=np.int64),
            "route": req["route"].to_numpy(),
            "ttft_s": req["ttft_s"].to_numpy(),
            "tpot_s": req["tpot_s"].to_numpy(),
            "e2e_s": req["e2e_s"].to_numpy(),
        }
    )
    current, ids = req, np.arange(n)  # the last tier's requests, and their rows in `view`
    for k in range(1, len(cfgs)):
        go = escalated(pc, k - 1, current, seed)
        if not go.any():
            raise ConfigError(
                "platform.escalation",
                str(pc.escalation.kind),
                f"in this run no request was passed on to tier {k + 1} ({names[k]}; {len(current)} reached "
                f"tier {k}): its fleet would only idle; more traffic, a longer run or a higher share reaches it",
            )
        wl, rows = next_workload(current, go)
        result = _run(names[k], cfgs[k], wl)
        results.append(result)
        ids = ids[rows]
        tier = result.requests
        arrival0 = view["arrival_s"].to_numpy()[ids]
        entry = tier["arrival_s"].to_numpy()
        view.loc[ids, "tier"] = k + 1
        view.loc[ids, "route"] = tier["route"].to_numpy()
        view.loc[ids, "ttft_s"] = entry + tier["ttft_s"].to_numpy() - arrival0
        view.loc[ids, "e2e_s"] = entry + tier["e2e_s"].to_numpy() - arrival0
        view.loc[ids, "tpot_s"] = tier["tpot_s"].to_numpy()
        current = tier
    return results, view


def cascade_summary(view: pd.DataFrame, cfg: Config, tiers: list[str]) -> dict:
    """The cascade as its users saw it, judged on the first tier's SLO."""
    ok = slo_mask(view, cfg.slo.ttft_s, cfg.slo.tpot_s)
    ttft, tpot = view["ttft_s"].to_numpy(), view["tpot_s"].to_numpy()
    served = view["route"].to_numpy() != "rejected"
    attainment, ttft_q, tpot_q, met = _slo(cfg.slo, ok, ttft, tpot, served)
    tier = view["tier"].to_numpy()
    out = {
        "n_requests": len(view),
        "slo_attainment": attainment,
        "slo_met": met,
        "ttft_slo_percentile": ttft_q,
        "tpot_slo_percentile": tpot_q,
        "ttft_mean": float(np.nanmean(ttft)) if len(view) else math.nan,
        "e2e_mean": float(np.nanmean(view["e2e_s"].to_numpy())) if len(view) else math.nan,
        **{f"ttft_p{q}": _pct(ttft, q) for q in (50, 99)},
        **{f"tpot_p{q}": _pct(tpot, q) for q in (50, 99)},
    }
    for i, name in enumerate(tiers):
        out[f"answered_by.{name}"] = float((tier == i + 1).mean()) if len(view) else math.nan
    return out


# ----------------------------------------------------------------------------- totals


def combine(
    parts: dict[str, Result],
    pc: PlatformConfig,
    view: pd.DataFrame | None,
    entry: Config | None,
    groups: dict[str, dict] | None = None,
    split: dict[str, dict] | None = None,
) -> dict:
    """Totals over the deployments (costs and cost rates add; tokens are those of the answers
    users got, a cascade's requests counted once, a disaggregated deployment's once, by its
    decode pool), each deployment's key figures as `deployment.NAME.KEY`, the cascade's as
    `cascade.KEY`, the pooled and disaggregated deployments' as `pools.NAME.KEY` and
    `disaggregated.NAME.KEY`, and the budget's verdict."""
    s: dict = {key: float(sum(r.summary.get(key, 0.0) for r in parts.values())) for key in TOTAL_KEYS}
    prefill = {dc.prefill for dc in pc.disaggregated.values()}
    user_tokens = 0.0
    for name, r in parts.items():
        if name in pc.cascade[1:] or name in prefill:
            continue  # tokens answered again by a later tier, or prefilled for a decode pool: counted once
        user_tokens += r.summary["input_tokens"] + r.summary["output_tokens"]
    s["tokens"] = user_tokens
    s["cost_per_mtok"] = s["total_cost"] / user_tokens * 1e6 if user_tokens else math.nan
    s["gpus"] = float(sum(r.summary["mean_replicas"] * r.summary["gpus_per_replica"] for r in parts.values()))
    for name, r in parts.items():
        s.update({f"deployment.{name}.{k}": r.summary.get(k) for k in PART_KEYS})
        s[f"deployment.{name}.gpu"] = r.config.gpu.name
        s[f"deployment.{name}.model"] = r.config.model.name
    for prefix, figures in (("pools", groups or {}), ("disaggregated", split or {})):
        for group, g in figures.items():
            s.update({f"{prefix}.{group}.{k}": v for k, v in g.items()})
    if view is not None and entry is not None:
        c = cascade_summary(view, entry, pc.cascade)
        s.update({f"cascade.{k}": v for k, v in c.items()})
    _verdicts(s, parts, pc, [*(groups or {}).values(), *(split or {}).values()], view is not None)
    split_pools = {m for dc in pc.disaggregated.values() for m in (dc.prefill, dc.decode)}
    s["n_requests"] = sum(
        r.summary["n_requests"] for n, r in parts.items() if n not in pc.cascade[1:] and n not in split_pools
    ) + sum(g["n_requests"] for g in (split or {}).values())
    if pc.budget_usd_per_hour is not None:
        s["budget_usd_per_hour"] = pc.budget_usd_per_hour
        s["within_budget"] = s["cost_per_hour"] <= pc.budget_usd_per_hour
    return s


def _verdicts(s: dict, parts: dict[str, Result], pc: PlatformConfig, groups: list[dict], cascade: bool) -> None:
    """`slo_met` (every deployment as its users see it) and `slo_attainment` (the worst-served
    one's: a sweep ranks misses by it; one that served nothing: 0) into `s`."""
    grouped = grouped_members(pc)
    alone = [r for n, r in parts.items() if n not in pc.cascade and n not in grouped]
    met = [bool(r.summary["slo_met"]) for r in alone] + [bool(g["slo_met"]) for g in groups]
    attainments = [r.summary["slo_attainment"] for r in alone] + [g["slo_attainment"] for g in groups]
    if cascade:
        met.append(bool(s["cascade.slo_met"]))
        attainments.append(s["cascade.slo_attainment"])
    s["slo_met"] = all(met)
    s["slo_attainment"] = min(0.0 if a is None or math.isnan(a) else a for a in attainments)


# ----------------------------------------------------------------------------- mixed pools


def run_pools(group: str, names: list[str], cfgs: list[Config]) -> tuple[dict[str, Result], dict]:
    """A deployment served by several pools behind one front router (`sim.des.pools`), on the
    first pool's traffic: each pool's run (its requests keep their ids in the deployment's
    workload) and the deployment's figures as its users saw them, judged on the first pool's
    SLO."""
    import time

    from sim.des.pools import check_pools, simulate_pools
    from sim.des.preflight import validate
    from sim.hardware.kvcache import memory_plan
    from sim.hardware.perf import build_perf
    from sim.results.summary import summarize_run
    from sim.workload.build import build_workload
    from sim.workload.limits import check_workload as check_limits

    check_pools(cfgs, names)
    for name, c in zip(names, cfgs, strict=True):
        named(name, validate, c)
    first = cfgs[0]
    if is_closed(first.workload) or is_sessions(first.workload):
        raise ConfigError(f"platform.pools.{group}", names[0], "closed-loop users and sessions are not pooled yet")
    wall0 = time.perf_counter()
    wl = build_workload(first.workload, first.seed, first.limits)
    check_limits(first, wl.arrival_s, wl.prompt_tokens, wl.output_tokens, len(wl.class_names))
    if wl.hash_offsets is not None:
        raise ConfigError(f"platform.pools.{group}", names[0], "prefix-sharing workloads are not pooled yet")
    plans = [memory_plan(c.model, c.gpu, c.engine) for c in cfgs]
    perfs = [build_perf(c.model, c.gpu, c.engine) for c in cfgs]
    runs, sent = simulate_pools(cfgs, wl, perfs, plans)
    results = {}
    for name, c, r, perf, plan in zip(names, cfgs, runs, perfs, plans, strict=True):
        t = summarize_run(c, r.workload, r.outcome, plan, perf)
        t.summary["wall_time_s"] = time.perf_counter() - wall0
        requests = t.requests.assign(id=r.ids)
        results[name] = Result(
            c, t.summary, requests, t.timeseries, plan, t.engine, bills=t.bills, spans=r.outcome.spans
        )
    return results, pooled_summary(results, first, sent)


def pooled_summary(results: dict[str, Result], cfg: Config, sent: list[int]) -> dict:
    """The pooled deployment's requests together, on the first pool's SLO; each pool's share of
    the requests and of the capacity (replicas x one replica's saturated rate, on average)."""
    df = pd.concat([r.requests for r in results.values()], ignore_index=True)
    ok = slo_mask(df, cfg.slo.ttft_s, cfg.slo.tpot_s)
    ttft, tpot = df["ttft_s"].to_numpy(), df["tpot_s"].to_numpy()
    served = df["route"].to_numpy() != "rejected"
    attainment, ttft_q, tpot_q, met = _slo(cfg.slo, ok, ttft, tpot, served)
    out = {
        "n_requests": len(df),
        "slo_attainment": attainment,
        "slo_met": met,
        "ttft_slo_percentile": ttft_q,
        "tpot_slo_percentile": tpot_q,
        "cost_per_hour": float(sum(r.summary["cost_per_hour"] for r in results.values())),
    }
    capacity = {
        n: r.summary["mean_replicas"] * (r.summary.get("replica_capacity_rps") or 0.0) for n, r in results.items()
    }
    capacity = {n: 0.0 if math.isnan(v) else v for n, v in capacity.items()}
    total = sum(capacity.values())
    for (name, _), n in zip(results.items(), sent, strict=True):
        out[f"share.{name}"] = n / len(df) if len(df) else math.nan
        out[f"capacity_share.{name}"] = capacity[name] / total if total else math.nan
    return out
