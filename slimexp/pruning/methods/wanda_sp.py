"""Wanda-sp (FLAP repo): |W| × input activation norm, structured.

‖X_j‖ = (Σ_tokens x_j² / N_seq)^½ of the o_proj / down_proj input; channel c =
mean_i |W_down[i, c]|·‖X_c‖; head h = Σ_{j∈h} mean_i |W_o[i, j]|·‖X_j‖. Both modules are
scored from one pass of the dense layer (the FFN sees its attention unpruned).
"""

from dataclasses import dataclass

from slimexp.pruning.scoring import ScoreMethod, SquaredNormPerSequence


@dataclass
class WandaSP(ScoreMethod):
    name = "wanda_sp"
    order = "dense_pass"

    def attention_statistics(self, ctx):
        return {"o.in": SquaredNormPerSequence()}

    def ffn_statistics(self, ctx):
        return {"down.in": SquaredNormPerSequence()}

    def column_scores(self, ctx, stats):
        return ctx.linear("o").weight.float().abs().mean(dim=0) * stats["o.in"].norm()

    def channel_scores(self, ctx, stats):
        return ctx.linear("down").weight.float().abs().mean(dim=0) * stats["down.in"].norm()
