"""`fleetsim-trace`: characterise a trace, and fit a synthetic workload config to it.

    fleetsim-trace stats PATH --format F            # rate, burstiness, daily profile, lengths, prefix reuse
    fleetsim-trace stats --workload NAME|FILE.yaml  # the same for a workload config fleetsim would generate
    fleetsim-trace fit PATH --format F -o conf/workload/NAME.yaml [--kind auto|diurnal|gamma|poisson] [--inline]

`fit` writes a workload (diurnal or bursty arrivals with the trace's rate and burstiness, plus
2,000 of the trace's joint prompt/output lengths in NAME.pairs.csv next to it, or inline with
--inline) whose `stats` match the trace's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from sim.config.errors import UserError

HOUR = 3600.0


# ----------------------------------------------------------------------------- statistics


def prefix_reuse(offsets: np.ndarray, ids: np.ndarray, prompt: np.ndarray, block_tokens: int) -> tuple[float, float]:
    """With an unbounded cache in arrival order: the share of blocks seen before, and the share of
    input tokens inside each request's reusable prefix (its leading blocks all seen before)."""
    if not len(ids):
        return 0.0, 0.0
    _, first = np.unique(ids, return_index=True)
    first_pos = np.empty(int(ids.max()) + 1, dtype=np.int64)
    first_pos[ids[first]] = first
    seen = first_pos[ids] < np.arange(len(ids))
    unseen = np.flatnonzero(~seen)
    starts, ends = offsets[:-1], offsets[1:]
    nxt = np.searchsorted(unseen, starts)
    first_unseen = np.where(nxt < len(unseen), unseen[np.minimum(nxt, len(unseen) - 1)], len(ids))
    lead = np.minimum(first_unseen, ends) - starts
    tokens = np.minimum(lead * block_tokens, prompt)
    return float(seen.mean()), float(tokens.sum() / prompt.sum())


def characterise(
    t: np.ndarray,
    prompt: np.ndarray,
    output: np.ndarray,
    *,
    clock_start_s: float | None = None,
    offsets: np.ndarray | None = None,
    ids: np.ndarray | None = None,
    block_tokens: int = 0,
) -> dict:
    """The statistics `stats` prints, as a dict (times in seconds from the first arrival)."""
    n = len(t)
    span = float(t[-1] - t[0]) if n > 1 else 0.0
    gaps = np.diff(t)
    out: dict = {
        "requests": n,
        "span_s": span,
        "mean_rate": n / span if span > 0 else math.nan,
        "iat_cv": float(gaps.std() / gaps.mean()) if n > 2 and gaps.mean() > 0 else math.nan,
    }
    minutes = int(span // 60)
    if minutes >= 1:
        counts = np.bincount(((t - t[0]) // 60).astype(int), minlength=minutes + 1)[:minutes]  # whole minutes
        out["minute_peak_to_mean"] = float(counts.max() / counts.mean())
    else:
        out["minute_peak_to_mean"] = math.nan
    clock = clock_start_s is not None
    hours = (((t - t[0]) + (clock_start_s or 0.0)) / HOUR) % 24
    covered = np.zeros(24)  # seconds of trace time falling into each hour of the day
    start = clock_start_s or 0.0
    for h in range(24):  # exact coverage of a span that may not be whole days
        covered[h] = _hour_coverage(start, start + span, h)
    counts = np.bincount(hours.astype(int), minlength=24).astype(float)
    rate_by_hour = np.where(covered > 0, counts / np.maximum(covered, 1e-9), np.nan)
    out["hour_rate"] = [None if not np.isfinite(r) else float(r) for r in rate_by_hour]
    out["hour_axis"] = "hour of day" if clock else "hours since the first arrival (mod 24)"
    for name, x in (("prompt", prompt), ("output", output)):
        q = np.percentile(x, [50, 90, 99])
        out[f"{name}_tokens"] = {
            "mean": float(x.mean()),
            "p50": float(q[0]),
            "p90": float(q[1]),
            "p99": float(q[2]),
            "max": int(x.max()),
        }
    if ids is not None and offsets is not None:
        blocks, tokens = prefix_reuse(offsets, ids, prompt, block_tokens)
        out["prefix_blocks_reused"] = blocks
        out["prefix_tokens_reusable"] = tokens
    return out


def _hour_coverage(a: float, b: float, h: int) -> float:
    """Seconds of [a, b) that fall in hour h of the day."""
    total = 0.0
    day0 = math.floor(a / 86_400)
    day1 = math.floor(b / 86_400)
    for d in range(day0, day1 + 1):
        lo, hi = d * 86_400 + h * HOUR, d * 86_400 + (h + 1) * HOUR
        total += max(0.0, min(b, hi) - max(a, lo))
    return total


def format_stats(title: str, s: dict) -> str:
    lines = [title]
    lines.append(f"  requests        {s['requests']:,} over {s['span_s']:,.0f} s ({s['span_s'] / HOUR:.2f} h)")
    lines.append(
        f"  mean rate       {s['mean_rate']:.3f} req/s; busiest minute {s['minute_peak_to_mean']:.2f}x the mean"
    )
    lines.append(f"  inter-arrival   CV {s['iat_cv']:.2f} (1 for Poisson)")
    rates = [r for r in s["hour_rate"] if r is not None]
    if rates:
        top = max(rates)
        bars = "".join(
            " " if r is None else "▁▂▃▄▅▆▇█"[min(7, int(8 * r / top))] if top > 0 else " " for r in s["hour_rate"]
        )
        lines.append(f"  by {s['hour_axis']}: |{bars}|  (00..23, relative arrival rate)")
    for name in ("prompt", "output"):
        q = s[f"{name}_tokens"]
        lines.append(
            f"  {name} tokens   mean {q['mean']:,.0f}  p50 {q['p50']:,.0f}  p90 {q['p90']:,.0f}"
            f"  p99 {q['p99']:,.0f}  max {q['max']:,}"
        )
    if "prefix_blocks_reused" in s:
        lines.append(
            f"  prefix reuse    {s['prefix_blocks_reused']:.1%} of blocks seen before; "
            f"{s['prefix_tokens_reusable']:.1%} of input tokens in a reusable prefix (unbounded cache)"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- fitting


def fit(
    t: np.ndarray,
    prompt: np.ndarray,
    output: np.ndarray,
    *,
    name: str,
    kind: str = "auto",
    clock_start_s: float | None = None,
    start_weekday: int | None = None,
    source: str = "",
    seed: int = 0,
    max_pairs: int = 2000,
) -> dict:
    """A workload config approximating the trace: its rate, burstiness and (if it spans a day or
    more) daily profile, with its joint prompt/output lengths."""
    s = characterise(t, prompt, output, clock_start_s=clock_start_s)
    span = s["span_s"]
    if kind == "auto":
        kind = "diurnal" if span >= 20 * HOUR else ("poisson" if abs(s["iat_cv"] - 1) < 0.1 else "gamma")
    cfg: dict = {"name": name}
    if kind == "diurnal":
        weights = np.array([r if r is not None else 0.0 for r in s["hour_rate"]])
        weights = weights / weights.mean() if weights.mean() > 0 else np.ones(24)
        cv = _rescaled_cv(t - t[0], weights, clock_start_s or 0.0)
        cfg.update(
            arrival="diurnal",
            rate=float(s["mean_rate"]),
            hourly_weights=[round(float(w), 4) for w in weights],
            weekend_factor=1.0,
            start_weekday=int(start_weekday or 0),
            cv=round(cv, 3),
        )
    elif kind == "gamma":
        cfg.update(arrival="gamma", rate=float(s["mean_rate"]), cv=round(float(s["iat_cv"]), 3))
    elif kind == "poisson":
        cfg.update(arrival="poisson", rate=float(s["mean_rate"]))
    else:
        raise UserError(f"--kind {kind!r}: must be auto, diurnal, gamma or poisson")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(prompt), size=min(max_pairs, len(prompt)), replace=False)
    pick.sort()
    cfg["duration_s"] = round(span, 3)
    cfg["pairs"] = {"values": [[int(prompt[i]), int(output[i])] for i in pick]}
    cfg["_fitted_from"] = {
        "source": source,
        "kind": kind,
        **{k: s[k] for k in ("requests", "span_s", "mean_rate", "iat_cv")},
    }
    return cfg


def _rescaled_cv(t: np.ndarray, weights: np.ndarray, clock: float) -> float:
    """CV of the gaps after rescaling time by the hourly profile: the burstiness left once the
    daily cycle is taken out (1 for a non-homogeneous Poisson process)."""
    grid = np.arange(0.0, t[-1] + HOUR, 60.0)
    rate = weights[(((grid + clock) / HOUR) % 24).astype(int)]
    cum = np.concatenate([[0.0], np.cumsum(rate[:-1] * 60.0)])
    gaps = np.diff(np.interp(t, grid, cum))
    return float(gaps.std() / gaps.mean()) if len(gaps) > 1 and gaps.mean() > 0 else 1.0


def write_fitted(cfg: dict, path: Path, *, inline: bool = False) -> None:
    """The fitted workload as YAML at `path`; its (prompt, output) pairs in a table next to it
    (NAME.pairs.csv, read through `pairs.path`), or inline with `inline` (a config with 2,000
    inline pairs takes seconds longer to compose, in every sweep job)."""
    import yaml

    meta = cfg.pop("_fitted_from")
    pairs = cfg.pop("pairs")
    header = (
        f"# Fitted by fleetsim-trace from {meta['source']}:\n"
        f"# {meta['requests']:,} requests over {meta['span_s']:,.0f} s,"
        f" {meta['mean_rate']:.3f} req/s, inter-arrival CV {meta['iat_cv']:.2f}; arrivals: {meta['kind']}.\n"
        f"# Token lengths: {len(pairs['values'])} (prompt, output) pairs sampled from the trace, resampled jointly.\n"
    )
    weights = cfg.pop("hourly_weights", None)
    body = yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False, width=120)
    if weights is not None:
        body += "hourly_weights: [" + ", ".join(f"{w:g}" for w in weights) + "]\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if inline:
        pairs_text = "pairs:\n  values: [" + ", ".join(f"[{p}, {o}]" for p, o in pairs["values"]) + "]\n"
    else:
        table = path.with_name(f"{path.stem}.pairs.csv")
        rows = "".join(f"{p},{o}\n" for p, o in pairs["values"])
        table.write_text("prompt_tokens,output_tokens\n" + rows)
        pairs_text = (
            f"pairs:  # resampled from the table next to this file\n  path: {table.as_posix()}\n  format: csv\n"
            "  prompt_column: prompt_tokens\n  output_column: output_tokens\n"
        )
    path.write_text(header + body + pairs_text)


# ----------------------------------------------------------------------------- command line


def _load(args) -> tuple[str, dict]:
    """(title, arrays for characterise) of a trace file or a workload config."""
    return _load_workload(args) if args.workload else _load_trace(args)


def _load_workload(args) -> tuple[str, dict]:
    import yaml

    from sim.apps.python_api import to_config
    from sim.config.schema import conf_dir, validate_workload
    from sim.workload.build import build_workload

    p = Path(args.workload)
    if not p.suffix:
        p = Path(conf_dir()) / "workload" / f"{args.workload}.yaml"
    if not p.is_file():
        raise UserError(f"--workload {args.workload}: no such file or config option")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: a workload config must be a mapping of keys")
    data.pop("defaults", None)
    wc = to_config({"workload": data}).workload
    validate_workload(wc)
    wl = build_workload(wc, args.seed)
    return f"workload {p} (seed {args.seed})", _arrays(wl)


def _arrays(src) -> dict:
    """What characterise reads of a workload or a trace."""
    return {
        "t": src.arrival_s,
        "prompt": src.prompt_tokens,
        "output": src.output_tokens,
        "clock_start_s": src.clock_start_s,
        "offsets": src.hash_offsets,
        "ids": src.hash_ids,
        "block_tokens": src.block_tokens,
        "start_weekday": src.start_weekday,
    }


def _trace_options(args) -> dict:
    opts = {"keep_failed": args.keep_failed, "sort": args.sort, "time_unit": args.time_unit}
    if args.columns:
        bad = [kv for kv in args.columns if "=" not in kv or not kv.split("=", 1)[1]]
        if bad:
            raise UserError(f"--columns {bad[0]}: give KEY=COLUMN (e.g. arrival_s=timestamp)")
        opts["columns"] = dict(kv.split("=", 1) for kv in args.columns)
        known = ("arrival_s", "prompt_tokens", "output_tokens", "label")
        unknown = [k for k in opts["columns"] if k not in known]
        if unknown:
            raise UserError(f"--columns {unknown[0]}=...: unknown key; known: {', '.join(known)}")
    return opts


def _load_trace(args) -> tuple[str, dict]:
    from sim.config.errors import TraceError
    from sim.config.schema import resolve_path
    from sim.workload.traces import read_trace

    opts = _trace_options(args)
    try:
        tr = read_trace(resolve_path(args.path), args.format, **opts)
    except TraceError as exc:
        if args.format == "csv" and "missing column" in str(exc):  # the default format, a named trace
            raise UserError(f"{exc} (a trace in a known format? --format azure|burstgpt|mooncake)") from None
        raise
    note = f", {tr.dropped_failed} failed requests dropped" if tr.dropped_failed else ""
    return f"trace {args.path} ({args.format}{note})", _arrays(tr)


def _check_writable(path: Path) -> None:
    """`fit -o`: a file that can be written (not a directory, in a directory that exists or can be
    made), checked before the work."""
    if path.is_dir():
        raise UserError(f"-o {path}: is a directory; give a YAML file name (e.g. {path}/workload.yaml)")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"-o {path}: cannot create {parent} ({exc.strerror or exc})") from None
    import os

    if path.exists():
        if not os.access(path, os.W_OK):
            raise UserError(f"-o {path}: is not writable")
    elif not os.access(parent, os.W_OK):
        raise UserError(f"-o {path}: {parent} is not writable")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="fleetsim-trace", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("stats", "fit"):
        p = sub.add_parser(name)
        p.add_argument("path", nargs="?", help="trace file")
        p.add_argument("--format", default="csv", help="azure | burstgpt | mooncake | csv | parquet | sessions")
        p.add_argument(
            "--columns",
            nargs="*",
            metavar="KEY=COLUMN",
            help="csv/parquet column map: arrival_s=, prompt_tokens=, output_tokens=, label=",
        )
        p.add_argument("--time-unit", default="s", choices=["s", "ms", "us"])
        p.add_argument("--keep-failed", action="store_true", help="burstgpt: keep failed requests")
        p.add_argument("--sort", action="store_true", help="sort out-of-order timestamps instead of failing")
        p.add_argument("--seed", type=int, default=0)
        if name == "stats":
            p.add_argument("--workload", help="a workload option name or YAML file instead of a trace")
            p.add_argument("--json", action="store_true", help="print JSON")
        else:
            p.add_argument("-o", "--output", required=True, type=Path, help="workload YAML to write")
            p.add_argument("--kind", default="auto", help="auto | diurnal | gamma | poisson")
            p.add_argument(
                "--inline", action="store_true", help="write the length pairs into the YAML (slower to compose)"
            )
    return ap


def _command(args) -> int:
    if not args.workload and not args.path:
        raise UserError("give a trace PATH (or --workload for stats)")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed}: must be an integer >= 0")
    if args.command == "fit":
        _check_writable(args.output)
    title, data = _load(args)
    weekday = data.pop("start_weekday", None)
    if args.command == "stats":
        s = characterise(**data)
        print(json.dumps(s, indent=2) if args.json else format_stats(title, s))
        return 0
    cfg = fit(
        data["t"],
        data["prompt"],
        data["output"],
        name=args.output.stem,
        kind=args.kind,
        clock_start_s=data["clock_start_s"],
        start_weekday=weekday,
        source=str(args.path),
        seed=args.seed,
    )
    try:
        write_fitted(cfg, args.output, inline=args.inline)
    except OSError as exc:
        raise UserError(f"-o {args.output}: cannot write ({exc.strerror or exc})") from None
    print(f"wrote {args.output} ({cfg['arrival']} arrivals, {cfg['rate']:.3f} req/s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "fit":
        args.workload = None
    try:
        return _command(args)
    except UserError as exc:
        print(f"fleetsim-trace: error: {exc}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as exc:
        print(f"fleetsim-trace: error: {args.workload or args.path}: not UTF-8 text ({exc.reason})", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"fleetsim-trace: error: {exc.filename or args.path}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
