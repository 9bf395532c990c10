"""Fleet economics: costs from the records, rate limits, scaling from zero, autoscaling, sleep,
spot preemption, the hybrid fleet, routers and prefix caching."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from sim.des.predict import cold_start_s, wake_s
from sim.workload.build import Workload
from tests.conftest import ROOT, cfg

BURSTY = (
    "workload=bursty",
    "workload.rate=10",
    "workload.burst_multiplier=6",
    "workload.burst_mean_s=30",
    "workload.calm_mean_s=270",
    "seed=1",
)


def burst(times: list[float], prompt: int = 800, output: int = 200) -> Workload:
    t = np.array(sorted(times))
    return Workload(t, np.full(len(t), prompt, np.int64), np.full(len(t), output, np.int64))


def served_all(r) -> None:
    s = r.summary
    assert s["n_rejected"] == 0
    assert s["n_gpu"] + s["n_api"] == s["n_requests"] == len(r.requests)
    assert r.requests.finish_s.notna().all() and r.requests.ttft_s.notna().all()


# ----------------------------------------------------------------------------- costs


def test_api_cost_is_tokens_times_prices_to_the_cent():
    r = sim.run(cfg(*BURSTY, "workload.duration_s=900", "api=default", "api.cache_hit_rate=0.5"))
    a = r.config.api
    api = r.requests[r.requests.route == "api"]
    assert len(api) > 50
    per_input = 0.5 * a.price_input_per_m + 0.5 * a.price_cached_input_per_m
    expected = (api.prompt_tokens.sum() * per_input + api.output_tokens.sum() * a.price_output_per_m) / 1e6
    assert abs(r.summary["api_cost"] - expected) < 0.005
    assert r.summary["total_cost"] == pytest.approx(
        r.summary["gpu_cost"] + r.summary["api_cost"] + r.summary["ops_cost"]
    )


@pytest.mark.parametrize(
    ("rate", "states"),
    [
        (1, {"provisioning", "active", "sleeping", "waking"}),  # min_replicas kept asleep, woken for bursts
        (4, {"provisioning", "active", "draining"}),  # busy replicas shed after bursts
    ],
)
def test_gpu_cost_is_billed_seconds_times_rate_from_the_lifecycle(rate, states):
    """Recomputed here from the lifecycle records, not with the billing module."""
    r = sim.run(
        cfg(
            *BURSTY,
            f"workload.rate={rate}",
            "workload.duration_s=1800",
            "fleet=autoscaled",
            "fleet.autoscaler.target=4",
            "fleet.replicas=2",
            "fleet.min_replicas=2",
            "fleet.sleep.enabled=true",
            "fleet.sleep.idle_s=20",
            "fleet.sleep.cost_fraction=0.3",
            "fleet.pricing.billing=per_hour",
            "fleet.pricing.min_billed_s=600",
        )
    )
    price = r.config.gpu.price_per_hour
    total = 0.0
    lives: dict[int, list] = {}
    for s in r.spans:
        lives.setdefault(s.uid, []).append(s)
    assert len(lives) >= 3  # the autoscaler started and stopped replicas
    assert {s.state for s in r.spans} >= states
    for spans in lives.values():
        life = max(s.end for s in spans) - min(s.start for s in spans)
        weighted = sum(
            (s.end - s.start) * (0.3 if s.state == "sleeping" else 1.0) for s in spans if s.state != "stopped"
        )
        billed_life = max(math.ceil(life / 3600 - 1e-12) * 3600, 600)
        total += (weighted + billed_life - life) / 3600 * price * spans[0].gpus
    assert abs(r.summary["gpu_cost"] - total) < 0.005
    assert r.bills.cost.sum() == pytest.approx(total, abs=0.005)


def test_reserved_gpus_cover_use_up_to_the_commitment():
    over = (*BURSTY, "workload.duration_s=1800", "fleet=autoscaled")
    on_demand = sim.run(cfg(*over))
    reserved = sim.run(cfg(*over, "fleet.pricing.kind=reserved", "fleet.pricing.reserved_gpus=1"))
    price = on_demand.config.gpu.price_per_hour
    horizon = reserved.summary["sim_duration_s"]
    # one GPU in use nearly all the time: the reservation covers it at 60 % of the price
    fee = 1 * price * 0.6 * horizon / 3600
    assert reserved.summary["gpu_cost_reserved"] == pytest.approx(fee)
    assert reserved.summary["gpu_cost"] < on_demand.summary["gpu_cost"]
    assert reserved.summary["gpu_cost_on_demand"] < on_demand.summary["gpu_cost"] - 0.9 * price * horizon / 3600


def test_ops_cost_is_prorated():
    r = sim.run(cfg("workload.duration_s=600", "fleet.pricing.ops_cost_per_month=3000"))
    # a month is 730 hours everywhere (ops cost, projections, API caps)
    assert r.summary["ops_cost"] == pytest.approx(3000 * r.summary["sim_duration_s"] / (730 * 3600))


# ----------------------------------------------------------------------------- API limits


@pytest.mark.slow
@pytest.mark.parametrize("on_limit", ["backoff", "gpu"])
def test_no_minute_starts_more_api_requests_than_the_rpm_limit(on_limit):
    r = sim.run(
        cfg(
            *BURSTY,
            "workload.duration_s=900",
            "api=tier1",
            "api.rpm=60",
            "api.overflow=always",
            f"api.on_limit={on_limit}",
        )
    )
    served_all(r)
    starts = np.sort((r.requests.arrival_s + r.requests.queue_s)[r.requests.route == "api"].to_numpy())
    assert len(starts) > 600  # the limit was the binding constraint for a quarter hour
    # every window (t - 60, t] ending at a start holds at most 60 starts
    counts = np.arange(1, len(starts) + 1) - np.searchsorted(starts, starts - 60.0, side="right")
    assert counts.max() <= 60
    assert r.summary["api_refusals.rpm"] > 0
    if on_limit == "gpu":
        assert r.summary["n_gpu"] > 0
    else:  # backing off counts in the TTFT
        api = r.requests[r.requests.route == "api"]
        assert api.queue_s.max() > 1.0


def test_pure_api_needs_no_gpu():
    r = sim.run(cfg("workload.duration_s=300", "api=default", "api.overflow=always", "fleet.replicas=0"))
    served_all(r)
    assert r.summary["n_api"] == r.summary["n_requests"] and r.summary["gpu_cost"] == 0.0


# ----------------------------------------------------------------------------- lifecycle


def test_a_burst_at_an_empty_fleet_is_served_and_it_scales_to_zero_again():
    c = cfg("fleet=autoscaled", "fleet.replicas=0", "fleet.min_replicas=0", "fleet.autoscaler.scale_to_zero_grace_s=30")
    wl = burst(list(np.linspace(0, 2, 300)) + list(np.linspace(900, 902, 300)))
    r = sim.run(c, workload=wl)
    served_all(r)
    assert r.summary["n_gpu"] == 600
    start = cold_start_s(c)
    first = r.requests[r.requests.arrival_s < 10]
    assert (first.arrival_s + first.queue_s).min() >= start - 1e-6  # nobody starts before a replica exists
    assert r.summary["cold_starts"] >= 2
    ts = r.timeseries
    between = ts[(ts.time_s > 300) & (ts.time_s < 840)]
    alive = between[[c_ for c_ in ts.columns if c_.startswith("replicas_")]].sum(axis=1)
    assert (alive == 0).any(), "the fleet should have scaled to zero between the bursts"


def test_sleep_lowers_cost_at_low_load_and_a_sleeping_replica_wakes():
    base = ("workload.rate=0.02", "workload.duration_s=7200", "fleet.replicas=2")
    awake = sim.run(cfg(*base))
    sleep = (
        *base,
        "fleet.sleep.enabled=true",
        "fleet.sleep.idle_s=30",
        "fleet.sleep.cost_fraction=0.25",
        "fleet.sleep.min_awake=0",
    )
    r = sim.run(cfg(*sleep))
    served_all(r)
    assert r.summary["total_cost"] < 0.6 * awake.summary["total_cost"]
    assert r.summary["sleeps"] > 10 and r.summary["wakes"] > 10
    # a request that finds every replica asleep waits at least the wake-up
    w = wake_s(r.config)
    df = r.requests.sort_values("arrival_s")
    last_done = df.finish_s.cummax().shift()
    quiet = df.arrival_s - last_done > 30 + 1  # every replica has been idle past idle_s: asleep
    assert quiet.sum() > 20
    assert (df[quiet].queue_s >= w - 1e-9).all()
    assert w == pytest.approx(r.config.model.params_b * 2 / 15.0 + 0.5)


def test_spot_preemption_at_a_high_rate_loses_no_request():
    r = sim.run(
        cfg(
            "workload.rate=8",
            "workload.duration_s=1800",
            "fleet.replicas=3",
            "fleet.pricing.kind=spot",
            "fleet.pricing.spot_preemptions_per_hour=20",
        )
    )
    served_all(r)
    assert r.summary["spot_preemptions"] >= 20
    assert r.summary["replicas_started"] >= 3 + r.summary["spot_preemptions"]
    moved = r.requests.replica.nunique()
    assert moved > 3  # requests finished on replacement replicas
    assert r.summary["gpu_cost_spot"] == pytest.approx(r.summary["gpu_cost"])


@pytest.mark.parametrize("policy", ["ttft", "slo", "queue"])
def test_fast_forward_matches_reference_under_fleet_dynamics(policy):
    over = (
        *BURSTY,
        "workload.duration_s=600",
        "fleet=autoscaled",
        "fleet.sleep.enabled=true",
        "fleet.sleep.idle_s=15",
        "fleet.pricing.kind=spot",
        "fleet.pricing.spot_preemptions_per_hour=12",
        "api=default",
        f"api.overflow={policy}",
        "api.queue_threshold=3",
    )
    fast = sim.run(cfg(*over))
    slow = sim.run(cfg(*over, "engine.fast_forward=false"))
    assert fast.summary["spot_preemptions"] > 0 and fast.summary["n_api"] > 0
    for col in ("route", "replica", "preemptions"):
        assert (fast.requests[col] == slow.requests[col]).all(), col
    for col in ("queue_s", "ttft_s", "e2e_s"):
        assert np.allclose(fast.requests[col], slow.requests[col], rtol=1e-9, atol=1e-9 * 600, equal_nan=True), col


# ----------------------------------------------------------------------------- decisions


@pytest.mark.slow
def test_target_autoscaler_follows_a_day_and_beats_every_fixed_fleet():
    day = (
        "workload=diurnal",
        "workload.rate=3",
        "workload.peak_to_trough=6",
        "workload.weekend_factor=1",
        "gpu=l40s",
        "seed=2",
    )
    auto = sim.run(cfg(*day, "fleet=autoscaled", "fleet.autoscaler.target=24"))
    ts = auto.timeseries
    awake = ts.replicas_active + ts.replicas_idle
    assert np.corrcoef(awake, ts.arrivals)[0, 1] > 0.8
    attainment = auto.summary["slo_attainment"]
    assert auto.summary["slo_met"]
    cheapest = None
    for n in range(1, 6):  # the smallest fixed fleet that reaches the same attainment
        fixed = sim.run(cfg(*day, f"fleet.replicas={n}"))
        if fixed.summary["slo_attainment"] >= attainment:
            cheapest = fixed.summary["total_cost"]
            break
    assert cheapest is not None
    assert auto.summary["total_cost"] < cheapest


@pytest.mark.slow
def test_hybrid_baseline_plus_api_beats_pure_api_and_a_peak_fleet():
    """A bursty workload (bursts of 6x the calm rate): one H100 plus API overflow on predicted
    TTFT meets the chat SLO for less than the API alone or a fleet sized for the bursts. (The
    batch is capped at 256: with vLLM's H100 default of 1024 a burst's batch grows until TPOT
    misses the SLO, which overflow on predicted TTFT does not see.)"""
    over = (*BURSTY, "workload.duration_s=7200", "engine.max_num_seqs=256")
    pure_api = sim.run(cfg(*over, "api=default", "api.overflow=always", "fleet.replicas=0")).summary
    peak = None
    for n in range(1, 5):
        s = sim.run(cfg(*over, f"fleet.replicas={n}")).summary
        if s["slo_met"]:
            peak = s
            break
    hybrid = sim.run(cfg(*over, "fleet.replicas=1", "api=default", "api.overflow=ttft")).summary
    assert pure_api["slo_met"] and peak is not None and hybrid["slo_met"]
    assert 0 < hybrid["api_share"] < 0.2
    assert hybrid["total_cost"] < pure_api["total_cost"]
    assert hybrid["total_cost"] < peak["total_cost"]


# ----------------------------------------------------------------------------- routing


@pytest.mark.parametrize("router", ["round_robin", "power_of_two", "least_outstanding"])
def test_routers_spread_the_load(router):
    r = sim.run(cfg("workload.rate=20", "workload.duration_s=300", "fleet.replicas=4", f"fleet.router={router}"))
    served_all(r)
    share = r.requests.replica.value_counts(normalize=True)
    assert len(share) == 4 and share.max() < 0.4
    if router == "round_robin":
        assert share.max() - share.min() < 0.01


def test_prefix_caching_skips_prefill_and_prefix_routing_finds_the_cache():
    trace = (
        "workload=trace",
        f"workload.path={ROOT / 'traces' / 'synthetic_mooncake.jsonl'}",
        "workload.format=mooncake",
    )
    plain = sim.run(cfg(*trace, "fleet.replicas=4", "engine.prefix_caching=false"))
    cached = sim.run(cfg(*trace, "fleet.replicas=4", "engine.prefix_caching=true"))
    aware = sim.run(cfg(*trace, "fleet.replicas=4", "engine.prefix_caching=true", "fleet.router=prefix_aware"))
    assert plain.requests.cached_tokens.sum() == 0
    assert cached.requests.cached_tokens.sum() > 0
    assert (cached.requests.cached_tokens < cached.requests.prompt_tokens).all()
    assert aware.summary["prefix_block_hit_rate"] > cached.summary["prefix_block_hit_rate"] + 0.1
    assert aware.requests.ttft_s.mean() < plain.requests.ttft_s.mean()
