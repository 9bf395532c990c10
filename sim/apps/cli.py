"""The `fleetsim` command: a Hydra app around `sim.run`.

`fleetsim [overrides]` runs one scenario into Hydra's run directory; `fleetsim -m ...` sweeps.
Bad input (an unknown config option, a value of the wrong type, a value that fails validation)
prints one line naming the key and exits with code 2; anything else is a bug and keeps its
traceback. This module, the config store registration and the sweep callback are the only
places that import Hydra.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sim.config.errors import UserError
from sim.config.schema import Config, conf_dir

EXIT_USAGE = 2


def _fmt(value: float, unit: str = "", digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == " s" and value >= 120:
        return f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h"
    return f"{value:.{digits}g}{unit}" if abs(value) < 10**digits else f"{value:,.0f}{unit}"


def _count(value: float) -> str:
    """A count, or a mean count over seeds."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _other_costs(s: dict) -> str:
    """The cost lines beyond GPU and API, where the run had them."""
    return "".join(
        f", {name} ${s[key]:.2f}" for name, key in (("ops", "ops_cost"), ("egress", "egress_cost")) if s.get(key)
    )


def format_summary(summary: dict, cfg: Config) -> str:
    s = summary
    slo = cfg.slo
    verdict = "MET" if s["slo_met"] else "MISSED"
    lines = [
        f"fleetsim: {cfg.model.name} ({cfg.model.weight_dtype}), {_fleet_text(s, cfg)}, "
        f"workload {cfg.workload.name}: {s['sim_duration_s']:,.0f} s simulated in {s['wall_time_s']:.2f} s",
        f"  requests   {_count(s['n_requests'])} (gpu {_count(s['n_gpu'])}, api {_count(s['n_api'])}, "
        f"rejected {_count(s['n_rejected'])})",
        f"  TTFT       {_quantiles(s, 'ttft', slo.percentile, _s)}   (SLO {slo.ttft_s:g} s at p{slo.percentile:g})",
        f"  TPOT       {_quantiles(s, 'tpot', slo.percentile, _ms)}   "
        f"(SLO {slo.tpot_s * 1e3:g} ms at p{slo.percentile:g})",
        f"  SLO        {verdict}: attainment {s['slo_attainment']:.1%} (target {slo.attainment:.0%}){_missed(s, cfg)}",
        f"  cost       ${s['total_cost']:.2f} (gpu ${s['gpu_cost']:.2f}, api ${s['api_cost']:.2f}{_other_costs(s)}), "
        f"${_fmt(s['cost_per_mtok'], '', 4)}/M tokens, ${_fmt(s['cost_per_hour'], '', 4)}/hour "
        f"(${s['cost_per_month']:,.0f}/month)",
        f"  GPUs       load {s['gpu_utilization']:.1%} of capacity ({_fmt(s['replica_capacity_rps'])} req/s per "
        f"replica saturated, this token mix); engine occupancy {s['engine_occupancy']:.1%}, "
        f"busy {s['gpu_busy']:.1%} of the time",
    ]
    if not s["n_gpu"] and not s.get("mean_replicas"):
        lines.pop()  # no GPUs in this run: no GPU line
    if s.get("users"):
        lines.insert(2, _users_line(s, cfg))
    lines += _event_lines(s, cfg)
    lines += _api_lines(s, cfg)
    if s.get("n_seeds"):
        lines += _seed_lines(s, cfg, verdict)
    lines += _notes(s, cfg)
    classes = sorted({k.split(".", 1)[1] for k in s if k.startswith("slo_attainment.")})
    lines.extend(
        f"  class {name:<10s} {_count(s[f'n_requests.{name}'])} requests, "
        f"attainment {s[f'slo_attainment.{name}']:.1%}, TTFT p99 {_fmt(s[f'ttft_p99.{name}'], ' s')}"
        for name in classes
    )
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return _fmt(value, " s")


def _ms(value: float | None) -> str:
    return _fmt(value if value is None else value * 1e3, " ms")


def _quantiles(s: dict, metric: str, percentile: float, show) -> str:
    """p50, the SLO's percentile (what the verdict is judged on) and p99."""
    parts = [f"p50 {show(s[f'{metric}_p50'])}"]
    if percentile not in (50, 99):
        parts.append(f"p{percentile:g} {show(s.get(f'{metric}_slo_percentile'))}")
    parts.append(f"p99 {show(s[f'{metric}_p99'])}")
    return "   ".join(parts)


def _missed(s: dict, cfg: Config) -> str:
    """What missed the SLO: TTFT or TPOT at its percentile over the threshold, attainment under
    its target, or nothing served."""
    slo = cfg.slo
    if s["slo_met"]:
        return ""
    why = []
    ttft, tpot = s.get("ttft_slo_percentile"), s.get("tpot_slo_percentile")
    if ttft is not None and not math.isnan(ttft) and ttft > slo.ttft_s:
        why.append(f"TTFT p{slo.percentile:g} {_s(ttft)} > {slo.ttft_s:g} s")
    if tpot is not None and not math.isnan(tpot) and tpot > slo.tpot_s:
        why.append(f"TPOT p{slo.percentile:g} {_ms(tpot)} > {slo.tpot_s * 1e3:g} ms")
    if s["slo_attainment"] < slo.attainment:
        why.append(f"attainment under {slo.attainment:.0%}")
    if not s["n_gpu"] and not s["n_api"]:
        why.append("nothing was served")
    return f"; missed: {', '.join(why)}" if why else ""


def _event_lines(s: dict, cfg: Config) -> list[str]:
    """Events that move latency or cost: cold starts, wake-ups, spot and KV preemptions, API
    refusals by limit, requests that waited at the router with no replica to take them."""
    events = [
        (s.get("cold_starts"), f"cold starts ({_s(s.get('cold_start_s'))} each)"),
        (s.get("wakes"), "wake-ups from sleep"),
        (s.get("spot_preemptions"), "spot preemptions"),
        (s.get("preemptions"), "KV-cache preemptions (requests recomputed)"),
    ]
    refusals = {k.split(".", 1)[1]: v for k, v in s.items() if k.startswith("api_refusals.") and v}
    events += [(n, f"API refusals ({reason})") for reason, n in sorted(refusals.items())]
    shown = [f"{_count(n)} {what}" for n, what in events if n]
    if s.get("router_queue_max"):
        shown.append(f"up to {_count(s['router_queue_max'])} requests waiting at the router for a replica")
    return [f"  events     {'; '.join(shown)}"] if shown else []


def _fleet_text(s: dict, cfg: Config) -> str:
    tp = round(s["gpus_per_replica"])
    gpus = "1 GPU" if tp == 1 else f"{tp} GPUs"
    f = cfg.fleet
    if f.autoscaler.name == "fixed":
        fleet = f"{f.replicas} replica{'' if f.replicas == 1 else 's'} x {gpus} {cfg.gpu.name}"
    else:
        fleet = (
            f"{f.autoscaler.name}-autoscaled {f.min_replicas}-{f.max_replicas} replicas x {gpus} {cfg.gpu.name} "
            f"(mean {s['mean_replicas']:.2f}, peak {_count(s['max_replicas'])})"
        )
    if cfg.api.enabled:
        fleet += f" + API ({cfg.api.name}, overflow {cfg.api.overflow})"
    return fleet


def _users_line(s: dict, cfg: Config) -> str:
    w = cfg.workload
    think = f"think {w.think_time_s:g} s {w.think_dist}" if w.think_time_s else "no think time"
    sessions = f", {_count(s['sessions'])} sessions" if s["sessions"] != s["n_requests"] else ""
    rate = s["n_requests"] / s["arrival_span_s"] if s["arrival_span_s"] else math.nan
    return f"  users      {_count(s['users'])} closed-loop ({think}){sessions}, {_fmt(rate)} req/s sent"


def _api_lines(s: dict, cfg: Config) -> list[str]:
    lines = []
    if cfg.api.enabled and s.get("n_api"):
        notes = []
        if s.get("api_tier"):
            notes.append(f"tier {s['api_tier']} at the end of the run")
        if s.get("api_tier_settled"):
            months = s.get("api_months_to_settle") or 0
            notes.append(
                f"a month of this traffic settles on {s['api_tier_settled']}"
                + (f" after {months:.0f} month{'s' if months != 1 else ''}" if months else "")
            )
        if s.get("api_warmups"):
            notes.append(f"{_count(s['api_warmups'])} warm-ups of the cold endpoint")
        if s.get("api_truncated"):
            notes.append(f"{_count(s['api_truncated'])} outputs cut at the output cap")
        if cfg.api.billing == "per_second":
            notes.append(f"{_fmt(s.get('api_billed_s', 0.0), ' s')} of execution billed")
        if notes:
            lines.append(f"  API        {'; '.join(notes)}")
    if s.get("api_cap_exceeded"):
        lines.append(
            f"  API cap    EXCEEDED: this traffic spends ${s['api_cost_per_month']:,.0f}/month on the API, over the "
            f"tier's ${s['api_monthly_cap']:,.0f}/month cap (api.monthly_cap_usd): the API would refuse requests "
            "once the month's cap is spent"
        )
    return lines


def _seed_lines(s: dict, cfg: Config, verdict: str) -> list[str]:
    def ci(key: str, fmt) -> str:
        low, high = s.get(f"{key}_ci_low"), s.get(f"{key}_ci_high")
        ok = all(v is not None and math.isfinite(v) for v in (low, high))
        return f"[{fmt(low)}, {fmt(high)}]" if ok else "n/a"

    ttft = ci("ttft_p99", lambda v: _fmt(v, " s"))
    att = ci("slo_attainment", lambda v: f"{v:.1%}")
    cost = ci("total_cost", lambda v: f"${v:.2f}")
    lines = [
        f"  seeds      {s['n_seeds']}: means above; 95% intervals: TTFT p99 {ttft}, attainment {att}, cost {cost}",
        f"             SLO {verdict} at the intervals' pessimistic end; "
        f"met by {s['slo_met_seeds']:.0%} of the seeds alone",
    ]
    how = s.get("replication", "seeds")
    if how == "block bootstrap":
        lines.append(
            f"             replications resample the trace in blocks of {cfg.workload.bootstrap_block_s:g} s "
            "(block bootstrap): the intervals show how much the answer depends on which stretches of traffic come"
        )
    elif how.startswith("fixed trace"):
        lines.append(
            "             the trace is replayed as it is in every replication: the intervals show only the "
            "simulator's own randomness, not the traffic's (set workload.bootstrap_block_s to resample it)"
        )
    return lines


def _notes(s: dict, cfg: Config) -> list[str]:
    refused = sum(v for k, v in s.items() if k.startswith("api_refusals.") and v)
    if not s["slo_met"] and refused > s.get("n_api", 0):
        return [
            f"  note       the API's limits refused requests {_count(refused)} times ({cfg.api.name}): they "
            f"{'waited to retry' if cfg.api.on_limit == 'backoff' else 'went back to the GPU queue'}; "
            "a higher tier (api=tier2 ... tier4, api=tiered) or GPUs for the overflow (fleet.replicas) lift that"
        ]
    queue = s.get("queue_mean")
    waited = not s["slo_met"] and s["n_gpu"] > 0 and queue is not None and queue > cfg.slo.ttft_s
    if waited and s.get("cold_starts") and s.get("gpu_utilization", 1.0) < 0.7:
        return [
            f"  note       requests waited for replicas to start ({_count(s['cold_starts'])} cold starts of "
            f"{_fmt(s.get('cold_start_s'), ' s')}) while the load stayed low: keep a replica warm "
            "(fleet.min_replicas) or let an API take the first requests (api=default)"
        ]
    if waited:
        return [
            "  note       requests queue longer than the TTFT SLO on average: the fleet is overloaded; add replicas "
            "(fleet.replicas), lower the load or let an API take the overflow (api=default)"
        ]
    return []


def _task(node, kept: frozenset = frozenset()):  # the Hydra task function
    """One scenario. In a multirun, a job that fails records why in its directory (error.txt) and
    returns instead of raising, so the sweep goes on and the callback counts it. Returns the
    number an optimising sweeper minimises (`sim.studies.sweep.objective`: the cost rate, with
    the SLO as a constraint)."""
    import traceback

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from sim.apps.python_api import run
    from sim.studies.run import earlier_outputs
    from sim.studies.sweep import objective

    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    if multirun:  # a job directory of a sweep run again: no earlier output survives to mix with this one
        _clear_outputs(out)
    else:
        earlier = earlier_outputs(out)
        if earlier:  # never overwrite, mix or delete what an earlier run left in a directory
            print(
                f"fleetsim: error: hydra.run.dir={out}: holds an earlier run's outputs ({', '.join(earlier[:3])}); "
                "choose another directory or move them away",
                file=sys.stderr,
            )
            sys.exit(EXIT_USAGE)
    if multirun:
        from sim.studies.sweep import stamp

        stamp(out, Path(hc.sweep.dir))  # this job belongs to the sweep that is running
    try:
        check_overrides(list(hc.overrides.task))
        result = run(node)
    except UserError as exc:
        if multirun:
            (out / "error.txt").write_text(f"{exc}\n")
            print(f"fleetsim: job {hc.job.num} failed: {exc}", file=sys.stderr)
            return objective(None)
        _discard_empty_run_dir(out, kept)
        print(f"fleetsim: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except Exception as exc:
        if not multirun:
            raise
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        (out / "error.txt").write_text(f"{type(exc).__name__}: {line}\n\n{traceback.format_exc()}")
        print(f"fleetsim: job {hc.job.num} failed: {type(exc).__name__}: {line}", file=sys.stderr)
        return objective(None)
    result.save(out)
    s = result.summary
    if multirun:
        met = "meets" if s["slo_met"] else "misses"
        print(f"fleetsim: job {hc.job.num}: ${s['total_cost']:,.2f}, {met} the SLO ({s['slo_attainment']:.1%})")
    else:
        print(format_summary(s, result.config))
        print(f"  outputs    {_shown(out)}")
    return objective(s)


def check_overrides(overrides: list[str]) -> None:
    """Overrides that compose but cannot mean what they say: emptying a mix's sources leaves the
    workload's own (default) source, which is not what the user asked for."""
    from sim.config.errors import ConfigError

    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key.endswith("workload.sources") and value.strip() in ("{}", "null", ""):
            raise ConfigError(
                "workload.sources",
                value,
                "an empty mix: name at least one source, or choose a single-source workload (workload=steady)",
            )


def _clear_outputs(out: Path) -> None:
    import shutil

    from sim.studies.run import OUTPUTS

    for name in OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _discard_empty_run_dir(out: Path, kept: frozenset = frozenset()) -> None:
    """A run stopped by bad input leaves nothing behind: Hydra's bookkeeping (.hydra/, an empty
    log) is removed, and so is the directory Hydra made for it, but never a directory that
    existed before the command (`kept`), empty or not."""
    import shutil

    if not out.is_dir():
        return
    logs = [p for p in out.iterdir() if p.suffix == ".log" and not p.stat().st_size]  # Hydra's <job>.log
    if out.resolve() in kept:
        shutil.rmtree(out / ".hydra", ignore_errors=True)
        for log in logs:
            log.unlink(missing_ok=True)
        return
    if any(p.name != ".hydra" and p not in logs for p in out.iterdir()):
        return
    shutil.rmtree(out, ignore_errors=True)


def _refuse_earlier_run(prog: str, args: Sequence[str]) -> None:
    """A single run into a directory that holds an earlier run's outputs stops before Hydra writes
    anything there: nothing of the earlier run is overwritten, mixed or deleted."""
    from sim.studies.run import earlier_outputs

    for a in args:
        key, _, value = a.partition("=")
        if key != "hydra.run.dir" or not value:
            continue
        earlier = earlier_outputs(Path(value).expanduser(), ("plan.csv", "breakeven.csv"))
        if earlier:
            print(
                f"{prog}: error: hydra.run.dir={value}: holds an earlier run's outputs ({', '.join(earlier[:3])}); "
                "choose another directory or move them away",
                file=sys.stderr,
            )
            sys.exit(EXIT_USAGE)


def _existing_dirs(args: Sequence[str]) -> frozenset:
    """Directories named by hydra.run.dir / hydra.sweep.dir that exist before the command runs."""
    found = set()
    for a in args:
        key, _, value = a.partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir") and value and Path(value).expanduser().is_dir():
            found.add(Path(value).expanduser().resolve())
    return frozenset(found)


def _one_line(exc: BaseException) -> str:
    """Hydra/OmegaConf composition errors as one line."""
    text = str(exc).strip()
    cause = exc.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text = f"{text}: {str(cause).strip()}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keep = []
    for ln in lines:
        if ln.startswith(("full_key", "object_type", "reference_type", "Config search path", "Set the environment")):
            continue
        if ln.startswith(("provider=", "pkg://", "file://")):
            continue
        keep.append(ln)
    return _list_wanted(_unknown_override(_closed_set(" ".join(keep))))[:400]


def _unknown_override(text: str) -> str:
    """Hydra's refusal of a key the schema lacks (it suggests appending it with +) as the nearest
    known key: `workload.rat: unknown key; did you mean workload.rate?`."""
    import re

    from sim.config.schema import _did_you_mean

    m = re.search(r"Could not override '([^']+)'", text)
    if not m:
        return text
    key = m.group(1)
    if key.startswith("plan."):
        from sim.studies.plan import PlanAppConfig

        hint = _did_you_mean(key, PlanAppConfig)
    else:
        hint = _did_you_mean(key)
    return f"{key}: unknown key{hint}" if hint else text


def _list_wanted(text: str) -> str:
    """A single value given where a list is wanted (`plan.gpus=h100`)."""
    import re

    m = re.search(r"override (\S+?)=(\S+): Invalid value assigned: \w+ is not a ListConfig", text)
    return f"{m.group(1)}={m.group(2)!r}: must be a list, e.g. {m.group(1)}=[{m.group(2)}]" if m else text


def _closed_set(text: str) -> str:
    """OmegaConf's refusal of a name outside an Enum's closed set, in fleetsim's words:
    `fleet.router='x': must be one of a, b`."""
    import re

    m = re.search(r"override (\S+?)=(\S*): Invalid value '([^']*)', expected one of \[([^\]]*)\]", text)
    return f"{m.group(1)}={m.group(3)!r}: must be one of {m.group(4)}" if m else text


def absolute_sweep_dir(now: datetime.datetime | None = None) -> str:
    """The default sweep directory, outputs/multirun/DATE/TIME, made absolute here, in the
    submitting process: launchers whose jobs start in another working directory (a Ray cluster's
    workers, SLURM nodes) write where the sweep callback reads."""
    now = now or datetime.datetime.now()
    return str(Path.cwd() / "outputs" / "multirun" / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S-%f"))


def _prepare_argv(argv: Sequence[str] | None, prog: str) -> frozenset:
    """sys.argv for Hydra: a single run refuses a directory an earlier run used; a sweep gets an
    absolute directory unless one is given. The directories that existed before are returned."""
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    kept = _existing_dirs(sys.argv[1:])
    if not {"-m", "--multirun"} & set(sys.argv[1:]):
        _refuse_earlier_run(prog, sys.argv[1:])
    elif not any(a.startswith("hydra.sweep.dir=") for a in sys.argv[1:]):
        sys.argv.append(f"hydra.sweep.dir={absolute_sweep_dir()}")
    return kept


def _launch(task, config_name: str, argv: Sequence[str] | None, prog: str) -> None:
    """Run a Hydra app; composition errors and bad values become one line and exit code 2."""
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from sim.apps.python_api import register_configs

    kept = _prepare_argv(argv, prog)
    register_configs()
    user_wants_trace = bool(os.environ.get("HYDRA_FULL_ERROR"))
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let composition errors reach us instead of exit(1)

    def run_task(node):
        return task(node, kept)

    run_task.__module__, run_task.__name__ = task.__module__, task.__name__  # Hydra names the job after it
    app = hydra.main(version_base="1.3", config_path=conf_dir(), config_name=config_name)(run_task)
    try:
        app()
    except (HydraException, OmegaConfBaseException, UserError) as exc:
        if user_wants_trace:
            raise
        print(f"{prog}: error: {_one_line(exc)}{_plugin_hint(str(exc))}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except OSError as exc:  # the run directory cannot be made or written (a file there, no permission, ...)
        if user_wants_trace:
            raise
        where = exc.filename or "the run directory"
        print(f"{prog}: error: {where}: cannot write ({exc.strerror or exc}); check hydra.run.dir", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except ValueError as exc:  # Hydra's own command-line checks (e.g. -m with --cfg) raise these
        if user_wants_trace or not _raised_by_hydra(exc):
            raise
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


# Hydra plugins behind the launcher and sweeper presets, and the extra that installs each
PLUGIN_EXTRAS = {
    "hydra/launcher/joblib": "joblib",
    "hydra/launcher/submitit_slurm": "slurm",
    "hydra/launcher/submitit_local": "slurm",
    "hydra/launcher/ray": "ray",
}


def _plugin_hint(message: str) -> str:
    for name, extra in PLUGIN_EXTRAS.items():
        if f"Could not load '{name}'" in message or f"Could not find '{name}'" in message:
            return f" (the plugin is not installed: pip install 'fleetsim[{extra}]')"
    return ""


def _raised_by_hydra(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}hydra{os.sep}" in tb.tb_frame.f_code.co_filename


def main(argv: Sequence[str] | None = None) -> None:
    """`fleetsim`: one scenario, or a sweep with -m."""
    _launch(_task, "config", argv, "fleetsim")


def _plan_task(node, kept: frozenset = frozenset()) -> None:  # the Hydra task function of fleetsim-plan
    """Plan or break-even for the composed workload and SLO; outputs into Hydra's run dir."""
    import time

    from hydra.core.hydra_config import HydraConfig

    from sim.apps.python_api import split_config
    from sim.studies import plan as planner

    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    try:
        check_overrides(list(hc.overrides.task))
        cfg, p = split_config(node)
        planner.validate_plan(p)
        gpus = planner.gpu_options(cfg, p, _gpu_loader(list(hc.overrides.task)))
        planner.validate_scenario(cfg, p, gpus)
        if p.submitit.folder is None:  # submitit's job files go with the plan's outputs
            p = dataclasses.replace(p, submitit=dataclasses.replace(p.submitit, folder=str(out / ".submitit")))
    except UserError as exc:
        _discard_empty_run_dir(out, kept)
        print(f"fleetsim-plan: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    t0 = time.perf_counter()
    if p.mode == "breakeven":
        df = planner.breakeven(cfg, p, gpus)
        cross, cross_no_ops = planner.crossovers(df), planner.crossovers(df, with_ops=False)
        planner.save_breakeven(out, cfg, df, cross, plots=cfg.output.plots, cross_no_ops=cross_no_ops)
        print(planner.breakeven_report(cfg, df, cross, cross_no_ops).rstrip())
        print(
            f"\n{int(df.drop_duplicates('volume')['runs'].sum())} simulations in {time.perf_counter() - t0:.0f} s; "
            f"breakeven.csv, breakeven.md, breakeven.json and plots/ in {out}"
        )
        return
    df = planner.plan(cfg, p, gpus)
    wall = time.perf_counter() - t0
    planner.save_plan(out, cfg, p, df, wall, plots=cfg.output.plots)
    print(
        f"fleetsim-plan: {cfg.model.name}, workload {cfg.workload.name}, SLO {cfg.slo.name}: "
        "cheapest SLO-meeting option per GPU and strategy"
    )
    print(planner.ranked_text(df))
    print(f"  {planner.run_count_line(df, p, wall)}")
    print(f"  plan.csv, plan.md and plots/ in {out}")


def _gpu_loader(overrides: list[str]):
    """Each GPU option of a plan composed as `fleetsim gpu=<option> <the same overrides>` would be:
    the command line's gpu.* values reach every option, and options come from every config dir on
    Hydra's search path (--config-dir), not only the packaged ones."""
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException

    from sim.apps.python_api import split_config
    from sim.config.errors import ConfigError

    keep = [o for o in overrides if not o.lstrip("+~").startswith(("gpu=", "plan.", "plan=", "hydra"))]

    def load(name: str):
        try:
            node = hydra_compose(config_name="plan", overrides=[*keep, f"gpu={name}"])
        except HydraException as exc:
            raise ConfigError("plan.gpus", name, _one_line(exc)) from None
        return split_config(node)[0].gpu

    return load


def plan_main(argv: Sequence[str] | None = None) -> None:
    """`fleetsim-plan`: the cheapest provisioning meeting the SLO (mode=plan) or the API /
    dedicated / hybrid break-even across volumes (mode=breakeven)."""
    args = list(sys.argv[1:] if argv is None else argv)
    # a mapping given whole replaces the (empty) default: Hydra would merge it key by key into a
    # struct node and refuse every new key, so it is forced in
    args = [f"++{a}" if a.startswith(DICT_KEYS) or a.startswith("plan.prices.") else a for a in args]
    _launch(_plan_task, "plan", args, "fleetsim-plan")


DICT_KEYS = ("plan.prices=",)


if __name__ == "__main__":
    main()
