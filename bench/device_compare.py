"""Compare what two pruning runs of the same model removed (`PruneResult.selections`):
which layers differ, and for each flip where the runs first parted, how close the unit
was to its decision's cut-off, so a near-tie can be told from a bug.

A decision is one choice of a method: its scores (lower goes; +inf for units that could
not be chosen), what it removed, and its threshold when it has one (FLAP's global cut);
otherwise the cut-off nearest the unit is taken: the midpoint between adjacent scores
(in sorted order) where removed turns into kept. A flip's margin is |score − cut-off|
in standard deviations of that decision's scores (`sigma`) and relative to the cut-off
(`rel`); both runs' margins are computed and the larger one is judged.

Methods that pass each layer's pruned output on (`sequential`, `dense_pass`) diverge
everywhere after their first flip: only that first differing decision is judged, later
ones are counted as downstream. Methods that score the dense model (`global`,
`whole_model`) decide each layer on its own: every differing decision is judged.
"""

from __future__ import annotations

import math
from itertools import zip_longest

CHAINED_ORDERS = ("sequential", "dense_pass")


def _finite(scores: list[float]) -> list[float]:
    return [s for s in scores if math.isfinite(s)]


def _spread(scores: list[float]) -> float:
    values = _finite(scores)
    if len(values) < 2:
        return 1.0
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return std if std > 0 else 1.0


def _cutoffs(scores: list[float], removed: set[int]) -> list[float]:
    """Midpoints between adjacent sorted finite scores where removed turns into kept."""
    order = sorted((i for i, s in enumerate(scores) if math.isfinite(s)), key=lambda i: scores[i])
    return [(scores[a] + scores[b]) / 2 for a, b in zip(order, order[1:]) if (a in removed) != (b in removed)]


def margin(decision: dict, unit: int) -> dict:
    """How far `unit`'s score is from the decision's cut-off: sigma and rel (inf: no cut-off,
    or the unit was not a candidate)."""
    scores = decision["scores"]
    score = scores[unit] if unit < len(scores) else math.inf
    if decision.get("threshold") is not None:
        cutoffs = [decision["threshold"]]
    else:
        cutoffs = _cutoffs(scores, set(decision["removed"]))
    if not math.isfinite(score) or not cutoffs:
        return {"score": score, "cutoff": None, "sigma": math.inf, "rel": math.inf}
    cutoff = min(cutoffs, key=lambda c: abs(score - c))
    gap = abs(score - cutoff)
    rel = gap / abs(cutoff) if cutoff else (0.0 if gap == 0 else math.inf)
    return {"score": score, "cutoff": cutoff, "sigma": gap / _spread(scores), "rel": rel}


def decision_flips(layer: int, step: int, ref: dict, dev: dict) -> list[dict]:
    """One row per unit removed by one run only, with both runs' margins."""
    ref_removed, dev_removed = set(ref["removed"]), set(dev["removed"])
    rows = []
    for unit in sorted(ref_removed ^ dev_removed):
        m_ref, m_dev = margin(ref, unit), margin(dev, unit)
        rows.append(
            {
                "layer": layer,
                "module": ref["module"],
                "step": step,
                "unit": unit,
                "removed_by": "reference" if unit in ref_removed else "device",
                "score_ref": m_ref["score"],
                "score_dev": m_dev["score"],
                "cutoff_ref": m_ref["cutoff"],
                "sigma_ref": m_ref["sigma"],
                "sigma_dev": m_dev["sigma"],
                "rel_ref": m_ref["rel"],
                "margin_sigma": max(m_ref["sigma"], m_dev["sigma"]),
            }
        )
    return rows


def _structural(layer: int, step: int, ref: dict | None, dev: dict | None) -> dict:
    """A decision one run made and the other did not (or over other modules)."""
    which = "device" if ref is None else "reference" if dev is None else "both (different modules)"
    module = (ref or dev)["module"]
    return {"layer": layer, "module": module, "step": step, "unit": None, "removed_by": which, "margin_sigma": math.inf}


def layer_differences(ref: list[dict], dev: list[dict]) -> list[dict]:
    """Per layer whose removed units or channels differ: what only one run removed."""
    rows = []
    for r, d in zip(ref, dev):
        row = {"layer": r["layer"]}
        for module in ("attn", "ffn"):
            a, b = set(r[module]), set(d[module])
            if a != b:
                row[f"{module}_only_ref"], row[f"{module}_only_dev"] = sorted(a - b), sorted(b - a)
        if len(row) > 1:
            rows.append(row)
    return rows


def compare(ref: list[dict], dev: list[dict], order: str, near_tie: float) -> dict:
    """Differences between two runs' selections and whether every judged flip is a near-tie
    (margin ≤ `near_tie` standard deviations of its decision's scores)."""
    chained = order in CHAINED_ORDERS
    flips, downstream, parted = [], 0, len(ref) != len(dev)
    for r, d in zip(ref, dev):
        for step, (rd, dd) in enumerate(zip_longest(r["decisions"], d["decisions"])):
            same = rd is not None and dd is not None and rd["module"] == dd["module"]
            if same and rd["removed"] == dd["removed"]:
                continue
            if chained and parted:
                downstream += 1
                continue
            parted = True
            flips += decision_flips(r["layer"], step, rd, dd) if same else [_structural(r["layer"], step, rd, dd)]
    differences = layer_differences(ref, dev)
    worst = max((f["margin_sigma"] for f in flips), default=0.0)
    return {
        "identical": not differences and not flips and len(ref) == len(dev),
        "layers_differing": len(differences),
        "units_differing": sum(len(v) for row in differences for k, v in row.items() if k != "layer"),
        "differences": differences,
        "judged_flips": flips,
        "downstream_decisions": downstream,
        "worst_margin_sigma": worst,
        "near_ties_only": worst <= near_tie and len(ref) == len(dev),
    }


def selections_to_json(selections: list[dict]) -> list[dict]:
    """`PruneResult.selections` with each decision's scores as a list of floats."""
    return [
        {
            **{k: v for k, v in s.items() if k != "decisions"},
            "decisions": [{**d, "scores": [float(f"{x:.9g}") for x in d["scores"].tolist()]} for d in s["decisions"]],
        }
        for s in selections
    ]
