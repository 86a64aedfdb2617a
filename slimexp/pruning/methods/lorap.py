"""LoRAP (Li, Tang, Zhang, ICML 2024; arXiv 2404.09695): low-rank attention, pruned FFN.

Spec (per layer, from one pass of the dense layer over the calibration set, order
`dense_pass`, as Wanda-style methods run; the previous layers are already compressed):
- Statistics: ‖X_j‖ = (Σ_tokens x_j²)^½, the L2 norm over all calibration tokens of input
  feature j of q/k/v (one shared input), o_proj, gate/up (one shared input) and down_proj.
- MHA, AWSVD: for W (out × in) and S = diag(‖X_1‖, …, ‖X_in‖): SVD W·S = U Σ Vᵀ; keep r
  directions: W ≈ (U_r Σ_r)(V_rᵀ S⁻¹), the two factors becoming `proj_out` (r → out, with
  the original bias) and `proj_in` (in → r) of a `LowRankLinear`. It minimises ‖(W − Ŵ)S‖_F
  over rank-r Ŵ (Eckart–Young on W·S). An input never active in calibration (‖X_j‖ = 0)
  gets S⁻¹_jj = 0: its column is dropped. Where r·(in + out) ≥ in·out the dense W stays.
- Rank allocation by low-rank degree (`allocation: energy`): one energy threshold τ per
  layer; matrix m keeps the smallest r_m whose share Σ_{i≤r} σ_i² / Σ σ_i² of its own
  ‖W_m S_m‖_F² reaches τ; τ is the largest value whose four matrices fit the attention
  budget (1 − ρ_attn)·Σ_m in_m·out_m. A matrix with a steeper spectrum (q, k in LLaMA)
  thus gets a smaller rank than a flat one (v, o). `uniform`: every matrix keeps the same
  share of its own parameters (ablation).
- MHA/FFN split: ρ_attn = `attn_ratio`, default the layer's ratio r (both sub-layers lose
  the same share). The FFN then removes round((r·P_layer − attention removed) / P_channel)
  channels, so rank granularity is absorbed and the decoder lands on `prune.ratio`.
- FFN score of channel c (magnitude × input norm, summed over the channel's group):
  I_c = Σ_j |W_gate[c, j]|·‖X_j‖ + Σ_j |W_up[c, j]|·‖X_j‖ + Σ_i |W_down[i, c]|·‖A_c‖
  (X: FFN input, A: down_proj input). Sorted ascending, the lowest round(0.01·d_ff)
  channels are kept (the paper's finding that the least important 1% matter:
  `protect_lowest_frac`, 0 to switch off) and the next n are removed.
Deliberate differences / what could not be checked: the paper's full text (its
allocation formula, MHA/FFN split and calibration) was not readable from this workplace
and the authors' code was not found; the allocation, the split (same ratio for both
sub-layers, FFN absorbing the rank rounding) and the recipe's calibration are our reading
of the abstract and of SlimLLM's account of LoRAP, and are named settings. SVD runs in
float64. GQA needs nothing special: k/v are factored like any projection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slimexp.pruning import linalg, lowrank
from slimexp.pruning.component import check_range
from slimexp.pruning.engine import LayerContext, PruningMethod
from slimexp.pruning.scoring import SquaredColumnSum

ROLES = ("q", "k", "v", "o")
INPUT_OF = {"q": "q", "k": "q", "v": "q", "o": "o"}  # q/k/v read the same input


def weighted_svd(weight: torch.Tensor, norms: torch.Tensor):
    """U, σ, Vᵀ of W·S (float64), S = diag(norms)."""
    scaled = weight.to(torch.float64) * norms.to(weight.device, torch.float64).unsqueeze(0)
    return linalg.svd(scaled)


def awsvd_factors(weight: torch.Tensor, norms: torch.Tensor, rank: int, svd=None):
    """(U_r Σ_r, V_rᵀ S⁻¹): out × r and r × in, float64."""
    u, sigma, vh = svd if svd is not None else weighted_svd(weight, norms)
    norms = norms.to(vh.device, torch.float64)
    inverse = torch.where(norms > 0, 1 / norms.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(norms))
    return u[:, :rank] * sigma[:rank], vh[:rank] * inverse.unsqueeze(0)


def energy_ranks(spectra: list[torch.Tensor], shapes: list[tuple[int, int]], budget: float) -> list[int]:
    """Ranks at the largest common energy threshold τ whose matrices fit `budget` weights."""
    cumulative = [(s.pow(2).cumsum(0) / s.pow(2).sum().clamp_min(1e-300)).cpu() for s in spectra]
    candidates = torch.unique(torch.cat([torch.zeros(1, dtype=torch.float64), *cumulative]))
    ranks = []
    for energy in cumulative:
        at = torch.searchsorted(energy.contiguous(), candidates, side="left") + 1
        ranks.append(torch.where(candidates > 0, at.clamp(max=len(energy)), torch.zeros_like(at)))
    cost = sum(_cost(shape, r) for shape, r in zip(shapes, ranks))
    feasible = torch.nonzero(cost <= budget).flatten()
    best = int(feasible.max()) if len(feasible) else 0
    return [int(r[best]) for r in ranks]


def uniform_ranks(shapes: list[tuple[int, int]], keep: float) -> list[int]:
    """Each matrix keeps the share `keep` of its own weights."""
    return [min(int(keep * o * i // (o + i)), min(o, i)) for o, i in shapes]


def _cost(shape: tuple[int, int], ranks: torch.Tensor) -> torch.Tensor:
    out, inp = shape
    return torch.where(ranks * (inp + out) < inp * out, ranks * (inp + out), torch.full_like(ranks, inp * out))


def channel_scores(gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, x_norm, a_norm) -> torch.Tensor:
    """I_c = Σ_j |W_gate[c,j]|·‖X_j‖ + Σ_j |W_up[c,j]|·‖X_j‖ + Σ_i |W_down[i,c]|·‖A_c‖."""
    x_norm, a_norm = x_norm.to(gate.device, torch.float64), a_norm.to(gate.device, torch.float64)
    gate_up = (gate.abs().to(torch.float64) + up.abs().to(torch.float64)) @ x_norm
    return gate_up + down.abs().to(torch.float64).sum(0) * a_norm


def protected_cut(scores: torch.Tensor, n_remove: int, protect_frac: float) -> list[int]:
    """Sort ascending, keep the lowest round(protect_frac·n) (fewer if n_remove needs
    them), remove the next n_remove."""
    n = len(scores)
    n_remove = max(0, min(n_remove, n))
    protect = min(round(protect_frac * n), n - n_remove)
    order = torch.argsort(scores.cpu(), stable=True)
    return sorted(order[protect : protect + n_remove].tolist())


@dataclass
class LoRAP(PruningMethod):
    name = "lorap"
    order = "dense_pass"
    removes_attention_units = False
    allocation: str = "energy"  # energy (low-rank degree) | uniform
    attn_ratio: float | None = None  # share of q/k/v/o weights removed; None: the layer's ratio
    protect_lowest_frac: float = 0.01  # the least important 1% of FFN channels are kept
    activation_weighted: bool = True  # False: plain SVD of W (S = I), an ablation
    options = {"allocation": ("energy", "uniform")}

    def __post_init__(self):
        super().__post_init__()
        check_range("method.protect_lowest_frac", self.protect_lowest_frac, 0.0, 1.0)
        if self.attn_ratio is not None:
            check_range("method.attn_ratio", self.attn_ratio, 0.0, 1.0)

    def prunes_attention(self, ctx):
        return ctx.target.ratio > 0

    def prunes_ffn(self, ctx):
        return ctx.target.ratio > 0

    def attention_statistics(self, ctx):
        return {"q.in": SquaredColumnSum(), "o.in": SquaredColumnSum()}

    def ffn_statistics(self, ctx):
        return {"gate.in": SquaredColumnSum(), "down.in": SquaredColumnSum()}

    def _norms(self, stats, role: str) -> torch.Tensor:
        norm = stats[f"{INPUT_OF[role]}.in"].norm()
        return norm if self.activation_weighted else torch.ones_like(norm)

    def ranks(self, ctx: LayerContext, svds: dict) -> dict[str, int]:
        shapes = [tuple(ctx.linear(role).weight.shape) for role in ROLES]
        ratio = ctx.target.ratio if self.attn_ratio is None else self.attn_ratio
        budget = (1 - ratio) * sum(o * i for o, i in shapes)
        if self.allocation == "uniform":
            ranks = uniform_ranks(shapes, 1 - ratio)
        else:
            ranks = energy_ranks([svds[role][1] for role in ROLES], shapes, budget)
        return dict(zip(ROLES, ranks))

    def prune_attention(self, ctx, stats):
        dense = {role: ctx.linear(role) for role in ROLES}
        before = sum(m.weight.numel() for m in dense.values())
        svds = {role: weighted_svd(dense[role].weight.detach(), self._norms(stats, role)) for role in ROLES}
        ranks = self.ranks(ctx, svds)
        for role, rank in ranks.items():
            linear = dense[role]
            if not lowrank.worth_factoring(linear.in_features, linear.out_features, rank):
                continue
            left, right = awsvd_factors(linear.weight, self._norms(stats, role), rank, svds[role])
            module = lowrank.from_factors(linear, left.to(linear.weight.dtype), right.to(linear.weight.dtype))
            ctx.adapter.set_linear(ctx.layer, role, module)
        kept = sum(lowrank.factored_params(m.in_features, m.out_features, ranks[r]) for r, m in dense.items())
        ctx.info["allocated_ranks"] = {role: int(r) for role, r in ranks.items()}
        ctx.info["attn_params_removed"] = before - kept

    def prune_ffn(self, ctx, stats):
        geometry = ctx.geometry
        removed_attn = ctx.info.get("attn_params_removed", 0)
        layer_params = geometry.params  # q/k/v/o at their dense sizes: the layer as it was
        n_remove = round((ctx.target.ratio * layer_params - removed_attn) / geometry.channel_params)
        scores = channel_scores(
            ctx.linear("gate").weight.detach(),
            ctx.linear("up").weight.detach(),
            ctx.linear("down").weight.detach(),
            stats["gate.in"].norm(),
            stats["down.in"].norm(),
        )
        removed = protected_cut(scores, n_remove, self.protect_lowest_frac)
        ctx.record_decision("ffn", scores, removed)
        ctx.remove_channels(removed)
