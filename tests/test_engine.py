"""Model tests: the engine against queueing theory, conservation, determinism, the KV invariant,
and fast-forward against the per-iteration reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from sim.des.engine import DECODE, Replica
from sim.hardware.perf import build_perf
from tests.conftest import cfg

FIXED = (
    "workload.prompt_tokens.dist=fixed",
    "workload.prompt_tokens.mean=512",
    "workload.output_tokens.dist=fixed",
    "workload.output_tokens.mean=64",
)

# Workloads on which both engine modes must agree: mixed lengths, multiple replicas, chunked
# prefill of long prompts, preemption under KV pressure, MoE, tensor parallelism, no chunking.
EQUIVALENCE_CASES = {
    "mixed-lengths": ("workload.duration_s=120", "workload.rate=12"),
    "two-replicas-rr": ("workload.duration_s=60", "workload.rate=40", "fleet.replicas=2", "fleet.router=round_robin"),
    "chunked-prefill": (
        "workload.duration_s=60",
        "workload.rate=4",
        "workload.prompt_tokens.mean=6000",
        "workload.prompt_tokens.p99=30000",
        "engine.max_num_batched_tokens=1024",
    ),
    "kv-pressure": (
        "workload.duration_s=60",
        "workload.rate=20",
        "engine.gpu_memory_utilization=0.3",
        "engine.max_num_batched_tokens=512",
    ),
    "moe-tp2": ("workload.duration_s=60", "workload.rate=15", "model=qwen3-30b-a3b", "engine.tensor_parallel_size=2"),
    "no-chunking": (
        "workload.duration_s=60",
        "workload.rate=8",
        "engine.enable_chunked_prefill=false",
        "engine.max_model_len=16384",
        "engine.max_num_batched_tokens=16384",
    ),
    "sparse-kv-pressure": (
        "workload.duration_s=300",
        "workload.rate=1.5",
        "workload.output_tokens.mean=1500",
        "workload.output_tokens.p99=4000",
        "engine.gpu_memory_utilization=0.32",
    ),
    "one-hour-bursty": ("workload=bursty", "workload.rate=3"),
    "seq-limit": (
        "workload.duration_s=60",
        "workload.rate=10",
        "engine.max_num_seqs=4",
        "engine.max_num_batched_tokens=2048",
    ),
    # vLLM V1 prefix caching: hits found when scheduled, shared blocks held once, LRU eviction,
    # preempted requests reusing their cached blocks; with async scheduling (the default)
    "prefix-cache-kv-pressure": (
        "workload.duration_s=120",
        "workload.rate=12",
        "workload.shared_prefix.groups=6",
        "workload.shared_prefix.tokens=3000",
        "workload.prompt_tokens.mean=3500",
        "workload.output_tokens.mean=600",
        "engine.prefix_caching=true",
        "engine.gpu_memory_utilization=0.3",
        "engine.max_num_batched_tokens=2048",
    ),
    "prefix-cache-routed": (
        "workload.duration_s=60",
        "workload.rate=30",
        "workload.shared_prefix.groups=8",
        "workload.shared_prefix.tokens=1500",
        "engine.prefix_caching=true",
        "fleet.replicas=3",
        "fleet.router=prefix_aware",
    ),
    "full-prompt-admission-kv-pressure": (
        "workload.duration_s=60",
        "workload.rate=20",
        "workload.prompt_tokens.mean=3000",
        "engine.gpu_memory_utilization=0.3",
        "engine.max_num_batched_tokens=512",
        "engine.admission=full_prompt",
    ),
    "long-prefill-threshold-sync": (
        "workload.duration_s=60",
        "workload.rate=4",
        "workload.prompt_tokens.mean=6000",
        "workload.prompt_tokens.p99=30000",
        "engine.long_prefill_token_threshold=700",
        "engine.async_scheduling=false",
    ),
}


def _compare(a, b, what):
    """Per-request event times (start, first token, finish) agree to 1e-9 relative; durations
    derived from them (queue, TTFT, end-to-end, TPOT) to the same absolute precision."""
    horizon = float(np.nanmax(b["finish_s"]))
    for col in ("start", "first", "finish_s"):
        x, y = _event_times(a, col), _event_times(b, col)
        assert np.array_equal(np.isnan(x), np.isnan(y)), f"{what}: {col} NaN pattern differs"
        m = ~np.isnan(x)
        rel = np.abs(x[m] - y[m]) / np.maximum(np.abs(y[m]), 1e-300)
        assert rel.max(initial=0) <= 1e-9, f"{what}: {col} differs by {rel.max():.3g}"
    for col in ("queue_s", "ttft_s", "e2e_s"):
        assert np.allclose(a[col], b[col], rtol=1e-9, atol=1e-9 * horizon, equal_nan=True), f"{what}: {col}"
    assert np.allclose(a["tpot_s"], b["tpot_s"], rtol=1e-9, atol=1e-9 * horizon, equal_nan=True), what
    assert (a["preemptions"].to_numpy() == b["preemptions"].to_numpy()).all()
    assert (a["replica"].to_numpy() == b["replica"].to_numpy()).all()


def _event_times(df, col):
    if col == "start":
        return (df.arrival_s + df.queue_s).to_numpy()
    if col == "first":
        return (df.arrival_s + df.ttft_s).to_numpy()
    return df[col].to_numpy()


@pytest.mark.parametrize("case", sorted(EQUIVALENCE_CASES))
def test_fast_forward_equals_per_iteration(case):
    over = EQUIVALENCE_CASES[case]
    fast = sim.run(cfg(*over, "engine.fast_forward=true"))
    slow = sim.run(cfg(*over, "engine.fast_forward=false"))
    _compare(fast.requests, slow.requests, case)
    assert fast.summary["iterations"] == slow.summary["iterations"]
    assert fast.summary["engine_events"] <= slow.summary["engine_events"]
    if "kv-pressure" in case:
        assert fast.summary["preemptions"] > 0, "the KV-pressure cases must preempt"
    if "prefix-cache" in case:
        assert (fast.requests["cached_tokens"] > 0).mean() > 0.3, "the prefix-cache cases must hit"
    if case == "chunked-prefill":
        assert (fast.requests["prompt_tokens"] > 1024).sum() > 10


def _two_modes(c, wl):
    import copy

    out = {}
    for fast in (True, False):
        cc = copy.deepcopy(c)
        cc.engine.fast_forward = fast
        out[fast] = sim.run(cc, workload=wl)
    return out[True], out[False]


@pytest.mark.parametrize("chunked", [True, False])
def test_a_request_left_behind_at_a_planned_cut_joins_one_iteration_later(chunked):
    """Regression: B arrives while a cut for A is planned but cannot join it (A's prefill takes
    the token budget); the iteration after A's prefill has the budget again, so B joins there,
    not when the decode run after A ends."""
    from sim.workload.build import Workload

    c = cfg()
    if chunked:  # the decoder plus A's 511 tokens fill the 512-token budget exactly
        c.engine.max_num_batched_tokens = 512
        p = [100, 511, 50]
    else:
        c.engine.enable_chunked_prefill = False
        c.engine.max_model_len = c.engine.max_num_batched_tokens = 8192
        p = [100, 5000, 4000]
    wl = Workload(np.array([0.0, 1.0, 1.0 + 1e-6]), np.array(p), np.array([2000, 500, 10]))
    fast, slow = _two_modes(c, wl)
    _compare(fast.requests, slow.requests, "left behind")
    assert fast.requests.ttft_s[2] < 0.5  # one or two iterations, not the rest of a decode run


def test_preempting_a_decoder_keeps_the_tokens_it_produced():
    """Two long requests that cannot both fit: the newer is preempted mid-decode, recomputes
    prompt + produced tokens, and decodes only what is left (not its whole output again)."""
    from sim.hardware.kvcache import memory_plan
    from sim.workload.build import Workload

    # a cache of ~6,000 tokens (the fixed 3.5 GiB reserve): the recompute fits one 8192-token chunk,
    # so the preempted request is re-admitted whole, once. When the recompute needs more than one
    # chunk (the profiled cache, 19,328 tokens here) it is re-admitted on its first chunk and
    # preempted again mid-prefill, hundreds of times, as vLLM's scheduler would do.
    c = cfg("engine.gpu_memory_utilization=0.24", "engine.reserve_gib=3.5")
    kv = memory_plan(c.model, c.gpu, c.engine).kv_tokens
    out = int(kv * 0.6)
    wl = Workload(np.zeros(2), np.array([100, 100]), np.array([out, out]))
    fast, slow = _two_modes(c, wl)
    _compare(fast.requests, slow.requests, "preempt")
    assert slow.requests.preemptions.tolist() == [0, 1]
    # request 0 decodes out - 1 steps alone or alongside; request 1 adds only its remainder
    assert slow.summary["iterations"] < 1.3 * out
    assert slow.requests.e2e_s[1] < 1.6 * slow.requests.e2e_s[0]


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_an_arrival_exactly_at_a_boundary_joins_the_next_iteration(async_scheduling):
    """Tie rule: an iteration boundary is processed before an arrival at the same instant. With
    async scheduling the iteration after it was formed when that boundary's iteration started,
    so the request joins one iteration later still."""
    from sim.hardware.perf import build_perf
    from sim.workload.build import Workload

    c = cfg(f"engine.async_scheduling={str(async_scheduling).lower()}")
    perf = build_perf(c.model, c.gpu, c.engine)
    head = perf.iteration_time(0, 0, [(300, 0)])  # A's prefill iteration, from t = 0
    nxt = perf.iteration_time(1, 300, [])  # the decode step that starts at `head`
    wl = Workload(np.array([0.0, head]), np.array([300, 200]), np.array([400, 300]))
    fast, slow = _two_modes(c, wl)
    _compare(fast.requests, slow.requests, "tie")
    wait = nxt + (perf.iteration_time(1, 301, []) if async_scheduling else 0.0)
    assert slow.requests.queue_s[1] == pytest.approx(wait, rel=1e-12)


def test_async_scheduling_delays_joining_by_one_iteration():
    """A request arriving mid-iteration joins the next iteration (sync) or the one after (async),
    in both engine modes; an idle replica starts it at once either way."""
    from sim.hardware.perf import build_perf
    from sim.workload.build import Workload

    waits = {}
    for mode in (False, True):
        c = cfg(f"engine.async_scheduling={str(mode).lower()}")
        perf = build_perf(c.model, c.gpu, c.engine)
        head = perf.iteration_time(0, 0, [(300, 0)])
        wl = Workload(np.array([0.0, head + 1e-4]), np.array([300, 200]), np.array([400, 300]))
        fast, slow = _two_modes(c, wl)
        _compare(fast.requests, slow.requests, "async")
        assert slow.requests.queue_s[0] == 0.0
        steps = [perf.iteration_time(1, 300 + k, []) for k in range(3)]
        end = head + sum(steps[: 2 if mode else 1])
        assert slow.requests.queue_s[1] == pytest.approx(end - head - 1e-4, rel=1e-9)
        waits[mode] = slow.requests.queue_s[1]
    assert waits[True] > waits[False]


def test_bad_custom_workloads_are_refused():
    from sim.config.errors import UserError
    from sim.workload.build import Workload

    for wl in (
        Workload(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)),
        Workload(np.array([1.0, 0.5]), np.array([5, 5]), np.array([5, 5])),
        Workload(np.array([0.0, 1.0]), np.array([5, 0]), np.array([5, 5])),
    ):
        with pytest.raises(UserError, match="workload"):
            sim.run(cfg(), workload=wl)


def test_fast_forward_saves_events_on_decode_heavy_work():
    over = (
        "workload.duration_s=120",
        "workload.rate=2",
        "workload.output_tokens.mean=1000",
        "workload.output_tokens.p99=3000",
    )
    fast = sim.run(cfg(*over))
    slow = sim.run(cfg(*over, "engine.fast_forward=false"))
    assert slow.summary["engine_events"] == slow.summary["iterations"]
    assert fast.summary["engine_events"] * 20 < slow.summary["engine_events"]


def test_events_grow_with_requests_not_tokens():
    """Same arrivals, outputs 1x / 4x / 16x longer: engine events per request stay flat, while
    the per-iteration reference needs one event per iteration."""
    base = ("workload.duration_s=300", "workload.rate=4", "fleet.replicas=2", "workload.output_tokens.dist=fixed")
    events = []
    for out in (100, 400, 1600):
        s = sim.run(cfg(*base, f"workload.output_tokens.mean={out}")).summary
        assert s["output_tokens"] == out * s["n_requests"]
        events.append(s["engine_events"] / s["n_requests"])
    assert max(events) < 1.3 * min(events)
    assert s["iterations"] > 20 * s["engine_events"]


def _brute_blocks(rep: Replica, x: int) -> int:
    """Blocks held by the running requests, computed request by request."""
    total = 0
    for req in rep.running.values():
        if req.state == DECODE:
            total += -(-(req.o + x) // rep.bs)
        else:
            total += req.blocks
    return total


KV_CASES = {
    "saturated": EQUIVALENCE_CASES["kv-pressure"],
    # few arrivals per replica: most requests join by cutting a decode run
    "sparse": EQUIVALENCE_CASES["sparse-kv-pressure"],
}


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("case", sorted(KV_CASES))
def test_kv_blocks_never_exceed_capacity(monkeypatch, fast, case):
    checked = {"n": 0, "peak": 0.0}
    original = Replica._schedule

    def checking(self, now):
        duration = original(self, now)
        # after scheduling, blocks for the iteration at g are allocated
        held = _brute_blocks(self, self.g + 1)
        assert held <= self.total_blocks
        agg = self.held_other + (self.decoders.blocks_after(self.g + 1) if self.decoders.n else 0)
        assert agg == held
        # every iteration of the segment (head, then decode run) stays within capacity
        for x in range(self.g + 1, self.g + self._seg_iters + 1):
            assert _brute_blocks(self, x) <= self.total_blocks
        checked["n"] += 1
        checked["peak"] = max(checked["peak"], held / self.total_blocks)
        return duration

    planned = Replica._materialize

    def checking_planned(self):
        planned(self)  # a segment planned at a cut becomes current
        for x in range(self.g + 1, self.g + self._seg_iters + 1):
            assert _brute_blocks(self, x) <= self.total_blocks
        checked["cuts"] = checked.get("cuts", 0) + 1

    monkeypatch.setattr(Replica, "_schedule", checking)
    monkeypatch.setattr(Replica, "_materialize", checking_planned)
    r = sim.run(cfg(*KV_CASES[case], f"engine.fast_forward={str(fast).lower()}"))
    assert checked["n"] > 200
    assert checked["peak"] > 0.95, "the case should fill the cache"
    assert r.summary["preemptions"] > 0
    if fast and case == "sparse":
        assert checked.get("cuts", 0) > 100, "segments planned at cuts must be checked too"


def test_ttft_at_least_the_prefill_alone():
    over = ("workload.duration_s=120", "workload.rate=15", "engine.max_num_batched_tokens=2048")
    r = sim.run(cfg(*over))
    c = r.config
    perf = build_perf(c.model, c.gpu, c.engine)
    budget = c.engine.max_num_batched_tokens
    df = r.requests[r.requests.route == "gpu"]
    for p, ttft in zip(df.prompt_tokens.to_numpy(), df.ttft_s.to_numpy(), strict=True):
        alone = 0.0
        done = 0
        while done < p:
            chunk = min(budget, p - done)
            alone += perf.iteration_time(0, 0, [(chunk, done)])
            done += chunk
        assert ttft >= alone * (1 - 1e-12)


def test_conservation_with_rejections():
    over = ("workload.duration_s=120", "workload.rate=10", "engine.max_model_len=3000")
    r = sim.run(cfg(*over))
    df, s = r.requests, r.summary
    assert s["n_gpu"] + s["n_api"] + s["n_rejected"] == s["n_requests"] == len(df)
    assert s["n_rejected"] > 0 and s["n_gpu"] > 0
    rejected = df[df.route == "rejected"]
    assert ((rejected.prompt_tokens + rejected.output_tokens) > 3000).all()
    assert (rejected.reject_reason == "exceeds_max_model_len").all()
    served = df[df.route == "gpu"]
    assert ((served.prompt_tokens + served.output_tokens) <= 3000).all()
    assert served.finish_s.notna().all() and served.ttft_s.notna().all()
    assert s["input_tokens"] == served.prompt_tokens.sum()
    assert s["output_tokens"] == served.output_tokens.sum()
    assert set(df.route) <= {"gpu", "api", "rejected"}
    assert (served.finish_s >= served.arrival_s + served.ttft_s - 1e-12).all()
    assert r.timeseries.arrivals.sum() == s["n_requests"]
    assert r.timeseries.completions.sum() == s["n_gpu"]


def test_determinism_byte_identical_requests(tmp_path):
    over = ("workload.duration_s=60", "workload.rate=10", "fleet.replicas=2")
    a = sim.run(cfg(*over, "seed=7")).save(tmp_path / "a")
    b = sim.run(cfg(*over, "seed=7")).save(tmp_path / "b")
    c = sim.run(cfg(*over, "seed=8")).save(tmp_path / "c")
    assert (a / "requests.parquet").read_bytes() == (b / "requests.parquet").read_bytes()
    assert (a / "timeseries.csv").read_bytes() == (b / "timeseries.csv").read_bytes()
    assert (a / "requests.parquet").read_bytes() != (c / "requests.parquet").read_bytes()
    import json

    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    sa.pop("wall_time_s")
    sb.pop("wall_time_s")
    assert sa == sb


def test_littles_law_on_the_time_series():
    c = cfg("workload.duration_s=1800", "workload.rate=10", "output.timeseries_interval_s=30")
    r = sim.run(c)
    ts, df = r.timeseries, r.requests
    horizon = ts.interval_s.sum()
    assert horizon == pytest.approx(r.summary["sim_duration_s"], rel=1e-12)
    mean_in_system = (ts.in_system * ts.interval_s).sum() / horizon
    lam = len(df) / horizon  # measured arrival rate over the same horizon
    # the fleet holds a request from arrival to its last token; the client's end-to-end time adds
    # the API server's time outside the engine (engine.request_overhead_ms)
    held = df.e2e_s.mean() - c.engine.request_overhead_ms / 1000
    assert mean_in_system == pytest.approx(lam * held, rel=1e-6)
    # and against the configured rate: Poisson count noise 1/sqrt(18000) = 0.75 %, drain < 1 %
    assert mean_in_system == pytest.approx(10.0 * held, rel=0.03)


@pytest.mark.slow
def test_md1_mean_queue_wait():
    """One replica, one sequence at a time, fixed lengths, Poisson arrivals at rho = 0.7."""
    c = cfg(*FIXED, "engine.max_num_seqs=1")
    perf = build_perf(c.model, c.gpu, c.engine)
    service = perf.iteration_time(0, 0, [(512, 0)]) + perf.decode_run(1, 512, 63).time(63)
    rho = 0.7
    lam = rho / service
    n = 200_000
    r = sim.run(
        cfg(*FIXED, "engine.max_num_seqs=1", f"workload.rate={lam}", f"workload.duration_s={n / lam}", "seed=3")
    )
    df = r.requests
    # every request's own service time is exactly D (plus the API server's time outside the engine)
    assert np.allclose(df.e2e_s - df.queue_s, service + c.engine.request_overhead_ms / 1000, rtol=1e-9)
    wait = df.queue_s.to_numpy()
    theory = rho * service / (2 * (1 - rho))
    # waits are autocorrelated: standard error from 50 batch means
    batches = wait[: len(wait) // 50 * 50].reshape(50, -1).mean(axis=1)
    se = batches.std(ddof=1) / math.sqrt(50)
    assert 0.05 * theory >= 3 * se, "sample too small for a 5 % tolerance"
    assert wait.mean() == pytest.approx(theory, rel=0.05)
