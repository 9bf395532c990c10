"""Run directories: written so that a summary means a finished run, never mixed with or deleted
over an earlier run's files; compressed traces read by suffix (issue 15)."""

from __future__ import annotations

import gzip
import shutil

import pytest

import sim
from sim.workload.traces import read_trace
from tests.conftest import ROOT, cfg
from tests.test_cli import fleetsim


def test_a_run_into_a_directory_holding_an_earlier_run_is_refused_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    assert (
        fleetsim("workload.duration_s=20", "output.plots=false", f"hydra.run.dir={out}", cwd=tmp_path).returncode == 0
    )
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    p = fleetsim("workload.duration_s=30", "output.requests=false", f"hydra.run.dir={out}", cwd=tmp_path)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "hydra.run.dir" in p.stderr and "earlier run" in p.stderr
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before  # the earlier summary and requests are as they were


def test_bad_input_never_deletes_a_users_directory(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    p = fleetsim("workload.rate=-1", f"hydra.run.dir={mine}", cwd=tmp_path)
    assert p.returncode == 2
    assert mine.is_dir() and not any(mine.iterdir())  # Hydra's bookkeeping removed, the directory kept
    fresh = tmp_path / "fresh"
    assert fleetsim("workload.rate=-1", f"hydra.run.dir={fresh}", cwd=tmp_path).returncode == 2
    assert not fresh.exists()  # one the command made for itself is removed


def test_the_summary_is_written_last(tmp_path, monkeypatch):
    from sim.output import plots

    r = sim.run(cfg("workload.duration_s=20", "output.plots=true"))

    def broken(*_a, **_k):
        raise KeyboardInterrupt  # stopped while drawing the plots

    monkeypatch.setattr(plots, "save_all", broken)
    with pytest.raises(KeyboardInterrupt):
        r.save(tmp_path)
    assert (tmp_path / "timeseries.csv").is_file() and not (tmp_path / "summary.json").exists()
    monkeypatch.undo()
    with pytest.raises(sim.UserError, match="earlier run"):
        r.save(tmp_path, plots=False)  # the broken run's files are there: no mixing
    r.save(tmp_path, plots=False, overwrite=True)
    assert (tmp_path / "summary.json").is_file() and not (tmp_path / ".summary.json.tmp").exists()


def test_compressed_traces_are_read_by_their_suffix(tmp_path):
    import bz2
    import lzma

    for name, fmt in (("synthetic_azure.csv", "azure"), ("synthetic_mooncake.jsonl", "mooncake")):
        plain = ROOT / "traces" / name
        for suffix, module in ((".gz", gzip), (".bz2", bz2), (".xz", lzma)):
            packed = tmp_path / f"{name}{suffix}"
            with open(plain, "rb") as src, module.open(packed, "wb") as dst:
                shutil.copyfileobj(src, dst)
            a, b = read_trace(plain, fmt), read_trace(packed, fmt)
            assert (a.arrival_s == b.arrival_s).all() and (a.prompt_tokens == b.prompt_tokens).all(), suffix


def test_a_thousand_classes_work():
    rows = "".join(f"{i * 0.1:.1f},100,10,tenant{i}\n" for i in range(1000))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.csv"
        path.write_text("arrival_s,prompt_tokens,output_tokens,label\n" + rows)
        s = sim.run(
            cfg("workload=trace", f"workload.path={path}", "workload.format=csv", "workload.columns.label=label")
        ).summary
    assert s["n_requests"] == 1000 and s["n_requests.tenant999"] == 1


def test_plan_prices_by_key(tmp_path):
    from tests.test_plan import fleetsim_plan

    out = tmp_path / "plan"
    p = fleetsim_plan(
        "plan.prices.h100=1.5", "plan.gpus=[h100]", "plan.strategies=[fixed]", "plan.max_replicas=1",
        "workload.duration_s=60", "output.plots=false", f"hydra.run.dir={out}", cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "h100 $1.5 per GPU-hour" in (out / "plan.md").read_text()


def test_a_trace_path_needs_trace_arrivals():
    from sim.config.errors import ConfigError

    with pytest.raises(ConfigError, match=r"workload\.path"):
        sim.run(cfg("workload.path=traces/synthetic_azure.csv"))


def test_the_printed_outputs_path_is_as_typed(tmp_path):
    from tests.test_cli import fleetsim

    p = fleetsim("workload.duration_s=10", "output.plots=false", "hydra.run.dir=runs/one", cwd=tmp_path)
    assert p.returncode == 0 and "outputs    runs/one" in p.stdout, p.stdout


def test_an_unknown_key_in_a_python_config_suggests_the_known_one():
    from sim.config.errors import ConfigError

    with pytest.raises(ConfigError, match=r"did you mean workload\.rate\?"):
        sim.run({"workload": {"rat": 5}})
