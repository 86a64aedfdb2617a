"""Where a whole model goes for the phases that run it whole (perplexity, zero-shot, the
latency timing): onto the device when it fits, else spread over the GPU and the host by
accelerate's device map, decoder layers kept whole, instead of an out-of-memory error
after pruning has finished. Pruning itself never needs this: the layer-wise engine holds
one decoder layer on the device at a time.

What fits is decided on the device's free memory minus a headroom for activations, the KV
cache and the allocator; the record says which placement a run used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slimexp.evaluation.cost import model_bytes
from slimexp.models.adapters import adapter_for

# Share of the free device memory left for what is not weights (activations, logits, the
# KV cache of the latency phase, allocator fragmentation).
HEADROOM = 0.2


@dataclass(frozen=True)
class Placement:
    kind: str  # "whole" | "device_map"
    detail: str


def free_device_bytes(device: torch.device) -> int | None:
    """Free memory of a CUDA device; None for the host (not limited here)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def fits(need_bytes: int, free_bytes: int | None) -> bool:
    return free_bytes is None or need_bytes <= free_bytes * (1 - HEADROOM)


def place(model, device: torch.device, free_bytes: int | None = None) -> tuple[torch.nn.Module, Placement]:
    """The model on `device` whole when it fits, else dispatched with a device map."""
    free = free_device_bytes(device) if free_bytes is None else free_bytes
    need = model_bytes(model)
    if fits(need, free):
        return model.to(device), Placement("whole", f"whole model on {device}")
    return _dispatch(model, device, int(free * (1 - HEADROOM)), need)


def _dispatch(model, device: torch.device, budget: int, need: int) -> tuple[torch.nn.Module, Placement]:
    from accelerate import dispatch_model, infer_auto_device_map

    layers = adapter_for(model).layers(model)
    device_map = infer_auto_device_map(
        model,
        max_memory={device.index or 0: budget, "cpu": max(need * 2, 1)},
        no_split_module_classes=[type(layers[0]).__name__],
    )
    on_device = sum(1 for where in device_map.values() if where not in ("cpu", "disk"))
    model = dispatch_model(model, device_map=device_map, main_device=str(device))
    detail = (
        f"device_map: {need / 2**30:.1f} GiB of weights over {budget / 2**30:.1f} GiB free on {device}; "
        f"{on_device} of {len(device_map)} modules on the device, the rest on the host"
    )
    return model, Placement("device_map", detail)


def dense_reference_fits(dense_bytes: int, device: torch.device, free_bytes: int | None = None) -> bool:
    """Whether the latency phase's dense reference fits on the device beside the pruned
    model already there (`free_bytes`: what is free now)."""
    return fits(dense_bytes, free_device_bytes(device) if free_bytes is None else free_bytes)
