"""Every config option composes and validates; bad values name the key, the value and the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

import sim
from sim.apps.cli import conf_dir
from sim.apps.python_api import to_config
from sim.config.errors import ConfigError
from sim.config.schema import Config
from sim.des.preflight import validate
from tests.conftest import cfg

GROUPS = ("workload", "model", "gpu", "engine", "fleet", "api", "slo", "platform")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(conf_dir()) / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes_and_validates(group):
    names = options(group)
    assert names, f"no options in conf/{group}"
    for name in names:
        c = cfg(f"{group}={name}")
        assert getattr(c, group).name == name, f"conf/{group}/{name}.yaml must set name: {name}"
        if group == "model" and name == "llama3-70b":
            c = cfg("model=llama3-70b", "engine.tensor_parallel_size=4")
        if group == "model" and name == "glm-4.5":  # 355B in FP8: a node of eight H100s
            c = cfg("model=glm-4.5", "engine.tensor_parallel_size=8")
        validate(c)


@pytest.mark.parametrize("name", options("fleet/autoscaler"))
def test_each_autoscaler_is_one_dataclass_and_one_yaml(name):
    from sim.config.schema import AUTOSCALER_CONFIGS

    extra = [f"fleet.autoscaler.schedule={[1] * 24}"] if name == "schedule" else []
    c = cfg("fleet=autoscaled", f"fleet/autoscaler={name}", *extra)
    assert type(c.fleet.autoscaler) is AUTOSCALER_CONFIGS[name]
    assert c.fleet.autoscaler.name == name, f"conf/fleet/autoscaler/{name}.yaml must set name: {name}"
    validate(c)
    # a key of another autoscaler is refused, naming the autoscaler that has it
    foreign = "upscale_delay_s" if name != "ray" else "stable_window_s"
    owner = "ray" if name != "ray" else "target"
    with pytest.raises(ConfigError, match=rf"fleet\.autoscaler\.{foreign}.*fleet/autoscaler={owner}"):
        cfg("fleet=autoscaled", f"fleet/autoscaler={name}", f"fleet.autoscaler.{foreign}=5")


def test_an_autoscaler_given_as_a_mapping_becomes_its_class():
    from sim.config.schema import FleetConfig, RayAutoscaler, TargetAutoscaler

    f = FleetConfig(autoscaler={"name": "ray", "target": 4})
    assert f.autoscaler == RayAutoscaler(target=4.0)
    c = to_config({"fleet": {"autoscaler": {"name": "target", "scale_down_delay_s": 5}}})
    assert c.fleet.autoscaler == TargetAutoscaler(scale_down_delay_s=5.0)
    with pytest.raises(ConfigError, match=r"fleet\.autoscaler\.name.*must be one of fixed, target, ray, schedule"):
        FleetConfig(autoscaler={"name": "kpa"})


def test_design_option_names_ship():
    assert {"llama3-8b", "llama3-70b", "qwen3-30b-a3b"} <= set(options("model"))
    assert {"h100", "h200", "a100-80gb", "l40s", "b200"} <= set(options("gpu"))
    assert {"chat", "batch"} <= set(options("slo"))
    assert "vllm" in options("engine") and "fixed" in options("fleet") and "none" in options("api")


def test_python_api_accepts_dicts_and_dataclasses():
    c = to_config({"workload": {"rate": 3.0, "duration_s": 20.0}, "output": {"plots": False}})
    assert isinstance(c, Config) and c.workload.rate == 3.0
    r = sim.run({"workload": {"rate": 3.0, "duration_s": 20.0}})
    assert r.summary["n_requests"] == len(r.requests) > 0
    with pytest.raises(ConfigError, match=r"workload\.rate"):
        to_config({"workload": {"rate": "fast"}})


BAD = [
    (("workload.rate=-2",), "workload.rate", "positive"),
    (("workload.duration_s=0",), "workload.duration_s", "positive"),
    (("workload.prompt_tokens.dist=gamma",), "workload.prompt_tokens.dist", "one of"),
    (("workload.prompt_tokens.p99=500",), "workload.prompt_tokens.p99", "p99 > mean"),
    (("workload.output_tokens.p99=100000",), "workload.output_tokens.p99", "at most"),
    (
        ("workload.prompt_tokens.dist=uniform", "workload.prompt_tokens.low=10", "workload.prompt_tokens.high=5"),
        "workload.prompt_tokens.high",
        ">= low",
    ),
    (
        ("workload.prompt_tokens.dist=empirical", "workload.prompt_tokens.path=/nonexistent.csv"),
        "workload.prompt_tokens.path",
        "not found",
    ),
    (
        ("workload.prompt_tokens.dist=fixed", "workload.prompt_tokens.mean=200000"),
        "workload.prompt_tokens",
        "context limit",
    ),
    (("model=llama3-70b",), "model.params_b", "GiB per GPU"),
    (("model.kv_heads=5",), "model.kv_heads", "divide"),
    (("model.weight_dtype=fp4",), "model.weight_dtype", "one of"),
    (("engine.tensor_parallel_size=16",), "engine.tensor_parallel_size", "power of two"),
    (("engine.max_num_seqs=256", "engine.max_num_batched_tokens=100"), "engine.max_num_batched_tokens", "max_num_seqs"),
    (("engine.block_size=12",), "engine.block_size", "one of"),
    (("engine.gpu_memory_utilization=1.5",), "engine.gpu_memory_utilization", "(0, 1]"),
    (("engine.kv_cache_dtype=int8",), "engine.kv_cache_dtype", "one of"),
    (("engine.max_model_len=500000",), "engine.max_model_len", "max_position"),
    (
        ("model=qwen3-30b-a3b", "engine.max_model_len=40000", "gpu=l40s", "engine.gpu_memory_utilization=0.85"),
        "model.params_b",
        "GiB",
    ),
    (("engine.enable_chunked_prefill=false",), "engine.max_num_batched_tokens", "chunked prefill"),
    (("engine.eta_flops=0",), "engine.eta_flops", "(0, 1]"),
    (("engine.eta_prefill=1.5",), "engine.eta_prefill", "(0, 1]"),
    (("engine.reserve_gib=-1",), "engine.reserve_gib", ">= 0"),
    (("engine.memory_profiler=v0.99",), "engine.memory_profiler", "v0.15"),
    (("engine.cudagraph_gib=-0.5",), "engine.cudagraph_gib", ">= 0"),
    (("engine.cudagraph_gib=1e9",), "engine.cudagraph_gib", "at most"),
    (("gpu.visible_memory_gib=0",), "gpu.visible_memory_gib", "positive"),
    (("model.vocab=0",), "model.vocab", "positive integer"),
    (("model.intermediate=-5",), "model.intermediate", "positive integer"),
    (("model.bf16_params_b=9",), "model.bf16_params_b", "params_b"),
    (("model.bf16_params_b=-1",), "model.bf16_params_b", ">= 0"),
    (("gpu.visible_memory_gib=17",), "model.params_b", "activations and buffers vLLM profiles"),
    (("gpu.price_per_hour=-1",), "gpu.price_per_hour", ">= 0"),
    (("fleet.replicas=0",), "fleet.replicas", "nothing can serve"),
    (("fleet.router=random",), "fleet.router", "least_outstanding"),
    (("slo.percentile=0",), "slo.percentile", "(0, 100]"),
    (("slo.attainment=1.2",), "slo.attainment", "[0, 1]"),
    (("seed=-1",), "seed", ">= 0"),
    # found by the fuzzer: a diurnal weekend this busy is refused before any arrival is drawn
    (("workload=diurnal", "workload.weekend_factor=1e30"), "workload.weekend_factor", "limits.max_requests"),
]


@pytest.mark.parametrize(("over", "key", "words"), BAD, ids=[b[1] + ":" + b[0][-1] for b in BAD])
def test_bad_values_name_key_value_and_rule(over, key, words):
    with pytest.raises(ConfigError) as info:
        sim.run(cfg(*over))
    msg = str(info.value)
    assert msg.startswith(key), msg
    assert words in msg, msg
    assert "\n" not in msg


def test_max_model_len_beyond_kv_is_refused():
    with pytest.raises(ConfigError, match="exceeds the KV cache"):
        validate(
            cfg(
                "model=llama3-70b",
                "model.weight_dtype=fp8",
                "engine.max_num_seqs=256",
                "engine.max_model_len=131072",
            )
        )
