"""KV-cache memory arithmetic for one replica (a model on a tensor-parallel group of GPUs).

Kept apart from scheduling so it can be checked against worked examples and start-up logs: how
many bytes the weights take per GPU, how many bytes one token of KV cache takes, what else vLLM
counts before it sizes the cache, and how many paged blocks fit in what is left.

vLLM sizes the cache at start-up by profiling (`determine_available_memory` in
vllm/v1/worker/gpu_worker.py, `profile_run` in vllm/v1/worker/gpu_model_runner.py, the
accounting of vllm/utils/mem_utils.py): it loads the weights, runs one dummy forward pass of
`max_num_batched_tokens` tokens and a dummy sampler step, and gives the KV cache what is left of
total memory x `gpu_memory_utilization` after the weights, the peak of that pass and the memory
that appeared outside PyTorch's allocator. `memory_plan` follows that accounting term by term;
docs/model.md states each rule with the vLLM source it follows. `engine.reserve_gib` set to a
number keeps the older fixed reserve instead.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from sim.config.schema import (
    KV_BYTES,
    WEIGHT_BYTES,
    EngineConfig,
    GpuConfig,
    ModelConfig,
    batch_limits,
    draft_model_config,
)

GIB = 2**30
MIB = 2**20

# Peak bytes per logit (one sequence x one vocabulary entry) while vLLM's dummy sampler runs
# top-k/top-p (vllm/v1/sample/ops/topk_topp_sampler.py, apply_top_k_top_p): the bf16 logits (2),
# their float32 copy (4), the sorted values (4) and int64 indices (8) that logits.sort() returns,
# and inside PyTorch's segmented radix sort (aten/src/ATen/native/cuda/SortStable.cu) an int64
# index sequence (8) plus cub's alternate key and value buffers (4 + 8).
SAMPLER_BYTES_PER_LOGIT = 2 + 4 + 4 + 8 + 8 + 4 + 8
# Memory outside PyTorch's allocator that appears between vLLM's start-up snapshot and the end of
# profiling (CUDA kernel images, cuBLAS handles, NCCL buffers set up by the first large
# all-reduce), per GPU, the accounting of v0.9.2 on. The one fitted constant: least squares on
# the relative KV-block errors of all logged v0.15.1 runs (scripts/kv_profile.py; docs/model.md
# gives the fit and its leave-one-out errors).
NON_TORCH_GIB = 0.44
# Every byte on the device outside PyTorch's allocator, CUDA context included, as the older
# whole-device accounting measured it (V0 before v0.6.5, V1 before v0.9.2): 0.73 GiB in a
# vLLM 0.6.4.post1 start-up log ("Memory profiling results: ... non_torch_memory=0.73GiB",
# TP 1 on an H200); taken from that log, not fitted.
DEVICE_NON_TORCH_GIB = 0.73
# vLLM's CUDA-graph estimate charges at least this much per captured graph beyond the first
# (profile_cudagraph_memory in vllm/v1/worker/gpu_model_runner.py, vLLM PR #30515)
CUDAGRAPH_PER_GRAPH = MIB


@dataclass(frozen=True)
class Profiler:
    """What one line of vLLM releases counts before it sizes the KV cache."""

    whole_device: bool  # non-torch memory of the whole device counts, and every torch allocation
    logits: str  # "sampler": logits + sampler for min(max_num_seqs, N) rows; "tokens": logits of all N tokens
    runner_buffers: bool  # the model runner's [N, hidden] input buffer counts (whole-device V1)
    cudagraphs: bool  # the CUDA-graph estimate is subtracted too


# engine.memory_profiler: the vLLM releases whose start-up profiling each option follows
PROFILERS = {
    "v0.15": Profiler(whole_device=False, logits="sampler", runner_buffers=False, cudagraphs=False),  # v0.9.2-v0.20
    "v0.21": Profiler(whole_device=False, logits="sampler", runner_buffers=False, cudagraphs=True),  # v0.21 on
    "v0.8": Profiler(whole_device=True, logits="sampler", runner_buffers=True, cudagraphs=False),  # V1 v0.8-v0.9.1
    "v0.7": Profiler(whole_device=True, logits="tokens", runner_buffers=True, cudagraphs=False),  # V1 v0.7
    "v0.6": Profiler(whole_device=True, logits="sampler", runner_buffers=False, cudagraphs=False),  # V0 to v0.6.4
}


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
    # what each GPU gives up before the KV cache (bytes per GPU)
    usable_bytes_per_gpu: float = 0.0  # memory x gpu_memory_utilization
    rope_bytes: float = 0.0  # the rotary cos/sin cache, loaded with the weights
    activation_bytes: float = 0.0  # peak of the dummy forward pass and sampler
    non_torch_bytes: float = 0.0  # memory outside PyTorch's allocator
    cudagraph_bytes: float = 0.0  # CUDA-graph memory, where the profiler counts it
    reserve_bytes: float = 0.0  # the fixed reserve (engine.reserve_gib), when set
    profiled: bool = True  # False: the fixed reserve replaced the profile

    @property
    def non_kv_bytes_per_gpu(self) -> float:
        """Everything but the KV cache that is counted against memory x utilisation on a GPU."""
        return (
            self.weight_bytes_per_gpu
            + self.rope_bytes
            + self.activation_bytes
            + self.non_torch_bytes
            + self.cudagraph_bytes
            + self.reserve_bytes
        )


def kv_bytes_per_token(model: ModelConfig, kv_cache_dtype: str) -> int:
    """Bytes of K and V for one token across all layers (GQA: kv_heads x head_dim per layer)."""
    return 2 * model.layers * model.kv_heads * model.head_dim * KV_BYTES[kv_cache_dtype]


def kv_transfer_s(tokens: int, bytes_per_token: int, link_gb_s: float, latency_ms: float) -> float:
    """Seconds to move `tokens` tokens' KV over a link of `link_gb_s` GB/s (1e9 bytes/s):
    bytes / bandwidth + the link's fixed latency (a disaggregated deployment's KV transfer)."""
    return tokens * bytes_per_token / (link_gb_s * 1e9) + latency_ms / 1000.0


def embedding_params(model: ModelConfig) -> float:
    """Parameters of the embedding and the lm_head (one matrix when tied)."""
    return model.vocab * model.hidden * (1 if model.tied_embeddings else 2)


def weight_bytes(model: ModelConfig) -> float:
    """Bytes of the loaded weights. A quantized checkpoint keeps some parameters in bf16: the
    embedding and lm_head at least (quantization tools leave them out; a lookup table is not a
    Linear layer), or `model.bf16_params_b` where its quantization config ignores more."""
    total = model.params_b * 1e9
    if model.weight_dtype == "bf16":
        return total * 2
    keep = bf16_kept(model)
    return (total - keep) * WEIGHT_BYTES[model.weight_dtype] + keep * 2


def bf16_kept(model: ModelConfig) -> float:
    """Parameters a quantized checkpoint keeps in bf16: `model.bf16_params_b`, or the embedding
    and lm_head (at most all of them)."""
    keep = embedding_params(model) if model.bf16_params_b is None else model.bf16_params_b * 1e9
    return min(keep, model.params_b * 1e9)


def streamed_weight_bytes(model: ModelConfig) -> float:
    """Bytes of weights one forward pass reads (all GPUs together): every weight but the
    embedding table, of which it gathers only its tokens' rows (a tied matrix is read whole, as
    the lm_head). The parameters a quantized checkpoint keeps in bf16 (`weight_bytes`) are read
    at two bytes: the lm_head at least."""
    total = model.params_b * 1e9
    lookup = 0.0 if model.tied_embeddings else float(model.vocab * model.hidden)
    if model.weight_dtype == "bf16":
        return (total - lookup) * 2
    keep = bf16_kept(model)
    return (total - max(keep, lookup)) * WEIGHT_BYTES[model.weight_dtype] + max(keep - lookup, 0.0) * 2


def rope_cache_bytes(model: ModelConfig) -> float:
    """vLLM's rotary embedding keeps a cos/sin table of max_position x head_dim in the model dtype
    on every GPU (vllm/model_executor/layers/rotary_embedding/base.py); it is allocated while the
    weights load, so vLLM counts it with them."""
    return model.max_position * model.head_dim * 2


def mlp_width(model: ModelConfig) -> float:
    """Width of the MLP a token passes through in a layer: `model.intermediate`, or derived from the
    active parameters (what is left of a layer after attention, over the 3 matrices of a gated MLP)."""
    if model.intermediate is not None:
        return float(model.intermediate)
    active = (model.active_params_b or model.params_b) * 1e9
    attention = 2 * model.hidden * model.head_dim * (model.heads + model.kv_heads)
    per_layer = (active - embedding_params(model)) / model.layers - attention
    return max(0.0, per_layer / (3 * model.hidden))


def forward_peak(model: ModelConfig, engine: EngineConfig, tokens: int | None = None) -> float:
    """Peak activation bytes per GPU of one forward pass over `tokens` (default
    max_num_batched_tokens): in the MLP the residual stream (hidden), the gate-and-up projection
    (2 x width / TP) and the activation (width / TP) are alive together; a mixture of experts also
    holds each routed copy's output (experts_per_token x hidden). bf16, 2 bytes each."""
    n = engine.max_num_batched_tokens if tokens is None else tokens
    routed = model.experts_per_token if model.experts else 0
    return 2.0 * n * (model.hidden * (1 + routed) + 3 * mlp_width(model) / engine.tensor_parallel_size)


def logits_peak(model: ModelConfig, engine: EngineConfig, profiler: Profiler) -> float:
    """Peak bytes per GPU after the forward pass, with its [N, hidden] output still alive: the
    dummy sampler over min(max_num_seqs, N) sequences of the whole vocabulary (logits are gathered
    on every GPU), or, in V1 before v0.8, the bf16 logits of all N tokens."""
    n = engine.max_num_batched_tokens
    hidden_states = 2.0 * n * model.hidden
    if profiler.logits == "tokens":
        return 2.0 * n * model.vocab + hidden_states
    rows = min(engine.max_num_seqs, n)
    return SAMPLER_BYTES_PER_LOGIT * rows * model.vocab + hidden_states


def cudagraph_estimate(model: ModelConfig, engine: EngineConfig) -> float:
    """vLLM's CUDA-graph estimate (v0.21 on): the first capture, at the largest size, holds that
    batch's activations; every further graph at least CUDAGRAPH_PER_GRAPH. Capture sizes are
    vLLM's defaults (vllm/config/vllm.py): 1, 2, 4, 8..248 by 8, 256..largest by 16, largest =
    min(2 x max_num_seqs, 512, max_num_batched_tokens); piecewise graphs for each size and full
    decode graphs for the sizes up to max_num_seqs."""
    seqs = engine.max_num_seqs
    largest = min(2 * seqs, 512, engine.max_num_batched_tokens)
    sizes = [s for s in [1, 2, 4, *range(8, 256, 8), *range(256, largest + 1, 16)] if s <= largest]
    full = [s for s in sizes if s <= seqs]
    graphs = len(sizes) - 1 + max(len(full) - 1, 0)
    return forward_peak(model, engine, largest) + graphs * CUDAGRAPH_PER_GRAPH


def drafter_memory(model: ModelConfig, engine: EngineConfig) -> tuple[float, int, float]:
    """What speculative decoding adds to a replica's memory: (weight bytes, KV bytes per token,
    KV bytes per token per GPU). A draft model loads its own weights and keeps its own KV for
    every token; MTP layers are `mtp_layers` more layers of the target (weights of a layer
    without the embeddings, which they share, and a layer's KV each)."""
    tp = engine.tensor_parallel_size
    draft = draft_model_config(engine)
    if draft is not None:
        kv = kv_bytes_per_token(draft, engine.kv_cache_dtype)
        return weight_bytes(draft), kv, kv / min(tp, draft.kv_heads)
    n = engine.speculative.mtp_layers
    layer = (model.params_b * 1e9 - embedding_params(model)) / model.layers * WEIGHT_BYTES[model.weight_dtype]
    kv = kv_bytes_per_token(model, engine.kv_cache_dtype) * n // model.layers
    return n * layer, kv, kv / min(tp, model.kv_heads)


def memory_plan(model: ModelConfig, gpu: GpuConfig, engine: EngineConfig) -> MemoryPlan:
    """KV capacity = (memory x utilisation - everything else vLLM counts) / KV bytes per token per GPU.

    KV heads are sharded over the TP group; beyond kv_heads GPUs they are replicated, so the
    per-GPU share of a token is kv_bytes / min(TP, kv_heads).
    """
    tp = engine.tensor_parallel_size
    seqs, tokens = batch_limits(engine, gpu)  # vLLM's defaults where the engine leaves them null
    engine = dataclasses.replace(engine, max_num_seqs=seqs, max_num_batched_tokens=tokens)
    kv_tok = kv_bytes_per_token(model, engine.kv_cache_dtype)
    kv_tok_gpu = kv_tok / min(tp, model.kv_heads)
    if engine.reserve_gib is not None:  # the fixed reserve: all weights at the dtype's bytes
        weights = model.params_b * 1e9 * WEIGHT_BYTES[model.weight_dtype]
        usable = gpu.memory_gib * GIB * engine.gpu_memory_utilization
        parts = {"reserve_bytes": engine.reserve_gib * GIB}
    else:
        profiler = PROFILERS[engine.memory_profiler]
        weights = weight_bytes(model)
        total = (gpu.visible_memory_gib or gpu.memory_gib) * GIB
        usable = math.ceil(total * engine.gpu_memory_utilization)  # request_memory, vllm/v1/worker/utils.py
        activation = max(forward_peak(model, engine), logits_peak(model, engine, profiler))
        if profiler.runner_buffers:
            activation += 2.0 * engine.max_num_batched_tokens * model.hidden
        if engine.cudagraph_gib is not None:
            graphs = engine.cudagraph_gib * GIB
        else:
            graphs = cudagraph_estimate(model, engine) if profiler.cudagraphs else 0.0
        parts = {
            "rope_bytes": rope_cache_bytes(model),
            "activation_bytes": activation,
            "non_torch_bytes": (DEVICE_NON_TORCH_GIB if profiler.whole_device else NON_TORCH_GIB) * GIB,
            "cudagraph_bytes": graphs,
        }
    if engine.speculative.method != "none":  # the drafter's weights and KV share the GPUs
        extra_weights, extra_kv, extra_kv_gpu = drafter_memory(model, engine)
        weights += extra_weights
        kv_tok += extra_kv
        kv_tok_gpu += extra_kv_gpu
    per_gpu_weights = weights / tp
    free = usable - per_gpu_weights - sum(parts.values())
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
        usable_bytes_per_gpu=usable,
        profiled=engine.reserve_gib is None,
        **parts,
    )
