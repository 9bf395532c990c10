"""The planner: bracketing and bisection, agreement with an exhaustive grid, replications, the
break-even across volumes, and the fleetsim-plan command."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sim.config.errors import ConfigError
from sim.results import replication
from sim.studies import plan as planner
from sim.studies import run as runner
from tests.conftest import cfg

# ----------------------------------------------------------------------------- fixed search


@pytest.mark.parametrize("need", [1, 2, 3, 5, 8, 13, 21, 32])
def test_bracketing_and_bisection_find_the_smallest_feasible_size(monkeypatch, need):
    calls = []

    def fake_evaluate(c):
        calls.append(c.fleet.replicas)
        return {"slo_met": c.fleet.replicas >= need}

    monkeypatch.setattr(planner, "evaluate", fake_evaluate)
    log: list = []
    assert planner.search_fixed(cfg(), 32, log) == need
    assert len(calls) == len(set(calls)) == len(log)  # no size simulated twice
    assert len(calls) <= 2 * math.ceil(math.log2(need)) + 1  # O(log N), against N for a linear scan


def test_search_reports_none_when_even_the_largest_fleet_misses(monkeypatch):
    monkeypatch.setattr(planner, "evaluate", lambda c: {"slo_met": False})
    log: list = []
    assert planner.search_fixed(cfg(), 10, log) is None
    assert [r["replicas"] for r in log] == [1, 2, 4, 8, 10]


def test_hybrid_baselines_cover_the_range_below_the_fixed_answer():
    assert planner.baselines(1, 8) == []
    assert planner.baselines(5, 8) == [1, 2, 3, 4]
    b = planner.baselines(32, 8)
    assert len(b) == 8 and b[0] == 1 and b[-1] == 31 and b == sorted(set(b))
    assert planner.baselines(10, 1) == [5]  # one size allowed: the middle one
    assert planner.baselines(2, 1) == [1]


# ----------------------------------------------------------------------------- against a grid


SMALL = ("workload.duration_s=120", "workload.rate=10", "api=default")


def _grid(c, p: planner.PlanConfig) -> pd.DataFrame:
    """Every fixed fleet of 1..max_replicas, a hybrid of every such baseline with every margin,
    and the pure API: the space the planner searches, simulated point by point."""

    def row(strategy: str, gpu: str, n: int, config, margin: float | None = None) -> dict:
        return {
            "gpu": gpu,
            "tp": 1 if n else 0,
            "strategy": strategy,
            "replicas": n,
            "margin": margin,
            **planner.evaluate(config),
        }

    rows = [row("pure API", "none", 0, planner.hybrid_fleet(c, 0, "always"))]
    for gpu in p.gpus:
        g = planner.with_gpu(c, gpu, 1)
        for n in range(1, p.max_replicas + 1):
            rows.append(row("fixed", gpu, n, planner.fixed_fleet(g, n)))
            rows += [row("hybrid", gpu, n, planner.hybrid_fleet(g, n, p.overflow, m), m) for m in p.margins]
    return planner._finish(c, pd.DataFrame(rows))


@pytest.mark.slow
def test_the_planner_finds_the_grids_cheapest_feasible_point_with_fewer_runs():
    c = cfg(*SMALL)
    # at 10 req/s the cheapest point is a hybrid (one A100 and the API), beating 3 x L40S
    p = planner.PlanConfig(
        gpus=["a100-80gb", "l40s"],
        strategies=["fixed", "hybrid", "api"],
        max_replicas=6,
        margins=[1.0, 0.7, 0.5],
        workers=2,
    )
    got = planner.plan(c, p)
    grid = _grid(c, p)
    best_plan = got[got["rank"] == 1].iloc[0]
    best_grid = grid[grid["rank"] == 1].iloc[0]
    assert planner.describe(best_plan) == planner.describe(best_grid)  # GPU, strategy, size, margin
    assert best_plan["cost_per_hour"] == pytest.approx(best_grid["cost_per_hour"], rel=1e-12)
    # the per-GPU fixed answers agree with the grid's smallest feasible fleet too
    for gpu in p.gpus:
        fixed = grid[(grid.gpu == gpu) & (grid.strategy == "fixed") & grid.slo_met]
        mine = got[(got.gpu == gpu) & (got.strategy == "fixed") & got.slo_met]
        assert mine["replicas"].min() == fixed["replicas"].min()
    runs = int(got["total_cost"].notna().sum())
    assert runs < len(grid) / 2, (runs, len(grid))


@pytest.mark.slow
def test_options_that_do_not_fit_are_skipped_with_the_reason():
    c = cfg(*SMALL, "model=llama3-70b")
    p = planner.PlanConfig(gpus=["l40s", "h100"], tp=[1, 4], strategies=["fixed", "api"], max_replicas=4, workers=1)
    planner.validate_scenario(c, p)  # the base scenario (one H100, TP 1) does not fit; an option does
    with pytest.raises(ConfigError, match=r"model\.params_b"):
        planner.validate_scenario(c, dataclasses.replace(p, tp=[1]))
    df = planner.plan(c, p)
    api = df[df["strategy"] == "pure API"]
    assert len(api) == 1 and api["total_cost"].notna().all()  # runs although GPU TP 1 does not fit
    skipped = df[df["strategy"] == "does not fit"]
    assert sorted(zip(skipped.gpu, skipped.tp, strict=True)) == [("h100", 1), ("l40s", 1)]
    assert skipped["note"].str.contains("model.params_b").all()
    assert set(df.loc[df.strategy == "fixed", "tp"]) == {4}
    text = planner.report(c, p, df, 1.0)
    assert "Options skipped" in text and "l40s TP1" in text


@pytest.mark.slow
def test_replicated_plans_report_intervals_and_decide_on_the_pessimistic_end():
    c = cfg(*SMALL, "seeds=[0,1,2]")
    p = planner.PlanConfig(gpus=["l40s"], strategies=["fixed", "api"], max_replicas=6, workers=1)
    df = planner.plan(c, p)
    fixed = df[df.strategy == "fixed"]
    assert (fixed["n_seeds"] == 3).all()
    # the planner's cost rates are its own (GPU cost over the run, API cost over the arrivals),
    # and so are their intervals: each is the mean of the per-seed rates, inside its interval
    for _, r in df[df.strategy.isin(["fixed", "pure API"])].iterrows():
        assert r["cost_per_hour_ci_low"] <= r["cost_per_hour"] <= r["cost_per_hour_ci_high"]
        assert r["cost_per_mtok_ci_low"] <= r["cost_per_mtok"] <= r["cost_per_mtok_ci_high"]
    api = df[df.strategy == "pure API"].iloc[0]
    one = [
        runner.run(dataclasses.replace(planner.hybrid_fleet(c, 0, "always"), seeds=None, seed=s)).summary
        for s in (0, 1, 2)
    ]
    per_hour = [x["api_cost"] / 120 * 3600 for x in one]  # no GPUs: API cost over the 120-s window
    assert api["cost_per_hour"] == pytest.approx(sum(per_hour) / 3)
    low, high = replication.interval(per_hour)
    assert (api["cost_per_hour_ci_low"], api["cost_per_hour_ci_high"]) == pytest.approx((low, high))
    s = c.slo
    pessimistic = (
        (fixed["slo_attainment_ci_low"] >= s.attainment)
        & (fixed["ttft_slo_percentile_ci_high"] <= s.ttft_s)
        & (fixed["tpot_slo_percentile_ci_high"] <= s.tpot_s)
    )
    assert (fixed["slo_met"] == pessimistic).all()
    text = planner.report(c, p, df, 1.0)
    assert "3 seeds per run" in text and "95% intervals" in text and "[" in text


# ----------------------------------------------------------------------------- break-even


@pytest.mark.slow
def test_breakeven_api_at_low_volume_gpus_at_high_volume(tmp_path):
    c = cfg("workload.duration_s=120", "api=default")
    p = planner.PlanConfig(
        gpus=["h100", "l40s"],
        strategies=["fixed", "hybrid", "api"],
        max_replicas=16,
        margins=[1.0, 0.5],
        volumes=[0.05, 1.0, 8.0],
        workers=2,
    )
    df = planner.breakeven(c, p)
    feasible = df[df.slo_met]

    def cheapest(v):
        return feasible[feasible.volume == v].sort_values("cost_per_month").iloc[0]["option"]

    assert cheapest(0.05) == "API"
    assert cheapest(8.0) in ("dedicated", "hybrid")
    # pure API's $/M tokens is the blend of its prices, whatever the volume
    api = df[df.option == "API"]
    blend = (1000 * (0.5 * 0.10 + 0.5 * 0.05) + 250 * 0.10) / 1250  # mean prompt 1000, output 250
    assert api["cost_per_mtok"].to_numpy() == pytest.approx([blend] * 3, rel=0.05)
    cross = planner.crossovers(df)
    assert cross and cross[0]["from"] == "API"
    lo, hi = cross[0]["between_rate"]
    assert lo < cross[0]["rate"] < hi
    planner.save_breakeven(tmp_path, c, df, cross)
    saved = json.loads((tmp_path / "breakeven.json").read_text())
    assert saved["crossovers"][0]["to"] == cross[0]["to"]
    assert "Crossovers" in (tmp_path / "breakeven.md").read_text()
    assert (tmp_path / "plots" / "breakeven.png").stat().st_size > 10_000


def test_crossover_is_interpolated_where_the_cost_curves_meet():
    rows = []
    for v, api, ded in ((1.0, 0.08, 0.16), (4.0, 0.08, 0.04)):
        rows += [
            {
                "volume": v,
                "rate": 10 * v,
                "option": "API",
                "slo_met": True,
                "cost_per_mtok": api,
                "cost_per_month": api * v,
            },
            {
                "volume": v,
                "rate": 10 * v,
                "option": "dedicated",
                "slo_met": True,
                "cost_per_mtok": ded,
                "cost_per_month": ded * v,
            },
        ]
    (c,) = planner.crossovers(pd.DataFrame(rows))
    assert (c["from"], c["to"], c["exact"]) == ("API", "dedicated", True)
    # a fleet of fixed cost: its $/M falls as 1/volume (0.16 / v), so it meets the API's flat
    # $0.08 at volume 2 exactly; a straight line in $/M would have put it at 4^(2/3) = 2.52
    assert c["volume"] == pytest.approx(2.0)
    assert c["rate"] == pytest.approx(20.0)


def test_scaling_volume_scales_rates_or_the_trace_load():
    c = cfg("workload=mix")
    s = planner.scaled(c, 2.5)
    for name, src in c.workload.sources.items():
        assert s.workload.sources[name].rate == pytest.approx(2.5 * src.rate)
    assert cfg("workload.rate=4").workload.rate * 3 == planner.scaled(cfg("workload.rate=4"), 3).workload.rate


# ----------------------------------------------------------------------------- validation and CLI


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"mode": "guess"}, "plan.mode"),
        ({"gpus": []}, "plan.gpus"),
        ({"tp": [3]}, "plan.tp"),
        ({"strategies": ["cheap"]}, "plan.strategies"),
        ({"targets": [0]}, "plan.targets"),
        ({"overflow": "never"}, "plan.overflow"),
        ({"margins": [-1]}, "plan.margins"),
        ({"volumes": []}, "plan.volumes"),
        ({"workers": 0}, "plan.workers"),
        ({"backend": "k8s"}, "plan.backend"),
        ({"submitit": planner.SubmititConfig(executor="pbs")}, "plan.submitit.executor"),
        ({"submitit": planner.SubmititConfig(timeout_min=0)}, "plan.submitit.timeout_min"),
    ],
)
def test_bad_plan_values_name_the_key(change, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        planner.validate_plan(dataclasses.replace(planner.PlanConfig(), **change))


def fleetsim_plan(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from sim.apps.cli import plan_main; plan_main()", *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_fleetsim_plan_writes_the_plan(tmp_path):
    out = tmp_path / "plan"
    p = fleetsim_plan(
        "workload.duration_s=120", "plan.gpus=[h100,l40s]", "plan.max_replicas=8", f"hydra.run.dir={out}", cwd=tmp_path
    )
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(out / "plan.csv")
    assert {"gpu", "strategy", "replicas", "cost_per_month", "slo_met", "rank"} <= set(df.columns)
    top = df[df["rank"] == 1].iloc[0]
    md = (out / "plan.md").read_text()
    assert f"## Recommendation: {planner.describe(top)}" in md
    assert f"${top['cost_per_month']:,.0f} per month" in md and "Runners-up" in md
    assert "simulations" in p.stdout and "where trying every size" in p.stdout
    assert (out / "plots" / "plan.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("plan.gpus=[tpu9]",), "plan.gpus"),
        (("plan.mode=guess",), "plan.mode"),
        (("plan.tp=[3]",), "plan.tp"),
        (("plan.workers=abc",), "plan.workers"),
    ],
)
def test_fleetsim_plan_bad_input_exits_2_with_one_line(tmp_path, args, words):
    p = fleetsim_plan(*args, f"hydra.run.dir={tmp_path / 'x'}", cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], p.stderr
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- edge cases


def test_hybrid_and_api_only_plans_need_an_api():
    p = planner.PlanConfig(strategies=["api", "hybrid"])
    with pytest.raises(ConfigError, match=r"plan\.strategies"):
        planner.validate_scenario(cfg("api=none"), p)
    with pytest.raises(ConfigError, match="api"):
        planner.validate_scenario(cfg("api=none"), dataclasses.replace(p, mode="breakeven", strategies=["fixed"]))
    planner.validate_scenario(cfg("api=none"), dataclasses.replace(p, strategies=["fixed", "api"]))


@pytest.mark.parametrize("tier", ["tier1", "tier2", "tier3", "tier4"])
def test_the_api_only_candidate_runs_with_every_shipped_tier(tier):
    """The tiers hand rate-limited requests back to the GPUs; with none, they back off."""
    from sim.des.preflight import validate

    c = planner.hybrid_fleet(planner.with_gpu(cfg(f"api={tier}"), "h100", 1), 0, "always")
    validate(c)
    assert c.api.on_limit == "backoff" and c.fleet.replicas == 0


def test_a_plan_without_any_result_reports_instead_of_crashing():
    c = cfg(*SMALL)
    p = planner.PlanConfig(strategies=["api"])
    for rows in (
        [],
        [{"gpu": "none", "tp": 0, "strategy": "pure API", "replicas": 0, "slo_met": False, "note": "boom"}],
    ):
        df = planner._finish(c, pd.DataFrame(rows))
        assert df["rank"].isna().all()
        text = planner.report(c, p, df, 0.0)
        assert "No candidate meets the SLO" in text
    assert "could not run" in text and "API only: boom" in text


@pytest.mark.slow
def test_without_fixed_the_sizing_search_is_kept_but_not_ranked_and_misfits_get_no_candidates():
    c = cfg(*SMALL, "model=llama3-70b")
    p = planner.PlanConfig(gpus=["h100", "l40s"], tp=[1, 4], strategies=["hybrid"], max_replicas=4, workers=1)
    df = planner.plan(c, p)
    assert set(df["strategy"]) <= {"fixed search", "hybrid", "does not fit"}
    search = df[df.strategy == "fixed search"]
    assert len(search) > 0 and search["rank"].isna().all() and set(search["tp"]) == {4}
    assert set(df.loc[df["rank"].notna(), "strategy"]) == {"hybrid"}
    assert set(df.loc[df.strategy == "hybrid", "tp"]) == {4}  # nothing tried on options that do not fit
    line = planner.run_count_line(df, p, 1.0)
    assert f"the fixed-fleet searches took {len(search)} runs" in line


def test_a_hybrid_whose_baseline_served_nothing_is_never_recommended():
    c = cfg(*SMALL)
    base = {"gpu": "h100", "tp": 1, "slo_met": True, **_FAKE}
    rows = [
        {**base, "strategy": "hybrid", "replicas": 1, "margin": 0.5, "gpu_cost": 0.01, "api_share": 1.0},
        {**base, "strategy": "hybrid", "replicas": 1, "margin": 1.0, "gpu_cost": 0.05, "api_share": 0.3},
    ]
    df = planner._finish(c, pd.DataFrame(rows))
    assert df["rank"].tolist()[0] != df["rank"].tolist()[0]  # NaN: not ranked, though cheaper
    assert df["rank"].tolist()[1] == 1
    assert "served no request" in df.loc[0, "note"]


def test_breakeven_never_counts_a_hybrid_whose_baseline_served_nothing(monkeypatch):
    c = cfg(*SMALL)
    base = {"gpu": "h100", "tp": 1, "slo_met": True, **_FAKE}
    rows = [
        {**base, "gpu": "none", "tp": 0, "strategy": "pure API", "replicas": 0},
        {**base, "strategy": "hybrid", "replicas": 1, "margin": 0.7, "gpu_cost": 0.01, "api_share": 1.0},
        {**base, "strategy": "fixed", "replicas": 1, "gpu_cost": 0.5, "api_cost": 0.0, "api_share": 0.0},
    ]
    monkeypatch.setattr(
        planner, "plan_many", lambda cfgs, q, *_: [planner._finish(x, pd.DataFrame(rows)) for x in cfgs]
    )
    df = planner.breakeven(c, planner.PlanConfig(volumes=[1.0, 2.0]))
    assert set(df["option"]) == {"API", "dedicated"}  # no hybrid: the only one served nothing on GPUs


def test_api_only_plans_skip_the_sizing_search(monkeypatch):
    calls = []
    monkeypatch.setattr(planner, "search_fixed", lambda *a: calls.append(a))
    monkeypatch.setattr(planner, "evaluate", lambda c: {"slo_met": True, **_FAKE})
    df = planner.plan(cfg(*SMALL), planner.PlanConfig(gpus=["h100"], strategies=["api"], workers=1))
    assert calls == [] and list(df["strategy"]) == ["pure API"]
    assert planner.run_count_line(df, planner.PlanConfig(), 0.0) == "1 simulation in 0 s."


_FAKE = {
    "total_cost": 1.0,
    "gpu_cost": 0.0,
    "api_cost": 1.0,
    "tokens": 1e6,
    "sim_duration_s": 120.0,
    "slo_attainment": 1.0,
    "ttft_p99": 0.1,
    "tpot_p99": 0.01,
    "api_share": 1.0,
    "n_requests": 1200,
}


def test_plan_stages_show_a_progress_bar_only_when_wanted(monkeypatch, capsys):
    """A stage's simulations move a bar on stderr when bars are on (a terminal, or
    FLEETSIM_PROGRESS=1); off (not a terminal, or FLEETSIM_PROGRESS=0), stderr stays empty."""
    from sim.studies import backends

    monkeypatch.setenv("FLEETSIM_PROGRESS", "0")
    with backends.Mapper("local", 1) as m:
        assert m(abs, [-1, -2, -3], "candidates") == [1, 2, 3]
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("FLEETSIM_PROGRESS", "1")
    with backends.Mapper("local", 1) as m:
        assert m(abs, [-1, -2], "fixed-fleet searches") == [1, 2]
    err = capsys.readouterr().err
    assert "fleetsim-plan: fixed-fleet searches:" in err and "0/2 [" in err  # the bar, over the 2 runs
