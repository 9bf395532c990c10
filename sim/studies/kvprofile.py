"""The profiled KV-cache plan (sim/hardware/kvcache.py) against the KV capacities vLLM logged at start-up.

Builds the configuration of every logged point of ../shared/calibration: the 13 measured runs
of vllm_runs.yaml (vLLM v0.15.1 on H100, `vllm_gpu_kv_blocks`) and the two `kv_capacity_points`
of published_points.yaml, computes each point's KV blocks with `memory_plan`, and fits the plan's
one fitted constant (kvcache.NON_TORCH_GIB) to all points at once, with leave-one-out errors.
`scripts/kv_profile.py` prints the table docs/model.md quotes; tests/test_kv_profile.py checks
every point.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from sim.config.schema import EngineConfig, GpuConfig, ModelConfig, load_option
from sim.hardware import kvcache
from sim.hardware.architecture import model_config  # the parameter count fleetsim-validate uses

GIB = 2**30

# Llama 4's vision tower (HF config vision_config of meta-llama/Llama-4-Scout-17B-16E-Instruct:
# 34 layers, hidden 1408, MLP 5632, 14-pixel patches of 336-pixel tiles; a pixel-shuffle MLP to
# 4096 and a projector to the text width). vLLM builds it in bf16 (quant_config=None,
# vllm/model_executor/models/mllama4.py) and shards it over TP like the text model.
LLAMA4_VISION = {"layers": 34, "hidden": 1408, "mlp": 5632, "patch": 14, "image": 336, "adapter": 4096}


def llama4_vision_params(text_hidden: int) -> float:
    v = LLAMA4_VISION
    h, layers = v["hidden"], v["layers"]
    per_layer = 4 * (h * h + h) + 2 * h * v["mlp"] + v["mlp"] + h + 4 * h  # attention, MLP, norms
    patches = (v["image"] // v["patch"]) ** 2 + 1
    stem = 3 * v["patch"] ** 2 * h + patches * h + h  # patch projection, positions, class token
    adapter = 4 * h * v["adapter"] + v["adapter"] ** 2  # pixel-shuffle MLP (4 patches -> 1 token)
    projector = v["adapter"] * text_hidden
    return layers * per_layer + stem + adapter + projector


@dataclass
class Point:
    id: str
    label: str  # model, precision, TP, max_num_batched_tokens
    model: ModelConfig
    gpu: GpuConfig
    engine: EngineConfig
    logged_blocks: int
    runs: int = 1  # measured runs that share this configuration (and logged the same blocks)
    note: str = ""

    def plan(self) -> kvcache.MemoryPlan:
        return kvcache.memory_plan(self.model, self.gpu, self.engine)

    def blocks(self, non_torch_gib: float | None = None) -> int:
        """Computed KV blocks; with another value of kvcache.NON_TORCH_GIB, the same plan shifted
        (no other term depends on it; whole-device points do not depend on it at all)."""
        p = self.plan()
        free = p.kv_bytes_per_gpu
        if non_torch_gib is not None and not kvcache.PROFILERS[self.engine.memory_profiler].whole_device:
            free = p.usable_bytes_per_gpu - p.non_kv_bytes_per_gpu + p.non_torch_bytes - non_torch_gib * GIB
        tokens = max(0, int(free // p.kv_bytes_per_token_per_gpu))
        return tokens // p.block_size

    def error(self, non_torch_gib: float | None = None) -> float:
        return self.blocks(non_torch_gib) / self.logged_blocks - 1


def _model(name: str, spec: dict, fp8: bool, vision: bool = False) -> ModelConfig:
    m = model_config(name, spec)  # vocabulary, MLP width and tied embeddings included
    if fp8:
        m = dataclasses.replace(m, weight_dtype="fp8")
    if name == "llama-4-scout":  # RedHatAI/Llama-4-Scout-17B-16E-Instruct-FP8-dynamic
        m = _llama4_fp8_dynamic(m, spec, vision)
    return m


def _llama4_fp8_dynamic(m: ModelConfig, spec: dict, vision: bool) -> ModelConfig:
    """What the FP8-dynamic Llama 4 checkpoint keeps in bf16: llm-compressor's Llama 4
    FP8_DYNAMIC recipe ignores lm_head, the routers, self-attention, the shared expert, the
    projector and the vision model (examples/autoround/quantization_w8a8_fp8/
    llama4_dynamic_quant_example.py); the embedding is not a Linear layer. With `vision`, the
    vision tower is loaded as well (what `vllm serve` does unless images are disabled)."""
    h, layers = spec["hidden"], spec["layers"]
    q, kv = spec["heads"] * spec["head_dim"], spec["kv_heads"] * spec["head_dim"]
    attention = layers * (2 * h * q + 2 * h * kv)
    router = layers * h * spec["experts"]
    shared = layers * 3 * h * spec["shared_expert_intermediate"]
    tower = llama4_vision_params(h) if vision else 0.0
    bf16 = kvcache.embedding_params(m) + attention + router + shared + tower
    return dataclasses.replace(m, params_b=m.params_b + tower / 1e9, bf16_params_b=bf16 / 1e9)


def run_points(calibration: Path, scout_vision: bool = False) -> list[Point]:
    """One point per distinct configuration of vllm_runs.yaml (runs that share one logged the same
    block count): vLLM v0.15.1, H100, the run's engine settings. `scout_vision`: count Llama 4's
    vision tower as loaded (the logged blocks fit the text-only model; docs/model.md)."""
    import yaml

    return run_points_from(yaml.safe_load((calibration / "vllm_runs.yaml").read_text()), scout_vision)


def run_points_from(data: dict, scout_vision: bool = False) -> list[Point]:
    """`run_points` of a run file's contents (any file in the layout of vllm_runs.yaml)."""
    points: dict[tuple, Point] = {}
    for run in data["runs"]:
        if not run.get("vllm_gpu_kv_blocks"):
            continue
        fp8 = str(run.get("precision", "")).upper() == "FP8"
        tp, n, seqs = int(run["tp"]), int(run["max_num_batched_tokens"]), int(run["max_num_seqs"])
        key = (run["model"], fp8, tp, n, seqs, float(run["gpu_memory_utilization"]))
        if key in points:
            points[key].runs += 1
            points[key].id += f",{run['id']}"
            assert points[key].logged_blocks == int(run["vllm_gpu_kv_blocks"]), run["id"]
            continue
        engine = dataclasses.replace(
            load_option("engine", "vllm"),
            max_num_seqs=seqs,
            max_num_batched_tokens=n,
            gpu_memory_utilization=float(run["gpu_memory_utilization"]),
            tensor_parallel_size=tp,
            max_model_len=int(run.get("max_model_len", 4096)),
            memory_profiler="v0.15",
        )
        gpu = load_option("gpu", str(run.get("gpu", "h100")).lower())
        label = f"{run['model']} {'FP8' if fp8 else 'BF16'} TP{tp} N={n}"
        model = _model(run["model"], data["models"][run["model"]], fp8, scout_vision)
        points[key] = Point(str(run["id"]), label, model, gpu, engine, int(run["vllm_gpu_kv_blocks"]))
    return list(points.values())


def published_points(calibration: Path) -> list[Point]:
    """The two kv_capacity_points of published_points.yaml, with the engine each ran."""
    import yaml

    data = yaml.safe_load((calibration / "published_points.yaml").read_text())
    found = {p["id"]: p for p in data["kv_capacity_points"]}
    l8 = load_option("model", "llama3-8b")  # Llama 3.1 8B
    vllm = load_option("engine", "vllm")
    l70 = load_option("model", "llama3-70b")
    out = []
    if "mem-l8b-rtx3090" in found:
        p = found["mem-l8b-rtx3090"]["measured"]
        # memory as reported; the rest of the specs do not enter the memory plan
        gpu = dataclasses.replace(
            load_option("gpu", "h100"), name="rtx3090", memory_gib=23.58, visible_memory_gib=None, fp8_tflops=None
        )
        # vLLM V0 (v0.6.x): chunked prefill off below 32K context, so max_num_batched_tokens =
        # max(max_model_len, 2048) and max_num_seqs 256 (vllm/engine/arg_utils.py, vllm/config.py)
        n = max(int(p["max_model_len"]), 2048)
        engine = dataclasses.replace(
            vllm,
            max_num_seqs=256,
            max_num_batched_tokens=n,
            enable_chunked_prefill=False,
            gpu_memory_utilization=float(p["gpu_memory_utilization"]),
            max_model_len=int(p["max_model_len"]),
            memory_profiler="v0.6",
        )
        out.append(
            Point("mem-l8b-rtx3090", f"llama-3.1-8b BF16 TP1 N={n}", l8, gpu, engine, int(p["gpu_blocks"]), note="V0")
        )
    if "mem-l70b-w8a8-1gpu" in found:
        p = found["mem-l70b-w8a8-1gpu"]["measured"]
        # int8 weights, 1 byte a parameter like fp8 (embedding and lm_head bf16); an 80 GB H100 and
        # `vllm serve`'s V1 defaults of January 2025 there: max_num_batched_tokens 8192, 256 sequences
        model = dataclasses.replace(l70, weight_dtype="fp8", vocab=128256, intermediate=28672)
        engine = dataclasses.replace(
            vllm,
            max_num_seqs=256,
            max_num_batched_tokens=8192,
            gpu_memory_utilization=float(p["gpu_memory_utilization"]),
            max_model_len=int(p["max_model_len"]),
            memory_profiler="v0.7",
        )
        out.append(
            Point(
                "mem-l70b-w8a8-1gpu",
                "llama-3.1-70b INT8 TP1 N=8192",
                model,
                load_option("gpu", "h100"),
                engine,
                int(p["gpu_blocks"]),
                note="V1 Jan 2025",
            )
        )
    return out


def logged_points(calibration: Path, scout_vision: bool = False) -> list[Point]:
    return run_points(calibration, scout_vision) + published_points(calibration)


def fit(points: list[Point]) -> float:
    """kvcache.NON_TORCH_GIB fitted by least squares on the relative block errors of every logged
    run under vLLM's current accounting (a configuration counts once per run that logged it). The
    constant moves a point's free memory one-for-one, so the fit is linear (flooring to whole
    blocks aside). Points profiled with the whole-device accounting do not depend on it."""
    num = den = 0.0
    for p in points:
        if kvcache.PROFILERS[p.engine.memory_profiler].whole_device:
            continue
        plan = p.plan()
        per_block = plan.kv_bytes_per_token_per_gpu * plan.block_size
        # blocks(c) = base - c * GIB / per_block; relative error a - c * b
        base = (plan.usable_bytes_per_gpu - plan.non_kv_bytes_per_gpu + plan.non_torch_bytes) / per_block
        a = base / p.logged_blocks - 1
        b = GIB / per_block / p.logged_blocks
        num += p.runs * a * b
        den += p.runs * b * b
    return num / den if den else math.nan


def leave_one_out(points: list[Point]) -> list[float]:
    """Each point's error with the constant fitted to the others (a shared configuration is left
    out with all its runs)."""
    return [p.error(fit(points[:i] + points[i + 1 :])) for i, p in enumerate(points)]


def table(points: list[Point]) -> str:
    """Markdown: logged and computed blocks, error, leave-one-out error, the error of the fixed
    3.5 GiB reserve (engine.reserve_gib=3.5, the rule this plan replaced), and the plan's terms."""
    loo = leave_one_out(points)
    lines = [
        "| point | configuration | runs | logged blocks | computed | error | leave-one-out | fixed 3.5 GiB | "
        "weights | rope | activation | non-torch | KV GiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p, e_loo in zip(points, loo, strict=True):
        plan = p.plan()
        old = kvcache.memory_plan(p.model, p.gpu, dataclasses.replace(p.engine, reserve_gib=3.5)).kv_blocks
        lines.append(
            f"| {p.id} | {p.label} ({p.engine.memory_profiler}) | {p.runs} | {p.logged_blocks} | {plan.kv_blocks} "
            f"| {p.error():+.1%} | {e_loo:+.1%} | {old / p.logged_blocks - 1:+.0%} "
            f"| {plan.weight_bytes_per_gpu / GIB:.2f} | {plan.rope_bytes / GIB:.2f} "
            f"| {plan.activation_bytes / GIB:.2f} | {plan.non_torch_bytes / GIB:.2f} "
            f"| {plan.kv_bytes_per_gpu / GIB:.2f} |"
        )
    return "\n".join(lines)
