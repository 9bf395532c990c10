"""The `fleetsim` command: a Hydra app around `sim.run`.

`fleetsim [overrides]` runs one scenario into Hydra's run directory; `fleetsim -m ...` sweeps.
Bad input (an unknown config option, a value of the wrong type, a value that fails validation)
prints one line naming the key and exits with code 2; anything else is a bug and keeps its
traceback. This module, the config store registration and the sweep callback are the only
places that import Hydra.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sim.config import Config, conf_dir, to_config
from sim.errors import UserError

EXIT_USAGE = 2


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="base_config", node=Config)


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> Config:
    """The validated-type Config the command line would build from these overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        node = hydra_compose(config_name=config_name, overrides=list(overrides))
    return to_config(node)


def _fmt(value: float, unit: str = "", digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == " s" and value >= 120:
        return f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h"
    return f"{value:.{digits}g}{unit}" if abs(value) < 10**digits else f"{value:,.0f}{unit}"


def format_summary(summary: dict, cfg: Config) -> str:
    s = summary
    slo = cfg.slo
    verdict = "MET" if s["slo_met"] else "MISSED"
    gpus = "1 GPU" if s["gpus_per_replica"] == 1 else f"{s['gpus_per_replica']} GPUs"
    f = cfg.fleet
    if f.autoscaler.name == "fixed":
        fleet = f"{f.replicas} replica{'' if f.replicas == 1 else 's'} x {gpus} {cfg.gpu.name}"
    else:
        fleet = (
            f"{f.autoscaler.name}-autoscaled {f.min_replicas}-{f.max_replicas} replicas x {gpus} {cfg.gpu.name} "
            f"(mean {s['mean_replicas']:.2f}, peak {s['max_replicas']})"
        )
    if cfg.api.enabled:
        fleet += f" + API ({cfg.api.name}, overflow {cfg.api.overflow})"
    lines = [
        f"fleetsim: {cfg.model.name} ({cfg.model.weight_dtype}), {fleet}, "
        f"workload {cfg.workload.name}: {s['sim_duration_s']:,.0f} s simulated in {s['wall_time_s']:.2f} s",
        f"  requests   {s['n_requests']} (gpu {s['n_gpu']}, api {s['n_api']}, rejected {s['n_rejected']})",
        f"  TTFT       p50 {_fmt(s['ttft_p50'], ' s')}   p99 {_fmt(s['ttft_p99'], ' s')}   (SLO {slo.ttft_s:g} s)",
        f"  TPOT       p50 {_fmt(s['tpot_p50'] and s['tpot_p50'] * 1e3, ' ms')}   "
        f"p99 {_fmt(s['tpot_p99'] and s['tpot_p99'] * 1e3, ' ms')}   (SLO {slo.tpot_s * 1e3:g} ms)",
        f"  SLO        {verdict}: attainment {s['slo_attainment']:.1%} (target {slo.attainment:.0%}, "
        f"p{slo.percentile:g})",
        f"  cost       ${s['total_cost']:.2f} (gpu ${s['gpu_cost']:.2f}, api ${s['api_cost']:.2f}), "
        f"${_fmt(s['cost_per_mtok'], '', 4)}/M tokens, ${_fmt(s['cost_per_hour'], '', 4)}/hour",
        f"  engine     occupancy {s['gpu_utilization']:.1%} (busiest of batch slots, token budget, KV cache; "
        f"100% = saturated), busy {s['gpu_busy']:.1%} of the time",
    ]
    classes = sorted({k.split(".", 1)[1] for k in s if k.startswith("slo_attainment.")})
    lines.extend(
        f"  class {name:<10s} {s[f'n_requests.{name}']} requests, attainment {s[f'slo_attainment.{name}']:.1%}, "
        f"TTFT p99 {_fmt(s[f'ttft_p99.{name}'], ' s')}"
        for name in classes
    )
    return "\n".join(lines)


def _task(node) -> None:  # the Hydra task function
    from hydra.core.hydra_config import HydraConfig

    from sim.runner import run

    out = HydraConfig.get().runtime.output_dir
    try:
        result = run(node)
    except UserError as exc:
        _discard_empty_run_dir(Path(out))
        print(f"fleetsim: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    result.save(out)
    print(format_summary(result.summary, result.config))
    print(f"  outputs    {out}")


def _discard_empty_run_dir(out: Path) -> None:
    """A run stopped by bad input leaves no directory behind (only Hydra's bookkeeping was in it)."""
    import shutil

    if not out.is_dir():
        return
    if any(p.name not in (".hydra", "fleetsim.log") for p in out.iterdir()):
        return
    log = out / "fleetsim.log"
    if log.exists() and log.stat().st_size:
        return
    shutil.rmtree(out, ignore_errors=True)


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
    return " ".join(keep)[:400]


def main(argv: Sequence[str] | None = None) -> None:
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    register_configs()
    user_wants_trace = bool(os.environ.get("HYDRA_FULL_ERROR"))
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let composition errors reach us instead of exit(1)
    app = hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")(_task)
    try:
        app()
    except (HydraException, OmegaConfBaseException, UserError) as exc:
        if user_wants_trace:
            raise
        print(f"fleetsim: error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main()
