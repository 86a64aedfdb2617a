"""SlimLLM's layer-ratio schedule `cosine_softmax` (§4.4; DESIGN §5), data dependent.

Once, on the dense model, layer by layer: sᵢ = mean over all calibration tokens of
cos(layer input, layer output) — high sᵢ means the layer barely changes the hidden state
(redundant). The N_p most redundant layers (highest sᵢ; N_p = round(n_pruned_frac·L),
layers in `skip` never chosen) get rᵢ = P·N_p·softmax(α·s)ᵢ with the softmax over the
selected layers only, so Σrᵢ = P·N_p; the others stay dense (ratio 0). No clamp: a layer
at rᵢ ≥ 1 is an error. P is given (`p`, the paper's recipe) or, when null, solved so the
planned share of decoder parameters removed hits the target ratio.

The authors' code picks the dense layers by lowest sᵢ (followed here); the paper's text
instead skips the first and last layers: `skip=[0, L-1]` gives that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from slimexp.errors import SlimexpError
from slimexp.pruning.component import Component
from slimexp.pruning.engine import LayerwiseEngine
from slimexp.pruning.plan import plan_layers, planned_ratio
from slimexp.pruning.units import LayerGeometry


@dataclass
class CosineSoftmax(Component):
    name = "cosine_softmax"
    # The pipeline cannot call `layer_ratios(ratio, n_layers)`: it needs the similarities.
    data_dependent = True
    alpha: float = 10.0
    n_pruned_frac: float = 26 / 32
    p: float | None = None
    skip: list[int] = field(default_factory=list)
    last: dict = field(default_factory=dict, init=False, repr=False)  # what the latest allocation found

    def __post_init__(self):
        super().__post_init__()
        if not math.isfinite(float(self.alpha)):
            raise SlimexpError(f"alpha must be a finite number, got {self.alpha}")
        if not 0.0 < float(self.n_pruned_frac) <= 1.0:
            raise SlimexpError(f"n_pruned_frac must be in (0, 1], got {self.n_pruned_frac}")
        if self.p is not None and not float(self.p) > 0.0:
            raise SlimexpError(f"p must be positive or null (solve for the target), got {self.p}")
        self.alpha = float(self.alpha)
        self.n_pruned_frac = float(self.n_pruned_frac)
        self.p = None if self.p is None else float(self.p)
        self.skip = sorted(int(i) for i in (self.skip or ()))

    def facts(self) -> dict:
        return dict(self.last)

    def layer_ratios(self, ratio: float, n_layers: int) -> list[float]:
        raise SlimexpError(
            "schedule cosine_softmax needs layer similarities from calibration data: "
            "use layer_similarities(...) then ratios_from_similarities(...)"
        )

    # ---------------------------------------------------------------- similarities

    @torch.no_grad()
    def layer_similarities(self, model, adapter, calibration: torch.Tensor, batch_size: int, device) -> list[float]:
        """sᵢ = mean over every calibration token of cos(input of layer i, its output), on
        the dense model, one layer on the device at a time (the engine's input capture, so
        each layer runs with its own mask and rotary embeddings)."""
        engine = LayerwiseEngine(model, adapter, calibration, batch_size, device)
        engine.capture_inputs()
        similarities = []
        for layer in adapter.layers(model):
            home = next(layer.parameters()).device
            layer.to(engine.device)
            before = engine.inputs
            engine.forward_layer(layer)
            total, count = 0.0, 0
            for x, y in zip(before, engine.inputs):
                cos = F.cosine_similarity(x.float(), y.float(), dim=-1)
                total += float(cos.double().sum())
                count += cos.numel()
            similarities.append(total / count)
            layer.to(home)
        engine.release()
        return similarities

    # ---------------------------------------------------------------- allocation

    def pruned_layers(self, similarities: Sequence[float]) -> list[int]:
        """The N_p layers with the highest similarity, outside `skip` (ties: lower index)."""
        n_layers = len(similarities)
        bad = [i for i in self.skip if not 0 <= i < n_layers]
        if bad:
            raise SlimexpError(f"cosine_softmax: skip lists layers {bad} outside 0..{n_layers - 1}")
        candidates = [i for i in range(n_layers) if i not in set(self.skip)]
        n_pruned = min(round(self.n_pruned_frac * n_layers), len(candidates))
        return sorted(sorted(candidates, key=lambda i: (-similarities[i], i))[:n_pruned])

    def _shares(self, similarities: Sequence[float], selected: list[int]) -> np.ndarray:
        """N_p·softmax(α·s) over the selected layers, 0 elsewhere: rᵢ = P × this."""
        shares = np.zeros(len(similarities))
        if selected:
            logits = self.alpha * np.asarray([similarities[i] for i in selected], dtype=np.float64)
            weights = np.exp(logits - logits.max())
            shares[selected] = len(selected) * weights / weights.sum()
        return shares

    def ratios_from_similarities(
        self,
        similarities: Sequence[float],
        target_ratio: float,
        geometries: Sequence[LayerGeometry],
        attn_unit: str,
        rounding: str,
        absorb_rounding: bool,
    ) -> list[float]:
        if len(similarities) != len(geometries):
            raise SlimexpError(f"cosine_softmax: {len(similarities)} similarities for {len(geometries)} layers")
        selected = self.pruned_layers(similarities)
        shares = self._shares(similarities, selected)

        def planned(p: float) -> float:
            targets = plan_layers(list(geometries), (p * shares).tolist(), attn_unit, rounding, absorb_rounding)
            return planned_ratio(list(geometries), targets, attn_unit)

        p = self.p if self.p is not None else self._solve(planned, shares, float(target_ratio))
        ratios = p * shares
        if (ratios >= 1.0).any():
            worst = int(np.argmax(ratios))
            raise SlimexpError(
                f"cosine_softmax gives layer {worst} a ratio of {ratios[worst]:.3f} ≥ 1 "
                f"(P={p:.4f}, N_p={len(selected)}, alpha={self.alpha}); lower p or alpha, or raise n_pruned_frac"
            )
        self.last = {
            "similarities": [round(float(s), 6) for s in similarities],
            "pruned_layers": selected,
            "p_used": p,
            "p_solved": self.p is None,
            "planned_ratio": planned(p),
        }
        return [float(r) for r in ratios]

    @staticmethod
    def _solve(planned, shares: np.ndarray, target: float) -> float:
        """P whose planned ratio is nearest the target. The planned ratio is a
        non-decreasing step function of P (whole heads and channels): bisect for the
        step that crosses the target, then take the nearer side of it."""
        if not 0.0 <= target < 1.0:
            raise SlimexpError(f"cosine_softmax: target ratio must be in [0, 1), got {target}")
        if target == 0.0 or shares.max() == 0.0:
            if target > 0.0:
                raise SlimexpError("cosine_softmax: no layer is selected for pruning (n_pruned_frac / skip)")
            return 0.0
        p_max = (1.0 - 1e-9) / shares.max()  # beyond this a layer would reach ratio 1
        if planned(p_max) < target:
            raise SlimexpError(
                f"cosine_softmax cannot reach ratio {target} (at most {planned(p_max):.3f} before a layer "
                "is pruned entirely): lower alpha or raise n_pruned_frac"
            )
        low, high = 0.0, p_max  # planned(low) < target ≤ planned(high)
        for _ in range(200):
            if high - low <= 1e-12 * max(1.0, high):
                break
            middle = 0.5 * (low + high)
            if planned(middle) < target:
                low = middle
            else:
                high = middle
        return low if target - planned(low) < planned(high) - target else high
