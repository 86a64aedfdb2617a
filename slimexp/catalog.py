"""The experiment catalog: every file under `experiments/<paper>/`, its sweep points, and
which of them the results store still lacks.

`python -m slimexp.catalog pending [NAME ...]` prints the experiments with runs not done
yet (all of them when none are named), composing every sweep point in one process, so a
re-run of `experiments/reproduce.sh` over a finished catalog takes seconds, not one Hydra
start per experiment. `python -m slimexp.catalog report NAME ... --output-dir DIR` writes
their reports in one process too.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
EXPERIMENTS = REPO / "experiments"


def experiment_names() -> list[str]:
    """Every experiment of the catalog (`experiments/<paper>/<name>.yaml`), sorted."""
    return sorted(
        str(p.relative_to(EXPERIMENTS).with_suffix(""))
        for p in EXPERIMENTS.glob("*/*.yaml")
        if p.parent.name != "reference"
    )


def _split(values: str) -> list[str]:
    """Hydra's comma-separated sweep values, commas inside [..], {..}, (..) kept."""
    items, depth, current = [], 0, ""
    for char in str(values):
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    items.append(current.strip())
    return items


def sweep_points(experiment: str) -> list[list[str]]:
    """Every point of the experiment's sweep as an override list (the basic sweeper's
    Cartesian product); one empty point when it sweeps nothing."""
    params = OmegaConf.load(EXPERIMENTS / f"{experiment}.yaml").get("hydra", {}).get("sweeper", {}).get("params") or {}
    axes = [[f"{key}={item}" for item in _split(values)] for key, values in params.items()]
    return [list(point) for point in itertools.product(*axes)]


def resolved_points(experiment: str, overrides: list[str]) -> list[dict]:
    """The resolved config of every sweep point (what `pipeline.run` would hash)."""
    from hydra import compose, initialize_config_dir

    from slimexp.config import register_configs
    from slimexp.pipeline import resolve_config

    register_configs()
    configs = []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for point in sweep_points(experiment):
            cfg = compose("config", overrides=[f"experiment={experiment}", *overrides, *point])
            configs.append(resolve_config(OmegaConf.to_container(cfg, resolve=True)))
    return configs


def pending_runs(experiment: str, overrides: list[str] | None = None, register: bool = False) -> int:
    """How many of the experiment's runs the store does not hold as done. With `register`,
    the store's listing follows the experiment file: done runs it shares with other
    experiments are listed under it too (as starting the sweep would have done), so an
    experiment with nothing left to run still gets its report; runs of the same scale that
    it no longer asks for (an edited sweep, a changed cap) are taken off its list, so its
    report does not mix them in. The records themselves stay."""
    from slimexp.tracking.store import ResultsStore, listed_experiments, run_key

    missing, wanted = 0, set()
    configs = resolved_points(experiment, overrides or [])
    if not configs:
        return 0
    store = ResultsStore(configs[0]["results"]["dir"])  # results.dir is not swept
    for config in configs:
        key = run_key(config)
        wanted.add(key)
        if not store.is_done(key):
            missing += 1
        elif register:
            store.add_experiment(key, config["experiment_name"])
    if register:
        name, scale = configs[0]["experiment_name"], configs[0]["scale"]["name"]
        for record in list(store.records()):
            listed = listed_experiments(record)
            same_scale = ((record.get("config") or {}).get("scale") or {}).get("name") == scale
            if name in listed and same_scale and record["run_key"] not in wanted:
                store.remove_experiment(record["run_key"], name)
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slimexp.catalog", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pending = sub.add_parser("pending", help="print the experiments whose runs are not all done")
    pending.add_argument("names", nargs="*")
    pending.add_argument("--override", action="append", default=[], help="e.g. scale=paper")
    pending.add_argument("--register", action="store_true", help="keep the store's experiment lists in step with the files: add shared done runs, drop runs no longer asked for")
    report = sub.add_parser("report", help="write each experiment's report (markdown)")
    report.add_argument("names", nargs="+")
    report.add_argument("--output-dir", required=True)
    report.add_argument("--results-dir", default=None)
    args = parser.parse_args(argv)
    if args.command == "pending":
        for name in args.names or experiment_names():
            missing = pending_runs(name, args.override, args.register)
            if missing:
                print(name)
                print(f"{name}: {missing} run(s) to do", file=sys.stderr)
        return 0
    import os

    from slimexp.errors import SlimexpError
    from slimexp.report.cli import build_report
    from slimexp.tracking.store import ResultsStore

    results_dir = args.results_dir or os.environ.get("SLIMEXP_RESULTS_DIR", "results")
    records = list(ResultsStore(results_dir).records())  # read once for every report
    status = 0
    for name in args.names:
        target = Path(args.output_dir) / f"{name}.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.write_text(build_report(name, results_dir, "md", plots_dir=target.parent, records=records))
        except SlimexpError as err:
            print(f"report {name}: {err}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
