"""One call that prunes a model: schedule → plan → method → layer-wise engine.

    result = prune(model, method=SlimGPT(), schedule=LogIncrease(), ratio=0.2,
                   calibration=input_ids, settings=PruneSettings(attn_unit="kv_group"))

The pipeline, the benchmarks and the tests all prune through it; `slimexp.prune` wraps
it for notebooks (method and schedule by name, calibration drawn from a data set).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from slimexp.errors import SlimexpError
from slimexp.models.adapters import adapter_for
from slimexp.pruning import surgery
from slimexp.pruning.engine import LayerwiseEngine, PruningMethod
from slimexp.pruning.plan import plan_layers, planned_ratio
from slimexp.pruning.schedules import Uniform
from slimexp.pruning.units import ATTN_UNIT_POLICIES


@dataclass(frozen=True)
class PruneSettings:
    """How a ratio becomes counts: the attention unit, the rounding of counts, and whether
    FFN channels absorb each layer's head rounding (so the achieved ratio hits the target)."""

    attn_unit: str = "kv_group"  # kv_group | q_head
    rounding: str = "round"  # round (SlimGPT, SlimLLM) | floor (FLAP-repo baselines)
    absorb_rounding: bool = True

    def __post_init__(self):
        if self.attn_unit not in ATTN_UNIT_POLICIES:
            raise SlimexpError(f"attn_unit must be one of {ATTN_UNIT_POLICIES}, got {self.attn_unit!r}")
        if self.rounding not in ("round", "floor"):
            raise SlimexpError(f"rounding must be 'round' or 'floor', got {self.rounding!r}")


@dataclass
class PruneResult:
    """What a pruning call did: the model (pruned in place), each layer's counts, widths
    and method notes, the plan's ratio, the achieved ratio of decoder parameters, the
    settings of method and schedule, and the seconds of each phase."""

    model: nn.Module
    layers: list[dict[str, Any]]
    planned_ratio: float
    achieved_ratio: float
    method: dict[str, Any]
    schedule: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    # Per layer: {"layer", "attn": removed units, "ffn": removed channels (dense indices),
    # "decisions": each decision's scores, removed and threshold}. Not part of run records.
    selections: list[dict[str, Any]] = field(default_factory=list)


def prune(
    model: nn.Module,
    *,
    method: PruningMethod,
    ratio: float,
    schedule=None,
    calibration: torch.Tensor | None = None,
    settings: PruneSettings = PruneSettings(),
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    on_layer: Callable[[int, str], None] | None = None,
) -> PruneResult:
    """Prune `model` in place by `ratio` of its decoder parameters. `calibration` holds
    token ids (n_samples × seqlen) for the methods and schedules that read activations.
    `on_layer(index, "start" | "end")` is called around each layer's work (timing, memory)."""
    if not 0 <= ratio < 1:
        raise SlimexpError(f"ratio must be in [0, 1), got {ratio}")
    adapter = adapter_for(model)
    schedule = schedule if schedule is not None else Uniform()
    layers = adapter.layers(model)
    geometries = [surgery.geometry(layer, adapter) for layer in layers]
    dense_params = surgery.decoder_params(model, adapter)
    data_dependent = bool(getattr(schedule, "data_dependent", False))
    if (method.needs_calibration or data_dependent) and calibration is None:
        needs = method.name if method.needs_calibration else f"schedule {schedule.name}"
        raise SlimexpError(f"{needs} needs calibration data: pass calibration (token ids, n_samples × seqlen)")
    seconds = {}
    start = time.perf_counter()
    if data_dependent:
        similarities = schedule.layer_similarities(model, adapter, calibration, batch_size, device)
        ratios = schedule.ratios_from_similarities(
            similarities, ratio, geometries, settings.attn_unit, settings.rounding, settings.absorb_rounding
        )
        seconds["schedule"] = time.perf_counter() - start
    else:
        ratios = schedule.layer_ratios(ratio, len(geometries))
    targets = plan_layers(geometries, ratios, settings.attn_unit, settings.rounding, settings.absorb_rounding)
    targets = method.plan(targets, geometries, settings.attn_unit)
    engine = LayerwiseEngine(model, adapter, calibration, batch_size, device, on_layer)
    start = time.perf_counter()
    infos = engine.run(method, targets, settings.attn_unit)
    seconds["prune"] = time.perf_counter() - start
    return PruneResult(
        model=model,
        layers=infos,
        # From the counts actually removed: FLAP's global pool allocates its own.
        planned_ratio=planned_ratio(geometries, engine.applied_targets, settings.attn_unit),
        achieved_ratio=1 - surgery.decoder_params(model, adapter) / dense_params,
        method=method.describe(),
        schedule=schedule.describe(),
        notes=list(engine.notes),
        seconds=seconds,
        selections=engine.selections,
    )
