"""A model's parameters from its architecture (layer count, widths, heads, experts, vocabulary),
as a measured-runs file or the calibration catalog gives it."""

from __future__ import annotations

from sim.config.errors import UserError
from sim.config.schema import ModelConfig

SHAPES = ("layers", "hidden", "heads", "kv_heads", "head_dim", "vocab")


def check_architecture(name: str, spec) -> None:
    """A one-line error unless `spec` gives every shape the parameter count needs, each a whole
    number > 0 (an MoE: `experts_per_token` and `moe_intermediate` too)."""
    if not isinstance(spec, dict):
        raise UserError(f"models.{name}: must be a mapping of architecture shapes ({', '.join(SHAPES)}, ...)")
    moe = spec.get("experts") or 0
    need = [*SHAPES, "experts", "experts_per_token", "moe_intermediate"] if moe else [*SHAPES, "intermediate"]
    for key in need:
        value = spec.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UserError(f"models.{name}.{key}: must be a whole number > 0, not {value!r}")


def model_config(name: str, spec: dict) -> ModelConfig:
    """A model config from an architecture (layers, hidden, heads, KV heads, head dim, MLP and
    expert widths, vocabulary): parameters counted from the shapes."""
    check_architecture(name, spec)
    h, layers = spec["hidden"], spec["layers"]
    q, kv = spec["heads"] * spec["head_dim"], spec["kv_heads"] * spec["head_dim"]
    attn = h * q + 2 * h * kv + q * h
    experts = spec.get("experts") or 0
    if experts:
        expert = 3 * h * spec["moe_intermediate"]
        shared = 3 * h * (spec.get("shared_expert_intermediate") or 0)
        router = h * experts
        layer_total = attn + experts * expert + shared + router
        layer_active = attn + spec["experts_per_token"] * expert + shared + router
    else:
        layer_total = layer_active = attn + 3 * h * spec["intermediate"]
    embed = spec["vocab"] * h
    head = 0 if spec.get("tied") else spec["vocab"] * h
    total = layers * layer_total + embed + head
    active = layers * layer_active + embed + head
    return ModelConfig(
        name=name,
        params_b=total / 1e9,
        active_params_b=active / 1e9 if experts else None,
        # the embedding is a lookup, not a matmul; the lm_head is one (a tied one uses the table)
        flop_params_b=(layers * layer_active + spec["vocab"] * h) / 1e9,
        layers=layers,
        hidden=h,
        heads=spec["heads"],
        kv_heads=spec["kv_heads"],
        head_dim=spec["head_dim"],
        experts=experts,
        experts_per_token=spec.get("experts_per_token") or 0,
        max_position=spec.get("max_position", 131072),
        weight_dtype="bf16",
        vocab=spec["vocab"],
        # MLP width a token passes through (the memory plan's activation peak)
        intermediate=(
            spec["experts_per_token"] * spec["moe_intermediate"] + (spec.get("shared_expert_intermediate") or 0)
            if experts
            else spec["intermediate"]
        ),
        tied_embeddings=bool(spec.get("tied")),
    )
