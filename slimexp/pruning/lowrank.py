"""Low-rank projections: a dense nn.Linear replaced by two smaller ones.

`LowRankLinear` computes x ↦ proj_out(proj_in(x)): `proj_in` (in → r, no bias) and
`proj_out` (r → out, carrying the original bias). It exposes `in_features`,
`out_features`, `bias` and `rank` like a Linear, so `surgery.geometry` reads it unchanged,
and its two children are plain nn.Linear layers: `decoder_params` counts them, LoRA adapts
and merges into them, safetensors stores them as `<proj>.proj_in.weight` / `.proj_out.*`.

A factorisation pays only while r·(in + out) < in·out; `worth_factoring` says so, and
callers keep the dense matrix otherwise.
"""

from __future__ import annotations

import torch
from torch import nn


def worth_factoring(in_features: int, out_features: int, rank: int) -> bool:
    return rank * (in_features + out_features) < in_features * out_features


def factored_params(in_features: int, out_features: int, rank: int) -> int:
    """Weights the projection keeps at `rank` (dense when factoring would not pay)."""
    if worth_factoring(in_features, out_features, rank):
        return rank * (in_features + out_features)
    return in_features * out_features


class LowRankLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool, device=None, dtype=None):
        super().__init__()
        make = dict(device=device, dtype=dtype)
        self.proj_in = nn.utils.skip_init(nn.Linear, in_features, rank, bias=False, **make)
        self.proj_out = nn.utils.skip_init(nn.Linear, rank, out_features, bias=bias, **make)

    @property
    def in_features(self) -> int:
        return self.proj_in.in_features

    @property
    def out_features(self) -> int:
        return self.proj_out.out_features

    @property
    def rank(self) -> int:
        return self.proj_in.out_features

    @property
    def bias(self) -> nn.Parameter | None:
        return self.proj_out.bias

    @property
    def weight(self) -> torch.Tensor:
        """The dense product (out × in), for code that reads a projection's weight."""
        return self.proj_out.weight @ self.proj_in.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.proj_in(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def from_factors(dense: nn.Linear, left: torch.Tensor, right: torch.Tensor) -> LowRankLinear:
    """A low-rank stand-in for `dense` with weight left @ right (out × r, r × in), the
    dense bias kept on the output side."""
    weight = dense.weight
    module = LowRankLinear(
        dense.in_features, dense.out_features, left.shape[1], dense.bias is not None, weight.device, weight.dtype
    )
    with torch.no_grad():
        module.proj_out.weight.copy_(left)
        module.proj_in.weight.copy_(right)
        if dense.bias is not None:
            module.proj_out.bias.copy_(dense.bias)
    return module


def empty_like(dense: nn.Linear, rank: int) -> LowRankLinear:
    """The shape a checkpoint records (contents are loaded after)."""
    w = dense.weight
    return LowRankLinear(dense.in_features, dense.out_features, rank, dense.bias is not None, w.device, w.dtype)


def output_linear(module: nn.Module) -> nn.Linear:
    """The nn.Linear that produces the module's output (and holds its bias)."""
    return module.proj_out if isinstance(module, LowRankLinear) else module
