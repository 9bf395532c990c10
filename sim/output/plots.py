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
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from sim.results.metrics import distinct


class Result(Protocol):
    """What the plots read of a run (`sim.studies.run.Result`)."""

    config: Any
    summary: dict
    requests: Any  # pandas DataFrame, one row per request
    timeseries: Any  # pandas DataFrame, one row per sample
    spans: list


def _save(fig: Figure, path: Path, tight: bool = True) -> None:
    """`fig` as a PNG at 110 dpi with no software version stamped, so the same figure gives the
    same bytes; `tight` crops it to what is drawn, else it keeps the figure's size in pixels."""
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight" if tight else None, metadata={"Software": None})


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
    if "turns_unsent" in s:
        load = f"{s['users']} replayed sessions"
    return f"{c.model.name} ({c.model.weight_dtype}) - {reps} of {per} - workload {c.workload.name}, {load}"


def latency_cdf(result: Result, path: Path) -> None:
    df = result.requests
    slo = result.config.slo
    fig = Figure(figsize=(11, 4.8), layout="constrained")  # room for the two-line title above the panels
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
    times, counts = replica_states(result.spans)
    if counts:
        ax.stackplot(
            times / 60,
            *counts.values(),
            labels=[SPAN_LABELS.get(k, k) for k in counts],
            colors=[STATE_COLORS[k] for k in counts],
            step="post",
        )
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    else:
        ax.text(0.5, 0.5, "no GPU replicas", ha="center", va="center", transform=ax.transAxes)
    _failure_marks(ax, getattr(result, "events", {}))
    ax.set_ylabel("replicas (exact)")
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
    events = [
        (s.get("cold_starts"), "cold starts"),
        (s.get("wakes"), "wake-ups"),
        (s.get("spot_preemptions"), "spot preemptions"),
    ]
    counted = "".join(f", {n:,} {what}" for n, what in events if n)
    failures = failure_title(s)
    fig.suptitle(
        f"Fleet - {scenario(result)}\nmean {s['mean_replicas']:.2f} replicas{counted}, "
        f"{s['api_share']:.1%} of requests to the API" + (f"\n{failures}" if failures else "")
    )
    _save(fig, path)


def failure_title(s: dict) -> str:
    """The autoscaler's failure modes a run counted (output.failure_modes), as a title line."""
    if "autoscale_reversals" not in s:
        return ""
    items = [
        f"{s['autoscale_reversals']:,} reversals ({s['reversal_cold_starts']:,} cold starts)",
        f"{s['scaleups_during_warmup']:,} scale-ups during warm-up",
        f"{s['dropped_on_scale_down']:,} dropped on scale-down",
        f"{s['pending_gpu_waits']:,} GPU waits (mean {s['pending_gpu_wait_s_mean']:.0f} s)",
        f"idle at zero traffic \\${s['idle_zero_traffic_cost']:,.2f}",
    ]
    if "itl_correction_max" in s:
        items.append(f"ITL correction up to {s['itl_correction_max']:.2f}")
    return "failure modes: " + ", ".join(items)


def _failure_marks(ax, events: dict) -> None:
    """Replicas waiting for a GPU (a dashed step line) and each scaling decision (a triangle at
    the top, up or down; red where it reversed the one before)."""
    pending = events.get("pending") or []
    if pending:
        edges = np.unique([t for _, a, b in pending for t in (a, b)])
        delta = np.zeros(len(edges))
        np.add.at(delta, np.searchsorted(edges, [a for _, a, _ in pending]), 1)
        np.add.at(delta, np.searchsorted(edges, [b for _, _, b in pending]), -1)
        ax.step(edges / 60, np.cumsum(delta), where="post", color="k", ls="--", lw=1, label="waiting for a GPU")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    marks = events.get("scale") or []
    if marks:
        top = ax.get_ylim()[1]
        for direction, marker in ((1, "^"), (-1, "v")):
            for reversal, color in ((False, "#555555"), (True, "#d62728")):
                t = [m[0] / 60 for m in marks if m[1] == direction and m[2] == reversal]
                if t:
                    ax.plot(t, [top] * len(t), marker, color=color, ms=5, clip_on=False, ls="none")


SPAN_LABELS = {"active": "serving (active or idle)", "provisioning": "cold start"}


def replica_states(spans: list) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Replicas in each state as step functions of time (exact, from the lifecycle's spans, not
    sampled): the change times, and for each state present the count from each time on."""
    if not spans:
        return np.zeros(0), {}
    edges = np.unique([t for sp in spans for t in (sp.start, sp.end)])
    counts = {}
    for state in ("active", "draining", "waking", "sleeping", "provisioning"):  # serving at the bottom
        mine = [sp for sp in spans if sp.state == state]
        if not mine:
            continue
        delta = np.zeros(len(edges))
        np.add.at(delta, np.searchsorted(edges, [sp.start for sp in mine]), 1)
        np.add.at(delta, np.searchsorted(edges, [sp.end for sp in mine]), -1)
        counts[state] = np.cumsum(delta)
    return edges, counts


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
    fig = Figure(figsize=(12, 4.8), layout="constrained")
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
    ax1.set_title(
        f"total \\${s['total_cost']:,.2f}: \\${s['cost_per_hour']:,.2f}/hour, \\${s['cost_per_month']:,.0f}/month, "
        f"\\${s['cost_per_mtok']:.4g} per M tokens",
        fontsize=10,
    )
    ts = result.timeseries
    if not ts.empty:
        minutes = (ts["time_s"] + ts["interval_s"]) / 60
        ax2.stackplot(
            minutes,
            ts["gpu_cost_so_far"],
            ts["api_cost_so_far"],
            labels=["GPU", "API"],
            colors=["#2ca02c", "#d62728"],
            alpha=0.8,
        )
        ax2.set_xlabel("simulated time (min)")
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
    ax.set_ylabel("cost rate (\\$ per hour; cost_per_hour)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    handles = [
        ax.scatter([], [], color="#444444", s=60, label="meets the SLO"),
        ax.scatter([], [], facecolors="white", edgecolors="#444444", s=60, label="misses the SLO"),
        ax.scatter([], [], marker="x", color="#d62728", s=60, label="failed"),
    ]
    ax.legend(handles=[*ax.get_legend_handles_labels()[0][: len(groups) if others else 0], *handles], fontsize=9)
    fig.suptitle(f"Sweep: cost per hour against {x_key}")
    _save(fig, path)


def _job_slo(df) -> dict:
    """The SLO the sweep's jobs were judged by (from a job's config.yaml; empty if none is readable)."""
    import yaml

    for d in df.get("dir", []):
        path = Path(str(d)) / "config.yaml"
        if path.is_file():
            return (yaml.safe_load(path.read_text()) or {}).get("slo") or {}
    return {}


def pareto_plot(df, keys: list[str], feasible, path: Path) -> None:
    """Cost against TTFT and against TPOT at the SLO's percentile, each with its SLO threshold:
    every job, and the frontier no other job beats on both cost and that latency."""
    ok = df[df["status"] == "ok"].copy()
    slo = _job_slo(df)
    pct = slo.get("percentile", 99 if "ttft_slo_percentile" not in ok else 95)
    fig = Figure(figsize=(13, 5.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    panels = (
        ("ttft_slo_percentile", "ttft_p99", "TTFT", "s", 1.0, slo.get("ttft_s")),
        ("tpot_slo_percentile", "tpot_p99", "TPOT", "ms", 1e3, slo.get("tpot_s")),
    )
    for ax, (col, fallback, name, unit, scale, threshold) in zip(axes, panels, strict=True):
        col = col if col in ok else fallback
        label = f"p{pct:g} {name}" if col != fallback else f"p99 {name}"
        if len(ok) and col in ok:
            _pareto_panel(ax, ok, feasible, keys, df, col, scale)
            if threshold is not None:
                ax.axvline(
                    threshold * scale, color="#d62728", ls="--", lw=1.2, label=f"SLO {threshold * scale:g} {unit}"
                )
            ax.legend(fontsize=9)
        else:
            ax.text(0.5, 0.5, "every job failed", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(f"{label} ({unit})")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cost rate (\\$ per hour)")
    axes[0].set_ylim(bottom=0)
    fig.suptitle(f"Sweep: cost against latency at the SLO's percentile (p{pct:g}); filled: meets the SLO")
    _save(fig, path)


def _pareto_panel(ax, ok, feasible, keys: list[str], df, col: str, scale: float) -> None:
    x = ok[col].astype(float) * scale
    good = feasible.loc[ok.index].to_numpy()
    ax.scatter(x[good], ok["cost_per_hour"][good], color="#2ca02c", s=60, label="meets the SLO", zorder=3)
    ax.scatter(x[~good], ok["cost_per_hour"][~good], color="#7f7f7f", s=60, label="misses the SLO", zorder=3)
    front = ok.assign(_x=x).sort_values(["_x", "cost_per_hour"])
    front = front[front["cost_per_hour"] < front["cost_per_hour"].cummin().shift(fill_value=np.inf)]
    ax.step(front["_x"], front["cost_per_hour"], where="post", color="#1f77b4", label="frontier")
    varying = [k for k in keys if distinct(df[k]) > 1]
    for (_, row), xi in zip(ok.iterrows(), x, strict=True):
        ax.annotate(
            _label(row, varying),
            (xi, row["cost_per_hour"]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
            annotation_clip=False,
        )
    ax.margins(x=0.12, y=0.1)  # room for the labels of the outermost points
    if x.max() / max(x.min(), 1e-6) > 20:
        ax.set_xscale("log")
        decades = np.log10(x.max() / max(x.min(), 1e-6))
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades < 2.5 else (1.0,)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())


OPTION_COLORS = {"API": "#ff7f0e", "dedicated": "#1f77b4", "hybrid": "#2ca02c"}


def breakeven_plot(df, crossovers: list[dict], path: Path) -> None:
    """$/M tokens and $/month of the cheapest pure-API, dedicated and hybrid option against
    volume; hollow markers miss the SLO, dashed lines mark interpolated crossovers and shaded
    bands the ones only bracketed between two levels."""
    fig = Figure(figsize=(12, 5.6), layout="constrained")
    axes = fig.subplots(1, 2)
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
        for i, c in enumerate(crossovers, start=1):  # numbered here, spelled out under the panels
            if c["exact"]:
                ax.axvline(c["rate"], color="#444444", ls="--", lw=1)
                x = c["rate"]
            else:  # only bracketed between two levels: shade the bracket
                lo, hi = c["between_rate"]
                ax.axvspan(lo, hi, color="#444444", alpha=0.08, lw=0)
                x = (lo * hi) ** 0.5
            ax.annotate(
                str(i),
                (x, 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=8,
                ha="center",
                va="bottom",
                bbox={"boxstyle": "circle,pad=0.2", "fc": "white", "ec": "#444444", "lw": 0.8},
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
    if crossovers:
        fig.supxlabel(_crossover_caption(crossovers), fontsize=8, ha="left", x=0.01)
    _save(fig, path)


def _crossover_caption(crossovers: list[dict]) -> str:
    """The numbered crossovers in words, two to a line."""
    parts = []
    for i, c in enumerate(crossovers, start=1):
        if c["exact"]:
            where = f"~{c['rate']:.3g} req/s"
        else:
            lo, hi = c["between_rate"]
            where = f"between {lo:.3g} and {hi:.3g} req/s"
        parts.append(f"({i}) {c['from']} -> {c['to']} at {where}")
    return "\n".join("    ".join(parts[k : k + 2]) for k in range(0, len(parts), 2))


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
    _plan_candidates(right, best, describe)
    fig.suptitle("Capacity plan")
    _save(fig, path)


def _plan_candidates(right, best, describe) -> None:
    """The plan's right panel: the cheapest candidates as bars coloured by strategy."""
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
        from matplotlib.patches import Patch

        shown = dict.fromkeys(top["strategy"])
        right.legend(
            handles=[Patch(color=STRATEGY_COLORS.get(st, "#7f7f7f"), label=st) for st in shown],
            title="strategy",
            fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.1),
            ncol=len(shown),
        )
    else:
        right.text(0.5, 0.5, "no candidate meets the SLO", ha="center", va="center", transform=right.transAxes)
    right.set_xlabel("\\$ per month (cheapest SLO-meeting candidate of each option)")
    right.set_title("Candidates, cheapest at the top")
    right.grid(alpha=0.3, axis="x")


def save_all(result: Result, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    latency_cdf(result, out / "latency_cdf.png")
    timeline(result, out / "timeline.png")
    fleet(result, out / "fleet.png")
    cost(result, out / "cost.png")
