#!/usr/bin/env python
"""Fit the roofline's efficiency factors to published measurements and write docs/calibration.md.

python scripts/calibrate.py            # fit, simulate the checks, write the report
python scripts/calibrate.py --write    # also store the fitted factors in conf/engine/vllm.yaml
python scripts/calibrate.py --no-check # fit only (seconds)
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from sim.studies.calibrate import (
    PARAMS,
    POINTS,
    Fit,
    checks,
    load_points,
    report,
    sources_of,
    with_factors,
    write_engine_defaults,
)

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=Path, default=POINTS)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "calibration.md")
    ap.add_argument("--write", action="store_true", help="update conf/engine/vllm.yaml with the fit")
    ap.add_argument("--no-check", action="store_true", help="skip the end-to-end check simulations")
    args = ap.parse_args()

    points = load_points(args.points)
    fit = Fit(points)
    theta = fit.solve()
    print("fitted:", ", ".join(f"{p}={v:g}" for p, v in zip(PARAMS, theta, strict=True)))
    engine = dataclasses.replace(with_factors(fit.engine, theta))
    check_rows = [] if args.no_check else checks(points, engine)
    for row in fit.slopes + fit.rows + check_rows:
        print(
            f"  {row.group:14s} {row.id:32s} {row.what:18s}"
            f" {row.measured:10.4g} {row.predicted:10.4g} {row.error:+7.1%}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = report(theta, fit.rows, fit.slopes, check_rows, sources_of(points))
    old = args.out.read_text() if args.out.is_file() else ""
    begin, end = "<!-- e2e-fit: begin -->", "<!-- e2e-fit: end -->"
    if begin in old and end in old:  # keep the end-to-end fit's section (scripts/fit_engine.py)
        text = text.rstrip("\n") + "\n\n" + old[old.index(begin) : old.index(end) + len(end)] + "\n"
    args.out.write_text(text)
    print(f"wrote {args.out}")
    if args.write:
        write_engine_defaults(ROOT / "conf" / "engine" / "vllm.yaml", theta)
        print("updated conf/engine/vllm.yaml")


if __name__ == "__main__":
    main()
