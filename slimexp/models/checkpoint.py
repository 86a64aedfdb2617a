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
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from slimexp.errors import SlimexpError
from slimexp.files import fsync_dir, is_stale_temporary, ordinary_permissions, temporary_name
from slimexp.models.adapters import adapter_for
from slimexp.pruning.surgery import apply_widths, widths

FORMAT = "slimexp-pruned/1"
META_FILE = "slimexp.json"
# Another host's save of a large model may take hours: its staging folder is left a day.
STALE_STAGING_SECONDS = 86400


def save_pruned(model, path: str | Path, tokenizer=None, metadata: dict[str, Any] | None = None) -> Path:
    """Write atomically: a crash leaves either the previous checkpoint or none. An existing
    folder is replaced only if it is slimexp's checkpoint of the same run (`metadata`'s
    run_key) holding nothing but what slimexp wrote; anything else is an error, never deleted."""
    path = Path(path)
    metadata = metadata or {}
    if path.exists() and not replaceable(path, metadata.get("run_key")):
        raise SlimexpError(
            f"{path} exists and is not slimexp's checkpoint of this run: not replaced (move it or save elsewhere)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(path.parent)
    adapter = adapter_for(model)
    staging = staging_dir(path)
    model.config.save_pretrained(staging)
    save_model(model, str(staging / "model.safetensors"))
    if tokenizer is not None:
        tokenizer.save_pretrained(staging)
    layer_widths = [widths(layer, adapter) for layer in adapter.layers(model)]
    # Plain from_pretrained fails on the widths: the model card and config.json say what loads it.
    from slimexp.models.model_card import write_load_hint

    write_load_hint(staging, str(path), model.config.model_type, layer_widths)
    meta = {
        "format": FORMAT,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "widths": layer_widths,
        "metadata": metadata,
        "files": sorted([*(p.name for p in staging.iterdir()), META_FILE]),
    }
    (staging / META_FILE).write_text(json.dumps(meta, indent=1))
    ordinary_permissions(staging)
    _put_in_place(staging, path)
    return path


def staging_dir(path: Path) -> Path:
    """A new folder beside `path`, with the permissions of an ordinary mkdir under the
    umask (mkdtemp would force 0700, unreadable to colleagues on a shared store)."""
    for _ in range(100):
        staging = temporary_name(path)
        try:
            staging.mkdir(0o777)
            return staging
        except FileExistsError:
            continue
    raise SlimexpError(f"cannot create a staging folder beside {path}")


def clean_stale_staging(parent: Path) -> None:
    """Remove staging folders that a killed save left beside its checkpoints (only ours:
    named `.<name>~<host>~<pid>~<random>.tmp|.old`, their writer gone)."""
    for folder in [*parent.glob(".*~*~*~*.tmp"), *parent.glob(".*~*~*~*.old")]:
        if folder.is_dir() and is_stale_temporary(folder, max_age=STALE_STAGING_SECONDS):  # .tmp/.old: 4 characters
            shutil.rmtree(folder, ignore_errors=True)


def _put_in_place(staging: Path, path: Path) -> None:
    if path.exists():  # checked replaceable: only files slimexp wrote for this run
        retired = staging.with_name(staging.name.replace(".tmp", ".old"))
        os.replace(path, retired)
        os.replace(staging, path)
        shutil.rmtree(retired)
    else:
        os.replace(staging, path)
    fsync_dir(path.parent)


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


# What save_pruned writes (with the tokenizer's files): the only names a folder may hold
# for slimexp to replace it.
WRITTEN_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    META_FILE,
    "README.md",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
)


def replaceable(path: str | Path, run_key: str | None) -> bool:
    """Whether `path` is a checkpoint slimexp wrote for this run key and holds nothing else,
    so replacing it loses nothing of anyone's. Anything else is never deleted."""
    path = Path(path)
    meta_path = path / META_FILE
    if not path.is_dir() or not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        return False
    if meta.get("format") != FORMAT or (meta.get("metadata") or {}).get("run_key") != run_key:
        return False
    written = set(meta.get("files") or WRITTEN_FILES)
    return all(entry.is_file() and entry.name in written for entry in path.iterdir())
