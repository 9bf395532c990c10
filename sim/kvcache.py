"""KV-cache memory arithmetic for one replica (a model on a tensor-parallel group of GPUs).

Kept apart from scheduling so it can be checked against worked examples: how many bytes the
weights take per GPU, how many bytes one token of KV cache takes, and how many paged blocks fit
in what is left of GPU memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.config import KV_BYTES, WEIGHT_BYTES, EngineConfig, GpuConfig, ModelConfig

GIB = 2**30


@dataclass(frozen=True)
class MemoryPlan:
    weight_bytes: float  # whole model
    weight_bytes_per_gpu: float
    kv_bytes_per_token: int  # whole model, K and V, all layers
    kv_bytes_per_token_per_gpu: float
    kv_bytes_per_gpu: float  # memory left for KV on each GPU
    kv_tokens: int  # tokens the replica's KV cache holds
    block_size: int
    kv_blocks: int  # paged blocks of block_size tokens
    max_model_len: int  # longest prompt + output a request may have


def kv_bytes_per_token(model: ModelConfig, kv_cache_dtype: str) -> int:
    """Bytes of K and V for one token across all layers (GQA: kv_heads x head_dim per layer)."""
    return 2 * model.layers * model.kv_heads * model.head_dim * KV_BYTES[kv_cache_dtype]


def memory_plan(model: ModelConfig, gpu: GpuConfig, engine: EngineConfig) -> MemoryPlan:
    """KV capacity = (memory x utilisation - weights/TP - reserve) / KV bytes per token per GPU.

    KV heads are sharded over the TP group; beyond kv_heads GPUs they are replicated, so the
    per-GPU share of a token is kv_bytes / min(TP, kv_heads).
    """
    tp = engine.tensor_parallel_size
    weights = model.params_b * 1e9 * WEIGHT_BYTES[model.weight_dtype]
    per_gpu_weights = weights / tp
    kv_tok = kv_bytes_per_token(model, engine.kv_cache_dtype)
    kv_tok_gpu = kv_tok / min(tp, model.kv_heads)
    free = gpu.memory_gib * GIB * engine.gpu_memory_utilization - per_gpu_weights
    free -= engine.reserve_gib * GIB
    kv_tokens = max(0, int(free // kv_tok_gpu))
    blocks = kv_tokens // engine.block_size
    if engine.kv_blocks is not None and blocks > 0:  # pinned to what vLLM measured (weights must still fit)
        blocks = engine.kv_blocks
    capacity = blocks * engine.block_size
    max_len = engine.max_model_len or min(model.max_position, capacity)
    return MemoryPlan(
        weight_bytes=weights,
        weight_bytes_per_gpu=per_gpu_weights,
        kv_bytes_per_token=kv_tok,
        kv_bytes_per_token_per_gpu=kv_tok_gpu,
        kv_bytes_per_gpu=max(0.0, free),
        kv_tokens=capacity,
        block_size=engine.block_size,
        kv_blocks=blocks,
        max_model_len=max_len,
    )
