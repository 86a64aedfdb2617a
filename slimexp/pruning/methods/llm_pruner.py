"""LLM-Pruner (Ma et al., NeurIPS 2023; DESIGN §5), block-wise, one shot, no compensation.

The whole model is scored once before any cut (engine order `whole_model`): L is the
causal-LM loss with labels = inputs, the mean NLL over all shifted tokens of the
calibration batch, and G = ∂L/∂W. Element scores: `element1` |W⊙G| (the authors'
default), `element2` |W⊙G − ½W²⊙F| with F = (1/N)·Σ_n g_n² from each example's own
loss, `param_second` |W²⊙F|, `vector` |Σ W⊙G| per row/column. `l1`/`l2` are the
authors' MagnitudeImportance(p): |W|ᵖ with no root, no gradient and no calibration data
(their default reduction for it is `mean`: group_reduction=mean reproduces it). Each row
(q, k, v, gate, up) or column (o, down) is summed, the matrices of a dependency group are
reduced per index (`group_reduction`), and a head's score is the sum over its head_dim
indices. `first` takes the group's root as the authors' code does: gate for a channel,
q for an MHA head, k for a KV group of a GQA model (their llama3 path roots at k_proj),
q for a `q_head` unit (it has only q and o).

Memory: only the decoder projections of pruned layers require gradients. With the
calibration in one batch and a first-order score, each weight's gradient is reduced to
its row/column scores as soon as autograd has accumulated it, then freed, so at most one
weight's gradient exists at a time. Micro-batches (calib.batch_size < n) keep the
accumulated gradients until the last one; `element2`/`param_second` keep G and F per
weight (two buffers the size of the scored weights), as the authors' code does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from slimexp.pruning.plan import LayerTarget
from slimexp.pruning.scoring import ScoreMethod
from slimexp.pruning.units import AttentionUnits, LayerGeometry

IMPORTANCES = ("element1", "element2", "param_second", "vector", "l1", "l2")
MAGNITUDE_P = {"l1": 1, "l2": 2}  # weight-only importances: Σ|w|ᵖ, no gradient
REDUCTIONS = ("sum", "mean", "max", "prod", "first")
ROWS = ("q", "k", "v", "gate", "up")  # output rows are the unit's; o and down: input columns
ROLES = ("q", "k", "v", "o", "gate", "up", "down")


def element_scores(
    weight: torch.Tensor, grad: torch.Tensor | None, fisher: torch.Tensor | None, importance: str, dim: int
) -> torch.Tensor:
    """Per row (dim=1) or column (dim=0) importance of one weight matrix."""
    w = weight.detach().float()
    if importance in MAGNITUDE_P:
        return w.abs().pow(MAGNITUDE_P[importance]).sum(dim)
    g = grad.float()
    if importance == "element1":
        return (w * g).abs().sum(dim)
    if importance == "vector":
        return (w * g).sum(dim).abs()
    if importance == "element2":
        return (w * g - 0.5 * w.pow(2) * fisher).abs().sum(dim)
    return (w.pow(2) * fisher).abs().sum(dim)


def reduce_group(stacked: torch.Tensor, how: str) -> torch.Tensor:
    """Combine the matrices of a dependency group (dim 0) per index."""
    if how == "sum":
        return stacked.sum(0)
    if how == "mean":
        return stacked.mean(0)
    if how == "max":
        return stacked.max(0).values
    if how == "prod":
        return stacked.prod(0)
    return stacked[0]


def authors_counts(geometry: LayerGeometry, units: AttentionUnits, ratio: float) -> tuple[int, int]:
    """(units, channels) as the code counts them: channels = d_ff − ⌊d_ff·(1−r)⌋ and units
    = (n·hd − ⌊n·hd·(1−r)⌋) // hd over the heads of the unit's kind (KV heads for KV
    groups, query heads for q_head)."""
    if ratio <= 0:
        return 0, 0
    channels = geometry.d_ff - int(geometry.d_ff * (1 - ratio))
    hd = geometry.head_dim
    width = units.n_units * hd
    n_units = (width - int(width * (1 - ratio))) // hd
    return units.legal_count(n_units), channels


@dataclass
class LLMPruner(ScoreMethod):
    name = "llm_pruner"
    order = "whole_model"
    importance: str = "element1"
    group_reduction: str = "sum"
    counts: str = "plan"
    gqa_fold: str = "authors"
    row_scores: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict, init=False, repr=False)
    options = {
        "importance": IMPORTANCES,
        "group_reduction": REDUCTIONS,
        "counts": ("plan", "authors"),
        "gqa_fold": ("authors", "block"),
    }

    @property
    def second_order(self) -> bool:
        return self.importance in ("element2", "param_second")

    @property
    def needs_calibration(self) -> bool:
        # l1/l2 read only the weights; score_model still fills the row scores (no backward).
        return self.importance not in MAGNITUDE_P

    def plan(self, targets, geometries, attn_unit):
        if self.counts == "plan":
            return targets
        return [
            LayerTarget(t.layer, t.ratio, *authors_counts(g, AttentionUnits(g, attn_unit), t.ratio))
            for t, g in zip(targets, geometries)
        ]

    def score_model(self, engine, targets, attn_unit):
        model, adapter = engine.model, engine.adapter
        layers = adapter.layers(model)
        weights = {
            (index, role): adapter.linear(layers[index], role).weight
            for index, t in enumerate(targets)
            if t.attn_units or t.ffn_channels
            for role in ROLES
        }
        if not weights:
            return
        if self.importance in MAGNITUDE_P:
            with torch.no_grad():
                for key, w in weights.items():
                    self._store(key, w, None, None)
        else:
            self._score_gradients(engine, weights)

    def _score_gradients(self, engine, weights: dict[tuple[int, str], torch.Tensor]) -> None:
        """Row scores of `weights` from the calibration loss's gradients (Taylor importances)."""
        model = engine.model
        owner = {id(w): key for key, w in weights.items()}
        was_trainable = {p: p.requires_grad for p in model.parameters()}
        home = next(model.parameters()).device
        calibration = engine.calibration
        n = len(calibration)
        # Second-order scores need each example's own gradient: one example per backward.
        batch = 1 if self.second_order else min(engine.batch_size, n)
        starts = list(range(0, n, batch))
        buffers: dict[int, dict[str, torch.Tensor]] = {}
        state = {"last": False}

        def on_grad(param: torch.Tensor) -> None:
            key = owner[id(param)]
            if self.second_order:
                g = param.grad.float()  # g_n / n: this example's loss enters scaled by 1/n
                acc = buffers.setdefault(id(param), {"G": torch.zeros_like(g), "F": torch.zeros_like(g)})
                acc["G"] += g
                acc["F"] += g.pow(2) * n
                param.grad = None
            elif state["last"]:
                self._store(key, param, param.grad, None)
                param.grad = None

        for p in model.parameters():
            p.requires_grad_(False)
        handles = []
        try:
            for w in weights.values():
                w.requires_grad_(True)
                w.grad = None
                handles.append(w.register_post_accumulate_grad_hook(on_grad))
            model.to(engine.device)
            for i, start in enumerate(tqdm(starts, desc=f"{self.name} gradients", leave=False)):
                chunk = calibration[start : start + batch].to(engine.device)
                state["last"] = i == len(starts) - 1
                loss = model(chunk, labels=chunk, use_cache=False).loss
                # The batch loss is the mean over all examples' tokens; equal lengths make it
                # the chunk-size-weighted mean of the chunks' mean losses.
                (loss * len(chunk) / n).backward()
        finally:
            for handle in handles:
                handle.remove()
            for p, trainable in was_trainable.items():
                p.requires_grad_(trainable)
                p.grad = None
            model.to(home)
        for key, w in weights.items():
            if self.second_order:
                acc = buffers.pop(id(w))
                self._store(key, w, acc["G"], acc["F"])

    def _store(self, key: tuple[int, str], weight, grad, fisher) -> None:
        index, role = key
        scores = element_scores(weight, grad, fisher, self.importance, dim=1 if role in ROWS else 0)
        self.row_scores.setdefault(index, {})[role] = scores.cpu()

    def unit_scores(self, ctx, stats):
        s = self.row_scores[ctx.index]
        g, units = ctx.geometry, ctx.units
        hd = g.head_dim
        q, o = s["q"].view(g.n_heads, hd), s["o"].view(g.n_heads, hd)
        if not units.per_kv_group:  # a query head of a GQA model: its q rows and o columns
            return reduce_group(torch.stack([q, o]), self.group_reduction).sum(1)
        k, v = s["k"].view(g.n_kv_heads, hd), s["v"].view(g.n_kv_heads, hd)
        if self.group_reduction == "first":
            # The root: q_proj in the authors' MHA code, k_proj in their GQA (llama3) code.
            return (k if g.n_kv_heads < g.n_heads else q).sum(1)
        if self.gqa_fold == "authors":
            # The authors' llama3 code scores group j with query heads h ≡ j (mod n_kv)
            # while it removes heads j·n_rep … (j+1)·n_rep − 1.
            members = [list(range(j, g.n_heads, g.n_kv_heads)) for j in range(g.n_kv_heads)]
        else:
            members = [units.heads_of(j) for j in range(g.n_kv_heads)]
        q_group = torch.stack([q[m].sum(0) for m in members])
        o_group = torch.stack([o[m].sum(0) for m in members])
        return reduce_group(torch.stack([q_group, k, v, o_group]), self.group_reduction).sum(1)

    def channel_scores(self, ctx, stats):
        s = self.row_scores[ctx.index]
        return reduce_group(torch.stack([s["gate"], s["up"], s["down"]]), self.group_reduction)
