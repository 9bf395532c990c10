"""`report.md`: what a planner forwards. One next to a run's outputs (`run_report`) and one in a
sweep's directory (`sweep_report`): the question the run asked, its answer, the figures (tables
and the plots beside it) and the caveats that apply to this run. No wall-clock time or date in
it: the same config and seed give the same report, byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from sim.config.schema import Config
from sim.output.console import _event_lines, _fleet_text, _fmt, _missed, _ms, _notes, _s

RUN_PLOTS = (
    ("latency_cdf.png", "TTFT and TPOT distributions against the SLO"),
    ("fleet.png", "arrivals, replicas by state and queues over time"),
    ("timeline.png", "requests in the system, KV cache and occupancy"),
    ("cost.png", "where the money goes"),
)
SWEEP_PLOTS = (
    ("sweep_cost.png", "cost per hour against the swept keys (filled: meets the SLO)"),
    ("pareto.png", "cost against latency at the SLO's percentile, with the frontier"),
)
HUGE_MONTH_FACTOR = 24  # a month extrapolated from under 1/24 of a day of traffic gets a caveat


def _money(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if abs(value) < 1:
        return f"${value:.3g}"
    return f"${value:,.2f}" if abs(value) < 1000 else f"${value:,.0f}"


def _slo_text(cfg: Config) -> str:
    slo = cfg.slo
    return (
        f"TTFT <= {slo.ttft_s:g} s and TPOT <= {slo.tpot_s * 1e3:g} ms at p{slo.percentile:g}, "
        f"at least {slo.attainment:.0%} of requests within both"
    )


def _workload_text(s: dict, cfg: Config) -> str:
    w = cfg.workload
    span = s.get("arrival_span_s") or s.get("sim_duration_s") or 0.0
    rate = s["n_requests"] / span if span else math.nan
    return (
        f"workload `{w.name}` ({s['n_requests']:,.0f} requests over {_s(span)}, {_fmt(rate)} req/s; "
        f"{_fmt(s['input_tokens'] / max(s['n_requests'], 1))} prompt and "
        f"{_fmt(s['output_tokens'] / max(s['n_requests'], 1))} output tokens per request on average)"
    )


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    header = list(header)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _images(plot_dir: Path, prefix: str, plots: tuple) -> list[str]:
    return [f"![{what}]({prefix}{name})" for name, what in plots if (plot_dir / name).exists()]


def run_caveats(s: dict, cfg: Config) -> list[str]:
    """What the reader should keep in mind about this run's answer."""
    notes = []
    span = s.get("arrival_span_s") or s.get("sim_duration_s") or 0.0
    if span and span * HUGE_MONTH_FACTOR < 86_400:
        notes.append(
            f"The month's cost extrapolates {_s(span)} of traffic: a day with its peaks and troughs "
            "(a diurnal workload or a day of a trace) prices a month better."
        )
    if not s.get("n_seeds"):
        notes.append(
            "One seed: the figures carry the run's own randomness with no interval; `seeds=[1,2,3,4,5]` "
            "gives 95% intervals and judges the SLO at their pessimistic end."
        )
    if str(cfg.gpu.name).lower() != "h100":
        notes.append(
            f"The performance model is fitted to measured vLLM runs on H100; {cfg.gpu.name} is scaled from "
            "its specifications (compute, memory bandwidth), so its latencies are less certain than H100's "
            "(docs/validation.md gives the errors)."
        )
    else:
        notes.append(
            "Latencies come from a performance model fitted to measured vLLM runs on H100; docs/validation.md "
            "gives its error, including for models the fit has not seen."
        )
    if s.get("gpu_utilization", 0.0) > 0.8:
        notes.append(
            f"The GPUs run at {s['gpu_utilization']:.0%} of their capacity: near saturation the simulated "
            "throughput is optimistic (docs/validation.md), so leave headroom or add a replica."
        )
    if s.get("cold_starts") and not s.get("n_seeds"):
        notes.append(
            f"{s['cold_starts']:,.0f} cold starts of {_s(s.get('cold_start_s'))} each are in the latencies: "
            "the catalogue's start-up time for this model and GPU decides how much they cost."
        )
    if cfg.api.enabled and s.get("n_api"):
        notes.append(
            f"The API ({cfg.api.name}) is priced and rate-limited as the catalogue lists it; check the provider's "
            "current prices and your account's tier."
        )
    return notes


def _run_figures(s: dict, cfg: Config) -> list[str]:
    """Latency at the SLO's percentile, requests by route, the run's cost by line, the fleet."""
    slo = cfg.slo
    p = f"p{slo.percentile:g}"
    lines: list[str] = []
    lines += _table(
        ["", "p50", p, "p99", "SLO"],
        [
            ["TTFT", _s(s["ttft_p50"]), _s(s.get("ttft_slo_percentile")), _s(s["ttft_p99"]), f"{slo.ttft_s:g} s"],
            [
                "TPOT",
                _ms(s["tpot_p50"]),
                _ms(s.get("tpot_slo_percentile")),
                _ms(s["tpot_p99"]),
                f"{slo.tpot_s * 1e3:g} ms",
            ],
        ],
    )
    lines.append("")
    cost_rows = [["GPUs", _money(s["gpu_cost"])], ["API", _money(s["api_cost"])]]
    cost_rows += [
        [name, _money(s[key])] for name, key in (("ops", "ops_cost"), ("egress", "egress_cost")) if s.get(key)
    ]
    lines += _table(
        ["requests", "count"],
        [
            [what, f"{s[key]:,.0f}"]
            for what, key in (
                ("all", "n_requests"),
                ("served by the GPUs", "n_gpu"),
                ("served by the API", "n_api"),
                ("rejected", "n_rejected"),
            )
        ],
    )
    lines.append("")
    lines += _table(["cost of the run", "$"], cost_rows)
    lines.append("")
    if s.get("n_gpu") or s.get("mean_replicas"):
        lines.append(
            f"The GPUs carried {s['gpu_utilization']:.1%} of their capacity ({_fmt(s['replica_capacity_rps'])} req/s "
            f"per replica saturated, this token mix); mean {s['mean_replicas']:.2f} replicas, peak "
            f"{s['max_replicas']:,.0f}."
        )
        lines.append("")
    events = _event_lines(s, cfg)
    if events:
        lines += [f"Events: {events[0].split('events', 1)[1].strip()}.", ""]
    return lines


def run_report(s: dict, cfg: Config, plot_dir: Path | None = None) -> str:
    """The report of one run (summary `s` of config `cfg`); plots in `plot_dir` (run/plots) are
    shown when present."""
    slo = cfg.slo
    met = bool(s["slo_met"])
    lines = [
        f"# fleetsim report: {cfg.model.name} on {_fleet_text(s, cfg)}",
        "",
        "## The question",
        "",
        f"Does {_fleet_text(s, cfg)} serve {cfg.model.name} ({cfg.model.weight_dtype}) for the "
        f"{_workload_text(s, cfg)} within the SLO ({_slo_text(cfg)}), and what does it cost?",
        "",
        "## The answer",
        "",
        f"**SLO {'met' if met else 'missed'}**: {s['slo_attainment']:.1%} of requests within both targets "
        f"(target {slo.attainment:.0%}){_missed(s, cfg)}.",
        "",
        f"**Cost**: {_money(s['cost_per_hour'])}/hour, {_money(s['cost_per_month'])}/month at this traffic, "
        f"{_money(s['cost_per_mtok'])} per million tokens ({_money(s['total_cost'])} for the run).",
        "",
    ]
    notes = [line.strip().removeprefix("note").strip() for line in _notes(s, cfg)]
    lines += [*(f"Note: {n}" for n in notes), ""] if notes else []
    lines += ["## Figures", "", *_run_figures(s, cfg)]
    images = _images(plot_dir, "plots/", RUN_PLOTS) if plot_dir is not None else []
    lines += [*images, ""] if images else []
    lines += ["## Caveats", ""]
    lines += [f"- {c}" for c in run_caveats(s, cfg)]
    lines += [
        "",
        "The full configuration is in `config.yaml`, every number in `summary.json` (docs/metrics.md defines "
        "them)" + (", one row per request in `requests.parquet`." if cfg.output.requests else "."),
        "",
    ]
    return "\n".join(lines)


def sweep_report(df: pd.DataFrame, best: dict, keys: list[str], plot_dir: Path | None = None) -> str:
    """The report of a sweep: `df` is sweep.csv, `best` sweep_best.json, `keys` the swept keys."""
    ok = df[df["status"] == "ok"]
    n_failed = len(df) - len(ok)
    load = best.get("highest_load_meeting_slo")
    swept = ", ".join(f"`{k}` ({', '.join(str(v) for v in _values(df[k]))})" for k in keys)
    lines = ["# fleetsim sweep report", "", "## The question", ""]
    if load is not None:
        lines.append(f"What is the highest load that meets the SLO, over {swept}?")
    else:
        lines.append(f"Which of {len(df)} configurations, over {swept}, is the cheapest that meets the SLO?")
    lines += ["", "## The answer", "", _sweep_answer(best, keys)]
    lines += ["", "## Figures", ""]
    rows = _sweep_rows(df, keys)
    lines += _table([*keys, "$/hour", "attainment", "TTFT (SLO pct.)", "TPOT (SLO pct.)", "SLO"], rows)
    lines.append("")
    images = _images(plot_dir, "plots/", SWEEP_PLOTS) if plot_dir is not None else []
    lines += [*images, ""] if images else []
    lines += ["## Caveats", ""]
    lines += [f"- {c}" for c in sweep_caveats(df, best, keys, n_failed)]
    lines += [
        "",
        "Every job's own directory holds its report.md, summary.json and plots; sweep.csv has one row per job, "
        "sweep_best.json the answer.",
        "",
    ]
    return "\n".join(lines)


def _sweep_answer(best: dict, keys: list[str]) -> str:
    """The highest load meeting the SLO, the cheapest configuration, or the closest miss."""
    load = best.get("highest_load_meeting_slo")
    lines: list[str] = []
    if load is not None:
        if load.get("value") is None:
            lines.append(f"**None of the loads tried meets the SLO** ({load['key']} = {_joined(load['tried'])}).")
        else:
            beyond = (
                f"; {load['key']}={load['first_miss']:g} misses it"
                if load.get("first_miss") is not None
                else ", the highest tried: the limit is higher"
            )
            lines.append(
                f"**{load['key']}={load['value']:g}** meets the SLO (job {load['job']}, attainment "
                f"{load['slo_attainment']:.1%}){beyond}."
            )
    elif best.get("feasible"):
        chosen = " ".join(f"{k}={best['overrides'][k]}" for k in keys)
        lines.append(
            f"**{chosen}** (job {best['job']}) at **{_money(best.get('cost_per_hour'))}/hour** "
            f"({_money(best.get('cost_per_month'))}/month at this traffic, {_money(best.get('cost_per_mtok'))} per "
            f"million tokens), attainment {best['slo_attainment']:.1%}."
        )
    elif "job" in best:
        chosen = " ".join(f"{k}={best['overrides'][k]}" for k in keys)
        lines.append(
            f"**No configuration meets the SLO.** The closest: {chosen} (job {best['job']}), attainment "
            f"{best['slo_attainment']:.1%} at {_money(best.get('cost_per_hour'))}/hour."
        )
    else:
        lines.append(f"**{best.get('reason', 'no answer')}**.")
    return lines[0]


def _sweep_rows(df: pd.DataFrame, keys: list[str]) -> list[list[str]]:
    """One row per job: its keys, cost rate, attainment, latency at the SLO's percentile."""
    rows = []
    for _, r in df.iterrows():
        label = [str(r[k]) for k in keys]
        if r["status"] != "ok":
            why = " ".join(str(r.get("error", "")).split()).replace("|", "/")[:80]  # one table cell
            rows.append([*label, "failed", "", "", "", why])
            continue
        met = "meets" if r.get("slo_met") in (True, "True") else "misses"
        if r.get("api_cap_exceeded") in (True, "True"):
            met = "over the API cap"
        rows.append(
            [
                *label,
                _money(r["cost_per_hour"]),
                f"{r['slo_attainment']:.1%}",
                _s(r.get("ttft_slo_percentile")),
                _ms(r.get("tpot_slo_percentile")),
                met,
            ]
        )
    return rows


def sweep_caveats(df: pd.DataFrame, best: dict, keys: list[str], n_failed: int) -> list[str]:
    notes = []
    if n_failed:
        notes.append(
            f"{n_failed} job(s) failed (their reason is in the table and in sweep.csv); they are not compared."
        )
    if best.get("feasible") and best.get("highest_load_meeting_slo") is None:
        for k in keys:
            values = _values(df[k])
            numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if len(numeric) > 1 and best["overrides"].get(k) == min(numeric):
                notes.append(
                    f"The answer sits at the low end of the swept `{k}` ({min(numeric):g}): a lower value, not "
                    "tried, may also meet the SLO and cost less."
                )
    if "n_seeds" not in df or df["n_seeds"].isna().all():
        notes.append(
            "One seed per job: close calls (attainment near the target) can flip with another seed; "
            "`seeds=[1,2,3,4,5]` judges each job at the pessimistic end of its 95% intervals."
        )
    notes.append(
        "Latencies come from a performance model fitted to measured vLLM runs on H100 (docs/validation.md "
        "gives its error); other GPU types are scaled from their specifications."
    )
    return notes


def _values(column: pd.Series) -> list:
    seen = []
    for v in column:
        v = v.item() if hasattr(v, "item") else v
        if v not in seen:
            seen.append(v)
    return seen


def _joined(values: Iterable) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in values)


def _platform_figures(s: dict, pc) -> list[str]:
    """One row per deployment; the pooled deployments and the cascade as their users saw them."""
    lines: list[str] = []
    rows = []
    for name in pc.deployments:
        d = {k.split(".", 2)[2]: v for k, v in s.items() if k.startswith(f"deployment.{name}.")}
        role = f"tier {pc.cascade.index(name) + 1}" if name in pc.cascade else ""
        role = role or next((f"pool of {g}" for g, m in pc.pools.items() if name in m), "")
        role = role or next(
            (
                f"{r} pool of {g}"
                for g, dc in pc.disaggregated.items()
                for r in ("prefill", "decode")
                if getattr(dc, r) == name
            ),
            "",
        )
        verdict = f"{d['slo_attainment']:.1%}" if d["n_requests"] else "no requests"
        rows.append(
            [
                name,
                role,
                d["model"],
                f"{_fmt(d['mean_replicas'])} x {d['gpus_per_replica']:g} {d['gpu']}",
                f"{d['n_requests']:,.0f}",
                verdict,
                _money(d["cost_per_hour"]),
            ]
        )
    lines += _table(["deployment", "role", "model", "replicas (mean)", "requests", "attainment", "$/hour"], rows)
    lines.append("")
    for group, members in pc.pools.items():
        g = {k.split(".", 2)[2]: v for k, v in s.items() if k.startswith(f"pools.{group}.")}
        shares = ", ".join(
            f"{m} {g[f'share.{m}']:.1%} of requests ({g[f'capacity_share.{m}']:.1%} of capacity)" for m in members
        )
        head = f"Pooled deployment **{group}**: {g['n_requests']:,.0f} requests, attainment {g['slo_attainment']:.1%}"
        lines += [f"{head}; {shares}.", ""]
    for group, dc in pc.disaggregated.items():
        g = {k.split(".", 2)[2]: v for k, v in s.items() if k.startswith(f"disaggregated.{group}.")}
        lines += [
            f"Disaggregated deployment **{group}** (prefill on {dc.prefill}, decode on {dc.decode}, KV over "
            f"{dc.link_gb_s:g} GB/s): {g['n_requests']:,.0f} requests, TTFT p50 {_s(g['ttft_p50'])} and p95 "
            f"{_s(g['ttft_p95'])} from the arrival (KV transfer {_s(g['transfer_s_mean'])} on average), TPOT p95 "
            f"{_s(g['tpot_p95'])}; attainment {g['slo_attainment']:.1%}; {_money(g['cost_per_mtok'])}/M tokens.",
            "",
        ]
    if pc.cascade:
        answered = ", ".join(f"{t} {s[f'cascade.answered_by.{t}']:.1%}" for t in pc.cascade)
        lines += [
            f"Cascade {' -> '.join(pc.cascade)}: answers from {answered}; as its users saw it, TTFT p50 "
            f"{_s(s['cascade.ttft_p50'])}, at the SLO's percentile {_s(s['cascade.ttft_slo_percentile'])}; attainment "
            f"{s['cascade.slo_attainment']:.1%} on the first tier's SLO.",
            "",
        ]
    return lines


def platform_report(s: dict, pc) -> str:
    """report.md of a platform run: each deployment's answer, the cascade and pools as their
    users saw them, the totals and what to keep in mind."""
    met = "met" if s["slo_met"] else "missed"
    lines = [
        f"# fleetsim platform report: {pc.name}",
        "",
        "## The question",
        "",
        f"Do the {len(pc.deployments)} deployments ({', '.join(pc.deployments)}) meet their SLOs on their traffic, "
        "and what does the platform cost?",
        "",
        "## The answer",
        "",
        f"**SLOs {met}** (the worst-served deployment: {s['slo_attainment']:.1%} within its targets). "
        f"**{_money(s['cost_per_hour'])}/hour**, {_money(s['cost_per_month'])}/month at this traffic, "
        f"{_money(s['cost_per_mtok'])} per million tokens answered.",
        "",
        "## Figures",
        "",
    ]
    lines += _platform_figures(s, pc)
    lines += [
        "## Caveats",
        "",
        "- Each deployment's own report.md (deployments/NAME/) lists the caveats of its run.",
    ]
    if pc.cascade:
        lines.append(
            "- A cascade's escalated requests are answered again from the start: their first token waits for the "
            "earlier tiers' whole answers."
        )
    if pc.pools:
        lines.append("- The front router of mixed pools routes on backlog and capacity, not on predicted latency.")
    if pc.disaggregated:
        lines.append(
            "- A disaggregated deployment's KV transfers each have the link to themselves (no contention), and the "
            "decode side holds no memory for a request until its KV has arrived."
        )
    return "\n".join([*lines, ""])
