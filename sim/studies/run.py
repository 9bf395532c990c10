"""`run(cfg) -> Result`: one scenario from its `Config` to results, without Hydra (`sim.run`
also takes a nested dict or an OmegaConf node: `sim.apps.python_api`).

config -> checks (`des.preflight`) -> workload -> simulation (`des.simulate`) -> tables and
summary (`results.summary`; over seeds, `results.replication`) -> `Result`, which `save`s a run
directory. The command line (`sim.apps.cli`), the planner and the tests call this.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sim.config.errors import ConfigError, UserError
from sim.config.schema import Config, has_trace, is_closed, is_sessions, plain
from sim.des.preflight import validate
from sim.des.simulate import simulate
from sim.hardware.kvcache import MemoryPlan, memory_plan
from sim.hardware.perf import build_perf
from sim.results.metrics import arrival_span, json_ready
from sim.results.replication import combine
from sim.results.summary import ClosedRun, summarize_run
from sim.workload.build import Workload, block_bootstrap, build_workload, stream
from sim.workload.limits import check_workload as check_limits


def config_yaml(cfg: Config) -> str:
    """The fully resolved config of a run, as YAML (the Python API's counterpart of .hydra/),
    written as OmegaConf writes it: keys in schema order, block style, and a string that would
    read back as a number or a boolean quoted."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value: str):
        quoted = value in _YAML_BOOLS or _is_number(value)
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'" if quoted else None)

    Dumper.add_representer(str, text)
    return yaml.dump(plain(cfg), Dumper=Dumper, default_flow_style=False, allow_unicode=True, sort_keys=False)


_YAML_BOOLS = {v for b in ("y", "yes", "n", "no", "true", "false", "on", "off") for v in (b, b.title(), b.upper())}


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


@dataclass
class Result:
    config: Config
    summary: dict
    requests: pd.DataFrame
    timeseries: pd.DataFrame
    plan: MemoryPlan
    engine_stats: dict = field(default_factory=dict)
    bills: pd.DataFrame | None = None  # one row per replica: life, seconds by state, billed cost
    spans: list = field(default_factory=list)  # replica lifecycle records (sim.pricing.cost.Span)
    per_seed: pd.DataFrame | None = None  # replicated runs: one summary row per seed

    def save(self, out_dir: str | Path, *, plots: bool | None = None, overwrite: bool = False) -> Path:
        """Write requests.parquet, timeseries.csv, replicas.csv, seeds.csv, config.yaml, plots/ and
        report.md into out_dir, then summary.json, atomically and last: a run directory holds a summary only
        once everything else is in place (a run stopped while writing has none, and a sweep counts
        it as failed). A directory holding an earlier run's outputs is refused, unless `overwrite`,
        which first removes them (never anything else): two runs' files never mix."""
        import os
        import shutil

        out = Path(out_dir)
        earlier = earlier_outputs(out)
        if earlier and not overwrite:
            raise UserError(
                f"{out}: holds an earlier run's outputs ({', '.join(earlier[:3])}); save(..., overwrite=True)"
            )
        for name in earlier:
            shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(config_yaml(self.config))
        if self.config.output.requests:
            self.requests.to_parquet(out / "requests.parquet", index=False)
        self.timeseries.to_csv(out / "timeseries.csv", index=False)
        if self.bills is not None:
            self.bills.to_csv(out / "replicas.csv", index=False)
        if self.per_seed is not None:
            self.per_seed.to_csv(out / "seeds.csv", index=False)
        drawn = self.config.output.plots if plots is None else plots
        if drawn:
            from sim.output import plots as plotting

            plotting.save_all(self, out / "plots")
        from sim.output.report import run_report

        (out / "report.md").write_text(run_report(self.summary, self.config, out / "plots" if drawn else None))
        tmp = out / ".summary.json.tmp"
        tmp.write_text(json.dumps(json_ready(self.summary), indent=2) + "\n")
        os.replace(tmp, out / "summary.json")
        return out


# what a run writes into its directory (Result.save, and error.txt for a failed sweep job)
OUTPUTS = (
    "summary.json",
    "requests.parquet",
    "timeseries.csv",
    "replicas.csv",
    "seeds.csv",
    "config.yaml",
    "report.md",
    "error.txt",
    "deployments",  # a platform's (sim.studies.platform)
    "cascade.parquet",
    "plots",
    ".summary.json.tmp",
)


def earlier_outputs(out: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """The outputs of an earlier run (OUTPUTS, and `extra` names) present in directory `out`."""
    return [name for name in (*OUTPUTS, *extra) if (out / name).exists()]


def check_workload(wl: Workload) -> Workload:
    """A workload handed in by a caller: non-empty, sorted, non-negative, token counts >= 1."""
    import numpy as np

    n = len(wl.arrival_s)
    if n == 0:
        raise UserError("workload: no requests")
    if len(wl.prompt_tokens) != n or len(wl.output_tokens) != n:
        raise UserError("workload: arrival_s, prompt_tokens and output_tokens differ in length")
    if not np.all(np.diff(wl.arrival_s) >= 0) or wl.arrival_s[0] < 0 or not np.all(np.isfinite(wl.arrival_s)):
        raise UserError("workload: arrival_s must be finite, >= 0 and non-decreasing")
    if wl.prompt_tokens.min() < 1 or wl.output_tokens.min() < 1:
        raise UserError("workload: prompt_tokens and output_tokens must be >= 1")
    return wl


def run(cfg: Config, workload: Workload | None = None) -> Result:
    """Simulate one scenario. With `seeds`, the scenario runs once per seed and the summary
    reports means and intervals. (`sim.run` also takes a nested dict or an OmegaConf node.)"""
    if not isinstance(cfg, Config):
        raise TypeError(f"sim.studies.run.run takes a Config, not {type(cfg).__name__}: use sim.run for dicts")
    validate(cfg)
    if cfg.seeds:
        return replicate(cfg, workload)
    return run_one(cfg, workload)


def replicate(cfg: Config, workload: Workload | None = None) -> Result:
    """Run each seed of `cfg.seeds`; the summary holds the mean of every number, a 95% Student-t
    interval (`<key>_ci_low`, `<key>_ci_high`) for the figures that decide a plan, and a
    pessimistic `slo_met`: the SLO must hold at the unfavourable end of every interval
    (`sim.results.replication.combine`)."""
    import dataclasses

    results, how = [], "seeds"
    for s in cfg.seeds:
        wl, how = _seed_workload(cfg, workload, s, how)
        results.append(run_one(dataclasses.replace(cfg, seed=s, seeds=None), wl))
    summary, per_seed = combine(cfg, [r.summary for r in results], how)
    requests = pd.concat(
        [r.requests.assign(seed=s) for s, r in zip(cfg.seeds, results, strict=True)], ignore_index=True
    )
    first = results[0]
    return Result(
        cfg,
        summary,
        requests,
        first.timeseries,
        first.plan,
        first.engine_stats,
        bills=first.bills,
        spans=first.spans,
        per_seed=per_seed,
    )


def _seed_workload(cfg: Config, workload: Workload | None, seed: int, how: str) -> tuple[Workload | None, str]:
    """One replication's workload (None: generated from its seed) and what varies between them:
    the synthetic draws, a block bootstrap of a replayed trace, or nothing (a fixed trace)."""
    if workload is not None or not has_trace(cfg.workload):
        return workload, how
    if is_sessions(cfg.workload):  # a closed loop: the sessions replay as they are, seeds vary the rest
        return None, "fixed session trace"
    if cfg.workload.bootstrap_block_s is None:
        return None, "fixed trace"
    base = build_workload(cfg.workload, seed, cfg.limits)
    wl = block_bootstrap(
        base,
        arrival_span(cfg.workload, base.arrival_s),
        cfg.workload.bootstrap_block_s,
        stream(seed, "bootstrap"),
    )
    return wl, "block bootstrap" if wl is not None else "fixed trace (shorter than two bootstrap blocks)"


def _simulate_with_progress(cfg: Config, wl: Workload, perf, plan: MemoryPlan, users):
    """`simulate`, with a bar over simulated time on a terminal (`sim.output.progress`)."""
    from sim.output.progress import bar, wanted

    if not wanted():
        return simulate(cfg, wl, perf, plan, users)
    closed_or_empty = users is not None or not len(wl)
    horizon = cfg.workload.duration_s if closed_or_empty else float(wl.arrival_s[-1])  # None: open-ended
    total = round(max(horizon, 1.0)) if horizon else None
    with bar(total, "fleetsim: simulated", "s") as b:

        def show(now: float) -> None:
            b.update(max(0, min(round(now), total or round(now)) - b.n))

        return simulate(cfg, wl, perf, plan, users, progress=show, every_s=max((horizon or 600.0) / 500, 1.0))


def _users(cfg: Config):
    """Users who send as the fleet answers: generated (workload=closed) or a session trace's
    sessions (workload.format=sessions), whose size is checked against the limits first."""
    block = cfg.engine.block_size if cfg.engine.prefix_caching else 0
    if is_closed(cfg.workload):
        from sim.workload.closedloop import ClosedLoop

        return ClosedLoop(cfg.workload, cfg.seed, block_tokens=block, limits=cfg.limits)
    import numpy as np

    from sim.workload.sessions import SessionReplay, read_session_trace

    trace = read_session_trace(cfg.workload)
    check_limits(cfg, np.sort(trace.start_s), trace.prompt_tokens, trace.output_tokens, 1)
    return SessionReplay(cfg.workload, trace, block_tokens=block)


def run_one(cfg: Config, workload: Workload | None = None) -> Result:
    wall0 = time.perf_counter()
    users = None
    if workload is None and (is_closed(cfg.workload) or is_sessions(cfg.workload)):
        users = _users(cfg)  # arrivals follow the answers: built while simulating
        wl = users.workload()
    else:
        wl = build_workload(cfg.workload, cfg.seed, cfg.limits) if workload is None else check_workload(workload)
        check_limits(cfg, wl.arrival_s, wl.prompt_tokens, wl.output_tokens, len(wl.class_names))
    plan = memory_plan(cfg.model, cfg.gpu, cfg.engine)
    perf = build_perf(cfg.model, cfg.gpu, cfg.engine)

    out = _simulate_with_progress(cfg, wl, perf, plan, users)
    closed = None
    if users is not None:
        wl = users.workload()
        closed = ClosedRun(users.columns(), users.counters())
    run = summarize_run(cfg, wl, out, plan, perf, closed)
    run.summary["wall_time_s"] = time.perf_counter() - wall0
    return Result(cfg, run.summary, run.requests, run.timeseries, plan, run.engine, bills=run.bills, spans=out.spans)


def named(name: str, fn, *args):
    """fn(*args), a ConfigError it raises named with the platform's deployment `name`."""
    try:
        return fn(*args)
    except ConfigError as exc:
        raise ConfigError(f"platform.deployments.{name}: {exc.key}", exc.value, exc.allowed) from None
