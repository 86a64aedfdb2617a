"""Per-layer pruning ratios. A schedule maps (target ratio, number of layers) to one ratio
per layer; methods with data-dependent allocation (SlimLLM's cosine_softmax, FLAP's
global pool) provide their own."""

from __future__ import annotations


class Uniform:
    name = "uniform"

    def layer_ratios(self, ratio: float, n_layers: int) -> list[float]:
        return [float(ratio)] * n_layers

    def describe(self) -> dict:
        return {"name": self.name}
