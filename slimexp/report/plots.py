"""PNG figures of an experiment, drawn from the same records as its table.

A `report:` block may list plots:

    plots:
      - {kind: curve, x: config.schedule.alpha, y: [ppl/wikitext2, ppl/ptb], logy: true}
      - {kind: curve, x: config.schedule.name, y: [ppl/wikitext2]}   # text x: grouped bars
      - {kind: layers, y: [ratio], series: [method, ratio]}          # per layer: widths[i][y]
      - {kind: layers, y: [analysis.ffn_output_mse], series: [ratio], logy: true}

`curve` draws one metric per panel against `x` (a record field, as in `rows`), one line
per value of the `series` fields; where the reference CSV has the metric, the published
curve is drawn in a panel beside ours (the models differ, so the axes do too). `layers`
draws a per-layer quantity of every run: a key of the record's `widths` entries, or a
per-layer list under `analysis.`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from slimexp.errors import SlimexpError
from slimexp.report.tables import field, one_record_per_cell, records_frame

KINDS = ("curve", "layers")
log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _label(record: dict[str, Any], series: list[str]) -> str:
    return ", ".join(f"{name.split('.')[-1]}={field(record, name)}" for name in series) or record["run_key"]


def _layer_values(record: dict[str, Any], name: str) -> list[float] | None:
    if name.startswith("analysis."):
        values = field(record, name)
        return list(values) if isinstance(values, list) else None
    widths = record.get("widths") or []
    values = [layer.get(name) for layer in widths]
    return values if widths and any(v is not None for v in values) else None


def _text(values: pd.Series) -> pd.Series:
    """Category labels; a missing value is "-" (pandas 3 keeps NaN through astype(str))."""
    return values.map(lambda v: "-" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))


def _draw_curve(
    ax,
    frame: pd.DataFrame,
    x: str,
    metric: str,
    series: list[str],
    logy: bool,
    title: str,
    order: list[str] | None = None,
) -> None:
    numeric = pd.to_numeric(frame[x], errors="coerce").notna().all()
    groups = list(frame.groupby(series, dropna=False)) if series else [((), frame)]
    if numeric:
        for key, part in groups:
            part = part.assign(_x=pd.to_numeric(part[x])).sort_values("_x")
            ax.plot(
                part["_x"],
                part[metric],
                marker="o",
                label=", ".join(map(str, key if isinstance(key, tuple) else (key,))) or None,
            )
    else:
        present = list(dict.fromkeys(_text(frame[x])))
        categories = [c for c in order or [] if c in present] + [c for c in present if c not in (order or [])]
        width = 0.8 / max(len(groups), 1)
        for i, (key, part) in enumerate(groups):
            heights = part.groupby(_text(part[x]))[metric].first().reindex(categories)
            positions = [c + (i - (len(groups) - 1) / 2) * width for c in range(len(categories))]
            ax.bar(
                positions,
                heights.values,
                width=width,
                label=", ".join(map(str, key if isinstance(key, tuple) else (key,))) or None,
            )
        ax.set_xticks(range(len(categories)), [c.split("/")[-1] for c in categories], rotation=30, ha="right")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(x.split(".")[-1])
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    if series and len(groups) > 1:
        ax.legend(fontsize=7, title=", ".join(s.split(".")[-1] for s in series), title_fontsize=7)
    ax.grid(alpha=0.3)


def curve_figure(records: list[dict[str, Any]], spec: dict[str, Any], reference: pd.DataFrame | None):
    x, metrics, series = spec["x"], list(spec["y"]), list(spec.get("series") or [])
    one_record_per_cell(records, [x, *series], "plot")  # a point or bar is one run, never a mean
    frame = records_frame(records, [x, *series], metrics)
    with_paper = [m for m in metrics if reference is not None and x in reference and m in reference]
    plt = _pyplot()
    columns = 2 if with_paper else 1
    fig, axes = plt.subplots(len(metrics), columns, figsize=(4.5 * columns, 3.2 * len(metrics)), squeeze=False)
    model = ", ".join(sorted({str(r.get("model")) for r in records}))
    order = list(dict.fromkeys(_text(reference[x]))) if reference is not None and x in reference else None
    for row, metric in enumerate(metrics):
        _draw_curve(
            axes[row][0],
            frame.dropna(subset=[metric]),
            x,
            metric,
            series,
            spec.get("logy", False),
            f"ours ({model})",
            order,
        )
        if with_paper:
            if metric in with_paper:
                paper = reference.assign(**{metric: pd.to_numeric(reference[metric], errors="coerce")}).dropna(
                    subset=[metric]
                )
                paper_series = [s for s in series if s in paper]
                _draw_curve(axes[row][1], paper, x, metric, paper_series, spec.get("logy", False), "paper", order)
            else:
                axes[row][1].axis("off")
    return fig


def layers_figure(records: list[dict[str, Any]], spec: dict[str, Any]):
    names, series = list(spec["y"]), list(spec.get("series") or [])
    plt = _pyplot()
    fig, axes = plt.subplots(len(names), 1, figsize=(6.5, 3.0 * len(names)), squeeze=False)
    drawn = 0
    for ax, name in zip((row[0] for row in axes), names):
        for record in sorted(records, key=lambda r: [str(field(r, s)) for s in series]):
            values = _layer_values(record, name)
            if values is None:
                continue
            ax.plot(range(len(values)), values, marker=".", label=_label(record, series))
            drawn += 1
        if spec.get("logy"):
            ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_ylabel(name.split(".")[-1])
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    if not drawn:
        plt.close(fig)
        raise SlimexpError(f"no run of the plot has per-layer values of {names}")
    return fig


def experiment_plots(
    records: list[dict[str, Any]], block: dict[str, Any], reference: pd.DataFrame | None, out_dir: str | Path, stem: str
) -> list[Path]:
    """Every plot of the report block as `<out_dir>/<stem>_<what>.png`; the paths, in order.
    A plot whose runs lack its data (no per-layer values yet) is skipped with a warning, so
    the table is still written; a malformed plot spec is an error."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in block.get("plots") or []:
        kind = spec.get("kind")
        if kind not in KINDS:
            raise SlimexpError(f"plot kind must be one of {KINDS}, got '{kind}'")
        spec = {**spec, "y": [spec["y"]] if isinstance(spec.get("y"), str) else spec.get("y")}
        if not spec["y"] or (kind == "curve" and not spec.get("x")):
            raise SlimexpError(f"a {kind} plot needs y{' and x' if kind == 'curve' else ''}: {spec}")
        what = f"{spec.get('x', 'layer')}_{'_'.join(spec['y'])}"
        path = out_dir / f"{stem}_{_slug(what)}.png"
        try:
            fig = curve_figure(records, spec, reference) if kind == "curve" else layers_figure(records, spec)
        except SlimexpError as err:
            log.warning("plot %s skipped: %s", path.name, err)
            continue
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        _pyplot().close(fig)
        paths.append(path)
    return paths
