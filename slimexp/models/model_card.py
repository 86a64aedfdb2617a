"""The way out for someone who opens a pruned checkpoint with plain transformers.

`AutoModelForCausalLM.from_pretrained` builds uniform layers and fails on the first
pruned one with a size mismatch that names no remedy. The folder's model card
(README.md) and a `slimexp_note` field in config.json (an unknown config key, which
transformers keeps as a plain attribute) both say to use `slimexp.load_pruned`.
"""

from __future__ import annotations

import json
from pathlib import Path

NOTE_KEY = "slimexp_note"


def load_hint(folder_name: str) -> str:
    return (
        "Structurally pruned by slimexp: layers have different widths, so "
        "AutoModelForCausalLM.from_pretrained fails with a size mismatch. Load it with "
        f'`import slimexp; model = slimexp.load_pruned("{folder_name}")`.'
    )


def model_card(folder_name: str, model_type: str, layer_widths: list[dict]) -> str:
    rows = "\n".join(f"| {i} | {w['n_heads']} | {w['n_kv_heads']} | {w['d_ff']} |" for i, w in enumerate(layer_widths))
    return f"""---
library_name: slimexp
tags: [slimexp, structured-pruning, pruned]
---
# Structurally pruned {model_type} (slimexp)

Heads and FFN channels were removed per layer, so the decoder layers have different
widths. `transformers.AutoModelForCausalLM.from_pretrained` builds uniform layers and
fails on this folder with a size mismatch. Load it with slimexp instead:

```python
import slimexp
from transformers import AutoTokenizer

model = slimexp.load_pruned("{folder_name}")  # the exact shapes, the saved weights
tokenizer = AutoTokenizer.from_pretrained("{folder_name}")
```

`slimexp.json` records each layer's widths; the weights are in `model.safetensors`.

| layer | query heads | KV heads | FFN channels |
|---|---|---|---|
{rows}
"""


def write_load_hint(folder: Path, final_name: str, model_type: str, layer_widths: list[dict]) -> None:
    """README.md and the config note, in the folder being written (config.json first)."""
    folder = Path(folder)
    (folder / "README.md").write_text(model_card(final_name, model_type, layer_widths))
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config[NOTE_KEY] = load_hint(final_name)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
