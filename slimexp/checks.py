"""Checks of a resolved run config that need no model weights.

Everything a run config can get wrong and that can be seen before a model is loaded is
found here, as one `SlimexpError` line that names the problem and the fix: values out of
range, method and schedule settings (by building them), the architecture and context
length (from the model's config alone), the device, every data file the run will read
(present and readable JSONL), the model files (a truncated safetensors, a pickle that is
not plain tensors), the results folder and the folder a pruned model will be saved in.
`preflight` runs them all; the CLI runs it for every point of a sweep before launching
and `pipeline.run` before it writes a record, so a config that could never run leaves
no `failed` record behind.
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import logging
import pickletools
import types
import typing
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from slimexp.data.calibration import SAMPLINGS
from slimexp.data.manifest import head_slices_problem
from slimexp.data.sources import check_data_dir, check_data_file, local_path, spec
from slimexp.errors import SlimexpError
from slimexp.evaluation.perplexity import PAPER_PROTOCOL
from slimexp.evaluation.zeroshot import TASKS, check_tasks
from slimexp.models.adapters import ADAPTERS
from slimexp.planner import check_plan
from slimexp.pruning.engine import PruningMethod
from slimexp.pruning.units import ATTN_UNIT_POLICIES
from slimexp.tracking.store import ResultsStore

LOGGER_MODES = ("disabled", "offline", "online")
# What a pickled state dict may name: tensors, storages and containers, nothing callable.
SAFE_PICKLE_GLOBALS = ("collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                       "torch.device", "torch.Size")  # fmt: skip


def _safe_global(ref: str) -> bool:
    """A global a plain state dict needs: the listed ones and torch's typed storages."""
    return ref in SAFE_PICKLE_GLOBALS or (ref.startswith("torch.") and ref.count(".") == 1 and ref.endswith("Storage"))


def _component_class(cfg: dict[str, Any], group: str):
    from hydra.utils import get_class

    target = cfg.get("_target_")
    if not target:
        raise SlimexpError(f"{group} '{cfg.get('name')}' has no _target_ class in conf/{group}/")
    try:
        return get_class(target)
    except Exception:
        raise SlimexpError(f"{group} target '{target}' cannot be imported") from None


def _accepts(value: Any, hint: Any) -> bool:
    """Whether a config value fits a constructor annotation (the basic types configs hold)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and (hint is float or float(value).is_integer())
        )
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence):
        return isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if len(args) == 1 else hint
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(base, str(base))


def build_component(cfg: dict[str, Any], group: str):
    """Instantiate a method or schedule from its config block, every setting checked
    against the class's constructor first: an unknown key, a wrong type or a value the
    class rejects is one line naming `<group>.<key>`."""
    cls = _component_class(cfg, group)
    kwargs = {k: v for k, v in cfg.items() if k not in ("_target_", "name")}
    signature = inspect.signature(cls)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not evaluate: check names only
        hints = {}
    for key, value in kwargs.items():
        if key not in signature.parameters:
            known = ", ".join(p for p in signature.parameters if p not in ("self", "args", "kwargs")) or "none"
            raise SlimexpError(f"unknown setting {group}.{key} for {group} '{cfg.get('name')}'; its settings: {known}")
        if not _accepts(value, hints.get(key, inspect.Parameter.empty)):
            raise SlimexpError(f"{group}.{key} must be {_type_name(hints[key])}, got {value!r}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, SlimexpError) as err:
        raise SlimexpError(f"{group} '{cfg.get('name')}': {err}") from None


def build_method(method_cfg: dict[str, Any]) -> PruningMethod:
    method = build_component(method_cfg, "method")
    if not isinstance(method, PruningMethod):
        raise SlimexpError(f"method target {method_cfg.get('_target_')} is not a PruningMethod")
    return method


def build_schedule(schedule_cfg: dict[str, Any]):
    return build_component(schedule_cfg, "schedule")


def validate_config(config: dict[str, Any]) -> None:
    """Value checks of the resolved config (no files, no model)."""
    prune = config.get("prune")
    if prune is not None:
        if not 0 <= prune["ratio"] < 1:
            raise SlimexpError(f"prune.ratio must be in [0, 1), got {prune['ratio']}")
        if prune["attn_unit"] not in ATTN_UNIT_POLICIES:
            raise SlimexpError(f"prune.attn_unit must be one of {ATTN_UNIT_POLICIES}, got '{prune['attn_unit']}'")
        if prune["rounding"] not in ("round", "floor"):
            raise SlimexpError(f"prune.rounding must be 'round' or 'floor', got '{prune['rounding']}'")
    calib = config.get("calib")
    if calib is not None:
        spec(calib["dataset"])
        if calib["sampling"] not in SAMPLINGS:
            raise SlimexpError(f"calib.sampling must be one of {SAMPLINGS}, got '{calib['sampling']}'")
        if calib["n_samples"] < 1 or calib["seqlen"] < 2:
            raise SlimexpError(
                f"calibration needs calib.n_samples ≥ 1 and calib.seqlen ≥ 2, "
                f"got {calib['n_samples']} × {calib['seqlen']}"
            )
    for dataset in config["eval"]["ppl"]["datasets"]:
        spec(dataset)
    check_tasks((config["eval"].get("zeroshot") or {}).get("tasks") or [])
    check_data_dir(config["data"]["dir"])
    mode = (config.get("logger") or {}).get("mode", "disabled")
    if mode not in LOGGER_MODES:
        raise SlimexpError(f"logger.mode must be disabled, offline or online, got '{mode}'")


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SlimexpError(f"device '{name}' requested but CUDA is not available: use device=cpu (or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise SlimexpError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from None


def warn_half_on_cpu(config: dict[str, Any], device) -> None:
    """Half precision is the papers' GPU practice; a CPU computes it far slower than float32
    (about 30x for a matmul on the 2-core box this was written on). A run key does not depend
    on the machine, so this is a warning, not a silent switch to float32."""
    if device.type == "cpu" and config["dtype"] in ("float16", "bfloat16"):
        logging.getLogger("slimexp").warning(
            "dtype=%s on a CPU is much slower than float32: add dtype=float32 for a CPU run", config["dtype"]
        )


def uses_calibration(config: dict[str, Any]) -> bool:
    if config["method"]["name"] == "dense":
        return False
    method = build_method(config["method"])
    return method.needs_calibration or bool(getattr(build_schedule(config["schedule"]), "data_dependent", False))


def data_files(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(data set, split) of every local file the run reads."""
    needed = []
    ppl = config["eval"]["ppl"]
    for dataset in ppl["datasets"]:
        needed.append((dataset, PAPER_PROTOCOL.get(dataset, {}).get("split", spec(dataset).default_split)))
    layer_error = config["eval"].get("layer_error") or {}
    if layer_error.get("enabled"):
        dataset = layer_error["dataset"]
        needed.append((dataset, PAPER_PROTOCOL.get(dataset, {}).get("split", spec(dataset).default_split)))
    if uses_calibration(config):
        calib = config["calib"]
        needed.append((calib["dataset"], calib.get("split") or spec(calib["dataset"]).default_split))
    finetune = config.get("finetune") or {}
    if finetune.get("name", "none") != "none":
        needed.append((finetune["dataset"], finetune.get("split") or spec(finetune["dataset"]).default_split))
    return list(dict.fromkeys(needed))


def check_data(config: dict[str, Any]) -> None:
    data_dir = config["data"]["dir"]
    if data_dir is None:
        return  # the hub: checked when it is read
    check_paper_slices(config, data_dir)
    for dataset, split in data_files(config):
        check_data_file(local_path(dataset, split, data_dir))
    for task in (config["eval"].get("zeroshot") or {}).get("tasks") or []:
        path = Path(data_dir) / TASKS[task].local_file
        if not path.is_file():
            raise SlimexpError(f"zero-shot task {task}: {path} not found in data dir {data_dir}")
        check_data_file(path)


def check_paper_slices(config: dict[str, Any], data_dir: str) -> None:
    """scale=paper reads whole splits: a head slice in data.dir (../shared/data's LoRA set,
    its HellaSwag subset) would run the papers' recipe on a fraction of the data. A head
    slice of the calibration set is enough when the recipe's draw fits in it."""
    if config["scale"].get("name") != "paper":
        return
    tasks = (config["eval"].get("zeroshot") or {}).get("tasks") or []
    task_files = [Path(TASKS[task].local_file) for task in tasks]
    needed = data_files(config) + [(path.parent.name, path.stem) for path in task_files]
    calibration = calibration_file(config)
    problem = head_slices_problem(data_dir, needed, calibration, lambda: calibration_shortfall(config))
    if problem:
        raise SlimexpError(problem)


def calibration_file(config: dict[str, Any]) -> tuple[str, str] | None:
    if not uses_calibration(config):
        return None
    calib = config["calib"]
    return calib["dataset"], calib.get("split") or spec(calib["dataset"]).default_split


def calibration_shortfall(config: dict[str, Any]) -> str | None:
    """Why the run's calibration draw does not fit in its data (tokenizer only), or None."""
    as_json = {k: json.dumps(config[k], sort_keys=True) for k in ("model", "calib")}
    return _draw_shortfall(as_json["model"], as_json["calib"], config["data"]["dir"], config["seed"])


@lru_cache(maxsize=32)
def _draw_shortfall(model_json: str, calib_json: str, data_dir: str | None, run_seed: int) -> str | None:
    from slimexp.data.calibration import sample_as_configured
    from slimexp.models.loader import load_tokenizer

    try:
        sample_as_configured(load_tokenizer(json.loads(model_json)), json.loads(calib_json), data_dir, run_seed)
    except SlimexpError as err:
        return str(err).removeprefix("calibration larger than the data: ").split(" (lower ")[0]
    return None


def model_folder(model_cfg: dict[str, Any]) -> Path | None:
    """The local folder the weights load from, where there is one before loading."""
    from slimexp.models.loader import converted_dir

    if model_cfg["source"] == "gguf_package":
        folder = converted_dir(model_cfg)
        return folder if (folder / "config.json").exists() else None
    if model_cfg["source"] == "hub" and Path(str(model_cfg.get("hf_id"))).is_dir():
        return Path(model_cfg["hf_id"])
    return None


def model_architecture(model_cfg: dict[str, Any]):
    """The model's transformers config, read without weights (None where it needs a one-time
    conversion that loading will do)."""
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    from slimexp.models.loader import hub_call

    folder = model_folder(model_cfg)
    if model_cfg["source"] == "gguf_package" and folder is None:
        return None
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its config warnings are not the user's problem here
    try:
        if model_cfg["source"] == "random":
            return AutoConfig.for_model(**model_cfg["random_config"])
        return hub_call(AutoConfig, model_cfg, folder)
    except (ValueError, KeyError) as err:
        raise SlimexpError(f"model.random_config: {err}") from None
    finally:
        hf_logging.set_verbosity(verbosity)


def check_model(config: dict[str, Any]) -> None:
    model_cfg = config["model"]
    architecture = model_architecture(model_cfg)
    if architecture is not None:
        model_type = getattr(architecture, "model_type", None)
        if model_type not in ADAPTERS:
            raise SlimexpError(f"architecture '{model_type}' has no adapter; supported: {', '.join(sorted(ADAPTERS))}")
        context = int(getattr(architecture, "max_position_embeddings", 0) or 0)
        for name, seqlen in _sequence_lengths(config):
            if context and seqlen > context:
                raise SlimexpError(f"{name} {seqlen} exceeds the model's context of {context} tokens: lower {name}")
    folder = model_folder(model_cfg)
    if folder is not None:
        check_weight_files(folder)


def _sequence_lengths(config: dict[str, Any]) -> list[tuple[str, int]]:
    lengths = []
    if config["eval"]["ppl"]["datasets"]:
        lengths.append(("eval.ppl.seqlen", config["eval"]["ppl"]["seqlen"]))
    if "calib" in config and uses_calibration(config):
        lengths.append(("calib.seqlen", config["calib"]["seqlen"]))
    return lengths


def check_weight_files(folder: Path) -> None:
    for path in sorted(folder.glob("*.safetensors")):
        check_safetensors(path)
    for path in sorted(folder.glob("*.bin")):
        check_pickle(path)


@lru_cache(maxsize=64)
def _checked_file(path: str, size: int, mtime: float, kind: str) -> None:
    (check_safetensors_now if kind == "safetensors" else check_pickle_now)(Path(path))


def check_safetensors(path: Path) -> None:
    stat = path.stat()
    _checked_file(str(path), stat.st_size, stat.st_mtime, "safetensors")


def check_pickle(path: Path) -> None:
    stat = path.stat()
    _checked_file(str(path), stat.st_size, stat.st_mtime, "pickle")


def check_safetensors_now(path: Path) -> None:
    """The header is whole and the file holds every byte the header points to."""
    fix = "the file is damaged: delete it so it is converted or downloaded again"
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise SlimexpError(f"{path} is not a safetensors file (too short): {fix}")
        length = int.from_bytes(head, "little")
        if length > size - 8:
            raise SlimexpError(f"{path} is truncated (header of {length} bytes in a {size}-byte file): {fix}")
        try:
            header = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SlimexpError(f"{path} has an unreadable safetensors header: {fix}") from None
    end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0)
    if 8 + length + end > size:
        raise SlimexpError(f"{path} is truncated ({size} of {8 + length + end} bytes): {fix}")


def check_pickle_now(path: Path) -> None:
    """A PyTorch checkpoint may only rebuild tensors: a pickle naming anything else (code to
    run on load) is refused without being loaded."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            data = archive.read(name) if name else b""
    except zipfile.BadZipFile:
        data = path.read_bytes()
    unsafe = sorted({ref for ref in _pickle_globals(data) if not _safe_global(ref)})
    if unsafe:
        raise SlimexpError(
            f"{path} is a pickle that would run {', '.join(unsafe[:3])} when loaded: refused (use safetensors weights)"
        )


def _pickle_globals(data: bytes) -> list[str]:
    refs, strings = [], []
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in ("GLOBAL", "INST"):
                refs.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                refs.append(f"{strings[-2]}.{strings[-1]}")
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:
        refs.append("(an unreadable pickle stream)")
    return refs


def check_model_dir(config: dict[str, Any], key: str) -> None:
    """A pruned model goes to `<model_dir>/<run_key>`: a folder there that slimexp did not
    write for this run is never replaced."""
    from slimexp.models.checkpoint import replaceable

    if not config["results"]["save_model"]:
        return
    target = model_path(config, key)
    if target.exists() and not replaceable(target, key):
        raise SlimexpError(
            f"{target} exists and is not slimexp's checkpoint of run {key}: move it or set results.model_dir elsewhere"
        )


def model_path(config: dict[str, Any], key: str) -> Path:
    results = config["results"]
    return Path(results.get("model_dir") or Path(results["dir"]) / "models") / key


def preflight(config: dict[str, Any], key: str) -> None:
    """Every check above, for a run that is about to compute."""
    validate_config(config)
    device = resolve_device(config["device"])
    if config["method"]["name"] != "dense":
        build_method(config["method"])
        build_schedule(config["schedule"])
    check_data(config)
    check_model(config)
    check_plan(config)
    ResultsStore(config["results"]["dir"]).check_writable()
    check_model_dir(config, key)
    warn_half_on_cpu(config, device)  # last: a refused run shows its one error line only
