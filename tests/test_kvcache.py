"""KV-cache arithmetic against the worked examples of the calibration catalog."""

from __future__ import annotations

import pytest

from sim.config.schema import EngineConfig
from sim.hardware.kvcache import kv_bytes_per_token, memory_plan
from tests.conftest import cfg

# (model, gpu, tp, weight dtype, KV tokens) from shared/calibration/catalog.yaml
# kv_capacity_examples (utilisation 0.9, reserve 3.5 GiB). Transcribed so the test runs without
# ../shared; test_catalog_rows_match below re-reads them when it is present. The examples assume
# the fixed reserve (engine.reserve_gib=3.5, all weights at the dtype's bytes, gpu.memory_gib);
# the profiled plan, the default, is checked against vLLM's start-up logs in test_kv_profile.py.
EXAMPLES = [
    ("llama3-8b", "h100", 1, "bf16", 438623),
    ("llama3-8b", "a100-80gb", 1, "bf16", 438623),
    ("llama3-8b", "l40s", 1, "bf16", 180489),
    ("llama3-70b", "h100", 4, "bf16", 467240),
    ("llama3-70b", "h100", 2, "fp8", 233620),
    ("llama3-70b", "h200", 1, "fp8", 189055),
    ("llama3-70b", "a100-80gb", 4, "bf16", 467240),
    ("qwen3-30b-a3b", "h100", 1, "bf16", 127068),
]


def test_kv_bytes_per_token_matches_architecture():
    c = cfg()
    assert kv_bytes_per_token(c.model, "auto") == 131072  # 2 x 32 layers x 8 heads x 128 x 2 B
    assert kv_bytes_per_token(c.model, "fp8") == 65536
    q = cfg("model=qwen3-30b-a3b").model
    assert kv_bytes_per_token(q, "bf16") == 98304


@pytest.mark.parametrize(("model", "gpu", "tp", "dtype", "tokens"), EXAMPLES)
def test_kv_capacity_matches_catalog(model, gpu, tp, dtype, tokens):
    c = cfg(
        f"model={model}",
        f"gpu={gpu}",
        f"engine.tensor_parallel_size={tp}",
        f"model.weight_dtype={dtype}",
        "engine.reserve_gib=3.5",
    )
    plan = memory_plan(c.model, c.gpu, c.engine)
    # the catalog rounds GiB figures to 0.1; allow that rounding (0.05 GiB of KV)
    slack = 0.05 * 2**30 / plan.kv_bytes_per_token_per_gpu * tp + c.engine.block_size
    assert abs(plan.kv_tokens - tokens) <= slack
    assert plan.kv_tokens % c.engine.block_size == 0
    assert plan.kv_blocks * c.engine.block_size == plan.kv_tokens


def test_catalog_rows_match(shared_dir):
    import yaml

    catalog = yaml.safe_load((shared_dir / "calibration" / "catalog.yaml").read_text())
    rows = {
        (r["model"], r["gpu"], r["tp"], r["weight_bytes_per_param"]): r["kv_tokens"]
        for r in catalog["kv_capacity_examples"]["rows"]
    }
    names = {"llama3-8b": "llama-3.1-8b", "llama3-70b": "llama-3.1-70b", "qwen3-30b-a3b": "qwen3-30b-a3b"}
    gpus = {"h100": "h100", "a100-80gb": "a100_80", "l40s": "l40s", "h200": "h200"}
    wbytes = {"bf16": 2, "fp8": 1}
    for model, gpu, tp, dtype, tokens in EXAMPLES:
        assert rows[(names[model], gpus[gpu], tp, wbytes[dtype])] == tokens


def test_kv_heads_replicate_beyond_their_count():
    c = cfg("model=qwen3-30b-a3b")  # 4 KV heads
    e4 = EngineConfig(**{**c.engine.__dict__, "tensor_parallel_size": 4})
    e8 = EngineConfig(**{**c.engine.__dict__, "tensor_parallel_size": 8})
    p4, p8 = memory_plan(c.model, c.gpu, e4), memory_plan(c.model, c.gpu, e8)
    assert p4.kv_bytes_per_token_per_gpu == p8.kv_bytes_per_token_per_gpu == 98304 / 4


def test_fp8_kv_doubles_tokens_in_the_same_memory():
    a = cfg()
    b = cfg("engine.kv_cache_dtype=fp8")
    pa, pb = memory_plan(a.model, a.gpu, a.engine), memory_plan(b.model, b.gpu, b.engine)
    assert abs(pb.kv_tokens - 2 * pa.kv_tokens) <= 2 * a.engine.block_size


def test_kv_blocks_pin_the_cache_to_what_vllm_logged():
    from sim.config.errors import ConfigError
    from sim.des.preflight import validate

    c = cfg("engine.kv_blocks=1000")
    plan = memory_plan(c.model, c.gpu, c.engine)
    assert plan.kv_blocks == 1000 and plan.kv_tokens == 1000 * c.engine.block_size
    with pytest.raises(ConfigError, match=r"engine\.kv_blocks"):
        validate(cfg("engine.kv_blocks=0"))
