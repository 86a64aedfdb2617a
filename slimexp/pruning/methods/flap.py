"""FLAP (An et al., AAAI 2024; DESIGN §5), over the engine's `global` order.

Every layer is scored on the dense model before anything is cut. The input columns of
o_proj and down_proj get a fluctuation statistic F_j; a column metric s_j (WIFV: F_j·‖W_j‖²,
IFV: F_j, WIFN: mean_i |W_ij|·‖X_j‖), squared for o_proj. `AL-AM` standardises s per
layer and module, pools all heads and channels of all layers with weights (channel 1,
head ⌊params(head)/params(channel)⌋, 170 for head_dim 128) and keeps the units scoring
strictly above the k*-th of the descending order, k* = the first argmin_k
|Σ_{i≤k} w_i − (1−r)·Σw|. With `attn_unit=q_head` on GQA the pool holds slots of one
query head per KV group, so every cut stays balanced (ours: the code has no GQA).
`UL-UM` uses the plan's counts per layer with raw scores.
The removed columns' mean contribution W[:, removed]·m[removed] becomes the module's
output bias (bias compensation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from slimexp.pruning.component import check_option
from slimexp.pruning.engine import GlobalMethod, LayerContext
from slimexp.pruning.scoring import SquaredNormPerSequence

STRUCTURES = ("AL-AM", "UL-UM")
METRICS = ("WIFV", "IFV", "WIFN")
FLUCTUATIONS = ("authors", "variance")


class Fluctuation:
    """Per input column j: the token mean m_j and the fluctuation F_j, reading sequences
    one at a time in order.

    `authors`: F_j = 1/(N−1)·Σ_{k=2..N} (k−1)/k·Σ_{t∈seq k} (x_tj − m_kj)², with m_k the
    running token mean after sequences 1..k, as the FLAP code's in-place update computes
    it (≈ T·Var, sequence 1 left out; 0 for one sequence). `variance`: the sample variance
    over all tokens (what the paper writes). `norm()` is WIFN's ‖X_j‖."""

    def __init__(self, mode: str = "authors"):
        check_option("fluctuation", mode, FLUCTUATIONS)
        self.mode = mode
        self.n_sequences = 0
        self.n_tokens = 0
        self.mean: torch.Tensor | None = None
        self._spread: torch.Tensor | None = None  # authors: Σ (k−1)/k·S_k; variance: Σ (x − mean)²
        self.squares = SquaredNormPerSequence()

    def add_batch(self, x: torch.Tensor) -> None:
        if x.dim() == 2:
            x = x.unsqueeze(0)
        self.squares.add_batch(x)
        for sequence in x:
            self._add_sequence(sequence.to(torch.float64))

    def _add_sequence(self, tokens: torch.Tensor) -> None:
        if self.mean is None:
            self.mean = torch.zeros(tokens.shape[-1], dtype=torch.float64, device=tokens.device)
            self._spread = torch.zeros_like(self.mean)
        k, t = self.n_sequences + 1, tokens.shape[0]
        if self.mode == "authors":
            self.mean += (tokens.mean(0) - self.mean) / k
            if k > 1:
                self._spread += (k - 1) / k * (tokens - self.mean).pow(2).sum(0)
        else:  # Chan et al.'s merge of (count, mean, M2) with this sequence's
            seq_mean = tokens.mean(0)
            seq_m2 = (tokens - seq_mean).pow(2).sum(0)
            n = self.n_tokens
            delta = seq_mean - self.mean
            self.mean += delta * t / (n + t)
            self._spread += seq_m2 + delta.pow(2) * n * t / (n + t)
        self.n_sequences = k
        self.n_tokens += t

    def norm(self) -> torch.Tensor:
        return self.squares.norm()

    def value(self) -> torch.Tensor:
        if self.mode == "authors":
            denominator = self.n_sequences - 1
        else:
            denominator = self.n_tokens - 1
        if denominator < 1:
            return torch.zeros_like(self._spread, dtype=torch.float32)
        return (self._spread / denominator).float()


def standardise(scores: torch.Tensor) -> torch.Tensor:
    """(s − mean)/std over one layer's columns of one module, std with Bessel's correction."""
    return (scores - scores.mean()) / scores.std()


def global_threshold(scores: torch.Tensor, weights: torch.Tensor, ratio: float) -> torch.Tensor:
    """The score at k*, the first argmin_k |Σ_{i≤k} w_i − (1−r)·Σw| over the descending
    order; units scoring strictly above it are kept (the k*-th itself goes, as in the code)."""
    ordered, order = torch.sort(scores, descending=True, stable=True)
    cumulative = torch.cumsum(weights[order].to(torch.float64), 0)
    target = (1 - ratio) * weights.to(torch.float64).sum()
    return ordered[torch.argmin((cumulative - target).abs())]


@dataclass
class FLAP(GlobalMethod):
    name = "flap"
    structure: str = "AL-AM"
    metric: str = "WIFV"
    fluctuation: str = "authors"
    bias_compensation: bool = True
    mean_dtype: str = "float16"
    _scores: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict, init=False, repr=False)
    options = {
        "structure": STRUCTURES,
        "metric": METRICS,
        "fluctuation": FLUCTUATIONS,
        "mean_dtype": ("float16", "float32"),
    }

    def attention_statistics(self, ctx):
        return {"o.in": Fluctuation(self.fluctuation)}

    def ffn_statistics(self, ctx):
        return {"down.in": Fluctuation(self.fluctuation)}

    def column_metric(self, ctx: LayerContext, stats: dict, role: str) -> torch.Tensor:
        weight = ctx.linear(role).weight.detach().float()
        if self.metric == "WIFV":
            s = stats[f"{role}.in"].value() * weight.pow(2).sum(0)
        elif self.metric == "IFV":
            s = stats[f"{role}.in"].value()
        else:
            s = (weight.abs() * stats[f"{role}.in"].norm().unsqueeze(0)).mean(0)
        return s.pow(2) if role == "o" else s

    def score_layer(self, ctx, stats):
        units = ctx.units
        attn = self.column_metric(ctx, stats, "o").cpu()
        ffn = self.column_metric(ctx, stats, "down").cpu()
        columns = torch.tensor([units.columns_of(u) for u in range(units.n_units)], dtype=torch.long)
        if self.structure == "AL-AM":
            unit_scores = standardise(attn)[columns].mean(1)
            channel_scores = standardise(ffn)
        else:
            unit_scores = attn[columns].sum(1)
            channel_scores = ffn
        self._scores[ctx.index] = {
            "units": unit_scores,
            "channels": channel_scores,
            "o_mean": stats["o.in"].mean.float().cpu(),
            "down_mean": stats["down.in"].mean.float().cpu(),
        }

    @staticmethod
    def pool_entries(units, unit_scores: torch.Tensor) -> tuple[torch.Tensor, list[list[int]]]:
        """What the global pool holds for one layer's attention: each unit on its own, or,
        for q_head on GQA, slots of one query head per KV group (slot k: the k-th lowest of
        every group, scored by their mean), so any cut stays balanced across groups."""
        if units.per_kv_group:
            return unit_scores, [[u] for u in range(units.n_units)]
        n_kv, gs = units.geometry.n_kv_heads, units.geometry.group_size
        ranked = [torch.argsort(unit_scores[g * gs : (g + 1) * gs], stable=True) + g * gs for g in range(n_kv)]
        slots = [[int(ranked[g][k]) for g in range(n_kv)] for k in range(gs)]
        return torch.stack([unit_scores[slot].mean() for slot in slots]), slots

    @staticmethod
    def entry_weights(units, n_entries: int) -> torch.Tensor:
        """⌊params(entry)/params(channel)⌋: 170 for a LLaMA head (the code truncates 170.67).
        A q_head slot holds n_kv query heads; the last one also takes the KV heads with it."""
        g = units.geometry
        if units.per_kv_group:
            return torch.full((n_entries,), units.unit_params // g.channel_params, dtype=torch.long)
        params = [g.n_kv_heads * g.q_head_params] * n_entries
        params[-1] += g.n_kv_heads * g.kv_head_params
        return torch.tensor([p // g.channel_params for p in params], dtype=torch.long)

    def allocate(self, contexts):
        if self.structure == "UL-UM":
            return [self._lowest(ctx, ctx.target.attn_units, ctx.target.ffn_channels) for ctx in contexts]
        scores, weights, layer_weights, entries = [], [], [], []
        for ctx in contexts:
            units, geometry = ctx.units, ctx.geometry
            s = self._scores[ctx.index]
            entry_scores, members = self.pool_entries(units, s["units"])
            entry_weights = self.entry_weights(units, len(members))
            scores += [entry_scores, s["channels"]]
            weights += [entry_weights, torch.ones(geometry.d_ff, dtype=torch.long)]
            layer_weights.append(int(entry_weights.sum()) + geometry.d_ff)
            entries.append((entry_scores, members))
        # The pool's budget is Σ rᵢ·(weight of layer i): r itself under the uniform schedule.
        ratio = sum(c.target.ratio * w for c, w in zip(contexts, layer_weights)) / sum(layer_weights)
        threshold = global_threshold(torch.cat(scores), torch.cat(weights), ratio)
        decisions = []
        for ctx, (entry_scores, members) in zip(contexts, entries):
            channels = torch.nonzero(self._scores[ctx.index]["channels"] <= threshold).flatten()
            removed = [u for e, slot in zip(entry_scores, members) if e <= threshold for u in slot]
            decisions.append((sorted(removed), sorted(channels.tolist())))
            ctx.record_decision("attn", self._scores[ctx.index]["units"], removed, float(threshold))
            ctx.record_decision("ffn", self._scores[ctx.index]["channels"], channels.tolist(), float(threshold))
        return decisions

    def _lowest(self, ctx: LayerContext, n_units: int, n_channels: int) -> tuple[list[int], list[int]]:
        s = self._scores[ctx.index]
        channels = sorted(torch.argsort(s["channels"], stable=True)[:n_channels].tolist())
        units = ctx.units.lowest(s["units"], n_units)
        ctx.record_decision("attn", s["units"], units)
        ctx.record_decision("ffn", s["channels"], channels)
        return units, channels

    def cut_layer(self, ctx, units, channels):
        if self.bias_compensation:
            s = self._scores[ctx.index]
            removed_columns = [j for u in units for j in ctx.units.columns_of(u)]
            for role, columns, mean in (("o", removed_columns, s["o_mean"]), ("down", channels, s["down_mean"])):
                if columns:
                    ctx.add_output_bias(role, self.compensation(ctx.linear(role).weight, mean, columns))
        super().cut_layer(ctx, units, channels)

    def compensation(self, weight: torch.Tensor, mean: torch.Tensor, columns: list[int]) -> torch.Tensor:
        """b = W[:, removed]·m[removed]: the removed columns' mean contribution to the output."""
        if self.mean_dtype == "float16":  # the authors keep the mean in fp16
            mean = mean.half().float()
        index = torch.tensor(columns, dtype=torch.long)
        return weight.detach().float()[:, index.to(weight.device)] @ mean[index].to(weight.device)
