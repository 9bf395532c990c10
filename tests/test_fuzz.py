"""Property-based fuzzing of bad input: config values drawn from the schema's types, extremes
included (0, negative, 1e+-30, NaN, infinities, huge integers, wrong types), and trace files with
random corruption. Each case either stops with a user error (the command line's one line and exit
code 2) or finishes a run that conserves requests and tokens; never another exception, never a
hang (a time limit per case). Seeded (in shards, so that a parallel run spreads them), with a
fixed number of examples, so CI runs the same cases every time."""

from __future__ import annotations

import dataclasses
import math
import signal
import typing
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from omegaconf.errors import OmegaConfBaseException

import sim
from sim.config.errors import UserError
from sim.config.schema import Config
from tests.conftest import ROOT

ACCEPTED = (UserError, HydraException, OmegaConfBaseException)  # what the CLI turns into one line, exit 2
SECONDS_PER_CASE = 20
# small budgets keep every case short: a run the limits allow finishes in well under a second
BASE = [
    "output.plots=false",
    "output.requests=false",
    "workload.duration_s=20",
    "workload.rate=2",
    "limits.max_requests=20000",
    "limits.max_samples=5000",
    "limits.max_ticks=100000",
    "limits.max_replicas=64",
    "limits.max_spot_preemptions=1000",
]
SKIP = {"seeds", "workload.sources", "workload.columns", "api.tiers", "limits"}


def _leaves(cls, prefix: str = "") -> list[tuple[str, type]]:
    """Every scalar key of the schema with its type."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if key in SKIP or key.split(".", maxsplit=1)[0] in SKIP:
            continue
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if args else hint
        if dataclasses.is_dataclass(base):
            out += _leaves(base, key + ".")
        elif base in (int, float, str, bool):
            out.append((key, base))
    return out


KEYS = _leaves(Config)

FLOATS = [0.0, -1.0, 1e-30, 1e30, -1e30, math.nan, math.inf, -math.inf, 0.5, 1.0, 3.0, 1e9]
INTS = [0, -1, 1, 2, 7, 2**31, 2**62, 10**18, -(2**40)]
JUNK = ["abc", "true", "[1,2]", "{a: 1}", "''", "null", "1e999", "-0"]


def _text(value) -> str:
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value == math.inf else "-inf" if value == -math.inf else repr(value))
        )
    return str(value)


@st.composite
def overrides(draw) -> list[str]:
    out = [
        draw(st.sampled_from(["fleet=fixed", "fleet=autoscaled"])),
        draw(st.sampled_from(["api=none", "api=default", "api=tier1", "api=tiered"])),
        draw(
            st.sampled_from(
                ["workload=steady", "workload=bursty", "workload=diurnal", "workload=trace", "workload=mix"]
            )
        ),
    ]
    for _ in range(draw(st.integers(1, 3))):
        key, kind = draw(st.sampled_from(KEYS))
        if kind is float:
            value = draw(st.one_of(st.sampled_from(FLOATS), st.floats(allow_nan=True, allow_infinity=True)))
        elif kind is int:
            value = draw(st.one_of(st.sampled_from(INTS), st.integers(-(2**63), 2**63)))
        elif kind is bool:
            value = draw(st.sampled_from([True, False, "maybe", 2]))
        else:
            value = draw(st.sampled_from(["x", "", "none", "fixed", "per_second", "spot", "owned", "trace"]))
        if draw(st.integers(0, 9)) == 0:  # now and then a value of the wrong type
            value = draw(st.sampled_from(JUNK))
        out.append(f"{key}={_text(value)}")
    return out


class _Timeout(Exception):
    pass


def _alarm(*_):
    raise _Timeout


def outcome(args: list[str]) -> str:
    """'refused' (a user error), or 'ran' after checking conservation; anything else fails."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS_PER_CASE)
    try:
        try:
            c = sim.compose(args)
            r = sim.run(c)
        except ACCEPTED:
            return "refused"
        except _Timeout:
            pytest.fail(f"no answer within {SECONDS_PER_CASE} s: {args}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    s, df = r.summary, r.requests
    assert s["n_gpu"] + s["n_api"] + s["n_rejected"] == s["n_requests"] == len(df), args
    served = df["route"] != "rejected"
    assert s["input_tokens"] == int(df.loc[served, "prompt_tokens"].sum()), args
    assert s["output_tokens"] == int(df.loc[served, "served_output_tokens"].sum()), args
    assert set(df["route"]) <= {"gpu", "api", "rejected"}, args
    return "ran"


SHARDS = 4  # the 400 cases in shards of their own seeds, so that a parallel run (pytest -n) spreads them


def _fuzz_shard(shard: int):
    @pytest.mark.slow
    @seed(shard)
    @settings(
        max_examples=100,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(overrides())
    def test(over):
        outcome([*BASE, *over])

    test.__name__ = test.__qualname__ = f"test_fuzzed_config_values_are_refused_or_run_and_conserve_{shard}"
    return test


for _shard in range(SHARDS):
    _t = _fuzz_shard(_shard)
    globals()[_t.__name__] = _t
del _shard, _t


LINES = (ROOT / "traces" / "synthetic_azure.csv").read_text().splitlines()[:200]


@st.composite
def corrupted(draw) -> bytes:
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["cell", "drop", "bytes", "dup", "huge", "negative", "empty", "swap"]))
        cells = lines[i].split(",")
        j = draw(st.integers(0, len(cells) - 1))
        if how == "cell":
            cells[j] = draw(st.sampled_from(["abc", "nan", "inf", "1e400", "", "1.5", "--", '"x,y"']))
        elif how == "drop":
            cells = cells[:j]
        elif how == "huge":
            cells[j] = "1e25"
        elif how == "negative":
            cells[j] = "-5"
        elif how == "empty":
            cells = [""]
        elif how == "swap" and i > 1:
            lines[i], lines[i - 1] = lines[i - 1], lines[i]
        lines[i] = ",".join(cells)
        if how == "dup":
            lines.insert(i, lines[0])
        if how == "bytes":
            return "\n".join(lines).encode() + bytes(draw(st.lists(st.integers(0, 255), min_size=1, max_size=64)))
    return ("\n".join(lines) + "\n").encode()


def _trace_shard(shard: int):
    @pytest.mark.slow
    @seed(100 + shard)
    @settings(max_examples=75, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(corrupted(), st.sampled_from(["azure", "csv", "mooncake", "burstgpt"]))
    def test(tmp_path_factory, data, fmt):
        path = Path(tmp_path_factory.mktemp("trace")) / "t.csv"
        path.write_bytes(data)
        fixed = ["workload=trace", f"workload.path={path}", f"workload.format={fmt}", "workload.duration_s=null"]
        outcome([*BASE, *fixed])

    test.__name__ = test.__qualname__ = f"test_corrupted_traces_are_refused_or_run_and_conserve_{shard}"
    return test


for _shard in range(2):  # 150 corrupted files in two shards
    _t = _trace_shard(_shard)
    globals()[_t.__name__] = _t
del _shard, _t


def test_the_fuzzer_reaches_both_outcomes():
    """A fuzzer that only ever saw refusals would prove nothing about runs."""
    assert outcome([*BASE]) == "ran"
    assert outcome([*BASE, "workload.rate=nan"]) == "refused"
    assert len(KEYS) > 100 and np.isfinite(len(KEYS))
