"""Attention units (what one pruning decision removes) and per-layer geometry.

A unit is either a whole KV group (its query heads plus the shared k/v head) or a single
query head; for MHA both are one head with its own k/v head. `q_head` on a GQA model
removes the same number of query heads from every KV group, because transformers'
attention repeats K/V uniformly (`num_key_value_groups`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ATTN_UNIT_POLICIES = ("kv_group", "q_head")


@dataclass(frozen=True)
class LayerGeometry:
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    q_bias: bool = False
    k_bias: bool = False
    v_bias: bool = False
    o_bias: bool = False
    gate_bias: bool = False
    up_bias: bool = False
    down_bias: bool = False

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv_heads if self.n_kv_heads else 0

    @property
    def q_head_params(self) -> int:
        """q rows and o columns of one query head."""
        return self.head_dim * self.hidden * 2 + self.head_dim * self.q_bias

    @property
    def kv_head_params(self) -> int:
        return self.head_dim * self.hidden * 2 + self.head_dim * (self.k_bias + self.v_bias)

    @property
    def channel_params(self) -> int:
        return self.hidden * 3 + self.gate_bias + self.up_bias

    @property
    def attention_params(self) -> int:
        return self.n_heads * self.q_head_params + self.n_kv_heads * self.kv_head_params + self.hidden * self.o_bias

    @property
    def ffn_params(self) -> int:
        return self.d_ff * self.channel_params + self.hidden * self.down_bias

    @property
    def params(self) -> int:
        return self.attention_params + self.ffn_params


@dataclass(frozen=True)
class AttentionUnits:
    geometry: LayerGeometry
    policy: str

    def __post_init__(self):
        if self.policy not in ATTN_UNIT_POLICIES:
            raise ValueError(f"attn_unit must be one of {ATTN_UNIT_POLICIES}, got {self.policy!r}")

    @property
    def per_kv_group(self) -> bool:
        """True when a unit is a whole KV group (always the case for MHA)."""
        return self.policy == "kv_group" or self.geometry.group_size == 1

    @property
    def n_units(self) -> int:
        g = self.geometry
        return g.n_kv_heads if self.per_kv_group else g.n_heads

    @property
    def unit_params(self) -> int:
        g = self.geometry
        if self.per_kv_group:
            return g.group_size * g.q_head_params + g.kv_head_params
        return g.q_head_params

    def heads_of(self, unit: int) -> list[int]:
        if self.per_kv_group:
            gs = self.geometry.group_size
            return list(range(unit * gs, (unit + 1) * gs))
        return [unit]

    def columns_of(self, unit: int) -> list[int]:
        """o_proj input columns owned by the unit."""
        hd = self.geometry.head_dim
        return [h * hd + j for h in self.heads_of(unit) for j in range(hd)]

    @property
    def unit_size(self) -> int:
        return len(self.columns_of(0)) if self.n_units else 0

    def legal_count(self, count: int) -> int:
        """The nearest count of units that can be removed evenly (q_head on GQA: a multiple
        of the number of KV groups)."""
        if self.per_kv_group:
            return max(0, min(count, self.n_units))
        n_kv = self.geometry.n_kv_heads
        per_group = min(self.geometry.group_size, int(round(count / n_kv)))
        return per_group * n_kv

    def count(self, ratio: float, rounding: str) -> int:
        """Units removed at `ratio`; for q_head on GQA the ratio applies within each group."""
        if self.per_kv_group:
            return round_count(ratio * self.n_units, rounding)
        per_group = round_count(ratio * self.geometry.group_size, rounding)
        return per_group * self.geometry.n_kv_heads

    def lowest(self, unit_scores: torch.Tensor, count: int) -> list[int]:
        """The `count` units with the lowest scores, balanced across KV groups for q_head."""
        if count <= 0:
            return []
        if self.per_kv_group:
            order = torch.argsort(unit_scores, stable=True)
            return sorted(order[:count].tolist())
        n_kv, gs = self.geometry.n_kv_heads, self.geometry.group_size
        per_group = count // n_kv
        chosen = []
        for group in range(n_kv):
            order = torch.argsort(unit_scores[group * gs : (group + 1) * gs], stable=True)
            chosen += [group * gs + int(i) for i in order[:per_group]]
        return sorted(chosen)

    def allowed(self, removed: set[int], count: int) -> list[int]:
        """Units that may still be removed by an iterative method without breaking balance."""
        remaining = [u for u in range(self.n_units) if u not in removed]
        if self.per_kv_group:
            return remaining
        n_kv, gs = self.geometry.n_kv_heads, self.geometry.group_size
        quota = count // n_kv
        taken = [sum(1 for u in removed if u // gs == g) for g in range(n_kv)]
        return [u for u in remaining if taken[u // gs] < quota]

    def removal(self, units: list[int]) -> tuple[list[int], list[int]]:
        """(query heads, kv heads) that removing `units` deletes."""
        q_heads = sorted(h for u in units for h in self.heads_of(u))
        gs = self.geometry.group_size
        kv_heads = [
            g for g in range(self.geometry.n_kv_heads) if all(h in q_heads for h in range(g * gs, (g + 1) * gs))
        ]
        return q_heads, kv_heads


def round_count(value: float, rounding: str) -> int:
    """`round`: Python's round (half to even), as SlimGPT and SlimLLM; `floor`: int(), as the
    FLAP-repo baselines (float artefacts included, to match their counts exactly)."""
    if rounding == "round":
        return int(round(value))
    if rounding == "floor":
        return int(value)
    raise ValueError(f"rounding must be 'round' or 'floor', got {rounding!r}")
