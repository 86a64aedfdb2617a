"""Per-layer pruning ratios. A schedule maps (target ratio, number of layers) to one ratio
per layer; methods with data-dependent allocation (SlimLLM's cosine_softmax, FLAP's
global pool) provide their own."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from slimexp.errors import SlimexpError
from slimexp.pruning.component import Component, check_range

log = logging.getLogger(__name__)


@dataclass
class Uniform(Component):
    name = "uniform"

    def layer_ratios(self, ratio: float, n_layers: int) -> list[float]:
        return [float(ratio)] * n_layers


@dataclass
class Ramp(Component):
    """rᵢ = r_min + (r_max − r_min)·fᵢ with a shape fᵢ in [0, 1] (0: r_min, 1: r_max).

    r_max given: the ratios follow from r_min and r_max alone (the papers' recipes) and
    the target ratio is only compared with their mean. r_max null: it is solved so the mean
    per-layer ratio equals the target (the mean is linear in r_max)."""

    name = "ramp"
    r_min: float = 0.0625
    r_max: float | None = None
    solved_r_max: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        super().__post_init__()
        self.r_min = float(self.r_min)
        self.r_max = None if self.r_max is None else float(self.r_max)
        check_range("r_min", self.r_min, 0, 1)
        if self.r_max is not None:
            check_range("r_max", self.r_max, self.r_min, 1)

    def facts(self) -> dict:
        return {"r_max_used": self.solved_r_max}

    def shape(self, n_layers: int) -> list[float]:
        raise NotImplementedError

    def _solve_r_max(self, ratio: float, mean_shape: float) -> float:
        if ratio < self.r_min:
            raise SlimexpError(
                f"schedule {self.name}: target ratio {ratio} is below r_min={self.r_min}; lower schedule.r_min"
            )
        r_max = self.r_min + (ratio - self.r_min) / mean_shape
        if r_max >= 1:
            raise SlimexpError(
                f"schedule {self.name}: reaching a mean ratio of {ratio} with r_min={self.r_min} needs "
                f"r_max={r_max:.4f} >= 1 in the last layers; raise schedule.r_min or lower the ratio"
            )
        return r_max

    def layer_ratios(self, ratio: float, n_layers: int) -> list[float]:
        if n_layers < 1:
            return []
        if ratio == 0:  # nothing to prune: no ramp either
            self.solved_r_max = 0.0
            return [0.0] * n_layers
        shape = self.shape(n_layers)
        if self.r_max is None:
            r_max = self._solve_r_max(float(ratio), sum(shape) / n_layers)
        else:
            r_max = self.r_max
        self.solved_r_max = r_max
        ratios = [self.r_min + (r_max - self.r_min) * f for f in shape]
        mean = sum(ratios) / n_layers
        if self.r_max is not None and abs(mean - ratio) > 0.005:
            log.warning(
                "schedule %s with r_min=%g, r_max=%g gives a mean layer ratio of %.4f, not prune.ratio=%g",
                self.name,
                self.r_min,
                self.r_max,
                mean,
                ratio,
            )
        return ratios


def _log_shape(n_layers: int) -> list[float]:
    # ln(1+i)/ln(n): the authors hard-code ln 32 for their 32 layers; ln(n) generalises it.
    if n_layers == 1:
        return [1.0]
    return [math.log(1 + i) / math.log(n_layers) for i in range(n_layers)]


def _linear_shape(n_layers: int) -> list[float]:
    if n_layers == 1:
        return [1.0]
    return [i / (n_layers - 1) for i in range(n_layers)]


@dataclass
class LogIncrease(Ramp):
    """SlimGPT's Incremental Pruning Ratio: rᵢ = r_min + (r_max − r_min)·ln(1+i)/ln(n);
    shallow layers are pruned least, since their errors grow through the layers above.
    Mean over 32 layers: r_min + 0.7354·(r_max − r_min)."""

    name = "log_increase"

    def shape(self, n_layers: int) -> list[float]:
        return _log_shape(n_layers)


@dataclass
class LinearIncrease(Ramp):
    """rᵢ from r_min (first layer) to r_max (last), linear in i."""

    name = "linear_increase"

    def shape(self, n_layers: int) -> list[float]:
        return _linear_shape(n_layers)


@dataclass
class LogDecrease(Ramp):
    """Mirror image of log_increase: the first layer gets r_max, the last r_min (same mean)."""

    name = "log_decrease"

    def shape(self, n_layers: int) -> list[float]:
        return _log_shape(n_layers)[::-1]


@dataclass
class LinearDecrease(Ramp):
    """Mirror image of linear_increase: r_max in the first layer down to r_min in the last."""

    name = "linear_decrease"

    def shape(self, n_layers: int) -> list[float]:
        return _linear_shape(n_layers)[::-1]


@dataclass
class SelectedLayers(Component):
    """Only the listed layers are pruned, each at `prune.ratio`; the rest stay dense
    (SlimGPT Figure 2 prunes layer 0 alone). Negative indices count from the last layer."""

    name = "selected_layers"
    layers: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self):
        super().__post_init__()
        self.layers = [int(i) for i in self.layers]
        if not self.layers:
            raise SlimexpError("layers must name at least one layer")

    def layer_ratios(self, ratio: float, n_layers: int) -> list[float]:
        chosen = set()
        for index in self.layers:
            if not -n_layers <= index < n_layers:
                raise SlimexpError(f"schedule selected_layers: layer {index} outside a model of {n_layers} layers")
            chosen.add(index % n_layers)
        return [float(ratio) if i in chosen else 0.0 for i in range(n_layers)]


@dataclass
class LayerRange(Component):
    """LLM-Pruner's recipe: only layers [start, end) are pruned (the authors: 4–29 of 32,
    each at 0.25, which removes 20.3% of LLaMA-7B's decoder), scaled to other depths as
    round(i·n / reference_layers). `layer_ratio` given: every pruned layer gets it and the
    model ratio follows (faithful); null: it is solved so the mean over all layers equals
    the target (target-ratio mode)."""

    name = "layer_range"
    start: int = 4
    end: int = 30
    reference_layers: int = 32
    layer_ratio: float | None = None
    used: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        super().__post_init__()
        self.start, self.end, self.reference_layers = int(self.start), int(self.end), int(self.reference_layers)
        self.layer_ratio = None if self.layer_ratio is None else float(self.layer_ratio)
        if not 0 <= self.start < self.end <= self.reference_layers:
            raise SlimexpError(
                f"layer_range needs 0 <= start < end <= reference_layers, got "
                f"{self.start}, {self.end}, {self.reference_layers}"
            )

    def facts(self) -> dict:
        return dict(self.used)

    def layer_bounds(self, n_layers: int) -> tuple[int, int]:
        scale = n_layers / self.reference_layers
        return int(round(self.start * scale)), int(round(self.end * scale))

    def layer_ratios(self, ratio: float, n_layers: int) -> list[float]:
        start, end = self.layer_bounds(n_layers)
        inside = end - start
        if inside < 1:
            raise SlimexpError(f"schedule layer_range: no layer of {n_layers} falls in [{start}, {end})")
        r = self.layer_ratio if self.layer_ratio is not None else ratio * n_layers / inside
        if not 0 <= r < 1:
            raise SlimexpError(
                f"schedule layer_range: a mean ratio of {ratio} over layers {start}–{end - 1} of {n_layers} needs "
                f"{r:.4f} per layer; widen the range or lower the ratio"
            )
        mean = r * inside / n_layers
        if self.layer_ratio is not None and abs(mean - ratio) > 0.005:
            log.warning("schedule layer_range gives a mean layer ratio of %.4f, not prune.ratio=%g", mean, ratio)
        self.used = {"first_layer": start, "last_layer": end - 1, "layer_ratio_used": r}
        return [r if start <= i < end else 0.0 for i in range(n_layers)]
