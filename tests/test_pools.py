"""Mixed pools (sim/des/pools.py): one deployment on pools of different GPU types behind one
front router. Every request once; the faster pool is never starved; a pool judged as part of its
deployment."""

from __future__ import annotations

import numpy as np
import pytest

from sim.apps.python_api import run_platform

POOLS = "{chat: [fast, slow]}"


def _platform(fast: str, slow: str, *extra: str):
    return run_platform(
        [
            "workload.duration_s=600",
            "output.plots=false",
            f"platform.deployments={{fast: [{fast}], slow: [{slow}]}}",
            f"platform.pools={POOLS}",
            *extra,
        ]
    )


def _shares(r) -> tuple[float, float, float, float]:
    s = r.summary
    return (
        s["pools.chat.share.fast"],
        s["pools.chat.share.slow"],
        s["pools.chat.capacity_share.fast"],
        s["pools.chat.capacity_share.slow"],
    )


@pytest.mark.parametrize("rate", [10, 30])
def test_every_request_ends_once_in_one_pool(rate):
    r = _platform("'gpu=h100', 'fleet.replicas=1'", "'gpu=l40s', 'fleet.replicas=2'", f"workload.rate={rate}")
    fast, slow = r.parts["fast"].requests, r.parts["slow"].requests
    ids = np.concatenate([fast["id"].to_numpy(), slow["id"].to_numpy()])
    assert len(ids) == len(set(ids)) == r.summary["pools.chat.n_requests"]
    assert sorted(ids) == list(range(len(ids)))  # every request of the workload, once
    assert r.summary["pools.chat.n_requests"] == r.summary["n_requests"]


def test_the_faster_pool_is_never_starved():
    """One H100 (about 28 req/s saturated at the chat mix) and two L40S (about 8 each): at a
    light load the H100 takes most requests (it drains its backlog soonest); near saturation the
    shares follow the pools' capacity, the H100's never under it by more than a tenth."""
    light = _platform("'gpu=h100', 'fleet.replicas=1'", "'gpu=l40s', 'fleet.replicas=2'", "workload.rate=6")
    fast, slow, cap_fast, _ = _shares(light)
    assert fast > 0.5 and fast > cap_fast
    busy = _platform("'gpu=h100', 'fleet.replicas=1'", "'gpu=l40s', 'fleet.replicas=2'", "workload.rate=30")
    fast, slow, cap_fast, cap_slow = _shares(busy)
    assert fast >= 0.9 * cap_fast and slow >= 0.5 * cap_slow
    assert busy.summary["pools.chat.slo_met"]


def test_an_autoscaled_burst_pool_at_zero_takes_the_overflow():
    """The burst pool starts with no replica: it gets requests once the base's backlog would
    keep them waiting longer than a cold start, and its autoscaler starts replicas."""
    r = _platform(
        "'gpu=h100', 'fleet.replicas=1'",
        "'gpu=l40s', 'fleet=autoscaled', 'fleet.replicas=0', 'fleet.min_replicas=0', 'fleet.max_replicas=8'",
        "workload.rate=45",
    )
    burst = r.parts["slow"].summary
    assert burst["n_requests"] > 0 and burst["cold_starts"] >= 1
    assert r.summary["pools.chat.share.fast"] > r.summary["pools.chat.capacity_share.fast"] * 0.9
    quiet = _platform(
        "'gpu=h100', 'fleet.replicas=1'",
        "'gpu=l40s', 'fleet=autoscaled', 'fleet.replicas=0', 'fleet.min_replicas=0', 'fleet.max_replicas=8'",
        "workload.rate=5",
    )
    assert quiet.parts["slow"].summary["n_requests"] == 0  # the base alone keeps up


def test_pools_of_different_models_are_refused():
    from sim.config.errors import ConfigError

    with pytest.raises(ConfigError, match=r"platform.deployments.slow: model='llama3-70b': a pool serves"):
        _platform("'gpu=h100'", "'model=llama3-70b', 'engine.tensor_parallel_size=4'")


def test_a_bad_pool_declaration_exits_2_in_one_line(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    for extra, message in (
        ("platform.pools={chat: [base, nosuch]}", "platform.pools.chat[1]='nosuch': not a deployment"),
        ("platform.pools={chat: [base]}", "platform.pools.chat=['base']: pools: at least two"),
    ):
        p = subprocess.run(
            [sys.executable, "-m", "sim", "platform=mixed_pools", extra, f"hydra.run.dir={tmp_path / 'r'}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert p.returncode == 2 and p.stderr.startswith(f"fleetsim: error: {message}"), p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
