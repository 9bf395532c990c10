"""Typed configuration: the schema of every config group and the checks run before simulating.

The dataclasses are the single source of truth for config keys. Hydra composes YAML files from
`conf/` onto them (see `sim.apps.cli`); the Python API accepts an instance, a nested dict or an
OmegaConf node. `validate` raises `ConfigError` naming the key, the value and what is allowed.
Nothing here changes a config after it has been validated.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from sim.config.bounds import Bound, Fraction, NonNeg, OneOf, Positive, Share, at_least, at_most, check
from sim.config.errors import ConfigError
from sim.config.names import (
    CLOSED,
    MEMORY_PROFILERS,
    SESSIONS,
    TRACE,
    TRACE_FORMATS,
    Admission,
    ApiBilling,
    Arrival,
    Burst,
    DynamoMode,
    Escalation,
    GpuBilling,
    KedaSignal,
    KvDtype,
    LengthDist,
    LoadPredictor,
    LongOutput,
    Metric,
    OnLimit,
    Overflow,
    PendingDist,
    PricingKind,
    Router,
    SpecMethod,
    ThinkDist,
    TimeUnit,
    Usage,
    WeightDtype,
)

# ----------------------------------------------------------------------------- schema


@dataclass
class LengthConfig:
    """A token-length model: `dist` plus the parameters that distribution uses."""

    dist: LengthDist = LengthDist.fixed  # fixed | uniform | lognormal | empirical
    mean: float | None = None  # fixed: the value; lognormal: the mean
    p99: float | None = None  # lognormal: 99th percentile
    low: int | None = None  # uniform: inclusive bounds
    high: int | None = None
    path: str | None = None  # empirical: a CSV/Parquet lengths table ...
    column: str | None = None  # ... and the column to resample (default: the first)
    values: list[float] | None = None  # empirical: inline sample to resample from


@dataclass
class PairsConfig:
    """Joint (prompt, output) lengths resampled together from a table or trace."""

    path: str | None = None  # CSV/Parquet table or trace file
    format: str = "csv"  # csv | parquet, or a trace format (azure, burstgpt, mooncake)
    prompt_column: str | None = None  # csv/parquet: defaults num_prefill_tokens / prompt_tokens
    output_column: str | None = None  # csv/parquet: defaults num_decode_tokens / output_tokens
    values: list[list[int]] | None = None  # inline [[prompt, output], ...]


@dataclass
class ColumnMap:
    """Which columns of a csv/parquet trace hold what."""

    arrival_s: str = "arrival_s"  # arrival time (time_unit, or date-time strings)
    prompt_tokens: str = "prompt_tokens"
    output_tokens: str = "output_tokens"
    label: str | None = None  # a column naming each request's class (tenant), if any


@dataclass
class SourceConfig:
    """One stream of requests: an arrival process and its token lengths."""

    arrival: Arrival = Arrival.poisson  # poisson | uniform | mmpp | gamma | diurnal | trace
    rate: float = 10.0  # mean arrivals per second (diurnal: mean over a weekday)
    # mmpp: two-state Markov-modulated Poisson (calm and burst)
    burst_multiplier: float = 4.0  # burst rate / calm rate
    burst_mean_s: float = 30.0  # mean length of a burst
    calm_mean_s: float = 270.0  # mean time between bursts
    # gamma renewal process and diurnal: inter-arrival coefficient of variation
    cv: float = 1.0
    # diurnal: a 24-hour rate profile
    peak_to_trough: float = 3.0  # sinusoidal profile: busiest hour / quietest hour
    peak_hour: float = 14.0
    hourly_weights: list[float] | None = None  # or 24 relative hourly rates (overrides the sinusoid)
    weekend_factor: float = 1.0  # Saturday and Sunday rates relative to weekdays
    start_weekday: int = 0  # weekday of t=0 (0 = Monday)
    # trace replay
    path: str | None = None
    format: str = "csv"  # azure | burstgpt | mooncake | csv | parquet | sessions (multi-turn, closed loop)
    columns: ColumnMap = field(default_factory=ColumnMap)  # csv/parquet (and burstgpt's label)
    time_unit: TimeUnit = TimeUnit.s  # csv/parquet arrival column unit: s | ms | us
    keep_failed: bool = False  # burstgpt: keep zero-response (failed) rows as 1-token outputs
    sort: bool = False  # timestamps out of order: error (false) or sort with a warning (true)
    # token lengths (trace replay takes them from the trace)
    prompt_tokens: LengthConfig = field(
        default_factory=lambda: LengthConfig(dist=LengthDist.lognormal, mean=1000.0, p99=4000.0)
    )
    output_tokens: LengthConfig = field(
        default_factory=lambda: LengthConfig(dist=LengthDist.lognormal, mean=250.0, p99=1000.0)
    )
    pairs: PairsConfig = field(default_factory=PairsConfig)  # when set, replaces both length models
    # this class's own SLO thresholds (default: the slo group's)
    slo_ttft_s: Positive[float] | None = None
    slo_tpot_s: Positive[float] | None = None


@dataclass
class SharedPrefixConfig:
    """Requests in groups that share a system prompt (workload.shared_prefix): RAG and chat
    traffic reuses a few long prefixes, which prefix caching on the GPUs skips and APIs bill at
    the cached price."""

    # number of distinct system prompts (0: no shared prefix)
    groups: Annotated[int, at_least(0, "0: no shared prefix"), at_most(1_000_000)] = 0
    tokens: int = 0  # tokens of each system prompt; part of the prompt length, not added to it
    share: float = 1.0  # fraction of requests that carry one
    zipf: float = 0.0  # popularity of the groups: P(group k) ~ 1 / k^zipf (0: uniform)
    block_tokens: int = 256  # granularity of the prefix ids (about this many tokens a block)


@dataclass
class WorkloadConfig(SourceConfig):
    """The workload: one source (the fields above) or a mix of named sources, then what-if
    transforms applied to the whole."""

    name: str = "steady"
    duration_s: Positive[float] | None = 600.0  # horizon of arrivals; null: the whole trace
    sources: dict[str, SourceConfig] = field(default_factory=dict)  # a mix: class name -> source
    # what-if transforms, in this order
    window_start_s: NonNeg[float] | None = None  # keep arrivals in [start, end) (from the first), re-zeroed
    window_end_s: float | None = None
    rate_scale: Positive[float] = 1.0  # time compressed by this factor: 2 = the same traffic twice as fast
    loop: bool = False  # repeat the arrivals to fill duration_s
    load_scale: Positive[float] = 1.0  # requests thinned (<1) or replicated (>1), time shape kept
    prompt_scale: Positive[float] = 1.0  # multiply every prompt length
    output_scale: Positive[float] = 1.0  # multiply every output length
    # replications (seeds) of a trace replay: each seed replays a block bootstrap of the trace,
    # blocks of this many seconds drawn with replacement (null: replay the trace as it is)
    bootstrap_block_s: Positive[float] | None = 300.0
    shared_prefix: SharedPrefixConfig = field(default_factory=SharedPrefixConfig)
    # closed loop (arrival: closed): users that send a request, wait for its answer, think, send
    # again, until `requests` have been sent in all or `duration_s` has passed (sim.workload.closedloop)
    users: int | None = None  # concurrent users
    think_time_s: float = 0.0  # mean pause between an answer and the user's next request
    think_dist: ThinkDist = ThinkDist.exponential  # exponential | fixed | lognormal
    think_cv: float = 1.0  # lognormal: coefficient of variation of the think time
    requests: int | None = None  # stop after this many requests in all (null: at duration_s)
    ramp_s: float = 0.0  # user k of n starts at k / n x ramp_s
    # multi-turn sessions: turn i+1's prompt = turn i's prompt + its answer + turn_tokens
    turns: LengthConfig = field(default_factory=lambda: LengthConfig(dist=LengthDist.fixed, mean=1.0))
    turn_tokens: LengthConfig = field(
        default_factory=lambda: LengthConfig(dist=LengthDist.lognormal, mean=200.0, p99=1000.0)
    )


@dataclass(kw_only=True)
class ModelConfig:
    """A model's architecture (the model group). Catalogue values have no default here: they come
    from conf/model/*.yaml only (`load_option("model", name)`)."""

    name: str
    params_b: Positive[float]  # total parameters, billions
    active_params_b: Positive[float] | None = None  # parameters used per token (MoE); default: params_b
    flop_params_b: Positive[float] | None = None  # parameters in per-token matmuls; default: active
    layers: Positive[int]
    hidden: Positive[int]
    heads: Positive[int]
    kv_heads: Positive[int]
    head_dim: Positive[int]
    experts: Annotated[int, at_least(0, "0 for a dense model")] = 0  # routed experts per MoE layer (0: dense model)
    experts_per_token: int = 0
    max_position: Positive[int]  # longest context the model supports
    weight_dtype: WeightDtype = WeightDtype.bf16  # bf16 | fp8 | int4
    # what vLLM's start-up memory profile depends on (sim/hardware/kvcache.py, docs/model.md)
    vocab: Positive[int]  # vocabulary: logits the sampler holds, embedding and lm_head rows
    intermediate: Positive[int] | None = None  # MLP width per token per layer (MoE: experts_per_token x expert width
    # + shared expert width); null: derived from the active parameters
    tied_embeddings: bool = False  # lm_head shares the embedding matrix
    bf16_params_b: NonNeg[float] | None = None  # parameters a quantized checkpoint keeps in bf16 (its quantization
    # config's ignore list); null: the embedding and lm_head. Unused for bf16 weights


@dataclass(kw_only=True)
class GpuConfig:
    """A GPU's specs and price (the gpu group). Catalogue values have no default here: they come
    from conf/gpu/*.yaml only (`load_option("gpu", name)`)."""

    name: str
    memory_gib: Positive[float]
    mem_bw_tbps: Positive[float]  # HBM bandwidth, 1e12 B/s
    bf16_tflops: Positive[float]  # dense
    fp8_tflops: Positive[float] | None  # dense; None where the GPU has no FP8 tensor cores
    link_gbps: Positive[float]  # GPU-to-GPU bandwidth per direction, GB/s (TP all-reduce)
    allreduce_latency_us: NonNeg[float]  # per all-reduce, small messages
    max_tp: Positive[int]  # GPUs per node that can form one TP group
    efficiency: Annotated[float, Bound(0, 2, lo_open=True, why="1: as efficient as the H100 fit")] = (
        1.0  # achieved bandwidth and FLOPS relative to the H100 fit (scripts/fit_engine.py)
    )
    price_per_hour: Annotated[float, at_least(0, "$ per GPU-hour")]  # $ per GPU-hour
    # total memory as the CUDA driver reports it (torch.cuda.mem_get_info), which vLLM multiplies by
    # gpu_memory_utilization; null: memory_gib
    visible_memory_gib: Positive[float] | None = None


@dataclass
class SpeculativeConfig:
    """Speculative decoding (engine.speculative): a drafter proposes k tokens per sequence, the
    target verifies them in one pass over k + 1 tokens and keeps the accepted prefix plus one
    token of its own (sim.hardware.speculative, docs/model.md)."""

    method: SpecMethod = SpecMethod.none  # none | draft (a smaller model) | mtp (the target's MTP heads)
    k: Annotated[int, at_least(1, "draft tokens per step"), at_most(64)] = 3  # draft length
    # per-token acceptance (independent): E = (1 - a^(k+1)) / (1 - a) tokens per target step
    acceptance: Annotated[float, Bound(0, 1, hi_open=True)] = 0.7
    draft_model: str | None = None  # draft: a model option (conf/model/NAME.yaml) run on the same GPUs
    mtp_layers: Annotated[int, at_least(1), at_most(64)] = 1  # mtp: layers of the target a draft pass runs


@dataclass
class KvOffloadConfig:
    """Host (CPU) memory as a second KV tier (engine.kv_offload): cached prefix blocks evicted
    from the GPU move there instead of being dropped, and a prefix hit on them is reloaded over
    PCIe instead of recomputed (sim.des.prefix; acts with prefix caching, docs/model.md)."""

    # host memory for KV per replica, GiB (0: no host tier)
    cpu_gib: Annotated[float, Bound(0, 1e6, why="GiB of host memory; 0: off")] = 0.0
    pcie_gb_s: Annotated[float, Bound(0, 1e4, lo_open=True)] = 25.0  # host-to-GPU copy bandwidth per GPU, GB/s


@dataclass(kw_only=True)
class EngineConfig:
    """The serving engine's settings and fitted performance factors (the engine group). The fitted
    factors have no default here: they come from conf/engine/vllm.yaml only, which
    scripts/calibrate.py and scripts/fit_engine.py write."""

    name: str = "vllm"
    # null: vLLM's defaults for the GPU and usage (`batch_limits`)
    max_num_seqs: Positive[int] | None = None
    max_num_batched_tokens: Positive[int] | None = None
    usage: Usage = Usage.api_server  # api_server (vllm serve) | offline (the LLM class): vLLM's defaults differ
    enable_chunked_prefill: bool = True
    block_size: Annotated[int, OneOf(BLOCK_SIZES)] = 16
    gpu_memory_utilization: Fraction[float] = 0.9
    # KV-cache sizing. null: as vLLM profiles it at start-up (sim/hardware/kvcache.py, docs/model.md); a number:
    # a fixed non-KV reserve per GPU (activations, CUDA graphs, NCCL) taken from gpu.memory_gib (the old rule)
    reserve_gib: NonNeg[float] | None = None
    memory_profiler: Annotated[str, OneOf(MEMORY_PROFILERS)] = (
        "v0.15"  # whose profiling to follow: v0.15 (v0.9.2-v0.20) | v0.21 | v0.8 | v0.7 | v0.6
    )
    cudagraph_gib: NonNeg[float] | None = None  # CUDA-graph memory counted before sizing; null: the profiler's rule
    tensor_parallel_size: int = 1
    kv_cache_dtype: KvDtype = KvDtype.auto  # auto (= bf16) | bf16 | fp8
    max_model_len: Positive[int] | None = None  # default: min(model.max_position, KV capacity)
    kv_blocks: Positive[int] | None = None  # pin the KV cache to the blocks vLLM reported at start-up (its log)
    fast_forward: bool = True
    prefix_caching: bool = True  # vLLM V1's default; acts on workloads with prefix ids (sim.des.prefix)
    async_scheduling: bool = True  # vLLM's default since v0.13: a request joins one iteration later
    long_prefill_token_threshold: Annotated[int, at_least(0, "0: no cap")] = (
        0  # > 0: no request prefills more tokens than this per iteration
    )
    max_num_partial_prefills: Positive[int] = 1  # > 1 with no threshold: the threshold is 4% of max_model_len
    admission: Admission = Admission.first_chunk  # first_chunk (vLLM v0.15) | full_prompt: KV for the whole prompt free
    # performance model (roofline): eta_kv, eta_flops from scripts/calibrate.py; the rest from scripts/fit_engine.py
    eta_weights: Fraction[float]
    eta_kv: Fraction[float]
    eta_flops: Fraction[float]  # matmuls of decoding sequences (GEMM kernels)
    eta_prefill: Fraction[float] | None = None  # prefill chunks end to end (attention, norms included); null: eta_flops
    eta_moe: Fraction[float]  # expert-weight reads relative to dense ones (grouped GEMM)
    step_overhead_ms: NonNeg[float]
    step_overhead_per_seq_us: NonNeg[float]  # per-iteration time that grows with the batch (per sequence)
    request_overhead_ms: NonNeg[float]  # client-visible time outside the engine (API server, tokenizer)
    perf_table: str | None = None  # CSV batch_size,tokens,context,iteration_ms replaces the formula
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)  # method none: off
    kv_offload: KvOffloadConfig = field(default_factory=KvOffloadConfig)  # cpu_gib 0: off


@dataclass
class AutoscalerConfig:
    """How the fleet's size follows load (the `fleet/autoscaler` group): what every autoscaler
    has. Each autoscaler adds its own keys in a subclass, registered in `AUTOSCALER_CONFIGS`
    under its name, with one YAML file in conf/fleet/autoscaler/."""

    name: str = "fixed"  # fixed | target | ray | schedule | dynamo | keda
    interval_s: Positive[float] = 2.0  # how often load is sampled and a decision taken


@dataclass
class FixedAutoscaler(AutoscalerConfig):
    """The configured size; the fleet replaces replicas it loses."""

    name: str = "fixed"


@dataclass
class TargetAutoscaler(AutoscalerConfig):
    """Knative's KPA: desired = ceil(load / target), load averaged over a window."""

    name: str = "target"
    metric: Metric = Metric.concurrency  # concurrency | running | kv | tokens_per_s
    target: Positive[float] = 32.0  # load per replica to aim for, in the metric's unit
    stable_window_s: Positive[float] = 60.0
    panic_window_s: float = 6.0
    panic_threshold: Annotated[float, at_least(1)] = (
        2.0  # panic (scale on the short window, never down) at this x target
    )
    scale_down_delay_s: NonNeg[float] = 60.0  # a lower desired count must hold this long before acting
    max_scale_up_rate: Annotated[float, at_least(1)] = 1000.0  # at most x current replicas per decision
    max_scale_down_rate: Annotated[float, at_least(1)] = 2.0  # at least current / rate replicas after a decision
    scale_to_zero_grace_s: NonNeg[float] = 30.0  # with min_replicas = 0: idle this long before zero


@dataclass
class RayAutoscaler(AutoscalerConfig):
    """Ray Serve's: a target of ongoing requests per replica, acted on after a delay."""

    name: str = "ray"
    metric: Metric = Metric.concurrency  # concurrency | running | kv | tokens_per_s
    target: Positive[float] = 32.0
    upscale_delay_s: NonNeg[float] = 30.0
    downscale_delay_s: NonNeg[float] = 600.0


@dataclass
class ScheduleAutoscaler(AutoscalerConfig):
    """Replicas for each hour of the day (24 values), on the workload's clock."""

    name: str = "schedule"
    schedule: list[int] | None = None


@dataclass
class DynamoAutoscaler(AutoscalerConfig):
    """NVIDIA Dynamo's planner on one pool: `throughput` forecasts the request
    rate and token mix and divides by one replica's capacity under the SLO; `load` steps one
    replica up or down from KV-cache use and waiting requests."""

    name: str = "dynamo"
    interval_s: Positive[float] = 10.0  # metric pulling interval (load mode averages these samples)
    mode: DynamoMode = DynamoMode.throughput  # throughput | load
    adjustment_interval_s: Positive[float] = 180.0  # a decision every this many seconds
    predictor: LoadPredictor = LoadPredictor.constant  # throughput: constant | moving_average | linear
    predictor_window: Positive[int] = 6  # throughput: adjustment intervals the predictor reads
    kv_high: Fraction[float] = 0.9  # load: mean KV-cache use above this adds a replica
    kv_low: Share[float] = 0.5  # load: below this (and the queue below queue_low) removes one
    queue_high: NonNeg[float] = 5.0  # load: waiting requests per replica above this adds a replica
    queue_low: NonNeg[float] = 0.2  # load: waiting requests per replica below this allows removing one
    # throughput: scale by Dynamo's correction factors, observed over expected ITL (and TTFT on a
    # prefill pool), as its planner does unless run with --no-correction
    correction: bool = True


@dataclass
class KedaAutoscaler(AutoscalerConfig):
    """KEDA on the router's signals, as llm-d deploys it: an HPA with desired = ceil(signal /
    target), a scale-down stabilisation window, and KEDA's activation and scale to zero."""

    name: str = "keda"
    interval_s: Positive[float] = 15.0  # the HPA's sync period
    signal: KedaSignal = KedaSignal.queue  # queue | backlog_s | ttft
    target: Positive[float] = 4.0  # per replica: waiting requests, seconds of prefill, or TTFT / slo.ttft_s
    running_target: Positive[float] | None = 64.0  # a second trigger: running sequences per replica; null: none
    activation_threshold: NonNeg[float] = 0.0  # the signal must exceed this to scale from zero
    polling_interval_s: Positive[float] = 30.0  # KEDA's pollingInterval: activation checks
    cooldown_period_s: NonNeg[float] = 300.0  # KEDA's cooldownPeriod: inactive this long before zero
    stabilization_window_s: NonNeg[float] = 300.0  # HPA scaleDown.stabilizationWindowSeconds
    tolerance: Share[float] = 0.1  # the HPA leaves the count alone within this ratio of target
    prefill_tokens_per_s: Positive[float] | None = None  # backlog_s: calibrated prefill rate; null: the perf model's


AUTOSCALER_CONFIGS: dict[str, type[AutoscalerConfig]] = {
    "fixed": FixedAutoscaler,
    "target": TargetAutoscaler,
    "ray": RayAutoscaler,
    "schedule": ScheduleAutoscaler,
    "dynamo": DynamoAutoscaler,
    "keda": KedaAutoscaler,
}


def autoscaler_config(value: Any, key: str = "fleet.autoscaler") -> AutoscalerConfig:
    """The autoscaler's own dataclass from a mapping (its `name` picks the class) or a config
    already typed; a key another autoscaler has is refused with the way to choose that one."""
    if isinstance(value, AutoscalerConfig) and type(value) is not AutoscalerConfig:
        return value
    data = dict(vars(value)) if isinstance(value, AutoscalerConfig) else dict(value)
    name = data.get("name", "fixed")
    cls = AUTOSCALER_CONFIGS.get(name)
    if cls is None:
        raise ConfigError(f"{key}.name", name, f"must be one of {', '.join(AUTOSCALER_CONFIGS)}")
    hints = typing.get_type_hints(cls)
    for k in data:
        if k not in hints:
            import difflib

            owners = [n for n, c in AUTOSCALER_CONFIGS.items() if k in typing.get_type_hints(c)]
            near = difflib.get_close_matches(k, list(hints), n=1)
            hint = f"; it is a key of fleet/autoscaler={' or '.join(owners)}" if owners else ""
            hint = hint or (f"; did you mean {key}.{near[0]}?" if near else "")
            raise ConfigError(f"{key}.{k}", data[k], f"unknown key of the {name} autoscaler{hint}")
    return build(cls, data, key)


@dataclass
class ColdStartConfig:
    """Provisioning time of a new replica: acquire + image + weight load + engine start."""

    acquire_s: NonNeg[float] = 0.0  # waiting for a GPU node (0: capacity on hand)
    image_s: NonNeg[float] = 10.0  # container start with a cached image
    load_gbps: Positive[float] = 2.0  # weight loading from local disk, GB/s per GPU
    init_s: NonNeg[float] = 15.0  # engine start: CUDA graphs, compilation, KV profiling
    fixed_s: NonNeg[float] | None = None  # a measured cold start replaces the sum


@dataclass
class SleepConfig:
    """vLLM-style sleep of idle replicas (fleet.sleep)."""

    enabled: bool = False
    level: Annotated[int, OneOf((1, 2), "1: weights to host RAM, 2: weights dropped")] = (
        1  # 1: weights to host RAM; 2: weights dropped (wake reloads them)
    )
    idle_s: NonNeg[float] = 60.0  # idle this long before sleeping
    min_awake: NonNeg[int] = 1  # never fewer awake replicas than this
    cost_fraction: Share[float] = 1.0  # billed share of the rate while asleep (0: GPU released)
    l1_gbps: Positive[float] = 15.0  # host-to-GPU weight copy on a level-1 wake, GB/s per GPU
    wake_extra_s: NonNeg[float] = 0.5  # first step after a wake is slower (warm-up)
    wake_s: NonNeg[float] | None = None  # a measured wake time replaces the derivation


@dataclass
class WarmupConfig:
    """A replica's first iterations after a cold start run slower (fleet.warmup): caches, JIT
    and allocator warm-up. An iteration that starts within `duration_s` of the replica becoming
    active takes `factor` times as long (1: off)."""

    factor: Annotated[float, Bound(1, 100, why="1: off; 2: twice as slow")] = 1.0
    duration_s: Annotated[float, Bound(0, 30 * 86400, why="seconds; at most 30 days")] = 0.0


@dataclass
class PendingGpuConfig:
    """Waiting for GPU capacity before a cold start begins (fleet.pending_gpu): a scale-up
    draws a wait from `dist` (mean `mean_s`; lognormal: `sigma` of the log) on the fleet's own
    generator; the replica is not billed while it waits. none: capacity on hand."""

    dist: PendingDist = PendingDist.none  # none | exponential | lognormal
    mean_s: Annotated[float, Bound(0, 7 * 86400, why="seconds; at most 7 days")] = 0.0
    sigma: Annotated[float, Bound(0, 10, lo_open=True)] = 1.0  # lognormal: standard deviation of log(wait)


@dataclass
class PricingConfig:
    """How GPU time is priced and billed (fleet.pricing)."""

    kind: PricingKind = PricingKind.on_demand  # on_demand | reserved | spot | owned
    reserved_gpus: NonNeg[int] = 0  # reserved: GPUs committed for the whole horizon
    reserved_fraction: Share[float] = 0.6  # reserved price / on-demand price (30-50% cuts are typical)
    burst: Burst = Burst.on_demand  # reserved: replicas beyond the reservation run on_demand or spot
    spot_fraction: Share[float] = 0.4  # spot price / on-demand price
    spot_preemptions_per_hour: NonNeg[float] = 0.1  # per spot replica
    billing: GpuBilling = GpuBilling.per_second  # per_second | per_hour (each replica's lifetime rounded up)
    min_billed_s: NonNeg[float] = 60.0  # minimum billed lifetime of a replica
    ops_cost_per_month: NonNeg[float] = 0.0  # fixed operations cost, prorated over the horizon (GPU fleets only)
    # instances rented whole: GPUs per instance (an 8-GPU node bills all 8 even if replicas use 2)
    instance_gpus: Positive[int] = 1
    # egress: $ per GB of generated output leaving the cloud, at bytes_per_token (streamed text)
    egress_per_gb: NonNeg[float] = 0.0
    bytes_per_token: NonNeg[float] = 4.0
    # owned hardware (kind=owned): an effective $/GPU-hour from purchase, power and hosting
    purchase_per_gpu: NonNeg[float] = 30000.0  # $ per GPU, its share of the server included
    amortization_years: Positive[float] = 3.0
    power_kw_per_gpu: NonNeg[float] = 0.7  # draw at load, its share of the server included
    price_per_kwh: NonNeg[float] = 0.10
    pue: Annotated[float, at_least(1, "facility power / IT power")] = (
        1.3  # data-centre power usage effectiveness (>= 1)
    )
    hosting_per_gpu_month: NonNeg[float] = 0.0  # rack space, network, support
    owned_gpus: NonNeg[int] | None = None  # GPUs bought (default: the most the fleet can use)


@dataclass
class FleetConfig:
    name: str = "fixed"
    replicas: Annotated[int, at_least(0, "0: no GPUs, the API serves everything")] = (
        1  # fixed: the fleet size; autoscaled: replicas at t = 0
    )
    min_replicas: NonNeg[int] = 1
    max_replicas: int = 8
    router: Router = Router.least_outstanding  # least_outstanding | round_robin | power_of_two | prefix_aware
    prefix_slack: NonNeg[int] = 8  # prefix_aware: extra load accepted for a cache hit
    start_warm: bool = True  # replicas present at t = 0 are ready (no cold start)
    # one of AUTOSCALER_CONFIGS (a mapping is turned into its class by its name)
    autoscaler: Any = field(default_factory=FixedAutoscaler)
    cold_start: ColdStartConfig = field(default_factory=ColdStartConfig)
    sleep: SleepConfig = field(default_factory=SleepConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)
    # scale-down: true waits for a removed replica's requests to end (draining); false stops it
    # at once and routes its requests again (counted as dropped_on_scale_down)
    drain: bool = True
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    pending_gpu: PendingGpuConfig = field(default_factory=PendingGpuConfig)

    def __post_init__(self) -> None:
        self.autoscaler = autoscaler_config(self.autoscaler)


@dataclass
class ApiTier:
    name: str = "tier"
    min_lifetime_spend_usd: NonNeg[float] = 0.0
    rpm: Positive[int] | None = None
    tpm: Positive[int] | None = None
    max_output_tokens: Positive[int] | None = None
    monthly_cap_usd: NonNeg[float] | None = None


@dataclass
class ApiConfig:
    """A pay-per-token API to overflow to (api group)."""

    name: str = "none"
    enabled: bool = False
    overflow: Overflow = Overflow.never  # never | always | ttft | slo | queue | share
    ttft_margin: Positive[float] = 1.0  # ttft/slo: overflow when a prediction exceeds margin x the SLO threshold
    queue_threshold: NonNeg[int] = 16  # queue: overflow when this many requests wait ahead
    share: Share[float] = 0.0  # share: this fraction of requests, at random
    # latency: TTFT lognormal (mean, p99); output speed lognormal (mean, cv) tokens/s per request
    ttft_mean_s: Positive[float] = 0.35
    ttft_p99_s: float = 1.5
    tokens_per_s_mean: Positive[float] = 80.0
    tokens_per_s_cv: NonNeg[float] = 0.3
    # prices, $ per million tokens
    price_input_per_m: NonNeg[float] = 0.10
    price_cached_input_per_m: NonNeg[float] = 0.05
    price_output_per_m: NonNeg[float] = 0.10
    cache_hit_rate: Share[float] = 0.5  # share of input tokens billed at the cached price
    # time-based billing (seed 002): $ per second of a request's execution (not queueing or warm-up)
    billing: ApiBilling = ApiBilling.per_token  # per_token | per_second
    price_per_second: NonNeg[float] = 0.0
    # warm and cold endpoint: idle this long, it goes cold; the next request waits warmup_s (unbilled)
    cold_after_s: NonNeg[float] | None = None  # null: always warm
    warmup_s: NonNeg[float] = 15.0
    prefill_tokens_per_s: Positive[float] | None = None  # TTFT grows with the prompt: + prompt / this rate
    # limits
    rpm: Positive[int] | None = None  # requests started per minute (sliding 60 s window)
    tpm: Positive[int] | None = None  # prompt + output tokens of requests started per minute
    monthly_cap_usd: NonNeg[float] | None = None  # spend per 30-day month
    max_output_tokens: Positive[int] | None = None  # the API's output cap ...
    long_output: LongOutput = LongOutput.truncate  # ... truncates the output (and its bill), or refuses the request
    # usage tiers that rise with lifetime spend (seed 002); a tier's limits replace rpm, tpm,
    # max_output_tokens and monthly_cap_usd once lifetime spend reaches its threshold
    tiers: list[ApiTier] | None = None
    lifetime_spend_usd: NonNeg[float] = 0.0  # spend before t = 0 (it decides the starting tier)
    on_limit: OnLimit = OnLimit.gpu  # gpu: back to the GPU queue | backoff: retry later (counts in TTFT)
    backoff_base_s: Positive[float] = 1.0
    backoff_factor: Annotated[float, at_least(1)] = 2.0
    backoff_max_s: float = 60.0


@dataclass
class SloConfig:
    name: str = "chat"
    ttft_s: Positive[float] = 1.0
    tpot_s: Positive[float] = 0.05
    percentile: Annotated[float, Bound(0, 100, lo_open=True)] = 95.0
    attainment: Share[float] = 0.95


@dataclass
class FailureModesConfig:
    """The autoscaler's failure modes counted in the summary and the fleet plot
    (output.failure_modes; docs/metrics.md). `report`: true or false, or null (the default):
    reported for a fleet with an autoscaler other than `fixed`, or when a key that causes one is
    set (fleet.drain=false, fleet.warmup, fleet.pending_gpu)."""

    report: bool | None = None
    reversal_intervals: Positive[int] = 3  # a change of direction within this many autoscaler intervals reverses
    zero_traffic_s: Positive[float] = 600.0  # a stretch this long with no request in the system is zero traffic


@dataclass
class OutputConfig:
    timeseries_interval_s: Positive[float] = 60.0
    plots: bool = True
    requests: bool = True  # write requests.parquet
    failure_modes: FailureModesConfig = field(default_factory=FailureModesConfig)


@dataclass
class LimitsConfig:
    """What one run may cost before anything is allocated (limits): a run over a limit stops with
    one line naming the key that drives it. Generous defaults; raise them for a bigger machine."""

    max_requests: Positive[int] = 30_000_000  # requests in the workload (a 10M-request replay needs ~4 GB)
    max_memory_gib: Positive[float] = 16.0  # estimated memory of the run's records (~420 bytes a request)
    max_replicas: Positive[int] = 10_000  # replicas a fleet may have at once
    max_samples: Positive[int] = 2_000_000  # time-series rows (simulated horizon / output.timeseries_interval_s)
    max_ticks: Positive[int] = 50_000_000  # autoscaler decisions (horizon / fleet.autoscaler.interval_s)
    max_spot_preemptions: Positive[int] = 10_000_000  # expected spot preemptions over the horizon
    max_tokens: Positive[int] = 100_000_000  # tokens of one request (prompt or output)
    max_classes: Positive[int] = 1_000  # distinct request classes (trace labels, mix sources)


@dataclass
class EscalationConfig:
    """How a cascade's tier passes a request on to the next tier, after answering it (the
    answer is thrown away and the next tier answers again). One entry per boundary: `share[0]`
    from tier 1 to 2, `share[1]` from tier 2 to 3, ..."""

    kind: Escalation = Escalation.share
    share: list[float] = field(default_factory=list)  # share: each boundary's share of answers passed on
    class_share: dict[str, list[float]] = field(default_factory=dict)  # class_share: per request class
    # confidence: each tier's confidence in its answer ~ Beta(a, b), drawn per request; passed on
    # when under the boundary's threshold (the share passed on is the Beta CDF at the threshold)
    confidence_a: Positive[float] = 2.0
    confidence_b: Positive[float] = 2.0
    threshold: list[float] = field(default_factory=list)


@dataclass
class DisaggConfig:
    """A deployment served disaggregated: its requests prefill in one declared deployment (the
    prefill pool), their prompt's KV moves over a link, and they decode in another (the decode
    pool); each pool has its own GPU, TP, fleet, autoscaler and pricing (`sim.des.disagg`)."""

    prefill: str = ""  # the declared deployment that prefills (its traffic and SLO are the deployment's)
    decode: str = ""  # the declared deployment that decodes
    link_gb_s: Positive[float] = 50.0  # KV transfer bandwidth, GB/s (1e9 bytes/s) per transfer
    link_latency_ms: NonNeg[float] = 0.0  # fixed time per transfer (connection, handshake, completion)


@dataclass
class PlatformConfig:
    """Several deployments in one scenario (`platform=NAME`; `none`: one deployment, the rest of
    the config). Each deployment is the base scenario with its own overrides (model, GPU, engine,
    fleet, SLO, workload), simulated on its own GPUs; `cascade` chains some of them as tiers."""

    name: str = "none"
    deployments: dict[str, list[str]] = field(default_factory=dict)  # name -> overrides of the base scenario
    cascade: list[str] = field(default_factory=list)  # tiers, cheapest first: deployments' names
    # mixed pools: a deployment served by several of the declared ones (its pools, each a GPU
    # type with its own fleet, autoscaler and pricing) behind one front router, on the first
    # pool's traffic: {chat: [base, burst]}
    pools: dict[str, list[str]] = field(default_factory=dict)
    # disaggregated prefill/decode: {chat: {prefill: p, decode: d, link_gb_s: 50, link_latency_ms: 1}}
    disaggregated: dict[str, DisaggConfig] = field(default_factory=dict)
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    budget_usd_per_hour: NonNeg[float] | None = None  # a shared budget: the plan's total cost rate under it
    budget_gpus: dict[str, int] = field(default_factory=dict)  # a shared node pool: GPUs of each type


@dataclass
class Config:
    seed: int = 0
    seeds: list[int] | None = None  # replications: run once per seed, report means and 95% intervals
    # each group's default: the option conf/config.yaml's defaults list picks, read from its YAML
    workload: WorkloadConfig = field(default_factory=lambda: default_option("workload"))
    model: ModelConfig = field(default_factory=lambda: default_option("model"))
    gpu: GpuConfig = field(default_factory=lambda: default_option("gpu"))
    engine: EngineConfig = field(default_factory=lambda: default_option("engine"))
    fleet: FleetConfig = field(default_factory=lambda: default_option("fleet"))
    api: ApiConfig = field(default_factory=lambda: default_option("api"))
    slo: SloConfig = field(default_factory=lambda: default_option("slo"))
    output: OutputConfig = field(default_factory=OutputConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    platform: PlatformConfig = field(default_factory=PlatformConfig)


# ----------------------------------------------------------------------------- building


def conf_dir() -> str:
    """The config directory: inside the installed package, or `conf/` of a checkout."""
    here = Path(__file__).resolve().parent.parent  # the sim package
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise RuntimeError(f"fleetsim configs not found next to {here}")


def resolve_path(path: str) -> Path:
    """A data path as given if it exists (absolute, or relative to the working directory), else
    relative to the project root (the directory holding conf/), so `traces/...` works from
    anywhere in a checkout."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    rooted = Path(conf_dir()).resolve().parent / p
    return rooted if rooted.exists() else p


def not_found(path) -> str:
    """Why a data file is missing, with where a relative path was looked for."""
    p = Path(str(path)).expanduser()
    if p.is_absolute():
        return "file not found"
    places = dict.fromkeys([str(Path.cwd()), str(Path(conf_dir()).resolve().parent)])
    return f"file not found (looked in {' and '.join(places)})"


def options(group: str) -> list[str]:
    """The option names of a config group (e.g. `options("gpu")`)."""
    return sorted(p.stem for p in (Path(conf_dir()) / group).glob("*.yaml"))


def load_option(group: str, name: str) -> Any:
    """One option of a config group as its dataclass (e.g. `load_option("gpu", "h100")`,
    `load_option("fleet/autoscaler", "target")`), with the options its `defaults:` list names
    merged first, as Hydra composes it."""
    data = _option_data(group, name, ())
    if group == "fleet/autoscaler":
        return autoscaler_config(data)
    return build(typing.get_type_hints(Config)[group], data, group)


def default_option(group: str) -> Any:
    """The option of `group` that conf/config.yaml's defaults list picks, as its dataclass."""
    import yaml

    data = yaml.safe_load((Path(conf_dir()) / "config.yaml").read_text())
    for entry in data.get("defaults", []):
        if isinstance(entry, dict) and group in entry:
            return load_option(group, entry[group])
    raise RuntimeError(f"conf/config.yaml names no default for the {group} group")


def _option_data(group: str, name: str, seen: tuple[str, ...]) -> dict:
    """An option file's values over those of the options of the same group its `defaults:` list
    names (in the list's order, `_self_` where it stands, else last)."""
    import yaml

    path = Path(conf_dir()) / group / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(group, name, f"unknown option; known: {', '.join(options(group))}")
    if name in seen:
        raise ConfigError(group, name, f"its defaults list includes itself ({' -> '.join([*seen, name])})")
    data = yaml.safe_load(path.read_text()) or {}
    parents = data.pop("defaults", None) or []
    if "_self_" not in parents:
        parents = [*parents, "_self_"]
    merged: dict = {}
    for entry in parents:
        if entry == "_self_":
            _merge(merged, data)
        elif isinstance(entry, str):
            _merge(merged, _option_data(group, entry.removeprefix(f"/{group}/"), (*seen, name)))
        elif isinstance(entry, dict) and len(entry) == 1:  # a nested group: {autoscaler: target}
            [(sub, option)] = entry.items()
            _merge(merged, {sub: _option_data(f"{group}/{sub}", option, ())})
        else:
            where = f"{group}/{name}.yaml"
            raise ConfigError(where, entry, "defaults: other options of the group, or {subgroup: option}")
    return merged


def _merge(into: dict, values: dict) -> None:
    """Merge `values` into `into`, mappings key by key, anything else replaced."""
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def build(cls: Any, data: dict, key: str, base: Any = None) -> Any:
    """The dataclass `cls` from a mapping of its fields, each value checked against its declared
    type (`typed`): merged onto `base` (default: the class's defaults; a nested dataclass onto its
    field's default), unknown keys refused with the nearest known one; a field without a default
    (a catalogue value) must be in `data` unless there is a base."""
    import dataclasses
    import difflib

    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        where = f"{key}.{name}"
        if name not in hints:
            near = difflib.get_close_matches(name, list(hints), n=1)
            raise ConfigError(where, value, "unknown key" + (f"; did you mean {key}.{near[0]}?" if near else ""))
        kind = hints[name]
        current = _field_default(cls, name) if base is None else getattr(base, name)
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            kwargs[name] = build(kind, value, where, current if isinstance(current, kind) else None)
        elif kind is Any and isinstance(value, dict) and dataclasses.is_dataclass(current):
            # a field whose class the mapping's name picks (fleet.autoscaler): merged onto the
            # current one when it names the same class, else taken as it is
            same = value.get("name", getattr(current, "name", None)) == getattr(current, "name", None)
            kwargs[name] = {**vars(current), **value} if same else value
        else:
            kwargs[name] = typed(value, kind, where)
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    required = (f.name for f in dataclasses.fields(cls) if f.init and _required(f))
    missing = next((name for name in required if name not in kwargs), None)
    if missing:
        raise ConfigError(f"{key}.{missing}", "(missing)", "must be given: it has no default")
    return cls(**kwargs)


def _required(f: Any) -> bool:
    import dataclasses

    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _field_default(cls: Any, name: str) -> Any:
    """The default of a dataclass field (its factory's product), or None if it has none."""
    import dataclasses

    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def typed(value: Any, kind: Any, key: str) -> Any:
    """`value` as the declared type `kind`, converted as OmegaConf converts (an integer or a
    number's text for a float, a whole number's text for an int, true/yes/on or false/no/off
    for a bool, a number for a text); ConfigError naming `key` when it cannot be."""
    import dataclasses

    args = typing.get_args(kind)
    if type(None) in args:  # X | None
        if value is None:
            return None
        kind = next(a for a in args if a is not type(None))
        args = typing.get_args(kind)
    if value is None:
        raise ConfigError(key, value, "must be given (it cannot be null)")
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return build(kind, value, key) if isinstance(value, dict) else _refuse(key, value, kind.__name__)
    if origin is list:
        if not isinstance(value, list):
            _refuse(key, value, "a list")
        return [typed(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            _refuse(key, value, "a mapping")
        return {k: typed(v, args[-1], f"{key}.{k}") for k, v in value.items()} if args else value
    if isinstance(kind, type) and issubclass(kind, Enum):
        return _as_choice(value, kind, key)
    convert = _SCALARS.get(kind)
    return convert(value, key) if convert else value


def _as_choice(value: Any, kind: Any, key: str) -> Any:
    if value not in kind.names():
        _refuse(key, value, f"one of {', '.join(kind.names())}")
    return kind(value)


def _as_bool(value: Any, key: str) -> bool:
    text = str(value).lower()
    if isinstance(value, bool) or text in _TRUE + _FALSE:
        return value if isinstance(value, bool) else text in _TRUE
    return _refuse(key, value, "a boolean")


def _as_int(value: Any, key: str) -> int:
    if _is_int(value) or (isinstance(value, str) and value.strip().lstrip("+-").isdigit()):
        return int(value)
    return _refuse(key, value, "an integer")


def _as_float(value: Any, key: str) -> float:
    if not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    return _refuse(key, value, "a number")


def _as_str(value: Any, key: str) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    return _refuse(key, value, "a text")


_SCALARS = {bool: _as_bool, int: _as_int, float: _as_float, str: _as_str}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse(key: str, value: Any, what: str) -> Any:
    raise ConfigError(key, value, f"must be {what}")


def plain(obj: Any) -> Any:
    """A config as plain data typed as declared (nested dicts and lists of numbers, booleans and
    texts; a path as its text), for writing: what OmegaConf would write for it."""
    import contextlib
    import dataclasses
    from pathlib import PurePath

    if isinstance(obj, Enum):
        return obj.value
    if dataclasses.is_dataclass(obj):
        hints = typing.get_type_hints(type(obj))
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            value = str(value) if isinstance(value, PurePath) else value
            if not dataclasses.is_dataclass(value):
                with contextlib.suppress(ConfigError):  # written as it is; validation reports it
                    value = typed(value, hints[f.name], f.name)
            out[f.name] = plain(value)
        return out
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return str(obj) if isinstance(obj, PurePath) else obj


WEIGHT_BYTES = {"bf16": 2.0, "fp8": 1.0, "int4": 0.5}
# upper bounds of the physically possible: a larger value is a typo (and overflows the arithmetic)
PLAUSIBLE = {
    "model.params_b": 1e5,
    "model.active_params_b": 1e5,
    "model.layers": 1e4,
    "model.hidden": 1e6,
    "model.heads": 1e5,
    "model.kv_heads": 1e5,
    "model.head_dim": 1e5,
    "model.experts": 1e6,
    "model.max_position": 1e9,
    "model.vocab": 1e8,
    "model.intermediate": 1e8,
    "gpu.memory_gib": 1e5,
    "gpu.visible_memory_gib": 1e5,
    "gpu.mem_bw_tbps": 1e4,
    "gpu.bf16_tflops": 1e7,
    "gpu.fp8_tflops": 1e7,
    "gpu.link_gbps": 1e7,
    "gpu.allreduce_latency_us": 1e7,
    "gpu.max_tp": 4096,
    "gpu.price_per_hour": 1e5,
    "engine.max_num_seqs": 1e6,
    "engine.max_num_batched_tokens": 1e8,
    "engine.reserve_gib": 1e5,
    "engine.cudagraph_gib": 1e5,
    "engine.step_overhead_ms": 6e4,
    "engine.step_overhead_per_seq_us": 6e7,
    "engine.request_overhead_ms": 6e4,
    "engine.max_model_len": 1e9,
}
KV_BYTES = {"auto": 2, "bf16": 2, "fp8": 1}
BLOCK_SIZES = (1, 8, 16, 32, 64, 128)


def long_prefill_threshold(e: EngineConfig, max_model_len: int) -> int:
    """Most prompt tokens one request prefills per iteration (0: no cap), as vLLM's
    SchedulerConfig derives it (vllm/config/scheduler.py): the threshold if set, else 4% of
    max_model_len when max_num_partial_prefills > 1. (The V1 scheduler applies only this cap;
    the count of concurrent partial prefills was V0's.)"""
    if e.long_prefill_token_threshold > 0:
        return e.long_prefill_token_threshold
    return int(max_model_len * 0.04) if e.max_num_partial_prefills > 1 else 0


def failure_modes_on(cfg: Config) -> bool:
    """Whether the run reports the autoscaler's failure modes (`FailureModesConfig`)."""
    f = cfg.fleet
    warmup = f.warmup.factor != 1.0 and f.warmup.duration_s > 0
    report = cfg.output.failure_modes.report
    if report is not None:
        return report
    return f.autoscaler.name != "fixed" or not f.drain or warmup or f.pending_gpu.dist != "none"


def batch_limits(e: EngineConfig, g: GpuConfig) -> tuple[int, int]:
    """(max_num_seqs, max_num_batched_tokens): the engine's values, or where they are null the
    defaults vLLM picks for the GPU and usage (EngineArgs.get_batch_defaults, vllm/engine/
    arg_utils.py, v0.15.1): GPUs with at least 70 GiB that are not A100s get 1024 sequences
    and 8192 tokens (vllm serve) or 16384 (LLM class); others 256 sequences and 2048 tokens
    (vllm serve) or 8192 (LLM class). A defaulted max_num_seqs is capped at the token budget."""
    large = g.memory_gib >= 70 and not g.name.lower().startswith("a100")
    seqs = 1024 if large else 256
    tokens = {(True, "api_server"): 8192, (True, "offline"): 16384}.get((large, e.usage))
    if tokens is None:
        tokens = 2048 if e.usage == "api_server" else 8192
    tokens = tokens if e.max_num_batched_tokens is None else e.max_num_batched_tokens
    # a default batch never exceeds the token budget (a set max_num_seqs must fit it: checked)
    return (min(seqs, tokens) if e.max_num_seqs is None else e.max_num_seqs), tokens


def _did_you_mean(key: str, root: Any = None) -> str:
    """For an unknown dotted key of the schema (of `root`, default Config), the nearest known one."""
    import dataclasses
    import difflib
    import typing

    cls: Any = root or Config
    *parents, last = key.split(".")
    for part in parents:
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        cls = hints.get(part)
        if cls is None or not dataclasses.is_dataclass(cls):
            return ""
    names = [f.name for f in dataclasses.fields(cls)]
    if last in names:
        return ""
    near = difflib.get_close_matches(last, names, n=1)
    return f"; did you mean {'.'.join([*parents, near[0]])}?" if near else ""


def unknown_keys(node: Any, key: str) -> None:
    """A key the schema does not know (a typo added with `+`, e.g. `+workload.rat=3`) stops the
    run instead of being ignored."""
    import difflib

    if not hasattr(node, "__dataclass_fields__"):
        if isinstance(node, dict):
            for k, v in node.items():
                unknown_keys(v, f"{key}.{k}")
        return
    fields = node.__dataclass_fields__
    for name, value in vars(node).items():
        where = f"{key}.{name}" if key else name
        if name not in fields:
            near = difflib.get_close_matches(name, list(fields), n=1)
            hint = f"; did you mean {key + '.' if key else ''}{near[0]}?" if near else ""
            raise ConfigError(where, value, f"unknown key{hint}")
        unknown_keys(value, where)


# ----------------------------------------------------------------------------- validation


def require(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _positive(value: float | None, key: str, *, integer: bool = False) -> None:
    kind = "a positive integer" if integer else "a positive number"
    require(value is not None and math.isfinite(value) and value > 0, key, value, f"must be {kind}")


def validate_length(lc: LengthConfig, key: str) -> None:
    check(lc, key)
    if lc.dist == "fixed":
        require(lc.mean is not None and lc.mean >= 1, f"{key}.mean", lc.mean, "fixed lengths need mean >= 1")
    elif lc.dist == "uniform":
        require(lc.low is not None and lc.low >= 1, f"{key}.low", lc.low, "uniform lengths need low >= 1")
        require(
            lc.high is not None and lc.high >= lc.low,  # type: ignore[operator]
            f"{key}.high",
            lc.high,
            f"uniform lengths need high >= low ({lc.low})",
        )
    elif lc.dist == "lognormal":
        require(lc.mean is not None and lc.mean >= 1, f"{key}.mean", lc.mean, "lognormal lengths need mean >= 1")
        require(
            lc.p99 is not None and lc.p99 > lc.mean,  # type: ignore[operator]
            f"{key}.p99",
            lc.p99,
            f"lognormal lengths need p99 > mean ({lc.mean})",
        )
    elif lc.dist == "empirical":
        if lc.values is not None:
            require(len(lc.values) > 0 and min(lc.values) >= 1, f"{key}.values", "[...]", "need token counts >= 1")
        else:
            require(bool(lc.path), f"{key}.path", lc.path, "empirical lengths need a path or inline values")
            require(resolve_path(str(lc.path)).is_file(), f"{key}.path", lc.path, not_found(lc.path))


def length_upper_bound(lc: LengthConfig) -> float | None:
    """Largest length the model can draw, or None when it is unbounded or data-driven."""
    if lc.dist == "fixed" and lc.mean is not None:
        return max(1, round(lc.mean))
    if lc.dist == "uniform" and lc.high is not None:
        return max(1, round(lc.high))
    if lc.dist == "empirical" and lc.values:
        return max(1, round(max(lc.values)))
    return None


def length_lower_bound(lc: LengthConfig) -> float:
    """Smallest length the model can draw (1 for unbounded models)."""
    if lc.dist == "fixed" and lc.mean is not None:
        return max(1, round(lc.mean))
    if lc.dist == "uniform" and lc.low is not None:
        return max(1, lc.low)
    if lc.dist == "empirical" and lc.values:
        return max(1, round(min(lc.values)))
    return 1.0


def validate_source(src: SourceConfig, key: str, duration: float | None) -> None:
    check(src, key, skip=_WORKLOAD_ONLY if isinstance(src, WorkloadConfig) else ())
    if src.arrival == TRACE:
        require(bool(src.path), f"{key}.path", src.path, "trace replay needs a file")
        require(resolve_path(str(src.path)).is_file(), f"{key}.path", src.path, not_found(src.path))
        require(
            src.format in TRACE_FORMATS,
            f"{key}.format",
            src.format,
            f"must be one of {', '.join(TRACE_FORMATS)} (for {src.path})",
        )
        require(
            key == "workload" or src.format != SESSIONS,
            f"{key}.format",
            src.format,
            "replayed sessions cannot be one source of a mix: use workload=trace workload.format=sessions on its own",
        )
    else:
        require(
            src.path is None,
            f"{key}.path",
            src.path,
            f"a trace file needs trace arrivals (workload=trace); this source's arrivals are {src.arrival}",
        )
        if src.arrival == CLOSED:
            require(
                key == "workload",
                f"{key}.arrival",
                src.arrival,
                "closed-loop users cannot be one source of a mix: use workload=closed on its own",
            )
        else:
            _positive(src.rate, f"{key}.rate")
            require(
                duration is not None,
                "workload.duration_s",
                duration,
                f"a synthetic source ({src.arrival}) needs a horizon",
            )
        _validate_lengths(src, key)
    _validate_process(src, key)


def _validate_lengths(src: SourceConfig, key: str) -> None:
    """Token lengths: joint pairs from a table or inline, or a model for each."""
    if src.pairs.path or src.pairs.values:
        if src.pairs.values is not None:
            ok = all(len(p) == 2 and p[0] >= 1 and p[1] >= 1 for p in src.pairs.values) and len(src.pairs.values) > 0
            require(ok, f"{key}.pairs.values", "[...]", "need [prompt, output] pairs of token counts >= 1")
        else:
            require(
                resolve_path(str(src.pairs.path)).is_file(),
                f"{key}.pairs.path",
                src.pairs.path,
                not_found(src.pairs.path),
            )
            require(
                src.pairs.format in TRACE_FORMATS,
                f"{key}.pairs.format",
                src.pairs.format,
                f"must be one of {', '.join(TRACE_FORMATS)}",
            )
    else:
        validate_length(src.prompt_tokens, f"{key}.prompt_tokens")
        validate_length(src.output_tokens, f"{key}.output_tokens")


def _validate_process(src: SourceConfig, key: str) -> None:
    """The arrival process's own parameters, and the source's SLO."""
    if src.arrival == "mmpp":
        require(src.burst_multiplier >= 1, f"{key}.burst_multiplier", src.burst_multiplier, "must be >= 1")
        for k in ("burst_mean_s", "calm_mean_s"):
            require(
                math.isfinite(getattr(src, k)) and getattr(src, k) >= 1e-3,
                f"{key}.{k}",
                getattr(src, k),
                "must be at least 0.001 s",
            )
        require(src.burst_multiplier <= 1e6, f"{key}.burst_multiplier", src.burst_multiplier, "must be at most 1e6")
    if src.arrival in ("gamma", "diurnal"):
        _positive(src.cv, f"{key}.cv")
        require(src.cv <= 100, f"{key}.cv", src.cv, "must be at most 100 (inter-arrival coefficient of variation)")
    if src.arrival == "diurnal":
        require(src.peak_to_trough >= 1, f"{key}.peak_to_trough", src.peak_to_trough, "must be >= 1")
        require(0 <= src.peak_hour < 24, f"{key}.peak_hour", src.peak_hour, "must be in [0, 24)")
        if src.hourly_weights is not None:
            w = src.hourly_weights
            require(
                len(w) == 24 and min(w) >= 0 and sum(w) > 0,
                f"{key}.hourly_weights",
                f"[{len(w)} values]",
                "need 24 non-negative weights, not all zero",
            )
        require(src.weekend_factor >= 0, f"{key}.weekend_factor", src.weekend_factor, "must be >= 0")
        require(src.start_weekday in range(7), f"{key}.start_weekday", src.start_weekday, "must be 0 (Monday) .. 6")


# the workload's fields are a source's (its own traffic, unless it is a mix) and its own
_SOURCE_FIELDS = tuple(f.name for f in dataclasses.fields(SourceConfig))
_WORKLOAD_ONLY = tuple(f.name for f in dataclasses.fields(WorkloadConfig) if f.name not in _SOURCE_FIELDS)


def validate_workload(w: WorkloadConfig) -> None:
    check(w, "workload", skip=_SOURCE_FIELDS)
    if w.sources:
        for name, src in w.sources.items():
            require(
                bool(name) and "." not in name, "workload.sources", name, "class names must be non-empty, without dots"
            )
            validate_source(src, f"workload.sources.{name}", w.duration_s)
    else:
        validate_source(w, "workload", w.duration_s)
    _validate_window(w)
    if w.loop:
        require(w.duration_s is not None, "workload.loop", w.loop, "looping needs workload.duration_s")
    _validate_shared_prefix(w)
    if is_closed(w):
        validate_closed(w)
    elif is_sessions(w):
        validate_sessions(w)
    else:
        kind = "a mix" if w.sources else f"{w.arrival} arrivals"
        for k in ("users", "requests"):
            value = getattr(w, k)
            require(
                value is None, f"workload.{k}", value, f"applies to closed-loop users (workload=closed), not {kind}"
            )


def _validate_window(w: WorkloadConfig) -> None:
    """The replayed or generated time window."""
    if w.window_end_s is not None:
        require(
            w.window_end_s > (w.window_start_s or 0.0),
            "workload.window_end_s",
            w.window_end_s,
            f"must be > window_start_s ({w.window_start_s or 0})",
        )


def _validate_shared_prefix(w: WorkloadConfig) -> None:
    sp = w.shared_prefix
    check(sp, "workload.shared_prefix")
    if sp.groups:
        _positive(sp.tokens, "workload.shared_prefix.tokens", integer=True)
        require(sp.tokens <= 10_000_000, "workload.shared_prefix.tokens", sp.tokens, "must be at most 10,000,000")
        require(0 < sp.share <= 1, "workload.shared_prefix.share", sp.share, "must be in (0, 1]")
        require(math.isfinite(sp.zipf) and sp.zipf >= 0, "workload.shared_prefix.zipf", sp.zipf, "must be >= 0")
        _positive(sp.block_tokens, "workload.shared_prefix.block_tokens", integer=True)


LONGEST_S = 1e8  # about three years: a longer think time or ramp is a typo


def is_closed(w: WorkloadConfig) -> bool:
    """Closed-loop users (workload=closed): arrivals that follow the fleet's answers."""
    return not w.sources and w.arrival == CLOSED


def is_sessions(w: WorkloadConfig) -> bool:
    """Multi-turn sessions replayed from a trace (workload.format=sessions): a closed loop whose
    users are the trace's sessions (`sim.workload.sessions`)."""
    return not w.sources and w.arrival == TRACE and w.format == SESSIONS


def has_trace(wc: WorkloadConfig) -> bool:
    """Whether any source replays a trace file."""
    return any(s.arrival == TRACE for s in (wc.sources.values() if wc.sources else [wc]))


def horizon(wc: WorkloadConfig) -> float | None:
    """How long a synthetic source must generate for, before the transforms."""
    if wc.window_end_s is not None:
        return wc.window_end_s
    if wc.duration_s is None:
        return None
    return (wc.window_start_s or 0.0) + wc.duration_s * wc.rate_scale


def multi_turn(w: WorkloadConfig) -> bool:
    """Whether a closed-loop session can have more than one turn."""
    return length_upper_bound(w.turns) != 1


def validate_closed(w: WorkloadConfig) -> None:
    require(w.users is not None, "workload.users", w.users, "closed-loop arrivals need a number of users >= 1")
    _positive(w.users, "workload.users", integer=True)
    _nonneg(w.think_time_s, "workload.think_time_s")
    require(w.think_time_s <= LONGEST_S, "workload.think_time_s", w.think_time_s, f"must be at most {LONGEST_S:g} s")
    if w.think_dist == "lognormal":
        _positive(w.think_cv, "workload.think_cv")
        require(w.think_cv <= 100, "workload.think_cv", w.think_cv, "must be at most 100")
    if w.requests is not None:
        _positive(w.requests, "workload.requests", integer=True)
    require(
        w.requests is not None or w.duration_s is not None,
        "workload.requests",
        w.requests,
        "closed-loop users need an end: workload.requests (requests in all) or workload.duration_s",
    )
    _nonneg(w.ramp_s, "workload.ramp_s")
    require(w.ramp_s <= LONGEST_S, "workload.ramp_s", w.ramp_s, f"must be at most {LONGEST_S:g} s")
    validate_length(w.turns, "workload.turns")
    if multi_turn(w):
        validate_length(w.turn_tokens, "workload.turn_tokens")
    _refuse_transforms(w, "does not apply to closed-loop users (their arrivals follow the fleet's answers)")


def validate_sessions(w: WorkloadConfig) -> None:
    """A session trace's replay: the default think time, and no transform that would cut or
    copy a session's turns apart (each turn waits for the previous answer)."""
    _nonneg(w.think_time_s, "workload.think_time_s")
    require(w.think_time_s <= LONGEST_S, "workload.think_time_s", w.think_time_s, f"must be at most {LONGEST_S:g} s")
    why = "does not apply to replayed sessions (a turn is sent when the previous one's answer is back)"
    _refuse_transforms(w, why, lengths=True)


def _refuse_transforms(w: WorkloadConfig, why: str, *, lengths: bool = False) -> None:
    """Arrivals that follow the fleet's answers cannot be windowed, rescaled, looped or given
    shared prefixes (nor, for replayed sessions, have their lengths rescaled): `why` says so."""
    keys = [
        ("window_start_s", w.window_start_s, None),
        ("window_end_s", w.window_end_s, None),
        ("rate_scale", w.rate_scale, 1.0),
        ("load_scale", w.load_scale, 1.0),
        ("loop", w.loop, False),
    ]
    if lengths:
        keys += [("prompt_scale", w.prompt_scale, 1.0), ("output_scale", w.output_scale, 1.0)]
    for k, value, default in [*keys, ("shared_prefix.groups", w.shared_prefix.groups, 0)]:
        require(value == default, f"workload.{k}", value, why)


def _nonneg(value: float | None, key: str) -> None:
    require(value is not None and math.isfinite(value) and value >= 0, key, value, "must be >= 0")


def validate_fleet(f: FleetConfig) -> None:
    a = f.autoscaler = autoscaler_config(f.autoscaler)  # a config edited in Python after it was built
    check(f, "fleet")
    if a.name != "fixed":
        require(
            f.max_replicas >= max(1, f.min_replicas),
            "fleet.max_replicas",
            f.max_replicas,
            f"must be >= max(1, fleet.min_replicas={f.min_replicas})",
        )
        require(
            f.min_replicas <= f.replicas <= f.max_replicas,
            "fleet.replicas",
            f.replicas,
            f"replicas at t=0 must be within [min_replicas, max_replicas] = [{f.min_replicas}, {f.max_replicas}]",
        )
    _validate_autoscaler(a)
    _validate_lifecycle(f)
    _validate_pricing(f.pricing)


def _validate_autoscaler(a: AutoscalerConfig) -> None:
    check(a, "fleet.autoscaler")
    if isinstance(a, TargetAutoscaler):
        require(
            a.panic_window_s > 0 and a.panic_window_s <= a.stable_window_s,
            "fleet.autoscaler.panic_window_s",
            a.panic_window_s,
            f"must be in (0, stable_window_s={a.stable_window_s}]",
        )
    if isinstance(a, DynamoAutoscaler):
        require(a.kv_low < a.kv_high, "fleet.autoscaler.kv_low", a.kv_low, f"must be < kv_high={a.kv_high}")
        require(
            a.queue_low <= a.queue_high,
            "fleet.autoscaler.queue_low",
            a.queue_low,
            f"must be <= queue_high={a.queue_high}",
        )
    if isinstance(a, ScheduleAutoscaler):
        sched = a.schedule
        require(
            sched is not None and len(sched) == 24 and min(sched) >= 0,
            "fleet.autoscaler.schedule",
            sched,
            "needs 24 replica counts >= 0, one per hour of the day",
        )


def _validate_lifecycle(f: FleetConfig) -> None:
    """Cold starts and sleep."""
    check(f.cold_start, "fleet.cold_start")
    check(f.sleep, "fleet.sleep")
    check(f.warmup, "fleet.warmup")
    check(f.pending_gpu, "fleet.pending_gpu")
    p = f.pending_gpu
    require(
        p.dist == "none" or p.mean_s > 0,
        "fleet.pending_gpu.mean_s",
        p.mean_s,
        f"must be > 0 for fleet.pending_gpu.dist={p.dist}",
    )


def _validate_pricing(p: PricingConfig) -> None:
    check(p, "fleet.pricing")
    require(
        p.instance_gpus == 1 or p.kind == "on_demand",
        "fleet.pricing.instance_gpus",
        p.instance_gpus,
        f"whole-instance rental applies to on_demand pricing (fleet.pricing.kind={p.kind})",
    )


def validate_api(a: ApiConfig, f: FleetConfig) -> None:
    gpu = f.replicas > 0 if f.autoscaler.name == "fixed" else f.max_replicas > 0
    if not a.enabled:
        require(
            gpu, "fleet.replicas", f.replicas, "no GPUs and no API: nothing can serve (enable an api or add replicas)"
        )
        return
    check(a, "api")
    require(
        gpu or a.overflow == "always", "api.overflow", a.overflow, "with no GPUs (fleet.replicas=0) it must be 'always'"
    )
    require(
        a.ttft_p99_s > a.ttft_mean_s, "api.ttft_p99_s", a.ttft_p99_s, f"must be > api.ttft_mean_s ({a.ttft_mean_s})"
    )
    _validate_tiers(a)
    require(a.backoff_max_s >= a.backoff_base_s, "api.backoff_max_s", a.backoff_max_s, "must be >= api.backoff_base_s")
    limited = a.rpm is not None or any(t.rpm is not None for t in a.tiers or [])
    require(
        gpu or a.on_limit == "backoff" or not limited,
        "api.on_limit",
        a.on_limit,
        "with no GPUs a refused request can only back off and retry",
    )


def _validate_tiers(a: ApiConfig) -> None:
    """Usage tiers: each one's limits, lifetime spends rising from tier to tier."""
    for i, t in enumerate(a.tiers or []):
        key = f"api.tiers[{i}]"
        check(t, key)
        if i:
            prev = a.tiers[i - 1].min_lifetime_spend_usd  # type: ignore[index]
            require(
                t.min_lifetime_spend_usd > prev,
                f"{key}.min_lifetime_spend_usd",
                t.min_lifetime_spend_usd,
                f"tiers must rise: above the previous tier's {prev:g}",
            )


def finite(node: Any, key: str) -> None:
    """Every number of a config (dataclasses, lists and mappings, recursively) must be finite:
    NaN or an infinity anywhere stops with the key."""
    if isinstance(node, bool) or node is None:
        return
    if isinstance(node, float):
        require(math.isfinite(node), key, node, "must be a finite number")
    elif hasattr(node, "__dataclass_fields__"):
        for name in node.__dataclass_fields__:
            finite(getattr(node, name), f"{key}.{name}" if key else name)
    elif isinstance(node, dict):
        for k, v in node.items():
            finite(v, f"{key}.{k}")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            finite(v, f"{key}[{i}]")


def validate(cfg: Config) -> None:
    """Check every value on its own and against the others; raise ConfigError on the first bad
    one. What needs the hardware or workload models (memory, iteration time, work limits) is
    checked above this layer: `sim.des.preflight.validate` runs both, in this order: the
    replica's values, whether it fits its GPU, then the fleet's, the API's and the run's."""
    validate_replica(cfg)
    validate_service(cfg)


def validate_replica(cfg: Config) -> None:
    """Every value is finite; the seeds, the workload, the model, the GPU and the engine."""
    finite(cfg, "")
    require(isinstance(cfg.seed, int) and cfg.seed >= 0, "seed", cfg.seed, "must be an integer >= 0")
    if cfg.seeds is not None:
        require(
            len(cfg.seeds) >= 2 and all(s >= 0 for s in cfg.seeds) and len(set(cfg.seeds)) == len(cfg.seeds),
            "seeds",
            cfg.seeds,
            "must list at least two distinct integers >= 0 (one run with one seed: seed=N)",
        )
    validate_workload(cfg.workload)
    validate_model(cfg.model)
    validate_gpu(cfg.gpu)
    validate_engine(cfg.engine, cfg.model, cfg.gpu)
    _plausible(cfg)


def validate_service(cfg: Config) -> None:
    """The fleet, the API, the SLO, the outputs and the work limits."""
    validate_fleet(cfg.fleet)
    validate_api(cfg.api, cfg.fleet)
    validate_run(cfg)


def _validate_pools(pc: PlatformConfig) -> None:
    """Each pooled deployment names at least two declared deployments, none a cascade tier or a
    pool of another."""
    names = list(pc.deployments)
    pooled: dict[str, str] = {}
    for group, members in pc.pools.items():
        key = f"platform.pools.{group}"
        require(group not in pc.deployments, key, group, "a pooled deployment needs a name of its own")
        require(len(members) >= 2, key, members, "pools: at least two of the declared deployments")
        for j, m in enumerate(members):
            require(m in pc.deployments, f"{key}[{j}]", m, f"not a deployment; deployments: {', '.join(names)}")
            require(m not in pc.cascade, f"{key}[{j}]", m, "is a cascade tier: a pool cannot be one yet")
            require(m not in pooled, f"{key}[{j}]", m, f"is already a pool of {pooled.get(m)}")
            pooled[m] = group


def _validate_disaggregated(pc: PlatformConfig) -> None:
    """Each disaggregated deployment names two different declared deployments, neither a cascade
    tier, a pool or a pool of another disaggregated deployment; its link within its bounds."""
    names = list(pc.deployments)
    taken = {m: f"a pool of {g}" for g, members in pc.pools.items() for m in members}
    taken.update(dict.fromkeys(pc.cascade, "a cascade tier"))
    for group, dc in pc.disaggregated.items():
        key = f"platform.disaggregated.{group}"
        require(group not in pc.deployments, key, group, "a disaggregated deployment needs a name of its own")
        require(group not in pc.pools, key, group, "is also the name of a pooled deployment")
        check(dc, key)
        require(dc.prefill != dc.decode, f"{key}.decode", dc.decode, "must differ from the prefill pool")
        for role in ("prefill", "decode"):
            m = getattr(dc, role)
            require(m in pc.deployments, f"{key}.{role}", m, f"not a deployment; deployments: {', '.join(names)}")
            require(m not in taken, f"{key}.{role}", m, f"is already {taken.get(m)}")
            taken[m] = f"the {role} pool of {group}"


def validate_platform(pc: PlatformConfig) -> None:
    """A platform's cascade names its deployments, with one escalation entry per boundary
    between tiers, each a share in [0, 1]; budgets are not negative."""
    check(pc, "platform")
    names = list(pc.deployments)
    for i, tier in enumerate(pc.cascade):
        require(
            tier in pc.deployments,
            f"platform.cascade[{i}]",
            tier,
            f"not a deployment; deployments: {', '.join(names) or 'none'}",
        )
    require(len(set(pc.cascade)) == len(pc.cascade), "platform.cascade", pc.cascade, "names a deployment twice")
    require(len(pc.cascade) != 1, "platform.cascade", pc.cascade, "a cascade needs at least two tiers")
    boundaries = max(len(pc.cascade) - 1, 0)
    e = pc.escalation
    lists = {"share": {"": e.share}, "threshold": {"": e.threshold}, "class_share": e.class_share}
    wanted = {"share": "share", "class_share": "class_share", "confidence": "threshold"}[str(e.kind)]
    for name, per in lists.items():
        for cls, values in per.items():
            key = f"platform.escalation.{name}" + (f".{cls}" if cls else "")
            for j, v in enumerate(values):
                require(0.0 <= v <= 1.0, f"{key}[{j}]", v, "must be a share in [0, 1]")
            if pc.cascade and name == wanted:
                require(
                    len(values) == boundaries,
                    key,
                    values,
                    f"needs one entry per boundary between the {len(pc.cascade)} tiers ({boundaries})",
                )
    if pc.cascade and wanted == "class_share":
        require(bool(e.class_share), "platform.escalation.class_share", {}, "name each request class's shares")
    _validate_pools(pc)
    _validate_disaggregated(pc)
    for gpu, n in pc.budget_gpus.items():
        require(isinstance(n, int) and n >= 0, f"platform.budget_gpus.{gpu}", n, "must be an integer >= 0")


def validate_model(m: ModelConfig) -> None:
    check(m, "model")
    require(m.heads % m.kv_heads == 0, "model.kv_heads", m.kv_heads, f"must divide model.heads ({m.heads})")
    for k in ("active_params_b", "bf16_params_b"):
        value = getattr(m, k)
        require(
            value is None or value <= m.params_b, f"model.{k}", value, f"must not exceed model.params_b ({m.params_b})"
        )
    # the parameters a token uses hold the embedding and lm_head (a forward pass streams all but the
    # embedding table): fewer would read a negative number of bytes
    table = m.vocab * m.hidden * (1 if m.tied_embeddings else 2) / 1e9
    key, used = ("active_params_b", m.active_params_b) if m.active_params_b is not None else ("params_b", m.params_b)
    require(
        used > table,
        f"model.{key}",
        used,
        f"must exceed the embedding and lm_head ({table:.3g}B: model.vocab x model.hidden"
        + (")" if m.tied_embeddings else " each)"),
    )
    if m.experts:
        require(
            1 <= m.experts_per_token < m.experts,
            "model.experts_per_token",
            m.experts_per_token,
            f"must be in [1, model.experts={m.experts})",
        )
        require(
            m.active_params_b is not None and m.active_params_b < m.params_b,
            "model.active_params_b",
            m.active_params_b,
            "an MoE model (experts > 0) needs active_params_b < params_b",
        )


def validate_gpu(g: GpuConfig) -> None:
    check(g, "gpu")


def validate_engine(e: EngineConfig, m: ModelConfig, g: GpuConfig) -> None:
    check(e, "engine")
    seqs, tokens = batch_limits(e, g)
    require(
        tokens >= seqs,
        "engine.max_num_batched_tokens",
        tokens,
        f"must be >= engine.max_num_seqs ({seqs})",
    )
    tp = e.tensor_parallel_size
    require(
        tp >= 1 and tp & (tp - 1) == 0 and tp <= g.max_tp,
        "engine.tensor_parallel_size",
        tp,
        f"must be a power of two from 1 to gpu.max_tp={g.max_tp} ({g.name})",
    )
    require(m.heads % tp == 0, "engine.tensor_parallel_size", tp, f"must divide model.heads ({m.heads})")
    if e.perf_table is not None:
        require(Path(e.perf_table).is_file(), "engine.perf_table", e.perf_table, "file not found")
    if e.max_model_len is not None:
        require(
            e.max_model_len <= m.max_position,
            "engine.max_model_len",
            e.max_model_len,
            f"must not exceed model.max_position ({m.max_position})",
        )
    validate_speculative(e, m)
    check(e.kv_offload, "engine.kv_offload")


def draft_model_config(e: EngineConfig) -> ModelConfig | None:
    """The draft model of `engine.speculative` (method draft), loaded from its option; else None."""
    spec = e.speculative
    if spec.method != "draft" or spec.draft_model is None:
        return None
    return load_option("model", spec.draft_model)


def validate_speculative(e: EngineConfig, m: ModelConfig) -> None:
    """Speculation needs the roofline (a measured table has no verify pass) and, with a draft
    model, one that exists and shards over the TP group; MTP heads are layers of the target."""
    spec = e.speculative
    check(spec, "engine.speculative")
    if spec.method == "none":
        return
    if spec.method == "mtp":
        require(
            spec.mtp_layers <= m.layers,
            "engine.speculative.mtp_layers",
            spec.mtp_layers,
            f"must not exceed the target's layers ({m.layers})",
        )
    require(
        e.perf_table is None,
        "engine.speculative.method",
        spec.method,
        "needs the roofline: engine.perf_table must be null (a measured table has no verify pass)",
    )
    if spec.method != "draft":
        require(
            spec.draft_model is None,
            "engine.speculative.draft_model",
            spec.draft_model,
            f"is used by method draft only (method is {spec.method}): leave it null",
        )
    if spec.method == "draft":
        key = "engine.speculative.draft_model"
        known = options("model")
        require(spec.draft_model is not None, key, None, f"method draft needs a model option: {', '.join(known)}")
        require(spec.draft_model in known, key, spec.draft_model, f"must name a model option: {', '.join(known)}")
        d = draft_model_config(e)
        assert d is not None
        validate_model(d)
        tp = e.tensor_parallel_size
        require(d.heads % tp == 0, key, spec.draft_model, f"its heads ({d.heads}) must divide over TP={tp}")


def _plausible(cfg: Config) -> None:
    """Beyond these bounds a value is a typo, and its arithmetic overflows."""
    m = cfg.model
    for key, top in PLAUSIBLE.items():  # beyond these, a value is a typo, and its arithmetic overflows
        group, name = key.split(".")
        value = getattr(getattr(cfg, group), name)
        require(value is None or value <= top, key, value, f"must be at most {top:g}")
    if m.flop_params_b is not None:
        require(
            m.flop_params_b <= m.params_b,
            "model.flop_params_b",
            m.flop_params_b,
            f"must not exceed model.params_b ({m.params_b})",
        )


def validate_run(cfg: Config) -> None:
    """The SLO, the outputs and the work limits."""
    check(cfg.slo, "slo")
    check(cfg.output, "output")
    check(cfg.output.failure_modes, "output.failure_modes")
    check(cfg.limits, "limits")
