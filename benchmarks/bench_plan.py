#!/usr/bin/env python
"""Planner and sweep speed: how many simulations a plan takes against the exhaustive grid, and
the wall time with one and two worker processes; a 16-job sweep under the basic and the joblib
launcher.

Scenario: Llama-3 8B, ten minutes of steady chat traffic at 40 req/s (24,000 requests per run),
chat SLO, GPU options H100, A100-80GB and L40S at TP 1, every strategy (fixed, autoscaled,
hybrid, API), max_replicas 32.

    python benchmarks/bench_plan.py            # about three minutes on two cores
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sim
from sim.studies import plan as planner

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ["workload.rate=40", "workload.duration_s=600", "api=default", "output.plots=false"]


def plan_row(workers: int) -> tuple[int, int, float, str]:
    cfg = sim.compose(SCENARIO)
    p = planner.PlanConfig(gpus=["h100", "a100-80gb", "l40s"], max_replicas=32, workers=workers)
    t0 = time.perf_counter()
    df = planner.plan(cfg, p)
    wall = time.perf_counter() - t0
    runs = int(df["total_cost"].notna().sum())
    fixed = int((df["strategy"] == "fixed").sum())
    best = planner.describe(df[df["rank"] == 1].iloc[0])
    return runs, fixed, wall, best


def sweep_wall(launcher: list[str], out: Path) -> float:
    args = [
        sys.executable,
        "-m",
        "sim",
        "-m",
        "gpu=h100,a100-80gb,l40s,h200",
        "fleet.replicas=1,2,3,4",
        *SCENARIO,
        *launcher,
        f"hydra.sweep.dir={out}",
    ]
    t0 = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> None:
    grid = 3 * 32
    print("| planner | simulations | fixed-fleet runs (grid: every size) | wall time (s) | recommendation |")
    print("|---|---:|---:|---:|---|")
    for workers in (1, 2):
        runs, fixed, wall, best = plan_row(workers)
        print(f"| {workers} worker{'s' if workers > 1 else ''} | {runs} | {fixed} ({grid}) | {wall:.1f} | {best} |")
    with tempfile.TemporaryDirectory() as tmp:
        basic = sweep_wall([], Path(tmp) / "basic")
        joblib = sweep_wall(["hydra/launcher=local", "hydra.launcher.n_jobs=2"], Path(tmp) / "joblib")
    print()
    print("| 16-job sweep | wall time (s) |\n|---|---:|")
    print(f"| basic launcher | {basic:.1f} |")
    print(f"| joblib, 2 workers (`hydra/launcher=local`) | {joblib:.1f} |")


if __name__ == "__main__":
    main()
