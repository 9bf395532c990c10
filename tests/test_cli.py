"""The command line end to end: outputs, exit codes, one-line errors, the installed configs."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT

SUMMARY_KEYS = [
    "n_requests",
    "n_gpu",
    "n_api",
    "n_rejected",
    "ttft_p50",
    "ttft_p90",
    "ttft_p99",
    "tpot_p50",
    "tpot_p90",
    "tpot_p99",
    "e2e_p50",
    "e2e_p99",
    "slo_attainment",
    "slo_met",
    "gpu_cost",
    "api_cost",
    "total_cost",
    "cost_per_mtok",
    "input_tokens",
    "output_tokens",
    "gpu_utilization",
    "mean_replicas",
    "max_replicas",
    "preemptions",
    "sim_duration_s",
    "wall_time_s",
]
REQUEST_COLUMNS = [
    "id",
    "arrival_s",
    "prompt_tokens",
    "output_tokens",
    "cached_tokens",
    "route",
    "replica",
    "queue_s",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "finish_s",
    "preemptions",
]


def fleetsim(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sim", *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_default_scenario_writes_every_output(tmp_path):
    out = tmp_path / "run"
    p = fleetsim("workload.duration_s=120", f"hydra.run.dir={out}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "SLO" in p.stdout and "$/M tokens" not in p.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["n_requests"] == summary["n_gpu"] > 0
    assert summary["total_cost"] == pytest.approx(summary["gpu_cost"] + summary["api_cost"])
    tokens = summary["input_tokens"] + summary["output_tokens"]
    assert summary["cost_per_mtok"] == pytest.approx(summary["total_cost"] / tokens * 1e6)
    df = pd.read_parquet(out / "requests.parquet")
    assert list(df.columns[: len(REQUEST_COLUMNS)]) == REQUEST_COLUMNS
    assert len(df) == summary["n_requests"]
    ts = pd.read_csv(out / "timeseries.csv")
    assert {"time_s", "arrivals", "completions", "queued", "running", "kv_util", "cost_so_far"} <= set(ts.columns)
    for png in ("latency_cdf.png", "timeline.png"):
        assert (out / "plots" / png).stat().st_size > 10_000
    assert (out / ".hydra" / "config.yaml").is_file()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("gpu=tpu9",), "Could not find 'gpu/tpu9'"),
        (("workload.rate=abc",), "workload.rate"),
        (("workload.rate=-1",), "workload.rate"),
        (("nonsense=1",), "nonsense"),
        (("model=llama3-70b", "gpu=l40s"), "model.params_b"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, words):
    p = fleetsim(*args, f"hydra.run.dir={tmp_path / 'x'}", cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert words in lines[0]
    assert "Traceback" not in p.stderr


@pytest.mark.slow
def test_wheel_carries_the_configs(tmp_path):
    """An installed console script finds its configs inside the package (sim/conf)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("fleetsim-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"sim/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert shipped and shipped <= names
    assert any(n.endswith("entry_points.txt") for n in names)


@pytest.mark.parametrize(
    "over",
    [
        ("api=default", "api.overflow=always", "fleet.replicas=0"),
        ("fleet=autoscaled", "fleet.replicas=0", "fleet.min_replicas=0", "workload=bursty", "workload.duration_s=300"),
        ("workload=mix", "workload.duration_s=120", "fleet.replicas=2", "api=tier1"),
    ],
    ids=["pure-api", "scale-from-zero", "mix-with-api"],
)
def test_every_plot_renders_for_unusual_fleets(tmp_path, over):
    import sim
    from tests.conftest import cfg

    out = sim.run(cfg(*over)).save(tmp_path, plots=True)
    for png in ("latency_cdf.png", "timeline.png", "fleet.png", "cost.png"):
        assert (out / "plots" / png).stat().st_size > 10_000, png
    assert (out / "replicas.csv").is_file() and (out / "config.yaml").is_file()


def test_printed_summary_of_replications_shows_intervals_and_whole_counts():
    from sim.apps.cli import format_summary
    from sim.studies import run as runner
    from tests.conftest import cfg

    c = cfg("workload.duration_s=60", "seeds=[0,1,2]")
    r = runner.run(c)
    text = format_summary(r.summary, c)
    n = r.summary["n_requests"]
    assert f"requests   {n:,.0f} " in text or f"requests   {n:,.1f} " in text
    assert "seeds      3: means above; 95% intervals: TTFT p99 [" in text
    assert f"met by {r.summary['slo_met_seeds']:.0%} of the seeds alone" in text
    assert "overloaded" not in text


def test_printed_summary_says_when_the_fleet_is_overloaded():
    from sim.apps.cli import format_summary
    from sim.studies import run as runner
    from tests.conftest import cfg

    c = cfg("workload.duration_s=60", "workload.rate=80")
    s = runner.run(c).summary
    assert not s["slo_met"] and s["ttft_p50"] > c.slo.ttft_s
    assert "the fleet is overloaded" in format_summary(s, c)


def test_printed_summary_judges_at_the_slo_percentile_and_says_what_missed():
    """The SLO is judged at its percentile (p95 by default): the console shows that percentile
    next to p50 and p99, says which of TTFT and TPOT missed, and lists the events that moved
    latency (cold starts, KV preemptions, API refusals)."""
    from sim.apps.cli import _s, format_summary
    from sim.studies import run as runner
    from tests.conftest import cfg

    c = cfg("workload.duration_s=60", "workload.rate=80")
    s = runner.run(c).summary
    text = format_summary(s, c)
    assert f"p95 {_s(s['ttft_slo_percentile'])}   p99" in text and "(SLO 1 s at p95)" in text
    assert f"missed: TTFT p95 {_s(s['ttft_slo_percentile'])} > 1 s" in text
    assert ("TPOT p95" in text.split("missed:")[1]) == (s["tpot_slo_percentile"] > c.slo.tpot_s)
    if s["preemptions"]:
        assert f"{s['preemptions']:,} KV-cache preemptions" in text

    c = cfg("workload.duration_s=60", "slo.percentile=99")
    text = format_summary(runner.run(c).summary, c)
    assert "p95" not in text and "missed" not in text  # p99 shown once; a met SLO misses nothing

    # a pure-API run on tier 1: the refusals of its rate limit are counted and explained
    c = cfg("workload.duration_s=60", "api=tier1", "fleet.replicas=0", "api.overflow=always", "api.on_limit=backoff")
    s = runner.run(c).summary
    text = format_summary(s, c)
    assert s["api_refusals.rpm"] > 0 and f"{s['api_refusals.rpm']:,} API refusals (rpm)" in text
    assert "the API's limits refused requests" in text and "  GPUs " not in text
