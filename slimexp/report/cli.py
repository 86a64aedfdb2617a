"""`slimexp-report EXPERIMENT [--format md|csv|latex] [--output FILE] [--plots DIR]`: the
experiment's table (and its plots as PNG) from the results store, offline; with
`--source wandb`, from W&B instead (offline runs with `--wandb-dir`, else the W&B API)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from slimexp.errors import SlimexpError
from slimexp.report.plots import experiment_plots
from slimexp.report.tables import experiment_table, load_reference, render, selected_records
from slimexp.tracking.store import ResultsStore

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"


def report_block(experiment: str) -> tuple[str, dict]:
    """(experiment_name, report block) of `experiments/<experiment>.yaml`."""
    path = EXPERIMENTS_DIR / f"{experiment.removeprefix('experiment=')}.yaml"
    if not path.exists():
        known = sorted(str(p.relative_to(EXPERIMENTS_DIR).with_suffix("")) for p in EXPERIMENTS_DIR.rglob("*.yaml"))
        raise SlimexpError(f"unknown experiment '{experiment}'; known: {', '.join(known)}")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not cfg.get("report"):
        raise SlimexpError(f"{path} has no report: block")
    return cfg.get("experiment_name", experiment), cfg["report"]


def experiment_records(experiment: str, source: str = "store", results_dir: str | Path = "results",
                       overrides: list[str] | None = None, wandb_dir: str | None = None,
                       project: str = "slimexp", entity: str | None = None) -> list[dict]:
    """The records a report reads. The store lists each run under every experiment that
    asked for it; W&B knows a run by its id, the run key, so the experiment's sweep points
    (composed with `overrides`, e.g. scale=paper) say which runs to fetch."""
    if source == "store":
        return list(ResultsStore(results_dir).records())
    if source != "wandb":
        raise SlimexpError(f"--source must be store or wandb, got '{source}'")
    from slimexp.catalog import resolved_points
    from slimexp.tracking.store import run_key
    from slimexp.tracking.wandb_logger import wandb_records

    name, _ = report_block(experiment)
    keys = list(dict.fromkeys(run_key(c) for c in resolved_points(experiment.removeprefix("experiment="), overrides or [])))
    return [{**r, "experiments": [name]} for r in wandb_records(keys, wandb_dir, project, entity)]


def build_report(experiment: str, results_dir: str | Path = "results", fmt: str = "md", plots_dir: str | Path | None = None,
                 records: list[dict] | None = None, link_from: str | Path | None = None) -> str:
    """The table in `fmt`; with `plots_dir`, the block's plots are written there as PNG and,
    in markdown, linked below the table (relative to `link_from`, default `plots_dir`)."""
    name, block = report_block(experiment)
    reference = None
    if block.get("reference"):
        reference = load_reference(EXPERIMENTS_DIR / block["reference"], list(block["rows"]), list(block.get("columns") or []))
    records = list(ResultsStore(results_dir).records()) if records is None else records
    text = render(experiment_table(records, name, block, reference), fmt, block.get("title"))
    if plots_dir is not None and block.get("plots"):
        stem = Path(experiment.removeprefix("experiment=")).name
        paths = experiment_plots(selected_records(records, name, block), block, reference, plots_dir, stem)
        if fmt == "md":
            base = Path(link_from or plots_dir)
            text += "\n" + "\n".join(f"![{p.stem}]({os.path.relpath(p, base)})" for p in paths) + "\n"
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="slimexp-report", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", nargs="?", help="experiment file under experiments/, e.g. smoke or slimllm/table4_ablation")
    parser.add_argument("--all", action="store_true",
                        help="every experiment of the catalog, each as <output-dir>/<name>.md with its plots")
    parser.add_argument("--output-dir", default=None, help="with --all (default: <results-dir>/reports)")
    parser.add_argument("--format", default="md", choices=("md", "csv", "latex"))
    parser.add_argument("--output", help="write here instead of stdout")
    parser.add_argument("--plots", metavar="DIR", help="write the experiment's plots (PNG) here")
    parser.add_argument("--results-dir", default=os.environ.get("SLIMEXP_RESULTS_DIR", "results"))
    parser.add_argument("--source", default="store", choices=("store", "wandb"))
    parser.add_argument("--override", action="append", default=[],
                        help="with --source wandb: overrides the sweep ran with, e.g. scale=paper")
    parser.add_argument("--wandb-dir", help="with --source wandb: read offline runs here (logger.dir) instead of the API")
    parser.add_argument("--project", default="slimexp")
    parser.add_argument("--entity", default=None)
    args = parser.parse_args(argv)
    if args.all == bool(args.experiment):
        parser.error("name one experiment or pass --all")
    if args.all:
        from slimexp.catalog import experiment_names, main as catalog_main

        output_dir = args.output_dir or str(Path(args.results_dir) / "reports")
        sys.exit(catalog_main(["report", *experiment_names(), "--output-dir", output_dir, "--results-dir", args.results_dir]))
    try:
        records = experiment_records(args.experiment, args.source, args.results_dir, args.override,
                                     args.wandb_dir, args.project, args.entity)
        link_from = Path(args.output).parent if args.output else Path.cwd()
        text = build_report(args.experiment, args.results_dir, args.format, args.plots, records, link_from)
    except SlimexpError as err:
        print(f"slimexp-report: error: {err}", file=sys.stderr)
        sys.exit(2)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
