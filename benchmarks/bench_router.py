#!/usr/bin/env python
"""What each router costs per simulated request, and how two checkouts compare.

The engine benchmark's chat case (Llama-3 8B on H100, Poisson arrivals at 200 req/s, 13
replicas, chat lengths) at 100,000 requests, once per router, in fresh single-threaded processes.
Each process measures a yardstick (bare SimPy timeouts per CPU second) next to its run: the cost of
a request in bare SimPy timeouts (CPU x yardstick / request) is what to compare across machines
and commits. `--code DIR...` runs the same measurement against other checkouts (their `sim`
first on PYTHONPATH), interleaved with this one, so a before/after comparison shares the
machine's state.

    python benchmarks/bench_router.py                                  # this checkout
    git worktree add /tmp/before <commit>
    python benchmarks/bench_router.py --code /tmp/before               # before and after
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUTERS = ("least_outstanding", "round_robin", "power_of_two")
CHILD = r"""
import json, sys, time
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

router, n = sys.argv[1], int(sys.argv[2])
cfg = sim.compose(["output.plots=false", "output.requests=false", "workload.rate=200",
                   f"workload.duration_s={n / 200}", "fleet.replicas=13", f"fleet.router={router}"])
y = yardstick()
c0 = time.process_time()
r = sim.run(cfg)
cpu = time.process_time() - c0
print(json.dumps({"n": r.summary["n_requests"], "cpu_s": cpu, "yardstick": y,
                  "ttft_p99": r.summary["ttft_p99"]}))
"""


def child(code: Path, router: str, n: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", CHILD, router, str(n)], cwd=code, env=env, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code", type=Path, nargs="*", default=[], help="other checkouts to measure too")
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per point; the cheapest is kept")
    ap.add_argument("--routers", nargs="+", default=list(ROUTERS))
    args = ap.parse_args()
    codes = [*args.code, ROOT]
    best: dict[tuple[str, str], dict] = {}
    for _ in range(args.repeat):
        for code in codes:
            for router in args.routers:
                r = child(code, router, args.requests)
                r["cost"] = r["cpu_s"] * r["yardstick"] / r["n"]
                key = (str(code), router)
                if key not in best or r["cost"] < best[key]["cost"]:
                    best[key] = r
    print(
        "| checkout | router | requests | CPU (s) | yardstick (SimPy timeouts/CPU s) | CPU x yardstick / request "
        "| vs least_outstanding |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for code in codes:
        base = best.get((str(code), "least_outstanding"))
        for router in args.routers:
            r = best[(str(code), router)]
            vs = f"{r['cost'] / base['cost']:.2f}x" if base else ""
            name = "this" if code == ROOT else str(code)
            cells = [name, router, f"{r['n']:,}", f"{r['cpu_s']:.2f}", f"{r['yardstick']:,.0f}", f"{r['cost']:.1f}", vs]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
