"""The Optuna preset (hydra/sweeper=cost_slo): the space means what a grid sweep means, one
objective with the SLO as a constraint, no configuration run twice, sqlite storage, and (a
benchmark) finding a grid's known optimum within 30 trials."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sim.studies.sweep import FAILED, INFEASIBLE, objective

HAS_OPTUNA = importlib.util.find_spec("optuna") is not None
needs_optuna = pytest.mark.skipif(not HAS_OPTUNA, reason="Optuna is not installed (pip install 'fleetsim[optuna]')")


def test_the_objective_is_the_cost_rate_with_the_slo_as_a_constraint():
    met = {"slo_met": True, "cost_per_hour": 5.0, "slo_attainment": 0.99}
    assert objective(met) == 5.0
    close, far = ({"slo_met": False, "cost_per_hour": 1.0, "slo_attainment": a} for a in (0.94, 0.10))
    assert 1e6 < INFEASIBLE < objective(close) < objective(far) < FAILED == objective(None)
    assert objective({**met, "api_cap_exceeded": True}) > INFEASIBLE  # over the API's monthly cap: not feasible


@needs_optuna
def test_ranges_mean_what_they_mean_in_a_grid_sweep():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from sim.apps.cost_slo_sweeper import search_space, space_size

    dims, fixed = search_space(
        ["fleet.replicas=range(1,9)", "gpu=choice(h100,l40s)", "x=range(0.5,2,0.5)", "y=interval(0.1,0.9)", "seed=3"]
    )
    replicas, gpu, x, y = (d.distribution() for d in dims)
    assert replicas == IntDistribution(1, 8)  # 9 excluded, as in a grid sweep; both ends of 1..8 sampled
    assert dims[0].values == tuple(range(1, 9))
    assert gpu == CategoricalDistribution(("h100", "l40s"))
    assert x == CategoricalDistribution((0.5, 1.0, 1.5))
    assert y == FloatDistribution(0.1, 0.9)
    assert fixed == {"seed": "3"}
    assert space_size(dims) is None and space_size(dims[:3]) == 8 * 2 * 3
    dims, _ = search_space(["fleet.replicas=range(2,17,2)", "fleet.replicas=range(1,3)"])  # the later one wins
    assert [d.values for d in dims] == [(1, 2)]
    assert search_space(["r=range(2,17,2)"])[0][0].distribution() == IntDistribution(2, 16, step=2)


@needs_optuna
def test_the_sampler_budget_is_checked():
    from sim.apps.cost_slo_sweeper import CostSloSweeperImpl
    from sim.config.errors import ConfigError

    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.n_startup_trials"):
        CostSloSweeperImpl(n_trials=10, n_startup_trials=10)


def cost_slo(sweep_dir: Path, *args: str, seed: int = 0, duration_s: int = 60) -> subprocess.CompletedProcess:
    short = (f"workload.duration_s={duration_s}", "output.plots=false", "output.requests=false")
    cmd = [sys.executable, "-m", "sim", "-m", "hydra/sweeper=cost_slo", *args, f"hydra.sweeper.seed={seed}"]
    return subprocess.run(
        [*cmd, *short, f"hydra.sweep.dir={sweep_dir}"],
        check=False,
        cwd=sweep_dir.parent,
        capture_output=True,
        text=True,
        timeout=900,
    )


@needs_optuna
@pytest.mark.slow
def test_a_small_space_runs_each_configuration_once_into_sqlite(tmp_path):
    """Six configurations and eight trials allowed: each runs once, then the search stops; the
    study is in the sqlite file (SQLAlchemy 2) and agrees with the jobs."""
    import optuna

    db = tmp_path / "study.db"
    p = cost_slo(
        tmp_path / "sweep",
        "fleet.replicas=range(1,4)",
        "gpu=choice(h100,l40s)",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.n_startup_trials=3",
        "hydra.sweeper.monotone=[]",  # nothing ruled out without running
        f"hydra.sweeper.storage=sqlite:///{db}",
    )
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(tmp_path / "sweep" / "sweep.csv")
    assert len(df) == 6 and (df["status"] == "ok").all()
    assert len(df[["fleet.replicas", "gpu"]].drop_duplicates()) == 6  # every configuration once, none twice
    assert "6 configurations simulated of 6" in p.stdout
    study = optuna.load_study(study_name="fleetsim-cost-slo", storage=f"sqlite:///{db}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 6
    assert {(t.params["fleet.replicas"], t.params["gpu"]) for t in done} == set(
        zip(df["fleet.replicas"], df["gpu"], strict=True)
    )
    best = json.loads((tmp_path / "sweep" / "sweep_best.json").read_text())
    assert best["feasible"] and study.best_value == pytest.approx(best["cost_per_hour"])


# ----------------------------------------------------------------------------- acceptance (benchmark)

SMALL = ("fleet.replicas=range(1,9)", "gpu=choice(h100,h200,l40s)")  # 24 configurations
LARGE = ("fleet.replicas=range(1,17)", "gpu=choice(h100,h200,a100-80gb,l40s)")  # 64 configurations
LOAD = ("workload.rate=40",)  # the optimum: 2 x H100 ($5.38/h); 8 x L40S ($6.32/h) and 2 x H200 ($7.18/h) next


@needs_optuna
@pytest.mark.benchmark
@pytest.mark.parametrize(
    "space",
    [
        pytest.param(SMALL, id="24"),
        pytest.param(LARGE, id="64"),
    ],
)
def test_finds_the_grids_optimum(tmp_path, space):
    """The grid's cheapest SLO-meeting configuration, found by a grid sweep of the same space,
    is what the search finds within 30 trials, in at least 4 of 5 seeds. Minutes on two cores:
    `python -m pytest -m benchmark tests/test_cost_slo.py -s`."""
    short = (*LOAD, "workload.duration_s=60", "output.plots=false", "output.requests=false")
    grid = subprocess.run(  # the same space, as a grid: choice() and range() sweep every value
        [sys.executable, "-m", "sim", "-m", *space, *short, f"hydra.sweep.dir={tmp_path / 'grid'}"],
        check=False,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert grid.returncode == 0, grid.stderr
    optimum = json.loads((tmp_path / "grid" / "sweep_best.json").read_text())
    size = len(pd.read_csv(tmp_path / "grid" / "sweep.csv"))
    assert optimum["feasible"] and size in (24, 64)
    found, runs = [], []
    for seed in range(5):
        out = tmp_path / f"seed{seed}"
        p = cost_slo(out, *space, *LOAD, "hydra.sweeper.n_trials=30", seed=seed)
        assert p.returncode == 0, p.stderr
        jobs = pd.read_csv(out / "sweep.csv")
        assert len(jobs) <= min(30, size) and len(jobs) == len(jobs[["fleet.replicas", "gpu"]].drop_duplicates())
        runs.append(len(jobs))
        best = json.loads((out / "sweep_best.json").read_text())
        found.append(
            all(best.get("overrides", {}).get(k) == optimum["overrides"][k] for k in ("fleet.replicas", "gpu"))
        )
    print(
        f"\ncost_slo found the optimum of {size} configurations within 30 trials in {sum(found)} of 5 seeds, "
        f"simulating {runs} configurations"
    )
    assert sum(found) >= 4, found


@needs_optuna
def test_a_monotone_key_rules_out_what_one_result_implies():
    """fleet.replicas declared monotone: a miss at 4 rules out 1-3 with the same GPU, a met SLO at
    6 rules out 7-8; a failed job or a key searched over an interval rules out nothing."""
    from sim.apps.cost_slo_sweeper import MonotoneRule, _key, search_space

    dims, _ = search_space(["fleet.replicas=range(1,9)", "gpu=choice(h100,l40s)", "x=interval(0,1)"])
    rule = MonotoneRule(dims, ["fleet.replicas", "x", "not.searched"])
    assert rule.keys == ("fleet.replicas",)
    seen: set = set()
    rule.apply({"fleet.replicas": 4, "gpu": "h100", "x": 0.5}, INFEASIBLE + 0.3, seen)
    assert seen == {_key({"fleet.replicas": r, "gpu": "h100", "x": 0.5}) for r in (1, 2, 3)}
    rule.apply({"fleet.replicas": 6, "gpu": "h100", "x": 0.5}, 12.0, seen)
    assert _key({"fleet.replicas": 8, "gpu": "h100", "x": 0.5}) in seen and rule.ruled_out == 5
    assert _key({"fleet.replicas": 5, "gpu": "h100", "x": 0.5}) not in seen  # between the two: still open
    rule.apply({"fleet.replicas": 6, "gpu": "l40s", "x": 0.5}, FAILED, seen)
    assert rule.ruled_out == 5


@needs_optuna
def test_the_monotone_rule_is_off_where_more_replicas_can_cost_less():
    from sim.apps.cost_slo_sweeper import monotone_off, search_space

    dims, fixed = search_space(["fleet.replicas=range(1,9)", "gpu=choice(h100,l40s)", "api=none", "fleet=fixed"])
    assert monotone_off(dims, fixed) == ""
    for extra in ("api=default", "api.overflow=always", "fleet=autoscaled", "fleet.router=prefix_aware"):
        dims, fixed = search_space(["fleet.replicas=range(1,9)", extra])
        assert monotone_off(dims, fixed).startswith(extra.split("=")[0]), extra
