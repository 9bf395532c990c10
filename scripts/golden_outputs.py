#!/usr/bin/env python
"""Run a fixed set of scenarios through the CLIs and record a hash of every output file, so a
refactoring can show that it changed no result.

python scripts/golden_outputs.py run DIR          # run the scenarios into DIR, write DIR/hashes.json
python scripts/golden_outputs.py compare A B      # the files whose bytes differ between two runs

The commands run this checkout's code (its pyproject.toml entry points, with this checkout first
on PYTHONPATH), so two worktrees can be compared without reinstalling.

The scenarios: the default run, a trace replay, an autoscaled day with API overflow, a sweep and
a plan, each shortened so that all five take under a minute on two cores. Logs, Hydra's own
records (.hydra/, *.log, multirun.yaml) and the sweep marker are left out; wall-clock columns
(`wall_time_s`, `run_s`, the plan's wall time) and the output folder's path are blanked before
hashing.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "default": ["fleetsim", "workload.duration_s=300"],
    "trace": ["fleetsim", "workload=trace", "workload.duration_s=1800", "fleet.replicas=2"],
    "autoscaled_day": [
        "fleetsim",
        "fleet=autoscaled",
        "workload=diurnal",
        "workload.duration_s=21600",
        "api=default",
        "output.requests=true",
    ],
    "sweep": ["fleetsim", "-m", "fleet.replicas=1,2", "workload.rate=20", "workload.duration_s=300"],
    "plan": [
        "fleetsim-plan",
        "workload.duration_s=300",
        "workload.rate=5",
        "plan.gpus=[h100,l40s]",
        "plan.strategies=[fixed,api]",
        "plan.max_replicas=4",
    ],
}
SKIP_DIRS = {".hydra"}
SKIP_SUFFIXES = {".log"}
SKIP_NAMES = {"multirun.yaml", ".fleetsim_sweep"}
CLOCKS = ("wall_time_s", "run_s")


def normalised(f: Path, out: Path) -> bytes:
    """The file's bytes with its clock readings and the output folder blanked."""
    if f.suffix == ".json":
        data = json.loads(f.read_text())
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in CLOCKS}
        return json.dumps(data, sort_keys=True).replace(str(out), "<OUT>").encode()
    if f.suffix == ".csv":
        df = pd.read_csv(f)
        df = df.drop(columns=[c for c in CLOCKS if c in df.columns])
        buf = io.StringIO()
        df.to_csv(buf, index=False)
        return buf.getvalue().replace(str(out), "<OUT>").encode()
    if f.name == "plan.md":  # the planner's wall time: "N simulations in T s"
        return re.sub(r"(simulations? in )[0-9.,]+ s", r"\1<T> s", f.read_text()).encode()
    return f.read_bytes()


def entry(cmd: list[str]) -> list[str]:
    """`cmd` run through this checkout's entry point (pyproject.toml), not an installed one."""
    import tomllib

    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"][cmd[0]]
    module, func = target.split(":")
    code = f"import sys; sys.argv[0] = {cmd[0]!r}; from {module} import {func}; {func}()"
    return [sys.executable, "-c", code, *cmd[1:]]


def run(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=False)
    hashes: dict[str, str] = {}
    for name, argv in SCENARIOS.items():
        where = out / name
        key = "hydra.sweep.dir" if "-m" in argv else "hydra.run.dir"
        cmd = [*argv, f"{key}={where}"]
        print("$", " ".join(cmd), flush=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(entry(cmd), check=False, cwd=ROOT, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            sys.exit(f"{name}: exit {done.returncode}\n{done.stderr[-2000:]}")
        for f in sorted(where.rglob("*")):
            rel = f.relative_to(where).parts
            if f.is_file() and f.suffix not in SKIP_SUFFIXES and f.name not in SKIP_NAMES and not SKIP_DIRS & set(rel):
                hashes[str(f.relative_to(out))] = hashlib.sha256(normalised(f, out)).hexdigest()
    (out / "hashes.json").write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    print(f"{len(hashes)} files hashed: {out / 'hashes.json'}")


def compare(a: Path, b: Path) -> int:
    ha = json.loads((a / "hashes.json").read_text())
    hb = json.loads((b / "hashes.json").read_text())
    bad = sorted(k for k in ha.keys() | hb.keys() if ha.get(k) != hb.get(k))
    for k in bad:
        print(f"differs: {k}" if k in ha and k in hb else f"only in {'A' if k in ha else 'B'}: {k}")
    print(f"{len(ha.keys() & hb.keys()) - len([k for k in bad if k in ha and k in hb])} identical, {len(bad)} not")
    return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run").add_argument("dir", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args()
    if args.cmd == "run":
        run(args.dir)
    else:
        sys.exit(compare(args.a, args.b))


if __name__ == "__main__":
    main()
