"""vLLM's own defaults and limits, as the targeted release sets them (docs/model.md)."""

from __future__ import annotations

import pytest

from sim.config.schema import batch_limits, long_prefill_threshold
from tests.conftest import cfg


@pytest.mark.parametrize(
    ("gpu", "usage", "want"),
    [
        ("h100", "api_server", (1024, 8192)),
        ("h200", "api_server", (1024, 8192)),
        ("b200", "offline", (1024, 16384)),
        ("a100-80gb", "api_server", (256, 2048)),  # 80 GB, but an A100
        ("l40s", "api_server", (256, 2048)),  # under 70 GiB
        ("l40s", "offline", (256, 8192)),
    ],
)
def test_batch_defaults_follow_the_gpu_and_usage(gpu, usage, want):
    c = cfg(f"gpu={gpu}", f"engine.usage={usage}")
    assert batch_limits(c.engine, c.gpu) == want


def test_set_limits_win_and_a_defaulted_batch_fits_the_token_budget():
    c = cfg("engine.max_num_seqs=64")
    assert batch_limits(c.engine, c.gpu) == (64, 8192)
    c = cfg("engine.max_num_batched_tokens=512")
    assert batch_limits(c.engine, c.gpu) == (512, 512)


def test_long_prefill_threshold_as_the_scheduler_config_derives_it():
    c = cfg()
    assert long_prefill_threshold(c.engine, 4096) == 0
    c = cfg("engine.max_num_partial_prefills=4")
    assert long_prefill_threshold(c.engine, 4096) == int(4096 * 0.04)
    c = cfg("engine.max_num_partial_prefills=4", "engine.long_prefill_token_threshold=300")
    assert long_prefill_threshold(c.engine, 4096) == 300


def test_the_long_prefill_cap_splits_a_prompt_into_chunks():
    import numpy as np

    import sim
    from sim.workload.build import Workload

    wl = Workload(np.zeros(1), np.array([3000]), np.array([10]))
    free = sim.run(cfg(), workload=wl).requests
    capped = sim.run(cfg("engine.long_prefill_token_threshold=1000"), workload=wl)
    assert capped.summary["iterations"] == sim.run(cfg(), workload=wl).summary["iterations"] + 2
    assert capped.requests.ttft_s[0] > free.ttft_s[0]


def test_request_overhead_is_client_time_of_an_api_server_only():
    import numpy as np

    import sim
    from sim.workload.build import Workload

    wl = Workload(np.zeros(1), np.array([500]), np.array([20]))
    base = sim.run(cfg("engine.request_overhead_ms=0"), workload=wl).requests
    served = sim.run(cfg("engine.request_overhead_ms=25"), workload=wl).requests
    offline = sim.run(cfg("engine.request_overhead_ms=25", "engine.usage=offline"), workload=wl).requests
    assert served.ttft_s[0] - base.ttft_s[0] == pytest.approx(0.025)
    assert served.e2e_s[0] - base.e2e_s[0] == pytest.approx(0.025)
    assert offline.ttft_s[0] == pytest.approx(base.ttft_s[0])


def test_gpu_efficiency_scales_the_roofline():
    from sim.hardware.perf import build_perf

    a, b = cfg(), cfg("gpu.efficiency=0.5")
    fast = build_perf(a.model, a.gpu, a.engine)
    slow = build_perf(b.model, b.gpu, b.engine)
    fixed = a.engine.step_overhead_ms / 1000 + a.engine.step_overhead_per_seq_us * 1e-6
    assert slow.iteration_time(1, 1000, []) - fixed == pytest.approx(2 * (fast.iteration_time(1, 1000, []) - fixed))
