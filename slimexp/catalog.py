"""`python -m slimexp.catalog`: the experiment catalog from the command line.

`pending [NAME ...] [--override K=V]` prints the experiments whose runs the store does not
hold as done (all of them when none are named), composing every sweep point in one
process, so a re-run of `experiments/reproduce.sh` over a finished catalog takes seconds,
not one Hydra start per experiment. `report NAME ... --output-dir DIR [--override K=V]`
writes their reports in one process, each from the records its own sweep points name.
`timing [NAME ...]` adds up the recorded wall time of each phase (load, calib, schedule,
prune, finetune, eval, latency, zeroshot) per experiment, and over the catalog with each
run counted once: where a catalog pass spends its time; `--claim-seeds 1,2` counts the
claim runs at those seeds too (a claim run is known once its run at the sweep's own seed
is done; until then it is not counted). These three only read the store.

`seeds [NAME ...] --seeds 1,2` runs, at each further seed, the runs the experiments'
`claims:` compare, and only those: a claim needs its two sides at three seeds, a table row
no claim reads does not. Which runs a claim compares is read from the done runs at the
sweep's own seed (run the experiment first); each is run through `pipeline.run`, exactly
as `slimexp` runs it, done runs skipped. `claims [NAME ...] [--into FILE]` judges every
claim of the experiments from the store in one table (with `--into`, between the claims
markers of a file: the generated table of docs/RESULTS.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from slimexp.errors import SlimexpError
from slimexp.experiments import (
    experiment_claims,
    experiment_names,
    experiment_points,
    resolve_points,
    resolved_points,
    with_labels,
)
from slimexp.tracking.store import ResultsStore, record_seed_independent, run_key

log = logging.getLogger(__name__)


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


def phase_minutes(
    names: list[str], overrides: list[str], results_dir: str | None, claim_seeds: list[int] | None = None
) -> list[tuple[str, int, int, dict]]:
    """(experiment, runs done, runs, minutes per phase) per experiment, then the catalog's
    row ("all, each run once"): the runs several experiments share are counted once. With
    `claim_seeds`, an experiment's runs are its sweep's and its claim runs at those seeds
    (`seeds`): the catalog pass with the evidence its claims need."""
    rows, catalog, every_key, store = [], {}, set(), None
    for name in names:
        points = experiment_points(name, overrides)
        configs = resolve_points(points)
        if not configs:
            continue
        store = store or ResultsStore(results_dir or configs[0]["results"]["dir"])
        keys = [run_key(config) for config in configs]
        if claim_seeds:
            points, _ = claim_points(name, points, configs, store)
            keys += [run_key(c) for c in resolve_points([[*p, f"seed={s}"] for s in claim_seeds for p in points])]
        keys = list(dict.fromkeys(keys))
        every_key.update(keys)
        records = {key: store.get(key) for key in keys}  # read once: status and times
        done = {key: r for key, r in records.items() if r is not None and r.get("status") == "done"}
        catalog.update(done)
        rows.append((name, len(done), len(keys), _minutes(done.values())))
    rows.append(("all, each run once", len(catalog), len(every_key), _minutes(catalog.values())))
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


def claim_points(
    name: str, points: list[list[str]], configs: list[dict], store: ResultsStore, claims: list | None = None
) -> tuple[list[list[str]], list[str]]:
    """(sweep points, keys not done): the experiment's points whose done run one of its
    claims compares, known from the runs at the sweep's own seed. A seed-independent run
    (the dense model; a run whose draw took its source's every window) is left out: its one
    record serves every seed. `configs` are the resolved `points`, `claims` the experiment's
    (read from its file when not given)."""
    from slimexp.report.claims import compared_by, unmatched_sides

    claims = experiment_claims(name) if claims is None else claims
    if not claims:
        return [], []
    chosen, missing, done = [], [], []
    for point, config in zip(points, configs):
        key = run_key(config)
        record = store.get(key)
        if record is None or record.get("status") != "done":
            missing.append(key)
            continue
        done.append(with_labels(record, config))
        if record_seed_independent(record):  # its config says dense, or its record a whole-source draw
            continue
        if compared_by(done[-1], claims):
            chosen.append(point)
    unmatched = [] if missing else unmatched_sides(done, claims)
    if unmatched:
        raise SlimexpError(
            f"{name}: claim sides that select none of its runs: {'; '.join(unmatched)}; "
            f"fix the selectors of the experiment's claims: block"
        )
    return chosen, list(dict.fromkeys(missing))


def seed_jobs(names: list[str], seeds: list[int], overrides: list[str], store: ResultsStore) -> list[tuple[str, dict]]:
    """(experiment, resolved config) of every claim run at every seed, each key once."""
    if any(o.split("=", 1)[0].lstrip("+~") == "seed" for o in overrides):
        raise SlimexpError("give the seeds with --seeds, not as an override (the overrides name the base sweep)")
    jobs, seen, unknown = [], set(), []
    for name in names:
        claims = experiment_claims(name)
        if not claims:
            continue
        base = experiment_points(name, overrides)
        points, missing = claim_points(name, base, resolve_points(base), store, claims)
        if missing:
            unknown.append(f"{name} ({len(missing)} run(s), e.g. {missing[0]})")
        seeded = [[*point, f"seed={seed}"] for seed in seeds for point in points]
        for config in resolve_points(seeded):
            key = run_key(config)
            if key not in seen:
                seen.add(key)
                jobs.append((name, config))
    if unknown:
        raise SlimexpError(
            f"runs at the sweep's own seed are not done, so which runs the claims compare is not known yet: "
            f"{'; '.join(unknown)}; run those experiments first (experiments/reproduce.sh NAME)"
        )
    return jobs


def run_seeds(names: list[str], seeds: list[int], overrides: list[str], results_dir: str | None, dry_run: bool) -> int:
    from slimexp.cli import summary_line
    from slimexp.pipeline import run

    if results_dir:  # the runs write where the store is read
        overrides = [*overrides, f"results.dir={results_dir}"]
    store = ResultsStore(results_dir or os.environ.get("SLIMEXP_RESULTS_DIR", "results"))
    jobs = seed_jobs(names, seeds, overrides, store)
    todo = [(name, config) for name, config in jobs if not store.is_done(run_key(config))]
    print(f"claim runs at seeds {seeds}: {len(jobs)}, of which {len(todo)} to do", flush=True)
    failed = []
    for number, (name, config) in enumerate(todo, 1):
        print(f"[{number}/{len(todo)}] {name} seed={config['seed']} run {run_key(config)}", flush=True)
        if dry_run:
            continue
        try:
            print(summary_line(run(config)), flush=True)
        except Exception as err:  # one failed run (recorded as failed) does not stop the others
            log.exception("run %s failed", run_key(config))
            failed.append(f"{name} seed={config['seed']} {run_key(config)}: {type(err).__name__}: {err}")
    for line in failed:
        print(f"failed: {line}", file=sys.stderr)
    return 1 if failed else 0


def write_claims(names: list[str], overrides: list[str], results_dir: str | None, into: str | None) -> int:
    from slimexp.report.cli import catalog_claims, replace_between_markers

    store = ResultsStore(results_dir or os.environ.get("SLIMEXP_RESULTS_DIR", "results"))
    text = catalog_claims(names, store, overrides)
    if into:
        replace_between_markers(into, text)
        print(f"claims of {len(names)} experiment(s) written into {into}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    store.warn_unreadable()
    return 0


def _seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes integers joined by commas, e.g. 1,2; got '{text}'") from None


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(prog="python -m slimexp.catalog", description=__doc__.splitlines()[0])
    sub = main_parser.add_subparsers(dest="command", required=True)
    pending = sub.add_parser("pending", help="print the experiments whose runs are not all done")
    pending.add_argument("names", nargs="*")
    report = sub.add_parser("report", help="write each experiment's report (markdown)")
    report.add_argument("names", nargs="+")
    report.add_argument("--output-dir", required=True)
    timing = sub.add_parser("timing", help="recorded wall time per phase, per experiment and over the catalog")
    timing.add_argument("names", nargs="*")
    timing.add_argument(
        "--claim-seeds", type=_seed_list, default=None, help="count the claim runs at these seeds too, e.g. 1,2"
    )
    seeds = sub.add_parser("seeds", help="run the runs the experiments' claims compare at further seeds")
    seeds.add_argument("names", nargs="*")
    seeds.add_argument("--seeds", type=_seed_list, required=True, help="e.g. 1,2")
    seeds.add_argument("--dry-run", action="store_true", help="list the runs, run nothing")
    claims = sub.add_parser("claims", help="every claim of the experiments, judged from the store (markdown)")
    claims.add_argument("names", nargs="*")
    claims.add_argument("--into", help="write the table between the claims markers of this file (docs/RESULTS.md)")
    for command in (pending, report, timing, seeds, claims):
        command.add_argument("--override", action="append", default=[], help="the overrides the sweeps ran with")
        if command is not pending:
            command.add_argument("--results-dir", default=None)
    return main_parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "report":
            results_dir = args.results_dir or os.environ.get("SLIMEXP_RESULTS_DIR", "results")
            from slimexp.report.cli import write_reports

            return write_reports(args.names, args.output_dir, results_dir, args.override)
        if args.command == "timing":
            names = args.names or experiment_names()
            print_timing(phase_minutes(names, args.override, args.results_dir, args.claim_seeds))
            return 0
        if args.command == "claims":
            return write_claims(args.names or experiment_names(), args.override, args.results_dir, args.into)
        if args.command == "seeds":
            logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
            names = args.names or experiment_names()
            return run_seeds(names, args.seeds, args.override, args.results_dir, args.dry_run)
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
