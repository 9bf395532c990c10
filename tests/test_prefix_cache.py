"""Prefix caching as vLLM V1 does it (sim/des/prefix.py): hits found when a request is scheduled,
shared blocks held once in KV memory, free cached blocks evicted least recently freed first
(a request's tail before its head), a preempted request's cached blocks reused on resume."""

from __future__ import annotations

import numpy as np
import pytest

import sim
from sim.des.prefix import BlockPool
from sim.workload.build import Workload
from tests.conftest import cfg

SYNC = "engine.async_scheduling=false"


def _workload(arrivals, prompts, outputs, ids_per_request):
    counts = [len(ids) for ids in ids_per_request]
    return Workload(
        np.asarray(arrivals, float),
        np.asarray(prompts, np.int64),
        np.asarray(outputs, np.int64),
        hash_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        hash_ids=np.concatenate([np.asarray(ids, np.int64) for ids in ids_per_request]),
        block_tokens=16,
    )


def test_a_hit_is_found_when_the_request_is_scheduled_not_when_it_arrives():
    """B arrives while A, with the same prompt, is still prefilling: B is scheduled at the next
    boundary, when A's blocks are cached, and reuses all but the last one (the last prompt token
    is always computed). Looking up at arrival would have found nothing."""
    ids = list(range(64))
    wl = _workload([0.0, 1e-4], [1024, 1024], [50, 50], [ids, ids])
    r = sim.run(cfg(SYNC, "engine.prefix_caching=true"), workload=wl).requests
    assert r.cached_tokens.tolist() == [0, 63 * 16]
    off = sim.run(cfg(SYNC, "engine.prefix_caching=false"), workload=wl).requests
    assert off.cached_tokens.tolist() == [0, 0]
    assert r.ttft_s[1] < off.ttft_s[1]


def test_shared_blocks_are_held_once_so_more_requests_fit():
    """20 requests share a 1,024-token prefix; the KV cache has 300 blocks. Each needs 67 blocks
    on its own (20 x 67 = 1,340 > 300) but only 3 beyond the shared 64 (64 + 20 x 3 = 124): with
    prefix caching all of them run together, without it they queue for memory."""
    n = 20
    shared = list(range(64))
    ids = [[*shared, 1000 + i] for i in range(n)]
    arrivals = [0.0] + [0.5 + 1e-3 * i for i in range(n - 1)]  # the rest after A's prefill
    wl = _workload(arrivals, [1040] * n, [32] * n, ids)
    engine_times = (SYNC, "engine.kv_blocks=300", "engine.request_overhead_ms=0")  # finish = when the KV is freed
    on = sim.run(cfg(*engine_times, "engine.prefix_caching=true"), workload=wl)
    off = sim.run(cfg(*engine_times, "engine.prefix_caching=false"), workload=wl)
    r_on, r_off = on.requests, off.requests
    assert (r_on.cached_tokens[1:] == 64 * 16).all()
    assert on.summary["preemptions"] == 0

    def most_running(r):
        start = (r.arrival_s + r.queue_s).to_numpy()
        return max(int(((start <= t + 1e-9) & (r.finish_s.to_numpy() > t + 1e-9)).sum()) for t in start)

    assert most_running(r_on) == n - 1  # all but A (finished by then) at once
    # without sharing, 65 blocks each to start: 4 at a time (a preempted request counts as running
    # from its first start, so each preemption may add one)
    assert most_running(r_off) <= 300 // 65 + off.summary["preemptions"] < n // 2
    assert r_on.queue_s.max() < 0.05 < r_off.queue_s.max()


def test_a_preempted_request_reuses_its_cached_prompt_on_resume():
    """Two long requests with different prompts that cannot both finish in the cache: the newer
    is preempted mid-decode. Its prompt blocks stay cached (free, not evicted: the older request
    needs fewer blocks than were freed), so resuming recomputes only its generated tokens."""
    kv_blocks = 600
    prompt, out = 2048, 4000
    a, b = list(range(128)), list(range(1000, 1128))
    wl = _workload([0.0, 0.0], [prompt, prompt], [out, out], [a, b])
    over = (SYNC, f"engine.kv_blocks={kv_blocks}", "engine.max_model_len=8192")
    on = sim.run(cfg(*over, "engine.prefix_caching=true"), workload=wl)
    off = sim.run(cfg(*over, "engine.prefix_caching=false"), workload=wl)
    assert on.requests.preemptions.tolist() == off.requests.preemptions.tolist() == [0, 1]
    assert on.summary["prefix_block_hit_rate"] > 0  # only the resume can hit: the prompts differ
    assert on.requests.e2e_s[1] < off.requests.e2e_s[1]


def test_free_blocks_are_evicted_least_recently_freed_first_tail_before_head():
    pool = BlockPool(k=1)
    assert pool.register(1, 0.0) and pool.register(2, 0.0) and pool.register(3, 0.0)
    assert not pool.register(2, 0.0)  # already cached: a second copy stays its request's own
    pool.acquire([1, 2])  # a second request shares 1 and 2
    assert pool.release([1, 2, 3]) == 1  # only 3 loses its last user
    assert pool.release([1, 2]) == 2
    assert list(pool.free) == [3, 2, 1]  # freed tail first: 3, then 2 before 1
    assert pool.lookup([1, 2, 3, 4], cap=4, taken=set()) == (3, 3, 0)
    pool.evict_to(2)
    assert list(pool.free) == [2, 1]
    assert pool.lookup([1, 2, 3], cap=3, taken=set()) == (2, 2, 0)
    assert pool.lookup([1, 2, 3], cap=1, taken=set()) == (1, 1, 0)
    pool.acquire([1])
    assert pool.lookup([1, 2], cap=2, taken={2}) == (2, 0, 0)  # 1 live, 2 taken earlier this step
    assert pool.live_blocks() == 1


@pytest.mark.parametrize("prefix", [True, False])
def test_shared_prefix_hit_rate_follows_the_groups(prefix):
    """A shared-prefix workload: with caching, nearly every request after its group's first
    reuses the group's whole-block system prompt; without it, none does."""
    c = cfg(
        "workload.duration_s=120",
        "workload.rate=3",
        "workload.prompt_tokens.dist=fixed",
        "workload.prompt_tokens.mean=3000",
        "workload.shared_prefix.groups=4",
        "workload.shared_prefix.tokens=2000",
        f"engine.prefix_caching={str(prefix).lower()}",
    )
    r = sim.run(c).requests
    if prefix:
        assert ((r.cached_tokens == 2000).sum()) >= len(r) - 4
    else:
        assert (r.cached_tokens == 0).all()
