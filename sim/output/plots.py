"""Figures of a run: latency CDFs against the SLO and the fleet timeline.

Uses matplotlib's object API with the Agg canvas (no pyplot state), so plotting is safe inside
sweep workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from sim.results.metrics import distinct


class Result(Protocol):
    """What the plots read of a run (`sim.studies.run.Result`)."""

    config: Any
    summary: dict
    requests: Any  # pandas DataFrame, one row per request
    timeseries: Any  # pandas DataFrame, one row per sample
    spans: list


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})


def _cdf(ax, values: np.ndarray, threshold: float, label: str, unit_scale: float, unit: str, pct: float) -> None:
    values = np.sort(values[~np.isnan(values)]) * unit_scale
    if len(values) == 0:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    y = np.arange(1, len(values) + 1) / len(values)
    ax.plot(values, y, color="#1f77b4", lw=1.8)
    ax.axvline(threshold * unit_scale, color="#d62728", ls="--", lw=1.2, label=f"SLO {threshold * unit_scale:g} {unit}")
    ax.axhline(pct / 100, color="grey", ls=":", lw=1, label=f"p{pct:g}")
    met = float(np.mean(values <= threshold * unit_scale))
    ax.set_title(f"{label}: {met:.1%} within SLO")
    ax.set_xlabel(f"{label} ({unit})")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.01)
    if values[-1] > 0 and values[-1] / max(values[0], 1e-9) > 100:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")


def scenario(result: Result) -> str:
    """One line saying what was simulated, for figure titles."""
    c, s = result.config, result.summary
    tp = c.engine.tensor_parallel_size
    if c.fleet.autoscaler.name == "fixed":
        reps = f"{c.fleet.replicas} replica{'s' if c.fleet.replicas != 1 else ''}"
    else:
        f = c.fleet
        reps = f"{f.autoscaler.name}-autoscaled {f.min_replicas}-{f.max_replicas} replicas (peak {s['max_replicas']})"
    per = f"{tp}x {c.gpu.name}" if tp > 1 else c.gpu.name
    rate = s["n_requests"] / max(float(result.requests.arrival_s.max()), 1e-9)
    load = f"{rate:.3g} req/s" if not s.get("users") else f"{s['users']} closed-loop users"
    return f"{c.model.name} ({c.model.weight_dtype}) - {reps} of {per} - workload {c.workload.name}, {load}"


def latency_cdf(result: Result, path: Path) -> None:
    df = result.requests
    slo = result.config.slo
    fig = Figure(figsize=(11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    _cdf(ax1, df["ttft_s"].to_numpy(), slo.ttft_s, "TTFT", 1.0, "s", slo.percentile)
    _cdf(ax2, df["tpot_s"].to_numpy(), slo.tpot_s, "TPOT", 1000.0, "ms", slo.percentile)
    fig.suptitle(
        f"{scenario(result)}\nSLO attainment {result.summary['slo_attainment']:.1%} (target {slo.attainment:.0%})"
    )
    _save(fig, path)


def _over_time(ts, height: float):
    """Three panels over simulated minutes, the top one with the arrival rate drawn."""
    minutes = (ts["time_s"] + ts["interval_s"] / 2) / 60
    fig = Figure(figsize=(12.5, height))
    axes = fig.subplots(3, 1, sharex=True)
    axes[0].plot(minutes, ts["arrivals"] / ts["interval_s"], label="arrivals/s", color="#1f77b4")
    return minutes, fig, axes


def timeline(result: Result, path: Path) -> None:
    ts = result.timeseries
    if ts.empty:
        return
    minutes, fig, axes = _over_time(ts, 7.5)
    ax = axes[0]
    ax.plot(minutes, ts["completions"] / ts["interval_s"], label="completions/s", color="#2ca02c", alpha=0.8)
    ax.set_ylabel("requests/s")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    ax.grid(alpha=0.3)
    ax = axes[1]
    ax.plot(minutes, ts["in_system"], label="in system (interval mean)", color="#7f7f7f", lw=2)
    ax.plot(minutes, ts["running"], label="running (at interval end)", color="#9467bd", ls="--", lw=1)
    ax.plot(minutes, ts["queued"], label="queued (at interval end)", color="#d62728", ls="--", lw=1)
    ax.set_ylabel("requests")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    ax.grid(alpha=0.3)
    ax = axes[2]
    ax.plot(minutes, 100 * ts["kv_util"], label="KV cache used (end of interval)", color="#ff7f0e")
    ax.plot(minutes, 100 * ts["engine_occupancy"], label="engine occupancy", color="#17becf")
    ax.plot(minutes, 100 * ts["gpu_busy"], label="busy (any work running)", color="#8c564b", ls=":")
    ax.set_ylabel("% of fleet")
    ax.set_ylim(0, 105)
    ax.set_xlabel("simulated time (min)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    ax.grid(alpha=0.3)
    last_arrival = float(result.requests.arrival_s.max()) / 60
    end = float(ts["time_s"].iloc[-1] + ts["interval_s"].iloc[-1]) / 60
    if end - last_arrival > 0.02 * end:
        for a in axes:
            a.axvspan(last_arrival, end, color="#eeeeee", zorder=0)
        axes[0].text(last_arrival, axes[0].get_ylim()[1] * 0.95, " arrivals end: drain", fontsize=8, va="top")
    fig.suptitle(f"Timeline - {scenario(result)}")
    _save(fig, path)


STATE_COLORS = {
    "provisioning": "#ff7f0e",
    "active": "#2ca02c",
    "idle": "#98df8a",
    "waking": "#9467bd",
    "sleeping": "#c5b0d5",
    "draining": "#8c564b",
}


def fleet(result: Result, path: Path) -> None:
    """Arrival rate and API share, replicas stacked by state, the queues."""
    ts = result.timeseries
    if ts.empty:
        return
    minutes, fig, axes = _over_time(ts, 8)
    ax = axes[0]
    if ts["api_started"].any():
        ax.fill_between(
            minutes, 0, ts["api_started"] / ts["interval_s"], color="#d62728", alpha=0.35, label="sent to the API/s"
        )
    ax.set_ylabel("requests/s")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    ax.grid(alpha=0.3)
    ax = axes[1]
    states = [s for s in STATE_COLORS if ts[f"replicas_{s}"].any()]
    if states:
        ax.stackplot(
            minutes,
            *[ts[f"replicas_{s}"] for s in states],
            labels=states,
            colors=[STATE_COLORS[s] for s in states],
            step="mid",
        )
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    else:
        ax.text(0.5, 0.5, "no GPU replicas", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("replicas")
    ax.grid(alpha=0.3)
    ax = axes[2]
    ax.plot(minutes, ts["queued"], label="queued at replicas", color="#d62728")
    ax.plot(minutes, ts["router_queue"], label="waiting for a replica (router)", color="#ff7f0e")
    ax.plot(minutes, ts["running"], label="running", color="#9467bd", alpha=0.6)
    ax.set_ylabel("requests (end of interval)")
    ax.set_xlabel("simulated time (min)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    ax.grid(alpha=0.3)
    s = result.summary
    fig.suptitle(
        f"Fleet - {scenario(result)}\nmean {s['mean_replicas']:.2f} replicas, "
        f"{s['api_share']:.1%} of requests to the API"
    )
    _save(fig, path)


COST_COLORS = {
    "GPU active": "#2ca02c",
    "GPU idle": "#98df8a",
    "GPU starting": "#ff7f0e",
    "GPU draining": "#8c564b",
    "GPU asleep": "#c5b0d5",
    "GPUs unused in instances": "#bcbd22",
    "API": "#d62728",
    "operations": "#7f7f7f",
    "egress": "#17becf",
}


def cost(result: Result, path: Path) -> None:
    """Where the money goes: a breakdown, and cumulative cost over time."""
    s = result.summary
    parts = {
        "GPU active": s["gpu_hours.active"],
        "GPU idle": s["gpu_hours.idle"],
        "GPU starting": s["gpu_hours.provisioning"] + s["gpu_hours.waking"],
        "GPU draining": s["gpu_hours.draining"],
        "GPU asleep": s["gpu_hours.sleeping"] * result.config.fleet.sleep.cost_fraction,
    }
    hours = sum(parts.values())
    waste = s.get("gpu_cost_instance_waste", 0.0)
    gpu_parts = {k: (s["gpu_cost"] - waste) * v / hours for k, v in parts.items()} if hours else {}
    items = {
        **gpu_parts,
        "GPUs unused in instances": waste,
        "API": s["api_cost"],
        "operations": s["ops_cost"],
        "egress": s.get("egress_cost", 0.0),
    }
    items = {k: v for k, v in items.items() if v > 0}
    fig = Figure(figsize=(12, 4.5))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    if items:
        names = list(items)
        values = [items[k] for k in names]
        bars = ax1.barh(
            names,
            values,
            color=[COST_COLORS.get(k, "#7f7f7f") for k in names],
        )
        for bar, v in zip(bars, values, strict=True):
            ax1.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" \\${v:,.2f}", va="center", fontsize=9)
        ax1.invert_yaxis()
        ax1.set_xlim(0, max(values) * 1.3)
    ax1.set_xlabel("\\$")
    ax1.set_title(f"total \\${s['total_cost']:,.2f} - \\${s['cost_per_mtok']:.4g} per M tokens")
    ts = result.timeseries
    if not ts.empty:
        hours_axis = (ts["time_s"] + ts["interval_s"]) / 3600
        ax2.stackplot(
            hours_axis,
            ts["gpu_cost_so_far"],
            ts["api_cost_so_far"],
            labels=["GPU", "API"],
            colors=["#2ca02c", "#d62728"],
            alpha=0.8,
        )
        ax2.set_xlabel("simulated time (h)")
        ax2.set_ylabel("cumulative \\$ (GPU accrued per second)")
        ax2.legend(loc="upper left")
        ax2.grid(alpha=0.3)
    fig.suptitle(f"Cost - {scenario(result)}")
    _save(fig, path)


def _label(row, keys: list[str]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={row[k]}" for k in keys)


def _numeric(series) -> bool:
    try:
        series.astype(float)
        return True
    except (TypeError, ValueError):
        return False


def sweep_cost_plot(df, keys: list[str], feasible, path: Path) -> None:
    """Total cost against the swept parameter (one line per combination of the others)."""
    varying = [k for k in keys if distinct(df[k]) > 1] or keys[:1] or ["job"]
    x_key = next((k for k in varying if _numeric(df[k])), varying[0])
    others = [k for k in varying if k != x_key]
    fig = Figure(figsize=(10, 5.5))
    ax = fig.subplots()
    numeric = _numeric(df[x_key])
    cats = {v: i for i, v in enumerate(dict.fromkeys(df[x_key].astype(str)))}
    groups = df.groupby([df[k].astype(str) for k in others], sort=False) if others else [("all", df)]
    for name, g in groups:
        ok = g[g["status"] == "ok"]
        xs = ok[x_key].astype(float) if numeric else ok[x_key].astype(str).map(cats)
        order = np.argsort(xs.to_numpy())
        label = (
            ", ".join(
                f"{k.split('.')[-1]}={v}"
                for k, v in zip(others, name if isinstance(name, tuple) else (name,), strict=False)
            )
            if others
            else None
        )
        line = ax.plot(xs.to_numpy()[order], ok["cost_per_hour"].to_numpy()[order], "-", alpha=0.6, label=label)[0]
        good = feasible.loc[ok.index].to_numpy()
        ax.scatter(xs[good], ok["cost_per_hour"][good], color=line.get_color(), s=60, zorder=3)
        ax.scatter(
            xs[~good], ok["cost_per_hour"][~good], facecolors="white", edgecolors=line.get_color(), s=60, zorder=3
        )
        bad = g[g["status"] != "ok"]
        if len(bad):
            bx = bad[x_key].astype(float) if numeric else bad[x_key].astype(str).map(cats)
            ax.scatter(bx, np.zeros(len(bad)), marker="x", color="#d62728", s=60, zorder=3)
    if not numeric:
        ax.set_xticks(list(cats.values()), list(cats.keys()))
    elif np.allclose(df[x_key].astype(float) % 1, 0):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(x_key)
    ax.set_ylabel("cost (\\$ per hour)")
    ax.grid(alpha=0.3)
    handles = [
        ax.scatter([], [], color="#444444", s=60, label="meets the SLO"),
        ax.scatter([], [], facecolors="white", edgecolors="#444444", s=60, label="misses the SLO"),
        ax.scatter([], [], marker="x", color="#d62728", s=60, label="failed"),
    ]
    ax.legend(handles=[*ax.get_legend_handles_labels()[0][: len(groups) if others else 0], *handles], fontsize=9)
    fig.suptitle(f"Sweep: cost per hour against {x_key}")
    _save(fig, path)


def pareto_plot(df, keys: list[str], feasible, path: Path) -> None:
    """Cost against p99 TTFT: every job, and the frontier no other job beats on both."""
    ok = df[df["status"] == "ok"].copy()
    fig = Figure(figsize=(10, 6))
    ax = fig.subplots()
    if len(ok):
        good = feasible.loc[ok.index].to_numpy()
        ax.scatter(
            ok["ttft_p99"][good], ok["cost_per_hour"][good], color="#2ca02c", s=60, label="meets the SLO", zorder=3
        )
        ax.scatter(
            ok["ttft_p99"][~good], ok["cost_per_hour"][~good], color="#7f7f7f", s=60, label="misses the SLO", zorder=3
        )
        front = ok.sort_values(["ttft_p99", "cost_per_hour"])
        front = front[front["cost_per_hour"] < front["cost_per_hour"].cummin().shift(fill_value=np.inf)]
        ax.step(front["ttft_p99"], front["cost_per_hour"], where="post", color="#1f77b4", label="frontier")
        varying = [k for k in keys if distinct(df[k]) > 1]
        for _, row in ok.iterrows():
            ax.annotate(
                _label(row, varying),
                (row["ttft_p99"], row["cost_per_hour"]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
        if ok["ttft_p99"].max() / max(ok["ttft_p99"].min(), 1e-6) > 20:
            ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "every job failed", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("p99 TTFT (s)")
    ax.set_ylabel("cost (\\$ per hour)")
    ax.grid(alpha=0.3)
    if len(ok):
        ax.legend(fontsize=9)
    fig.suptitle("Sweep: cost against p99 TTFT")
    _save(fig, path)


OPTION_COLORS = {"API": "#ff7f0e", "dedicated": "#1f77b4", "hybrid": "#2ca02c"}


def breakeven_plot(df, crossovers: list[dict], path: Path) -> None:
    """$/M tokens and $/month of the cheapest pure-API, dedicated and hybrid option against
    volume; hollow markers miss the SLO, dashed lines mark interpolated crossovers and shaded
    bands the ones only bracketed between two levels."""
    fig = Figure(figsize=(12, 5))
    axes = fig.subplots(1, 2, gridspec_kw={"wspace": 0.3})
    for ax, key, label in (
        (axes[0], "cost_per_mtok", "\\$ per million tokens"),
        (axes[1], "cost_per_month", "\\$ per month"),
    ):
        for option, g in df.groupby("option", sort=False):
            g = g.sort_values("rate")
            color = OPTION_COLORS.get(option, "#7f7f7f")
            ax.plot(g["rate"], g[key], "-", color=color, alpha=0.7, label=option)
            ok = g["slo_met"].to_numpy(dtype=bool)
            ax.scatter(g["rate"][ok], g[key][ok], color=color, s=45, zorder=3)
            ax.scatter(g["rate"][~ok], g[key][~ok], facecolors="white", edgecolors=color, s=45, zorder=3)
        for i, c in enumerate(crossovers):
            if c["exact"]:
                ax.axvline(c["rate"], color="#444444", ls="--", lw=1)
                text, x = f"{c['from']} -> {c['to']}\n~{c['rate']:.3g} req/s", c["rate"]
            else:  # only bracketed between two levels: shade the bracket
                lo, hi = c["between_rate"]
                ax.axvspan(lo, hi, color="#444444", alpha=0.08, lw=0)
                text, x = f"{c['from']} -> {c['to']}\n{lo:.3g}-{hi:.3g} req/s", lo
            ax.annotate(
                text,
                (x, 0.97 - 0.12 * (i % 3)),  # staggered, so neighbouring crossings stay readable
                xycoords=("data", "axes fraction"),
                fontsize=8,
                ha="left",
                va="top",
                xytext=(3, 0),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        if key == "cost_per_month":  # spans orders of magnitude; $/M tokens does not
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _pos: f"\\${y:,.3g}" if y < 100 else f"\\${y:,.0f}"))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
        ax.set_xlabel("volume (requests/s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(axes[0].scatter([], [], facecolors="white", edgecolors="#444444", s=45))
    labels.append("misses the SLO")
    axes[0].legend(handles, labels, fontsize=9, loc="lower left")
    fig.suptitle("Break-even: the cheapest SLO-meeting option of each kind against volume")
    _save(fig, path)


STRATEGY_COLORS = {"fixed": "#1f77b4", "autoscaled": "#9467bd", "hybrid": "#2ca02c", "pure API": "#ff7f0e"}


def plan_plot(df, best, describe, slo, path: Path) -> None:
    """Left: the fixed-fleet searches (SLO attainment against replicas, per GPU option).
    Right: the cheapest SLO-meeting candidate of each GPU option and strategy, $/month."""
    fig = Figure(figsize=(14, 5.5), layout="constrained")
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    fixed = df[df["strategy"].isin(["fixed", "fixed search"])]
    for (gpu, tp), g in fixed.groupby(["gpu", "tp"], sort=False):
        g = g.sort_values("replicas")
        label = gpu if tp == 1 else f"{gpu} TP{tp}"
        line = left.plot(g["replicas"], g["slo_attainment"] * 100, "-", alpha=0.6, label=label)[0]
        ok = g["slo_met"].to_numpy(dtype=bool)
        left.scatter(g["replicas"][ok], g["slo_attainment"][ok] * 100, color=line.get_color(), s=45, zorder=3)
        left.scatter(
            g["replicas"][~ok],
            g["slo_attainment"][~ok] * 100,
            facecolors="white",
            edgecolors=line.get_color(),
            s=45,
            zorder=3,
        )
    left.axhline(slo.attainment * 100, color="#d62728", ls="--", lw=1.2, label=f"target {slo.attainment:.0%}")
    left.set_xlabel("replicas (runs the bisection made; filled = meets the SLO)")
    left.set_ylabel("SLO attainment (%)")
    left.set_title("Fixed-fleet search")
    left.grid(alpha=0.3)
    if len(fixed):
        from matplotlib.ticker import MaxNLocator

        left.xaxis.set_major_locator(MaxNLocator(integer=True))
        left.legend(fontsize=9)
    top = best.head(12).iloc[::-1]
    if len(top):
        y = np.arange(len(top))
        colors = [STRATEGY_COLORS.get(st, "#7f7f7f") for st in top["strategy"]]
        right.barh(y, top["cost_per_month"], color=colors)
        right.set_yticks(y, [describe(r) for _, r in top.iterrows()], fontsize=8)
        for yi, (_, r) in zip(y, top.iterrows(), strict=True):
            right.annotate(
                f" \\${r['cost_per_month']:,.0f}  (\\${r['cost_per_mtok']:.3f}/M tokens)",
                (r["cost_per_month"], yi),
                va="center",
                fontsize=8,
            )
        right.set_xlim(0, top["cost_per_month"].max() * 1.35)
    else:
        right.text(0.5, 0.5, "no candidate meets the SLO", ha="center", va="center", transform=right.transAxes)
    right.set_xlabel("\\$ per month (cheapest SLO-meeting candidate of each option)")
    right.set_title("Candidates, cheapest at the top")
    right.grid(alpha=0.3, axis="x")
    fig.suptitle("Capacity plan")
    _save(fig, path)


def save_all(result: Result, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    latency_cdf(result, out / "latency_cdf.png")
    timeline(result, out / "timeline.png")
    fleet(result, out / "fleet.png")
    cost(result, out / "cost.png")
