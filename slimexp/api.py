"""slimexp from Python (a notebook, a script of your own), without Hydra:

    import slimexp
    model, tokenizer = slimexp.load_model("smollm2-135m")
    calibration = slimexp.calibration(tokenizer, "c4", n_samples=128, seqlen=128)
    result = slimexp.prune(model, method="slimgpt", schedule="log_increase", ratio=0.2, calibration=calibration)
    print(result.achieved_ratio, slimexp.perplexity(model, tokenizer, "wikitext2", max_windows=64))

Methods and schedules are named as their config files (`conf/method/*.yaml`,
`conf/schedule/*.yaml`), with any setting overridden by keyword (`method_settings`), or
passed as objects. Data come from `SLIMEXP_DATA_DIR` (or `data_dir=`), else the hub.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from omegaconf import OmegaConf

from slimexp.checks import build_method, build_schedule
from slimexp.data.calibration import CalibrationSet, sample_calibration
from slimexp.errors import SlimexpError
from slimexp.paths import CONF_DIR
from slimexp.pruning.api import PruneResult, PruneSettings
from slimexp.pruning.api import prune as prune_layers


def _group_config(group: str, name: str, settings: dict[str, Any]) -> dict[str, Any]:
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))
        raise SlimexpError(f"unknown {group} '{name}'; choose from: {known}")
    return {**OmegaConf.to_container(OmegaConf.load(path), resolve=True), **settings}


def _data_dir(data_dir: str | None) -> str | None:
    return data_dir if data_dir is not None else os.environ.get("SLIMEXP_DATA_DIR")


def load_model(name: str, dtype: str = "float32"):
    """(model, tokenizer) of a model config by name (`conf/model/<name>.yaml`), in eval mode."""
    from slimexp.models.loader import load_model as load
    from slimexp.models.loader import model_config_by_name

    return load(model_config_by_name(name), dtype)


def calibration(
    tokenizer,
    dataset: str = "c4",
    n_samples: int = 128,
    seqlen: int = 128,
    seed: int = 0,
    sampling: str = "document",
    data_dir: str | None = None,
) -> CalibrationSet:
    """A calibration set drawn as the pipeline draws it (`input_ids`, and its `protocol`)."""
    return sample_calibration(
        tokenizer,
        dataset,
        n_samples=n_samples,
        seqlen=seqlen,
        seed=seed,
        data_dir=_data_dir(data_dir),
        sampling=sampling,
    )


def perplexity(
    model,
    tokenizer,
    dataset: str = "wikitext2",
    seqlen: int = 128,
    max_windows: int | None = None,
    device: str = "cpu",
    data_dir: str | None = None,
) -> float:
    """The papers' perplexity protocol (split, joiner and windows as the pipeline uses them)."""
    from slimexp.evaluation.perplexity import perplexity as measure

    return measure(model, tokenizer, dataset, _data_dir(data_dir), seqlen, max_windows, 8, device)[0]


def prune(
    model,
    *,
    method,
    ratio: float,
    schedule=None,
    calibration=None,
    attn_unit: str = "kv_group",
    rounding: str = "round",
    absorb_rounding: bool = True,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    method_settings: dict[str, Any] | None = None,
    schedule_settings: dict[str, Any] | None = None,
) -> PruneResult:
    """Prune `model` in place (see `slimexp.pruning.api.prune`); `method` and `schedule` by
    name or as objects; `calibration` a CalibrationSet or token ids (n_samples × seqlen)."""
    if isinstance(method, str):
        method = build_method(_group_config("method", method, method_settings or {}))
    if isinstance(schedule, str):
        schedule = build_schedule(_group_config("schedule", schedule, schedule_settings or {}))
    if isinstance(calibration, CalibrationSet):
        calibration = calibration.input_ids
    settings = PruneSettings(attn_unit, rounding, absorb_rounding)
    return prune_layers(
        model,
        method=method,
        ratio=ratio,
        schedule=schedule,
        calibration=calibration,
        settings=settings,
        device=device,
        batch_size=batch_size,
    )
