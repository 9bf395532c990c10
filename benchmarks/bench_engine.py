#!/usr/bin/env python
"""Engine speed: simulated requests per wall-second and peak memory at 10k, 100k and 1M requests.

Workloads: steady Poisson arrivals at 200 req/s with the default chat lengths (prompt lognormal
mean 1000 / p99 4000; output mean 250 / p99 1000), and the same with 4x longer outputs
(mean 1000 / p99 4000). Llama-3 8B on H100, vLLM defaults. The fleet is sized so the offered
load is 70% of its capacity: a saturation run (3000 requests at t=0 on one replica) measures a
replica's maximum throughput, and replicas = ceil(200 / (0.7 x saturation)).

Each measurement runs `sim.run` in a fresh process (peak RSS is that process's), timing the
simulation only (config composition and imports excluded); the wall time is the best of
`--repeat` runs. Single-threaded: BLAS threads are pinned to 1. Next to each timing, the same
process measures a yardstick (bare SimPy timeouts per CPU second): machines differ up to 3x, so
compare "CPU x yardstick / request" (the cost of a request in bare SimPy timeouts; CPU time, so
that other work on the machine does not count) across machines and commits, not seconds.

    python benchmarks/bench_engine.py                  # full table (several minutes)
    python benchmarks/bench_engine.py --sizes 10000 100000 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RATE = 200.0
PROFILES = {
    "chat": ("workload.output_tokens.mean=250", "workload.output_tokens.p99=1000"),
    "4x output": ("workload.output_tokens.mean=1000", "workload.output_tokens.p99=4000"),
}

CHILD = r"""
import json, resource, sys, time
import numpy as np
import simpy
import sim

def yardstick(n=200_000):
    env = simpy.Environment()
    def tick():
        for _ in range(n):
            yield env.timeout(1.0)
    env.process(tick())
    t0 = time.process_time()
    env.run()
    return n / (time.process_time() - t0)

from sim.workload.build import Workload, build_workload
mode, overrides = sys.argv[1], json.loads(sys.argv[2])
cfg = sim.compose(["output.plots=false", *overrides])
if mode == "saturation":
    wl = build_workload(cfg.workload, cfg.seed)
    n = min(3000, len(wl))
    burst = Workload(np.zeros(n), wl.prompt_tokens[:n], wl.output_tokens[:n])
    r = sim.run(cfg, workload=burst)
    print(json.dumps({"rate": n / float(r.requests.finish_s.max())}))
else:
    y = yardstick()
    t0, c0 = time.perf_counter(), time.process_time()
    r = sim.run(cfg)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = r.summary
    print(json.dumps({
        "n": s["n_requests"], "wall_s": wall, "cpu_s": cpu,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "events_per_request": s["engine_events"] / s["n_requests"], "iterations": s["iterations"],
        "engine_occupancy": s["engine_occupancy"], "gpu_busy": s["gpu_busy"], "ttft_p99": s["ttft_p99"],
        "slo_attainment": s["slo_attainment"], "yardstick_timeouts_per_s": y,
    }))
"""


def child(mode: str, overrides: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, json.dumps(overrides)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3, help="runs per point; the best wall time is kept")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "engine.json")
    args = ap.parse_args()

    sizing = {}
    for name, lengths in PROFILES.items():
        sat = child("saturation", ["workload.duration_s=60", f"workload.rate={RATE}", *lengths])["rate"]
        sizing[name] = (sat, math.ceil(RATE / (0.7 * sat)))
        print(f"{name}: one replica saturates at {sat:.2f} req/s -> {sizing[name][1]} replicas", flush=True)
    rows = []
    for n in args.sizes:
        runs: dict[str, list[dict]] = {name: [] for name in PROFILES}
        for _ in range(args.repeat):  # interleaved, so drift of the machine hits both profiles
            for name, lengths in PROFILES.items():
                over = [*lengths, f"workload.rate={RATE}", f"workload.duration_s={n / RATE}"]
                runs[name].append(child("run", [*over, f"fleet.replicas={sizing[name][1]}"]))
        for name in PROFILES:
            best = min(runs[name], key=lambda r: r["wall_s"])
            best["peak_mb"] = max(r["peak_mb"] for r in runs[name])
            sat, replicas = sizing[name]
            row = {"profile": name, "requests": n, "replicas": replicas, "saturation_rps": sat, **best}
            row["req_per_s"] = best["n"] / best["wall_s"]
            row["all_wall_s"] = [r["wall_s"] for r in runs[name]]
            rows.append(row)
            print(
                f"{name:10s} {n:>9,d} req  {replicas:3d} replicas  {best['wall_s']:7.2f} s  "
                f"{row['req_per_s']:9,.0f} req/s  {best['peak_mb']:6.0f} MB  {best['events_per_request']:.2f} ev/req",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print()
    print(table(rows))


def table(rows: list[dict]) -> str:
    lines = [
        "| outputs | requests | replicas | wall time (s) | simulated req/s | peak memory (MB) | events/request "
        "| wall time vs chat | yardstick (SimPy timeouts/CPU s) | CPU x yardstick / request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {r["requests"]: r["wall_s"] for r in rows if r["profile"] == "chat"}
    for r in sorted(rows, key=lambda r: (r["profile"] != "chat", r["requests"])):
        ratio = r["wall_s"] / base[r["requests"]] if r["requests"] in base else float("nan")
        lines.append(
            f"| {r['profile']} | {r['requests']:,} | {r['replicas']} | {r['wall_s']:.2f} | {r['req_per_s']:,.0f} "
            f"| {r['peak_mb']:.0f} | {r['events_per_request']:.2f} | {ratio:.2f}x "
            f"| {r['yardstick_timeouts_per_s']:,.0f} | {r['cpu_s'] * r['yardstick_timeouts_per_s'] / r['n']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
