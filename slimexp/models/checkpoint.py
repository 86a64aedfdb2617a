"""Save and reload pruned models whose layers have different widths.

transformers' `from_pretrained` builds uniform layers, so it cannot load them. The format
is the base config (config.json), the weights (model.safetensors), the tokenizer, and
`slimexp.json` with each layer's widths and biases; `load_pruned` rebuilds the dense
skeleton, reshapes every layer to the recorded widths, then loads the weights strictly.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from slimexp.errors import SlimexpError
from slimexp.models.adapters import adapter_for
from slimexp.pruning.surgery import apply_widths, widths

FORMAT = "slimexp-pruned/1"
META_FILE = "slimexp.json"


def save_pruned(model, path: str | Path, tokenizer=None, metadata: dict[str, Any] | None = None) -> Path:
    """Write atomically: a crash leaves either the previous checkpoint or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    adapter = adapter_for(model)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    model.config.save_pretrained(staging)
    save_model(model, str(staging / "model.safetensors"))
    if tokenizer is not None:
        tokenizer.save_pretrained(staging)
    meta = {
        "format": FORMAT,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "widths": [widths(layer, adapter) for layer in adapter.layers(model)],
        "metadata": metadata or {},
    }
    (staging / META_FILE).write_text(json.dumps(meta, indent=1))
    if path.exists():
        shutil.rmtree(path)
    os.replace(staging, path)
    return path


def load_pruned(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild a model saved by `save_pruned`: same shapes, same weights, same logits."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.exists():
        raise SlimexpError(f"{path} is not a slimexp pruned checkpoint (no {META_FILE})")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise SlimexpError(f"unsupported checkpoint format {meta.get('format')!r} (expected {FORMAT})")
    config = AutoConfig.from_pretrained(path)
    dtype = getattr(torch, meta["dtype"])
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    if len(layers) != len(meta["widths"]):
        raise SlimexpError(f"checkpoint lists {len(meta['widths'])} layers, config builds {len(layers)}")
    for layer, layer_widths in zip(layers, meta["widths"]):
        apply_widths(layer, adapter, layer_widths)
    missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False, device=str(device))
    # Tied embeddings are stored once; anything else missing means a broken checkpoint.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise SlimexpError(f"checkpoint does not match its widths: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    return model.to(device).eval()
