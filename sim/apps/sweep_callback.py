"""The Hydra callback that aggregates a sweep when `fleetsim -m` ends (enabled in
conf/config.yaml): sweep.csv, sweep_best.json and plots/ in the sweep directory
(`sim.studies.sweep`), and the console table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from sim.studies.sweep import aggregate, begin, format_table, job_dirs, varying


class SweepCallback(Callback):  # type: ignore[misc]
    """Hydra callback (enabled in conf/config.yaml): aggregate the sweep when it ends."""

    def __init__(self, plots: bool = True):
        self.plots = plots
        self.mark: str | None = None

    def on_multirun_start(self, config, **kwargs) -> None:
        # a sweep directory used before keeps the earlier jobs: the mark tells ours apart
        self.mark = begin(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        df = aggregate(sweep_dir, plots=self.plots, mark=self.mark)
        if df.empty:
            return
        best = json.loads((sweep_dir / "sweep_best.json").read_text())
        jobs = f"{len(df)} job" + ("s" if len(df) != 1 else "")
        print(f"fleetsim sweep: {jobs} ({int((df.status == 'ok').sum())} ok) in {sweep_dir}")
        old = len(job_dirs(sweep_dir)) - len(df)
        if old:
            print(f"  ({old} job directories left there by an earlier sweep are not counted)")
        print(format_table(df))
        if best.get("feasible"):
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
