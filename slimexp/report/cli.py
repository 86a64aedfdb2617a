"""`slimexp-report EXPERIMENT [--format md|csv|latex] [--output FILE]`: the experiment's
table from the results store (no W&B, no network)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from slimexp.errors import SlimexpError
from slimexp.report.tables import experiment_table, load_reference, render
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


def build_report(experiment: str, results_dir: str | Path, fmt: str = "md") -> str:
    name, block = report_block(experiment)
    reference = None
    if block.get("reference"):
        reference = load_reference(EXPERIMENTS_DIR / block["reference"], list(block["rows"]), list(block.get("columns") or []))
    table = experiment_table(ResultsStore(results_dir).records(), name, block, reference)
    return render(table, fmt, block.get("title"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="slimexp-report", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="experiment file under experiments/, e.g. smoke or slimllm/table4_ablation")
    parser.add_argument("--format", default="md", choices=("md", "csv", "latex"))
    parser.add_argument("--output", help="write here instead of stdout")
    parser.add_argument("--results-dir", default=os.environ.get("SLIMEXP_RESULTS_DIR", "results"))
    args = parser.parse_args(argv)
    try:
        text = build_report(args.experiment, args.results_dir, args.format)
    except SlimexpError as err:
        print(f"slimexp-report: error: {err}", file=sys.stderr)
        sys.exit(2)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
