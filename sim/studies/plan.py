"""Planner: the cheapest provisioning that meets the SLO for one workload, and where paying per
token stops being cheaper than renting GPUs.

For every GPU type and tensor-parallel size of `plan.gpus` x `plan.tp` (options whose weights do
not fit are skipped, with the reason), the planner finds:
- **fixed**: the smallest number N of always-on replicas that meets the SLO. SLO attainment grows
  with replicas, so it brackets (1, 2, 4, ...) and bisects: O(log N) runs, not N;
- **autoscaled**: a target autoscaler between a minimum of 1 or N/2 and a maximum of N+1, for
  each of `plan.targets`;
- **hybrid**: a fixed baseline below N with overflow to the API, for each overflow margin of
  `plan.margins` from the widest until one meets the SLO;
- **api**: no GPUs, every request to the API (one candidate, whatever the GPU options).
Feasible means `slo_met`; with `seeds`, at the pessimistic end of the 95% intervals. Candidates
are ranked by cost per hour: GPU cost over the run, API cost over the arrival window (so a
short run's drain favours no one). The fixed searches run in parallel (one per GPU option),
then every other candidate does, on the back end of `plan.backend` (`sim.studies.backends`). Plain Python:
`sim.apps.cli.plan_main` is the command line around it.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd

from sim.config.bounds import Choice, NonNeg, at_least, check
from sim.config.errors import ConfigError, UserError
from sim.config.schema import Config, FixedAutoscaler, GpuConfig, TargetAutoscaler, is_closed, load_option, options
from sim.des.preflight import validate
from sim.pricing.cost import HOURS_PER_MONTH
from sim.studies.backends import Backend, Mapper, SubmititConfig, validate_backend


class PlanMode(Choice):
    plan = "plan"  # the cheapest setup that meets the SLO
    breakeven = "breakeven"  # API against GPUs over a range of volumes


@dataclass
class PlanConfig:
    mode: PlanMode = PlanMode.plan  # plan | breakeven
    gpus: list[str] = field(default_factory=lambda: ["h100", "a100-80gb", "l40s"])
    tp: list[int] = field(default_factory=lambda: [1])
    strategies: list[str] = field(default_factory=lambda: ["fixed", "autoscaled", "hybrid", "api"])
    max_replicas: Annotated[int, at_least(1)] = 32
    targets: list[float] = field(default_factory=lambda: [16.0, 32.0, 64.0])
    overflow: str = "slo"  # the hybrid's API overflow policy (slo: predicted TTFT or TPOT over the SLO)
    # the hybrid's overflow margins to try: overflow when a prediction exceeds margin x the SLO
    # (predictions see the queue now, not the arrivals to come: margins < 1 leave room for them)
    margins: list[float] = field(default_factory=lambda: [1.0, 0.7, 0.5, 0.35])
    hybrid_sizes: Annotated[int, at_least(1)] = (
        8  # at most this many baseline sizes between 1 and N-1 (N: the fixed answer)
    )
    workers: Annotated[int, at_least(1)] = 2  # local processes (backend=local), or the CPUs of a Ray started here
    # where the simulations run: local processes, Ray (a cluster at ray_address, or a Ray started
    # here when null) or submitit (SLURM, or its local executor); the answer is the same
    backend: Backend = Backend.local
    ray_address: str | None = None  # e.g. auto (RAY_ADDRESS or the local head) or host:port
    submitit: SubmititConfig = field(default_factory=SubmititConfig)
    # breakeven: the workload's volume times each of these (rates of synthetic sources, or
    # load_scale of a trace)
    volumes: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0])
    # breakeven: lengthen a synthetic workload's horizon at low volumes to about this many requests
    min_requests: NonNeg[int] = 2000
    # $ per GPU-hour per GPU option (e.g. {h100: 2.49, a100-80gb: 1.10}); unlisted options keep
    # their file's price (or gpu.price_per_hour when given on the command line)
    prices: dict[str, float] = field(default_factory=dict)
    # without seeds, candidates within this fraction of the best's cost are reported as a tie
    tie_tolerance: float = 0.02
    # a disaggregated deployment (platform.disaggregated): the replica counts tried for each of its
    # prefill and decode pools (every pair, fixed fleets), the cheapest pair meeting the SLO chosen
    disagg_replicas: list[int] = field(default_factory=lambda: [1, 2, 3])


@dataclass
class PlanAppConfig(Config):
    plan: PlanConfig = field(default_factory=PlanConfig)


STRATEGIES = ("fixed", "autoscaled", "hybrid", "api")


def validate_plan(p: PlanConfig) -> None:
    """Each plan.* value within its declared bounds, then the rules below in order, then the
    prices."""
    from sim.config.names import OVERFLOW

    check(p, "plan")
    overflows = [o for o in OVERFLOW if o != "never"]
    rules = (  # (key, holds, what is allowed)
        ("gpus", lambda: bool(p.gpus), "name at least one GPU option"),
        ("tp", lambda: p.tp and not any(t < 1 or t & (t - 1) for t in p.tp), "must list powers of two >= 1"),
        (
            "strategies",
            lambda: p.strategies and all(s in STRATEGIES for s in p.strategies),
            f"must list some of {', '.join(STRATEGIES)}",
        ),
        ("targets", lambda: p.targets and min(p.targets) > 0, "must list positive autoscaler targets"),
        ("overflow", lambda: p.overflow in overflows, f"must be one of {', '.join(overflows)}"),
        ("margins", lambda: p.margins and min(p.margins) > 0, "must list positive overflow margins"),
        (
            "volumes",
            lambda: p.volumes and all(math.isfinite(v) and v > 0 for v in p.volumes),
            "must list positive, finite volume multipliers",
        ),
        (
            "disagg_replicas",
            lambda: p.disagg_replicas and all(isinstance(n, int) and 1 <= n <= 64 for n in p.disagg_replicas),
            "must list replica counts from 1 to 64",
        ),
    )
    for key, holds, allowed in rules:
        if not holds():
            raise ConfigError(f"plan.{key}", getattr(p, key), allowed)
    for gpu, price in (p.prices or {}).items():
        if gpu not in p.gpus:
            raise ConfigError(f"plan.prices.{gpu}", price, f"names no GPU option of plan.gpus ({', '.join(p.gpus)})")
        if price is None or not math.isfinite(price) or price < 0:
            raise ConfigError(f"plan.prices.{gpu}", price, "must be a finite price >= 0 ($ per GPU-hour)")
    if not (math.isfinite(p.tie_tolerance) and 0 <= p.tie_tolerance < 1):
        raise ConfigError("plan.tie_tolerance", p.tie_tolerance, "must be in [0, 1)")
    validate_backend(p.backend, p.submitit)


def validate_scenario(cfg: Config, p: PlanConfig, gpus: dict[str, GpuConfig] | None = None) -> None:
    """The scenario must be valid with at least one GPU option of the plan (the others are
    skipped with their reason); raise the error of the last option tried otherwise."""

    gpus = gpus if gpus is not None else gpu_options(cfg, p)

    if cfg.api.name == "none":
        if p.mode == "breakeven":
            raise ConfigError(
                "api", "none", "break-even compares GPUs with a pay-per-token API: choose one (api=default)"
            )
        if not {"fixed", "autoscaled"} & set(p.strategies):
            raise ConfigError(
                "plan.strategies", p.strategies, "hybrid and api need an API (api=default or a tier) or add fixed"
            )
    errors = [_problem(fixed_fleet(with_gpu(cfg, gpus[g], tp), 1)) for g in p.gpus for tp in sorted(p.tp, reverse=True)]
    if all(errors):
        raise errors[-1]


def _problem(cfg: Config) -> UserError | None:
    try:
        validate(cfg)
    except UserError as exc:
        return exc
    return None


# ----------------------------------------------------------------------------- candidates


def gpu_options(cfg: Config, p: PlanConfig, load: Callable[[str], GpuConfig] | None = None) -> dict[str, GpuConfig]:
    """The GPU of every option of `plan.gpus`, as the candidates will run it.

    `load(name)` gives an option's GPU with the command line's overrides applied (the command
    composes it with Hydra, so user config dirs on the search path work too). Without it, the
    packaged option is read and every `gpu.*` value in which `cfg.gpu` differs from its own file
    (an override) is applied to every option. Then `plan.prices` sets each listed option's price.
    """
    changed: dict = {}
    if load is None:
        try:
            stock = load_option("gpu", cfg.gpu.name)
        except UserError:
            stock = None
        if stock is not None:
            changed = {
                f.name: getattr(cfg.gpu, f.name)
                for f in dataclasses.fields(GpuConfig)
                if f.name != "name" and getattr(cfg.gpu, f.name) != getattr(stock, f.name)
            }

        def load(name: str) -> GpuConfig:
            return cfg.gpu if name == cfg.gpu.name else load_option("gpu", name)

    out = {}
    for name in p.gpus:
        try:
            g = load(name)
        except UserError as exc:
            if "unknown option" not in str(exc) and "Could not find" not in str(exc):
                raise  # the option exists but is broken: its own error names the bad key
            known = ", ".join(options("gpu"))
            raise ConfigError(
                "plan.gpus", name, f"unknown GPU option; known: {known} (or gpu/{name}.yaml in a --config-dir)"
            ) from None
        g = dataclasses.replace(g, **changed)
        if p.prices and name in p.prices:
            g = dataclasses.replace(g, price_per_hour=float(p.prices[name]))
        out[name] = g
    return out


def with_gpu(cfg: Config, gpu: GpuConfig | str, tp: int) -> Config:
    c = copy.deepcopy(cfg)
    c.gpu = copy.deepcopy(gpu) if isinstance(gpu, GpuConfig) else load_option("gpu", gpu)
    c.engine.tensor_parallel_size = tp
    return c


def fixed_fleet(cfg: Config, n: int) -> Config:
    c = copy.deepcopy(cfg)
    c.fleet.autoscaler = FixedAutoscaler(interval_s=c.fleet.autoscaler.interval_s)
    c.fleet.replicas = n
    c.api = dataclasses.replace(c.api, enabled=False, name="none")
    return c


def autoscaled_fleet(cfg: Config, lo: int, hi: int, target: float) -> Config:
    c = copy.deepcopy(cfg)
    a = c.fleet.autoscaler  # the scenario's target autoscaler, else TargetAutoscaler's defaults
    base = a if isinstance(a, TargetAutoscaler) else TargetAutoscaler(interval_s=a.interval_s)
    c.fleet.autoscaler = dataclasses.replace(base, target=target)
    c.fleet.min_replicas, c.fleet.max_replicas, c.fleet.replicas = lo, hi, lo
    c.api = dataclasses.replace(c.api, enabled=False, name="none")
    return c


def hybrid_fleet(cfg: Config, baseline: int, overflow: str, margin: float = 1.0) -> Config:
    c = copy.deepcopy(cfg)
    c.fleet.autoscaler = FixedAutoscaler(interval_s=c.fleet.autoscaler.interval_s)
    c.fleet.replicas = baseline
    c.api = dataclasses.replace(
        c.api, enabled=True, overflow="always" if baseline == 0 else overflow, ttft_margin=margin
    )
    if baseline == 0:  # no GPU queue to hand a rate-limited request back to: it retries later
        c.api.on_limit = "backoff"
    return c


def baselines(n: int, most: int) -> list[int]:
    """Hybrid baseline sizes to try below the fixed answer n: all of 1..n-1, or `most` of them
    spread evenly."""
    if n <= 1:
        return []
    if n - 1 <= most:
        return list(range(1, n))
    if most == 1:
        return [max(1, n // 2)]
    return sorted({max(1, min(n - 1, round(1 + i * (n - 2) / (most - 1)))) for i in range(most)})


def scaled(cfg: Config, volume: float, min_requests: int = 0) -> Config:
    """The workload with `volume` x its traffic: rates of synthetic sources, a trace's
    load_scale, or the number of closed-loop users (and of their requests, when counted). A
    synthetic workload's horizon grows, if needed, to about `min_requests` requests: a 95%
    attainment target judged on 30 requests is decided by one or two of them."""
    c = copy.deepcopy(cfg)
    w = c.workload
    if is_closed(w):
        w.users = max(1, round(w.users * volume))  # type: ignore[operator]
        if w.requests is not None:
            w.requests = max(w.users, round(w.requests * volume), min_requests)
        return c
    sources = list(w.sources.values()) if w.sources else [w]
    if any(s.arrival == "trace" for s in sources):
        w.load_scale *= volume
        return c
    for s in sources:
        s.rate *= volume
    rate = sum(s.rate for s in sources)
    if w.duration_s is not None and rate > 0 and rate * w.duration_s < min_requests:
        w.duration_s = math.ceil(min_requests / rate)
    return c


# ----------------------------------------------------------------------------- evaluation


def evaluate(cfg: Config) -> dict:
    """One simulation, reduced to the figures a plan compares."""
    from sim.studies.run import run

    c = copy.deepcopy(cfg)
    c.output.plots = False
    t0 = time.perf_counter()
    result = run(c)
    s = result.summary
    seeds = result.per_seed
    return {
        **{k: s.get(k, math.nan) for k in SUMMARY_KEYS},
        "slo_met": bool(s["slo_met"]),
        "api_cap_exceeded": bool(s.get("api_cap_exceeded", False)),
        "tokens": s["input_tokens"] + s["output_tokens"],
        **{k: v for k, v in s.items() if k.endswith(("_ci_low", "_ci_high")) or k in ("n_seeds", "slo_met_seeds")},
        # per seed (replications): what the planner's $/M tokens and its interval are made of
        **({f"_seed_{k}": seeds[k].tolist() for k in SEED_COLUMNS} if seeds is not None else {}),
        "run_s": time.perf_counter() - t0,
    }


# summary figures every plan.csv row carries (docs/metrics.md)
SUMMARY_KEYS = (
    "total_cost",
    "cost_per_hour",
    "cost_per_month",
    "slo_attainment",
    "ttft_p99",
    "tpot_p99",
    "api_share",
    "mean_replicas",
    "gpu_cost",
    "api_cost",
    "ops_cost",
    "api_cost_per_month",
    "api_monthly_cap",
    "gpu_utilization",
    "engine_occupancy",
    "n_requests",
    "sim_duration_s",
    "arrival_span_s",
)
SEED_COLUMNS = ("cost_per_hour", "input_tokens", "output_tokens")


def per_mtok(cost_per_hour, tokens, span: float):
    """$ per million tokens from a cost rate and the tokens served over the arrival window."""
    cost_per_hour, tokens = np.asarray(cost_per_hour, dtype=float), np.asarray(tokens, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tokens > 0, cost_per_hour / (tokens / span * 3600) * 1e6, np.nan)


def workload_span(cfg: Config) -> float:
    """The arrival window of the workload, seconds (the span its request rate is measured over)."""
    from sim.config.schema import has_trace
    from sim.results.metrics import arrival_span
    from sim.workload.build import build_workload

    if cfg.workload.duration_s is not None and not has_trace(cfg.workload):
        return float(cfg.workload.duration_s)
    return arrival_span(cfg.workload, build_workload(cfg.workload, cfg.seed).arrival_s)


def search_fixed(cfg: Config, max_replicas: int, log: list) -> int | None:
    """Smallest replica count meeting the SLO (attainment grows with replicas): bracket by
    doubling, then bisect. None if even max_replicas misses."""
    cache: dict[int, bool] = {}

    def ok(n: int) -> bool:
        if n not in cache:
            row = evaluate(fixed_fleet(cfg, n))
            log.append({"strategy": "fixed", "replicas": n, **row})
            cache[n] = row["slo_met"]
        return cache[n]

    lo, hi = 0, 1  # lo misses (0 replicas: nothing), hi to be found
    while not ok(hi):
        lo = hi
        if hi >= max_replicas:
            return None
        hi = min(hi * 2, max_replicas)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def fixed_search_task(args: tuple[Config, str, GpuConfig, int, int, bool]) -> tuple[list[dict], int | None, bool]:
    """Phase 1 for one GPU option (a process-pool task): the fixed-fleet search, whose answer N
    bounds the other strategies. Returns its runs, N (None: even max_replicas misses, or no
    search) and whether the option fits at all."""
    cfg, gpu, spec, tp, max_replicas, search = args
    base = {"gpu": gpu, "tp": tp, "gpu_price": spec.price_per_hour}
    c = with_gpu(cfg, spec, tp)
    try:
        validate(fixed_fleet(c, 1))
    except UserError as exc:
        return [{**base, "strategy": "does not fit", "note": str(exc)}], None, False
    if not search:
        return [], None, True
    log: list[dict] = []
    n = search_fixed(c, max_replicas, log)
    return [{**base, **r} for r in log], n, True


def candidate_task(ladder: list[tuple[Config, dict]]) -> list[dict]:
    """Phase 2 (a process-pool task): candidates run in order until one meets the SLO. A hybrid
    baseline's ladder goes from the widest overflow margin (fewest requests to the API, the
    cheapest) to the narrowest; once one is feasible, narrower ones only cost more."""
    rows = []
    for cfg, meta in ladder:
        try:
            rows.append({**meta, **evaluate(cfg)})
        except UserError as exc:  # recorded, not fatal: the other candidates still count
            rows.append({**meta, "slo_met": False, "note": str(exc)})
            break
        if rows[-1]["slo_met"]:
            break
    return rows


def candidates(
    cfg: Config, p: PlanConfig, gpu: str, tp: int, n: int | None, spec: GpuConfig | None = None
) -> list[list[tuple[Config, dict]]]:
    """The autoscaled and hybrid candidates of one GPU option given its fixed answer n, as
    ladders for `candidate_task`."""
    c = with_gpu(cfg, spec if spec is not None else gpu, tp)
    base = {"gpu": gpu, "tp": tp, "gpu_price": c.gpu.price_per_hour}
    out = []
    if n is not None and "autoscaled" in p.strategies:
        hi = min(n + 1, p.max_replicas)
        for lo in sorted({1, max(1, n // 2)}):
            for target in p.targets:
                meta = {**base, "strategy": "autoscaled", "min_replicas": lo, "max_replicas": hi, "target": target}
                out.append([(autoscaled_fleet(c, lo, hi, target), meta)])
    if "hybrid" in p.strategies and cfg.api.name != "none":
        for b in baselines(n if n is not None else p.max_replicas + 1, p.hybrid_sizes):
            ladder = []
            for margin in sorted(p.margins, reverse=True):
                meta = {**base, "strategy": "hybrid", "replicas": b, "margin": margin}
                ladder.append((hybrid_fleet(c, b, p.overflow, margin), meta))
            out.append(ladder)
    return out


def plan_many(cfgs: list[Config], p: PlanConfig, gpus: dict[str, GpuConfig] | None = None) -> list[pd.DataFrame]:
    """Plan each scenario of `cfgs` (e.g. volume levels), sharing one process pool: the fixed
    searches of every GPU option run in parallel, then every other candidate does. `gpus`: the
    GPU of each option (default: `gpu_options` of the first scenario)."""
    gpus = gpus if gpus is not None else gpu_options(cfgs[0], p)
    options = [(i, gpu, tp) for i in range(len(cfgs)) for gpu in p.gpus for tp in p.tp]
    search = bool({"fixed", "autoscaled", "hybrid"} & set(p.strategies))  # N bounds all three
    with Mapper(p.backend, p.workers, p.ray_address, p.submitit) as mapper:
        found = mapper(
            fixed_search_task,
            [(cfgs[i], gpu, gpus[gpu], tp, p.max_replicas, search) for i, gpu, tp in options],
            "fixed-fleet searches",
        )
        tasks: list[list[tuple[Config, dict]]] = []
        for i, c in enumerate(cfgs):
            if "api" in p.strategies and c.api.name != "none":
                # no replicas, but the scenario must still validate: take a GPU option that fits
                fits = [(g, t) for (j, g, t), (_, _, ok) in zip(options, found, strict=True) if j == i and ok]
                base = with_gpu(c, gpus[fits[0][0]], fits[0][1]) if fits else c
                meta = {"plan": i, "gpu": "none", "tp": 0, "strategy": "pure API", "replicas": 0}
                tasks.append([(hybrid_fleet(base, 0, "always"), meta)])
        for (i, gpu, tp), (_, n, ok) in zip(options, found, strict=True):
            if ok:
                tasks.extend(
                    [(c, {"plan": i, **meta}) for c, meta in ladder]
                    for ladder in candidates(cfgs[i], p, gpu, tp, n, gpus[gpu])
                )
        ran = mapper(candidate_task, tasks, "candidates")
    rows: list[list[dict]] = [[] for _ in cfgs]
    for (i, _, _), (log, _, _) in zip(options, found, strict=True):
        # without `fixed` in the strategies, the searches still ran (they size the others): kept, not ranked
        rows[i] += [
            r if r["strategy"] != "fixed" or "fixed" in p.strategies else {**r, "strategy": "fixed search"} for r in log
        ]
    for out in ran:
        for r in out:
            rows[r.pop("plan")].append(r)
    return [_finish(c, pd.DataFrame(r), p.tie_tolerance) for c, r in zip(cfgs, rows, strict=True)]


def plan(cfg: Config, p: PlanConfig, gpus: dict[str, GpuConfig] | None = None) -> pd.DataFrame:
    """Every run of the plan, one row each; `rank` orders the feasible candidates by cost."""
    return plan_many([cfg], p, gpus)[0]


def _finish(cfg: Config, df: pd.DataFrame, tie_tolerance: float = 0.02) -> pd.DataFrame:
    """$/M tokens, exclusions and the ranking.

    Candidates are ranked by `cost_per_hour`, the one cost rate of docs/metrics.md (fleet cost
    per hour of the run, API cost per hour of arrivals, operations overhead on GPU options).
    """
    df = df.reindex(columns=list(dict.fromkeys([*df.columns, *COLUMNS])))
    df["note"] = df["note"].astype(object)
    spans = df["arrival_span_s"].dropna()
    span = float(spans.iloc[0]) if len(spans) else workload_span(cfg)
    df["span_s"] = span
    if df["cost_per_hour"].isna().any():  # rows made by hand (tests, older logs): the rate from its parts
        from sim.results.metrics import cost_rate

        parts = cost_rate(
            df["gpu_cost"].fillna(0.0) + df["ops_cost"].fillna(0.0),
            df["sim_duration_s"],
            df["api_cost"].fillna(0.0),
            span,
        )
        df["cost_per_hour"] = df["cost_per_hour"].fillna(
            pd.Series(parts, index=df.index).where(df["total_cost"].notna())
        )
    df["cost_per_mtok"] = per_mtok(df["cost_per_hour"], df["tokens"], span)
    if "_seed_cost_per_hour" in df:  # replications: the mean of the per-seed $/M and its 95% interval
        from sim.results.replication import interval

        for i, r in df[df["_seed_cost_per_hour"].map(lambda v: isinstance(v, list))].iterrows():
            s = {k: np.asarray(r[f"_seed_{k}"], dtype=float) for k in SEED_COLUMNS}
            mtok = per_mtok(s["cost_per_hour"], s["input_tokens"] + s["output_tokens"], span)
            df.loc[i, "cost_per_mtok"] = float(np.nanmean(mtok))
            low, high = interval(mtok)
            df.loc[i, "cost_per_mtok_ci_low"], df.loc[i, "cost_per_mtok_ci_high"] = max(low, 0.0), max(high, 0.0)
        df = df.drop(columns=[c for c in df.columns if c.startswith("_seed_")])
    df["cost_per_month"] = df["cost_per_hour"] * HOURS_PER_MONTH
    ops_rate = (df["ops_cost"].fillna(0.0) / df["sim_duration_s"] * 3600).where(df["sim_duration_s"] > 0, 0.0)
    df["cost_per_hour_no_ops"] = df["cost_per_hour"] - ops_rate.fillna(0.0)
    df["slo_met"] = df["slo_met"].astype(object).where(df["slo_met"].notna(), False).astype(bool)
    capped = df["api_cap_exceeded"].astype(object).where(df["api_cap_exceeded"].notna(), False).astype(bool)
    df["api_cap_exceeded"] = capped
    # a hybrid whose baseline served nothing is the API plus idle GPUs: shown, never recommended
    idle = idle_baseline(df)
    df.loc[idle, "note"] = "the GPU baseline served no request: every one went to the API"
    for i in df.index[capped]:
        df.loc[i, "note"] = (
            f"excluded: the API spend projects to ${df.loc[i, 'api_cost_per_month']:,.0f}/month, over the tier's "
            f"${df.loc[i, 'api_monthly_cap']:,.0f}/month cap (api.monthly_cap_usd)"
        )
    df["rank"] = np.nan
    ok = _by_cost(df[df["slo_met"] & df["strategy"].isin(RANKED) & df["cost_per_hour"].notna() & ~idle & ~capped])
    df.loc[ok.index, "rank"] = np.arange(1, len(ok) + 1)
    df["tied_with_best"] = False
    if len(ok):
        df.loc[ok.index, "tied_with_best"] = ties(ok, tie_tolerance).to_numpy()
    return df


def ties(ranked: pd.DataFrame, tolerance: float) -> pd.Series:
    """Which ranked candidates the data cannot tell from the best: with replications, a cost
    interval that overlaps the best's; without, a cost within `tolerance` of the best's."""
    best = ranked.iloc[0]
    cost = ranked["cost_per_hour"]
    if "cost_per_hour_ci_low" in ranked and pd.notna(best.get("cost_per_hour_ci_high")):
        low = ranked["cost_per_hour_ci_low"].fillna(cost)
        return low <= best["cost_per_hour_ci_high"]
    return cost <= best["cost_per_hour"] * (1 + tolerance)


def idle_baseline(df: pd.DataFrame) -> pd.Series:
    """Hybrids whose GPU baseline served no request (every one went to the API)."""
    return (df["strategy"] == "hybrid") & (df["api_share"] >= 1.0)


RANKED = ("fixed", "autoscaled", "hybrid", "pure API")
# every plan.csv has these, whatever ran
COLUMNS = (
    "gpu",
    "tp",
    "strategy",
    "replicas",
    "total_cost",
    "gpu_cost",
    "api_cost",
    "ops_cost",
    "tokens",
    "sim_duration_s",
    "arrival_span_s",
    "cost_per_hour",
    "slo_met",
    "slo_attainment",
    "ttft_p99",
    "tpot_p99",
    "api_share",
    "api_cost_per_month",
    "api_monthly_cap",
    "api_cap_exceeded",
    "gpu_utilization",
    "engine_occupancy",
    "n_requests",
    "note",
)


def describe(row: pd.Series) -> str:
    gpu = f"{int(row['tp'])}x {row['gpu']}" if row["tp"] > 1 else row["gpu"]
    s = row["strategy"]
    if s == "fixed":
        return f"{int(row['replicas'])} x {gpu}, always on"
    if s == "autoscaled":
        return f"{int(row['min_replicas'])}-{int(row['max_replicas'])} x {gpu}, autoscaled (target {row['target']:g})"
    if s == "hybrid":
        return f"{int(row['replicas'])} x {gpu} + API overflow (margin {row['margin']:g})"
    if s == "pure API":
        return "API only"
    if s == "fixed search":
        return f"{int(row['replicas'])} x {gpu}, always on (sizing search, not ranked)"
    return f"{gpu}: {s}"


def best_per_option(df: pd.DataFrame) -> pd.DataFrame:
    """The cheapest feasible candidate of each GPU option and strategy."""
    ok = df[df["rank"].notna()]
    if ok.empty:
        return ok
    return _by_cost(ok).groupby(["gpu", "tp", "strategy"], sort=False).head(1)


SIMPLER = {"fixed": 0, "pure API": 1, "hybrid": 2, "autoscaled": 3}


def _by_cost(df: pd.DataFrame) -> pd.DataFrame:
    """Cheapest first; at equal cost the simpler setup (an autoscaler that never scaled costs
    what the fixed fleet does), then fewer replicas, then the GPU's name."""
    key = df["strategy"].map(SIMPLER).fillna(9)
    return (
        df.assign(_simple=key)
        .sort_values(["cost_per_hour", "_simple", "replicas", "gpu"], kind="stable")
        .drop(columns="_simple")
    )


def report(cfg: Config, p: PlanConfig, df: pd.DataFrame, wall_s: float) -> str:
    """plan.md: the recommendation, its figures, the runners-up and how the search went."""
    w, slo = cfg.workload, cfg.slo
    best = best_per_option(df)
    lines = [
        "# Capacity plan",
        "",
        f"Workload `{w.name}`, model {cfg.model.name} ({cfg.model.weight_dtype}), SLO `{slo.name}`: TTFT <= "
        f"{slo.ttft_s:g} s and TPOT <= {slo.tpot_s * 1000:g} ms at p{slo.percentile:g}, "
        f"{slo.attainment:.0%} of requests.",
        f"Options: GPUs {', '.join(p.gpus)}; TP {', '.join(map(str, p.tp))}; strategies {', '.join(p.strategies)}"
        + (
            f"; {len(cfg.seeds)} seeds per run, feasible at the pessimistic end of the 95% intervals"
            + _replication_note(cfg)
            if cfg.seeds
            else ""
        ),
        _prices_line(cfg, df),
        "",
    ]
    lines += _recommendation(best, df, cfg)
    lines += _excluded(df)
    lines += _cautions(df, cfg)
    lines += ["", run_count_line(df, p, wall_s) + " Every run is in plan.csv."]
    return "\n".join(lines) + "\n"


def _recommendation(best: pd.DataFrame, df: pd.DataFrame, cfg: Config) -> list[str]:
    """The recommendation and runners-up, or the closest misses."""
    lines: list[str] = []
    if best.empty:
        lines += ["**No candidate meets the SLO.** The closest:", ""]
        ran = df[df["strategy"].isin(RANKED) & df["total_cost"].notna() & ~idle_baseline(df)]
        idle = int(idle_baseline(df).sum())
        if idle:
            lines += [
                f"({idle} hybrid run(s) whose GPU baseline served no request, everything overflowing to the API, "
                "are not counted: they are the API plus idle GPUs.)",
                "",
            ]
        if not ran.empty:
            near = ran.sort_values("slo_attainment", ascending=False).head(5)
            lines += _table(near)
    else:
        top = best.iloc[0]
        lines += [
            f"## Recommendation: {describe(top)}",
            "",
            f"- **${top['cost_per_month']:,.0f} per month** (${top['cost_per_hour']:,.2f}/hour), "
            f"**${top['cost_per_mtok']:.4f} per million tokens**",
            f"- p99 TTFT {top['ttft_p99']:.3f} s, p99 TPOT {top['tpot_p99'] * 1000:.1f} ms, "
            f"SLO attainment {top['slo_attainment']:.2%}"
            + (f", {top['api_share']:.1%} of requests to the API" if top["api_share"] > 0 else ""),
            "",
            *_tie_lines(best, cfg),
            "## Runners-up (cheapest per GPU option and strategy)",
            "",
            *_table(best.head(8)),
        ]
    return lines


def _excluded(df: pd.DataFrame) -> list[str]:
    """Options over the API cap, that do not fit, or that could not run."""
    lines: list[str] = []
    capped = df[df["api_cap_exceeded"]]
    if len(capped):
        lines += [
            "",
            "Excluded for breaking the API tier's monthly cap (the run's API spend projected to a month):",
            "",
        ]
        lines += [
            f"- {describe(r)}: ${r['api_cost_per_month']:,.0f}/month against a ${r['api_monthly_cap']:,.0f} cap"
            + (" (it met the SLO)" if r["slo_met"] else "")
            for _, r in capped.sort_values("cost_per_hour").head(8).iterrows()
        ]
    fits = df[df["strategy"] == "does not fit"]
    if len(fits):
        lines += ["", "Options skipped:", ""] + [f"- {r.gpu} TP{int(r.tp)}: {r.note}" for r in fits.itertuples()]
    failed = df[df["strategy"].isin(RANKED) & df["total_cost"].isna()]
    if len(failed):
        lines += ["", "Candidates that could not run:", ""]
        lines += [f"- {describe(r)}: {r['note']}" for _, r in failed.iterrows()]
    return lines


def _cautions(df: pd.DataFrame, cfg: Config) -> list[str]:
    """Warnings on too few requests per run and on a window short against the billing minimum."""
    lines: list[str] = []
    if "n_requests" in df and df["n_requests"].notna().any():
        n = int(df["n_requests"].median())
        if n < 1000:
            lines += [
                "",
                f"**Caution:** each run saw about {n} requests, so one request moves attainment by "
                f"{1 / n:.1%}; lengthen `workload.duration_s` or replicate with `seeds` before trusting the ranking.",
            ]
    span, least = float(df["span_s"].iloc[0]) if len(df) else 0.0, cfg.fleet.pricing.min_billed_s
    if 0 < span < 10 * least:
        lines += [
            "",
            f"**Caution:** the arrival window ({span:g} s) is short against the minimum billed time of a "
            f"replica ({least:g} s, `fleet.pricing.min_billed_s`), which weighs on GPU options' cost per hour.",
        ]
    return lines


def _replication_note(cfg: Config) -> str:
    from sim.config.schema import has_trace

    if not has_trace(cfg.workload):
        return ""
    if cfg.workload.bootstrap_block_s is None:
        return (
            " (the trace is replayed as it is in every replication: the intervals show only the simulator's own "
            "randomness, not the traffic's)"
        )
    return f" (each replication replays a block bootstrap of the trace, {cfg.workload.bootstrap_block_s:g} s blocks)"


def _prices_line(cfg: Config, df: pd.DataFrame) -> str:
    """The prices the plan ran with: each GPU option's, operations overhead, the API's."""
    if "gpu_price" in df:
        prices = df.dropna(subset=["gpu_price"]).drop_duplicates("gpu")
        gpu = ", ".join(f"{r.gpu} ${r.gpu_price:g}" for r in prices.itertuples())
    else:
        gpu = ""
    parts = [f"GPUs {gpu} per GPU-hour"] if gpu else []
    ops = cfg.fleet.pricing.ops_cost_per_month
    if ops:
        parts.append(f"operations ${ops:,.0f}/month on every option that runs GPUs")
    a = cfg.api
    if a.name != "none":
        parts.append(
            f"API `{a.name}` ${a.price_input_per_m:g} in / ${a.price_cached_input_per_m:g} cached / "
            f"${a.price_output_per_m:g} out per M tokens"
            + (f", cap ${a.monthly_cap_usd:,.0f}/month" if a.monthly_cap_usd is not None else "")
        )
    return "Prices: " + "; ".join(parts) + "." if parts else ""


def _tie_lines(best: pd.DataFrame, cfg: Config) -> list[str]:
    """Say so when the runners-up cannot be told from the recommendation."""
    tied = best[best["tied_with_best"].astype(bool)]
    if len(tied) <= 1:
        return [""]
    how = "their cost intervals overlap" if cfg.seeds else "within plan.tie_tolerance of it"
    names = "; ".join(describe(r) for _, r in tied.iloc[1:].iterrows())
    return [
        "",
        f"**Not a clear win:** {names} cost{'s' if len(tied) == 2 else ''} about the same ({how}); "
        + (
            "more seeds or a longer workload can separate them."
            if cfg.seeds
            else "replicate with `seeds` to separate them."
        ),
        "",
    ]


def run_count_line(df: pd.DataFrame, p: PlanConfig, wall_s: float) -> str:
    """How many simulations the plan took, against trying every fleet size."""
    runs = int(df["total_cost"].notna().sum())
    fixed = int(df["strategy"].isin(["fixed", "fixed search"]).sum())
    fits = df[~df["strategy"].isin(["does not fit", "pure API"])]
    grid = len(fits[["gpu", "tp"]].drop_duplicates()) * p.max_replicas
    if not fixed:
        return f"{runs} simulation{'s' if runs != 1 else ''} in {wall_s:.0f} s."
    return (
        f"{runs} simulations in {wall_s:.0f} s; the fixed-fleet searches took {fixed} runs where trying every "
        f"size from 1 to {p.max_replicas} would take {grid}."
    )


def _table(rows: pd.DataFrame) -> list[str]:
    """Markdown rows; with replications each figure is the mean with its 95% interval."""
    ci = "slo_attainment_ci_low" in rows.columns and rows["slo_attainment_ci_low"].notna().any()

    def span(r, key: str, fmt, scale: float = 1.0) -> str:
        text = fmt(r[key] * scale)
        if ci and pd.notna(r.get(f"{key}_ci_low")):
            text += f" [{fmt(r[f'{key}_ci_low'] * scale)}, {fmt(r[f'{key}_ci_high'] * scale)}]"
        return text

    out = [
        "| option | $/month | $/M tokens | p99 TTFT | p99 TPOT | attainment | to API | GPU load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for _, r in rows.iterrows():
        month = f"${r['cost_per_month']:,.0f}"
        if ci and pd.notna(r.get("cost_per_hour_ci_low")):
            half = (r["cost_per_hour_ci_high"] - r["cost_per_hour_ci_low"]) / 2 * HOURS_PER_MONTH
            month += f" ± ${half:,.0f}"
        out.append(
            f"| {describe(r)} | {month} | ${r['cost_per_mtok']:.4f} | "
            f"{span(r, 'ttft_p99', lambda v: f'{v:.3f} s')} | {span(r, 'tpot_p99', lambda v: f'{v:.1f} ms', 1000)} | "
            f"{span(r, 'slo_attainment', lambda v: f'{v:.2%}')} | {r['api_share']:.1%} | {_load(r)} |"
        )
    if ci:
        out += [
            "",
            "Means over the seeds with 95% intervals in brackets "
            "($/month: ± the half-width of the cost per hour's interval).",
        ]
    return out


def _load(r: pd.Series) -> str:
    """GPU load against capacity (docs/metrics.md), or a dash for the API alone."""
    v = r.get("gpu_utilization")
    return f"{v:.0%}" if r["strategy"] != "pure API" and v is not None and pd.notna(v) else "-"


def ranked_text(df: pd.DataFrame) -> str:
    best = best_per_option(df)
    capped = df[df["api_cap_exceeded"].astype(bool)] if "api_cap_exceeded" in df else df.iloc[:0]
    if best.empty:
        text = "  no candidate meets the SLO"
        if len(capped):
            text += f" within the API tier's monthly cap ({len(capped)} excluded for breaking it: see plan.md)"
        return text
    lines = [f"  {'#':>2}  {'option':<48s} {'$/month':>10s} {'$/M tok':>9s} {'attain':>8s} {'to API':>7s}"]
    for i, (_, r) in enumerate(best.iterrows(), 1):
        tie = "=" if i > 1 and bool(r.get("tied_with_best")) else " "
        lines.append(
            f"  {i:>2}{tie} {describe(r):<48s} {r['cost_per_month']:>10,.0f} {r['cost_per_mtok']:>9.4f} "
            f"{r['slo_attainment']:>8.2%} {r['api_share']:>7.1%}"
        )
    if best["tied_with_best"].astype(bool).sum() > 1:
        lines.append(
            "  = not distinguishable from #1 (overlapping intervals, or within plan.tie_tolerance without seeds)"
        )
    capped = df[df["api_cap_exceeded"].astype(bool)]
    if len(capped):
        lines.append(
            f"  {len(capped)} candidate(s) excluded: their API spend breaks the tier's monthly cap (see plan.md)"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- break-even


KINDS = {"API": ("pure API",), "dedicated": ("fixed", "autoscaled"), "hybrid": ("hybrid",)}


def breakeven(cfg: Config, p: PlanConfig, gpus: dict[str, GpuConfig] | None = None) -> pd.DataFrame:
    """Per volume level: the cheapest pure-API, dedicated and hybrid option meeting the SLO (or,
    when none of a kind does, its closest miss, flagged)."""
    q = dataclasses.replace(p, mode="plan", strategies=[*dict.fromkeys([*p.strategies, "api"])])
    volumes = sorted(p.volumes)
    plans = plan_many([scaled(cfg, v, p.min_requests) for v in volumes], q, gpus)
    rows = []
    variants = [True, False] if cfg.fleet.pricing.ops_cost_per_month > 0 else [True]
    for v, df in zip(volumes, plans, strict=True):
        runs = int(df["total_cost"].notna().sum())
        for with_ops, (kind, strategies) in itertools.product(variants, KINDS.items()):
            key = "cost_per_hour" if with_ops else "cost_per_hour_no_ops"
            mine = df[df["strategy"].isin(strategies) & df["cost_per_hour"].notna() & ~idle_baseline(df)]
            ok = mine[mine["rank"].notna()]
            pick = (
                ok.sort_values(key, kind="stable").head(1)
                if len(ok)
                else mine.sort_values("slo_attainment", ascending=False, kind="stable").head(1)
            )
            if pick.empty:
                continue
            r = pick.iloc[0]
            span = float(r["span_s"])
            ratio = r[key] / r["cost_per_hour"] if r["cost_per_hour"] > 0 else 1.0
            rows.append(
                {
                    "volume": v,
                    "with_ops": with_ops,
                    "rate": r["n_requests"] / span,
                    "tokens_per_day": r["tokens"] / span * 86_400,
                    "option": kind,
                    "choice": describe(r),
                    "slo_met": bool(pd.notna(r["rank"])),
                    "cost_per_mtok": r["cost_per_mtok"] * ratio,
                    "cost_per_month": r[key] * HOURS_PER_MONTH,
                    "slo_attainment": r["slo_attainment"],
                    "api_cap_exceeded": bool(r["api_cap_exceeded"]),
                    "runs": runs,
                }
            )
    return pd.DataFrame(rows)


def crossovers(df: pd.DataFrame, with_ops: bool = True) -> list[dict]:
    """Where the cheapest SLO-meeting option changes between consecutive volume levels. When both
    options met the SLO at both levels, the crossing is interpolated where their $/M-token curves
    meet, each taken as a power law of volume between the levels (straight in log $/M against log
    volume: exact for a fleet of fixed cost, whose $/M falls as 1/volume, and for the flat API);
    otherwise it lies somewhere between the levels (`exact` false). `with_ops`: with the
    operations overhead (fleet.pricing.ops_cost_per_month) charged to GPU options, or without."""
    out = []
    if "with_ops" in df:
        df = df[df["with_ops"] == with_ops] if (df["with_ops"] == with_ops).any() else df[df["with_ops"]]
    ok = df[df["slo_met"]]
    levels = sorted(ok["volume"].unique())
    cheapest = {v: ok[ok.volume == v].sort_values("cost_per_month", kind="stable").iloc[0] for v in levels}

    def cost(option: str, v: float) -> float:
        m = ok[(ok.volume == v) & (ok.option == option)]
        c = float(m["cost_per_mtok"].iloc[0]) if len(m) else math.nan
        return math.log(c) if c > 0 else math.nan

    for a, b in itertools.pairwise(levels):
        ra, rb = cheapest[a], cheapest[b]
        if ra["option"] == rb["option"]:
            continue
        d_a = cost(ra["option"], a) - cost(rb["option"], a)  # log ratio <= 0: the first was cheaper at a
        d_b = cost(ra["option"], b) - cost(rb["option"], b)
        # one power law per option between the levels holds only while each option is the same
        # set-up at both (a fleet that grows from one replica to two jumps in cost)
        same = all(_choice(ok, o, a) == _choice(ok, o, b) for o in (ra["option"], rb["option"]))
        exact = math.isfinite(d_a) and math.isfinite(d_b) and d_a != d_b and same
        frac = min(max(d_a / (d_a - d_b), 0.0), 1.0) if exact else 0.5
        at = math.exp(math.log(a) + (math.log(b) - math.log(a)) * frac)
        rate_a, rate_b = float(ra["rate"]), float(rb["rate"])
        tpd_a, tpd_b = float(ra.get("tokens_per_day", math.nan)), float(rb.get("tokens_per_day", math.nan))
        out.append(
            {
                "tokens_per_day": tpd_a * (tpd_b / tpd_a) ** frac if tpd_a > 0 else tpd_b,  # NaN if unknown
                "from": ra["option"],
                "to": rb["option"],
                "volume": at,
                "rate": rate_a * (rate_b / rate_a) ** frac if rate_a > 0 else rate_b,
                "between_volume": [a, b],
                "between_rate": [rate_a, rate_b],
                "exact": exact,
            }
        )
    return out


def _choice(ok: pd.DataFrame, option: str, v: float):
    m = ok[(ok.volume == v) & (ok.option == option)]
    return m["choice"].iloc[0] if len(m) and "choice" in m else None


def breakeven_report(cfg: Config, df: pd.DataFrame, cross: list[dict], cross_no_ops: list[dict] | None = None) -> str:
    ops = cfg.fleet.pricing.ops_cost_per_month
    lines = [
        "# Break-even: API, dedicated GPUs or both",
        "",
        f"Workload `{cfg.workload.name}` scaled by {', '.join(f'{v:g}' for v in sorted(df.volume.unique()))}; "
        f"model {cfg.model.name}; API prices ${cfg.api.price_input_per_m:g} input / "
        f"${cfg.api.price_cached_input_per_m:g} cached input / ${cfg.api.price_output_per_m:g} output per M tokens, "
        f"{cfg.api.cache_hit_rate:.0%} input cache hits"
        + (f"; operations ${ops:,.0f}/month on every option that runs GPUs." if ops else "; no operations overhead."),
        "",
        "| volume | req/s | tokens/day | API $/M | dedicated $/M | hybrid $/M | cheapest |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    main = df[df["with_ops"]] if "with_ops" in df else df
    for v in sorted(main.volume.unique()):
        m = main[main.volume == v]

        def cell(option, m=m):
            r = m[m.option == option]
            if r.empty:
                return "-"
            r = r.iloc[0]
            if r.slo_met:
                return f"${r.cost_per_mtok:.4f}"
            return f"${r.cost_per_mtok:.4f}" + (" (over API cap)" if r.get("api_cap_exceeded") else " (misses SLO)")

        ok = m[m.slo_met]
        cheapest = ok.sort_values("cost_per_month").iloc[0] if len(ok) else None
        rate = m["rate"].iloc[0]
        tpd = m["tokens_per_day"].max()
        lines.append(
            f"| {v:g} | {rate:.3g} | {tpd / 1e6:,.1f} M | {cell('API')} | {cell('dedicated')} | {cell('hybrid')} | "
            + (f"{cheapest.option}: {cheapest.choice}" if cheapest is not None else "none meets the SLO")
            + " |"
        )
    title = "with operations overhead" if ops else ""
    lines += ["", f"Crossovers (cheapest SLO-meeting option changes){' ' + title if title else ''}:", ""]
    lines += [_crossing(c) for c in cross] or ["- none in this range"]
    if ops and cross_no_ops is not None:
        lines += ["", "Crossovers without operations overhead (GPU time alone):", ""]
        lines += [_crossing(c) for c in cross_no_ops] or ["- none in this range"]
    return "\n".join(lines) + "\n"


def _crossing(c: dict) -> str:
    lo, hi = c["between_rate"]
    if c["exact"]:
        return (
            f"- {c['from']} -> {c['to']} at about {c['rate']:.3g} req/s, {c['tokens_per_day'] / 1e6:,.1f} M tokens/day "
            f"(volume {c['volume']:.3g}x)"
        )
    return (
        f"- {c['from']} -> {c['to']} between {lo:.3g} and {hi:.3g} req/s "
        "(not interpolated: one of the two misses the SLO at one of the levels, or changes set-up between them)"
    )


def save_plan(out: Path, cfg: Config, p: PlanConfig, df: pd.DataFrame, wall_s: float, *, plots: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "plan.csv", index=False)
    (out / "plan.md").write_text(report(cfg, p, df, wall_s))
    if plots:
        from sim.output.plots import plan_plot

        (out / "plots").mkdir(exist_ok=True)
        plan_plot(df, best_per_option(df), describe, cfg.slo, out / "plots" / "plan.png")


def save_breakeven(
    out: Path, cfg: Config, df: pd.DataFrame, cross: list[dict], *, plots: bool = True, cross_no_ops: list | None = None
) -> None:
    import json

    from sim.results.metrics import json_ready

    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "breakeven.csv", index=False)
    doc = {"crossovers": cross, "crossovers_without_ops": cross_no_ops if cross_no_ops is not None else cross}
    (out / "breakeven.json").write_text(json.dumps(json_ready(doc), indent=2) + "\n")
    (out / "breakeven.md").write_text(breakeven_report(cfg, df, cross, cross_no_ops))
    if plots:
        from sim.output.plots import breakeven_plot

        (out / "plots").mkdir(exist_ok=True)
        breakeven_plot(df[df["with_ops"]] if "with_ops" in df else df, cross, out / "plots" / "breakeven.png")
