"""The markdown table of `bench/device_check.py`'s results."""

from __future__ import annotations

import math

FLIP_ROWS = 20  # per method in the table; results.json holds them all
GIB = 2**30


def _num(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _sci(value) -> str:
    if value is None:
        return "–"
    return "inf" if math.isinf(value) else f"{value:.2e}"


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def part_a_lines(rows: dict, ratio: float) -> list[str]:
    lines = [
        f"### (a) SmolLM2-135M, `scale=cpu` protocol, ratio {ratio}: device against CPU",
        "",
        _row(("method", "calibration", "layers differing", "units differing", "judged flips (worst σ)",
              "downstream decisions", "ppl CPU", "ppl device", "Δ ppl rel", "prune s CPU / device", "verdict")),
        _row(["---"] * 11),
    ]  # fmt: skip
    for name, row in rows.items():
        if row.get("verdict") == "ERROR":
            error = row.get("error") or row["reference"].get("error")
            lines.append(_row((name, "", "", "", "", "", "", "", "", "", f"ERROR: {error}")))
            continue
        sel, ref = row["selection"], row["reference"]
        flips = sel["judged_flips"]
        lines.append(
            _row((
                name, row["calibration"], sel["layers_differing"], sel["units_differing"],
                f"{len(flips)} ({_sci(sel['worst_margin_sigma'])})" if flips else "0",
                sel["downstream_decisions"], _num(ref["ppl_wikitext2"]), _num(row["ppl_wikitext2"]),
                _sci(row["ppl_rel_diff"]), f"{ref['prune_s']:.1f} / {row['prune_s']:.1f}", row["verdict"],
            ))
        )  # fmt: skip
    lines += flip_lines(rows)
    return lines


def flip_lines(rows: dict) -> list[str]:
    listed = [(name, f) for name, row in rows.items() for f in row.get("selection", {}).get("judged_flips", [])]
    if not listed:
        return []
    lines = [
        "",
        "Flips where the runs first parted (margin: |score − cut-off| in σ of that decision's scores, "
        "CPU / device, and relative to the cut-off):",
        "",
        _row(("method", "layer", "module", "step", "unit", "removed by", "score CPU", "cut-off CPU", "margin σ",
              "margin rel")),
        _row(["---"] * 10),
    ]  # fmt: skip
    shown: dict[str, int] = {}
    for name, f in listed:
        shown[name] = shown.get(name, 0) + 1
        if shown[name] > FLIP_ROWS:
            continue
        lines.append(
            _row((
                name, f["layer"], f["module"], f["step"], f["unit"], f["removed_by"], _sci(f.get("score_ref")),
                _sci(f.get("cutoff_ref")), f"{_sci(f.get('sigma_ref'))} / {_sci(f.get('sigma_dev'))}",
                _sci(f.get("rel_ref")),
            ))
        )  # fmt: skip
    for name, count in shown.items():
        if count > FLIP_ROWS:
            lines.append(f"\n{name}: {count - FLIP_ROWS} more flips in results.json")
    return lines


def part_bc_lines(part: str, rows: dict, layers: int) -> list[str]:
    first = next((r for r in rows.values() if "error" not in r), None)
    title = first["geometry"] if first else part
    dtype = first["dtype"] if first else ""
    lines = [
        f"### ({part}) random-weight {title} geometry, {layers} decoder layers, {dtype}, synthetic tokens",
        "",
        _row(("method", "calibration", "prune s", "s/layer mean (max)", "outside layers s", "peak GiB/layer (max)",
              "peak GiB", "planned GiB", "planned s", "achieved ratio")),
        _row(["---"] * 10),
    ]  # fmt: skip
    notes = set()
    for name, row in rows.items():
        if "error" in row:
            lines.append(_row((name, f"ERROR: {row['error']}", *[""] * 8)))
            continue
        layer_s = row["layer_s"]
        peaks = [p for p in row["layer_peak_bytes"] or [] if p is not None]
        plan = row["planned"]
        if plan.get("error"):
            notes.add(f"planner: {plan['error']}")
        calibration = row["calibration"] + (f" ({row['cap']})" if row.get("cap") else "")
        lines.append(
            _row((
                name, calibration, _num(row["prune_s"]),
                f"{_num(sum(layer_s) / len(layer_s))} ({_num(max(layer_s))})" if layer_s else "–",
                _num(row["outside_layers_s"]), _num(max(peaks) / GIB) if peaks else "–",
                _num(row["peak_bytes"] / GIB) if row["peak_bytes"] is not None else "–",
                _num(plan["accelerator_bytes"] / GIB) if plan.get("accelerator_bytes") is not None else "–",
                _num(plan.get("seconds")), _num(row["achieved_ratio"], 3),
            ))
        )  # fmt: skip
    return lines + [f"\n{note}" for note in sorted(notes)]


def markdown(results: dict) -> str:
    lines = [
        f"## Device check: {results['device']}, torch {results['torch']}",
        "",
        f"Mode: {results['mode']}. Flips are judged near-ties at ≤ {results['near_tie_sigma']} σ; "
        f"perplexity (WikiText-2) must agree within {results['ppl_tolerance']:.0%} relative."
        + (f" Wall time {results['wall_s']:.0f} s." if "wall_s" in results else ""),
        "",
    ]
    if "part_a" in results:
        lines += part_a_lines(results["part_a"], results["ratio"]) + [""]
    for part in "bc":
        if f"part_{part}" in results:
            lines += part_bc_lines(part, results[f"part_{part}"], results["layers_bc"]) + [""]
    return "\n".join(lines)
