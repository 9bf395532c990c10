"""The picture of `fleetsim-validate`: simulated against measured, for a capacity planner.

Top, one parity chart per whole-run mean (TTFT, ITL, E2E) of the measured runs, log-log, with the
y = x line and a shaded +-10% band, one colour per model. Bottom, each published point's signed
error: vLLM's points grouped by kind, and TensorRT-LLM's throughputs apart, as the upper bounds for
vLLM's they are. The figure has a fixed size in pixels and no date or version stamped, so the same
rows give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.transforms import blended_transform_factory

from sim.output.plots import _save

PARITY = (("ttft_mean", "mean TTFT"), ("itl_mean", "mean ITL"), ("e2e_mean", "mean E2E"))
BAND_PCT = 10.0  # the shaded band: within +-10% of the measurement
MODEL_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
GROUP_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
BOUND_COLOR = "#555555"
MIN_ROWS = 12  # a points panel's rows at least (bars of a few points stay thin)
LEGEND_ROWS = 4  # empty rows under a points panel's bars, for its legend
SIZE_IN = (12.0, 9.0)  # at plots._save's 110 dpi: 1320 x 990 pixels


def validation_plot(df: pd.DataFrame, groups: list[tuple[str, pd.DataFrame]], path: Path) -> None:
    """Write the validation figure to `path`. `df`: the measured runs' rows (run, model, stage,
    metric, measured, simulated, error_pct), of which the whole-run (stage -1) means are drawn;
    `groups`: the published points by kind, (name, rows with error_pct, bound, p10, p90)."""
    fig = Figure(figsize=SIZE_IN, layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(1.0, 1.2))
    whole = df[df["stage"] == -1]
    colors = {m: MODEL_COLORS[i % len(MODEL_COLORS)] for i, m in enumerate(dict.fromkeys(whole["model"]))}
    axes = top.subplots(1, len(PARITY))
    for ax, (metric, name) in zip(axes, PARITY, strict=True):
        _parity(ax, whole[whole["metric"] == metric], name, colors)
    _parity_legend(axes[0], colors)
    shown = [(n, g) for n, g in groups if len(g)]
    vllm = [(n, g) for n, g in shown if not g["bound"].astype(bool).all()]
    bounds = [(n, g) for n, g in shown if g["bound"].astype(bool).all()]
    slots = max(_slots(vllm), _slots(bounds), MIN_ROWS) + LEGEND_ROWS
    left, right = bottom.subplots(1, 2, width_ratios=(1.25, 1.0))
    _points(left, vllm, slots, "Published vLLM points", bound=False)
    _points(right, bounds, slots, "TensorRT-LLM throughputs: upper bounds for vLLM's", bound=True)
    for ax, shown_here, bound in ((left, vllm, False), (right, bounds, True)):
        if shown_here:
            _points_legend(ax, shown_here, bound)
    n_runs, n_points = whole["run"].nunique(), sum(len(g) for _, g in shown)
    fig.suptitle(
        f"fleetsim against measurements: whole-run means of {n_runs} measured run{'s' * (n_runs != 1)} (top), "
        f"{n_points} published point{'s' * (n_points != 1)} (bottom)"
    )
    _save(fig, path, tight=False)


def _parity(ax, rows: pd.DataFrame, name: str, colors: dict) -> None:
    """Simulated against measured (ms, log-log) with y = x and the +-10% band."""
    ax.set_xlabel(f"measured {name} (ms)")
    ax.set_ylabel(f"simulated {name} (ms)")
    if rows.empty:
        ax.set_title(name, fontsize=10)
        ax.text(0.5, 0.5, "no whole-run measurement", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    values = np.concatenate([rows["measured"].to_numpy(float), rows["simulated"].to_numpy(float)])
    lo, hi = values.min() / 1.4, values.max() * 1.4
    line = np.geomspace(lo, hi, 50)
    ax.fill_between(line, line * (1 - BAND_PCT / 100), line * (1 + BAND_PCT / 100), color="#999999", alpha=0.2, lw=0)
    ax.plot(line, line, color="k", lw=0.9, ls="--")
    for model, g in rows.groupby("model", sort=False):
        ax.scatter(g["measured"], g["simulated"], color=colors[model], s=38, edgecolors="white", lw=0.6, zorder=3)
    for _, r in rows[rows["error_pct"].abs() > BAND_PCT].iterrows():  # name the runs outside the band
        ax.annotate(
            str(r["run"]), (r["measured"], r["simulated"]), xytext=(5, -2), textcoords="offset points", fontsize=7
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    decades = np.log10(hi / lo)
    subs = (1.0, 2.0, 5.0) if decades < 1.3 else (1.0, 3.0) if decades < 2.5 else (1.0,)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(subs=subs))
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="major")
    median = rows["error_pct"].abs().median()
    ax.set_title(f"{name}: median absolute error {median:.1f}%\n({len(rows)} run{'s' * (len(rows) != 1)})", fontsize=10)


def _parity_legend(ax, colors: dict) -> None:
    handles = [
        Line2D([], [], marker="o", ls="none", color=c, markeredgecolor="white", ms=7, label=m)
        for m, c in colors.items()
    ]
    handles += [
        Line2D([], [], color="k", lw=0.9, ls="--", label="simulated = measured"),
        Patch(color="#999999", alpha=0.4, lw=0, label=f"within \u00b1{BAND_PCT:g}%"),
    ]
    ax.legend(handles=handles, loc="upper left", fontsize=7, title="model", title_fontsize=7, framealpha=0.9)


def _slots(groups: list[tuple[str, pd.DataFrame]]) -> int:
    """Rows a points panel takes: one per point, and a header per group where there are several."""
    return sum(len(g) + (len(groups) > 1) for _, g in groups)


def _stats(g: pd.DataFrame) -> str:
    return f"median absolute error {g['error_pct'].abs().median():.1f}% ({len(g)} point{'s' * (len(g) != 1)})"


def _points(ax, groups: list[tuple[str, pd.DataFrame]], slots: int, title: str, bound: bool) -> None:
    """Each point's signed error as a bar, group by group under a header naming the group (a
    panel of one group names it in its title)."""
    one = len(groups) == 1
    ax.set_title(f"{groups[0][0]}\n{_stats(groups[0][1])}" if one else title, fontsize=10)
    ax.set_xlabel("signed error (%): (simulated - measured) / measured")
    ax.set_ylim(slots - 0.5, -0.5)
    if not groups:
        ax.text(0.5, 0.5, "none in these files", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    lo, hi = _extent(groups)
    ax.set_xlim(lo, hi)
    ax.axvspan(-BAND_PCT, BAND_PCT, color="#999999", alpha=0.2, lw=0)
    if bound:  # a simulated vLLM faster than TensorRT-LLM: fleetsim is optimistic there
        ax.axvspan(0, hi, color="#d62728", alpha=0.07, lw=0)
    ax.axvline(0, color="k", lw=0.8)
    at = blended_transform_factory(ax.transAxes, ax.transData)
    y, ticks, labels = 0, [], []
    for i, (name, g) in enumerate(groups):
        if not one:
            box = {"fc": "white", "ec": "none", "alpha": 0.85, "pad": 1.0}
            ax.text(0.01, y, f"{name}: {_stats(g)}", transform=at, fontsize=7, fontweight="bold", va="center", bbox=box)
        ys = np.arange(y + (not one), y + (not one) + len(g))
        _bars(ax, g, ys, GROUP_COLORS[i % len(GROUP_COLORS)] if not bound else BOUND_COLOR, bound)
        ticks += ys.tolist()
        labels += g["run"].astype(str).tolist()
        y += len(g) + (not one)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.tick_params(axis="y", length=0)
    ax.grid(alpha=0.3, axis="x")


def _bars(ax, g: pd.DataFrame, ys: np.ndarray, color: str, bound: bool) -> None:
    """The bars of one group, each with its figure; a ShareGPT throughput's 10-90% range of single
    stand-in samples as a whisker."""
    e = g["error_pct"].to_numpy(float)
    if bound:
        ax.barh(ys, e, height=0.62, color="white", edgecolor=color, hatch="////", lw=0.8)
    else:
        ax.barh(ys, e, height=0.62, color=color, alpha=0.85)
    low, high = _whiskers(g)
    has = np.isfinite(low)
    if has.any():
        ax.errorbar(
            e[has], ys[has], xerr=[e[has] - low[has], high[has] - e[has]], fmt="none", ecolor="k", lw=0.8, capsize=2
        )
    pad = 0.012 * np.diff(ax.get_xlim())[0]
    for x, y, lo_w, hi_w in zip(e, ys, low, high, strict=True):
        end = (np.nanmax([x, hi_w]) + pad) if x >= 0 else (np.nanmin([x, lo_w]) - pad)
        ax.text(end, y, f"{x:+.1f}%", ha="left" if x >= 0 else "right", va="center", fontsize=6.5)


def _whiskers(g: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The 10th and 90th percentile of single samples as signed errors (NaN where not drawn)."""
    m = g["measured"].to_numpy(float)
    p10 = g["p10"].to_numpy(float) if "p10" in g else np.full(len(g), np.nan)
    p90 = g["p90"].to_numpy(float) if "p90" in g else np.full(len(g), np.nan)
    return (p10 / m - 1) * 100, (p90 / m - 1) * 100


def _extent(groups: list[tuple[str, pd.DataFrame]]) -> tuple[float, float]:
    """The x range of a points panel: its errors, whiskers and the band, with room for the labels."""
    xs = [np.array([-BAND_PCT * 1.3, BAND_PCT * 1.3])]
    for _, g in groups:
        xs += [g["error_pct"].to_numpy(float), *_whiskers(g)]
    x = np.concatenate(xs)
    lo, hi = np.nanmin(x), np.nanmax(x)
    room = 0.2 * (hi - lo)
    return float(lo - room), float(hi + room)


def _points_legend(ax, groups: list[tuple[str, pd.DataFrame]], bound: bool) -> None:
    """What the shading, the whiskers and the hatching of a points panel mean."""
    handles = [Patch(color="#999999", alpha=0.4, lw=0, label=f"within \u00b1{BAND_PCT:g}%")]
    if any(np.isfinite(_whiskers(g)[0]).any() for _, g in groups):
        label = "10-90% of single ShareGPT samples\n(the measurement is one sample)"
        handles.append(Line2D([], [], color="k", lw=0.8, marker="|", ms=6, label=label))
    if bound:
        handles += [
            Patch(facecolor="white", edgecolor=BOUND_COLOR, hatch="////", label="TensorRT-LLM (faster): a bound"),
            Patch(color="#d62728", alpha=0.15, lw=0, label="above the bound: fleetsim optimistic"),
        ]
    ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.9)
