"""Per-layer FFN output error of the pruned model against the dense one (SlimGPT Figure 2).

The dense FFN outputs of every layer are captured on a few evaluation windows before
pruning; after pruning the same windows run through the pruned model and each layer's
error is the mean squared difference of its FFN output, averaged over tokens and hidden
dimensions. Both passes see their own model's inputs, so the error accumulates through
depth as it does in use.
"""

from __future__ import annotations

import torch

from slimexp.models.adapters import adapter_for


@torch.no_grad()
def ffn_outputs(model, windows: torch.Tensor, device, batch_size: int = 8) -> list[torch.Tensor]:
    """FFN output of every decoder layer on `windows`, float32 on the CPU."""
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    outputs: list[list[torch.Tensor]] = [[] for _ in layers]
    handles = [
        adapter.ffn(layer).register_forward_hook(lambda m, a, out, i=i: outputs[i].append(out.float().cpu()))
        for i, layer in enumerate(layers)
    ]
    try:
        for start in range(0, len(windows), batch_size):
            model(windows[start : start + batch_size].to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return [torch.cat(chunks) for chunks in outputs]


def ffn_output_mse(dense: list[torch.Tensor], pruned: list[torch.Tensor]) -> list[float]:
    return [float((p - d).pow(2).mean()) for d, p in zip(dense, pruned)]
