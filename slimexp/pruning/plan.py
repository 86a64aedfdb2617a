"""From per-layer ratios to per-layer counts of attention units and FFN channels.

`prune.ratio` is the share of the dense model's decoder-layer parameters removed. Heads
are whole units, so by default (`absorb_rounding`) each layer rounds its heads and lets
FFN channels absorb the rest of its parameter budget, which keeps the achieved ratio on
target. The papers' faithful presets instead count heads and channels separately with the
same ratio and their own rounding (`round` or `floor`), and report what results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from slimexp.pruning.units import AttentionUnits, LayerGeometry, round_count


@dataclass(frozen=True)
class LayerTarget:
    layer: int
    ratio: float
    attn_units: int
    ffn_channels: int

    def as_dict(self) -> dict:
        return asdict(self)


def layer_target(
    layer: int, ratio: float, geometry: LayerGeometry, units: AttentionUnits, rounding: str, absorb_rounding: bool
) -> LayerTarget:
    n_units = units.count(ratio, rounding)
    if absorb_rounding:
        budget = ratio * geometry.params - n_units * units.unit_params
        channels = round_count(budget / geometry.channel_params, rounding) if budget > 0 else 0
    else:
        channels = round_count(ratio * geometry.d_ff, rounding)
    return LayerTarget(layer, ratio, min(n_units, units.n_units), max(0, min(channels, geometry.d_ff)))


def plan_layers(
    geometries: list[LayerGeometry], ratios: list[float], attn_unit: str, rounding: str, absorb_rounding: bool
) -> list[LayerTarget]:
    return [
        layer_target(i, r, g, AttentionUnits(g, attn_unit), rounding, absorb_rounding)
        for i, (g, r) in enumerate(zip(geometries, ratios))
    ]


def planned_ratio(geometries: list[LayerGeometry], targets: list[LayerTarget], attn_unit: str) -> float:
    """Share of decoder parameters the plan removes (before any added biases)."""
    removed = sum(
        t.attn_units * AttentionUnits(g, attn_unit).unit_params + t.ffn_channels * g.channel_params
        for g, t in zip(geometries, targets)
    )
    return removed / sum(g.params for g in geometries)
