"""Sweeps that aggregate themselves.

At the end of `fleetsim -m ...` (any launcher: basic, joblib, SLURM, Ray), the sweep callback
(`sim.apps.sweep_callback`) calls `aggregate`, which reads
every job's directory in the sweep directory: its overrides (`.hydra/overrides.yaml`) and its
`summary.json`, or the error a failed job left in `error.txt`. It writes there:
- `sweep.csv`: one row per job: the overrides as columns, `status` (ok / failed), `error`, and
  every summary key;
- `sweep_best.json`: the cheapest job that meets the SLO, or `"feasible": false` with the
  closest miss;
- `plots/sweep_cost.png` (total cost against the swept parameters, SLO-feasible points filled)
  and `plots/pareto.png` (cost against p99 TTFT, with the frontier).
Jobs are read from files only, never from the launcher's memory (STYLE habit 7).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sim.results.metrics import distinct, json_ready


def _value(text: str):
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":  # a quoted override value
        return text[1:-1]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    return {"true": True, "false": False, "null": None, "none": None}.get(text.lower(), text)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job directory under the sweep directory (at any depth: `hydra.sweep.subdir` may
    nest)."""
    sweep_dir = Path(sweep_dir)
    found = (f.parent.parent for f in sweep_dir.rglob("overrides.yaml") if f.parent.name == ".hydra")
    return [j for j in found if j != sweep_dir]


MARK = ".fleetsim_sweep"  # the sweep's mark, in the sweep directory and copied into each job's


def begin(sweep_dir: Path) -> str:
    """Mark the start of a sweep in its directory (the jobs copy the mark into theirs)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    mark = f"{time.time_ns()}-{os.getpid()}"
    (sweep_dir / MARK).write_text(mark + "\n")
    return mark


def stamp(job_dir: Path, sweep_dir: Path) -> None:
    """In a job: copy the sweep's mark into the job's directory."""
    mark = sweep_dir / MARK
    if mark.is_file():
        (job_dir / MARK).write_text(mark.read_text())


def _mark(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def read_jobs(sweep_dir: Path, mark: str | None = None) -> pd.DataFrame:
    """One row per job. With the sweep's `mark`, only the jobs that carry it: the others were
    left in the directory by an earlier sweep."""
    import yaml

    sweep_dir = Path(sweep_dir)
    rows = []
    jobs = [j for j in job_dirs(sweep_dir) if mark is None or _mark(j / MARK) == mark]
    names = {j: j.relative_to(sweep_dir).as_posix() for j in jobs}
    for job in sorted(jobs, key=lambda j: (not names[j].isdigit(), len(names[j]), names[j])):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
        name = names[job]
        row: dict = {"job": int(name) if name.isdigit() else name}
        for item in overrides:
            key, _, value = str(item).lstrip("+~").partition("=")
            row[key] = _value(value)
        summary, error = job / "summary.json", job / "error.txt"
        try:
            values = json.loads(summary.read_text()) if summary.is_file() else None
            unreadable = ""
        except (OSError, ValueError) as exc:  # a job killed while writing it
            values, unreadable = None, f"summary.json unreadable: {exc}"
        if values is not None:
            row["status"] = "ok"
            row["error"] = ""
            row.update(values)
        else:
            text = error.read_text().strip() if error.is_file() else ""
            row["status"] = "failed"
            row["error"] = (text.splitlines()[0] if text else unreadable) or "no summary.json: the job did not finish"
        row["dir"] = str(job)
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):  # the figures every table and plot reads, even when every job failed
        for key in ("total_cost", "cost_per_hour", "slo_attainment", "ttft_p99", "slo_met"):
            if key not in df:
                df[key] = np.nan
    return df


def override_keys(df: pd.DataFrame) -> list[str]:
    """The columns that came from overrides (they precede `status`)."""
    cols = list(df.columns)
    return list(cols[1 : cols.index("status")]) if "status" in cols else []


def feasible(df: pd.DataFrame) -> pd.Series:
    """Jobs that met the SLO without breaking the API tier's monthly cap (projected to a month)."""
    if "slo_met" not in df.columns:
        return pd.Series(False, index=df.index)
    capped = df["api_cap_exceeded"] == True if "api_cap_exceeded" in df else False  # noqa: E712
    return (df["status"] == "ok") & (df["slo_met"] == True) & ~capped  # noqa: E712 (object column)


def best_job(df: pd.DataFrame) -> dict:
    """The feasible job with the lowest cost rate (`cost_per_hour`, docs/metrics.md: the same
    ranking as the planner's), or the closest miss."""
    keys = override_keys(df)
    ok = df[feasible(df)]
    fields = [
        "total_cost",
        "cost_per_hour",
        "cost_per_month",
        "cost_per_mtok",
        "slo_attainment",
        "ttft_p99",
        "tpot_p99",
        "n_gpu",
        "n_api",
    ]
    if len(ok):
        row = ok.sort_values("cost_per_hour", kind="stable").iloc[0]  # ties: the first job
        out = {"feasible": True}
    else:
        ran = df[df["status"] == "ok"]
        if not len(ran):
            return {"feasible": False, "reason": "every job failed", "jobs": len(df)}
        row = ran.sort_values(["slo_attainment", "cost_per_hour"], ascending=[False, True], kind="stable").iloc[0]
        capped = "api_cap_exceeded" in ran and (ran["api_cap_exceeded"] == True).any()  # noqa: E712
        why = " (jobs that broke the API tier's monthly cap do not count)" if capped else ""
        out = {"feasible": False, "reason": f"no job met the SLO{why}; the closest miss follows"}
    out.update(
        job=_plain(row["job"]),
        overrides={k: _plain(row[k]) for k in keys},
        **{f: _plain(row[f]) for f in fields if f in row.index},
        dir=row["dir"],
    )
    return out


# What an optimising sweeper (hydra/sweeper=cost_slo) minimises, one number per job
INFEASIBLE = 1e9  # $/hour added to a job that misses the SLO: above any feasible cost rate
FAILED = 2e9  # a job that failed: above every job that ran


def objective(summary: dict | None) -> float:
    """The cost rate (`cost_per_hour`, the figure `best_job` ranks by) of a job that meets the SLO
    within the API's monthly cap; a job that misses scores INFEASIBLE plus its attainment
    shortfall (closer misses score better, every miss above every feasible job); a failed job
    (None) scores FAILED."""
    if summary is None:
        return FAILED
    if summary["slo_met"] and not summary.get("api_cap_exceeded", False):
        return float(summary["cost_per_hour"])
    return INFEASIBLE + float(1.0 - summary["slo_attainment"])


LOAD_KEYS = ("workload.rate", "workload.load_scale", "workload.rate_scale", "workload.users")


def highest_load(df: pd.DataFrame) -> dict | None:
    """For a sweep over the load alone (workload.rate, load_scale, rate_scale or users: the
    fleet fixed), the highest load whose job meets the SLO, or None for any other sweep. The
    cheapest job of such a sweep is only the lightest load, not an answer."""
    keys = varying(df)
    if len(keys) != 1 or keys[0] not in LOAD_KEYS:
        return None
    key = keys[0]
    ok = df[feasible(df)]
    loads = pd.to_numeric(df[key], errors="coerce")
    out: dict = {"key": key, "tried": [_plain(v) for v in sorted(loads.dropna().unique())]}
    if len(ok):
        row = ok.loc[pd.to_numeric(ok[key], errors="coerce").idxmax()]
        out.update(value=_plain(row[key]), job=_plain(row["job"]), slo_attainment=_plain(row["slo_attainment"]))
        higher = df[(loads > row[key]) & (df["status"] == "ok")]
        out["first_miss"] = _plain(pd.to_numeric(higher[key]).min()) if len(higher) else None
    return out


def _plain(value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def aggregate(sweep_dir: str | Path, *, plots: bool = True, mark: str | None = None) -> pd.DataFrame:
    sweep_dir = Path(sweep_dir)
    df = read_jobs(sweep_dir, mark)
    if df.empty:
        return df
    df.to_csv(sweep_dir / "sweep.csv", index=False)
    best = best_job(df)
    load = highest_load(df)
    if load is not None:
        best["highest_load_meeting_slo"] = load
    (sweep_dir / "sweep_best.json").write_text(json.dumps(json_ready(best), indent=2) + "\n")
    if plots:
        from sim.output.plots import pareto_plot, sweep_cost_plot

        (sweep_dir / "plots").mkdir(exist_ok=True)
        sweep_cost_plot(df, override_keys(df), feasible(df), sweep_dir / "plots" / "sweep_cost.png")
        pareto_plot(df, override_keys(df), feasible(df), sweep_dir / "plots" / "pareto.png")
    from sim.output.report import sweep_report

    (sweep_dir / "report.md").write_text(sweep_report(df, best, varying(df), sweep_dir / "plots" if plots else None))
    return df


def varying(df: pd.DataFrame) -> list[str]:
    """The override columns whose value differs between jobs (all of them if none does)."""
    keys = override_keys(df)
    return [k for k in keys if distinct(df[k]) > 1] or keys


def format_table(df: pd.DataFrame) -> str:
    keys = varying(df)
    lines = []
    for _, row in df.iterrows():
        label = " ".join(f"{k}={row[k]}" for k in keys)
        if row["status"] != "ok":
            lines.append(f"  {label:<50s} FAILED: {row['error']}")
        else:
            met = "meets SLO" if row.get("slo_met") in (True, "True") else "misses SLO"
            if row.get("api_cap_exceeded") in (True, "True"):
                met = "over API cap"
            lines.append(
                f"  {label:<50s} ${row['cost_per_hour']:>9,.2f}/h  {met:<12s} attainment {row['slo_attainment']:.1%}"
            )
    return "\n".join(lines)
