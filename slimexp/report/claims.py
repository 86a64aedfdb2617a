"""Claims as data, verdicts by code: the `claims:` list of an experiment's report block.

    report:
      claims:
        - claim: "SlimLLM beats LLM-Pruner at 50%"       # the sentence the table shows
          metric: ppl/wikitext2                           # ppl/<set>, acc/<task> or acc_norm/<task>
          better: {method: slimllm}                       # record fields, as rows/columns name them
          worse: {method: llm_pruner}
          where: {ratio: 0.5}                             # optional: fields both sides share
        - claim: "the schedule order at 50%"
          metric: ppl/wikitext2
          order: [{config.schedule.name: log_increase}, {config.schedule.name: uniform}]  # best first
        - claim: "alpha 7 is best"
          metric: ppl/wikitext2
          best: {config.schedule.alpha: 7}
          others: [{config.schedule.alpha: 1}, {config.schedule.alpha: 10}]

An `order` is judged pair by adjacent pair, a `best` against each other. Each pair is
judged from the records' per-item evidence (slimexp.report.evidence): within each seed
(`config.seed`) a paired test over windows or documents; with two or more seeds a t test
over the per-seed differences decides, else the one seed's test does. A side with two
records for one seed is an error naming them (never averaged); a side without records or
evidence reads `no evidence`, never a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from slimexp.errors import SlimexpError
from slimexp.report.evidence import Comparison, across_seeds, compare_windows, mcnemar
from slimexp.report.tables import field
from slimexp.tracking.store import record_seed_independent

SEED_FIELD = "config.seed"
NO_EVIDENCE = "no evidence"


@dataclass(frozen=True)
class Pair:
    claim: str
    metric: str
    better: dict[str, Any]
    worse: dict[str, Any]


def expand(claims: list[dict[str, Any]]) -> list[Pair]:
    """Every claim as the pairwise comparisons that decide it."""
    pairs = []
    for entry in claims:
        text, metric, where = entry.get("claim"), entry.get("metric"), entry.get("where") or {}
        if not text or not metric:
            raise SlimexpError(f"a claim needs `claim:` (its sentence) and `metric:`, got {entry}")
        if "better" in entry and "worse" in entry:
            sides = [(entry["better"], entry["worse"])]
        elif "order" in entry:
            sides = list(zip(entry["order"], entry["order"][1:]))
        elif "best" in entry and "others" in entry:
            sides = [(entry["best"], other) for other in entry["others"]]
        else:
            raise SlimexpError(f"claim '{text}' needs better/worse, order, or best/others")
        pairs += [Pair(text, metric, {**where, **b}, {**where, **w}) for b, w in sides]
    return pairs


def _matches(record: dict[str, Any], selector: dict[str, Any]) -> bool:
    return all(_same(field(record, key), value) for key, value in selector.items())


def compared_by(record: dict[str, Any], claims: list[dict[str, Any]]) -> bool:
    """Whether one of the claims compares this record (one side of one of its pairs selects it)."""
    return any(_matches(record, side) for pair in expand(claims) for side in (pair.better, pair.worse))


def unmatched_sides(records: list[dict[str, Any]], claims: list[dict[str, Any]]) -> list[str]:
    """Each claim side that selects none of the records (a typo in a `claims:` block when
    the records are all of an experiment's runs): it would read `no evidence` for ever."""
    return list(
        dict.fromkeys(
            f"'{pair.claim}': {side}"
            for pair in expand(claims)
            for side in (pair.better, pair.worse)
            if not any(_matches(record, side) for record in records)
        )
    )


def _same(value: Any, wanted: Any) -> bool:
    if isinstance(value, (int, float)) and isinstance(wanted, (int, float)):
        return abs(value - wanted) < 1e-9
    return value == wanted or str(value) == str(wanted)


def by_seed(records: list[dict[str, Any]], selector: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    """The side's done record per seed; two for one seed is an error naming them."""
    chosen: dict[Any, dict[str, Any]] = {}
    for record in records:
        if record.get("status") != "done" or not _matches(record, selector):
            continue
        seed = field(record, SEED_FIELD)
        if seed in chosen:
            keys = (chosen[seed]["run_key"], record["run_key"])
            raise SlimexpError(
                f"claim side {selector} has two records for seed {seed}: {keys}; narrow it with `where:`"
            )
        chosen[seed] = record
    return chosen


def for_every_seed(side: dict[Any, dict[str, Any]], other: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """A side that is one seed-independent record (the dense model; a run that drew its
    source's every window) stands beside each of the other side's seeds; any other side is
    its own records."""
    if len(side) == 1 and record_seed_independent(next(iter(side.values()))):
        record = next(iter(side.values()))
        return {seed: record for seed in other} or side
    return side


def evidence_of(record: dict[str, Any], metric: str) -> tuple[list[float] | None, Any]:
    """(items, protocol) behind `metric`: per-window NLLs or per-document correctness."""
    kind, _, name = metric.partition("/")
    if kind == "ppl":
        return (record.get("evidence") or {}).get(metric), (record.get("protocol") or {}).get(metric)
    if kind in ("acc", "acc_norm"):
        documents = (record.get("evidence") or {}).get(f"zeroshot/{name}") or {}
        protocol = (record.get("protocol") or {}).get("zeroshot") or {}
        return documents.get(kind), (protocol.get("limit"), (protocol.get("tasks") or {}).get(name))
    raise SlimexpError(f"claims judge ppl/<set>, acc/<task> or acc_norm/<task>, not '{metric}'")


def compare_seed(better: dict[str, Any], worse: dict[str, Any], metric: str) -> Comparison | None:
    """The within-seed paired comparison, None when either record lacks the evidence."""
    (a, protocol_a), (b, protocol_b) = evidence_of(better, metric), evidence_of(worse, metric)
    if a is None or b is None:
        return None
    if protocol_a != protocol_b:
        raise SlimexpError(
            f"{metric}: records {better['run_key']} and {worse['run_key']} differ in protocol: not comparable"
        )
    return compare_windows(a, b) if metric.startswith("ppl/") else mcnemar(a, b)


def judge(pair: Pair, records: list[dict[str, Any]]) -> dict[str, Any]:
    """One row of the claims table."""
    better, worse = by_seed(records, pair.better), by_seed(records, pair.worse)
    better, worse = for_every_seed(better, worse), for_every_seed(worse, better)
    seeds = sorted(set(better) & set(worse), key=str)
    within = {seed: compare_seed(better[seed], worse[seed], pair.metric) for seed in seeds}
    row = {"claim": pair.claim, "better": _label(pair.better), "worse": _label(pair.worse), "metric": pair.metric}
    if not seeds or any(c is None for c in within.values()):
        return {**row, "verdict": NO_EVIDENCE, "p": None, "difference": None, "interval": None, "seeds": len(seeds)}
    if len(seeds) == 1:
        decided = within[seeds[0]]
    else:
        decided = across_seeds([within[s].difference for s in seeds])
    return {
        **row,
        "verdict": decided.verdict(),
        "p": decided.p,
        "difference": decided.difference,
        "interval": decided.interval,
        "seeds": len(seeds),
        "per_seed": ", ".join(within[s].verdict() for s in seeds),
        "test": decided.test if len(seeds) > 1 else within[seeds[0]].test,
    }


def _label(selector: dict[str, Any]) -> str:
    return ", ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in selector.items())


def claims_table(records: list[dict[str, Any]], claims: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([judge(pair, records) for pair in expand(claims)])


def render_claims(table: pd.DataFrame) -> str:
    """Markdown: one line per pairwise comparison, verdict with p, difference and interval."""
    named = "experiment" in table.columns  # the catalog's table: one row per pair of every experiment
    header = ["experiment"] * named + ["claim", "better", "worse", "metric", "verdict", "Δ (95% interval)", "seeds"]
    lines = ["| " + " | ".join([*header, "per seed"]) + " |", "|---" * (len(header) + 1) + "|"]
    for row in table.to_dict("records"):
        if row["verdict"] == NO_EVIDENCE:
            stats = "–"
            verdict = NO_EVIDENCE
        else:
            low, high = row["interval"]
            stats = f"{row['difference']:+.4g} [{low:+.4g}, {high:+.4g}]"
            verdict = f"{row['verdict']} (p={row['p']:.2g})"
        cells = ([row["experiment"]] if named else []) + [row["claim"], row["better"], row["worse"], row["metric"]]
        cells += [verdict, stats, row["seeds"]]
        per_seed = row.get("per_seed")  # NaN where a table mixes judged and unjudged pairs
        lines.append("| " + " | ".join(str(c) for c in [*cells, per_seed if isinstance(per_seed, str) else "–"]) + " |")
    lines.append("")
    lines.append(
        "Δ favours the claim when positive: for perplexity the worse side's log PPL minus the better's "
        "(nats per token), for accuracy the better side's minus the worse's. p: paired t over windows "
        "or exact McNemar over documents within one seed; t over the per-seed Δ with two or more seeds."
    )
    return "\n".join(lines) + "\n"
