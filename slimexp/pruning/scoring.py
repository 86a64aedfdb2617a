"""Shared pieces of the methods: activation statistics, lowest-score selection, and the
per-dimension output regression SlimLLM introduced (SlimGPT can switch it on)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slimexp.pruning.engine import Accumulator, LayerContext, PruningMethod


class SquaredNormPerSequence:
    """Running (Σ_tokens x_j²) / N_seq per input feature j, as the FLAP repo's wanda_sp
    accumulates it (a mean over sequences, not tokens)."""

    def __init__(self):
        self.value: torch.Tensor | None = None
        self.n_sequences = 0

    def add_batch(self, x: torch.Tensor) -> None:
        if x.dim() == 2:
            x = x.unsqueeze(0)
        batch = x.shape[0]
        total = x.pow(2).sum(dim=(0, 1))
        if self.value is None:
            self.value = torch.zeros_like(total)
        self.value *= self.n_sequences / (self.n_sequences + batch)
        self.n_sequences += batch
        self.value += total / self.n_sequences

    def norm(self) -> torch.Tensor:
        return self.value.sqrt()


class SquaredColumnSum:
    """Σ_tokens x_j² per feature j, in float64 (the L2 norm without keeping the tokens)."""

    def __init__(self):
        self.value: torch.Tensor | None = None

    def add_batch(self, x: torch.Tensor) -> None:
        total = x.reshape(-1, x.shape[-1]).to(torch.float64).pow(2).sum(0)
        self.value = total if self.value is None else self.value + total

    def norm(self) -> torch.Tensor:
        return self.value.sqrt()


class TokenStore:
    """Keeps every token's activation (float32, on the device it came from)."""

    def __init__(self):
        self.chunks: list[torch.Tensor] = []

    def add_batch(self, x: torch.Tensor) -> None:
        self.chunks.append(x.detach().reshape(-1, x.shape[-1]))

    def tokens(self) -> torch.Tensor:
        return torch.cat(self.chunks)


class Tee:
    """One role's activation fed to several statistics (a role holds one accumulator)."""

    def __init__(self, **parts):
        self.parts = parts

    def add_batch(self, x: torch.Tensor) -> None:
        for part in self.parts.values():
            part.add_batch(x)

    def __getitem__(self, name: str):
        return self.parts[name]


def apply_output_fit(ctx: LayerContext, role: str, slope: torch.Tensor, intercept: torch.Tensor) -> None:
    """O = X(A·W)ᵀ + B: scale output row k of the pruned projection by a_k, add b_k to its
    (new) bias; the fit is `slimllm_math.linear_fit`."""
    linear = ctx.linear(role)
    with torch.no_grad():
        linear.weight.mul_(slope.to(device=linear.weight.device, dtype=linear.weight.dtype)[:, None])
    ctx.add_output_bias(role, intercept)
    key = "attn" if role == "o" else "ffn"
    # SlimLLM Figure 2 plots the mean of A per layer and module.
    ctx.info[f"{key}_regression_mean_a"] = float(slope.mean())
    ctx.info[f"{key}_regression_mean_b"] = float(intercept.mean())


@dataclass
class ScoreMethod(PruningMethod):
    """Remove the attention units and FFN channels with the lowest scores.

    A unit's score is the sum of its o_proj input columns' scores; a channel's score is
    its down_proj input column's score.
    """

    def column_scores(self, ctx: LayerContext, stats: dict[str, Accumulator]) -> torch.Tensor:
        raise NotImplementedError

    def channel_scores(self, ctx: LayerContext, stats: dict[str, Accumulator]) -> torch.Tensor:
        raise NotImplementedError

    def unit_scores(self, ctx: LayerContext, stats: dict[str, Accumulator]) -> torch.Tensor:
        units = ctx.units
        columns = self.column_scores(ctx, stats)
        return columns.view(units.n_units, units.unit_size).sum(1)

    def prune_attention(self, ctx, stats):
        units = ctx.units
        scores = self.unit_scores(ctx, stats)
        removed = units.lowest(scores, ctx.target.attn_units)
        ctx.record_decision("attn", scores, removed)
        ctx.remove_attention_units(removed)

    def prune_ffn(self, ctx, stats):
        scores = self.channel_scores(ctx, stats)
        order = torch.argsort(scores, stable=True)
        removed = sorted(order[: ctx.target.ffn_channels].tolist())
        ctx.record_decision("ffn", scores, removed)
        ctx.remove_channels(removed)
