"""Sweeps that aggregate themselves: sweep.csv, sweep_best.json and the plots, under the basic,
joblib and Ray launchers; failed jobs counted as failed; replications over seeds."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from sim.studies import run as runner
from sim.studies.sweep import _value, aggregate, best_job, format_table, varying
from tests.conftest import cfg

pytestmark = pytest.mark.slow

SHORT = ("workload.duration_s=120", "output.plots=false", "output.requests=false")


def multirun(sweep_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sim", "-m", *args, *SHORT, f"hydra.sweep.dir={sweep_dir}"],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def job_summaries(sweep_dir: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")}


def test_joblib_sweep_over_replicas_names_the_cheapest_feasible_job(tmp_path):
    out = tmp_path / "sweep"
    p = multirun(
        out,
        "fleet.replicas=1,2,4",
        "workload.rate=40",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(out / "sweep.csv")
    assert len(df) == 3
    assert sorted(df["fleet.replicas"]) == [1, 2, 4]
    assert (df["status"] == "ok").all()
    assert {"total_cost", "slo_met", "slo_attainment", "ttft_p99", "cost_per_mtok"} <= set(df.columns)
    # the best job, worked out independently from the jobs' own summary.json files
    summaries = job_summaries(out)
    feasible = {job: s for job, s in summaries.items() if s["slo_met"]}
    assert feasible and len(feasible) < 3, "the sweep should contain both a miss and a hit"
    cheapest = min(feasible, key=lambda job: feasible[job]["total_cost"])
    best = json.loads((out / "sweep_best.json").read_text())
    assert best["feasible"] is True
    assert best["job"] == cheapest
    assert best["total_cost"] == pytest.approx(summaries[cheapest]["total_cost"])
    assert best["overrides"]["fleet.replicas"] == df.loc[df["job"] == cheapest, "fleet.replicas"].item()
    for png in ("sweep_cost.png", "pareto.png"):
        assert (out / "plots" / png).stat().st_size > 10_000
    assert "cheapest meeting the SLO" in p.stdout


def _comparable(df: pd.DataFrame) -> pd.DataFrame:
    drop = [c for c in df.columns if c == "dir" or "wall" in c]
    return df.drop(columns=drop).sort_values("job").reset_index(drop=True)


def test_joblib_with_two_workers_gives_the_basic_launchers_values(tmp_path):
    grid = ("fleet.replicas=1,2", "gpu=h100,l40s")
    basic = multirun(tmp_path / "basic", *grid, cwd=tmp_path)
    joblib = multirun(tmp_path / "joblib", *grid, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", cwd=tmp_path)
    assert basic.returncode == 0, basic.stderr
    assert joblib.returncode == 0, joblib.stderr
    a = _comparable(pd.read_csv(tmp_path / "basic" / "sweep.csv"))
    b = _comparable(pd.read_csv(tmp_path / "joblib" / "sweep.csv"))
    assert len(a) == 4
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for job in range(4):  # and the jobs' own outputs are byte-identical
        for name in ("timeseries.csv", "replicas.csv"):
            assert (tmp_path / "basic" / str(job) / name).read_bytes() == (
                tmp_path / "joblib" / str(job) / name
            ).read_bytes()


@pytest.mark.xdist_group("ray")  # with tests/test_launchers.py's Ray tests, one worker of a parallel run
@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
    reason="the Ray launcher is not installed (pip install 'fleetsim[ray]')",
)
def test_ray_launcher_on_a_local_ray_runtime(tmp_path):
    out = tmp_path / "ray"
    p = multirun(out, "fleet.replicas=1,2", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(out / "sweep.csv")
    assert len(df) == 2 and (df["status"] == "ok").all()
    basic = multirun(tmp_path / "basic", "fleet.replicas=1,2", cwd=tmp_path)
    assert basic.returncode == 0, basic.stderr
    pd.testing.assert_frame_equal(_comparable(df), _comparable(pd.read_csv(tmp_path / "basic" / "sweep.csv")))


def test_a_failing_job_is_recorded_and_the_sweep_still_aggregates(tmp_path):
    out = tmp_path / "sweep"
    # llama3-70b (140 GB of weights) cannot load on one 48 GB L40S: those jobs fail validation
    p = multirun(out, "model=llama3-8b,llama3-70b", "gpu=l40s", "fleet.replicas=1,3", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(out / "sweep.csv")
    assert len(df) == 4
    failed = df[df["status"] == "failed"]
    assert sorted(failed["model"]) == ["llama3-70b", "llama3-70b"]
    assert failed["error"].str.contains("model.params_b").all()
    assert failed["total_cost"].isna().all()
    ok = df[df["status"] == "ok"]
    assert len(ok) == 2 and ok["total_cost"].notna().all()
    best = json.loads((out / "sweep_best.json").read_text())
    assert best["overrides"]["model"] == "llama3-8b"
    assert (out / "plots" / "sweep_cost.png").is_file()
    assert "FAILED" in p.stdout


# ----------------------------------------------------------------------------- aggregation


def _fake_job(sweep: Path, num: int, overrides: list[str], summary: dict | None, error: str | None = None) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if summary is not None:
        (job / "summary.json").write_text(json.dumps(summary))
    if error is not None:
        (job / "error.txt").write_text(error + "\n\ntraceback...\n")


def _summary(cost: float, met: bool, attainment: float) -> dict:
    return {"total_cost": cost, "slo_met": met, "slo_attainment": attainment, "ttft_p99": 0.5, "tpot_p99": 0.02}


def test_no_feasible_job_names_the_closest_miss(tmp_path):
    _fake_job(tmp_path, 0, ["fleet.replicas=1"], _summary(1.0, False, 0.50))
    _fake_job(tmp_path, 1, ["fleet.replicas=2"], _summary(2.0, False, 0.90))
    _fake_job(tmp_path, 2, ["fleet.replicas=3"], None, "ValueError: boom")
    _fake_job(tmp_path, 10, ["fleet.replicas=4"], None)  # died without a word
    df = aggregate(tmp_path, plots=True)
    assert list(df["job"]) == [0, 1, 2, 10]
    assert list(df["status"]) == ["ok", "ok", "failed", "failed"]
    assert df.loc[2, "error"] == "ValueError: boom"
    assert "did not finish" in df.loc[3, "error"]
    best = json.loads((tmp_path / "sweep_best.json").read_text())
    assert best["feasible"] is False and best["job"] == 1 and "closest" in best["reason"]
    assert (tmp_path / "plots" / "pareto.png").is_file()


@pytest.mark.parametrize("key", ["workload.rate", "workload.users"])
def test_a_load_sweep_answers_with_the_highest_load_meeting_the_slo(tmp_path, key, capsys):
    """Over the load alone the cheapest job is only the lightest load: the answer is the highest
    load that meets the SLO, and the first that misses it."""
    from omegaconf import OmegaConf

    from sim.apps.sweep_callback import SweepCallback

    for job, (load, met) in enumerate([(10, True), (40, False), (20, True), (30, True), (80, False)]):
        _fake_job(tmp_path, job, [f"{key}={load}"], {**_summary(1.0, met, 0.99 if met else 0.5), "cost_per_hour": 1.0})
    df = aggregate(tmp_path, plots=False)
    load = json.loads((tmp_path / "sweep_best.json").read_text())["highest_load_meeting_slo"]
    assert load["key"] == key and load["value"] == 30 and load["job"] == 3 and load["first_miss"] == 40
    assert load["tried"] == [10, 20, 30, 40, 80] and len(df) == 5
    SweepCallback(plots=False).on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert (
        f"highest load meeting the SLO: {key}=30 (job 3, attainment 99.0%); {key}=40 misses it"
        in capsys.readouterr().out
    )


def test_a_sweep_over_the_fleet_has_no_load_answer(tmp_path):
    _fake_job(tmp_path, 0, ["fleet.replicas=1", "workload.rate=10"], _summary(1.0, True, 0.99))
    _fake_job(tmp_path, 1, ["fleet.replicas=2", "workload.rate=20"], _summary(2.0, True, 0.99))
    aggregate(tmp_path, plots=False)
    assert "highest_load_meeting_slo" not in json.loads((tmp_path / "sweep_best.json").read_text())


def test_a_sweep_that_finds_no_job_results_fails_loudly(tmp_path, capsys):
    from omegaconf import OmegaConf

    from sim.apps.sweep_callback import SweepCallback

    for where in (tmp_path, tmp_path / "never-made"):
        with pytest.raises(SystemExit) as e:
            SweepCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(where)}}}))
        assert e.value.code == 2
        assert "no job results in" in capsys.readouterr().err


def test_the_default_sweep_directory_is_absolute(tmp_path, monkeypatch):
    import datetime

    from sim.apps.cli import absolute_sweep_dir

    monkeypatch.chdir(tmp_path)
    got = Path(absolute_sweep_dir(datetime.datetime(2026, 12, 3, 7, 8, 9, 123456)))
    assert got == tmp_path / "outputs" / "multirun" / "2026-12-03" / "07-08-09-123456" and got.is_absolute()


def test_every_job_failed(tmp_path):
    _fake_job(tmp_path, 0, ["gpu=h100"], None, "bad")
    _fake_job(tmp_path, 1, ["gpu=l40s"], None, "worse")
    df = aggregate(tmp_path, plots=True)
    assert best_job(df) == {"feasible": False, "reason": "every job failed", "jobs": 2}
    for png in ("sweep_cost.png", "pareto.png"):  # the failures are drawn, not a crash
        assert (tmp_path / "plots" / png).stat().st_size > 5_000
    assert "FAILED: bad" in format_table(df)


def test_job_directories_named_by_overrides_or_nested(tmp_path):
    """`hydra.sweep.subdir` may name jobs by their overrides, or nest them."""
    for name, replicas, cost in (("fleet.replicas=1", 1, 2.0), ("r2/1", 2, 1.0)):
        job = tmp_path / name
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"fleet.replicas={replicas}"]))
        (job / "summary.json").write_text(json.dumps(_summary(cost, True, 1.0)))
    df = aggregate(tmp_path, plots=True)
    assert sorted(df["job"]) == ["fleet.replicas=1", "r2/1"]
    best = json.loads((tmp_path / "sweep_best.json").read_text())
    assert best["job"] == "r2/1" and best["overrides"] == {"fleet.replicas": 2}


def test_a_reused_sweep_directory_counts_only_this_sweeps_jobs(tmp_path):
    from omegaconf import OmegaConf

    from sim.apps.sweep_callback import SweepCallback
    from sim.studies.sweep import stamp

    _fake_job(tmp_path, 0, ["fleet.replicas=1"], _summary(1.0, True, 1.0))
    _fake_job(tmp_path, 1, ["fleet.replicas=2"], _summary(2.0, True, 1.0))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    callback = SweepCallback(plots=False)
    callback.on_multirun_start(config)
    # the new sweep has one job, 0, which fails: Hydra rewrites its overrides, the job stamps the
    # sweep's mark and writes its verdict. The file system's clock is coarse (1-2 s on some): the
    # rewritten overrides keep the old time, and the mark alone tells the job belongs here
    overrides = tmp_path / "0" / ".hydra" / "overrides.yaml"
    old = overrides.stat().st_mtime_ns
    overrides.write_text(yaml.safe_dump(["fleet.replicas=-1"]))
    os.utime(overrides, ns=(old, old))
    stamp(tmp_path / "0", tmp_path)
    (tmp_path / "0" / "summary.json").unlink()
    (tmp_path / "0" / "error.txt").write_text("fleet.replicas=-1: must be >= 0\n")
    with pytest.raises(SystemExit) as stop:  # a sweep whose every job failed fails (issue 15)
        callback.on_multirun_end(config)
    assert stop.value.code == 2
    df = pd.read_csv(tmp_path / "sweep.csv")
    assert list(df["job"]) == [0] and list(df["status"]) == ["failed"]
    assert json.loads((tmp_path / "sweep_best.json").read_text())["reason"] == "every job failed"


def test_a_job_rerun_in_its_old_directory_leaves_no_earlier_verdict(tmp_path):
    out = tmp_path / "sweep"
    assert multirun(out, "fleet.replicas=1,2", cwd=tmp_path).returncode == 0
    p = multirun(out, "fleet.replicas=-1", cwd=tmp_path)
    assert p.returncode == 2, p.stderr  # every job of this sweep failed: the command fails (issue 15)
    df = pd.read_csv(out / "sweep.csv")
    assert len(df) == 1 and df.loc[0, "status"] == "failed" and "fleet.replicas" in df.loc[0, "error"]
    assert not (out / "0" / "summary.json").exists()
    assert "1 job directories left there by an earlier sweep" in p.stdout


def test_a_summary_cut_short_by_a_killed_job_marks_it_failed(tmp_path):
    _fake_job(tmp_path, 0, ["fleet.replicas=1"], _summary(1.0, True, 1.0))
    _fake_job(tmp_path, 1, ["fleet.replicas=2"], None)
    (tmp_path / "1" / "summary.json").write_text('{"total_cost": 1.')
    df = aggregate(tmp_path, plots=False)
    assert list(df["status"]) == ["ok", "failed"] and "unreadable" in df.loc[1, "error"]


def test_override_values_quoted_or_null_are_read_as_values():
    assert _value("'a,b'") == "a,b" and _value('"x"') == "x"
    assert _value("null") is None and _value("30") == 30 and _value("0.5") == 0.5
    df = pd.DataFrame({"job": [0, 1], "workload.duration_s": [None, 30], "gpu": ["h100", "h100"], "status": "ok"})
    assert varying(df) == ["workload.duration_s"]


# ----------------------------------------------------------------------------- replications


def test_replications_report_means_and_student_t_intervals():
    c = cfg("workload.duration_s=120", "fleet.replicas=1", "workload.rate=18", "seeds=[0,1,2,3,4]")
    r = runner.run(c)
    per = r.per_seed
    assert list(per["seed"]) == [0, 1, 2, 3, 4]
    assert r.requests["seed"].nunique() == 5
    for s, seed in zip(per.itertuples(), per["seed"], strict=True):  # each row is that seed's own run
        one = runner.run(dataclasses.replace(c, seeds=None, seed=int(seed))).summary
        assert s.total_cost == one["total_cost"] and s.ttft_p99 == one["ttft_p99"]
    t = stats.t.ppf(0.975, 4)
    for key in ("total_cost", "ttft_p99", "tpot_p99", "slo_attainment"):
        values = per[key].to_numpy()
        half = t * values.std(ddof=1) / np.sqrt(5)
        assert r.summary[key] == pytest.approx(values.mean())
        assert r.summary[f"{key}_ci_low"] == pytest.approx(max(values.mean() - half, 0.0))
        assert r.summary[f"{key}_ci_high"] == pytest.approx(
            min(values.mean() + half, 1.0 if key == "slo_attainment" else np.inf)
        )
    assert r.summary["n_seeds"] == 5


def test_feasibility_is_judged_at_the_pessimistic_end(monkeypatch):
    """Mean attainment 96.2% meets a 95% target, but with five seeds this spread puts the
    interval's low end near 92.9%: not feasible."""
    attainments = iter([0.97, 0.93, 0.99, 0.94, 0.98])
    c = cfg("seeds=[0,1,2,3,4]")

    def fake_run_one(config, workload=None):
        a = next(attainments)
        s = {
            "total_cost": 1.0,
            "cost_per_hour": 1.0,
            "cost_per_mtok": 0.1,
            "ttft_p99": 0.3,
            "tpot_p99": 0.02,
            "slo_attainment": a,
            "ttft_slo_percentile": 0.3,
            "tpot_slo_percentile": 0.02,
            "slo_met": a >= 0.95,
            "n_requests": 100,
            "n_rejected": 0,
            "wall_time_s": 0.1,
        }
        return runner.Result(config, s, pd.DataFrame({"id": [0]}), pd.DataFrame(), None)

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    s = runner.run(c).summary
    assert s["slo_attainment"] == pytest.approx(0.962)
    assert s["slo_attainment_ci_low"] == pytest.approx(
        0.962 - stats.t.ppf(0.975, 4) * np.std([0.97, 0.93, 0.99, 0.94, 0.98], ddof=1) / np.sqrt(5)
    )
    assert s["slo_attainment_ci_low"] < 0.95
    assert s["slo_met"] is False
    assert s["slo_met_seeds"] == pytest.approx(0.6)


@pytest.mark.parametrize("seeds", ["[1,1]", "[-1,2]", "[3]"])
def test_seeds_must_be_two_or_more_distinct_non_negative_integers(seeds):
    from sim.config.errors import ConfigError

    with pytest.raises(ConfigError, match="seeds"):
        runner.run(cfg(f"seeds={seeds}"))


def test_counts_some_seeds_lack_are_zero_there_and_intervals_use_the_seeds_that_measured(monkeypatch):
    """`api_refusals.<reason>` exists only for seeds that had one; a seed that served nothing has
    no latency percentile."""
    refusals = iter([1, None, 5, None, 4])
    ttft = iter([0.3, 0.5, float("nan"), 0.4, 0.6])

    def fake_run_one(config, workload=None):
        s = {
            "total_cost": 1.0,
            "cost_per_hour": 1.0,
            "cost_per_mtok": 0.1,
            "ttft_p99": next(ttft),
            "tpot_p99": 0.02,
            "slo_attainment": 1.0,
            "ttft_slo_percentile": 0.3,
            "tpot_slo_percentile": 0.02,
            "slo_met": True,
            "n_requests": 100,
            "n_rejected": 0,
            "wall_time_s": 0.1,
            "gpu_hours_by_state": {"active": 1.0 + config.seed},
        }
        r = next(refusals)
        if r is not None:  # these seeds also drew requests of a rare class
            s["api_refusals.rpm"] = r
            s["n_requests.rare"] = 2
            s["slo_attainment.rare"] = 0.5
        return runner.Result(config, s, pd.DataFrame({"id": [0]}), pd.DataFrame(), None)

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    s = runner.run(cfg("seeds=[0,1,2,3,4]")).summary
    assert s["api_refusals.rpm"] == pytest.approx(2.0)  # (1 + 0 + 5 + 0 + 4) / 5
    assert s["n_requests.rare"] == pytest.approx(1.2)  # 2 in three seeds of five, none in two
    assert s["slo_attainment.rare"] == pytest.approx(0.5)  # measured by the three that had some
    assert s["ttft_p99"] == pytest.approx(0.45)  # the four seeds that measured it
    half = stats.t.ppf(0.975, 3) * np.std([0.3, 0.5, 0.4, 0.6], ddof=1) / 2
    assert (s["ttft_p99_ci_low"], s["ttft_p99_ci_high"]) == pytest.approx((0.45 - half, 0.45 + half))
    assert s["gpu_hours_by_state"] == {"active": pytest.approx(3.0)}


# ----------------------------------------------------------------------------- presets

PRESETS = [
    ("hydra/launcher=local", "hydra.launcher", "hydra_joblib_launcher", "JoblibLauncher", "joblib"),
    ("hydra/launcher=slurm", "hydra.launcher", "hydra_submitit_launcher", "SlurmLauncher", "slurm"),
    ("hydra/launcher=ray_cluster", "hydra.launcher", "hydra_ray_launcher", "RayLauncher", "ray"),
    ("hydra/sweeper=cost_slo", "hydra.sweeper", "fleetsim_sweeper", "CostSloSweeper", "optuna"),
]


@pytest.mark.parametrize(("choice", "package", "plugin", "target", "extra"), PRESETS, ids=[p[4] for p in PRESETS])
def test_launcher_and_sweeper_presets_compose_or_name_their_extra(tmp_path, choice, package, plugin, target, extra):
    p = subprocess.run(
        [sys.executable, "-m", "sim", choice, "--cfg", "hydra", "-p", package],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if importlib.util.find_spec(f"hydra_plugins.{plugin}") is not None:
        assert p.returncode == 0, p.stderr
        assert target in p.stdout
    else:  # not installed: one line naming the extra that installs it
        assert p.returncode == 2
        assert p.stderr.strip().splitlines() == [p.stderr.strip()]
        assert f"pip install 'fleetsim[{extra}]'" in p.stderr
