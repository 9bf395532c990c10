"""Performance model: roofline terms, the closed-form decode run, and the measured table."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.config.schema import EngineConfig, load_option
from sim.hardware import kvcache
from sim.hardware.architecture import model_config
from sim.hardware.perf import LinearDecodeRun, Roofline, TablePerf
from tests.conftest import cfg


def roofline(*overrides):
    c = cfg(*overrides)
    return Roofline(c.model, c.gpu, c.engine)


def brute(perf, b, ctx, n):
    return [perf.iteration_time(b, ctx + b * k, []) for k in range(n)]


@pytest.mark.parametrize("over", [(), ("model=qwen3-30b-a3b",), ("model=llama3-70b", "engine.tensor_parallel_size=4")])
@pytest.mark.parametrize(("b", "ctx"), [(1, 0), (1, 100_000), (64, 20_000), (256, 500_000)])
def test_decode_run_equals_sum_of_iterations(over, b, ctx):
    perf = roofline(*over)
    n = 3000
    times = brute(perf, b, ctx, n)
    run = perf.decode_run(b, ctx, n)
    cum = np.cumsum(times)
    for m in (1, 2, 17, 500, n):
        assert math.isclose(run.time(m), cum[m - 1], rel_tol=1e-11)
    for m in (0, 1, 5, 123, 2999):
        t = cum[m - 1] if m else 0.0
        assert run.steps_within(t + 1e-12) == m
        if m:
            assert run.steps_within(t - 1e-9) == m - 1


@settings(max_examples=300, deadline=None)
@given(
    c0=st.floats(0, 1e-2),
    am=st.floats(1e-4, 1e-1),
    bm=st.floats(0, 1e-4),
    ac=st.floats(1e-4, 1e-1),
    bc=st.floats(0, 1e-4),
    e=st.floats(0, 50),
)
def test_linear_run_regime_switch(c0, am, bm, ac, bc, e):
    """Both regimes and the crossing: closed form against an explicit sum."""
    run = LinearDecodeRun(c0, am, bm, ac, bc)
    n = 400
    t = [c0 + max(am + bm * k, ac + bc * k) for k in range(n)]
    cum = np.concatenate([[0.0], np.cumsum(t)])
    for m in (1, 7, 150, n):
        assert math.isclose(run.time(m), cum[m], rel_tol=1e-9)
    if e < cum[-1]:
        want = int(np.searchsorted(cum, e, side="right")) - 1
        got = run.steps_within(e)
        # at an exact boundary either side is acceptable
        assert got == want or math.isclose(cum[max(got, want)], e, rel_tol=1e-12)


def test_decode_is_memory_bound_and_grows_with_context():
    perf = roofline()
    t0 = perf.iteration_time(1, 0, [])
    t1 = perf.iteration_time(1, 100_000, [])
    assert t1 > t0
    # doubling a small batch barely changes a memory-bound step
    assert perf.iteration_time(2, 0, []) / t0 < 1.01


def test_prefill_is_compute_bound_and_linear_in_tokens():
    perf = roofline()
    t1 = perf.iteration_time(0, 0, [(4096, 0)])
    t2 = perf.iteration_time(0, 0, [(8192, 0)])
    assert 1.8 < t2 / t1 < 2.2


def test_eta_prefill_times_prefill_chunks_only():
    """Prefill chunks run at their end-to-end efficiency, decoding sequences at the GEMM kernels':
    halving eta_prefill doubles a compute-bound prefill's compute and leaves decode untouched."""
    base = roofline("engine.eta_prefill=0.6", "engine.eta_flops=0.6")
    slow = roofline("engine.eta_prefill=0.3", "engine.eta_flops=0.6")
    for b, ctx in ((1, 0), (64, 20_000), (2048, 100_000)):  # memory- and compute-bound decode
        assert slow.iteration_time(b, ctx, []) == base.iteration_time(b, ctx, [])
        assert slow.decode_run(b, ctx, 100).time(100) == base.decode_run(b, ctx, 100).time(100)
        assert slow.pass_run(b, 4, ctx) == base.pass_run(b, 4, ctx)  # a speculative verify pass
    # null follows eta_flops: the same times as eta_prefill = eta_flops
    follow = roofline("engine.eta_prefill=null", "engine.eta_flops=0.6")
    assert follow.iteration_time(8, 4000, [(2048, 0)]) == base.iteration_time(8, 4000, [(2048, 0)])
    chunks = [(4096, 1000), (2048, 0)]
    f0, m0, c0 = base.pass_terms(0, 1, 0, chunks)
    f1, m1, c1 = slow.pass_terms(0, 1, 0, chunks)
    assert (f1, m1) == (f0, m0) and c1 == pytest.approx(2 * c0, rel=1e-12)
    assert slow.iteration_time(0, 0, chunks) - base.iteration_time(0, 0, chunks) == pytest.approx(c0, rel=1e-12)
    # mixed: the decoders' share of the compute keeps eta_flops
    _, _, mixed0 = base.pass_terms(32, 1, 50_000, chunks)
    _, _, mixed1 = slow.pass_terms(32, 1, 50_000, chunks)
    assert mixed1 - mixed0 == pytest.approx(c0, rel=1e-9)


def test_moe_reads_more_experts_as_the_batch_grows():
    perf = roofline("model=qwen3-30b-a3b", "engine.eta_moe=1")
    assert perf.weight_time(1) < perf.weight_time(8) < perf.weight_time(256)
    c = cfg("model=qwen3-30b-a3b")
    table = c.model.vocab * c.model.hidden * 2  # the embedding table: looked up, not streamed
    bw = c.engine.eta_weights * c.gpu.mem_bw_tbps * 1e12
    assert perf.weight_time(10_000) == pytest.approx((c.model.params_b * 2e9 - table) / bw, rel=1e-6)
    assert perf.weight_time(1) == pytest.approx((c.model.active_params_b * 2e9 - table) / bw, rel=1e-6)
    # eta_moe slows the expert reads only: at half the efficiency the expert part takes twice as long
    half = roofline("model=qwen3-30b-a3b", "engine.eta_moe=0.5")
    dense = perf.weight_time(10_000) - perf._w_expert
    assert half.weight_time(10_000) - dense == pytest.approx(2 * perf._w_expert, rel=1e-9)


def test_a_pass_streams_every_weight_but_the_embedding_table():
    """The embedding is a lookup of the batch's rows; the lm_head is read whole (a tied matrix
    once, as the lm_head; in bf16 in a quantized checkpoint)."""
    c = cfg()  # Llama 3.1 8B, untied, bf16
    table = 128256 * 4096
    assert kvcache.streamed_weight_bytes(c.model) == pytest.approx((8.03e9 - table) * 2)
    tied = dataclasses.replace(c.model, tied_embeddings=True)
    assert kvcache.streamed_weight_bytes(tied) == pytest.approx(8.03e9 * 2)
    fp8 = dataclasses.replace(c.model, weight_dtype="fp8")  # embedding and lm_head kept in bf16
    assert kvcache.streamed_weight_bytes(fp8) == pytest.approx((8.03e9 - 2 * table) * 1 + table * 2)
    int4 = dataclasses.replace(c.model, weight_dtype="int4")
    assert kvcache.streamed_weight_bytes(int4) == pytest.approx((8.03e9 - 2 * table) * 0.5 + table * 2)
    tied8 = dataclasses.replace(fp8, tied_embeddings=True)  # one bf16 matrix, read as the lm_head
    assert kvcache.streamed_weight_bytes(tied8) == pytest.approx((8.03e9 - table) * 1 + table * 2)
    more = dataclasses.replace(fp8, bf16_params_b=3.0)  # an ignore list that keeps more in bf16
    assert kvcache.streamed_weight_bytes(more) == pytest.approx((8.03e9 - 3e9) * 1 + (3e9 - table) * 2)
    less = dataclasses.replace(fp8, bf16_params_b=0.0)  # nothing kept: the table is still not read
    assert kvcache.streamed_weight_bytes(less) == pytest.approx((8.03e9 - table) * 1)
    bw = c.engine.eta_weights * c.gpu.mem_bw_tbps * 1e12 * c.gpu.efficiency
    assert roofline().weight_time(1) == pytest.approx((8.03e9 - table) * 2 / bw, rel=1e-9)
    # the table's bytes are the whole difference a tied matrix makes to a step
    t_tied = Roofline(tied, c.gpu, c.engine).iteration_time(1, 1000, [])
    assert t_tied - roofline().iteration_time(1, 1000, []) == pytest.approx(table * 2 / bw, rel=1e-6)


def test_the_lm_head_is_a_matmul_even_when_tied():
    spec = {"layers": 16, "hidden": 2048, "heads": 32, "kv_heads": 8, "head_dim": 64, "intermediate": 8192}
    untied = model_config("m", {**spec, "vocab": 128256, "tied": False})
    tied = model_config("m", {**spec, "vocab": 128256, "tied": True})
    assert untied.flop_params_b == pytest.approx(tied.flop_params_b)
    assert untied.params_b - tied.params_b == pytest.approx(128256 * 2048 / 1e9)


def test_tensor_parallel_splits_work_and_adds_allreduce():
    one = roofline("model=llama3-70b", "model.weight_dtype=fp8", "gpu=h200")
    four = roofline("model=llama3-70b", "model.weight_dtype=fp8", "gpu=h200", "engine.tensor_parallel_size=4")
    t1, t4 = one.iteration_time(8, 8000, []), four.iteration_time(8, 8000, [])
    assert t4 < t1 / 2  # weights split four ways
    assert t4 > t1 / 4  # but the all-reduce and fixed overhead do not shrink


def test_fp8_weights_use_fp8_flops_where_the_gpu_has_them():
    h = roofline("model.weight_dtype=fp8")
    hb = roofline()
    a = roofline("gpu=a100-80gb", "model.weight_dtype=fp8")
    ab = roofline("gpu=a100-80gb")
    big = [(8192, 0)]
    assert h.iteration_time(0, 0, big) < 0.6 * hb.iteration_time(0, 0, big)
    # A100 has no FP8 tensor cores: same compute time, only the weight read shrinks
    assert a.iteration_time(0, 0, big) == pytest.approx(ab.iteration_time(0, 0, big), rel=0.05)


def test_table_model_reproduces_a_grid_it_was_built_from(tmp_path):
    perf = roofline()
    rows = []
    # a table row (batch, tokens, context) holds the time of b - 1 decoders plus one prefill
    # chunk of tokens - b + 1, reading `context` KV tokens in all (tokens < batch: unreachable)
    for b in (1, 16, 64, 256):
        for tok in (1, 16, 64, 256, 1024, 4096, 8192):
            for ctx in (8192, 20_000, 100_000, 1_000_000):
                if tok > b:
                    t = perf.iteration_time(b - 1, ctx - tok, [(tok - b + 1, 0)])
                else:
                    t = perf.iteration_time(b, ctx - b, [])
                rows.append((b, tok, ctx, t * 1000))
    path = tmp_path / "table.csv"
    path.write_text("batch_size,tokens,context,iteration_ms\n" + "\n".join(",".join(map(str, r)) for r in rows))
    table = TablePerf(str(path))
    # on grid points the table gives back the values; decode runs match the formula closely
    assert table.iteration_time(64, 100_000 - 64, []) == pytest.approx(
        perf.iteration_time(64, 100_000 - 64, []), rel=1e-9
    )
    run_t, run_r = table.decode_run(16, 50_000, 500), perf.decode_run(16, 50_000, 500)
    assert run_t.time(500) == pytest.approx(run_r.time(500), rel=0.02)
    assert run_t.steps_within(run_t.time(123) + 1e-12) == 123


def test_table_model_rejects_a_partial_grid(tmp_path):
    from sim.config.errors import ConfigError

    path = tmp_path / "t.csv"
    path.write_text("batch_size,tokens,context,iteration_ms\n1,1,0,5\n2,2,0,5\n1,2,0,5\n")
    with pytest.raises(ConfigError, match="full grid"):
        TablePerf(str(path))
    path.write_text("batch_size,tokens,context,iteration_ms\n1,1,0,abc\n")
    with pytest.raises(ConfigError, match="row 2"):
        TablePerf(str(path))


def test_engine_config_is_plain_dataclass():
    e = load_option("engine", "vllm")
    assert isinstance(e, EngineConfig) and e.fast_forward and e.block_size == 16


def test_a_measured_table_replaces_the_formula_end_to_end(tmp_path):
    """engine.perf_table drives a whole run; built from the roofline, it reproduces the
    roofline run within the interpolation error."""
    import sim

    perf = roofline()
    rows = []
    for b in (1, 8, 32, 128, 256):
        for tok in (1, 8, 32, 128, 256, 512, 1024, 2048, 4096, 8192):
            for ctx in (8192, 50_000, 200_000, 500_000):
                if tok > b:
                    t = perf.iteration_time(b - 1, ctx - tok, [(tok - b + 1, 0)])
                else:
                    t = perf.iteration_time(b, ctx - b, [])
                rows.append(f"{b},{tok},{ctx},{t * 1000}")
    path = tmp_path / "measured.csv"
    path.write_text("batch_size,tokens,context,iteration_ms\n" + "\n".join(rows) + "\n")
    over = ("workload.duration_s=120", "workload.rate=8")
    formula = sim.run(cfg(*over)).summary
    table = sim.run(cfg(*over, f"engine.perf_table={path}")).summary
    assert table["n_gpu"] == formula["n_gpu"]
    for key in ("ttft_p50", "tpot_p50", "e2e_p50"):
        assert table[key] == pytest.approx(formula[key], rel=0.1), key
