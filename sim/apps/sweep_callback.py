"""The Hydra callback that aggregates a sweep when `fleetsim -m` ends (enabled in
conf/config.yaml): sweep.csv, sweep_best.json and plots/ in the sweep directory
(`sim.studies.sweep`), and the console table."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from sim.studies.sweep import aggregate, begin, format_table, job_dirs, varying


class SweepCallback(Callback):  # type: ignore[misc]
    """Hydra callback (enabled in conf/config.yaml): aggregate the sweep when it ends."""

    def __init__(self, plots: bool = True):
        self.plots = plots
        self.mark: str | None = None
        self.bar = None
        self.pid = os.getpid()

    def on_multirun_start(self, config, **kwargs) -> None:
        # a sweep directory used before keeps the earlier jobs: the mark tells ours apart
        self.mark = begin(Path(config.hydra.sweep.dir))
        from sim.output.progress import bar

        self.pid = os.getpid()
        self.bar = bar(_jobs_planned(config), "fleetsim sweep", "job")

    def on_job_end(self, config, job_return, **kwargs) -> None:
        # jobs run in this process (the basic launcher, the cost_slo sweeper's batches through it)
        # move the bar; a launcher's workers have their own copy of the callback and leave it
        if self.bar is not None and os.getpid() == self.pid:
            self.bar.update(1)

    def on_multirun_end(self, config, **kwargs) -> None:
        if self.bar is not None:
            self.bar.close()
        sweep_dir = Path(config.hydra.sweep.dir)
        df = aggregate(sweep_dir, plots=self.plots, mark=self.mark) if sweep_dir.is_dir() else None
        if df is None or df.empty:
            print(
                f"fleetsim sweep: error: no job results in {sweep_dir.resolve()}: the jobs wrote their outputs "
                "somewhere else (a launcher whose jobs run in another working directory needs an absolute "
                "hydra.sweep.dir) or none ran",
                file=sys.stderr,
            )
            sys.exit(2)
        best = json.loads((sweep_dir / "sweep_best.json").read_text())
        jobs = f"{len(df)} job" + ("s" if len(df) != 1 else "")
        print(f"fleetsim sweep: {jobs} ({int((df.status == 'ok').sum())} ok) in {sweep_dir}")
        old = len(job_dirs(sweep_dir)) - len(df)
        if old:
            print(f"  ({old} job directories left there by an earlier sweep are not counted)")
        print(format_table(df))
        load = best.get("highest_load_meeting_slo")
        if load is not None:
            print(_load_line(load))
        elif best.get("feasible"):
            chosen = " ".join(f"{k}={best['overrides'][k]}" for k in varying(df))
            print(
                f"  cheapest meeting the SLO: job {best['job']} ({chosen}) at ${best['cost_per_hour']:,.2f}/hour "
                f"(${best['cost_per_month']:,.0f}/month; ${best['total_cost']:,.2f} for the run)"
            )
        elif "job" in best:
            chosen = " ".join(f"{k}={best['overrides'][k]}" for k in varying(df))
            print(
                f"  no job met the SLO; the closest: job {best['job']} ({chosen}), attainment "
                f"{best['slo_attainment']:.1%} at ${best['cost_per_hour']:,.2f}/hour"
            )
        else:
            print(f"  {best.get('reason')}")
        written = "sweep.csv, sweep_best.json and plots/" if self.plots else "sweep.csv and sweep_best.json"
        print(f"  {written} written to {sweep_dir}")
        if not (df["status"] == "ok").any():  # nothing to compare: the command failed
            print(f"fleetsim sweep: error: every job failed ({len(df)}); see sweep.csv in {sweep_dir}", file=sys.stderr)
            sys.exit(2)


def _jobs_planned(config) -> int | None:
    """The number of jobs a grid sweep will run (the product of its sweeps' lengths); the trial
    budget of the cost_slo sweeper; None when not known up front."""
    from omegaconf import OmegaConf

    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
    if sweeper.endswith("CostSloSweeper"):
        return int(config.hydra.sweeper.n_trials)
    if not sweeper.endswith("BasicSweeper"):
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    args = [*(f"{k}={v}" for k, v in params.items()), *config.hydra.overrides.task]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
        by_key = {o.get_key_element(): o for o in parsed}
        return math.prod(len(list(o.sweep_iterator())) for o in by_key.values() if o.is_sweep_override())
    except Exception:  # a count is a nicety: an override it cannot expand leaves the bar without a total
        return None


def _load_line(load: dict) -> str:
    """The answer of a sweep over the load: the highest load that meets the SLO."""
    key = load["key"]
    if load.get("value") is None:
        return f"  no {key} tried meets the SLO (tried {', '.join(f'{v:g}' for v in load['tried'])})"
    miss = load.get("first_miss")
    beyond = f"; {key}={miss:g} misses it" if miss is not None else " (the highest tried)"
    return (
        f"  highest load meeting the SLO: {key}={load['value']:g} (job {load['job']}, attainment "
        f"{load['slo_attainment']:.1%}){beyond}"
    )
