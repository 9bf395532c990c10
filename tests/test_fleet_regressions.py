"""Fleet corner cases found by a randomised review: each test pins one fixed bug (hangs, crashes,
fast-forward/reference disagreements, lifecycle and billing rules)."""

from __future__ import annotations

import signal

import numpy as np
import pandas as pd
import pytest

import sim
from sim.des.api import ApiBackend
from sim.workload.build import Workload
from tests.conftest import cfg


@pytest.fixture(autouse=True)
def no_hang():
    """A run that never ends fails after 120 s instead of stalling the suite."""

    def stop(*_):
        raise TimeoutError("the simulation did not finish: requests wait forever")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def run(*over: str, workload: Workload | None = None) -> sim.Result:
    return sim.run(cfg(*over), workload=workload)


def served_all(r: sim.Result) -> bool:
    return r.summary["n_gpu"] + r.summary["n_api"] == r.summary["n_requests"]


def wl(arrivals, prompt=500, output=50) -> Workload:
    n = len(arrivals)
    return Workload(np.asarray(arrivals, float), np.full(n, prompt, np.int64), np.full(n, output, np.int64))


def test_spot_preemption_of_an_idle_replica():
    r = run(
        "workload.duration_s=300",
        "workload.rate=0.2",
        "fleet.replicas=2",
        "fleet.pricing.kind=spot",
        "fleet.pricing.spot_preemptions_per_hour=60",
    )
    assert r.summary["spot_preemptions"] > 0 and served_all(r)


@pytest.mark.parametrize("metric", ["running", "kv", "tokens_per_s"])
def test_scale_from_zero_whatever_the_metric(metric):
    target = "1000" if metric == "tokens_per_s" else "0.5"
    over = (
        "fleet=autoscaled",
        "fleet.replicas=0",
        "fleet.min_replicas=0",
        "fleet.max_replicas=2",
        f"fleet.autoscaler.metric={metric}",
        f"fleet.autoscaler.target={target}",
    )
    r = run("workload.duration_s=60", "workload.rate=1", *over, "fleet.autoscaler.scale_to_zero_grace_s=0")
    assert served_all(r)
    # back to zero after the first requests, then one more arrives
    r = run(*over, workload=wl([1.0, 2.0, 3.0, 300.0]))
    assert served_all(r) and r.summary["replicas_started"] >= 2


def test_a_schedule_of_zeros_still_serves_what_arrives():
    r = run(
        "workload.duration_s=30",
        "workload.rate=1",
        "fleet=autoscaled",
        "fleet/autoscaler=schedule",
        "fleet.replicas=0",
        "fleet.min_replicas=0",
        "fleet.max_replicas=2",
        f"fleet.autoscaler.schedule={[0] * 24}",
    )
    assert served_all(r)


def test_a_request_larger_than_the_token_limit_is_never_retried():
    one = wl([0.0], prompt=3000, output=100)
    api = ("api=default", "api.overflow=always", "api.tpm=1000", "api.on_limit=backoff")
    pure = run("fleet.replicas=0", *api, workload=one)
    assert pure.summary["n_rejected"] == 1
    assert pure.requests["reject_reason"].iloc[0] == "api_refused_and_no_gpu"
    assert run("fleet.replicas=1", *api, workload=one).summary["n_gpu"] == 1


def test_backoff_stays_finite_however_many_refusals():
    backlog = wl(np.zeros(30), prompt=100, output=10)
    r = run(
        "fleet.replicas=0",
        "api=default",
        "api.overflow=always",
        "api.rpm=1",
        "api.on_limit=backoff",
        "api.backoff_max_s=1",
        workload=backlog,
    )
    assert r.summary["n_api"] == 30
    api = ApiBackend(cfg("api=default").api, np.random.default_rng(0))
    assert 0 < api.retry_delay(5000) <= cfg("api=default").api.backoff_max_s


@pytest.mark.parametrize(("metric", "target"), [("running", "8"), ("kv", "0.3")])
def test_fast_forward_equals_reference_with_engine_state_metrics(metric, target):
    over = (
        "workload.duration_s=120",
        "workload.rate=8",
        "seed=1",
        "fleet=autoscaled",
        "fleet.replicas=1",
        "fleet.min_replicas=1",
        "fleet.max_replicas=4",
        f"fleet.autoscaler.metric={metric}",
        f"fleet.autoscaler.target={target}",
        "fleet.autoscaler.stable_window_s=10",
        "fleet.autoscaler.panic_window_s=2",
        "fleet.autoscaler.scale_down_delay_s=10",
        "fleet.cold_start.fixed_s=5",
    )
    a = run(*over, "engine.fast_forward=true")
    b = run(*over, "engine.fast_forward=false")
    pd.testing.assert_frame_equal(a.requests, b.requests)


def test_an_idle_replica_predicts_from_an_empty_batch():
    """After a merged head finished, an idle replica's view must not count it again."""
    two = Workload(np.array([0.0, 30.0]), np.array([1500, 100], np.int64), np.array([20, 20], np.int64))
    routes = {}
    for ff in ("true", "false"):
        r = run("api=default", "api.overflow=ttft", "slo.ttft_s=0.042", f"engine.fast_forward={ff}", workload=two)
        routes[ff] = r.requests["route"].tolist()
    assert routes["true"] == routes["false"] == ["gpu", "gpu"]


def test_evacuated_requests_look_up_the_new_replicas_prefix_cache(monkeypatch):
    from sim.des import fleet

    stale = []
    submit = fleet.Fleet._submit

    def spy(self, node, req):
        if node.cache is not None and req.computed != 0:
            stale.append(req.id)  # arrives with a hit from another replica's cache
        return submit(self, node, req)

    monkeypatch.setattr(fleet.Fleet, "_submit", spy)
    r = run(
        "workload=trace",
        "workload.path=traces/synthetic_mooncake.jsonl",
        "workload.format=mooncake",
        "workload.rate_scale=3",
        "engine.prefix_caching=true",
        "fleet.router=prefix_aware",
        "fleet.replicas=2",
        "engine.max_num_seqs=4",
        "fleet.pricing.kind=spot",
        "fleet.pricing.spot_preemptions_per_hour=30",
        "seed=3",
    )
    assert r.summary["spot_preemptions"] > 0 and served_all(r)
    assert stale == []


def _peak(spans, states=("provisioning", "active", "sleeping", "waking")) -> int:
    events = sorted(e for s in spans if s.state in states for e in ((s.start, 1), (s.end, -1)))
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    return peak


def test_max_replicas_holds_through_spot_preemptions():
    r = run(
        "workload.duration_s=600",
        "workload.rate=15",
        "fleet=autoscaled",
        "fleet.replicas=2",
        "fleet.min_replicas=2",
        "fleet.max_replicas=2",
        "fleet.autoscaler.target=8",
        "fleet.pricing.kind=spot",
        "fleet.pricing.spot_preemptions_per_hour=20",
        "seed=2",
    )
    assert r.summary["spot_preemptions"] > 0
    assert _peak(r.spans) <= 2


def test_a_replica_ready_with_nothing_to_do_can_sleep():
    one = wl([600.0], prompt=100, output=10)
    sleep = (
        "fleet.replicas=2",
        "fleet.sleep.enabled=true",
        "fleet.sleep.idle_s=10",
        "fleet.sleep.min_awake=0",
        "fleet.sleep.cost_fraction=0",
    )
    warm = run(*sleep, workload=one)
    cold = run(*sleep, "fleet.start_warm=false", workload=one)
    assert cold.summary["sleeps"] >= 2  # both slept after their cold start, before the request
    assert cold.summary["gpu_cost"] < 5 * warm.summary["gpu_cost"]


def test_sleeping_replicas_beyond_the_load_are_shed():
    burst = Workload(
        np.concatenate([np.linspace(0, 20, 200), [3600.0]]), np.full(201, 500, np.int64), np.full(201, 50, np.int64)
    )
    over = (
        "fleet=autoscaled",
        "fleet.replicas=3",
        "fleet.min_replicas=0",
        "fleet.max_replicas=3",
        "fleet.autoscaler.target=2",
        "fleet.autoscaler.scale_down_delay_s=300",
        "fleet.autoscaler.stable_window_s=10",
        "fleet.autoscaler.panic_window_s=2",
        "fleet.autoscaler.scale_to_zero_grace_s=0",
        "fleet.sleep.idle_s=15",
        "fleet.sleep.min_awake=0",
    )
    awake = run(*over, "fleet.sleep.enabled=false", workload=burst)
    asleep = run(*over, "fleet.sleep.enabled=true", workload=burst)
    assert asleep.summary["gpu_cost"] <= awake.summary["gpu_cost"] * 1.05


def test_no_scale_down_delay():
    r = run(
        "workload.duration_s=60",
        "workload.rate=2",
        "fleet=autoscaled",
        "fleet.replicas=3",
        "fleet.autoscaler.scale_down_delay_s=0",
    )
    assert served_all(r) and r.summary["mean_replicas"] < 3


@pytest.mark.parametrize("billing", ["per_second", "per_hour"])
def test_a_reservation_covering_the_fleet_leaves_nothing_on_demand(billing):
    r = run(
        "workload.duration_s=120",
        "workload.rate=1",
        "fleet.pricing.kind=reserved",
        "fleet.pricing.reserved_gpus=1",
        f"fleet.pricing.billing={billing}",
        "fleet.pricing.min_billed_s=600",
    )
    assert r.summary["gpu_cost_on_demand"] == 0.0
    assert r.summary["gpu_cost"] == pytest.approx(r.summary["gpu_cost_reserved"])


def test_a_fleet_starting_at_zero_starts_nothing_before_traffic():
    r = run("fleet=autoscaled", "fleet.replicas=0", "fleet.min_replicas=0", workload=wl([1800.0], 100, 10))
    assert r.summary["replicas_started"] == 1
    assert min(s.start for s in r.spans) >= 1800.0


def test_the_api_serves_requests_no_replica_could_hold():
    huge = wl([0.0], prompt=200_000, output=10)  # beyond Llama-3 8B's context on one H100
    r = run("fleet.replicas=0", "api=default", "api.overflow=always", workload=huge)
    assert r.requests["route"].tolist() == ["api"]
    r = run("fleet.replicas=1", "api=default", "api.overflow=ttft", workload=huge)
    assert r.requests["route"].tolist() == ["api"]  # only the API can take it
    r = run("fleet.replicas=1", "api=default", "api.overflow=never", workload=huge)
    assert r.requests["reject_reason"].tolist() == ["exceeds_max_model_len"]  # never means never
    r = run("fleet.replicas=1", workload=huge)
    assert r.requests["reject_reason"].tolist() == ["exceeds_max_model_len"]
