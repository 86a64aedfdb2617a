"""`slimexp`: one run, or a sweep with `-m` / an experiment file (Hydra entry point)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from slimexp.config import register_configs
from slimexp.errors import SlimexpError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("model", "method", "schedule", "calib", "data", "eval", "logger", "scale", "recipe", "variant", "experiment")
log = logging.getLogger("slimexp")
_failures: list[str] = []


def _fail(message: str) -> None:
    print(f"slimexp: error: {message}", file=sys.stderr)


def check_group_choices(overrides: list[str]) -> None:
    """Unknown group options (`method=foo`) get a one-line error instead of Hydra's page."""
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or value in ("", "null"):
            continue
        choices = value.split(",") if not value.startswith(("choice(", "range(", "glob(")) else []
        options = sorted(
            str(p.relative_to(CONF_DIR / key).with_suffix("")) for p in (CONF_DIR / key).rglob("*.yaml")
        )
        for choice in choices:
            if choice not in options:
                raise SlimexpError(f"unknown {key} '{choice}'; choose from: {', '.join(options)}")


def summary_line(record: dict) -> str:
    metrics = record.get("metrics", {})
    ppl = ", ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in metrics.items() if k.startswith("ppl/"))
    achieved = metrics.get("params/achieved_ratio")
    ratio = f"ratio {record['ratio']:.2f}" + (f" (achieved {achieved:.3f})" if achieved is not None else "")
    avg = metrics.get("zeroshot/avg")
    zeroshot = f", zero-shot avg {100 * avg:.2f}" if avg is not None else ""
    return f"{record['model']} {record['method']} {ratio}: ppl {ppl or '-'}{zeroshot}  [run {record['run_key']}]"


# An absolute path: console scripts give Hydra no calling file to resolve a relative one.
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from slimexp.pipeline import run

    config = OmegaConf.to_container(cfg, resolve=True)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        record = run(config)
    except SlimexpError as err:
        _fail(str(err))
        if not multirun:
            sys.exit(2)
        _failures.append(str(err))
        return
    except Exception as err:
        if not multirun:
            raise
        log.exception("run failed")
        _failures.append(f"{type(err).__name__}: {err}")
        return
    print(summary_line(record), flush=True)


def main() -> None:
    register_configs()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        check_group_choices(sys.argv[1:])
    except SlimexpError as err:
        _fail(str(err))
        sys.exit(2)
    _hydra_main()
    if _failures:
        _fail(f"{len(_failures)} run(s) of the sweep failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
