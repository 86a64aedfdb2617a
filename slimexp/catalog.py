"""`python -m slimexp.catalog`: the experiment catalog from the command line.

`pending [NAME ...] [--override K=V]` prints the experiments whose runs the store does not
hold as done (all of them when none are named), composing every sweep point in one
process, so a re-run of `experiments/reproduce.sh` over a finished catalog takes seconds,
not one Hydra start per experiment. `report NAME ... --output-dir DIR [--override K=V]`
writes their reports in one process, each from the records its own sweep points name.
`timing [NAME ...]` adds up the recorded wall time of each phase (load, calib, schedule,
prune, finetune, eval, latency, zeroshot) per experiment, and over the catalog with each
run counted once: where a catalog pass spends its time. All three only read the store.
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


PHASES = ("load", "calib", "schedule", "prune", "finetune", "eval", "latency", "zeroshot", "save", "total")


def phase_minutes(names: list[str], overrides: list[str], results_dir: str | None) -> list[tuple[str, int, int, dict]]:
    """(experiment, runs done, runs, minutes per phase) per experiment, then the catalog's
    row ("all, each run once"): the runs several experiments share are counted once."""
    rows, catalog, store = [], {}, None
    for name in names:
        configs = resolved_points(name, overrides)
        if not configs:
            continue
        store = store or ResultsStore(results_dir or configs[0]["results"]["dir"])
        keys = list(dict.fromkeys(run_key(config) for config in configs))
        records = {key: store.get(key) for key in keys}  # read once: status and times
        done = {key: r for key, r in records.items() if r is not None and r.get("status") == "done"}
        catalog.update(done)
        rows.append((name, len(done), len(keys), _minutes(done.values())))
    rows.append(("all, each run once", len(catalog), len(catalog), _minutes(catalog.values())))
    return rows


def _minutes(records) -> dict[str, float]:
    totals = dict.fromkeys(PHASES, 0.0)
    for record in records:
        for phase in PHASES:
            totals[phase] += float(record.get("metrics", {}).get(f"time/{phase}_s", 0.0)) / 60
    return totals


def print_timing(rows: list[tuple[str, int, int, dict]]) -> None:
    width = max(len(row[0]) for row in rows)
    print(f"{'experiment':{width}s} {'runs':>9s} " + " ".join(f"{phase:>8s}" for phase in PHASES) + "  (minutes)")
    for name, done, total, minutes in rows:
        print(f"{name:{width}s} {done:>4d}/{total:<4d} " + " ".join(f"{minutes[p]:8.1f}" for p in PHASES))


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
    timing = sub.add_parser("timing", help="recorded wall time per phase, per experiment and over the catalog")
    timing.add_argument("names", nargs="*")
    timing.add_argument("--results-dir", default=None)
    timing.add_argument("--override", action="append", default=[], help="the overrides the sweeps ran with")
    args = parser.parse_args(argv)
    try:
        if args.command == "report":
            results_dir = args.results_dir or os.environ.get("SLIMEXP_RESULTS_DIR", "results")
            from slimexp.report.cli import write_reports

            return write_reports(args.names, args.output_dir, results_dir, args.override)
        if args.command == "timing":
            print_timing(phase_minutes(args.names or experiment_names(), args.override, args.results_dir))
            return 0
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
