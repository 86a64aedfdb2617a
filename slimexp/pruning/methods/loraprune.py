"""LoRAPrune (Zhang et al., ACL Findings 2024, arXiv 2305.18403): structured pruning guided
by the gradients of LoRA adapters, done progressively while the adapters train.

Spec (read from the authors' code, aim-uofa/LoRAPrune @4da5272; `utils.py`, `trainer.py`):
- Adapters: ΔW = s·B·A (A: r × d_in, B: d_out × r, s = lora_alpha / r) on q, k, v, o, gate,
  up, down of every decoder layer (their script's targets), A Kaiming-uniform, B zero,
  dropout on the adapter input. Only A and B require grad; the frozen weights never get one.
- Score of one weight matrix after each optimiser step's backward (gradients clipped at
  `max_grad_norm` first, as the trainer does): Ĝ = (∂L/∂B)·A + B·(∂L/∂A) − (∂L/∂B)·(∂L/∂A)
  (utils.py:66), element importance I = |Ĝ ⊙ (W + s·B·A)| (utils.py:77). Rows (q, k, v,
  gate, up) or columns (o, down) are summed, head_dim of them per head, and each matrix's
  vector is divided by its L2 norm (+1e-8) (utils.py:80-86). A KV-group unit sums the q and
  o scores of its query heads and the k and v scores of its KV head; a `q_head` unit its q
  and o scores; a channel gate + up + down. Moving average S ← λ·S + (1−λ)·S_step, λ = 0.9,
  S starting at 0, a step with a NaN skipped (utils.py:53-57).
- Schedule (utils.py:171-188): T optimiser steps; the fraction of the final cut is
  `init_fraction` for t ≤ w·T, then f = 1 − (1 − init)·(1 − (t − w·T)/(T − (w+c)·T))³, and 1
  once t > T − c·T (w, c = warmup_iters, cooldown_iters = 0.1). Every `prune_freq` steps
  (10) with 0 < f < 1 each pruned layer masks the ⌊f·N⌋ units and channels of lowest S (q_head:
  ⌊f·N/n_kv⌋ per KV group), masked ones first, so a masked unit stays masked (utils.py:157-160).
- Counts: N per layer = the engine's plan (`LayerTarget.attn_units`, `ffn_channels`), so
  the ratio is the other methods'. Masks zero the o_proj / down_proj input of masked heads /
  channels during training; the engine then cuts exactly the masked units (their score −1).
- At the end (`adapters`): `merge` adds s·B·A into every weight before the cut (the authors'
  evaluation merges the pruning-time LoRA: inference.py loads it, utils.py:89-105 merges), or
  `discard` drops it. SlimLLM Table 1's LoRAPrune "w/o tune" row is most plausibly `merge`:
  the adapters are part of LoRAPrune's pruning itself, and "w/ tune" adds a recovery run.
Deliberate differences from the authors' code: (1) their last pruning step happens only while
f < 1 (trainer.py:339 `ratio < self.ratio`), so the target is never quite reached; we cut the
full N when f first reaches 1 (or after the last step); (2) per-layer counts come from the
plan, not ⌊ratio·n⌋ per layer: their first 10% of layers and the last stay dense
(utils.py:20-26) through the recipe's layer_range, the others at the ratio that hits the target;
(3) masks act on o_proj/down_proj inputs instead of q/k/v/gate/up outputs (lora.py:547):
the same forward for MHA, KV groups and SwiGLU, and also right for `q_head` units, whose
q-masked head would still pass V through a uniform softmax; (4) GQA heads are grouped per KV
group (their NUM_ATTENTION_HEADS=32 reshape assumes MHA, utils.py:9); (5) training data is
the calibration windows (plain causal-LM loss), not prompt-formatted instructions; (6) the
warmup/cooldown need no fp16 loss scaling; we train in the model's dtype with fp32 adapters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from slimexp.errors import SlimexpError
from slimexp.pruning import surgery
from slimexp.pruning.component import check_range
from slimexp.pruning.scoring import ScoreMethod
from slimexp.pruning.units import AttentionUnits

ROLES = ("q", "k", "v", "o", "gate", "up", "down")
COLUMNS = ("o", "down")  # their score is per input column; the others per output row


def lora_gradient(a, b, grad_a, grad_b) -> torch.Tensor:
    """The authors' estimate of ∂L/∂W from the adapter: Ĝ = G_B·A + B·G_A − G_B·G_A."""
    return torch.cat([grad_b, b, -grad_b], 1) @ torch.cat([a, grad_a, grad_a], 0)  # one matmul of rank 3r


def element_importance(weight, a, b, grad_a, grad_b, scaling: float) -> torch.Tensor:
    """|Ĝ ⊙ (W + s·B·A)| for every element of W (d_out × d_in)."""
    grad = lora_gradient(a, b, grad_a, grad_b)
    return (grad * (weight.float() + scaling * (b @ a))).abs()


def importance_per_index(weight, a, b, grad_a, grad_b, scaling: float, role: str, rows: int = 1024) -> torch.Tensor:
    """`element_importance` summed over each row (o, down: each column), `rows` rows at a
    time: row i of Ĝ and of W + s·B·A needs only row i of B and ∂L/∂B, so the full-size
    matrices never exist at once (at LLaMA-7B's FFN, three of them are 0.5 GB)."""
    blocks = [
        element_importance(weight[i : i + rows], a, b[i : i + rows], grad_a, grad_b[i : i + rows], scaling)
        for i in range(0, weight.shape[0], rows)
    ]
    if role in COLUMNS:
        return torch.stack([block.sum(0) for block in blocks]).sum(0)
    return torch.cat([block.sum(1) for block in blocks])


def group_scores(per_index: torch.Tensor, width: int) -> torch.Tensor:
    """Sum the per-row (or per-column) importances in blocks of `width`, divided by the
    vector's norm."""
    scores = per_index.view(-1, width).sum(1)
    return scores / (torch.linalg.norm(scores) + 1e-8)


def schedule_fraction(step: int, total: int, warmup: float, cooldown: float, init: float = 0.0) -> float:
    """The authors' cubic sparsity schedule, as a fraction of the final cut."""
    if step <= warmup * total:
        return init
    if step > total - cooldown * total:
        return 1.0
    span = total - (warmup + cooldown) * total
    remaining = 1 - (step - warmup * total) / span
    return 1.0 + (init - 1.0) * remaining**3


def scheduled_count(units: AttentionUnits | None, final: int, fraction: float) -> int:
    """⌊f·N⌋ (q_head on GQA: ⌊f·N/n_kv⌋ per KV group, so each step stays balanced)."""
    if units is not None and not units.per_kv_group:
        n_kv = units.geometry.n_kv_heads
        return int(final // n_kv * fraction) * n_kv
    return int(final * fraction)


@dataclass
class _Layer:
    """One pruned layer during training: its running scores and masks."""

    units: AttentionUnits
    attn_target: int
    ffn_target: int
    attn_score: torch.Tensor
    ffn_score: torch.Tensor
    attn_mask: torch.Tensor  # True: masked (to be cut)
    ffn_mask: torch.Tensor


@dataclass
class LoRAPrune(ScoreMethod):
    name = "loraprune"
    order = "whole_model"
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lr: float = 1e-4
    batch_size: int = 128
    micro_batch_size: int = 2
    epochs: int = 2
    max_steps: int | None = None
    prune_freq: int = 10
    warmup_iters: float = 0.1
    cooldown_iters: float = 0.1
    init_fraction: float = 0.0
    ema: float = 0.9
    max_grad_norm: float = 1.0
    adapters: str = "merge"
    seed: int = 0
    state: dict[int, _Layer] = field(default_factory=dict, init=False, repr=False)
    options = {"adapters": ("merge", "discard")}

    def __post_init__(self):
        super().__post_init__()
        for key in ("lora_r", "batch_size", "micro_batch_size", "epochs", "prune_freq"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise SlimexpError(f"method.{key} must be a positive integer, got {getattr(self, key)!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise SlimexpError(f"method.max_steps must be a positive integer or null, got {self.max_steps!r}")
        if not self.lr > 0 or not self.lora_alpha > 0:
            raise SlimexpError(f"method.lr and method.lora_alpha must be positive, got {self.lr}, {self.lora_alpha}")
        for key in ("lora_dropout", "ema", "init_fraction", "warmup_iters", "cooldown_iters"):
            check_range(f"method.{key}", float(getattr(self, key)), 0.0, 1.0)
        if self.warmup_iters + self.cooldown_iters >= 1:
            raise SlimexpError("method.warmup_iters + method.cooldown_iters must be below 1")

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.lora_r

    def total_steps(self, n_sequences: int) -> int:
        return self.max_steps or math.ceil(n_sequences / self.batch_size) * self.epochs

    def score_model(self, engine, targets, attn_unit):
        model, adapter = engine.model, engine.adapter
        layers = adapter.layers(model)
        self.state = {}
        for index, t in enumerate(targets):
            if t.attn_units or t.ffn_channels:
                self.state[index] = self._new_layer(layers[index], adapter, t, attn_unit)
        if not self.state:
            return
        loras = self._attach(layers, adapter)
        try:
            self._train(engine, loras)
        finally:
            for entry in loras.values():
                for handle in entry["handles"]:
                    handle.remove()
        if self.adapters == "merge":
            with torch.no_grad():
                for (index, role), entry in loras.items():
                    w = adapter.linear(layers[index], role).weight
                    w += (self.scaling * entry["B"] @ entry["A"]).to(w.device, w.dtype)

    @staticmethod
    def _new_layer(layer, adapter, target, attn_unit) -> _Layer:
        units = AttentionUnits(surgery.geometry(layer, adapter), attn_unit)
        d_ff = units.geometry.d_ff
        return _Layer(
            units, target.attn_units, target.ffn_channels, torch.zeros(units.n_units), torch.zeros(d_ff),
            torch.zeros(units.n_units, dtype=torch.bool), torch.zeros(d_ff, dtype=torch.bool),
        )  # fmt: skip

    def _attach(self, layers, adapter) -> dict:
        """Adapters on every projection of every layer; masks on o/down inputs of pruned layers."""
        torch.manual_seed(self.seed)
        loras = {}
        for index, layer in enumerate(layers):
            for role in ROLES:
                linear = adapter.linear(layer, role)
                a = torch.empty(self.lora_r, linear.in_features, device=linear.weight.device)
                torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
                b = torch.zeros(linear.out_features, self.lora_r, device=linear.weight.device)
                entry = {"A": a.requires_grad_(), "B": b.requires_grad_(), "training": [False]}
                entry["handles"] = [linear.register_forward_hook(self._hook(entry))]
                if index in self.state and role in COLUMNS:  # masked units' inputs are cut
                    entry["handles"].append(linear.register_forward_pre_hook(self._mask(self.state[index], role)))
                loras[(index, role)] = entry
        return loras

    def _hook(self, entry: dict):
        """Adds s·B·A·dropout(x) to the projection's output (x: the masked input for o/down)."""

        def hook(module, args, output):
            h = F.dropout(args[0].to(entry["A"].dtype), self.lora_dropout, training=entry["training"][0])
            return output + (self.scaling * F.linear(F.linear(h, entry["A"]), entry["B"])).to(output.dtype)

        return hook

    @staticmethod
    def _mask(st: _Layer, role: str):
        """Zero the o_proj / down_proj inputs of masked heads / channels: the cut, in effect."""

        def pre_hook(module, args):
            if role == "down":
                keep = ~st.ffn_mask
            else:
                keep = (~st.attn_mask).repeat_interleave(st.units.unit_size)
            return (args[0] * keep.to(args[0].device, args[0].dtype), *args[1:])

        return pre_hook

    def _train(self, engine, loras: dict) -> None:
        """The adapters' training loop with scoring and progressive masking (trainer.py)."""
        model, data = engine.model, engine.calibration
        params = [p for entry in loras.values() for p in (entry["A"], entry["B"])]
        was_trainable = {p: p.requires_grad for p in model.parameters()}
        home = next(model.parameters()).device
        total = self.total_steps(len(data))
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)
        decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total))
        order = self._batches(len(data), total)
        for entry in loras.values():
            entry["training"][0] = True
        try:
            for p in model.parameters():
                p.requires_grad_(False)
            model.to(engine.device)
            for p in params:
                p.data = p.data.to(engine.device)
            for step, batch in enumerate(tqdm(order, desc=f"{self.name} train", leave=False)):
                self._accumulate(model, data, batch, engine.device)
                torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
                self._update_scores(engine, loras)
                self._maybe_prune(step, total)
                optimizer.step()
                decay.step()
                optimizer.zero_grad(set_to_none=True)
            self._prune_to(1.0)  # the full cut, if the schedule's last steps never reached it
        finally:
            for entry in loras.values():
                entry["training"][0] = False
            for p, trainable in was_trainable.items():
                p.requires_grad_(trainable)
            model.to(home)

    def _batches(self, n: int, total: int) -> list[torch.Tensor]:
        """`total` batches of sequence indices, a fresh shuffle each epoch."""
        generator = torch.Generator().manual_seed(self.seed)
        batches: list[torch.Tensor] = []
        while len(batches) < total:
            perm = torch.randperm(n, generator=generator)
            batches += list(perm.split(self.batch_size))
        return batches[:total]

    def _accumulate(self, model, data, batch: torch.Tensor, device) -> None:
        for chunk in batch.split(self.micro_batch_size):
            ids = data[chunk].to(device)
            loss = model(ids, labels=ids, use_cache=False).loss
            (loss * len(chunk) / len(batch)).backward()

    @torch.no_grad()
    def _update_scores(self, engine, loras: dict) -> None:
        layers = engine.adapter.layers(engine.model)
        for index, st in self.state.items():
            g, per_head = st.units.geometry, {}
            for role in ROLES:
                entry, w = loras[(index, role)], engine.adapter.linear(layers[index], role).weight
                grads = (entry["A"].grad, entry["B"].grad)
                if grads[0] is None or grads[1] is None:
                    return
                per_index = importance_per_index(w, entry["A"], entry["B"], *grads, self.scaling, role)
                per_head[role] = group_scores(per_index, 1 if role in ("gate", "up", "down") else g.head_dim)
            attn = self._unit_scores(st.units, per_head)
            ffn = per_head["gate"] + per_head["up"] + per_head["down"]
            if torch.isnan(attn).any() or torch.isnan(ffn).any():
                continue  # the authors skip a step whose scores hold a NaN
            st.attn_score = self.ema * st.attn_score + (1 - self.ema) * attn.cpu()
            st.ffn_score = self.ema * st.ffn_score + (1 - self.ema) * ffn.cpu()

    @staticmethod
    def _unit_scores(units: AttentionUnits, s: dict[str, torch.Tensor]) -> torch.Tensor:
        heads = s["q"] + s["o"]
        if not units.per_kv_group:
            return heads
        return torch.stack([heads[units.heads_of(j)].sum() for j in range(units.n_units)]) + s["k"] + s["v"]

    def _maybe_prune(self, step: int, total: int) -> None:
        f = schedule_fraction(step, total, self.warmup_iters, self.cooldown_iters, self.init_fraction)
        if f >= 1.0 or (step % self.prune_freq == 0 and f > self.init_fraction):
            self._prune_to(f)

    def _prune_to(self, fraction: float) -> None:
        fraction = min(1.0, fraction)
        for st in self.state.values():
            n_attn = st.attn_target if fraction >= 1 else scheduled_count(st.units, st.attn_target, fraction)
            n_ffn = st.ffn_target if fraction >= 1 else scheduled_count(None, st.ffn_target, fraction)
            if n_attn > int(st.attn_mask.sum()):
                chosen = st.units.lowest(self._masked_first(st.attn_score, st.attn_mask), n_attn)
                st.attn_mask[chosen] = True
            if n_ffn > int(st.ffn_mask.sum()):
                chosen = torch.argsort(self._masked_first(st.ffn_score, st.ffn_mask), stable=True)[:n_ffn]
                st.ffn_mask[chosen] = True

    @staticmethod
    def _masked_first(score: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, torch.full_like(score, -1.0), score)

    def unit_scores(self, ctx, stats):
        st = self.state[ctx.index]
        return self._masked_first(st.attn_score, st.attn_mask)

    def channel_scores(self, ctx, stats):
        st = self.state[ctx.index]
        return self._masked_first(st.ffn_score, st.ffn_mask)
