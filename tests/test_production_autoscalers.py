"""The production autoscalers (issue 14): NVIDIA Dynamo's planner in its throughput and load
modes, and KEDA on the router's signals as llm-d deploys it. Each decision step on scripted
signals, then a diurnal day end to end for each, with every request accounted for."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from collections import deque

import pytest

import sim
from sim.config.errors import ConfigError
from sim.config.schema import DynamoAutoscaler, KedaAutoscaler, validate
from sim.des.autoscale import Dynamo, FleetModel, Keda, Signals, make_autoscaler, predict_next
from sim.hardware.perf import build_perf, saturation_throughput, slo_throughput
from tests.conftest import ROOT, cfg


def _model(rps: float = 10.0, prefill: float = 1000.0, ttft: float = 1.0, calls: list | None = None) -> FleetModel:
    def replica_rps(prompt: float, output: float) -> float:
        if calls is not None:
            calls.append((prompt, output))
        return rps

    return FleetModel(replica_rps, prefill, ttft)


# ----------------------------------------------------------------------------- dynamo


def test_the_predictors_carry_the_history_one_interval_on():
    h = deque([10.0, 20.0, 30.0])
    assert predict_next(h, "constant") == 30.0
    assert predict_next(h, "moving_average") == 20.0
    assert predict_next(h, "linear") == pytest.approx(40.0)
    assert predict_next(deque([30.0, 20.0, 10.0]), "linear") == 0.0  # a falling trend stops at zero
    assert predict_next(deque(), "linear") == 0.0


def _arrivals(rates: list[float], period: float, prompt: int = 1000, output: int = 200) -> list[Signals]:
    """Cumulative arrival signals at the end of each period, at these request rates."""
    out, n = [], 0
    for r in rates:
        n += round(r * period)
        out.append(Signals(arrivals=n, prompt_tokens=n * prompt, output_tokens=n * output))
    return out


@pytest.mark.parametrize(("predictor", "want"), [("linear", 4), ("constant", 3), ("moving_average", 2)])
def test_dynamo_throughput_sizes_the_pool_for_the_forecast_rate(predictor, want):
    calls: list = []
    cfg_ = DynamoAutoscaler(adjustment_interval_s=60, predictor=predictor, predictor_window=3)
    a = make_autoscaler(cfg_, 1, model=_model(rps=10.0, calls=calls))
    assert isinstance(a, Dynamo) and a.needs == {"window", "latency"}
    # a rising load: 10, 20, 30 requests/s in three adjustment intervals, one replica does 10/s
    got = [a.decide(60.0 * (k + 1), 0.0, 1, 1, s) for k, s in enumerate(_arrivals([10, 20, 30], 60))]
    assert got[-1] == want  # linear: 40/s next, four replicas; constant: 30/s; mean: 20/s
    assert calls[-1] == pytest.approx((1000.0, 200.0))  # the capacity at the forecast token mix


def _profiled(step_s: float = 0.02, ttft_s: float = 0.2, role: str = "whole", calls: list | None = None) -> FleetModel:
    """A profile: 10 requests/s per replica at the 50 ms TPOT SLO, proportionally fewer at a
    tighter target; a decode step of `step_s` whatever the batch; a TTFT of `ttft_s`."""

    def replica_rps(prompt: float, output: float, tpot_s: float = 0.05) -> float:
        if calls is not None:
            calls.append(tpot_s)
        return 10.0 * tpot_s / 0.05

    return FleetModel(replica_rps, 1000.0, 1.0, 0.05, lambda b, c: step_s, lambda p: ttft_s, role)


def _observed(rate: float, period: float, itl_s: float, ttft_s: float, output: int = 200) -> Signals:
    """One interval at `rate` requests/s whose finished requests saw this ITL and TTFT."""
    n = round(rate * period)
    tokens = n * (output - 1)
    return Signals(
        arrivals=n,
        prompt_tokens=n * 1000,
        output_tokens=n * output,
        itl_s_sum=tokens * itl_s,
        itl_tokens=tokens,
        ttft_s_sum=n * ttft_s,
        ttft_n=n,
    )


def test_dynamo_correction_tightens_the_itl_target_by_observed_over_expected():
    """Dynamo's decode correction: observed ITL twice the profile's halves the ITL target the
    capacity is read at (corrected_itl = target / correction), so the pool doubles; at the
    profile's ITL nothing moves; with correction off the observations are not read."""
    calls: list = []
    a = make_autoscaler(DynamoAutoscaler(adjustment_interval_s=60), 1, model=_profiled(calls=calls))
    assert a.decide(60.0, 0.0, 3, 3, _observed(30, 60, itl_s=0.04, ttft_s=0.2)) == 6
    assert calls[-1] == pytest.approx(0.025) and a.observed["itl"] == [pytest.approx(2.0)]
    b = make_autoscaler(DynamoAutoscaler(adjustment_interval_s=60), 1, model=_profiled())
    assert b.decide(60.0, 0.0, 3, 3, _observed(30, 60, itl_s=0.02, ttft_s=0.2)) == 3
    off = make_autoscaler(DynamoAutoscaler(adjustment_interval_s=60, correction=False), 1, model=_profiled())
    assert off.needs == {"window"}
    assert off.decide(60.0, 0.0, 3, 3, _observed(30, 60, itl_s=0.04, ttft_s=0.2)) == 3


def test_dynamo_keeps_its_last_factor_through_an_interval_with_nothing_to_observe():
    calls: list = []
    a = make_autoscaler(DynamoAutoscaler(adjustment_interval_s=60), 1, model=_profiled(calls=calls))
    first = _observed(30, 60, itl_s=0.04, ttft_s=0.2)
    assert a.decide(60.0, 0.0, 3, 3, first) == 6
    # the next interval: 30 more arrivals/s, but no request finished (the latency sums stand still)
    quiet = dataclasses.replace(
        first, arrivals=2 * first.arrivals, prompt_tokens=2 * first.prompt_tokens, output_tokens=2 * first.output_tokens
    )
    assert a.decide(120.0, 0.0, 6, 6, quiet) == 6 and calls[-1] == pytest.approx(0.025)
    assert a.observed["itl"] == [pytest.approx(2.0)]  # one interval observed, one not


def test_dynamo_prefill_correction_only_lowers_the_prefill_load():
    """On a prefill pool the load is scaled by min(1, observed / expected TTFT): cache hits
    (a faster TTFT) shrink the pool, queueing (a slower one) does not grow it."""
    fast = make_autoscaler(DynamoAutoscaler(adjustment_interval_s=60), 1, model=_profiled(role="prefill"))
    assert fast.decide(60.0, 0.0, 4, 4, _observed(40, 60, itl_s=0.02, ttft_s=0.1)) == 2
    slow = make_autoscaler(DynamoAutoscaler(adjustment_interval_s=60), 1, model=_profiled(role="prefill"))
    assert slow.decide(60.0, 0.0, 4, 4, _observed(40, 60, itl_s=0.02, ttft_s=0.8)) == 4


def test_dynamo_holds_its_answer_between_adjustments():
    a = make_autoscaler(DynamoAutoscaler(adjustment_interval_s=60), 2, model=_model(rps=10.0))
    s = _arrivals([50], 60)[0]
    assert a.decide(10.0, 0.0, 2, 2, Signals()) == 2  # before the first adjustment: the starting size
    assert a.decide(60.0, 0.0, 2, 2, s) == 5
    assert a.decide(70.0, 0.0, 5, 5, Signals(arrivals=s.arrivals)) == 5  # no new decision until 120 s
    assert a.decide(120.0, 0.0, 5, 5, Signals(arrivals=s.arrivals)) == 1  # no arrivals: Dynamo keeps one


def _load_planner(**over) -> Dynamo:
    c = DynamoAutoscaler(mode="load", interval_s=10, adjustment_interval_s=10, **over)
    return make_autoscaler(c, 3)


@pytest.mark.parametrize(
    ("kv", "queued", "want"),
    [
        (0.95, 0, 4),  # KV above kv_high: one more
        (0.70, 0, 3),  # within the band: hold
        (0.30, 0, 2),  # KV and queue under the low thresholds: one fewer
        (0.30, 30, 4),  # 10 waiting per replica, above queue_high: one more, whatever the KV
        (0.30, 3, 3),  # 1 waiting per replica: not low enough to remove one
    ],
)
def test_dynamo_load_mode_steps_by_one(kv, queued, want):
    a = _load_planner()
    assert a.needs == {"engines"}
    assert a.decide(10.0, 0.0, 3, 3, Signals(kv=kv, queued=queued)) == want


def test_dynamo_load_mode_averages_the_interval_and_waits_for_a_start():
    a = make_autoscaler(DynamoAutoscaler(mode="load", interval_s=10, adjustment_interval_s=30), 2)
    for t, kv in ((10.0, 1.0), (20.0, 1.0)):
        assert a.decide(t, 0.0, 2, 2, Signals(kv=kv)) == 2  # samples, no decision yet
    assert a.decide(30.0, 0.0, 2, 2, Signals(kv=0.85)) == 3  # mean 0.95 > 0.9
    for t in (40.0, 50.0, 60.0):  # a replica still starting: no adjustment, however full
        got = a.decide(t, 0.0, 2, 3, Signals(kv=1.0))
    assert got == 3


# ----------------------------------------------------------------------------- keda


def _keda(replicas: int = 1, model: FleetModel | None = None, **over) -> Keda:
    return make_autoscaler(KedaAutoscaler(**over), replicas, model=model)


def test_keda_scales_up_to_ceil_of_signal_over_target_at_once():
    a = _keda(target=4, polling_interval_s=30, cooldown_period_s=1e9)
    assert a.needs == {"engines"}
    assert a.decide(0.0, 0.0, 1, 1, Signals(queued=18)) == 5  # ceil(18 / 4)
    assert a.decide(15.0, 0.0, 1, 1, Signals(queued=4.3)) == 1  # within the 10 % tolerance: hold


def test_keda_holds_a_scale_down_for_the_stabilisation_window():
    a = _keda(target=4, stabilization_window_s=300, cooldown_period_s=1e9)
    assert a.decide(0.0, 0.0, 1, 1, Signals(queued=20)) == 5
    held = [a.decide(t, 0.0, 5, 5, Signals(queued=4)) for t in (15.0, 150.0, 300.0)]
    assert held == [5, 5, 5]  # the window still holds the recommendation of 5 made at t = 0
    assert a.decide(315.0, 0.0, 5, 5, Signals(queued=4)) == 1


def test_keda_activates_from_zero_only_at_a_poll_above_the_threshold():
    a = _keda(replicas=0, target=4, activation_threshold=2, polling_interval_s=30)
    assert a.activator is False  # requests wait at the router for KEDA's next poll
    assert a.decide(0.0, 0.0, 0, 0, Signals(queued=2)) == 0  # at the poll, not above the threshold
    assert a.decide(15.0, 0.0, 0, 0, Signals(queued=9)) == 0  # above it, between polls
    assert a.decide(30.0, 0.0, 0, 0, Signals(queued=9)) == 1  # the poll activates one replica
    assert a.decide(45.0, 0.0, 1, 1, Signals(queued=9)) == 3  # then the HPA sizes it: ceil(9 / 4)


def test_keda_scales_to_zero_after_the_cooldown_without_activity():
    a = _keda(target=4, polling_interval_s=30, cooldown_period_s=300, stabilization_window_s=0)
    assert a.decide(0.0, 0.0, 1, 1, Signals(queued=3)) == 1  # active at the first poll
    assert a.decide(270.0, 0.0, 1, 1, Signals()) == 1  # idle 270 s: still within the cooldown
    assert a.decide(300.0, 0.0, 1, 1, Signals()) == 0


def test_keda_running_trigger_sizes_and_keeps_a_busy_fleet_active():
    a = _keda(target=4, running_target=64, cooldown_period_s=300, polling_interval_s=30, stabilization_window_s=0)
    assert a.decide(0.0, 0.0, 1, 1, Signals(queued=0, running=130)) == 3  # ceil(130 / 64) beats the empty queue
    for t in range(30, 400, 30):  # nothing waits, but sequences run: active, never to zero
        assert a.decide(float(t), 0.0, 1, 1, Signals(running=10)) == 1
    b = _keda(target=4, running_target=None, cooldown_period_s=300, polling_interval_s=30)
    b.decide(0.0, 0.0, 1, 1, Signals(queued=3))
    assert b.decide(300.0, 0.0, 1, 1, Signals(running=10)) == 0  # the queue alone: idle once nothing waits


def test_keda_backlog_and_ttft_signals():
    a = _keda(signal="backlog_s", target=2, prefill_tokens_per_s=1000)
    assert a.decide(0.0, 0.0, 1, 1, Signals(prefill_backlog=8000)) == 4  # 8 s of prefill / 2 s per replica
    b = _keda(signal="backlog_s", target=2, model=_model(prefill=4000.0))  # null: the perf model's rate
    assert b.decide(0.0, 0.0, 1, 1, Signals(prefill_backlog=8000)) == 1
    c = _keda(replicas=2, signal="ttft", target=0.5, model=_model(ttft=1.0))
    assert c.needs == {"window", "ttft", "engines"}  # engines: the running trigger
    # twice the SLO, target half: 2 x 4 = 8, but the HPA's default scale-up adds at most 4 at a time
    assert c.decide(0.0, 0.0, 2, 2, Signals(ttft_s=2.0)) == 6
    assert c.decide(15.0, 0.0, 6, 6, Signals(ttft_s=2.0)) == 12  # then at most doubles: 6 x 4 = 24 capped
    assert _keda(target=1).decide(0.0, 0.0, 1, 1, Signals(queued=30)) == 5  # from one: four more


def test_the_slo_capacity_is_the_saturation_rate_with_the_batch_the_slo_allows():
    c = cfg()
    perf = build_perf(c.model, c.gpu, c.engine)
    args = (perf, 10**6, 256, 8192, 1000.0, 250.0)
    free = saturation_throughput(*args)
    assert slo_throughput(*args, 10.0) == pytest.approx(free)  # a loose SLO: the saturated rate
    tight = [slo_throughput(*args, t) for t in (0.02, 0.012, 0.008)]
    assert free > tight[0] > tight[1] > tight[2] > 0


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [("dynamo", "kv_low", 0.95), ("dynamo", "mode", "fast"), ("keda", "tolerance", 2), ("keda", "target", 0)],
)
def test_bad_keys_are_refused_with_the_key(name, key, value):
    with pytest.raises(ConfigError, match=rf"fleet\.autoscaler\.{key}"):
        validate(cfg("fleet=autoscaled", f"fleet/autoscaler={name}", f"fleet.autoscaler.{key}={value}"))


def test_a_bad_value_exits_2_with_one_line(tmp_path):
    args = ["fleet=autoscaled", "fleet/autoscaler=keda", "fleet.autoscaler.cooldown_period_s=-1"]
    p = subprocess.run(
        [sys.executable, "-m", "sim", *args, f"hydra.run.dir={tmp_path / 'x'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
    )
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "fleet.autoscaler.cooldown_period_s" in lines[0], p.stderr


# ----------------------------------------------------------------------------- a day, end to end

# a day at 0.2 requests/s of long answers on replicas of two sequences: a few replicas at the peak
DAY = (
    "fleet=autoscaled",
    "fleet.max_replicas=8",
    "workload=diurnal",
    "workload.duration_s=86400",
    "workload.rate=0.2",
    "workload.output_tokens.mean=2000",
    "workload.output_tokens.p99=4000",
    "engine.max_num_seqs=2",
)
# no traffic at night nor from 12:00 to 14:00
GAPS = "workload.hourly_weights=[0,0,0,0,0,0,2,3,4,4,4,4,0,0,4,4,4,3,2,1,0,0,0,0]"


@pytest.mark.parametrize(
    "over",
    [
        ("fleet/autoscaler=dynamo",),
        ("fleet/autoscaler=dynamo", "fleet.autoscaler.predictor=linear", "fleet.autoscaler.adjustment_interval_s=600"),
        ("fleet/autoscaler=dynamo", "fleet.autoscaler.mode=load"),
        ("fleet/autoscaler=keda",),
        ("fleet/autoscaler=keda", "fleet.autoscaler.signal=backlog_s", "fleet.autoscaler.target=2"),
        ("fleet/autoscaler=keda", "fleet.autoscaler.signal=ttft", "fleet.autoscaler.target=0.5"),
    ],
    ids=["dynamo", "dynamo-linear", "dynamo-load", "keda-queue", "keda-backlog", "keda-ttft"],
)
def test_a_day_conserves_requests_and_follows_the_load(over):
    r = sim.run(cfg(*DAY, *over))
    s = r.summary
    assert s["n_gpu"] + s["n_api"] + s["n_rejected"] == s["n_requests"] == len(r.requests) > 10_000
    assert r.requests.finish_s.notna().all()
    assert s["max_replicas"] > 1  # it scaled up for the day's peak ...
    ts = r.timeseries
    awake = ts.replicas_active + ts.replicas_idle + ts.replicas_provisioning
    day, night = awake[(ts.time_s > 12 * 3600) & (ts.time_s < 16 * 3600)], awake[ts.time_s < 4 * 3600]
    assert day.mean() > night.mean()  # ... and ran fewer at night


def test_keda_scales_a_fleet_to_zero_in_a_quiet_spell_and_back():
    r = sim.run(cfg(*DAY, "fleet/autoscaler=keda", "fleet.min_replicas=0", "fleet.replicas=0", GAPS))
    s = r.summary
    assert s["n_gpu"] == s["n_requests"] == len(r.requests) > 10_000
    ts = r.timeseries
    alive = ts[[c for c in ts.columns if c.startswith("replicas_")]].sum(axis=1)
    gap = alive[(ts.time_s > 12.5 * 3600) & (ts.time_s < 14 * 3600)]
    assert (gap == 0).any()  # zero once the cooldown has passed without a request
    assert (alive[(ts.time_s > 15 * 3600) & (ts.time_s < 19 * 3600)] > 0).all()  # and back for the afternoon
    df = r.requests.sort_values("arrival_s")
    assert df.iloc[0].queue_s > 0  # the morning's first request waited for KEDA's poll and a start
    assert df[df.arrival_s >= 14 * 3600].iloc[0].queue_s > 0  # and the afternoon's


def test_scaling_up_wakes_sleeping_replicas_first():
    sleep = ("fleet.sleep.enabled=true", "fleet.sleep.idle_s=60", "fleet.sleep.min_awake=0")
    for name in ("dynamo", "keda"):
        r = sim.run(cfg(*DAY, f"fleet/autoscaler={name}", "fleet.min_replicas=3", "fleet.replicas=3", *sleep))
        s = r.summary
        assert s["n_gpu"] == s["n_requests"] == len(r.requests)
        assert s["sleeps"] > 0 and s["wakes"] > 0, name
        assert s["cold_starts"] < s["wakes"], name  # the fast path: parked replicas wake before new ones start


def test_existing_autoscalers_get_no_signals():
    for name in ("fixed", "target", "ray", "schedule"):
        c = cfg(
            "fleet=autoscaled",
            f"fleet/autoscaler={name}",
            *([f"fleet.autoscaler.schedule={[1] * 24}"] * (name == "schedule")),
        )
        a = make_autoscaler(c.fleet.autoscaler, 1)
        assert a.needs == frozenset() and a.activator, name
    assert math.isnan(Signals().ttft_s)


def test_dynamo_counts_the_arrivals_of_closed_loop_users():
    over = ("fleet.max_replicas=8", "workload=closed", "workload.users=16", "workload.think_time_s=5")
    more = ("workload.duration_s=1800", "engine.max_num_seqs=2", "fleet.autoscaler.adjustment_interval_s=60")
    r = sim.run(cfg("fleet=autoscaled", "fleet/autoscaler=dynamo", *over, *more))
    s = r.summary
    assert s["n_gpu"] == s["n_requests"] == len(r.requests) > 1000
    assert s["max_replicas"] > 1  # the rate the users send at was seen, and sized for
