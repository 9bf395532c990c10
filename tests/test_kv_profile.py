"""The profiled KV-cache plan: hand-computed cases, and every KV capacity vLLM logged at start-up
(../shared/calibration, skipped when absent) within 5%."""

from __future__ import annotations

import dataclasses
import math

import pytest

from sim.hardware import kvcache
from sim.hardware.kvcache import memory_plan
from tests.conftest import cfg

GIB = 2**30


def test_profiled_plan_by_hand():
    """Llama 3.1 8B on an H100 (79.22 GiB as CUDA reports it), 2048 batched tokens, 128 sequences."""
    c = cfg("engine.max_num_batched_tokens=2048", "engine.max_num_seqs=128")
    plan = memory_plan(c.model, c.gpu, c.engine)
    usable = math.ceil(79.22 * GIB * 0.9)  # 76,555,644,568 B
    weights = 8.03e9 * 2  # bf16
    rope = 131072 * 128 * 2  # cos/sin table, max_position x head_dim, bf16: 32 MiB
    forward = 2 * 2048 * (4096 + 3 * 14336)  # residual + gate/up + activation: 192,937,984 B
    sampler = 38 * 128 * 128256 + 2 * 2048 * 4096  # 128 x vocab logits + hidden states: 640,614,400 B
    assert sampler > forward
    free = usable - weights - rope - sampler - 0.44 * GIB  # 59,349,029,333 B = 55.27 GiB
    assert plan.kv_bytes_per_gpu == pytest.approx(free)
    assert plan.kv_blocks == 28299 == int(free // 131072) // 16
    assert plan.kv_tokens == 452784
    assert plan.activation_bytes == sampler and plan.rope_bytes == rope
    assert plan.non_kv_bytes_per_gpu == pytest.approx(usable - free)


def test_forward_pass_dominates_a_large_token_budget():
    c = cfg("engine.max_num_batched_tokens=32768", "engine.max_num_seqs=16")
    plan = memory_plan(c.model, c.gpu, c.engine)
    forward = 2 * 32768 * (4096 + 3 * 14336)  # 3.09e9 B
    assert forward > 38 * 16 * 128256 + 2 * 32768 * 4096
    assert plan.activation_bytes == forward


def test_tensor_parallel_shards_weights_and_mlp_not_the_sampler():
    c = cfg(
        "model=llama3-70b",
        "engine.tensor_parallel_size=4",
        "engine.max_num_batched_tokens=16384",
        "engine.max_num_seqs=256",
    )
    plan = memory_plan(c.model, c.gpu, c.engine)
    assert plan.weight_bytes_per_gpu == pytest.approx(70.55e9 * 2 / 4)
    forward = 2 * 16384 * (8192 + 3 * 28672 / 4)  # the hidden stream is whole on every GPU
    sampler = 38 * 256 * 128256 + 2 * 16384 * 8192  # logits are gathered on every GPU
    assert plan.activation_bytes == pytest.approx(max(forward, sampler))


def test_quantized_checkpoints_keep_embedding_and_lm_head_in_bf16():
    m = cfg("model=llama3-70b", "model.weight_dtype=fp8").model
    table = 128256 * 8192  # embedding and lm_head, each
    assert kvcache.weight_bytes(m) == pytest.approx((70.55e9 - 2 * table) * 1 + 2 * table * 2)
    tied = dataclasses.replace(m, tied_embeddings=True)
    assert kvcache.weight_bytes(tied) == pytest.approx((70.55e9 - table) * 1 + table * 2)
    more = dataclasses.replace(m, bf16_params_b=10.0)  # what a checkpoint's ignore list keeps
    assert kvcache.weight_bytes(more) == pytest.approx(60.55e9 + 20e9)
    int4 = dataclasses.replace(m, weight_dtype="int4")
    assert kvcache.weight_bytes(int4) == pytest.approx((70.55e9 - 2 * table) * 0.5 + 2 * table * 2)
    assert kvcache.weight_bytes(cfg().model) == pytest.approx(8.03e9 * 2)  # bf16: nothing to keep


def test_mlp_width_is_derived_from_active_parameters_when_not_given():
    for over in ((), ("model=llama3-70b",), ("model=glm-4.5",), ("model=qwen3-30b-a3b",)):
        m = cfg(*over).model
        derived = kvcache.mlp_width(dataclasses.replace(m, intermediate=None))
        assert derived == pytest.approx(m.intermediate, rel=0.01), m.name


def test_older_profilers_count_the_whole_device():
    """V1 in v0.7: logits of every batched token (no sampler), the CUDA context and all non-torch
    memory, and the model runner's [N, hidden] input buffer."""
    c = cfg("engine.memory_profiler=v0.7", "engine.max_num_batched_tokens=2048", "engine.max_num_seqs=256")
    plan = memory_plan(c.model, c.gpu, c.engine)
    assert plan.activation_bytes == 2 * 2048 * 128256 + 2 * 2048 * 4096 + 2 * 2048 * 4096
    assert plan.non_torch_bytes == 0.73 * GIB
    v0 = cfg("engine.memory_profiler=v0.6", "engine.max_num_batched_tokens=2048", "engine.max_num_seqs=256")
    p0 = memory_plan(v0.model, v0.gpu, v0.engine)
    assert p0.activation_bytes == 38 * 256 * 128256 + 2 * 2048 * 4096 and p0.non_torch_bytes == 0.73 * GIB


def test_cuda_graphs_count_from_v0_21_or_when_given():
    c = cfg("engine.max_num_seqs=256")  # 256 sequences, 8192 batched tokens: graphs up to 512 tokens
    assert memory_plan(c.model, c.gpu, c.engine).cudagraph_bytes == 0  # v0.15: captured after sizing
    new = cfg("engine.memory_profiler=v0.21", "engine.max_num_seqs=256")
    # piecewise sizes 1, 2, 4, 8..248 (31), 256..512 (17) = 51; full decode graphs up to 256: 35
    estimate = 2 * 512 * (4096 + 3 * 14336) + (51 - 1 + 35 - 1) * 2**20
    p21 = memory_plan(new.model, new.gpu, new.engine)
    assert p21.cudagraph_bytes == estimate
    assert memory_plan(c.model, c.gpu, c.engine).kv_bytes_per_gpu - p21.kv_bytes_per_gpu == pytest.approx(estimate)
    given = cfg("engine.cudagraph_gib=1.5")
    assert memory_plan(given.model, given.gpu, given.engine).cudagraph_bytes == 1.5 * GIB


def test_a_fixed_reserve_keeps_the_old_rule():
    c = cfg("engine.reserve_gib=3.5", "model.weight_dtype=fp8")
    plan = memory_plan(c.model, c.gpu, c.engine)
    free = 80 * GIB * 0.9 - 8.03e9 * 1 - 3.5 * GIB  # memory_gib, every parameter at 1 byte
    assert not plan.profiled and plan.kv_bytes_per_gpu == pytest.approx(free)
    assert plan.activation_bytes == plan.rope_bytes == plan.non_torch_bytes == 0


def test_profiled_default_gives_the_cache_what_vllm_would():
    """The shipped engine config profiles (engine.reserve_gib: null) on the GPU's visible memory."""
    c = cfg()
    assert c.engine.reserve_gib is None and c.engine.memory_profiler == "v0.15"
    assert c.gpu.visible_memory_gib == 79.22
    assert memory_plan(c.model, c.gpu, c.engine).profiled


# ----------------------------------------------------------------------------- logged points


@pytest.fixture
def points(shared_dir):
    from sim.studies.kvprofile import logged_points

    return logged_points(shared_dir / "calibration")


def test_every_logged_point_within_5_percent(points):
    assert sum(p.runs for p in points if p.engine.memory_profiler == "v0.15") == 13  # every measured run
    assert {p.id for p in points} >= {"mem-l8b-rtx3090", "mem-l70b-w8a8-1gpu"}
    for p in points:
        assert abs(p.error()) <= 0.05, f"{p.id} {p.label}: {p.plan().kv_blocks} blocks, logged {p.logged_blocks}"


def test_leave_one_out_within_5_percent(points):
    from sim.studies.kvprofile import leave_one_out

    for p, e in zip(points, leave_one_out(points), strict=True):
        assert abs(e) <= 0.05, f"{p.id}: {e:+.1%}"


def test_shipped_constant_is_the_fit(points):
    from sim.studies.kvprofile import fit

    fitted = fit(points)
    assert abs(fitted - kvcache.NON_TORCH_GIB) <= 0.01, f"fitted {fitted:.3f}: rerun scripts/kv_profile.py"


def test_runs_that_share_a_configuration_logged_the_same_blocks(points):
    scout = next(p for p in points if p.label.startswith("llama-4-scout"))
    assert scout.runs == 4 and scout.logged_blocks == 8253
