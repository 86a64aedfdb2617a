"""Layer-wise pruning engine (SparseGPT/Wanda style).

Capture the inputs of layer 0 for the calibration batch, then for each layer in order:
accumulate the statistics the method asks for, let it prune, and run the pruned layer to
produce the next layer's inputs. Only one layer and its activations sit on the compute
device (except in LLM-Pruner's `whole_model` scoring, whose backward pass runs the whole
model there); statistics are accumulated in float32.

Each layer runs with the keyword arguments the model itself passes that layer (mask,
rotary embeddings): Gemma-3 mixes sliding-window layers with full-attention layers of
another RoPE base, so layer 0's arguments are wrong for the others. They are captured in
one pass of the model per calibration batch with every layer replaced by a stand-in that
records its arguments and runs nothing; layers of one kind share the same tensors.

Orders (`PruningMethod.order`):
- `sequential` (SlimGPT, SlimLLM): dense pass → prune attention → pass with attention
  pruned → prune FFN → pass for the next layer's inputs.
- `dense_pass` (wanda_sp): one dense pass feeds both modules' statistics; prune both.
- `global` (FLAP): score every layer on the dense model first (one pass per layer feeds
  both modules' statistics, nothing is cut), let the method allocate units across all
  layers (`GlobalMethod.allocate`), then cut.
- `whole_model` (LLM-Pruner): the method scores the whole model once before any layer is
  cut (`score_model`, e.g. from a backward pass); then layers are cut from those scores.
- `weights_only` (magnitude, random): no calibration data at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from slimexp.models.adapters import ArchitectureAdapter
from slimexp.pruning import surgery
from slimexp.pruning.component import Component
from slimexp.pruning.plan import LayerTarget
from slimexp.pruning.units import AttentionUnits

log = logging.getLogger(__name__)

ROLE_MODULES = ("q", "k", "v", "o", "gate", "up", "down", "attn", "mlp", "layer")


class Accumulator(Protocol):
    def add_batch(self, x: torch.Tensor) -> None: ...


@dataclass
class LayerContext:
    """What a method sees of the layer it prunes, and the surgery it may apply."""

    index: int
    layer: nn.Module
    adapter: ArchitectureAdapter
    target: LayerTarget
    attn_unit: str
    n_sequences: int
    info: dict[str, Any] = field(default_factory=dict)
    # What was removed (indices in the dense layer) and the scores each decision chose from:
    # kept out of `info` (and run records), read by comparisons across devices.
    selection: dict[str, Any] = field(default_factory=lambda: {"attn": [], "ffn": [], "decisions": []})

    @property
    def geometry(self):
        return surgery.geometry(self.layer, self.adapter)

    @property
    def units(self) -> AttentionUnits:
        return AttentionUnits(self.geometry, self.attn_unit)

    def linear(self, role: str) -> nn.Linear:
        return self.adapter.linear(self.layer, role)

    def remove_attention_units(self, units: list[int]) -> None:
        q_heads, kv_heads = self.units.removal(units)
        surgery.remove_heads(self.layer, self.adapter, q_heads, kv_heads)
        self.info["removed_units"] = sorted(int(u) for u in units)
        self.selection["attn"] = self.info["removed_units"]

    def remove_channels(self, channels: list[int]) -> None:
        surgery.remove_channels(self.layer, self.adapter, channels)
        self.info["removed_channels"] = len(channels)
        self.selection["ffn"] = sorted(int(c) for c in channels)

    def record_decision(self, module: str, scores: torch.Tensor, removed, threshold: float | None = None) -> None:
        """Keep one decision of the method: the scores it chose from (lower goes; +inf for
        a unit that could not be chosen), what it removed, and its cut-off when it has one
        (FLAP's global threshold). One call per greedy step."""
        self.selection["decisions"].append(
            {
                "module": module,
                "scores": scores.detach().double().cpu(),
                "removed": sorted(int(i) for i in removed),
                "threshold": None if threshold is None else float(threshold),
            }
        )

    def add_output_bias(self, role: str, bias: torch.Tensor) -> None:
        surgery.add_output_bias(self.layer, self.adapter, role, bias)


ORDERS = ("sequential", "dense_pass", "global", "whole_model", "weights_only")


@dataclass
class PruningMethod(Component):
    """Base class of a pruning method over the engine: override what the method needs.
    Subclasses are dataclasses whose fields are the method's settings (`method.*`)."""

    name = "base"
    order = "sequential"
    # Whether attention is cut by removing units (LoRAP factors its projections instead).
    removes_attention_units = True

    @property
    def needs_calibration(self) -> bool:
        return self.order != "weights_only"

    @property
    def needs_layer_inputs(self) -> bool:
        """Whether the engine propagates calibration activations through the layers."""
        return self.order in ("sequential", "dense_pass", "global")

    def plan(self, targets: list[LayerTarget], geometries: list, attn_unit: str) -> list[LayerTarget]:
        """The per-layer counts this method will use; a method with its own counting rule
        (LLM-Pruner's) recomputes them from each target's ratio."""
        return targets

    def score_model(self, engine: LayerwiseEngine, targets: list[LayerTarget], attn_unit: str) -> None:
        """Order `whole_model`: score every layer before any is cut."""
        raise NotImplementedError

    def prunes_attention(self, ctx: LayerContext) -> bool:
        """Whether this layer's attention is cut (by default: the plan removes units from it;
        LoRAP factors q/k/v/o instead and removes none)."""
        return ctx.target.attn_units > 0

    def prunes_ffn(self, ctx: LayerContext) -> bool:
        return ctx.target.ffn_channels > 0

    def attention_statistics(self, ctx: LayerContext) -> dict[str, Accumulator]:
        return {}

    def ffn_statistics(self, ctx: LayerContext) -> dict[str, Accumulator]:
        return {}

    def prune_attention(self, ctx: LayerContext, stats: dict[str, Accumulator]) -> None:
        raise NotImplementedError

    def prune_ffn(self, ctx: LayerContext, stats: dict[str, Accumulator]) -> None:
        raise NotImplementedError


@dataclass
class GlobalMethod(PruningMethod):
    """Order `global`: statistics of every layer from the dense model, one allocation
    across layers, then the cut."""

    order = "global"

    def score_layer(self, ctx: LayerContext, stats: dict[str, Accumulator]) -> None:
        raise NotImplementedError

    def allocate(self, contexts: list[LayerContext]) -> list[tuple[list[int], list[int]]]:
        """(attention units, FFN channels) to remove in each layer."""
        raise NotImplementedError

    def cut_layer(self, ctx: LayerContext, units: list[int], channels: list[int]) -> None:
        ctx.remove_attention_units(units)
        ctx.remove_channels(channels)


def _role_module(layer: nn.Module, adapter: ArchitectureAdapter, module: str) -> nn.Module:
    if module == "layer":
        return layer
    if module == "attn":
        return adapter.attn(layer)
    if module == "mlp":
        return adapter.ffn(layer)
    return adapter.linear(layer, module)


def _feed_input(accumulator: Accumulator, fed: Callable[[], None]):
    """A pre-hook giving the accumulator the module's input, in float32, then calling `fed`."""

    def hook(module, args, kwargs):
        accumulator.add_batch((args[0] if args else kwargs["hidden_states"]).float())
        fed()

    return hook


def _feed_output(accumulator: Accumulator, fed: Callable[[], None]):
    """A hook giving the accumulator the module's output, in float32, then calling `fed`."""

    def hook(module, args, output):
        accumulator.add_batch(_first_tensor(output).float())
        fed()

    return hook


def _first_tensor(value):
    return value[0] if isinstance(value, (tuple, list)) else value


# Not layer arguments: the hidden state travels separately, and no cache is kept.
_NOT_LAYER_KWARGS = ("hidden_states", "past_key_values", "cache", "use_cache")


class _Stop(Exception):
    pass


class _StandIn(nn.Module):
    """Takes a decoder layer's place during the capture: records the arguments the model
    passes that layer and hands the hidden state on untouched; the last one stops the model."""

    def __init__(self, index: int, record: dict, last: bool):
        super().__init__()
        self.index, self.record, self.last = index, record, last

    def forward(self, *args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if self.index == 0:
            self.record["x"] = hidden
        self.record[self.index] = {k: v for k, v in kwargs.items() if k not in _NOT_LAYER_KWARGS}
        if self.last:
            raise _Stop
        return hidden


def attention_rounding_note(
    n_units: list[int], planned: list[LayerTarget], applied: list[LayerTarget], attn_unit: str
) -> str | None:
    """A note when some layer was meant to lose attention (ratio × units > 0) but the cut
    rounded to no unit in every layer and none was removed: e.g. Gemma-3's single KV head
    under `kv_group`, where a layer's attention is all or nothing."""
    meant = any(t.ratio * n > 0 for t, n in zip(planned, n_units))
    if not meant or any(t.attn_units for t in planned) or any(t.attn_units for t in applied):
        return None
    low, high = min(n_units), max(n_units)
    per_layer = f"{low}" if low == high else f"{low}-{high}"
    return (
        f"attn_unit={attn_unit}: the planned attention cut rounds to 0 units in every layer "
        f"({per_layer} per layer), so no attention was removed, only FFN channels; "
        "attn_unit=q_head removes single query heads"
    )


class LayerwiseEngine:
    # `collect` ends a batch's pass once every role is fed. bench/collect_speed.py sets it
    # False to time the full pass beside it (same statistics, bit for bit).
    stop_after_last_role = True

    def __init__(
        self,
        model: nn.Module,
        adapter: ArchitectureAdapter,
        calibration: torch.Tensor | None,
        batch_size: int,
        device: torch.device | str = "cpu",
        on_layer: Callable[[int, str], None] | None = None,
    ):
        self.model = model
        self.adapter = adapter
        self.calibration = calibration
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device)
        self.inputs: list[torch.Tensor] = []
        # layer_kwargs[i][b]: what the model passes layer i for calibration batch b.
        self.layer_kwargs: list[list[dict]] = []
        # The layer whose inputs `inputs` holds: forward_layer advances it.
        self.position = 0
        self.applied_targets: list[LayerTarget] = []
        self.notes: list[str] = []
        # Per layer: removed indices and the decisions' scores (LayerContext.selection).
        self.selections: list[dict] = []
        # Called as on_layer(index, "start" | "end") around each layer's work (twice per
        # layer for `global`: scoring, then the cut), e.g. to time it or read peak memory.
        self.on_layer = on_layer

    def _event(self, index: int, what: str) -> None:
        if self.on_layer is not None:
            self.on_layer(index, what)

    @property
    def n_sequences(self) -> int:
        return 0 if self.calibration is None else len(self.calibration)

    @torch.no_grad()
    def capture_inputs(self) -> None:
        """Run the model on each calibration batch with every decoder layer replaced by a
        stand-in: keep what layer 0 receives and each layer's own keyword arguments."""
        layers = self.adapter.layers(self.model)
        originals = list(layers)
        record: dict = {}
        stem = [m for name, m in self.model.named_modules() if name.endswith(("embed_tokens", "rotary_emb"))]
        for module in stem:
            module.to(self.device)
        self.inputs, self.layer_kwargs, self.position = [], [[] for _ in originals], 0
        try:
            for i in range(len(originals)):
                layers[i] = _StandIn(i, record, last=i + 1 == len(originals))
            for start in range(0, self.n_sequences, self.batch_size):
                batch = self.calibration[start : start + self.batch_size].to(self.device)
                record.clear()
                try:
                    self.model(batch, use_cache=False)
                except _Stop:
                    pass
                missing = [i for i in range(len(originals)) if i not in record]
                if missing:
                    raise RuntimeError(f"the model never called decoder layers {missing[:5]} during the capture")
                self.inputs.append(record["x"])
                for i, kwargs in enumerate(self.layer_kwargs):
                    kwargs.append(record[i])
        finally:
            for i, layer in enumerate(originals):
                layers[i] = layer

    def _check_position(self, layer: nn.Module) -> list[dict]:
        """The captured arguments of the layer whose inputs the engine holds."""
        layers = self.adapter.layers(self.model)
        if self.position >= len(self.layer_kwargs) or layers[self.position] is not layer:
            raise ValueError(f"the engine holds the inputs of layer {self.position}, not of this layer")
        return self.layer_kwargs[self.position]

    @torch.no_grad()
    def forward_layer(self, layer: nn.Module) -> None:
        """Run `layer` (the one whose inputs the engine holds) to get the next one's inputs."""
        all_kwargs = self._check_position(layer)
        self.inputs = [_first_tensor(layer(x, **kwargs)) for x, kwargs in zip(self.inputs, all_kwargs)]
        self.position += 1

    def release(self) -> None:
        self.inputs, self.layer_kwargs, self.position = [], [], 0

    @torch.no_grad()
    def collect(self, layer: nn.Module, *accumulator_groups: dict[str, Accumulator]) -> None:
        """One pass of `layer` over the calibration inputs, feeding each accumulator the
        float32 tensor at its role (`<module>.in` / `<module>.out`). Each batch's pass stops
        once every role has been fed: the rest of the layer (the FFN, when the statistics
        are the attention's) would change no statistic, and the output is not kept."""
        pairs = [pair for group in accumulator_groups for pair in group.items()]
        if not pairs:
            return
        all_kwargs = self._check_position(layer)
        fed: set[int] = set()  # which pairs this batch has fed (two groups may share a role)

        def feeder(index: int) -> Callable[[], None]:
            def mark() -> None:
                fed.add(index)
                if len(fed) == len(pairs) and self.stop_after_last_role:
                    raise _Stop

            return mark

        handles = []
        for index, (role, acc) in enumerate(pairs):
            module_name, _, side = role.partition(".")
            if module_name not in ROLE_MODULES or side not in ("in", "out"):
                raise ValueError(f"unknown statistics role {role!r}")
            module = _role_module(layer, self.adapter, module_name)
            if side == "in":
                handles.append(module.register_forward_pre_hook(_feed_input(acc, feeder(index)), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(_feed_output(acc, feeder(index))))
        try:
            for x, kwargs in zip(self.inputs, all_kwargs):
                fed.clear()
                try:
                    layer(x, **kwargs)
                except _Stop:
                    pass
        finally:
            for handle in handles:
                handle.remove()

    def run(self, method: PruningMethod, targets: list[LayerTarget], attn_unit: str) -> list[dict]:
        """Prune every layer in place; returns per-layer info (targets, widths, method notes).

        `self.applied_targets` holds the counts actually removed per layer (they differ
        from `targets` where the method allocates itself, as FLAP's global pool does)."""
        if method.order not in ORDERS:
            raise ValueError(f"unknown engine order {method.order!r}")
        if method.needs_calibration and self.calibration is None:
            raise ValueError(f"method {method.name} needs calibration data")
        layers = self.adapter.layers(self.model)
        n_units = [AttentionUnits(surgery.geometry(layer, self.adapter), attn_unit).n_units for layer in layers]
        if method.order == "global":
            infos = self._run_global(method, targets, attn_unit)
        else:
            infos = self._run_layerwise(method, targets, attn_unit)
        note = attention_rounding_note(n_units, targets, self.applied_targets, attn_unit)
        if note and method.removes_attention_units:
            log.warning(note)
            self.notes.append(note)
        return infos

    def _run_layerwise(self, method: PruningMethod, targets: list[LayerTarget], attn_unit: str) -> list[dict]:
        layers = self.adapter.layers(self.model)
        if method.order == "whole_model":
            method.score_model(self, targets, attn_unit)
        if method.needs_layer_inputs:
            self.capture_inputs()
        infos, self.applied_targets, self.selections = [], [], []
        iterator = tqdm(list(enumerate(layers)), desc=f"prune {method.name}", leave=False)
        for index, layer in iterator:
            self._event(index, "start")
            home = next(layer.parameters()).device
            layer.to(self.device)
            ctx = LayerContext(index, layer, self.adapter, targets[index], attn_unit, self.n_sequences)
            self._prune_layer(method, ctx)
            if method.needs_layer_inputs and index + 1 < len(layers):
                self.forward_layer(layer)
            layer.to(home)
            infos.append(self._layer_info(ctx, targets[index].ratio))
            self._event(index, "end")
        self.release()
        return infos

    def _layer_info(self, ctx: LayerContext, ratio: float) -> dict:
        removed = LayerTarget(
            ctx.index, ratio, len(ctx.info.get("removed_units", [])), int(ctx.info.get("removed_channels", 0))
        )
        self.applied_targets.append(removed)
        self.selections.append({"layer": ctx.index, **ctx.selection})
        return {**removed.as_dict(), **surgery.widths(ctx.layer, self.adapter), **ctx.info}

    def _run_global(self, method: GlobalMethod, targets: list[LayerTarget], attn_unit: str) -> list[dict]:
        layers = self.adapter.layers(self.model)
        self.capture_inputs()
        contexts = []
        for index, layer in tqdm(list(enumerate(layers)), desc=f"score {method.name}", leave=False):
            self._event(index, "start")
            home = next(layer.parameters()).device
            layer.to(self.device)
            ctx = LayerContext(index, layer, self.adapter, targets[index], attn_unit, self.n_sequences)
            stats = {**method.attention_statistics(ctx), **method.ffn_statistics(ctx)}
            self.collect(layer, stats)
            method.score_layer(ctx, stats)
            if index + 1 < len(layers):
                self.forward_layer(layer)
            layer.to(home)
            contexts.append(ctx)
            self._event(index, "end")
        self.release()
        decisions = method.allocate(contexts)
        infos, self.applied_targets, self.selections = [], [], []
        for ctx, (units, channels) in zip(contexts, decisions):
            self._event(ctx.index, "start")
            home = next(ctx.layer.parameters()).device
            dense_params = ctx.geometry.params
            ctx.layer.to(self.device)
            method.cut_layer(ctx, sorted(units), sorted(channels))
            ctx.layer.to(home)
            # The share of this layer's parameters the allocation removed (added biases count).
            ratio = 1 - ctx.geometry.params / dense_params
            infos.append(self._layer_info(ctx, ratio))
            self._event(ctx.index, "end")
        return infos

    def _prune_layer(self, method: PruningMethod, ctx: LayerContext) -> None:
        LAYER_STEPS[method.order](self, method, ctx)


# What one layer goes through, per order (`global` has its own three phases: _run_global).
def _cut_from_scores(engine: LayerwiseEngine, method: PruningMethod, ctx: LayerContext) -> None:
    """weights_only / whole_model: the scores need no pass of this layer."""
    if method.prunes_attention(ctx):
        method.prune_attention(ctx, {})
    if method.prunes_ffn(ctx):
        method.prune_ffn(ctx, {})


def _one_dense_pass(engine: LayerwiseEngine, method: PruningMethod, ctx: LayerContext) -> None:
    """dense_pass: one pass of the dense layer feeds both modules' statistics."""
    attn, ffn = method.prunes_attention(ctx), method.prunes_ffn(ctx)
    attn_stats = method.attention_statistics(ctx) if attn else {}
    ffn_stats = method.ffn_statistics(ctx) if ffn else {}
    engine.collect(ctx.layer, attn_stats, ffn_stats)
    if attn:
        method.prune_attention(ctx, attn_stats)
    if ffn:
        method.prune_ffn(ctx, ffn_stats)


def _attention_then_ffn(engine: LayerwiseEngine, method: PruningMethod, ctx: LayerContext) -> None:
    """sequential: the FFN's statistics are taken after the attention was pruned."""
    if method.prunes_attention(ctx):
        stats = method.attention_statistics(ctx)
        engine.collect(ctx.layer, stats)
        method.prune_attention(ctx, stats)
    if method.prunes_ffn(ctx):
        stats = method.ffn_statistics(ctx)
        engine.collect(ctx.layer, stats)
        method.prune_ffn(ctx, stats)


LAYER_STEPS = {
    "weights_only": _cut_from_scores,
    "whole_model": _cut_from_scores,
    "dense_pass": _one_dense_pass,
    "sequential": _attention_then_ffn,
}
