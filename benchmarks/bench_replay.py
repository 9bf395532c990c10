#!/usr/bin/env python
"""A 10-million-request trace replayed end to end: wall time and peak memory, next to a yardstick
(bare SimPy timeouts per second, measured in the same process) so machines of different speed
compare by ratio.

python benchmarks/bench_replay.py [--rows 10000000]     # about 6 minutes and 5 GB on two cores

The trace is a generated CSV (Poisson arrivals at 200 req/s, chat lengths) replayed on 13 replicas
of Llama-3 8B on H100 (the engine benchmark's 70%-load fleet), with requests.parquet and plots
off: what a capacity planner replaying a month of production traffic would run. The goal is at
most 8 GiB of peak memory for 10 M requests.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
import simpy
import sim

def yardstick(n=200_000):
    env = simpy.Environment()
    def tick():
        for _ in range(n):
            yield env.timeout(1.0)
    env.process(tick())
    t0 = time.perf_counter()
    env.run()
    return n / (time.perf_counter() - t0)

y = yardstick()
cfg = sim.compose(["output.plots=false", "output.requests=false", "workload=trace", f"workload.path={sys.argv[1]}",
                   "workload.format=csv", "fleet.replicas=13"])
t0 = time.perf_counter()
r = sim.run(cfg)
wall = time.perf_counter() - t0
s = r.summary
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"n": s["n_requests"], "wall_s": wall, "peak_gib": peak, "yardstick_timeouts_per_s": y,
                  "events_per_request": s["engine_events"] / s["n_requests"],
                  "conserved": s["n_gpu"] + s["n_api"] + s["n_rejected"] == s["n_requests"]}))
"""


def make(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.exponential(1 / 200.0, n))
    sigma = 0.7
    prompt = np.maximum(1, rng.lognormal(np.log(1000) - sigma**2 / 2, sigma, n)).astype(np.int64)
    output = np.maximum(1, rng.lognormal(np.log(250) - sigma**2 / 2, sigma, n)).astype(np.int64)
    pd.DataFrame({"arrival_s": np.round(t, 4), "prompt_tokens": prompt, "output_tokens": output}).to_csv(
        path, index=False
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "trace.csv"
        make(path, args.rows)
        size = path.stat().st_size / 2**20
        p = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=False)
    if p.returncode:
        sys.exit(p.stderr)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["file_mb"] = size
    out = ROOT / "benchmarks" / "results" / "replay.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(r, indent=2) + "\n")
    print(
        "| requests | trace file (MB) | wall time (s) | peak memory (GiB) | events/request "
        "| yardstick (SimPy timeouts/s) | wall time x yardstick / request |\n|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {r['n']:,} | {size:,.0f} | {r['wall_s']:.0f} | {r['peak_gib']:.2f} | {r['events_per_request']:.2f} | "
        f"{r['yardstick_timeouts_per_s']:,.0f} | {r['wall_s'] * r['yardstick_timeouts_per_s'] / r['n']:.1f} |"
    )


if __name__ == "__main__":
    main()
