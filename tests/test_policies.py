"""Policies on their own, without a simulation (milliseconds each): routers' choices, ties and
random pairs."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from sim.des.router import NOT_ROUTABLE, SLEEP_PENALTY, WAKE_PENALTY, LeastOutstanding, PowerOfTwo, RoundRobin


def _fleet(seed: int = 0):
    return SimpleNamespace(rng=np.random.default_rng(seed), cfg=None, nodes=[], blocks_of=lambda req: None)


def test_least_outstanding_takes_the_first_of_the_least_loaded():
    r = LeastOutstanding()
    assert r.choose([3, 1, 1, 2], None) == 1
    assert r.choose([WAKE_PENALTY, SLEEP_PENALTY + 0, NOT_ROUTABLE], None) == 0  # waking before asleep


def test_round_robin_cycles_over_the_best_state_only():
    r = RoundRobin()
    loads = [5, WAKE_PENALTY, 0, NOT_ROUTABLE, 9]
    assert [r.choose(loads, None) for _ in range(6)] == [0, 2, 4, 0, 2, 4]


def test_power_of_two_picks_the_less_loaded_of_a_uniform_pair():
    """Over many arrivals each unordered pair of active replicas is drawn equally often (chi-square
    at the 0.1% level, fixed seed), the chosen one is the less loaded of its pair, and replicas
    in a worse state are never drawn while an active one exists."""
    loads = [4, 1, NOT_ROUTABLE, 3, WAKE_PENALTY, 2, 0]
    active = [k for k, v in enumerate(loads) if v < WAKE_PENALTY]
    r = PowerOfTwo(_fleet(7))
    n = 30_000
    picks = Counter(r.choose(loads, None) for _ in range(n))
    assert set(picks) <= set(active)
    # with loads all distinct, a slot is chosen when drawn with a more loaded partner: the slot of
    # rank q (0 = least loaded) among m wins (m - 1 - q) of the m(m-1)/2 pairs
    m = len(active)
    order = sorted(active, key=lambda k: loads[k])
    expected = np.array([(m - 1 - q) / (m * (m - 1) / 2) * n for q in range(m)])
    observed = np.array([picks.get(k, 0) for k in order])
    keep = expected > 0  # the most loaded never wins a pair
    assert observed[~keep].sum() == 0
    assert stats.chisquare(observed[keep], expected[keep]).pvalue > 1e-3


def test_power_of_two_with_one_replica_in_the_best_state():
    r = PowerOfTwo(_fleet(1))
    loads = [NOT_ROUTABLE, SLEEP_PENALTY, 5, WAKE_PENALTY + 2]
    assert {r.choose(loads, None) for _ in range(200)} == {2}
    asleep = [SLEEP_PENALTY + 1, NOT_ROUTABLE, SLEEP_PENALTY]
    assert {r.choose(asleep, None) for _ in range(200)} == {2}  # the less loaded of the two sleepers


@pytest.mark.parametrize("seed", [0, 1])
def test_power_of_two_is_deterministic_per_seed(seed):
    loads = [3, 1, 2, 2, 0, 5]
    r1, r2 = PowerOfTwo(_fleet(seed)), PowerOfTwo(_fleet(seed))
    assert [r1.choose(loads, None) for _ in range(5000)] == [r2.choose(loads, None) for _ in range(5000)]


def test_power_of_two_when_the_best_state_is_rare():
    """Few active replicas among many: the rejection draws give up and the pair comes from the
    listed slots, still uniform: with three active of 60, each active pair appears."""
    loads = [NOT_ROUTABLE] * 57 + [2, 0, 1]
    r = PowerOfTwo(_fleet(3))
    picks = Counter(r.choose(loads, None) for _ in range(3000))
    # pairs {57,58} and {58,59} go to 58 (load 0), {57,59} to 59 (load 1): about 2:1
    assert set(picks) == {58, 59}
    assert picks[58] / 3000 == pytest.approx(2 / 3, abs=4 * (2 / 9 / 3000) ** 0.5)
