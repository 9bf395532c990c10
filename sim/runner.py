"""`sim.run(config) -> Result`: one scenario from config to results, without Hydra.

config -> workload -> fleet (router, replicas) -> records -> requests table, time series,
summary. The command line (`sim.cli`) and the tests both call this.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import simpy

from sim.config import Config, to_config, validate
from sim.errors import UserError
from sim.fleet import ROUTE_NONE, SAMPLE_COLUMNS, Fleet
from sim.kvcache import MemoryPlan, memory_plan
from sim.metrics import json_ready, requests_frame, summarize
from sim.perf import build_perf
from sim.workload import Workload, build_workload


def config_yaml(cfg: Config) -> str:
    """The fully resolved config of a run, as YAML (the Python API's counterpart of .hydra/)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


@dataclass
class Result:
    config: Config
    summary: dict
    requests: pd.DataFrame
    timeseries: pd.DataFrame
    plan: MemoryPlan
    engine_stats: dict = field(default_factory=dict)

    def save(self, out_dir: str | Path, *, plots: bool | None = None) -> Path:
        """Write summary.json, requests.parquet, timeseries.csv and plots/ into out_dir."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(json_ready(self.summary), indent=2) + "\n")
        (out / "config.yaml").write_text(config_yaml(self.config))
        if self.config.output.requests:
            self.requests.to_parquet(out / "requests.parquet", index=False)
        self.timeseries.to_csv(out / "timeseries.csv", index=False)
        if self.config.output.plots if plots is None else plots:
            from sim import plots as plotting

            plotting.save_all(self, out / "plots")
        return out


def check_workload(wl: Workload) -> Workload:
    """A workload handed in by a caller: non-empty, sorted, non-negative, token counts >= 1."""
    import numpy as np

    n = len(wl.arrival_s)
    if n == 0:
        raise UserError("workload: no requests")
    if len(wl.prompt_tokens) != n or len(wl.output_tokens) != n:
        raise UserError("workload: arrival_s, prompt_tokens and output_tokens differ in length")
    if not np.all(np.diff(wl.arrival_s) >= 0) or wl.arrival_s[0] < 0 or not np.all(np.isfinite(wl.arrival_s)):
        raise UserError("workload: arrival_s must be finite, >= 0 and non-decreasing")
    if wl.prompt_tokens.min() < 1 or wl.output_tokens.min() < 1:
        raise UserError("workload: prompt_tokens and output_tokens must be >= 1")
    return wl


def run(config: Any, workload: Workload | None = None) -> Result:
    """Simulate one scenario. `config`: a Config, a nested dict or an OmegaConf node."""
    cfg = to_config(config)
    validate(cfg)
    wall0 = time.perf_counter()
    wl = build_workload(cfg.workload, cfg.seed) if workload is None else check_workload(workload)
    plan = memory_plan(cfg.model, cfg.gpu, cfg.engine)
    perf = build_perf(cfg.model, cfg.gpu, cfg.engine)

    env = simpy.Environment()
    fleet = Fleet(env, cfg, wl, perf, plan)
    env.run(until=fleet.finished)
    fleet.take_sample()
    end = env.now
    lost = int((fleet.records.route == ROUTE_NONE).sum())
    if lost:
        raise RuntimeError(f"{lost} request(s) ended neither served nor rejected")

    df = requests_frame(wl, fleet.records)
    ts = pd.DataFrame(fleet.samples, columns=list(SAMPLE_COLUMNS))
    n_rep = len(fleet.replicas)
    gpus = n_rep * cfg.engine.tensor_parallel_size
    gpu_cost = gpus * cfg.gpu.price_per_hour * end / 3600
    ts["cost_so_far"] = gpus * cfg.gpu.price_per_hour * (ts["time_s"] + ts["interval_s"]) / 3600
    stats = {
        "iterations": sum(r.iterations for r in fleet.replicas),
        "engine_events": sum(r.timers for r in fleet.replicas),
        "engine_batches": sum(r.segments for r in fleet.replicas),
    }
    summary = summarize(
        cfg,
        df,
        sim_duration_s=end,
        busy_s=fleet.busy_seconds(),
        occupancy_s=fleet.occupancy_seconds(),
        replica_seconds=n_rep * end,
        gpu_cost=gpu_cost,
        api_cost=0.0,
        mean_replicas=float(n_rep),
        max_replicas=n_rep,
        class_slo=wl.class_slo,
        extra={
            "gpus_per_replica": cfg.engine.tensor_parallel_size,
            "kv_tokens_per_replica": plan.kv_tokens,
            "max_model_len": plan.max_model_len,
            **stats,
        },
    )
    summary["wall_time_s"] = time.perf_counter() - wall0
    return Result(cfg, summary, df, ts, plan, stats)
