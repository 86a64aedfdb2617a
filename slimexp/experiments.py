"""Experiment files: their names, sweep points, the resolved config of every point, and the
records those points name.

An experiment knows its runs from its own file: each sweep point (Hydra's basic sweeper
over `hydra.sweeper.params` and the command line's overrides) resolves to a run key, and
the records under those keys are its runs. No record lists the experiments it serves; a
record that no experiment asks for is in no report. Labels (`recipe`, `variant`,
`experiment_name`, `tags`) are not part of the run key, so one record can serve several
rows or tables: each row takes its labels from its own sweep point.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from slimexp.errors import SlimexpError
from slimexp.paths import CONF_DIR, EXPERIMENTS_DIR
from slimexp.tracking.store import LABEL_KEYS, run_key


def experiment_names() -> list[str]:
    """Every experiment file under `experiments/` (reference tables excluded), sorted."""
    return sorted(
        str(path.relative_to(EXPERIMENTS_DIR).with_suffix(""))
        for path in EXPERIMENTS_DIR.rglob("*.yaml")
        if "reference" not in path.relative_to(EXPERIMENTS_DIR).parts
    )


def experiment_path(name: str) -> Path:
    """The file of a catalog experiment; anything else (a typo, `../conf/config`) is an error."""
    name = name.removeprefix("experiment=").removesuffix(".yaml")
    known = experiment_names()
    if name not in known:
        raise SlimexpError(f"unknown experiment '{name}'; known: {', '.join(known)}")
    return EXPERIMENTS_DIR / f"{name}.yaml"


def report_block(name: str) -> tuple[str, dict]:
    """(experiment_name, report block) of an experiment file."""
    cfg = _file_config(name)
    if not cfg.get("report"):
        raise SlimexpError(f"{experiment_path(name)} has no report: block")
    return cfg.get("experiment_name", name), cfg["report"]


def experiment_claims(name: str) -> list[dict]:
    """The `report.claims` list of an experiment file (empty where it has none)."""
    return (_file_config(name).get("report") or {}).get("claims") or []


def _file_config(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(experiment_path(name)), resolve=False)


def sweep_points(arguments: Iterable[str]) -> list[list[str]]:
    """Every job of a sweep as an override list, exactly as Hydra's basic sweeper forms them
    (its parser: `range(...)`, `choice(...)`, bracketed lists; a later override of a key
    replaces an earlier one; the Cartesian product in order)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(list(arguments))
        (batch,) = BasicSweeper.split_arguments(parsed, None)
    except (HydraException, OverrideParseException) as err:
        raise SlimexpError(f"cannot read the sweep overrides: {str(err).splitlines()[0]}") from None
    return [list(point) for point in batch]


def file_sweep(name: str) -> list[str]:
    """The experiment file's `hydra.sweeper.params` as overrides (`key=values`)."""
    cfg = OmegaConf.load(experiment_path(name))
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    return [f"{key}={value}" for key, value in params.items()]


def experiment_points(name: str, overrides: Iterable[str] = ()) -> list[list[str]]:
    """The experiment's jobs: its own sweep, then the given overrides (which win for a key)."""
    name = name.removeprefix("experiment=")
    return sweep_points([*file_sweep(name), f"experiment={name}", *overrides])


def resolved_points(name: str, overrides: Iterable[str] = ()) -> list[dict]:
    """The resolved config of every job of the experiment (what `pipeline.run` hashes)."""
    return resolve_points(experiment_points(name, overrides))


def resolve_points(points: Iterable[list[str]]) -> list[dict]:
    """The resolved config of each override list, composed as the `slimexp` command does."""
    from hydra import compose, initialize_config_dir

    from slimexp.config import register_configs
    from slimexp.pipeline import resolve_config

    register_configs()
    configs = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for point in points:
            cfg = compose("config", overrides=point)
            configs.append(resolve_config(OmegaConf.to_container(cfg, resolve=True)))
    return configs


def with_labels(record: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The record as the sweep point `config` names it: its labels, not those of whichever
    experiment computed it first."""
    record = copy.deepcopy(record)
    stored = record.setdefault("config", {})
    for key in LABEL_KEYS:
        if key in config:
            stored[key] = copy.deepcopy(config[key])
        else:
            stored.pop(key, None)
    record["experiment"] = config.get("experiment_name")
    return record


def point_records(configs: Iterable[dict], lookup: Callable[[str], dict | None]) -> tuple[list[dict], list[str]]:
    """(records of the points, keys with no record). A record appears once per distinct set
    of labels: the same computation in two rows of a table is shown in both."""
    records, missing, seen = [], [], set()
    for config in configs:
        key = run_key(config)
        record = lookup(key)
        if record is None:
            missing.append(key)
            continue
        labelled = with_labels(record, config)
        identity = (key, json.dumps({k: labelled["config"].get(k) for k in LABEL_KEYS}, sort_keys=True, default=str))
        if identity not in seen:
            seen.add(identity)
            records.append(labelled)
    return records, list(dict.fromkeys(missing))
