"""From an experiment's records to the paper's table layout.

A `report:` block in an experiment file says what the table is:

    report:
      title: "..."
      rows: [method]            # record fields: top-level (method, model, ratio, finetune)
      columns: [ratio]          #   or dotted paths (config.method.alpha, protocol.calibration.n_samples)
      metrics: [ppl/wikitext2]  # keys of record["metrics"]
      filter: {finetune: none}  # optional: keep records whose fields equal these values
      reference: slimllm/reference/table1.csv   # optional, relative to experiments/
      duplicates: error         # optional: `split` shows records sharing a cell as separate rows

A cell shows exactly one record. Records that land in one cell (rows and columns equal)
are an error naming their run keys and the config keys in which they differ, unless the
block says `duplicates: split`: those keys then become extra row fields. The one exception
is seed replicates (records differing only in `config.seed`, each seed once): the cell
shows their mean, with the 95% t interval's half width and n beside it. The reference CSV
has the row and column fields and one column per metric, with the published numbers; the
table then shows ours, the paper's and the difference. An optional `plots:` list draws PNG
figures from the same records (slimexp.report.plots).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from slimexp.errors import SlimexpError
from slimexp.tracking.store import science_config

TOP_LEVEL = ("run_key", "status", "experiment", "method", "model", "ratio", "finetune")
SEED_KEY = "config.seed"
DUPLICATE_POLICIES = ("error", "split")
LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


class NoRuns(SlimexpError):
    """An experiment with no done run (yet): listed, not failed, by `--all`."""


def field(record: dict[str, Any], path: str) -> Any:
    if path in record and not isinstance(record[path], dict):
        return record[path]
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def selected_records(records: Iterable[dict[str, Any]], experiment: str, block: dict[str, Any]) -> list[dict[str, Any]]:
    """The experiment's done runs that pass the block's filter: what its table and plots show."""
    chosen = [r for r in records if r.get("status") == "done"]
    for name, value in (block.get("filter") or {}).items():
        chosen = [r for r in chosen if field(r, name) == value]
    if not chosen:
        raise NoRuns(f"no done runs of experiment '{experiment}' in the store")
    return chosen


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    flat = {}
    for key, value in node.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def differing_keys(records: list[dict[str, Any]]) -> list[str]:
    """The config keys (dotted, as `config.<key>`) whose values differ between the records,
    among those the run key hashes: a batch size or the store's folder tells no two
    computations apart."""
    flats = [_flat(science_config(r.get("config") or {})) for r in records]
    keys = sorted(set().union(*flats))
    return [f"config.{k}" for k in keys if len({repr(f.get(k)) for f in flats}) > 1]


def _cell_value(value: Any) -> Any:
    return "-" if value is None or (isinstance(value, float) and pd.isna(value)) else repr(value)


def shared_cells(records: list[dict[str, Any]], fields: list[str]) -> list[list[dict[str, Any]]]:
    """Groups of records (distinct run keys) that fall into one cell of `fields`."""
    cells: dict[tuple, dict[str, dict]] = {}
    for record in records:
        cell = tuple(_cell_value(field(record, name)) for name in fields)
        cells.setdefault(cell, {})[record["run_key"]] = record
    return [list(group.values()) for group in cells.values() if len(group) > 1]


def seed_replicates(group: list[dict[str, Any]]) -> bool:
    """Records that differ in their seed and nothing else: the one kind a cell may pool."""
    return differing_keys(group) == [SEED_KEY] and len({field(r, SEED_KEY) for r in group}) == len(group)


def one_record_per_cell(records: list[dict[str, Any]], fields: list[str], where: str) -> None:
    """Fail, in one line, when two computations would be shown (or averaged) as one number;
    seed replicates of one computation are pooled (mean, interval, n), nothing else."""
    for group in shared_cells(records, fields):
        if seed_replicates(group):
            continue
        cell = ", ".join(f"{name}={field(group[0], name)}" for name in fields) or "the only cell"
        keys = ", ".join(r["run_key"] for r in group)
        differ = ", ".join(differing_keys(group)[:6]) or "nothing in their configs"
        raise SlimexpError(
            f"{where}: cell ({cell}) holds {len(group)} records ({keys}) that differ in {differ}; "
            "add one of these to report.rows or columns, narrow report.filter, or set report.duplicates: split"
        )


def split_fields(records: list[dict[str, Any]], fields: list[str]) -> list[str]:
    """With `duplicates: split`: the config keys that tell apart the records of each shared cell."""
    extra: list[str] = []
    for group in shared_cells(records, fields):
        extra += [key for key in differing_keys(group) if key not in fields and key not in extra]
    return extra


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


def interval_half_width(values: pd.Series) -> float:
    """Half the width of the 95% t interval of the mean (NaN for one value)."""
    from slimexp.report.evidence import paired_t

    values = values.dropna().tolist()
    if len(values) < 2:
        return float("nan")
    low, high = paired_t(values).interval
    return (high - low) / 2


def _pivot(
    frame: pd.DataFrame, rows: list[str], columns: list[str], metrics: list[str], aggfunc: Any = "first"
) -> pd.DataFrame:
    """One cell per (rows, columns); callers have made sure each holds one record or seed
    replicates of one run, so `first` picks that record's value and never merges two
    computations (`mean`, the interval and the count summarise replicates). The metric
    stays a column level, also when there is one (a CSV header must say what its numbers are)."""
    frame = frame.copy()
    for name in [*rows, *columns]:
        frame[name] = frame[name].map(_index_value)
    if columns:
        table = frame.pivot_table(index=rows, columns=columns, values=metrics, aggfunc=aggfunc, dropna=False)
        # pivot_table sorts the metric level by name: keep the block's order instead.
        table = table[sorted(table.columns, key=lambda column: metrics.index(column[0]))]
    else:
        table = frame.groupby(rows, dropna=False)[metrics].agg(aggfunc)
    return table.dropna(how="all")


def _index_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    return str(value) if isinstance(value, (list, dict, tuple)) else value


def check_reference_cells(reference: pd.DataFrame, fields: list[str], where: str) -> None:
    counts = (
        reference.assign(**{f: reference[f].map(_index_value) for f in fields}).groupby(fields, dropna=False).size()
    )
    shared = counts[counts > 1]
    if len(shared):
        raise SlimexpError(
            f"{where} lists {int(shared.iloc[0])} published rows for the cell {shared.index[0]}; keep one"
        )


def experiment_table(
    records: Iterable[dict[str, Any]], experiment: str, block: dict[str, Any], reference: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The experiment's table from its records (those its sweep points name)."""
    rows, columns, metrics = list(block["rows"]), list(block.get("columns") or []), list(block["metrics"])
    policy = block.get("duplicates", "error")
    if policy not in DUPLICATE_POLICIES:
        raise SlimexpError(f"report.duplicates must be one of {DUPLICATE_POLICIES}, got '{policy}'")
    chosen = selected_records(records, experiment, block)
    if policy == "split":
        rows = [*rows, *split_fields(chosen, [*rows, *columns])]
    one_record_per_cell(chosen, [*rows, *columns], f"report of {experiment}")
    frame = records_frame(chosen, [*rows, *columns], metrics)
    pooled = bool(shared_cells(chosen, [*rows, *columns]))
    ours = _pivot(frame, rows, columns, metrics, "mean" if pooled else "first")
    spread = {}
    if pooled:  # seed replicates: their mean, the 95% interval's half width and n, side by side
        spread = {
            "±95%": _pivot(frame, rows, columns, metrics, interval_half_width).reindex_like(ours),
            "n": _pivot(frame, rows, columns, metrics, "count").reindex_like(ours).astype("Int64"),
        }
    if reference is None:
        if not spread:
            return ours
        return _beside(pd.concat({"ours": ours, **spread}, axis=1), metrics)
    published = [m for m in metrics if m in reference]
    check_reference_cells(reference, [f for f in [*rows, *columns] if f in reference], f"reference of {experiment}")
    paper = _pivot(
        reference.assign(**{m: pd.to_numeric(reference[m], errors="coerce") for m in published}),
        [r for r in rows if r in reference],
        columns,
        published,
    )
    paper = _align(paper, ours)
    table = pd.concat({"ours": ours, **spread, "paper": paper, "delta": ours - paper}, axis=1)
    return _beside(table, metrics)


def _align(paper: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    """The published table on our rows and columns; rows that `duplicates: split` added are
    not in the paper, so each published number sits beside every one of our split rows.
    Published rows we have not run stay, with no number of ours."""
    extra = [name for name in ours.index.names if name not in paper.index.names]
    if extra:
        paper = paper.reindex(ours.index.droplevel(extra)).set_axis(ours.index)
    return paper.reindex(columns=ours.columns)


def _beside(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Columns ordered metric → column value → ours, paper, delta, so the published number
    sits next to ours; paper/delta columns with no published number are dropped."""
    sources = ["ours", "±95%", "n", "paper", "delta"]
    keep = [c for c in table.columns if c[0] in ("ours", "n") or table[c].notna().any()]
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
    """Row keys as columns and one header row ("ppl/wikitext2 0.2 ours"): for md and csv."""
    table = table.copy()
    if isinstance(table.columns, pd.MultiIndex):
        table.columns = [" ".join(_label(part) for part in col) for col in table.columns]
    else:
        table.columns = [_label(col) for col in table.columns]
    table.index.names = [_short(name) for name in table.index.names]
    return table.reset_index()


def _short(name: Any) -> str:
    return str(name).removeprefix("config.").removeprefix("protocol.")


def _label(value: Any) -> str:
    """A header label: 0.2, not 0.200000."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(char, char) for char in text)


def _latex_labels(index: pd.Index, shorten: bool = False) -> pd.Index:
    escape = lambda value: latex_escape(_label(value))  # noqa: E731
    names = [latex_escape(_short(n) if shorten else str(n)) if n is not None else None for n in index.names]
    if isinstance(index, pd.MultiIndex):
        return pd.MultiIndex.from_tuples([tuple(escape(v) for v in entry) for entry in index], names=names)
    return pd.Index([escape(v) for v in index], name=names[0])


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
        table = table.copy()
        table.index = _latex_labels(table.index, shorten=True)
        table.columns = _latex_labels(table.columns)
        caption = latex_escape(title) if title else None
        return table.to_latex(float_format=f"%.{digits}f", caption=caption, na_rep="-", escape=False)
    raise SlimexpError(f"unknown format '{fmt}' (md | csv | latex)")
