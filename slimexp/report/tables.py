"""From store records to the paper's table layout.

A `report:` block in an experiment file says what the table is:

    report:
      title: "..."
      rows: [method]            # record fields: top-level (method, model, ratio, finetune)
      columns: [ratio]          #   or dotted paths (config.method.alpha, protocol.calibration.n_samples)
      metrics: [ppl/wikitext2]  # keys of record["metrics"]
      filter: {finetune: none}  # optional: keep records whose fields equal these values
      reference: slimllm/reference/table1.csv   # optional, relative to experiments/

The reference CSV has the row and column fields and one column per metric, with the
published numbers; the table then shows ours, the paper's and the difference. An optional
`plots:` list draws PNG figures from the same records (slimexp.report.plots).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from slimexp.errors import SlimexpError
from slimexp.tracking.store import listed_experiments

TOP_LEVEL = ("run_key", "status", "experiment", "method", "model", "ratio", "finetune")


def field(record: dict[str, Any], path: str) -> Any:
    if path in record and not isinstance(record[path], dict):
        return record[path]
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def in_experiment(record: dict[str, Any], experiment: str) -> bool:
    return experiment in listed_experiments(record)


def selected_records(records: Iterable[dict[str, Any]], experiment: str, block: dict[str, Any]) -> list[dict[str, Any]]:
    """The experiment's done runs that pass the block's filter: what its table and plots show."""
    chosen = [r for r in records if r.get("status") == "done" and in_experiment(r, experiment)]
    for name, value in (block.get("filter") or {}).items():
        chosen = [r for r in chosen if field(r, name) == value]
    if not chosen:
        raise SlimexpError(f"no done runs of experiment '{experiment}' in the store")
    return chosen


def records_frame(records: Iterable[dict[str, Any]], fields: Iterable[str], metrics: Iterable[str]) -> pd.DataFrame:
    fields, metrics = list(dict.fromkeys([*TOP_LEVEL, *fields])), list(metrics)
    rows = []
    for record in records:
        row = {name: field(record, name) for name in fields}
        row.update({m: record.get("metrics", {}).get(m) for m in metrics})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*fields, *metrics])
    for m in metrics:
        frame[m] = pd.to_numeric(frame[m], errors="coerce")
    return frame


def _pivot(frame: pd.DataFrame, rows: list[str], columns: list[str], metrics: list[str]) -> pd.DataFrame:
    frame = frame.copy()
    for name in [*rows, *columns]:
        frame[name] = frame[name].map(lambda v: "-" if v is None or (isinstance(v, float) and pd.isna(v)) else v)
    if columns:
        table = frame.pivot_table(index=rows, columns=columns, values=metrics, aggfunc="mean", dropna=False)
        if len(metrics) == 1:
            table = table[metrics[0]]
    else:
        table = frame.groupby(rows, dropna=False)[metrics].mean()
    return table.dropna(how="all")


def experiment_table(records: Iterable[dict[str, Any]], experiment: str, block: dict[str, Any],
                     reference: pd.DataFrame | None = None) -> pd.DataFrame:
    rows, columns, metrics = list(block["rows"]), list(block.get("columns") or []), list(block["metrics"])
    frame = records_frame(selected_records(records, experiment, block), [*rows, *columns], metrics)
    ours = _pivot(frame, rows, columns, metrics)
    if reference is None:
        return ours
    paper = _pivot(reference.assign(**{m: pd.to_numeric(reference[m], errors="coerce") for m in metrics if m in reference}),
                   rows, columns, [m for m in metrics if m in reference])
    paper = paper.reindex(columns=ours.columns)
    table = pd.concat({"ours": ours, "paper": paper, "delta": ours - paper}, axis=1)
    return _beside(table, metrics)


def _beside(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Columns ordered metric → column value → ours, paper, delta, so the published number
    sits next to ours; paper/delta columns with no published number are dropped."""
    sources = ["ours", "paper", "delta"]
    keep = [c for c in table.columns if c[0] == "ours" or table[c].notna().any()]
    table = table[keep]
    order = sorted(table.columns, key=lambda c: (_rank(c[1], metrics), *map(str, c[2:]), sources.index(c[0])))
    table = table[order]
    table.columns = pd.MultiIndex.from_tuples([(*c[1:], c[0]) for c in order])
    return table


def _rank(value, metrics: list[str]):
    return (metrics.index(value), "") if value in metrics else (len(metrics), str(value))


def load_reference(path: Path, rows: list[str], columns: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise SlimexpError(f"reference numbers {path} not found")
    frame = pd.read_csv(path)
    missing = [c for c in [*rows, *columns] if c not in frame.columns]
    if missing:
        raise SlimexpError(f"reference {path} lacks columns {missing}")
    return frame


def flat(table: pd.DataFrame) -> pd.DataFrame:
    """Row keys as columns and one header row ("ours ppl/wikitext2 0.2"): for md and csv."""
    table = table.copy()
    if isinstance(table.columns, pd.MultiIndex):
        table.columns = [" ".join(str(part) for part in col) for col in table.columns]
    else:
        table.columns = [str(col) for col in table.columns]
    table.index.names = [name.removeprefix("config.").removeprefix("protocol.") for name in table.index.names]
    return table.reset_index()


def render(table: pd.DataFrame, fmt: str, title: str | None = None, digits: int = 2) -> str:
    table = table.round(digits)
    if fmt == "md":
        frame = flat(table)
        frame = frame.astype(object).where(frame.notna(), None)  # tabulate prints None as missingval
        body = frame.to_markdown(index=False, floatfmt=f".{digits}f", missingval="–")
        return f"### {title}\n\n{body}\n" if title else body + "\n"
    if fmt == "csv":
        return flat(table).to_csv(index=False)
    if fmt == "latex":
        return table.to_latex(float_format=f"%.{digits}f", caption=title, na_rep="-")
    raise SlimexpError(f"unknown format '{fmt}' (md | csv | latex)")
