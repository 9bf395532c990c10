"""Multi-turn sessions replayed from a trace (workload=trace workload.format=sessions): each turn
arrives after the previous one's answer plus its think time, the conversation is a growing
prefix the prefix cache sees, every turn sent ends served or rejected, a rejected turn ends its
session, and malformed session traces stop with one line naming the file, the line and the
column. The traces are small files the tests write; the replay has no randomness."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sim
from sim.config.errors import ConfigError, TraceError
from sim.workload.traces import read_sessions, read_trace
from tests.conftest import ROOT

HEADER = "session_id,turn,timestamp,prompt_tokens,output_tokens,think_time_s\n"


def session_trace(path: Path, sessions: int = 12, turns: int = 5, *, gap_s: float = 0.7) -> Path:
    """`sessions` chats of `turns` turns, starting `gap_s` apart: a 1000-token first prompt,
    200-token answers and 150 new tokens a turn, so turn t+1's prompt is turn t's prompt and
    answer plus the new message. Think times vary by turn; turn 3 leaves its cell empty (the
    workload's default applies); later turns carry a timestamp the replay must ignore."""
    rows = []
    for s in range(sessions):
        prompt = 1000
        for t in range(1, turns + 1):
            stamp = f"{s * gap_s:.3f}" if t == 1 else ("0" if t == 4 else "")
            think = "" if t in (1, 3) else f"{0.5 * t:g}"
            rows.append((f"chat-{s}", t, stamp, prompt, 200, think))
            prompt += 200 + 150
    # interleave the sessions as a log would (by turn, then session): file order within a session holds
    rows.sort(key=lambda r: (r[1], r[0]))
    path.write_text(HEADER + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def replay(path: Path, *overrides: str) -> sim.Result:
    return sim.run(
        sim.compose(
            [
                "workload=trace",
                "workload.format=sessions",
                f"workload.path={path}",
                "workload.think_time_s=2.5",
                "output.requests=true",
                "output.plots=false",
                "seed=7",
                *overrides,
            ]
        )
    )


def consecutive(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each session's turns in turn order: (turn t rows, turn t+1 rows), aligned."""
    df = df.sort_values(["session", "turn"])
    same = df["session"].to_numpy()[1:] == df["session"].to_numpy()[:-1]
    return df.iloc[:-1][same], df.iloc[1:][same]


# ----------------------------------------------------------------------------- arrivals


def test_a_turn_arrives_after_the_previous_answer_plus_its_think_time(tmp_path):
    path = session_trace(tmp_path / "s.csv")
    df = replay(path, "fleet.replicas=1", "engine.max_num_seqs=4").requests
    assert len(df) == 12 * 5 and (df["route"] == "gpu").all()
    before, after = consecutive(df)
    np.testing.assert_array_equal(after["turn"].to_numpy(), before["turn"].to_numpy() + 1)
    gap = after["arrival_s"].to_numpy() - before["finish_s"].to_numpy()
    # the trace's think time, or the workload's 2.5 s where turn 3's cell is empty
    think = np.where(after["turn"].to_numpy() == 3, 2.5, 0.5 * after["turn"].to_numpy())
    np.testing.assert_allclose(gap, think, rtol=0, atol=1e-9)
    assert (after["arrival_s"].to_numpy() >= before["finish_s"].to_numpy() + think - 1e-9).all()
    # each first turn at its session's timestamp (turn 4's "0" is ignored); ids are the trace's
    first = df[df["turn"] == 1].sort_values("session")
    np.testing.assert_allclose(first["arrival_s"].to_numpy(), 0.7 * np.arange(12), atol=1e-9)
    assert first["session_id"].tolist() == [f"chat-{s}" for s in range(12)]


def test_a_slower_fleet_delays_the_later_turns(tmp_path):
    """Closed loop: the fleet's speed sets when later turns arrive (an open-loop replay would not move them)."""
    path = session_trace(tmp_path / "s.csv")
    fast = replay(path, "fleet.replicas=2").requests
    slow = replay(path, "fleet.replicas=1", "engine.max_num_seqs=1").requests
    last = [d[d["turn"] == 5]["arrival_s"].mean() for d in (fast, slow)]
    assert last[1] > last[0] + 1.0, last


# ----------------------------------------------------------------------------- prefix caching


def test_the_prefix_hit_rate_grows_with_the_turn(tmp_path):
    """Turn t finds turns 1..t-1 (prompts and answers, in whole 16-token blocks) in the cache of
    the replica the prefix-aware router keeps its session on: the cached share of the prompt
    grows with t. A first turn shares nothing."""
    path = session_trace(tmp_path / "s.csv")
    r = replay(path, "engine.prefix_caching=true", "fleet.replicas=3", "fleet.router=prefix_aware")
    df = r.requests
    share = (df["cached_tokens"] / df["prompt_tokens"]).groupby(df["turn"]).mean()
    assert share.loc[1] == 0
    assert share.loc[1] < share.loc[2] < share.loc[3] < share.loc[4] < share.loc[5], share
    before, after = consecutive(df)
    expect = (before["prompt_tokens"].to_numpy() + before["output_tokens"].to_numpy() - 1) // 16 * 16
    np.testing.assert_array_equal(after["cached_tokens"].to_numpy(), expect)
    assert r.summary["prefix_block_hit_rate"] > 0.7
    # without prefix caching, nothing is cached
    assert replay(path, "engine.prefix_caching=false").requests["cached_tokens"].sum() == 0


def test_a_shorter_prompt_caps_the_shared_prefix(tmp_path):
    """A turn whose prompt is shorter than the conversation so far (history trimmed) shares its
    whole prompt but the last partial block; the next turn shares only up to that point and its
    own answer, not the dropped tail."""
    path = tmp_path / "trim.csv"
    path.write_text(HEADER + "a,1,0,1000,200,\na,2,,600,100,1\na,3,,800,50,1\n")
    df = replay(path, "engine.prefix_caching=true", "fleet.replicas=1").requests.sort_values("turn")
    assert df["cached_tokens"].tolist() == [0, 600 // 16 * 16, (600 + 100 - 1) // 16 * 16]


# ----------------------------------------------------------------------------- conservation


def test_every_turn_ends_served_or_rejected_and_a_rejection_ends_its_session(tmp_path):
    """Every turn sent ends on a GPU, at the API or rejected; a session whose turn is rejected
    (a prompt beyond the context) sends no more turns, which the summary counts as unsent."""
    path = session_trace(tmp_path / "s.csv", sessions=6, turns=3)
    text = path.read_text().replace("chat-2,2,,1350,", "chat-2,2,,900000,")
    path.write_text(text)
    r = replay(
        path,
        "api=default",
        "api.overflow=queue",
        "api.queue_threshold=1",
        "api.tpm=200000",  # the huge prompt is beyond the API's tokens per minute: back to the GPU
        "fleet.replicas=1",
        "engine.max_num_seqs=1",
        "workload.think_time_s=0",
    )
    df, s = r.requests, r.summary
    assert set(df["route"]) == {"gpu", "api", "rejected"}
    assert s["n_gpu"] + s["n_api"] + s["n_rejected"] == s["n_requests"] == len(df)
    assert (df["route"] == "rejected").sum() == 1
    chat2 = df[df["session_id"] == "chat-2"].sort_values("turn")
    assert chat2["turn"].tolist() == [1, 2] and chat2["route"].iloc[-1] == "rejected"
    assert s["turns_unsent"] == 1 and len(df) == 6 * 3 - 1
    assert s["sessions"] == 6


def test_duration_stops_the_sessions(tmp_path):
    path = session_trace(tmp_path / "s.csv")
    s = replay(path, "workload.duration_s=4").summary
    assert 0 < s["turns_unsent"] < 60 and s["n_requests"] + s["turns_unsent"] == 60


def test_the_replay_is_deterministic(tmp_path):
    path = session_trace(tmp_path / "s.csv")
    a, b = (replay(path, "engine.prefix_caching=true").requests for _ in range(2))
    pd.testing.assert_frame_equal(a, b)


# ----------------------------------------------------------------------------- reading


def test_the_reader_groups_turns_by_session_in_start_order(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(HEADER + "b,1,5,10,1,\na,0,3,20,2,\nb,2,,30,3,4\na,7,,40,4,\n")
    tr = read_sessions(path)
    assert tr.session_id.tolist() == ["a", "b"] and tr.start_s.tolist() == [0.0, 2.0]
    assert tr.offsets.tolist() == [0, 2, 4] and tr.turn.tolist() == [0, 7, 1, 2]  # gaps in numbering are fine
    assert tr.prompt_tokens.tolist() == [20, 40, 10, 30]
    # as a flat trace (fleetsim-trace, pairs): turns at their own times, or the previous turn's plus think
    flat = read_trace(path, "sessions")
    assert flat.arrival_s.tolist() == [0.0, 0.0, 2.0, 6.0] and flat.prompt_tokens.tolist() == [20, 40, 10, 30]


def test_the_example_sessions_replay():
    """workload=sessions replays traces/synthetic_sessions.csv: every turn, and with prefix
    caching most of each later turn's prompt comes from the cache."""
    rows = len(pd.read_csv(ROOT / "traces" / "synthetic_sessions.csv"))
    r = sim.run(
        sim.compose(
            [
                "workload=sessions",
                "engine.prefix_caching=true",
                "fleet.router=prefix_aware",
                "fleet.replicas=2",
                "output.plots=false",
            ]
        )
    )
    assert r.summary["n_requests"] == rows and r.summary["turns_unsent"] == 0
    assert r.summary["sessions"] == r.requests["session_id"].nunique() > 100
    assert r.summary["prefix_block_hit_rate"] > 0.5


def test_mooncake_traces_carry_no_session_id():
    """The shipped Mooncake traces have no session field: only the sessions CSV replays sessions."""
    shared = ROOT.parent / "shared" / "traces" / "mooncake_conversation.jsonl"
    if not shared.exists():
        pytest.skip("../shared/traces is absent")
    import json

    with shared.open() as fh:
        keys = set().union(*(json.loads(line) for _, line in zip(range(200), fh, strict=False)))
    assert keys == {"timestamp", "input_length", "output_length", "hash_ids"}


def test_sessions_cannot_be_a_source_of_a_mix_or_be_transformed(tmp_path):
    path = session_trace(tmp_path / "s.csv")
    with pytest.raises(ConfigError, match=r"workload\.rate_scale"):
        replay(path, "workload.rate_scale=2")
    with pytest.raises(ConfigError, match=r"workload\.think_time_s"):
        replay(path, "workload.think_time_s=-1")
    mix = {"sources": {"chat": {"arrival": "trace", "path": str(path), "format": "sessions"}}}
    with pytest.raises(ConfigError, match=r"workload\.sources\.chat\.format"):
        sim.run({"workload": mix})


BAD = {
    "out-of-order": ("a,1,0,100,10,\na,3,,200,10,\na,2,,300,10,\n", ("line 4", "'turn'", "after its turn 3")),
    "duplicate": ("a,1,0,100,10,\nb,1,1,100,10,\na,1,,200,10,\n", ("line 4", "'turn'", "again")),
    "no-first-timestamp": ("a,1,0,100,10,\nb,1,,100,10,\nb,2,,200,10,\n", ("line 3", "'timestamp'", "'b'")),
    "negative-think": ("a,1,0,100,10,\na,2,,200,10,-1\n", ("line 3", "'think_time_s'", "negative")),
    "fractional-tokens": ("a,1,0,100,10,\na,2,,200.5,10,\n", ("line 3", "'prompt_tokens'", "whole number")),
    "bad-turn": ("a,x,0,100,10,\n", ("line 2", "'turn'", "not a number")),
    "missing-column": (None, ("'session_id'", "missing column")),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_a_malformed_session_trace_exits_2_with_one_line(tmp_path, case):
    body, words = BAD[case]
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + body if body is not None else "turn,timestamp,prompt_tokens,output_tokens\n1,0,5,5\n")
    with pytest.raises(TraceError):
        read_sessions(path)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "sim",
            "workload=trace",
            "workload.format=sessions",
            f"workload.path={path}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's package, wherever the cwd is
    )
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for word in (str(path), *words):
        assert word in lines[0], (word, lines[0])
