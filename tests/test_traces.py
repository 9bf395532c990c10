"""Trace replay: readers for every format, exact timestamps, bad input, and the trace tool."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import sim
from sim.apps.python_api import to_config
from sim.apps.trace_tool import characterise, fit
from sim.apps.trace_tool import main as trace_main
from sim.config.errors import TraceError
from sim.workload.build import build_workload
from sim.workload.traces import read_trace
from tests.conftest import ROOT, cfg

EXAMPLES = {
    "azure": ROOT / "traces" / "synthetic_azure.csv",
    "burstgpt": ROOT / "traces" / "synthetic_burstgpt.csv",
    "mooncake": ROOT / "traces" / "synthetic_mooncake.jsonl",
    "csv": ROOT / "traces" / "synthetic_tenants.csv",
}


# ----------------------------------------------------------------------------- replay


def test_replayed_arrivals_equal_the_azure_timestamps(shared_dir):
    path = shared_dir / "traces" / "azure2023_conv.csv"
    raw = pd.read_csv(path)
    ns = pd.to_datetime(raw.TIMESTAMP, format="ISO8601", utc=True).dt.as_unit("ns").astype("int64").to_numpy()
    want = (ns - ns[0]) / 1e9
    r = sim.run(cfg("workload=trace", f"workload.path={path}", "fleet.replicas=3", "workload.window_end_s=600"))
    n = len(r.requests)
    assert n == int((want < 600).sum())
    assert np.array_equal(r.requests.arrival_s.to_numpy(), want[:n])
    assert np.array_equal(r.requests.prompt_tokens.to_numpy(), raw.ContextTokens.to_numpy()[:n])
    assert np.array_equal(r.requests.output_tokens.to_numpy(), raw.GeneratedTokens.to_numpy()[:n])


def test_replayed_arrivals_equal_mooncake_milliseconds(shared_dir):
    path = shared_dir / "traces" / "mooncake_conversation.jsonl"
    raw = pd.read_json(path, lines=True)
    tr = read_trace(path, "mooncake")
    assert np.array_equal(tr.arrival_s, (raw.timestamp.to_numpy() - raw.timestamp.iloc[0]) / 1000.0)
    assert np.array_equal(np.diff(tr.hash_offsets), raw.hash_ids.map(len).to_numpy())
    assert tr.hash_ids[tr.hash_offsets[7] : tr.hash_offsets[8]].tolist() == raw.hash_ids.iloc[7]


@pytest.mark.parametrize("fmt", sorted(EXAMPLES))
def test_every_format_replays_end_to_end(fmt):
    extra = ["workload.columns.label=class"] if fmt == "csv" else []
    r = sim.run(
        cfg(
            "workload=trace",
            f"workload.path={EXAMPLES[fmt]}",
            f"workload.format={fmt}",
            "workload.duration_s=600",
            "fleet.replicas=2",
            *extra,
        )
    )
    tr = read_trace(EXAMPLES[fmt], fmt, columns={"label": "class"} if fmt == "csv" else {})
    n = int((tr.arrival_s < 600).sum())
    assert r.summary["n_requests"] == n == len(r.requests)
    assert np.array_equal(r.requests.arrival_s.to_numpy(), tr.arrival_s[:n])
    if fmt == "csv":
        assert set(r.requests["class"]) == {"chat", "batch"} and "slo_attainment.batch" in r.summary


def test_azure_2024_timestamps_with_utc_offset(tmp_path):
    path = tmp_path / "conv_1week.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2024-05-10 00:00:00.009930+00:00,374,44\n"
        "2024-05-10 00:00:00.509930+00:00,396,109\n"
        "2024-05-10 00:01:40.009930+00:00,879,0\n"
    )
    with pytest.raises(TraceError, match="line 4, column 'GeneratedTokens'"):
        read_trace(path, "azure")  # Azure logs carry no zero-output requests; 0 is an error
    path.write_text(path.read_text().replace(",879,0", ",879,5"))
    tr = read_trace(path, "azure")
    assert tr.arrival_s.tolist() == [0.0, 0.5, 100.0]
    assert tr.start_weekday == 4 and tr.clock_start_s == pytest.approx(0.00993)


def test_burstgpt_failed_rows_dropped_or_kept():
    raw = pd.read_csv(EXAMPLES["burstgpt"])
    failed = int((raw["Response tokens"] == 0).sum())
    assert failed > 50
    dropped = read_trace(EXAMPLES["burstgpt"], "burstgpt")
    kept = read_trace(EXAMPLES["burstgpt"], "burstgpt", keep_failed=True)
    assert len(dropped) == len(raw) - failed and dropped.dropped_failed == failed
    assert len(kept) == len(raw) and (kept.output_tokens >= 1).all()


def test_generic_columns_and_time_units(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"ts_ms": [1000, 1500, 4000], "in": [10, 20, 30], "out": [5, 6, 7]}).to_csv(path, index=False)
    tr = read_trace(
        path, "csv", columns={"arrival_s": "ts_ms", "prompt_tokens": "in", "output_tokens": "out"}, time_unit="ms"
    )
    assert tr.arrival_s.tolist() == [0.0, 0.5, 3.0]
    pq = tmp_path / "t.parquet"
    pd.DataFrame(
        {
            "arrival_s": ["2024-01-01T10:00:00Z", "2024-01-01T10:00:02Z"],
            "prompt_tokens": [3, 4],
            "output_tokens": [1, 2],
        }
    ).to_parquet(pq)
    tr = read_trace(pq, "parquet")
    assert tr.arrival_s.tolist() == [0.0, 2.0] and tr.clock_start_s == 36_000.0


def test_out_of_order_timestamps_sorted_on_request(tmp_path, caplog):
    path = tmp_path / "t.csv"
    pd.DataFrame(
        {"arrival_s": [0.0, 2.0, 1.0, 3.0], "prompt_tokens": [1, 2, 3, 4], "output_tokens": [1, 1, 1, 1]}
    ).to_csv(path, index=False)
    with pytest.raises(TraceError, match=r"line 4.*earlier"):
        read_trace(path, "csv")
    with caplog.at_level("WARNING"):
        tr = read_trace(path, "csv", sort=True)
    assert tr.arrival_s.tolist() == [0.0, 1.0, 2.0, 3.0] and tr.prompt_tokens.tolist() == [1, 3, 2, 4]
    assert "out of order" in caplog.text


# ----------------------------------------------------------------------------- bad input


def _csv(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


BAD = {
    "missing column": ("csv", "arrival_s,prompt_tokens\n0,1\n", "column 'output_tokens'", "missing column"),
    "not a number": (
        "csv",
        "arrival_s,prompt_tokens,output_tokens\n0,1,1\n1,x7,1\n",
        "line 3, column 'prompt_tokens'",
        "not a number",
    ),
    "empty value": (
        "csv",
        "arrival_s,prompt_tokens,output_tokens\n0,1,1\n1,,1\n",
        "line 3, column 'prompt_tokens'",
        "empty",
    ),
    "NaN": (
        "csv",
        "arrival_s,prompt_tokens,output_tokens\n0,1,1\nnan,4,1\n",
        "line 3, column 'arrival_s'",
        "empty value",
    ),
    "negative tokens": (
        "csv",
        "arrival_s,prompt_tokens,output_tokens\n0,1,1\n1,5,-3\n",
        "line 3, column 'output_tokens'",
        ">= 1",
    ),
    "out of order": (
        "csv",
        "arrival_s,prompt_tokens,output_tokens\n5,1,1\n1,5,3\n",
        "line 3, column 'arrival_s'",
        "sort=true",
    ),
    "azure date": (
        "azure",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,1,1\nyesterday,1,1\n",
        "line 3, column 'TIMESTAMP'",
        "date-time",
    ),
    "jsonl syntax": (
        "mooncake",
        '{"timestamp": 0, "input_length": 5, "output_length": 2}\n{"timestamp": 3, "input_length": \n',
        "line 2",
        "JSON",
    ),
    "jsonl hash_ids": (
        "mooncake",
        '{"timestamp": 0, "input_length": 5, "output_length": 2, "hash_ids": [1]}\n'
        '{"timestamp": 3, "input_length": 5, "output_length": 2, "hash_ids": 7}\n',
        "line 2, column 'hash_ids'",
        "list",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_traces_name_file_line_and_column(tmp_path, case):
    fmt, text, where, words = BAD[case]
    path = _csv(tmp_path, "bad.jsonl" if fmt == "mooncake" else "bad.csv", text)
    with pytest.raises(TraceError) as info:
        read_trace(path, fmt)
    msg = str(info.value)
    assert msg.startswith(str(path)) and where in msg and words in msg and "\n" not in msg


def test_one_bad_row_in_ten_thousand_is_found(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "arrival_s": np.cumsum(rng.uniform(0, 1, 10_000)),
            "prompt_tokens": rng.integers(1, 900, 10_000),
            "output_tokens": rng.integers(1, 300, 10_000),
        }
    )
    df["prompt_tokens"] = df["prompt_tokens"].astype(object)
    df.loc[7316, "prompt_tokens"] = "12k"
    path = tmp_path / "big.csv"
    df.to_csv(path, index=False)
    with pytest.raises(TraceError, match=r"line 7318, column 'prompt_tokens': not a number: '12k'"):
        read_trace(path, "csv")


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "sim", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("workload.format=xml",), "synthetic_azure.csv"),
        (("workload.path=nowhere.csv",), "file not found"),
        (("workload.window_start_s=200000",), "holds no request"),
        (("workload.path={bad}", "workload.format=csv"), "line 3, column 'prompt_tokens'"),
    ],
)
def test_bad_trace_input_exits_2_with_one_line(tmp_path, args, words):
    bad = _csv(tmp_path, "bad.csv", "arrival_s,prompt_tokens,output_tokens\n0,1,1\n1,oops,1\n")
    args = tuple(a.format(bad=bad) for a in args)
    p = _cli("workload=trace", *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=ROOT)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in p.stderr


# ----------------------------------------------------------------------------- trace tool


def test_stats_match_the_published_characterisation(shared_dir):
    """shared/traces/README.md: conv 19,366 rows, 3,502 s, 5.53 req/s, IAT CV 1.09, 1-min peak/mean
    1.52; Mooncake conversation 3.40 req/s, 36.6 % of blocks seen before, 37.4 % of tokens."""
    tr = read_trace(shared_dir / "traces" / "azure2023_conv.csv", "azure")
    s = characterise(tr.arrival_s, tr.prompt_tokens, tr.output_tokens, clock_start_s=tr.clock_start_s)
    assert s["requests"] == 19_366 and round(s["span_s"]) == 3502
    assert round(s["mean_rate"], 2) == 5.53 and round(s["iat_cv"], 2) == 1.09
    assert round(s["minute_peak_to_mean"], 2) == 1.52
    assert round(s["prompt_tokens"]["mean"]) == 1155 and s["output_tokens"]["max"] == 1000
    assert np.nanargmax([r or np.nan for r in s["hour_rate"]]) in (18, 19)
    mc = read_trace(shared_dir / "traces" / "mooncake_conversation.jsonl", "mooncake")
    s = characterise(
        mc.arrival_s, mc.prompt_tokens, mc.output_tokens, offsets=mc.hash_offsets, ids=mc.hash_ids, block_tokens=512
    )
    assert round(s["mean_rate"], 2) == 3.40
    assert round(100 * s["prefix_blocks_reused"], 1) == 36.6
    assert round(100 * s["prefix_tokens_reusable"], 1) == 37.4


@pytest.mark.parametrize(("fmt", "kind"), [("azure", "diurnal"), ("burstgpt", "gamma"), ("mooncake", "gamma")])
def test_fitted_workload_reproduces_rate_and_burstiness(tmp_path, fmt, kind):
    out = tmp_path / f"fit_{fmt}.yaml"
    assert trace_main(["fit", str(EXAMPLES[fmt]), "--format", fmt, "-o", str(out)]) == 0
    import yaml

    data = yaml.safe_load(out.read_text())
    table = pd.read_csv(data["pairs"]["path"])  # the pairs in a table next to the YAML
    assert data["arrival"] == kind and len(table) == 2000
    tr = read_trace(EXAMPLES[fmt], fmt)
    want = characterise(tr.arrival_s, tr.prompt_tokens, tr.output_tokens)
    # ten times the trace's span, so sampling noise (count SD ~ cv / sqrt(n)) is far below 5 %
    cfg_ = to_config({"workload": {**data, "duration_s": 10 * data["duration_s"]}}).workload
    wl = build_workload(cfg_, 0)
    got = characterise(wl.arrival_s, wl.prompt_tokens, wl.output_tokens)
    se = want["iat_cv"] / math.sqrt(got["requests"])
    assert 3 * se <= 0.05
    assert got["mean_rate"] == pytest.approx(want["mean_rate"], rel=0.05)
    assert got["iat_cv"] == pytest.approx(want["iat_cv"], rel=0.20)
    assert got["prompt_tokens"]["p50"] == pytest.approx(want["prompt_tokens"]["p50"], rel=0.1)
    # and the fitted file runs as a workload config from the command line tool
    assert trace_main(["stats", "--workload", str(out), "--json"]) == 0


def test_fitted_pairs_in_a_table_or_inline_give_the_same_workload(tmp_path):
    """A fitted workload keeps its 2,000 length pairs in NAME.pairs.csv (composing 2,000 inline
    pairs costs seconds in every sweep job); --inline writes them into the YAML: same workload."""
    import yaml

    table, inline = tmp_path / "table" / "w.yaml", tmp_path / "inline" / "w.yaml"  # one name: one random stream
    for out, extra in ((table, []), (inline, ["--inline"])):
        assert trace_main(["fit", str(EXAMPLES["azure"]), "--format", "azure", "-o", str(out), *extra]) == 0
    a, b = (yaml.safe_load(p.read_text()) for p in (table, inline))
    assert (tmp_path / "table" / "w.pairs.csv").is_file() and "values" in b["pairs"] and "path" in a["pairs"]
    wa, wb = (build_workload(to_config({"workload": d}).workload, 3) for d in (a, b))
    assert np.array_equal(wa.prompt_tokens, wb.prompt_tokens) and np.array_equal(wa.output_tokens, wb.output_tokens)
    assert np.array_equal(wa.arrival_s, wb.arrival_s)


def test_trace_tool_errors_exit_2(tmp_path, capsys):
    assert trace_main(["stats", str(tmp_path / "none.csv"), "--format", "csv"]) == 2
    assert "file not found" in capsys.readouterr().err
    assert trace_main(["stats", str(EXAMPLES["azure"]), "--format", "weird"]) == 2


def test_fit_writes_a_valid_yaml_for_short_traces(tmp_path):
    tr = read_trace(EXAMPLES["csv"], "csv")
    cfg_ = fit(tr.arrival_s, tr.prompt_tokens, tr.output_tokens, name="x", kind="gamma", source="t")
    assert cfg_["cv"] > 1.2  # the two tenants together are bursty
    json.dumps(cfg_)  # plain data
