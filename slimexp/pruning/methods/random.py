"""Random baseline: seeded random units and channels, with the counts of the plan."""

from dataclasses import dataclass

import torch

from slimexp.pruning.scoring import ScoreMethod


@dataclass
class Random(ScoreMethod):
    name = "random"
    order = "weights_only"
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        self.seed = int(self.seed)

    def _generator(self, ctx, module: int) -> torch.Generator:
        # One stream per (layer, module): the choice in a layer does not depend on the others.
        return torch.Generator().manual_seed(self.seed * 1_000_003 + ctx.index * 2 + module)

    def unit_scores(self, ctx, stats):
        return torch.rand(ctx.units.n_units, generator=self._generator(ctx, 0))

    def channel_scores(self, ctx, stats):
        return torch.rand(ctx.geometry.d_ff, generator=self._generator(ctx, 1))
