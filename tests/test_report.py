"""report.md: the question, the answer, the figures and the caveats of a run and of a sweep,
the same bytes for the same config and seed."""

from __future__ import annotations

import json

import sim
from tests.conftest import cfg
from tests.test_sweep import _fake_job, _summary


def _report(tmp_path, name: str, *over: str) -> str:
    out = sim.run(cfg("workload.duration_s=120", *over)).save(tmp_path / name)
    return (out / "report.md").read_text()


def test_a_run_report_asks_answers_and_warns(tmp_path):
    text = _report(tmp_path, "a", "workload.rate=5")
    for section in ("## The question", "## The answer", "## Figures", "## Caveats"):
        assert section in text
    assert "**SLO met**" in text and "/month at this traffic" in text
    assert "extrapolates 2.0 min of traffic" in text  # a short run's month is an extrapolation
    assert "One seed" in text
    assert text == _report(tmp_path, "b", "workload.rate=5")  # no wall time, no date: the same bytes


def test_a_missed_slo_says_what_missed_and_flags_saturation(tmp_path):
    text = _report(tmp_path, "a", "workload.rate=60", "gpu=l40s")
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert not summary["slo_met"]
    assert "**SLO missed**" in text and "missed: " in text
    assert "l40s is scaled from its specifications" in text
    assert summary["gpu_utilization"] > 0.8 and "near saturation" in text  # 60 req/s overloads one L40S


def test_a_sweep_report_names_the_cheapest_and_the_edge_of_the_range(tmp_path):
    for job, (replicas, cost, met) in enumerate([(1, 1.0, False), (2, 2.0, True), (3, 3.0, True)]):
        summary = {**_summary(cost, met, 0.99 if met else 0.5), "cost_per_hour": cost, "cost_per_month": cost * 730}
        _fake_job(tmp_path / "s", job, [f"fleet.replicas={replicas}"], summary)
    _fake_job(tmp_path / "s", 3, ["fleet.replicas=4"], None, "ValueError: boom")
    sim.studies.sweep.aggregate(tmp_path / "s", plots=False)
    text = (tmp_path / "s" / "report.md").read_text()
    assert "Which of 4 configurations, over `fleet.replicas` (1, 2, 3, 4)" in text
    assert "**fleet.replicas=2** (job 1) at **$2.00/hour**" in text
    assert "| 4 | failed |" in text and "1 job(s) failed" in text
    assert "low end" not in text  # 1 was tried and missed: the answer is not at the edge
    _fake_job(tmp_path / "t", 0, ["fleet.replicas=2"], {**_summary(2.0, True, 0.99), "cost_per_hour": 2.0})
    _fake_job(tmp_path / "t", 1, ["fleet.replicas=3"], {**_summary(3.0, True, 0.99), "cost_per_hour": 3.0})
    sim.studies.sweep.aggregate(tmp_path / "t", plots=False)
    assert "low end of the swept `fleet.replicas` (2)" in (tmp_path / "t" / "report.md").read_text()


def test_a_load_sweep_report_answers_with_the_highest_load(tmp_path):
    for job, (load, met) in enumerate([(10, True), (20, True), (40, False)]):
        _fake_job(tmp_path, job, [f"workload.rate={load}"], {**_summary(1.0, met, 0.99), "cost_per_hour": 1.0})
    sim.studies.sweep.aggregate(tmp_path, plots=False)
    text = (tmp_path / "report.md").read_text()
    assert "What is the highest load that meets the SLO" in text
    assert "**workload.rate=20** meets the SLO (job 1, attainment 99.0%); workload.rate=40 misses it" in text


def test_a_progress_bar_changes_no_output(tmp_path, monkeypatch, capsys):
    """The bar's ticker reads the clock between the fleet's events: with it on, every request's
    record and every summary number (but the wall time) are what they are with it off."""
    over = ("workload.duration_s=120", "workload.rate=20", "fleet=autoscaled")
    monkeypatch.setenv("FLEETSIM_PROGRESS", "0")
    off = sim.run(cfg(*over))
    monkeypatch.setenv("FLEETSIM_PROGRESS", "1")
    on = sim.run(cfg(*over))
    assert "fleetsim: simulated" in capsys.readouterr().err  # the bar ran
    assert on.requests.equals(off.requests)
    assert {k: v for k, v in on.summary.items() if k != "wall_time_s"} == {
        k: v for k, v in off.summary.items() if k != "wall_time_s"
    }
