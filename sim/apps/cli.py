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
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sim.config.errors import UserError
from sim.config.schema import conf_dir
from sim.output.console import _s, format_platform, format_summary  # noqa: F401  (format_summary: also for tests)

EXIT_USAGE = 2


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _task(node, kept: frozenset = frozenset()):  # the Hydra task function
    """One scenario. In a multirun, a job that fails records why in its directory (error.txt) and
    returns instead of raising, so the sweep goes on and the callback counts it. Returns the
    number an optimising sweeper minimises (`sim.studies.sweep.objective`: the cost rate, with
    the SLO as a constraint)."""
    import traceback

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from sim.apps.python_api import run, run_platform_node
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
        result = run_platform_node(node, list(hc.overrides.task)) if node.platform.deployments else run(node)
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
    _print_result(result, out, hc.job.num if multirun else None)
    return objective(result.summary)


def _print_result(result, out: Path, job: int | None) -> None:
    """A sweep job's one line, or a run's summary (one deployment's, or a platform's)."""
    s = result.summary
    if job is not None:
        met = "meets" if s["slo_met"] else "misses"
        print(f"fleetsim: job {job}: ${s['total_cost']:,.2f}, {met} the SLO ({s['slo_attainment']:.1%})")
        return
    print(format_platform(s, result.platform) if hasattr(result, "parts") else format_summary(s, result.config))
    print(f"  outputs    {_shown(out)}")


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
        if isinstance(exc, ConnectionError) and "ray" in str(exc).lower():  # ray_cluster with no cluster running
            first = str(exc).strip().splitlines()[0]
            print(
                f"{prog}: error: hydra/launcher: cannot reach the cluster ({first}); start it (`ray start --head`) "
                "or choose a local launcher (hydra/launcher=local); docs/scaling.md",
                file=sys.stderr,
            )
            sys.exit(EXIT_USAGE)
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
    if cfg.platform.deployments:
        plan_platform = _disagg_plan if cfg.platform.disaggregated else _joint_plan
        plan_platform(cfg, p, list(hc.overrides.task), out, t0)
        return
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


def _joint_plan(cfg, p, overrides: list[str], out: Path, t0: float) -> None:
    """fleetsim-plan platform=NAME: each deployment planned, then the cheapest combination
    within the platform's budgets (`sim.studies.joint`)."""
    import json
    import time

    from sim.apps.python_api import platform_configs
    from sim.config.schema import validate_platform
    from sim.results.metrics import json_ready
    from sim.studies import joint
    from sim.studies import plan as planner

    try:
        if p.mode == "breakeven":
            raise UserError(
                "plan.mode=breakeven: break-even compares one deployment with an API; "
                "plan a platform with plan.mode=plan"
            )
        validate_platform(cfg.platform)
        if cfg.platform.pools:
            raise UserError(
                "platform.pools: the planner does not split a deployment between pools yet (each pool would be "
                "planned for all the traffic); compare pool sizes with fleetsim runs (docs/platforms.md)"
            )
        reach = {}
        if cfg.platform.cascade:
            if cfg.platform.escalation.kind == "class_share":
                raise UserError(
                    "platform.escalation.kind=class_share: the planner needs each tier's share of the traffic; "
                    "plan a cascade with escalation by share or confidence"
                )
            reach = joint.cascade_reach(cfg.platform)
        cfgs = platform_configs(overrides, cfg.platform, "plan")
        for tier, share in reach.items():  # each tier planned for the traffic that reaches it
            cfgs[tier] = planner.scaled(cfgs[tier], share, p.min_requests)
        gpus = planner.gpu_options(cfg, p)
        for name, c in cfgs.items():
            problem = _scenario_problem(planner, c, p, gpus)
            if problem:
                raise UserError(f"platform.deployments.{name}: {problem}")
    except UserError as exc:
        print(f"fleetsim-plan: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    tables = dict(zip(cfgs, planner.plan_many(list(cfgs.values()), p, gpus), strict=True))
    wall = time.perf_counter() - t0
    for name, df in tables.items():
        planner.save_plan(out / "deployments" / name, cfgs[name], p, df, wall, plots=cfg.output.plots)
    answer = joint.joint_plan(tables, cfg.platform, reach)
    (out / "joint_plan.json").write_text(json.dumps(json_ready(answer), indent=2) + "\n")
    text = joint.joint_report(answer)
    (out / "joint_plan.md").write_text(text)
    print(text.rstrip())
    runs = sum(len(df) for df in tables.values())
    print(f"  {runs} simulations in {wall:.0f} s; joint_plan.md, joint_plan.json and deployments/ in {out}")


def _disagg_plan(cfg, p, overrides: list[str], out: Path, t0: float) -> None:
    """fleetsim-plan platform=NAME with disaggregated deployments: each one's prefill x decode
    replica counts (`plan.disagg_replicas`, fixed fleets) simulated, the cheapest pair that meets
    the SLO chosen (`sim.studies.disagg.plan_ratio`); disagg_plan/NAME.csv and .md."""
    import time

    from sim.apps.python_api import platform_configs
    from sim.config.schema import validate_platform
    from sim.studies import disagg
    from sim.studies.platform import grouped_members

    pc = cfg.platform
    try:
        validate_platform(pc)
        others = [n for n in pc.deployments if n not in grouped_members(pc)]
        if others or pc.pools or pc.cascade or p.mode == "breakeven":
            raise UserError(
                "platform.disaggregated: plan a disaggregated deployment on its own, with plan.mode=plan (this "
                f"platform also has {', '.join(others) or 'pools, a cascade or a break-even'}); plan the others apart"
            )
        cfgs = platform_configs(overrides, pc, "plan")
    except UserError as exc:
        print(f"fleetsim-plan: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    (out / "disagg_plan").mkdir(parents=True, exist_ok=True)
    for group, dc in pc.disaggregated.items():
        df = disagg.plan_ratio(group, dc, (cfgs[dc.prefill], cfgs[dc.decode]), list(p.disagg_replicas), p.workers)
        df.to_csv(out / "disagg_plan" / f"{group}.csv", index=False)
        text = disagg.ratio_report(group, dc, df)
        (out / "disagg_plan" / f"{group}.md").write_text(text)
        print(text.rstrip())
    runs = len(p.disagg_replicas) ** 2
    print(f"  {runs} simulations per deployment in {time.perf_counter() - t0:.0f} s; disagg_plan/ in {out}")


def _scenario_problem(planner, cfg, p, gpus) -> str:
    """Why the planner cannot take this scenario ('' when it can)."""
    try:
        planner.validate_scenario(cfg, p, gpus)
    except UserError as exc:
        return str(exc)
    return ""


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
