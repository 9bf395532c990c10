"""A model's parameters from its architecture (layer count, widths, heads, experts, vocabulary),
as a measured-runs file or the calibration catalog gives it."""

from __future__ import annotations

from sim.config.schema import ModelConfig


def model_config(name: str, spec: dict) -> ModelConfig:
    """A model config from an architecture (layers, hidden, heads, KV heads, head dim, MLP and
    expert widths, vocabulary): parameters counted from the shapes."""
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
        flop_params_b=(active - embed) / 1e9,  # the embedding is a lookup, not a matmul
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
