"""Host memory as a second KV tier (engine.kv_offload, sim/des/prefix.py): evicted prefix blocks
move to the host, a hit on them is reloaded at bytes / PCIe bandwidth instead of recomputed,
both engine modes agree, and nothing is lost."""

from __future__ import annotations

import pytest

import sim
from sim.des.prefix import BlockPool
from sim.hardware.kvcache import memory_plan
from tests.conftest import assert_conserved, cfg
from tests.test_engine import _compare
from tests.test_prefix_cache import SYNC, _workload
from tests.test_speculative import with_

SHARED = (
    "workload.duration_s=60",
    "workload.rate=2",
    "workload.shared_prefix.groups=60",
    "workload.shared_prefix.tokens=3000",
    "workload.shared_prefix.zipf=0.8",
    "workload.prompt_tokens.mean=3500",
    "workload.output_tokens.mean=200",
    "engine.gpu_memory_utilization=0.3",
)


def test_evicted_blocks_go_to_the_host_least_recently_evicted_dropped_first():
    pool = BlockPool(k=1, host_ids=2, reload_s=0.5)
    for h in (1, 2, 3):
        assert pool.register(h, 0.0)
    assert pool.release([1, 2, 3]) == 3  # free tail first: 3, 2, 1
    pool.evict_to(0)
    assert list(pool.host) == [2, 1]  # 3 went first and was dropped when 1 arrived
    assert pool.lookup([3, 1, 2], cap=3, taken=set()) == (0, 0, 0)  # dropped: the chain breaks at once
    assert pool.lookup([1, 2, 3], cap=3, taken=set()) == (2, 2, 2)  # two hits, both reloads
    pool.acquire([2, 1])  # reloaded: live again, gone from the host
    assert pool.live == {2: 1, 1: 1} and not pool.host
    off = BlockPool(k=1)
    assert off.register(1, 0.0) and off.release([1]) == 1
    off.evict_to(0)
    assert not off.host and off.lookup([1], cap=1, taken=set()) == (0, 0, 0)


def test_a_reload_costs_bytes_over_the_pcie_bandwidth():
    """A computes a 2,048-token prompt; B's prompt evicts the tail of A's blocks (56 of 128 ids of
    16 tokens) from a 200-block cache. C repeats A's prompt: with the host tier it reloads those
    56 blocks instead of recomputing them, and its TTFT grows by exactly their bytes per GPU over
    the PCIe bandwidth."""
    a, b = list(range(128)), list(range(1000, 1128))
    wl = _workload([0.0, 1.0, 2.0], [2048] * 3, [10] * 3, [a, b, a])
    c = cfg(SYNC, "engine.kv_blocks=200", "engine.prefix_caching=true")
    none = sim.run(c, workload=wl)
    slow = sim.run(with_(c, {"engine.kv_offload.cpu_gib": 4.0, "engine.kv_offload.pcie_gb_s": 25.0}), workload=wl)
    fast = sim.run(with_(c, {"engine.kv_offload.cpu_gib": 4.0, "engine.kv_offload.pcie_gb_s": 1000.0}), workload=wl)
    per_token = memory_plan(c.model, c.gpu, c.engine).kv_bytes_per_token_per_gpu
    assert none.requests.cached_tokens.tolist() == [0, 0, 71 * 16]
    assert slow.requests.cached_tokens.tolist() == [0, 0, 127 * 16]  # all but the prompt's last block
    assert slow.summary["kv_offload_reloaded_blocks"] == 56
    cost = {bw: 56 * 16 * per_token / (bw * 1e9) for bw in (25, 1000)}
    assert slow.summary["kv_offload_reload_s"] == pytest.approx(cost[25], rel=1e-12)
    assert slow.requests.ttft_s[2] - fast.requests.ttft_s[2] == pytest.approx(cost[25] - cost[1000], rel=1e-9)
    assert slow.requests.ttft_s[2] < none.requests.ttft_s[2]  # 25 GB/s beats recomputing 896 tokens
    assert "kv_offload_reload_s" not in none.summary


def test_shared_prefixes_under_kv_pressure_hit_more_and_wait_less():
    """60 system prompts of 3,000 tokens (Zipf 0.8) on a KV cache of ~30,000 tokens: the GPU
    keeps a few; 64 GiB of host memory keeps them all, so the hit rate rises and TTFT falls; a
    1 GiB host tier (about 2.7 prompts) helps less."""
    c = cfg(*SHARED)
    runs = {gib: sim.run(with_(c, {"engine.kv_offload.cpu_gib": float(gib)})).summary for gib in (0, 1, 64)}
    hit = {g: s["prefix_block_hit_rate"] for g, s in runs.items()}
    assert hit[0] < hit[1] < hit[64]
    assert hit[64] > 2 * hit[0]
    assert runs[64]["ttft_p50"] < 0.7 * runs[0]["ttft_p50"]
    assert runs[64]["kv_offload_reloaded_blocks"] > runs[1]["kv_offload_reloaded_blocks"] > 0


def test_fast_forward_equals_per_iteration_with_a_host_tier():
    c = cfg(*SHARED, "workload.rate=4", "engine.kv_offload.cpu_gib=8")
    fast = sim.run(with_(c, {"engine.fast_forward": True}))
    slow = sim.run(with_(c, {"engine.fast_forward": False}))
    _compare(fast.requests, slow.requests, "kv-offload")
    assert fast.summary["kv_offload_reloaded_blocks"] == slow.summary["kv_offload_reloaded_blocks"] > 0
    assert fast.summary["preemptions"] > 0
    assert fast.summary["engine_events"] < slow.summary["engine_events"]


def test_conservation_with_a_host_tier():
    r = sim.run(cfg(*SHARED, "workload.rate=4", "engine.kv_offload.cpu_gib=8", "engine.max_model_len=4500"))
    assert_conserved(r)
    served = r.requests[r.requests.route == "gpu"]
    assert (served.cached_tokens < served.prompt_tokens).all()


def test_the_console_names_the_host_tier_and_speculation():
    from sim.apps.cli import format_summary

    c = with_(cfg(*SHARED[1:], "workload.duration_s=20"), {"engine.kv_offload.cpu_gib": 64.0})
    r = sim.run(c)
    text = format_summary(r.summary, c)
    blocks = r.summary["kv_offload_reloaded_blocks"]
    assert blocks > 0 and f"host KV    64 GiB per replica: {blocks:,} prefix blocks reloaded" in text
    c = cfg("engine=vllm_draft", "workload.duration_s=10")
    assert "speculate  draft model llama3.2-1b, k=3, acceptance 0.7: 2.53 tokens per target step" in format_summary(
        sim.run(c).summary, c
    )
