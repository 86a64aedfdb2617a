"""Paired statistics over per-item evidence: is run A better than run B, and does that
survive another seed?

Within one seed two runs of one protocol are paired item by item (DESIGN §6, issue 16):
- perplexity: the per-window mean NLLs. log PPL is the mean of them (equal tokens per
  window), so A's PPL < B's PPL exactly when the mean of d_i = nll_A,i − nll_B,i is < 0.
  Test: paired t over windows. Windows are consecutive pieces of one text and not
  independent, so the p-value is optimistic; the seed-level test below is the guard.
- zero-shot accuracy: the per-document correctness (0/1). Test: exact McNemar (a two-
  sided binomial test on the discordant documents), which needs no normal approximation.
Across seeds: one paired difference per seed, a t test and 95% interval of their mean
(one seed alone decides nothing across seeds).

A verdict is `holds` when the difference lies on the claimed side and p < alpha,
`reversed` when it lies on the other side and p < alpha, else `not significant`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from slimexp.errors import SlimexpError

ALPHA = 0.05
HOLDS, REVERSED, NOT_SIGNIFICANT = "holds", "reversed", "not significant"


@dataclass(frozen=True)
class Comparison:
    """A paired comparison, signed so that a positive `difference` favours the claim."""

    difference: float
    p: float
    interval: tuple[float, float]
    n: int
    test: str

    def verdict(self, alpha: float = ALPHA) -> str:
        if self.p < alpha and self.difference > 0:
            return HOLDS
        if self.p < alpha and self.difference < 0:
            return REVERSED
        return NOT_SIGNIFICANT

    def describe(self, alpha: float = ALPHA) -> str:
        low, high = self.interval
        return f"{self.verdict(alpha)} (p={self.p:.2g}, Δ={self.difference:+.4g} [{low:+.4g}, {high:+.4g}], n={self.n})"


def _t_sf(t: float, dof: int) -> float:
    from scipy.stats import t as student

    return float(student.sf(t, dof))


def _t_quantile(q: float, dof: int) -> float:
    from scipy.stats import t as student

    return float(student.ppf(q, dof))


def paired_t(differences: Sequence[float], test: str = "paired t") -> Comparison:
    """Two-sided one-sample t test of the mean of `differences` against 0, with its 95%
    interval. All-equal differences: p = 1 when they are 0, p = 0 otherwise."""
    n = len(differences)
    if n < 2:
        raise SlimexpError(f"a paired test needs at least 2 paired items, got {n}")
    mean = math.fsum(differences) / n
    variance = math.fsum((d - mean) ** 2 for d in differences) / (n - 1)
    if variance == 0:
        return Comparison(mean, 1.0 if mean == 0 else 0.0, (mean, mean), n, test)
    stderr = math.sqrt(variance / n)
    p = min(1.0, 2 * _t_sf(abs(mean) / stderr, n - 1))
    half = _t_quantile(0.975, n - 1) * stderr
    return Comparison(mean, p, (mean - half, mean + half), n, test)


def binomial_two_sided(successes: int, trials: int) -> float:
    """Exact two-sided p of `successes` in `trials` fair coin flips: the probability of
    every outcome no more likely than the one seen (scipy's binomtest definition)."""
    if trials == 0:
        return 1.0
    probabilities = [math.comb(trials, k) / 2**trials for k in range(trials + 1)]
    observed = probabilities[successes]
    return min(1.0, math.fsum(p for p in probabilities if p <= observed * (1 + 1e-7)))


def mcnemar(better: Sequence[float], worse: Sequence[float]) -> Comparison:
    """Exact McNemar test of two runs' per-document correctness (0/1), signed for
    `better`: the difference is its accuracy minus the other's."""
    _same_length(better, worse)
    wins = sum(1 for a, b in zip(better, worse) if a > b)
    losses = sum(1 for a, b in zip(better, worse) if a < b)
    n = len(better)
    difference = (wins - losses) / n
    # A normal interval of the paired accuracy difference (documents are independent).
    spread = math.sqrt(max(wins + losses - n * difference**2, 0.0)) / n
    interval = (difference - 1.96 * spread, difference + 1.96 * spread)
    return Comparison(difference, binomial_two_sided(wins, wins + losses), interval, n, "exact McNemar")


def sign_test(differences: Sequence[float]) -> float:
    """Exact two-sided sign test of per-seed differences (zeros dropped)."""
    positive = sum(1 for d in differences if d > 0)
    negative = sum(1 for d in differences if d < 0)
    return binomial_two_sided(positive, positive + negative)


def _same_length(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise SlimexpError(f"paired evidence differs in length ({len(a)} vs {len(b)}): not the same protocol")


def compare_windows(better: Sequence[float], worse: Sequence[float]) -> Comparison:
    """Per-window mean NLLs of the run claimed better (lower PPL) and the other; the
    difference is the other's log PPL minus the claimed run's."""
    _same_length(better, worse)
    return paired_t([w - b for b, w in zip(better, worse)], "paired t over windows")


def across_seeds(differences: Sequence[float]) -> Comparison:
    """One signed difference per seed (positive favours the claim): their mean, its 95% t
    interval and the t test's p. (An exact sign test cannot reach p < 0.05 with fewer than
    six seeds: `sign_test` is reported beside it, not used for the verdict.)"""
    if len(differences) < 2:
        only = differences[0] if differences else 0.0
        return Comparison(only, 1.0, (-math.inf, math.inf), len(differences), "t over seeds")
    return paired_t(differences, "t over seeds")
