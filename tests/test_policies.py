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


def test_power_of_two_draws_pairs_uniformly_from_the_best_state():
    """Every unordered pair of active replicas is drawn equally often (chi-square at the 0.1%
    level, fixed seed); replicas in a worse state never are while an active one exists."""
    loads = [4, 1, NOT_ROUTABLE, 3, WAKE_PENALTY, 2, 0]
    active = [k for k, v in enumerate(loads) if v < WAKE_PENALTY]
    r = PowerOfTwo(_fleet(7))
    n = 30_000
    pairs = Counter(tuple(sorted(r.pair(loads))) for _ in range(n))
    expected_pairs = {(a, b) for a in active for b in active if a < b}
    assert set(pairs) == expected_pairs
    assert stats.chisquare(list(pairs.values())).pvalue > 1e-3


def test_power_of_two_picks_the_less_loaded_of_its_pair():
    loads = [4, 1, NOT_ROUTABLE, 3, WAKE_PENALTY, 2, 4]
    twin, r = PowerOfTwo(_fleet(11)), PowerOfTwo(_fleet(11))  # same seed: the same pairs
    for _ in range(2000):
        a, b = twin.pair(loads)
        assert r.choose(loads, None) == min((loads[a], a), (loads[b], b))[1]  # ties: the lower slot


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


class _ReferencePowerOfTwo:
    """The power-of-two router as first written with blocked uniforms (scaled at each draw, the
    best state found with a pass over the loads): the draws and choices to keep."""

    def __init__(self, rng):
        self.rng, self.u = rng, []

    def choose(self, loads):
        a, b = self.pair(loads)
        return a if (loads[a], a) <= (loads[b], b) else b

    def pair(self, loads):
        n, tries = len(loads), PowerOfTwo.TRIES
        tier = min(loads) >> 30
        u = self.u
        if len(u) < 2 * tries + 2:
            u[:0] = self.rng.random(PowerOfTwo.BLOCK).tolist()[::-1]
        a = int(u.pop() * n)
        if loads[a] >> 30 == tier:
            b = int(u.pop() * n)
            if b != a and loads[b] >> 30 == tier:
                return a, b
        else:
            a = -1
        for _ in range(tries):
            k = int(u.pop() * n)
            if loads[k] >> 30 == tier and k != a:
                if a < 0:
                    a = k
                else:
                    return a, k
        slots = [k for k, v in enumerate(loads) if v >> 30 == tier]
        m = len(slots)
        if m == 1:
            return slots[0], slots[0]
        i = int(u.pop() * m)
        j = int(u.pop() * (m - 1))
        return slots[i], slots[j + (j >= i)]


def test_power_of_two_draws_and_chooses_as_the_reference():
    """The same generator consumed in the same order and the same choices as the reference, over
    fleets that grow mid-block and states from all active to one active among many asleep."""
    g = np.random.default_rng(5)
    r, ref = PowerOfTwo(_fleet(9)), _ReferencePowerOfTwo(np.random.default_rng(9))
    penalties = [0, 0, 0, WAKE_PENALTY, SLEEP_PENALTY, NOT_ROUTABLE]
    for step in range(20_000):
        n = 2 + step // 1500  # a fleet of 2 slots growing to 15
        rare = step % 7 == 0  # most slots out of the best state
        pen = [NOT_ROUTABLE if rare and g.random() < 0.9 else penalties[g.integers(6)] for _ in range(n)]
        loads = [p + int(g.integers(4)) for p in pen]
        assert r.choose(loads, None) == ref.choose(loads), step
    assert r.rng.random() == ref.rng.random()  # the generators stand at the same place


# ----------------------------------------------------------------------------- autoscalers


def _autoscaler(name: str, **over):
    from sim.config.schema import AUTOSCALER_CONFIGS
    from sim.des.autoscale import make_autoscaler

    return make_autoscaler(AUTOSCALER_CONFIGS[name](**over), replicas=1)


def test_target_follows_the_stable_window_average():
    a = _autoscaler("target", target=10, stable_window_s=60, panic_window_s=6, panic_threshold=100, interval_s=2)
    # 60 s at 30 in flight: the stable average is 30, three replicas
    for t in range(0, 60, 2):
        want = a.decide(float(t), 30.0, ready=1, capacity=1)
    assert want == 3


def test_target_panics_on_the_short_window_and_never_scales_down_in_panic():
    a = _autoscaler("target", target=10, stable_window_s=60, panic_window_s=6, panic_threshold=2.0, interval_s=2)
    for t in range(0, 40, 2):
        a.decide(float(t), 5.0, ready=1, capacity=1)  # a quiet half minute: one replica is enough
    # a burst to 80 in flight: the 6-s window reaches 2 x target x 1 ready at once
    assert a.decide(40.0, 80.0, ready=1, capacity=1) >= 3  # panic, while the stable mean is still low
    # load falls back: during the panic (one stable window) the count does not drop below capacity
    assert a.decide(42.0, 0.0, ready=6, capacity=6) == 6


def test_target_holds_a_lower_count_for_the_scale_down_delay():
    a = _autoscaler(
        "target",
        target=10,
        stable_window_s=4,
        panic_window_s=2,
        panic_threshold=1000,
        scale_down_delay_s=30,
        max_scale_down_rate=1000,
    )
    assert a.decide(0.0, 40.0, ready=4, capacity=4) == 4
    downs = [a.decide(float(t), 10.0, ready=4, capacity=4) for t in range(2, 40, 2)]
    # the desired count (1) must hold for 30 s before the fleet goes down to it
    first = 2 + 2 * next(i for i, d in enumerate(downs) if d < 4)
    assert downs[-1] == 1 and 30 <= first <= 34


def test_target_goes_to_zero_only_after_the_grace_period():
    a = _autoscaler(
        "target", target=10, stable_window_s=4, panic_window_s=2, scale_down_delay_s=0, scale_to_zero_grace_s=30
    )
    a.decide(0.0, 5.0, ready=1, capacity=1)
    assert a.decide(20.0, 0.0, ready=1, capacity=1) == 1  # 20 s without load: still within the grace
    assert a.decide(31.0, 0.0, ready=1, capacity=1) == 0


def test_ray_acts_once_a_direction_has_held_for_its_delay():
    a = _autoscaler("ray", target=10, upscale_delay_s=30, downscale_delay_s=600)
    assert a.decide(0.0, 50.0, ready=1, capacity=1) == 1  # wants 5, has not held yet
    assert a.decide(29.0, 50.0, ready=1, capacity=1) == 1
    assert a.decide(30.0, 50.0, ready=1, capacity=1) == 5
    assert a.decide(40.0, 10.0, ready=5, capacity=5) == 5  # down: needs 600 s
    assert a.decide(640.0, 10.0, ready=5, capacity=5) == 1


def test_schedule_reads_the_hour_of_day_from_its_clock():
    from sim.config.schema import ScheduleAutoscaler
    from sim.des.autoscale import make_autoscaler

    hours = list(range(1, 25))
    a = make_autoscaler(ScheduleAutoscaler(schedule=hours), 1, clock_start_s=3600)
    assert a.decide(0.0, 0.0, 0, 0) == 2  # the run starts at 01:00
    assert a.decide(23 * 3600.0, 0.0, 0, 0) == 1  # 24:00 wraps to hour 0


# ----------------------------------------------------------------------------- API limits


def _api(**over):
    import dataclasses

    from sim.config.schema import ApiConfig
    from sim.des.api import ApiBackend

    return ApiBackend(dataclasses.replace(ApiConfig(), **over), np.random.default_rng(0))


def test_api_requests_per_minute_slide_with_the_window():
    from sim.des.api import REFUSE_RPM

    api = _api(rpm=3, tpm=None, monthly_cap_usd=None)
    assert [api.admit(t, 10, 10) for t in (0.0, 1.0, 2.0)] == [None, None, None]
    assert api.admit(59.9, 10, 10) == REFUSE_RPM  # three starts within the last 60 s
    assert api.admit(60.0, 10, 10) is None  # the start at 0 s has left the window
    assert api.refusals == {REFUSE_RPM: 1}


def test_api_tokens_per_minute_count_prompt_and_output():
    from sim.des.api import REFUSE_TOO_LARGE, REFUSE_TPM

    api = _api(rpm=None, tpm=1000, monthly_cap_usd=None)
    assert api.admit(0.0, 300, 300) is None  # 600 of 1,000
    assert api.admit(10.0, 300, 200) == REFUSE_TPM  # 1,100 would exceed the minute's allowance
    assert api.admit(10.0, 200, 200) is None  # exactly 1,000
    assert api.admit(61.0, 1200, 10) == REFUSE_TOO_LARGE  # more than a whole minute allows: never
    assert api.admit(61.0, 500, 0) is None  # the first request has left the window


def test_api_monthly_cap_resets_with_the_month():
    from sim.des.api import MONTH_S, REFUSE_CAP

    api = _api(rpm=None, tpm=None, monthly_cap_usd=1.0)
    price = api.cost(1000, 1000)
    fit = int(1.0 // price)
    assert all(api.admit(float(i), 1000, 1000) is None for i in range(fit))
    assert api.admit(100.0, 1000, 1000) == REFUSE_CAP
    assert api.admit(MONTH_S, 1000, 1000) is None  # a new month


# ----------------------------------------------------------------------------- prefix-aware routing


def test_prefix_aware_takes_the_longest_cached_prefix_within_the_slack():
    from sim.des.router import PrefixAware

    hits = {0: 0, 1: 5, 2: 9, 3: 2}
    nodes = [SimpleNamespace(cache=SimpleNamespace(peek=lambda blocks, k=k: hits[k])) for k in range(4)]
    fleet = SimpleNamespace(
        cfg=SimpleNamespace(fleet=SimpleNamespace(prefix_slack=2)), nodes=nodes, blocks_of=lambda req: [1, 2, 3]
    )
    r = PrefixAware(fleet)
    assert r.choose([1, 2, 3, 1], None) == 2  # 9 blocks cached, within 2 of the least loaded
    assert r.choose([1, 2, 4, 1], None) == 1  # slot 2 is too busy: the next longest
    fleet.blocks_of = lambda req: None
    assert r.choose([1, 2, 3, 0], None) == 3  # no prefix ids: the least loaded


# ----------------------------------------------------------------------------- overflow policies


def _api_cfg(**over):
    import dataclasses

    from sim.config.schema import ApiConfig

    return dataclasses.replace(ApiConfig(), **over)


def test_overflow_never_and_always():
    from sim.des.overflow import OVERFLOW

    fleet = _fleet()
    assert OVERFLOW["never"](_api_cfg()).decide(fleet, None) == (False, None)
    assert OVERFLOW["always"](_api_cfg()).decide(fleet, None) == (True, None)
    assert not OVERFLOW["never"].serves_too_long and OVERFLOW["always"].serves_too_long


def test_overflow_share_sends_its_share():
    from sim.des.overflow import OVERFLOW

    policy, fleet, n = OVERFLOW["share"](_api_cfg(share=0.3)), _fleet(5), 20_000
    sent = sum(policy.decide(fleet, None)[0] for _ in range(n))
    assert sent / n == pytest.approx(0.3, abs=4 * (0.3 * 0.7 / n) ** 0.5)


def test_overflow_queue_counts_who_waits_at_the_chosen_replica():
    from sim.des.overflow import OVERFLOW

    policy = OVERFLOW["queue"](_api_cfg(queue_threshold=3))
    engine = SimpleNamespace(waiting=[1, 2], sync=lambda: None)
    fleet = SimpleNamespace(
        loads=[5, 0], nodes=[None, SimpleNamespace(engine=engine)], router=LeastOutstanding(), router_queue=[]
    )
    assert policy.decide(fleet, None) == (False, 1)  # two wait at slot 1: under the threshold
    engine.waiting.append(3)
    assert policy.decide(fleet, None) == (True, 1)
    fleet.loads = [NOT_ROUTABLE]  # no replica can take it: the router's queue counts
    fleet.router_queue = [1, 2, 3, 4]
    assert policy.decide(fleet, None) == (True, 0)
