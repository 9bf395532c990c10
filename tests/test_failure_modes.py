"""The autoscaler's failure modes (docs/metrics.md, "Failure modes"): each counted in the summary,
each with a run that shows it and a setting that does not. Short horizons: the file runs in
about 20 s."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from sim.config.errors import ConfigError
from sim.config.schema import Config, validate
from sim.des.failures import ScaleEvents
from sim.des.records import ACTIVE, PROVISIONING, STOPPED
from sim.output.plots import failure_title
from sim.pricing.cost import Span
from sim.results.failures import held_in_windows, zero_traffic_windows
from tests.conftest import cfg
from tests.test_engine import _compare
from tests.test_lifecycle import COLD
from tests.test_lifecycle import _life as lifecycle_under_test

FAILURE_KEYS = (
    "autoscale_reversals",
    "reversal_cold_starts",
    "scaleups_during_warmup",
    "dropped_on_scale_down",
    "idle_zero_traffic_gpu_s",
    "idle_zero_traffic_cost",
    "pending_gpu_waits",
    "pending_gpu_wait_s_mean",
    "pending_gpu_wait_s_p95",
    "failure_cost_per_month",
)


def _conserved(r) -> None:
    """Every request ends once (GPU, API or rejected with a reason) and the tokens add up."""
    s, df = r.summary, r.requests
    assert s["n_gpu"] + s["n_api"] + s["n_rejected"] == s["n_requests"] == len(df)
    assert df["route"].isin(["gpu", "api", "rejected"]).all()
    assert not df.loc[df["route"] == "rejected", "reject_reason"].eq("").any()
    assert s["input_tokens"] == df["prompt_tokens"].sum() and s["output_tokens"] == df["output_tokens"].sum()
    assert (df.loc[df["route"] == "gpu", "finish_s"] >= df.loc[df["route"] == "gpu", "arrival_s"]).all()


# ----------------------------------------------------------------------------- reporting switch


def test_the_keys_appear_only_when_asked_for_or_caused():
    base = ("workload.duration_s=30", "workload.rate=2")
    assert not any(k in sim.run(cfg(*base)).summary for k in FAILURE_KEYS)
    s = sim.run(cfg(*base, "output.failure_modes.report=true")).summary
    assert all(k in s for k in FAILURE_KEYS)
    assert s["autoscale_reversals"] == s["dropped_on_scale_down"] == s["pending_gpu_waits"] == 0
    assert "autoscale_reversals" in sim.run(cfg(*base, "fleet.drain=false")).summary
    autoscaled = sim.run(cfg(*base, "fleet=autoscaled")).summary  # an autoscaled fleet: reported by default
    assert all(k in autoscaled for k in FAILURE_KEYS)
    assert not any(
        k in sim.run(cfg(*base, "fleet=autoscaled", "output.failure_modes.report=false")).summary for k in FAILURE_KEYS
    )


# ----------------------------------------------------------------------------- 1. oscillation


def test_a_reversal_is_a_change_of_direction_within_the_window():
    ev = ScaleEvents(window_s=30.0)
    ev.scaled(0.0, 1, 2, started=2)
    ev.scaled(10.0, -1, 1)  # down 10 s after up: a reversal
    ev.scaled(40.0, 1, 1, started=1)  # up 30 s after down: a reversal, one cold start
    ev.scaled(50.0, 1, 1, started=1)  # the same direction: none
    ev.scaled(90.0, -1, 1)  # 40 s after the last change: none
    ev.scaled(95.0, -1, 0)  # no replica moved: not a decision
    assert ev.reversals == 2 and ev.reversal_cold_starts == 1
    assert [m[2] for m in ev.marks] == [False, True, True, False, False]


def test_dynamos_reversals_are_counted_on_its_adjustment_interval():
    """Dynamo decides every adjustment_interval_s (its interval_s only pulls metrics): a change
    one adjustment after the opposite one is a reversal."""
    over = ("fleet=autoscaled", "fleet/autoscaler=dynamo", "fleet.autoscaler.adjustment_interval_s=60")
    run = ("workload=bursty", "workload.duration_s=1200", "output.plots=false", "output.requests=false")
    s = sim.run(cfg(*over, *run)).summary
    assert s["autoscale_reversals"] >= 1


def test_a_jumpy_autoscaler_on_bursty_load_reverses_and_pays_for_cold_starts():
    over = (
        "fleet=autoscaled",
        "workload=bursty",
        "workload.duration_s=600",
        "fleet.autoscaler.target=8",
        "fleet.autoscaler.stable_window_s=10",
        "fleet.autoscaler.panic_window_s=2",
        "output.failure_modes.report=true",
    )
    jumpy = sim.run(cfg(*over, "fleet.autoscaler.scale_down_delay_s=0"))
    calm = sim.run(cfg(*over, "fleet.autoscaler.scale_down_delay_s=300"))
    s = jumpy.summary
    assert s["autoscale_reversals"] > 5 and 0 < s["reversal_cold_starts"] <= s["cold_starts"]
    price = jumpy.config.gpu.price_per_hour / 3600
    assert s["reversal_cold_start_cost"] == pytest.approx(s["reversal_cold_starts"] * s["cold_start_s"] * price)
    assert calm.summary["autoscale_reversals"] < s["autoscale_reversals"]
    _conserved(jumpy)


# ----------------------------------------------------------------------------- 2. warm-up


WARMUP = (
    "workload.duration_s=90",
    "workload.rate=6",
    "fleet.start_warm=false",
    "fleet.warmup.factor=3",
    "fleet.warmup.duration_s=20",
)


@pytest.mark.parametrize("async_scheduling", ["true", "false"])
def test_warmup_fast_forward_equals_per_iteration(async_scheduling):
    over = (*WARMUP, f"engine.async_scheduling={async_scheduling}")
    fast = sim.run(cfg(*over, "engine.fast_forward=true"))
    slow = sim.run(cfg(*over, "engine.fast_forward=false"))
    _compare(fast.requests, slow.requests, f"warm-up, async={async_scheduling}")
    assert fast.summary["iterations"] == slow.summary["iterations"]
    assert fast.summary["engine_events"] < slow.summary["engine_events"] / 3  # still fast-forwarded


def test_iterations_that_start_in_the_warmup_are_factor_times_slower():
    """Requests alone on the replica (one every 2 s, short outputs): those run wholly within the
    warm-up decode three times slower than without it, those after it at the same speed."""
    over = (
        "workload.duration_s=80",
        "workload.arrival=uniform",
        "workload.rate=0.5",
        "workload.output_tokens.dist=fixed",
        "workload.output_tokens.mean=50",
        "fleet.start_warm=false",
    )
    base = sim.run(cfg(*over)).requests
    warm = sim.run(cfg(*over, "fleet.warmup.factor=3", "fleet.warmup.duration_s=30")).requests
    ready = float((warm["arrival_s"] + warm["queue_s"]).min())
    start = (warm["arrival_s"] + warm["queue_s"]).to_numpy()
    solo = _alone(warm) & _alone(base)
    inside = solo & (warm["finish_s"].to_numpy() < ready + 30)
    after = solo & (start > ready + 30)
    assert inside.sum() >= 3 and after.sum() >= 3
    ratio = warm["tpot_s"].to_numpy() / base["tpot_s"].to_numpy()
    assert np.allclose(ratio[inside], 3.0, rtol=1e-6)
    assert np.allclose(ratio[after], 1.0, rtol=1e-6)


def _alone(df) -> np.ndarray:
    """Requests that shared the replica with no other from their start to their finish."""
    start = (df["arrival_s"] + df["queue_s"]).to_numpy()
    finish = df["finish_s"].to_numpy()
    overlaps = (start[:, None] < finish[None, :]) & (start[None, :] < finish[:, None])
    return overlaps.sum(axis=1) == 1  # itself only


def test_scaleups_during_warmup_are_counted():
    over = (
        "fleet=autoscaled",
        "workload=bursty",
        "workload.duration_s=300",
        "fleet.autoscaler.target=8",
        "fleet.warmup.duration_s=60",
    )
    slow = sim.run(cfg(*over, "fleet.warmup.factor=4")).summary
    off = sim.run(cfg(*over, "output.failure_modes.report=true")).summary
    assert off["scaleups_during_warmup"] == 0
    assert slow["scaleups_during_warmup"] > 0 and slow["cold_starts"] >= off["cold_starts"]


# ----------------------------------------------------------------------------- 3. zero traffic


def test_slow_first_iterations_pollute_dynamos_correction_and_it_runs_away():
    """Dynamo's planner reads observed over expected ITL as a correction factor; slow first
    iterations after cold starts inflate it, so the planner adds replicas whose own warm-up
    inflates it again (why Dynamo documents --no-correction "when cold-start artifacts
    dominate"). 60 req/s of Llama-3 8B on H100s for 20 minutes, warm-up 3x for 300 s."""
    base = [
        "fleet=autoscaled",
        "fleet/autoscaler=dynamo",
        "fleet.autoscaler.adjustment_interval_s=60",
        "workload.rate=60",
        "workload.duration_s=1200",
        "output.plots=false",
        "output.requests=false",
    ]
    warm = ["fleet.warmup.factor=3", "fleet.warmup.duration_s=300"]
    clean = sim.run(cfg(*base)).summary
    polluted = sim.run(cfg(*base, *warm)).summary
    off = sim.run(cfg(*base, *warm, "fleet.autoscaler.correction=false")).summary
    assert polluted["itl_correction_max"] > 1.5 * clean["itl_correction_max"]
    assert polluted["mean_replicas"] > 1.5 * clean["mean_replicas"]
    assert polluted["cold_starts"] > 2 * clean["cold_starts"] and polluted["scaleups_during_warmup"] > 0
    assert off["max_replicas"] <= clean["max_replicas"] and "itl_correction_max" not in off


def test_zero_traffic_windows_are_the_long_empty_stretches():
    arrival = np.array([0.0, 5.0, 1000.0, 1001.0])
    finish = np.array([10.0, 20.0, 1002.0, 1010.0])
    w = zero_traffic_windows(arrival, finish, end=2000.0, min_s=100.0)
    assert w.tolist() == [[20.0, 1000.0], [1010.0, 2000.0]]
    assert zero_traffic_windows(arrival, finish, end=1010.0, min_s=100.0).tolist() == [[20.0, 1000.0]]
    spans = [Span(0, 2, False, "active", 0.0, 500.0), Span(0, 2, False, "sleeping", 500.0, 1500.0)]
    gpu_s, spot = held_in_windows(spans, w, sleep_fraction=0.5)
    # active: 2 GPUs x (500 - 20); sleeping at half rate: 2 x 0.5 x ((1000 - 500) + (1500 - 1010))
    assert gpu_s.tolist() == pytest.approx([2 * 480.0, 2 * 0.5 * (500.0 + 490.0)]) and not spot.any()


@pytest.fixture
def two_bursts(tmp_path):
    """A trace with an hour of nothing between two minutes of traffic."""
    rng = np.random.default_rng(1)
    t = np.sort(np.concatenate([rng.uniform(0, 60, 60), rng.uniform(3660, 3720, 60)]))
    path = tmp_path / "bursts.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n" + "".join(f"{x:.3f},500,50\n" for x in t))
    return ("workload=trace", f"workload.path={path}", "workload.format=csv", "fleet=autoscaled")


def test_a_fleet_that_cannot_scale_to_zero_pays_for_the_empty_hour(two_bursts):
    keep = sim.run(cfg(*two_bursts, "fleet.min_replicas=1", "output.failure_modes.report=true"))
    zero = sim.run(cfg(*two_bursts, "fleet.min_replicas=0", "output.failure_modes.report=true"))
    s = keep.summary
    assert 3550 < s["zero_traffic_s"] < 3660  # the hour between the bursts, less their requests
    assert s["idle_zero_traffic_gpu_s"] == pytest.approx(s["zero_traffic_s"])  # one replica through it
    assert s["idle_zero_traffic_cost"] == pytest.approx(s["zero_traffic_s"] * keep.config.gpu.price_per_hour / 3600)
    # scale to zero: held only until the stable window empties, the scale-down delay and the grace pass
    a = zero.config.fleet.autoscaler
    assert zero.summary["idle_zero_traffic_gpu_s"] < a.stable_window_s + a.scale_down_delay_s + a.scale_to_zero_grace_s
    assert zero.summary["gpu_cost"] < s["gpu_cost"] - 0.8 * s["idle_zero_traffic_cost"]
    _conserved(keep)
    _conserved(zero)


# ----------------------------------------------------------------------------- 4. drain


@pytest.mark.parametrize("drain", [True, False])
def test_nothing_is_lost_on_scale_down_with_or_without_drain(drain):
    """Bursts that come and go: the autoscaler sheds busy replicas. With drain none is dropped;
    without, some are, and each is served again."""
    over = (
        "fleet=autoscaled",
        "workload=bursty",
        "workload.duration_s=900",
        "fleet.autoscaler.target=8",
        "fleet.autoscaler.scale_down_delay_s=10",
        f"fleet.drain={str(drain).lower()}",
        "output.failure_modes.report=true",
    )
    r = sim.run(cfg(*over))
    _conserved(r)
    s = r.summary
    assert s["n_rejected"] == 0
    if drain:
        assert s["dropped_on_scale_down"] == 0 and s["gpu_hours.draining"] > 0
    else:
        assert s["dropped_on_scale_down"] > 0 and s["gpu_hours.draining"] == 0


# ----------------------------------------------------------------------------- 5. pending GPUs


def _life(cfg: Config):
    env, life, _ = lifecycle_under_test(cfg)
    return env, life


def test_a_replica_waits_for_a_gpu_unbilled_then_cold_starts():
    c = Config()
    c.fleet.pending_gpu.dist = "exponential"
    c.fleet.pending_gpu.mean_s = 100.0
    env, life = _life(c)
    wait = float(np.random.default_rng(0).exponential(100.0))  # the generator's first draw
    node = life.provision()
    assert node.state == PROVISIONING and node.ready_at == pytest.approx(wait + COLD)
    env.run(until=wait + COLD + 1)
    assert node.state == ACTIVE
    assert [(s.state, s.start, s.end) for s in life.spans] == [(PROVISIONING, pytest.approx(wait), wait + COLD)]
    assert life.pending == [(0, 0.0, pytest.approx(wait))]
    # cancelled while waiting: never billed, the wait recorded up to the cancellation
    other = life.provision()
    env.run(until=env.now + 1)
    life.drain(other)
    assert other.state == STOPPED and len(life.spans) == 1 and life.pending[-1][2] == pytest.approx(env.now)


@pytest.mark.parametrize("dist", ["exponential", "lognormal"])
def test_pending_waits_have_the_configured_mean(dist):
    c = Config()
    c.fleet.pending_gpu.dist = dist
    c.fleet.pending_gpu.mean_s = 120.0
    c.fleet.pending_gpu.sigma = 0.5
    _, life = _life(c)
    n = 4000
    w = np.array([life.pending_wait() for _ in range(n)])
    sd = 120.0 if dist == "exponential" else 120.0 * math.sqrt(math.exp(0.25) - 1)
    assert abs(w.mean() - 120.0) < 4 * sd / math.sqrt(n)


def test_pending_gpu_waits_are_reported_and_not_billed():
    over = (
        "fleet=autoscaled",
        "workload=bursty",
        "workload.duration_s=600",
        "fleet.autoscaler.target=8",
        "fleet.cold_start.fixed_s=30",
    )
    s = sim.run(cfg(*over, "fleet.pending_gpu.dist=exponential", "fleet.pending_gpu.mean_s=90")).summary
    assert s["pending_gpu_waits"] == s["cold_starts"] > 0
    assert 0 < s["pending_gpu_wait_s_mean"] <= s["pending_gpu_wait_s_p95"] * 3
    # billed starting time: whole cold starts only (those cut short by a scale-down bill less)
    assert s["gpu_hours.provisioning"] * 3600 <= s["cold_starts"] * 30 + 1e-6


# ----------------------------------------------------------------------------- config and plot


@pytest.mark.parametrize(
    "key, value",
    [
        ("fleet.warmup.factor", 0.5),
        ("fleet.warmup.duration_s", -1.0),
        ("fleet.pending_gpu.mean_s", 0.0),
        ("fleet.pending_gpu.sigma", 0.0),
        ("output.failure_modes.reversal_intervals", 0),
        ("output.failure_modes.zero_traffic_s", 0.0),
    ],
)
def test_bad_values_name_the_key(key, value):
    c = Config()
    c.fleet.pending_gpu.dist = "lognormal"
    c.fleet.pending_gpu.mean_s = 10.0
    group, *path = key.split(".")
    obj = getattr(c, group)
    for p in path[:-1]:
        obj = getattr(obj, p)
    setattr(obj, path[-1], value)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(c)


def test_the_fleet_plot_title_counts_each_failure_mode():
    s = dict.fromkeys(FAILURE_KEYS, 0)
    s.update(autoscale_reversals=3, reversal_cold_starts=2, dropped_on_scale_down=7, idle_zero_traffic_cost=1.5)
    title = failure_title(s)
    for words in ("3 reversals (2 cold starts)", "7 dropped on scale-down", "0 GPU waits", "1.50"):
        assert words in title
    assert failure_title({}) == ""
