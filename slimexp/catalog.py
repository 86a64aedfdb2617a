"""`python -m slimexp.catalog`: the experiment catalog from the command line.

`pending [NAME ...] [--override K=V]` prints the experiments whose runs the store does not
hold as done (all of them when none are named), composing every sweep point in one
process, so a re-run of `experiments/reproduce.sh` over a finished catalog takes seconds,
not one Hydra start per experiment. `report NAME ... --output-dir DIR [--override K=V]`
writes their reports in one process, each from the records its own sweep points name.
Both only read the store.
"""

from __future__ import annotations

import argparse
import os
import sys

from slimexp.errors import SlimexpError
from slimexp.experiments import experiment_names, resolved_points
from slimexp.tracking.store import ResultsStore, run_key


def pending_runs(experiment: str, overrides: list[str] | None = None, results_dir: str | None = None) -> int:
    """How many of the experiment's runs the store does not hold as done."""
    configs = resolved_points(experiment, overrides or [])
    if not configs:
        return 0
    store = ResultsStore(results_dir or configs[0]["results"]["dir"])  # results.dir is not swept
    keys = dict.fromkeys(run_key(config) for config in configs)
    missing = sum(not store.is_done(key) for key in keys)
    store.warn_unreadable()
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slimexp.catalog", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pending = sub.add_parser("pending", help="print the experiments whose runs are not all done")
    pending.add_argument("names", nargs="*")
    pending.add_argument("--override", action="append", default=[], help="e.g. scale=paper")
    report = sub.add_parser("report", help="write each experiment's report (markdown)")
    report.add_argument("names", nargs="+")
    report.add_argument("--output-dir", required=True)
    report.add_argument("--results-dir", default=None)
    report.add_argument("--override", action="append", default=[], help="the overrides the sweeps ran with")
    args = parser.parse_args(argv)
    try:
        if args.command == "report":
            results_dir = args.results_dir or os.environ.get("SLIMEXP_RESULTS_DIR", "results")
            from slimexp.report.cli import write_reports

            return write_reports(args.names, args.output_dir, results_dir, args.override)
        for name in args.names or experiment_names():
            missing = pending_runs(name, args.override)
            if missing:
                print(name)
                print(f"{name}: {missing} run(s) to do", file=sys.stderr)
    except SlimexpError as err:
        print(f"slimexp: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
