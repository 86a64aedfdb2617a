"""Before Hydra launches anything: the command line's overrides and every job of the sweep
they describe, checked as `pipeline.run` would check them, so a bad input is one line
naming the problem and the fix, before any model loads and before any record is written.

Hydra's own errors for the same mistakes are pages (a traceback for a typo in a key, the
whole config search path for an unknown option), and `+key=value` on a key the schema does
not have is silently accepted; here each is one line, and `+` is refused on schema blocks
(only the open blocks, a method's or schedule's settings, take new keys, which their
classes then check).
"""

from __future__ import annotations

import difflib
import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf

from slimexp.errors import SlimexpError
from slimexp.experiments import experiment_path, file_sweep, sweep_points
from slimexp.paths import CONF_DIR

# Hydra's own flags that only print or configure (no job runs): no pre-check for them.
INFO_FLAGS = (
    "--help",
    "-h",
    "--hydra-help",
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--version",
    "--resolve",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
)


def config_groups() -> list[str]:
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in ("hydra", "local"))


def group_options(group: str) -> list[str]:
    return sorted(str(p.relative_to(CONF_DIR / group).with_suffix("")) for p in (CONF_DIR / group).rglob("*.yaml"))


def check_group_choices(overrides: list[str]) -> None:
    """Unknown group options (`method=foo`) get a one-line error instead of Hydra's page."""
    groups = config_groups()
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or key not in groups or value in ("", "null"):
            continue
        choices = value.split(",") if not value.startswith(("choice(", "range(", "glob(")) else []
        options = group_options(key)
        for choice in choices:
            if choice not in options:
                raise SlimexpError(f"unknown {key} '{choice}'; choose from: {', '.join(options)}")


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix]
    keys = []
    for key, value in node.items():
        keys += _leaf_keys(value, f"{prefix}.{key}" if prefix else str(key))
    return keys


def _suggest(key: str, cfg: DictConfig) -> str:
    known = _leaf_keys(OmegaConf.to_container(cfg, resolve=False))
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def explain_compose_error(err: Exception, point: list[str], compose) -> SlimexpError:
    """Hydra's composition error as one line naming the override and the fix."""
    text = str(err)
    for override in point:
        key = override.split("=", 1)[0].lstrip("+~")
        if f"Could not override '{key}'" in text:
            return SlimexpError(f"unknown key {key}{_suggest(key, compose([o for o in point if o != override]))}")
        if f"An item is already at '{key}'" in text:
            return SlimexpError(f"{override}: {key} exists, so drop the '+' ({key}=...)")
        if text.startswith(f"Error merging override {override}"):
            return SlimexpError(f"{override}: {_first_line(err.__cause__ or err)}")
    return SlimexpError(_first_line(err))


def check_additions(point: list[str], compose) -> None:
    """`+key=value` may add settings to an open block (a method's, a schedule's), never to
    the typed schema, where it would be stored and silently ignored."""
    for override in point:
        if not override.startswith("+") or override.startswith("++"):
            continue
        key = override[1:].split("=", 1)[0]
        if key.split(".")[0] == "hydra" or key in config_groups() or "/" in key:
            continue
        base = compose([o for o in point if o != override])
        parent = key.rpartition(".")[0]
        node = OmegaConf.select(base, parent) if parent else base
        if isinstance(node, DictConfig) and OmegaConf.get_type(node) not in (dict, None):
            raise SlimexpError(
                f"unknown key {key}{_suggest(key, base)}: '+' cannot add keys to {parent or 'the config'}"
            )


def is_multirun(argv: list[str], overrides: list[str]) -> bool:
    if "-m" in argv or "--multirun" in argv:
        return True
    for override in overrides:
        if override.startswith("experiment=") and "," not in override:
            cfg = OmegaConf.load(experiment_path(override.split("=", 1)[1]))
            return str(OmegaConf.select(cfg, "hydra.mode")) == "MULTIRUN"
    return False


def job_points(argv: list[str]) -> list[list[str]]:
    """The override list of every job the command line launches (one for a single run)."""
    overrides = [a for a in argv if not a.startswith("-")]
    if not is_multirun(argv, overrides):
        points = sweep_points(overrides)
        if len(points) > 1:
            raise SlimexpError("a sweep override (a,b or range(...)) needs -m (--multirun) or an experiment file")
        return points
    experiment = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=") and "," not in o), None)
    return sweep_points([*(file_sweep(experiment) if experiment else []), *overrides])


def _each_job(argv: list[str], visit) -> list:
    """`visit(point, compose)` for every job of the command line, inside one Hydra context."""
    overrides = [a for a in argv if not a.startswith("-")]
    check_group_choices(overrides)
    from hydra import compose, initialize_config_dir

    from slimexp.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return [visit(point, lambda o: compose("config", overrides=o)) for point in job_points(argv)]


def precheck(argv: list[str]) -> int:
    """Check every job of the command line; raises SlimexpError (one line) for the first bad
    input. Returns the number of jobs that will compute (not done yet)."""
    if any(a.split("=")[0] in INFO_FLAGS for a in argv):
        return 0
    jobs = _each_job(argv, _check_point)
    for line in sorted({substitution for _, substitution in jobs if substitution}):
        print(f"slimexp: warning: {line}", file=sys.stderr)
    return sum(computes for computes, _ in jobs)


def resolved_jobs(argv: list[str]) -> list[tuple[list[str], dict[str, Any]]]:
    """(overrides, resolved config) of every job: what `pipeline.run` hashes and runs, after
    the scale's caps and model substitution (`slimexp ... --resolved` prints it)."""
    return _each_job(argv, lambda point, compose: (point, resolved(point, compose)))


def resolved(point: list[str], compose) -> dict[str, Any]:
    from slimexp.pipeline import resolve_config

    try:
        cfg = compose(point)
    except Exception as err:  # Hydra raises several types, all meaning a bad override
        raise explain_compose_error(err, point, compose) from None
    check_additions(point, compose)
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # an interpolation that does not resolve (a recipe's by_ratio)
        raise SlimexpError(_first_line(err).removeprefix("ValueError raised while resolving interpolation: ")) from None
    return resolve_config(config)


def _check_point(point: list[str], compose) -> tuple[bool, str | None]:
    """(whether the job will compute, the model substitution it makes, if any)."""
    from slimexp.checks import preflight, validate_config
    from slimexp.tracking.store import ResultsStore, run_key

    config = resolved(point, compose)
    validate_config(config)
    model = config["model"]
    substitution = None
    if model.get("substitutes_for"):
        substitution = (
            f"scale={config['scale']['name']} runs {model['name']} in place of {model['substitutes_for']} "
            "(scale=paper runs the paper's model)"
        )
    key = run_key(config)
    if config["runner"]["skip_done"] and ResultsStore(config["results"]["dir"]).is_done(key):
        return False, substitution
    preflight(config, key)
    return True, substitution
