"""`slimexp`: one run, or a sweep with `-m` / an experiment file (Hydra entry point)."""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from slimexp.completion import complete, is_query
from slimexp.config import register_configs
from slimexp.errors import SlimexpError
from slimexp.paths import CONF_DIR
from slimexp.precheck import precheck, resolved_jobs

log = logging.getLogger("slimexp")
_failures: list[str] = []


def _fail(message: str) -> None:
    print(f"slimexp: error: {message}", file=sys.stderr)


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

    from slimexp import sweep
    from slimexp.pipeline import run

    config = OmegaConf.to_container(cfg, resolve=True)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun:  # the sweep's parent counts these markers (slimexp/sweep.py)
        sweep.mark("running")
        sweep.watch_parent()
    try:
        record = run(config)
    except SlimexpError as err:
        _fail(str(err))
        if not multirun:
            sys.exit(2)
        _failures.append(str(err))
        sweep.mark("failed", str(err))
        return
    except Exception as err:
        if not multirun:
            raise
        log.exception("run failed")
        _failures.append(f"{type(err).__name__}: {err}")
        sweep.mark("failed", _failures[-1])
        return
    if multirun:
        sweep.mark("done", run_key=record["run_key"])
    print(summary_line(record), flush=True)


def version_line() -> str:
    from importlib import metadata

    from slimexp import __version__

    stack = []
    for package in ("torch", "transformers", "hydra-core", "lm-eval", "peft", "wandb"):
        try:
            stack.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            stack.append(f"{package} (not installed)")
    return f"slimexp {__version__} ({', '.join(stack)})"


def print_resolved(argv: list[str]) -> None:
    """`slimexp ... --resolved`: each job's resolved config (the scale's caps and model
    substitution applied, as it is hashed and run) and its run key; nothing runs."""
    import yaml

    from slimexp.tracking.store import run_key

    for point, config in resolved_jobs(argv):
        print(f"# job: {' '.join(point)}\n# run key: {run_key(config)}")
        print(yaml.safe_dump({k: v for k, v in config.items() if k != "hydra"}, sort_keys=False), flush=True)


def _captured(function) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        function()
    return buffer.getvalue()


def main() -> None:
    register_configs()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:]
    if "--version" in argv:
        print(version_line())
        return
    if is_query(argv):
        separator = "\n" if "query=fish" in argv else " "  # as Hydra's fish and bash plugins print
        print(separator.join(complete(lambda: _captured(_hydra_main))))
        return
    try:
        if "--resolved" in argv:
            print_resolved([a for a in argv if a != "--resolved"])
            return
        precheck(argv)  # every job of the command line, before anything loads
    except SlimexpError as err:
        _fail(str(err))
        sys.exit(2)
    # Jobs in other processes (joblib, submitit, SLURM) report their failures in markers.
    from slimexp import sweep

    sweep.begin()
    _hydra_main()
    failed = max(len(_failures), sweep.print_failed_runs())
    if failed:
        _fail(f"{failed} run(s) of the sweep failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
