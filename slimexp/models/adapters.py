"""Architecture adapters: where the prunable projections of a decoder layer live.

Pruning code never spells out `self_attn.o_proj`; it asks the adapter. Adding an
architecture means adding one entry to ADAPTERS, if its layers are llama-shaped
(q/k/v/o attention, gate/up/down FFN).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from slimexp.errors import SlimexpError


@dataclass(frozen=True)
class ArchitectureAdapter:
    model_type: str
    layers_path: str = "model.layers"
    attention: str = "self_attn"
    q_proj: str = "q_proj"
    k_proj: str = "k_proj"
    v_proj: str = "v_proj"
    o_proj: str = "o_proj"
    mlp: str = "mlp"
    gate_proj: str = "gate_proj"
    up_proj: str = "up_proj"
    down_proj: str = "down_proj"

    def layers(self, model: nn.Module) -> nn.ModuleList:
        node = model
        for attr in self.layers_path.split("."):
            node = getattr(node, attr)
        return node

    def attn(self, layer: nn.Module) -> nn.Module:
        return getattr(layer, self.attention)

    def ffn(self, layer: nn.Module) -> nn.Module:
        return getattr(layer, self.mlp)

    def linear(self, layer: nn.Module, role: str) -> nn.Linear:
        """role: one of q, k, v, o, gate, up, down."""
        parent = self.attn(layer) if role in ("q", "k", "v", "o") else self.ffn(layer)
        return getattr(parent, getattr(self, f"{role}_proj"))

    def set_linear(self, layer: nn.Module, role: str, module: nn.Module) -> None:
        parent = self.attn(layer) if role in ("q", "k", "v", "o") else self.ffn(layer)
        setattr(parent, getattr(self, f"{role}_proj"), module)


ADAPTERS: dict[str, ArchitectureAdapter] = {
    "llama": ArchitectureAdapter("llama"),
    "mistral": ArchitectureAdapter("mistral"),
    "qwen2": ArchitectureAdapter("qwen2"),  # q/k/v carry biases; surgery slices any bias it finds
    # Gemma-3 normalises q/k per head with a weight shared by all heads: nothing to slice.
    "gemma3_text": ArchitectureAdapter("gemma3_text"),
}
ADAPTERS["gemma3"] = ArchitectureAdapter("gemma3", layers_path="model.language_model.layers")


def adapter_for(model_or_config) -> ArchitectureAdapter:
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        raise SlimexpError(f"architecture '{model_type}' has no adapter; supported: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[model_type]
