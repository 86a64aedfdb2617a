"""SlimLLM (Guo et al., ICML 2025; DESIGN §5), over the layer-wise engine, order `sequential`.

Attention: score units by the Pearson similarity of the output without them (S_u, high =
prunable), prune the highest, refine with the one-pass greedy swap search (Algorithm 1),
then fit o_proj per output dimension to the unpruned output (linear regression: row k
scaled by a_k, bias b_k). FFN, scored after the attention was pruned and corrected:
feature-space (PCA) importance plus gate/up terms, lowest pruned after skipping the
`protect_lowest_frac` lowest (the authors' code does so), then the same regression on
down_proj. The math lives in `slimllm_math`.

Memory: the o_proj and down_proj inputs of one layer are kept raw (float32, tokens ×
width) for the Pearson scores, PCA and regression. At the scale used here (≤ 128 × 128
tokens, widths ≤ 1536) that is ≤ 100 MB; the engine holds one layer at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slimexp.pruning import slimllm_math as sm
from slimexp.pruning.component import check_range
from slimexp.pruning.engine import LayerContext, PruningMethod
from slimexp.pruning.scoring import SquaredColumnSum, TokenStore, apply_output_fit


@dataclass
class SlimLLM(PruningMethod):
    name = "slimllm"
    order = "sequential"
    greedy_search: bool = True
    feature_space: bool = True
    linear_regression: bool = True
    protect_lowest_frac: float = 0.01

    def __post_init__(self):
        super().__post_init__()
        self.protect_lowest_frac = float(self.protect_lowest_frac)
        check_range("protect_lowest_frac", self.protect_lowest_frac, 0.0, 1.0)

    # ----------------------------------------------------------------- attention

    def attention_statistics(self, ctx: LayerContext) -> dict:
        return {"o.in": TokenStore()}

    def prune_attention(self, ctx: LayerContext, stats: dict) -> None:
        units = ctx.units
        x = stats["o.in"].tokens()
        o_proj = ctx.linear("o")
        weight = o_proj.weight.detach()
        columns = [units.columns_of(u) for u in range(units.n_units)]
        gram = sm.contribution_gram(x, weight, columns)
        scores = sm.head_scores(gram)
        # Highest S goes; `lowest` on −S keeps q_head removals balanced across KV groups.
        initial = units.lowest(-scores.cpu(), ctx.target.attn_units)
        removed, swaps = initial, []
        if self.greedy_search:
            # q_head on GQA: a swap stays inside one KV group, so each group keeps its quota.
            groups = None if units.per_kv_group else [u // ctx.geometry.group_size for u in range(units.n_units)]
            removed, swaps = sm.greedy_swap(gram, initial, scores, groups)
        kept = [u for u in range(units.n_units) if u not in set(removed)]
        ctx.record_decision("attn", -scores, removed)  # lower goes: −S
        ctx.info.update(
            attn_scores=[round(float(s), 6) for s in scores],
            attn_initial_units=list(initial),
            attn_greedy_swaps=[list(s) for s in swaps],
            attn_greedy_changed=sorted(removed) != sorted(initial),
            attn_objective=sm.objective(gram, kept),
        )
        fit = None
        if self.linear_regression and removed:
            # Same o_proj input: y = unpruned output, ŷ = kept units' contribution
            # (= y minus the removed units', the cheaper product at low ratios).
            y = sm.partial_output(x, weight)
            removed_columns = [c for u in removed for c in columns[u]]
            fit = sm.linear_fit(y - sm.partial_output(x, weight, removed_columns), y)
        ctx.remove_attention_units(removed)
        if fit is not None:
            apply_output_fit(ctx, "o", *fit)

    # ----------------------------------------------------------------------- FFN

    def ffn_statistics(self, ctx: LayerContext) -> dict:
        stats = {"down.in": TokenStore()}
        if self.feature_space:
            stats["mlp.in"] = SquaredColumnSum()  # post-attention-norm output: ‖X‖ for I_g, I_u
        return stats

    def prune_ffn(self, ctx: LayerContext, stats: dict) -> None:
        a = stats["down.in"].tokens()
        w_down = ctx.linear("down").weight.detach()
        # Unpruned FFN output (no bias), float64: PCA input and regression target.
        y = sm.partial_output(a, w_down) if self.feature_space or self.linear_regression else None
        if self.feature_space:
            gate, up = ctx.linear("gate").weight.detach(), ctx.linear("up").weight.detach()
            scores = sm.channel_importance(a, stats["mlp.in"].norm(), gate, up, w_down, y)["score"]
        else:
            # Ablation "w/o feature space importance": a plain Wanda-style channel score
            # mean_i |W_down[i, c]|·‖A_c‖₂ on the down_proj input, no gate/up terms.
            scores = w_down.to(torch.float64).abs().mean(0) * sm.column_norms(a).to(w_down.device)
        d_ff = w_down.shape[1]
        protect = round(self.protect_lowest_frac * d_ff)  # Python round, as the authors
        removed = sm.channels_to_prune(scores, ctx.target.ffn_channels, protect)
        ctx.info["ffn_protected"] = protect
        ctx.record_decision("ffn", scores, removed)
        fit = None
        if self.linear_regression and removed:
            # y = unpruned FFN output, ŷ = kept channels' contribution = y − removed ones'.
            fit = sm.linear_fit(y - sm.partial_output(a, w_down, removed), y)
        ctx.remove_channels(removed)
        if fit is not None:
            apply_output_fit(ctx, "down", *fit)
