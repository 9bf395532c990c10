#!/usr/bin/env python
"""Fit the engine's time factors to measured vLLM runs end to end, cross-validate them leaving
one model out, and write the result into docs/calibration.md (between its `e2e-fit` markers).

python scripts/fit_engine.py ../shared/calibration/vllm_runs.yaml \
    --points ../shared/calibration/published_points.yaml             # fit, CV, report
... --write      # also store the factors in conf/engine/vllm.yaml (their only home): the fit's,
                 # if they lower its loss by more than 0.5% against the shipped ones

About 8 minutes on 2 cores (9 fits of ~40-100 replays of the 13 runs and 4 points each, the
cold-prefill estimate of eta_prefill for each, and the loss's grain: `roughness`).
"""

from __future__ import annotations

import argparse
import math
import re
import textwrap
from pathlib import Path

import pandas as pd
import yaml

from sim.studies.fit import (
    PARAMS,
    RESOLUTION,
    ROUGH_STEP,
    Runs,
    Settled,
    cold_runs,
    engine_of,
    fit,
    fit_points,
    fit_prefill,
    leave_one_model_out,
    medians,
    replay,
    roughness,
    settle,
    shippable,
    shipped,
)

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- e2e-fit: begin -->", "<!-- e2e-fit: end -->"
MEANING = {
    "step_overhead_ms": "time per iteration outside the roofline (scheduling, launch, sampling)",
    "step_overhead_per_seq_us": "its growth per sequence in the batch (inputs, sampling, outputs)",
    "request_overhead_ms": "client-visible time outside the engine (HTTP, tokenising, streaming)",
    "eta_weights": "achieved / peak HBM bandwidth reading weights",
    "eta_kv": "achieved / peak HBM bandwidth reading the KV cache",
    "eta_moe": "expert-weight reads relative to dense ones (grouped GEMMs)",
}
SHOWN = ("ttft_mean", "itl_mean", "e2e_mean")


def settled_lines(st: Settled) -> list[str]:
    """What the script does with this fit's optimum for all runs (`sim.studies.fit.settle`)."""
    grain = (
        f" For scale: moving every shipped factor by {ROUGH_STEP:.2%} of itself moves this loss by up to"
        f" {st.grain:.1%} (`sim.studies.fit.roughness`): a replay is piecewise in the factors, so the"
        " loss has a grain, and differences of that size do not say which factors fit better."
        if math.isfinite(st.grain)
        else ""
    )
    scored = (
        "Both are scored as they would be stored (four significant digits) on the runs' whole stages,"
        " the replays the errors below come from."
    )
    if not st.kept:
        text = (
            f"This fit's optimum lowers the loss from {st.shipped_loss:.5f} (the factors shipped before) to"
            f" {st.fitted_loss:.5f}, more than the {RESOLUTION:.1%} the script asks before `--write` stores it."
            f" {scored}{grain}"
        )
    else:
        values = ", ".join(f"{p} {v:g}" for p, v in zip(PARAMS, st.fitted, strict=True))
        text = (
            f"This fit's optimum for all runs ({values}) scores a loss of {st.fitted_loss:.5f} against the"
            f" shipped factors' {st.shipped_loss:.5f}, not {RESOLUTION:.1%} lower, which the script asks before"
            f" it replaces them; so they stay, and the in-sample errors below are theirs. {scored}{grain} The"
            " per-step and per-sequence overheads trade for each other along a valley of nearly equal loss: the"
            " runs cannot tell such points apart, and moving would shift every figure the factors feed for"
            " nothing."
        )
    return ["", *textwrap.wrap(text, 95, break_on_hyphens=False)]


def factor_table(theta, folds: dict, st: Settled | None) -> list[str]:
    """The factors for all runs and for each leave-one-model-out fold."""
    first = "shipped (all runs)" if st is not None and st.kept else "fitted (all runs)"
    lines = [
        f"| factor | {first} | " + " | ".join(f"without {m}" for m in folds) + " | meaning |",
        "|---|---:|" + "---:|" * len(folds) + "---|",
    ]
    for i, p in enumerate(PARAMS):
        lines.append(
            f"| {p} | {theta[i]:.4g} | " + " | ".join(f"{t[i]:.4g}" for t in folds.values()) + f" | {MEANING[p]} |"
        )
    return lines + (settled_lines(st) if st is not None else [])


def generation_lines(gens) -> list[str]:
    """The GPU generations' efficiency factors and their points' errors."""
    factors, rows = gens
    lines = [
        "",
        "### GPU generations",
        "",
        "The runs are all on H100, so the factors above describe an H100. Another generation's",
        "`gpu.efficiency` (its achieved share of peak bandwidth and FLOPS relative to the H100",
        "fit) is fitted to vLLM's published batch-1 decode steps on that GPU",
        "(calibration/points.yaml, `fit.itl`); the H100 points are a check. A100 and L40S have",
        "no vLLM step-time points here and keep 1.0: treat their figures as roofline estimates.",
        "",
        "| GPU | gpu.efficiency | points | mean abs error | max abs error |",
        "|---|---:|---:|---:|---:|",
    ]
    for g, f in factors.items():
        errs = [abs(pred / meas - 1) * 100 for _, gg, _, meas, pred in rows if gg == g]
        lines.append(f"| {g} | {f:.3f} | {len(errs)} | {sum(errs) / len(errs):.1f}% | {max(errs):.1f}% |")
    return lines


def point_lines(inside: pd.DataFrame, held: pd.DataFrame) -> list[str]:
    """The published points in the fit, in-sample and cross-validated."""
    pts_in, pts_cv = inside[inside["source"] == "point"], held[held["source"] == "point"]
    if not len(pts_in):
        return []
    lines = ["", "Published points in the fit (in-sample / cross-validated):", ""]
    lines += ["| point | model | metric | measured | error |", "|---|---|---|---:|---:|"]
    cv_err = pts_cv.set_index("run")["error_pct"]
    for _, r in pts_in.iterrows():
        lines.append(
            f"| {r.run} | {r.model} | {r.metric} | {r.measured:.4g} | {r.error_pct:+.1f}% / {cv_err[r.run]:+.1f}% |"
        )
    return lines


def section(
    theta, folds: dict, inside: pd.DataFrame, held: pd.DataFrame, command: str, gens=None, prefill=None, st=None
) -> str:
    ins, cv = medians(inside), medians(held)
    lines = [
        BEGIN,
        "## End-to-end fit to measured vLLM runs",
        "",
        f"Generated by `{command}`; do not edit by hand.",
        "",
        "The factors below are fitted by replaying the measured runs (`fleetsim-validate`, the load",
        "generator's exact workload) and minimising the robust (soft-L1) sum of the log errors of",
        "each stage's mean TTFT and mean ITL; stages are shortened to 300 s for the fit, the errors",
        "below replay them whole. vLLM's published step-time points on H100 (batch latency and",
        "concurrency-1 ITL, `sim.studies.fit.fit_points`) join with one log error each: they bring models",
        "the runs lack, among them a second MoE (Mixtral), so no model's factor is left at its",
        "starting value when its runs are held out. `eta_flops` (decoding sequences' matmuls) keeps",
        "its kernel fit and `eta_prefill` (prefill chunks end to end) its default, which vLLM's",
        "prefill timed directly supports (the subsection below). Every run counts the same; no",
        "factor is tuned to one run.",
        "",
        *factor_table(theta, folds, st),
    ]
    lines += [
        "",
        "Leave-one-model-out cross-validation: each model's runs and points are predicted by the",
        "fit to the other models' (the columns above), which is what to expect on a model the fit",
        "has not seen. Whole-run errors over the 13 runs, simulated vs measured (+: fleetsim",
        "slower):",
        "",
        "| metric | in-sample median signed | in-sample median abs | cross-validated median signed"
        " | cross-validated median abs |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in [
        k for k in ("ttft_mean", "ttft_p90", "ttft_p99", "itl_mean", "e2e_mean", "e2e_p90", "e2e_p99") if k in ins
    ]:
        lines.append(f"| {m} | {ins[m][0]:+.1f}% | {ins[m][1]:.1f}% | {cv[m][0]:+.1f}% | {cv[m][1]:.1f}% |")
    lines += ["", "Per run (whole run; in-sample / cross-validated):", ""]
    lines += ["| run | model | workload | " + " | ".join(SHOWN) + " |", "|---|---|---|" + "---:|" * len(SHOWN)]
    whole_in = inside[(inside["stage"] == -1) & (inside["source"] == "run")]
    w_in = whole_in.set_index(["run", "metric"])["error_pct"]
    w_cv = held[(held["stage"] == -1) & (held["source"] == "run")].set_index(["run", "metric"])["error_pct"]
    runs = whole_in.drop_duplicates("run")
    for _, r in runs.iterrows():
        cells = [f"{w_in[(r.run, m)]:+.1f}% / {w_cv[(r.run, m)]:+.1f}%" for m in SHOWN]
        lines.append(f"| {r.run} | {r.model} | {r.workload} | " + " | ".join(cells) + " |")
    lines += point_lines(inside, held)
    if prefill is not None and prefill[1] is not None:
        lines += prefill_section(*prefill)
    lines += generation_lines(gens) if gens is not None else []
    lines += [END]
    return "\n".join(lines)


def direct_prefill(theta, etas: dict) -> dict:
    """The errors (%) of fleetsim's single-request prefill against vLLM's directly timed one
    (calibration/prefill_points.yaml) at each labelled eta_prefill."""
    from sim.studies.validate import simulate_point

    d = yaml.safe_load((ROOT / "calibration" / "prefill_points.yaml").read_text())
    return {
        label: [
            simulate_point(p, d["models"], engine_of(theta, eta_prefill=eta))["error_pct"]
            for p in d["performance_points"]
        ]
        for label, eta in etas.items()
    }


def prefill_estimates(data: Runs, theta, folds: dict, workers: int) -> tuple[dict, pd.DataFrame, dict]:
    """The eta_prefill the cold prefills would ask for with all runs and leaving each model out (its
    fold's factors), each cold run's first-stage TTFT p99 at the shipped eta_prefill and at the
    all-runs estimate, and the directly timed prefills' errors at both."""
    from sim.config.schema import load_option

    engine = load_option("engine", "vllm")
    shipped = engine.eta_prefill or engine.eta_flops
    est = {"all runs": fit_prefill(data, theta, workers)}
    if est["all runs"] is None:  # no run's first stage measures prefill
        return est, None, {}
    for model, t in folds.items():
        est[f"without {model}"] = fit_prefill(data.subset(lambda m, model=model: m != model), t, workers)
    cold = cold_runs(data)
    frames = []
    for label, eta in (("shipped", shipped), ("estimate", est["all runs"])):
        df = replay(cold, theta, None, workers, eta_prefill=eta)
        frames.append(df[(df["stage"] == 0) & (df["metric"] == "ttft_p99")].assign(at=label))
    direct = direct_prefill(theta, {"shipped": shipped, "estimate": est["all runs"]})
    return est, pd.concat(frames, ignore_index=True), direct


def prefill_section(est: dict, rows: pd.DataFrame, direct: dict) -> list[str]:
    from sim.config.schema import load_option

    shipped = rows[rows["at"] == "shipped"].set_index("run")
    at_est = rows[rows["at"] == "estimate"].set_index("run")["error_pct"]
    eta, flops = est["all runs"], load_option("engine", "vllm").eta_flops
    folds = [v for k, v in est.items() if k != "all runs" and v is not None]
    lines = [
        "",
        "### Cold first requests (reported, not applied)",
        "",
        "The runs hit the prefix cache on almost every prompt, except their first requests: each",
        "distinct prompt is prefilled the first time (beyond its group's system prompt, cached after",
        "the group's first). Where those cold prompts are at least 1% of a run's first stage and the",
        "model has their prefill compute-bound even at the GEMM efficiency (the dense models here; an",
        "MoE's is bound by its expert reads), the stage's TTFT p99 can fall among them",
        "(`sim.studies.fit.cold_prefill`). Replaying those first stages whole, the p99s would ask,",
        f"if prefill set them, for `eta_prefill` of about {eta:.2f}"
        + (f" ({min(folds):.2f}-{max(folds):.2f} leaving one model out;" if folds else " (")
        + " the loss is flat within a few",
        f"hundredths) against the GEMM kernels' {flops:.3f}:",
        "",
        f"| run | model | measured TTFT p99 (ms) | error at {flops:.3f} | error at {eta:.2f} |",
        "|---|---|---:|---:|---:|",
    ]
    for run, r in shipped.iterrows():
        lines.append(f"| {run} | {r.model} | {r.measured:.1f} | {r.error_pct:+.1f}% | {at_est[run]:+.1f}% |")
    spread = float(at_est.std())
    at0, at1 = (sorted(direct[k]) for k in ("shipped", "estimate"))
    med0, med1 = (float(pd.Series(e).abs().median()) for e in (at0, at1))
    lines += [
        "",
        "Prefill is the wrong suspect for long prompts, and the value is not the default. vLLM's",
        "prefill timed directly, one request alone at each of",
        f"{len(at0)} prompt lengths from 10k to 100k tokens on Llama-3.1-8B in BF16 on an H100",
        "(`calibration/prefill_points.yaml`, read off a vLLM blog figure; docs/validation.md),",
        f"matches fleetsim at the default within a median {med0:.1f}% ({at0[0]:+.0f} to {at0[-1]:+.0f}%)",
        f"and would take {med1:.0f}% longer ({at1[0]:+.0f} to {at1[-1]:+.0f}%) at {eta:.2f}. Prompts of a few",
        "hundred tokens, like the runs', are not timed there: fixed costs per forward pass that",
        "they do not amortise, and warm-up in a server's first seconds, are candidates not",
        f"measured here. The p99s scatter by {spread:.0f}% around the estimate, and at {flops:.3f} warm",
        "requests, not cold ones, set some of them. The value would make every uncached prefill",
        f"chunk {flops / eta:.1f}x as long. Keep `engine.eta_prefill` at its default; lower it only to",
        "see how much a plan's TTFT",
        "hinges on slow cold prompts (it slows prefill chunks only, not decoding).",
    ]
    return lines


POINTS = ROOT / "calibration" / "points.yaml"


def generation_factors(theta) -> tuple[dict, list[tuple]]:
    """`gpu.efficiency` of each GPU generation with published decode steps (points.yaml,
    fit.itl: vLLM's batch-1 step time against context), relative to the H100 the runs fit:
    the factor that minimises the log errors of that GPU's points. H100's own points are the
    check. Returns the factors and (point, gpu, context, measured, predicted) rows."""
    import dataclasses

    from scipy.optimize import minimize_scalar

    from sim.config.schema import load_option
    from sim.hardware.perf import Roofline

    engine = dataclasses.replace(load_option("engine", "vllm"), **engine_of(theta))
    points = yaml.safe_load(POINTS.read_text())["fit"]["itl"]
    factors: dict[str, float] = {}
    rows = []
    for gpu_name in sorted({p["gpu"] for p in points}):
        mine = [p for p in points if p["gpu"] == gpu_name]

        def steps(f, mine=mine, gpu_name=gpu_name):
            gpu = dataclasses.replace(load_option("gpu", gpu_name), efficiency=f)
            out = []
            for p in mine:
                e = dataclasses.replace(engine, kv_cache_dtype=p["kv_cache_dtype"])
                r = Roofline(load_option("model", p["model"]), gpu, e)
                out += [
                    (
                        p["id"],
                        ctx,
                        p["intercept_ms"] + p["slope_ms_per_token"] * ctx,
                        r.iteration_time(1, ctx, []) * 1e3,
                    )
                    for ctx in p["contexts"]
                ]
            return out

        if gpu_name == "h100":
            f = 1.0
        else:
            loss = lambda f, steps=steps: sum(math.log(pred / meas) ** 2 for _, _, meas, pred in steps(f))  # noqa: E731
            f = float(minimize_scalar(loss, bounds=(0.3, 2.0), method="bounded").x)
        factors[gpu_name] = f
        rows += [(pid, gpu_name, ctx, meas, pred) for pid, ctx, meas, pred in steps(f)]
    return factors, rows


def write_section(path: Path, text: str) -> None:
    doc = path.read_text()
    if BEGIN in doc:
        doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: text, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(doc)


def write_defaults(theta) -> None:
    """The factors `settle` chose become the defaults: conf/engine/vllm.yaml (EngineConfig has no
    default for them, so the YAML is their only source)."""
    values = dict(zip(PARAMS, shippable(theta), strict=True))  # what settle scored
    conf = ROOT / "conf" / "engine" / "vllm.yaml"
    out = []
    for line in conf.read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in values:
            comment = rest[rest.index("#") :] if "#" in rest else ""
            text = f"{key}: {values[key]:g}"
            line = text.ljust(32) + comment if comment else text
        out.append(line)
    conf.write_text("\n".join(out) + "\n")


def write_gpu_efficiency(gpu: str, f: float) -> None:
    path = ROOT / "conf" / "gpu" / f"{gpu}.yaml"
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("efficiency:")]
    lines.append(f"efficiency: {f:.3f}".ljust(26) + "# vs the H100 fit: scripts/fit_engine.py (docs/calibration.md)")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, help="measured runs (the layout of vllm_runs.yaml)")
    ap.add_argument("--points", type=Path, help="published points (the layout of published_points.yaml)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "calibration.md")
    ap.add_argument(
        "--write",
        action="store_true",
        help="store the factors as the defaults (the fit's, if they beat the shipped ones)",
    )
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    d = yaml.safe_load(args.runs.read_text())
    data = Runs(d["runs"], d.get("models") or {}, d.get("token_inflation") or {})
    if args.points:
        from sim.studies.validate import catalog_models

        pts = yaml.safe_load(args.points.read_text())
        data.points = fit_points(pts.get("performance_points") or [])
        data.point_models = pts.get("models") or catalog_models(args.points)
    st = settle(data, fit(data, args.workers), shipped(), args.workers)
    st.grain = roughness(data, shipped(), args.workers)
    print(f"the loss's grain: {st.grain:.2%} when every shipped factor moves by {ROUGH_STEP:.2%}")
    theta = st.theta
    print("fitted:", ", ".join(f"{p}={v:.4g}" for p, v in zip(PARAMS, st.fitted, strict=True)))
    print(
        f"loss: fitted {st.fitted_loss:.5f}, shipped {st.shipped_loss:.5f}: "
        + ("kept the shipped factors" if st.kept else "the fit's factors replace them")
    )
    inside = replay(data, theta, workers=args.workers)
    held, folds = leave_one_model_out(data, args.workers)
    for name, df in (("in-sample", inside), ("leave-one-model-out", held)):
        print(name + ":", ", ".join(f"{m} {s:+.1f}%/{a:.1f}%" for m, (s, a) in medians(df).items() if m in SHOWN))
    gens = generation_factors(theta)
    print("gpu.efficiency:", ", ".join(f"{g}={f:.3f}" for g, f in gens[0].items()))
    prefill = prefill_estimates(data, theta, folds, args.workers)
    print("eta_prefill the cold prefills would ask for:", ", ".join(f"{k} {v:.3f}" for k, v in prefill[0].items() if v))
    cmd = f"python scripts/fit_engine.py {args.runs}" + (f" --points {args.points}" if args.points else "")
    cmd += " --write" if args.write else ""
    write_section(args.out, section(theta, folds, inside, held, cmd, gens, prefill, st))
    print(f"wrote {args.out}")
    if args.write:
        write_defaults(theta)
        for g, f in gens[0].items():
            if g != "h100":
                write_gpu_efficiency(g, f)
        print("stored the factors in conf/engine/vllm.yaml and conf/gpu/")


if __name__ == "__main__":
    main()
