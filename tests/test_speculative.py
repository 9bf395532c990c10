"""Speculative decoding (engine.speculative, sim.hardware.speculative): the closed form of tokens
per target step against the acceptance process, the simulated decode time against a step-by-step
draw, the direction of the speed-up, both engine modes, memory, cost and conservation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import sim
from sim.config.schema import load_option
from sim.hardware.kvcache import memory_plan, weight_bytes
from sim.hardware.perf import build_perf, saturation_throughput
from sim.hardware.speculative import SpeculativePerf, tokens_per_step
from tests.conftest import assert_conserved, cfg
from tests.test_engine import _compare

DRAFT = ("engine.speculative.method=draft", "engine.speculative.draft_model=llama3.2-1b")
MTP = ("engine.speculative.method=mtp",)
DRAFT_KW = {"engine.speculative.method": "draft", "engine.speculative.draft_model": "llama3.2-1b"}
MTP_KW = {"engine.speculative.method": "mtp"}


@pytest.fixture(scope="module")
def base():
    """The default config, composed once (composing costs more than a short run)."""
    return cfg()


def with_(c, values: dict | None = None, **kw):
    """A copy of config `c` with dotted keys set (values typed as the schema declares them)."""
    import copy

    out = copy.deepcopy(c)
    for key, value in {**(values or {}), **kw}.items():
        *path, last = key.split(".")
        node = out
        for part in path:
            node = getattr(node, part)
        setattr(node, last, value)
    return out


def _accepted(rng: np.random.Generator, a: float, k: int, steps: int) -> np.ndarray:
    """Tokens each of `steps` target steps emits: drafts accepted one by one (each with
    probability a) until the first rejection, plus the target's own token."""
    ok = rng.random((steps, k)) < a
    return np.cumprod(ok, axis=1).sum(axis=1) + 1


@pytest.mark.parametrize(("a", "k"), [(0.8, 3), (0.6, 5), (0.1, 3), (0.0, 2), (0.95, 8)])
def test_tokens_per_step_matches_the_acceptance_process(a, k):
    """Leviathan et al. 2023, eq. 1: the mean of 200,000 simulated steps is the closed form
    within 4 standard errors, and within 1%."""
    n = 200_000
    x = _accepted(np.random.default_rng(14), a, k, n)
    e = tokens_per_step(a, k)
    se = x.std() / math.sqrt(n)
    assert abs(x.mean() - e) <= 4 * se + 1e-12
    assert abs(x.mean() / e - 1) < 0.01
    assert 1.0 <= e <= k + 1


def _perf(c):
    return build_perf(c.model, c.gpu, c.engine)


def test_simulated_decode_time_matches_a_step_by_step_draw():
    """One sequence at a time: the engine's decode time (e2e - TTFT) equals the mean time of
    a step-by-step draw of the acceptance process, each target step costing its verify and draft
    passes at the context the accepted tokens reached; the tokens per step the draw implies are
    the closed form within 1%."""
    prompt, out = 500, 1500
    over = (
        *DRAFT,
        "engine.speculative.acceptance=0.8",
        "workload.arrival=uniform",
        "workload.rate=0.05",
        "workload.duration_s=60",
        "workload.prompt_tokens.dist=fixed",
        f"workload.prompt_tokens.mean={prompt}",
        "workload.output_tokens.dist=fixed",
        f"workload.output_tokens.mean={out}",
    )
    c = cfg(*over)
    perf = _perf(c)
    assert isinstance(perf, SpeculativePerf)
    r = sim.run(c)
    decode = (r.requests.e2e_s - r.requests.ttft_s).to_numpy()
    assert len(decode) >= 2 and np.ptp(decode) < 1e-9 * decode.max()  # alone each time: all alike

    rng = np.random.default_rng(7)
    reps, times, steps = 60, [], []
    for _ in range(reps):
        ctx, made, t, s = prompt, 0, 0.0, 0
        for x in _accepted(rng, 0.8, 3, out):  # more steps than needed
            if made >= out - 1:
                break
            t += perf.step_time(1, ctx, [])
            ctx += x
            made += x
            s += 1
        times.append(t)
        steps.append(s)
    times = np.array(times)
    se = times.std() / math.sqrt(reps)
    assert abs(decode[0] - times.mean()) <= 4 * se + 0.003 * times.mean()  # (+ the last step's overshoot)
    assert abs((out - 1) / np.mean(steps) / perf.tokens_per_step - 1) < 0.01


def test_tpot_falls_with_good_acceptance_at_low_load(base):
    """llama3-8b on an H100 at 0.5 req/s: a = 0.8, k = 3 cuts TPOT (draft model and MTP); a = 0.1
    with a draft model raises it (the draft's passes cost more than the tokens it saves)."""
    low = with_(base, {"workload.duration_s": 60.0, "workload.rate": 0.5, "seed": 3})
    tpot = {}
    for name, kw, a in (
        ("none", {}, None),
        ("draft-0.8", DRAFT_KW, 0.8),
        ("mtp-0.8", MTP_KW, 0.8),
        ("draft-0.1", DRAFT_KW, 0.1),
    ):
        s = sim.run(with_(low, kw, **({"engine.speculative.acceptance": a} if a else {}))).summary
        tpot[name] = s["tpot_p50"]
        if a:
            assert s["spec_tokens_per_step"] == pytest.approx(tokens_per_step(a, 3))
        else:
            assert "spec_tokens_per_step" not in s
    assert tpot["draft-0.8"] < 0.7 * tpot["none"]
    assert tpot["mtp-0.8"] < tpot["draft-0.8"]  # one target layer drafts cheaper than a 1B model
    assert tpot["draft-0.1"] > tpot["none"]


def test_speculation_hurts_a_large_compute_bound_batch(base):
    """Per output token: at batch 1 the verify pass reads the weights once for k + 1 tokens
    (memory-bound, a win); at 1024 sequences of short context the matmuls bound the step, and
    k + 1 times the FLOPs cost more than E tokens return; at long context the KV reads bound it
    again, and speculation still pays."""
    plain = build_perf(base.model, base.gpu, base.engine)
    spec = _perf(with_(base, DRAFT_KW, **{"engine.speculative.acceptance": 0.8}))
    ratio = {
        (b, c): spec.iteration_time(b, b * c, []) / plain.iteration_time(b, b * c, [])
        for b, c in [(1, 1000), (1024, 100), (1024, 2000)]
    }
    assert ratio[1, 1000] < 0.6
    assert ratio[1024, 100] > 1.1
    assert ratio[1024, 2000] < 1.0


def test_iteration_time_conserves_a_mixed_steps_time(base):
    """A mixed iteration plus the E - 1 decode iterations its decoders' other tokens take cost
    one real mixed target step; decode-only iterations cost T_step / E."""
    spec = _perf(with_(base, MTP_KW, **{"engine.speculative.acceptance": 0.7}))
    e = spec.tokens_per_step
    chunks = [(512, 0), (300, 100)]
    mixed = spec.iteration_time(8, 8000, chunks) + (e - 1) * spec.iteration_time(8, 8000, [])
    assert mixed == pytest.approx(spec.step_time(8, 8000, chunks), rel=1e-12)
    assert spec.iteration_time(0, 0, chunks) == pytest.approx(spec.step_time(0, 0, chunks), rel=1e-12)
    assert spec.iteration_time(8, 8000, chunks) > spec.iteration_time(8, 8000, [])


def test_decode_run_closed_form_equals_the_sum_of_iterations(base):
    moe = with_(base, model=load_option("model", "qwen3-30b-a3b"))
    for c in (with_(base, DRAFT_KW), with_(base, MTP_KW), with_(moe, MTP_KW)):
        spec = _perf(c)
        for b, ctx in [(1, 300), (64, 64 * 900), (700, 700 * 50)]:
            run = spec.decode_run(b, ctx, 500)
            t = [spec.iteration_time(b, ctx + b * j, []) for j in range(500)]
            cum = np.cumsum(t)
            assert run.time(500) == pytest.approx(cum[-1], rel=1e-12)
            for n in (1, 7, 250, 499):
                assert run.steps_within(cum[n - 1]) >= n - 1
                assert run.steps_within(cum[n - 1] * (1 + 1e-12)) == n
                assert run.steps_within(cum[n - 1] * (1 - 1e-9)) == n - 1


SPEC_CASES = {
    "draft-mixed": (*DRAFT, "workload.duration_s=60", "workload.rate=12"),
    "draft-chunked": (
        *DRAFT,
        "workload.duration_s=40",
        "workload.rate=4",
        "workload.prompt_tokens.mean=6000",
        "workload.prompt_tokens.p99=30000",
        "engine.max_num_batched_tokens=1024",
    ),
    "mtp-kv-pressure": (
        *MTP,
        "workload.duration_s=40",
        "workload.rate=20",
        "engine.gpu_memory_utilization=0.3",
        "engine.max_num_batched_tokens=512",
    ),
    "mtp-moe-tp2": (
        *MTP,
        "workload.duration_s=40",
        "workload.rate=15",
        "model=qwen3-30b-a3b",
        "engine.tensor_parallel_size=2",
    ),
    "draft-prefix-cache": (
        *DRAFT,
        "workload.duration_s=40",
        "workload.rate=12",
        "workload.shared_prefix.groups=6",
        "workload.shared_prefix.tokens=3000",
        "workload.prompt_tokens.mean=3500",
        "engine.gpu_memory_utilization=0.35",
    ),
}


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_fast_forward_equals_per_iteration_with_speculation(case):
    c = cfg(*SPEC_CASES[case])
    fast = sim.run(with_(c, **{"engine.fast_forward": True}))
    slow = sim.run(with_(c, **{"engine.fast_forward": False}))
    _compare(fast.requests, slow.requests, case)
    assert fast.summary["iterations"] == slow.summary["iterations"]
    assert fast.summary["engine_events"] < slow.summary["engine_events"]
    if "kv-pressure" in case:
        assert fast.summary["preemptions"] > 0


def test_drafter_memory_comes_out_of_the_kv_cache(base):
    c = base
    d = with_(base, DRAFT_KW)
    mt = with_(base, MTP_KW, **{"engine.speculative.mtp_layers": 2})
    p0, pd, pm = (memory_plan(x.model, x.gpu, x.engine) for x in (c, d, mt))
    draft = load_option("model", "llama3.2-1b")
    assert pd.weight_bytes == pytest.approx(p0.weight_bytes + weight_bytes(draft))
    assert pd.kv_bytes_per_token == p0.kv_bytes_per_token + 2 * 16 * 8 * 64 * 2
    assert pd.kv_tokens < p0.kv_tokens
    assert pm.kv_bytes_per_token == p0.kv_bytes_per_token * 34 // 32
    assert pd.kv_tokens < pm.kv_tokens < p0.kv_tokens


def test_cost_per_token_follows_throughput(base):
    """At a small batch (max_num_seqs 4) a good drafter raises the saturated throughput, so a
    replica's $/M tokens falls; with a = 0.1 the draft's overhead raises it. A saturated
    simulated run shows the same direction in cost_per_mtok at a fixed fleet."""
    plan = memory_plan(base.model, base.gpu, base.engine)

    def thr(c):
        return saturation_throughput(build_perf(c.model, c.gpu, c.engine), plan.kv_tokens, 4, 8192, 1000, 250)

    good = with_(base, DRAFT_KW, **{"engine.speculative.acceptance": 0.8})
    poor = with_(base, DRAFT_KW, **{"engine.speculative.acceptance": 0.1})
    assert thr(good) > 1.4 * thr(base)
    assert thr(poor) < thr(base)
    over = {
        "workload.duration_s": 20.0,
        "workload.rate": 5.0,
        "engine.max_num_seqs": 4,
        "workload.output_tokens.dist": "fixed",
        "workload.output_tokens.mean": 300.0,
        "fleet.pricing.min_billed_s": 0.0,
    }
    cost = {
        c: sim.run(with_(x, over)).summary["cost_per_mtok"] for c, x in (("none", base), ("good", good), ("poor", poor))
    }
    assert cost["good"] < 0.8 * cost["none"]
    assert cost["poor"] > 1.1 * cost["none"]


def test_conservation_with_speculation():
    r = sim.run(cfg(*MTP, "workload.duration_s=60", "workload.rate=10", "engine.max_model_len=3000"))
    assert_conserved(r)


def test_a_measured_table_cannot_speculate(tmp_path):
    from sim.config.errors import ConfigError
    from sim.config.schema import validate_speculative

    e = load_option("engine", "vllm")
    table = tmp_path / "t.csv"
    table.write_text("x")
    e = dataclasses.replace(e, perf_table=str(table))
    e.speculative.method = "mtp"
    with pytest.raises(ConfigError, match=r"engine\.speculative\.method"):
        validate_speculative(e, load_option("model", "llama3-8b"))
