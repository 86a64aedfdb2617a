"""`slimexp-report EXPERIMENT [--format md|csv|latex] [--output FILE] [--plots DIR]`: the
experiment's table (and its plots as PNG) from the results store, offline; with
`--source wandb`, from W&B instead (offline runs with `--wandb-dir`, else the W&B API).

Both sources find an experiment's runs the same way: its sweep points (composed with the
`--override`s the sweep ran with, e.g. scale=paper) resolve to run keys, and the records
under those keys are its runs, each labelled by its own point.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from slimexp.errors import SlimexpError
from slimexp.experiments import experiment_names, point_records, report_block, resolved_points
from slimexp.paths import EXPERIMENTS_DIR
from slimexp.report.claims import claims_table, render_claims
from slimexp.report.plots import experiment_plots
from slimexp.report.tables import NoRuns, experiment_table, load_reference, render, selected_records
from slimexp.tracking.store import ResultsStore, run_key


def experiment_records(
    experiment: str,
    source: str = "store",
    store: ResultsStore | None = None,
    overrides: list[str] | None = None,
    wandb_dir: str | None = None,
    project: str = "slimexp",
    entity: str | None = None,
) -> list[dict]:
    """The records of the experiment's sweep points, from the store or from W&B."""
    configs = resolved_points(experiment, overrides or [])
    if source == "store":
        lookup = (store or ResultsStore("results")).get
    elif source == "wandb":
        from slimexp.tracking.wandb_logger import wandb_records

        keys = list(dict.fromkeys(run_key(c) for c in configs))
        fetched = {r["run_key"]: r for r in wandb_records(keys, wandb_dir, project, entity)}
        lookup = fetched.get
    else:
        raise SlimexpError(f"--source must be store or wandb, got '{source}'")
    return point_records(configs, lookup)[0]


def build_report(
    experiment: str,
    store: ResultsStore | str | Path = "results",
    fmt: str = "md",
    plots_dir: str | Path | None = None,
    records: list[dict] | None = None,
    link_from: str | Path | None = None,
    overrides: list[str] | None = None,
) -> str:
    """The table in `fmt`; with `plots_dir`, the block's plots are written there as PNG and,
    in markdown, linked below the table (relative to `link_from`, default `plots_dir`)."""
    name, block = report_block(experiment)
    reference = None
    if block.get("reference"):
        reference = load_reference(
            EXPERIMENTS_DIR / block["reference"], list(block["rows"]), list(block.get("columns") or [])
        )
    if records is None:
        store = store if isinstance(store, ResultsStore) else ResultsStore(store)
        records = experiment_records(experiment, "store", store, overrides)
    text = render(experiment_table(records, name, block, reference), fmt, block.get("title"))
    if block.get("claims") and fmt == "md":
        verdicts = render_claims(claims_table(records, block["claims"]))
        text += "\n### Claims, judged from per-item evidence\n\n" + verdicts
    if plots_dir is not None and block.get("plots"):
        stem = Path(experiment.removeprefix("experiment=")).name
        paths = experiment_plots(selected_records(records, name, block), block, reference, plots_dir, stem)
        if fmt == "md":
            base = Path(link_from or plots_dir)
            text += "\n" + "\n".join(f"![{p.stem}]({os.path.relpath(p, base)})" for p in paths) + "\n"
    return text


def write_reports(names: list[str], output_dir: str | Path, results_dir: str | Path, overrides: list[str]) -> int:
    """Each experiment's markdown report (with its plots) as `<output_dir>/<name>.md`.
    Experiments with no done run are listed, not failed; a report that cannot be made (a
    cell backed by two records, a bad reference table) makes the exit code 1 after the
    others are written."""
    store = ResultsStore(results_dir)
    empty, failed = [], 0
    for name in names:
        target = Path(output_dir) / f"{name}.md"
        try:
            text = build_report(name, store, "md", plots_dir=target.parent, overrides=overrides)
        except NoRuns:
            empty.append(name)
            continue
        except SlimexpError as err:
            print(f"slimexp-report: error: {name}: {err}", file=sys.stderr)
            failed += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    print(
        f"slimexp-report: {len(names) - len(empty) - failed} of {len(names)} report(s) written to {output_dir}",
        file=sys.stderr,
    )
    if empty:
        print(f"slimexp-report: no done runs yet: {', '.join(empty)}", file=sys.stderr)
    store.warn_unreadable()
    return 1 if failed else 0


def _runs_made_elsewhere(store: ResultsStore, experiment: str) -> str:
    """A hint when an experiment's points find nothing but the store holds runs it labelled."""
    name, _ = report_block(experiment)
    labelled = [r for r in store.records() if r.get("experiment") == name and r.get("status") == "done"]
    if not labelled:
        return ""
    return (
        f"; {len(labelled)} done run(s) labelled {name} were made with other settings: pass the overrides "
        "the sweep ran with, e.g. --override scale=paper"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimexp-report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "experiment", nargs="?", help="experiment file under experiments/, e.g. smoke or slimllm/table4_ablation"
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="every experiment of the catalog, each as <output-dir>/<name>.md with its plots",
    )
    parser.add_argument("--output-dir", default=None, help="with --all (default: <results-dir>/reports)")
    parser.add_argument("--format", default="md", choices=("md", "csv", "latex"))
    parser.add_argument("--output", help="write here instead of stdout")
    parser.add_argument("--plots", metavar="DIR", help="write the experiment's plots (PNG) here")
    parser.add_argument("--results-dir", default=os.environ.get("SLIMEXP_RESULTS_DIR", "results"))
    parser.add_argument("--source", default="store", choices=("store", "wandb"))
    parser.add_argument(
        "--override", action="append", default=[], help="an override the sweep ran with (repeatable), e.g. scale=paper"
    )
    parser.add_argument(
        "--wandb-dir", help="with --source wandb: read offline runs here (logger.dir) instead of the API"
    )
    parser.add_argument("--project", default="slimexp")
    parser.add_argument("--entity", default=None)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.all == bool(args.experiment):
        parser.error("name one experiment or pass --all")
    if args.all:
        output_dir = args.output_dir or str(Path(args.results_dir) / "reports")
        sys.exit(write_reports(experiment_names(), output_dir, args.results_dir, args.override))
    store = ResultsStore(args.results_dir)
    try:
        records = experiment_records(
            args.experiment, args.source, store, args.override, args.wandb_dir, args.project, args.entity
        )
        link_from = Path(args.output).parent if args.output else Path.cwd()
        text = build_report(args.experiment, store, args.format, args.plots, records, link_from)
    except NoRuns as err:
        hint = _runs_made_elsewhere(store, args.experiment) if args.source == "store" else ""
        print(f"slimexp-report: error: {err}{hint}", file=sys.stderr)
        sys.exit(2)
    except SlimexpError as err:
        print(f"slimexp-report: error: {err}", file=sys.stderr)
        sys.exit(2)
    store.warn_unreadable()
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
