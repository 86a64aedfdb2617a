"""Magnitude baseline (`mag_sp` of the FLAP repo): no data, weight norms of the outputs'
projections only. Channel c = ‖W_down[:, c]‖₂; head h = Σ_{j∈h} ‖W_o[:, j]‖₂."""

from dataclasses import dataclass

from slimexp.pruning.scoring import ScoreMethod


@dataclass
class Magnitude(ScoreMethod):
    name = "magnitude"
    order = "weights_only"

    def column_scores(self, ctx, stats):
        return ctx.linear("o").weight.float().norm(dim=0)

    def channel_scores(self, ctx, stats):
        return ctx.linear("down").weight.float().norm(dim=0)
