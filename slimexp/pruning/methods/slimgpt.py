"""SlimGPT (Ling et al., NeurIPS 2024): structured Optimal Brain Surgeon, layer by layer.

Per layer, o_proj then down_proj: accumulate H = (2/N_seq)·Σ x xᵀ of the projection's
input, remove whole attention units (Batched Greedy Pruning with grouped Cholesky) or FFN
channels (Dynamic Group Size) and compensate the kept columns; the FFN statistics are
taken after the attention was pruned (engine order `sequential`). The math lives in
`slimexp.pruning.obs`; DESIGN §5 describes it.

`regression` (not in the paper; for mixing the two papers' parts): after the cut, fit
o_proj / down_proj per output dimension to the unpruned output over the calibration
tokens, SlimLLM's linear regression (`slimllm_math.linear_fit`), on top of the OBS update
or, with `compensate=false`, instead of it. It keeps the projection's input tokens (float32,
tokens × width), as SlimLLM does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slimexp.errors import SlimexpError
from slimexp.pruning import obs
from slimexp.pruning import slimllm_math as sm
from slimexp.pruning.engine import LayerContext, PruningMethod
from slimexp.pruning.scoring import Tee, TokenStore, apply_output_fit

DTYPES = {"float32": torch.float32, "float64": torch.float64}
HEAD_SCORES = ("authors", "exact")


@dataclass
class SlimGPT(PruningMethod):
    name = "slimgpt"
    order = "sequential"
    percdamp: float = 0.01
    compensate: bool = True
    grouped_cholesky: bool = True
    head_score: str = "authors"
    dynamic_group: bool = True
    max_group: int = 1024
    min_group: int = 64
    fixed_group: int = 128
    dtype: str = "float32"
    regression: bool = False

    options = {"head_score": HEAD_SCORES, "dtype": tuple(DTYPES)}

    def __post_init__(self):
        super().__post_init__()
        if self.percdamp < 0:
            raise SlimexpError(f"percdamp must be >= 0, got {self.percdamp}")
        if not 1 <= self.min_group <= self.max_group or self.fixed_group < 1:
            raise SlimexpError(
                "need 1 <= min_group <= max_group and fixed_group >= 1, "
                f"got {self.min_group}, {self.max_group}, {self.fixed_group}"
            )
        self.percdamp = float(self.percdamp)
        self.max_group, self.min_group, self.fixed_group = (
            int(self.max_group),
            int(self.min_group),
            int(self.fixed_group),
        )

    @property
    def compute_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def _inputs(self) -> Tee:
        parts = {"hessian": obs.HessianAccumulator(self.compute_dtype)}
        if self.regression:
            parts["tokens"] = TokenStore()
        return Tee(**parts)

    def attention_statistics(self, ctx: LayerContext) -> dict:
        return {"o.in": self._inputs()}

    def ffn_statistics(self, ctx: LayerContext) -> dict:
        return {"down.in": self._inputs()}

    def _fit(
        self, ctx: LayerContext, role: str, inputs: Tee, before: torch.Tensor, after: torch.Tensor, removed
    ) -> None:
        """SlimLLM's per-dimension regression of the pruned output (the kept input columns of
        `after`) on the unpruned one (`before`)."""
        if not self.regression:
            return
        gone = set(removed)
        kept = [c for c in range(after.shape[1]) if c not in gone]
        x = inputs["tokens"].tokens()
        fit = sm.linear_fit(sm.partial_output(x, after, kept), sm.partial_output(x, before))
        apply_output_fit(ctx, role, *fit)

    def _weight_and_hessian(self, linear: torch.nn.Linear, inputs: Tee, what: str):
        accumulator = inputs["hessian"]
        if accumulator.hessian is None:
            raise ValueError(f"no calibration batch reached {what}")
        weight = linear.weight.detach().to(self.compute_dtype).clone()
        hessian = accumulator.hessian.to(weight.device)
        accumulator.hessian = None  # H is modified in place and is large: release it
        dead = obs.prepare(weight, hessian, self.percdamp)
        return weight, hessian, dead

    @staticmethod
    def _write_back(linear: torch.nn.Linear, weight: torch.Tensor) -> None:
        with torch.no_grad():
            linear.weight.copy_(weight.to(linear.weight.dtype))

    def prune_attention(self, ctx: LayerContext, stats: dict) -> None:
        units = ctx.units
        count = ctx.target.attn_units
        o_proj = ctx.linear("o")
        weight, hessian, dead = self._weight_and_hessian(o_proj, stats["o.in"], "o_proj")
        before = o_proj.weight.detach().clone() if self.regression else None
        unit_columns = torch.tensor(
            [units.columns_of(u) for u in range(units.n_units)], dtype=torch.long, device=weight.device
        )
        with obs.full_precision():
            result = obs.prune_units(
                weight,
                hessian,
                unit_columns,
                count,
                score=self.head_score,
                grouped=self.grouped_cholesky,
                compensate=self.compensate,
                candidates=lambda removed: units.allowed(removed, count),
            )
        self._write_back(o_proj, weight)
        for scores, unit in zip(result.scores, result.removed):
            ctx.record_decision("attn", scores, [unit])
        ctx.remove_attention_units(sorted(result.removed))
        removed_columns = [c for u in result.removed for c in units.columns_of(u)]
        self._fit(ctx, "o", stats["o.in"], before, weight, removed_columns)
        # OBS errors are in units of H: the layer's loss rise is (N_seq/2)·error.
        ctx.info["attn_removal_order"] = result.removed
        ctx.info["attn_obs_error"] = sum(result.errors)
        ctx.info["attn_dead_columns"] = dead

    def prune_ffn(self, ctx: LayerContext, stats: dict) -> None:
        down_proj = ctx.linear("down")
        weight, hessian, dead = self._weight_and_hessian(down_proj, stats["down.in"], "down_proj")
        before = down_proj.weight.detach().clone() if self.regression else None
        sizes = obs.group_sizes(
            ctx.target.ffn_channels, self.max_group, self.min_group, self.dynamic_group, self.fixed_group
        )
        with obs.full_precision():
            result = obs.prune_columns(weight, hessian, sizes, compensate=self.compensate)
        self._write_back(down_proj, weight)
        start = 0
        for scores, size in zip(result.scores, result.group_sizes):
            ctx.record_decision("ffn", scores, result.removed[start : start + size])
            start += size
        ctx.remove_channels(sorted(result.removed))
        self._fit(ctx, "down", stats["down.in"], before, weight, result.removed)
        ctx.info["ffn_group_sizes"] = result.group_sizes
        ctx.info["ffn_obs_error"] = sum(result.errors)
        ctx.info["ffn_dead_columns"] = dead
