"""The paired statistics behind claim verdicts, against scipy and closed forms on fixed numbers."""

import math

import pytest
from scipy import stats

from slimexp.errors import SlimexpError
from slimexp.report.evidence import (
    HOLDS,
    NOT_SIGNIFICANT,
    REVERSED,
    across_seeds,
    binomial_two_sided,
    compare_windows,
    mcnemar,
    paired_t,
    sign_test,
)

A = [2.31, 2.45, 2.12, 2.67, 2.50, 2.38, 2.29, 2.71]
B = [2.40, 2.52, 2.15, 2.80, 2.49, 2.51, 2.35, 2.90]


def test_paired_t_equals_scipy_and_the_closed_form():
    ours = compare_windows(A, B)  # A claimed better: B − A per window
    reference = stats.ttest_rel(B, A)
    assert ours.p == pytest.approx(reference.pvalue, rel=1e-10)
    d = [b - a for a, b in zip(A, B)]
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    assert ours.difference == pytest.approx(mean, rel=1e-12)
    assert reference.statistic == pytest.approx(mean / (sd / math.sqrt(len(d))), rel=1e-10)
    low, high = reference.confidence_interval(0.95)
    assert ours.interval == pytest.approx((low, high), rel=1e-9)
    assert ours.verdict() == HOLDS and ours.n == 8


def test_a_run_against_itself_is_not_significant_and_a_reversed_claim_reads_reversed():
    assert compare_windows(A, A).verdict() == NOT_SIGNIFICANT
    assert compare_windows(A, A).p == 1.0
    assert compare_windows(B, A).verdict() == REVERSED


def test_dense_against_random_50_percent_holds():
    dense = [3.1 + 0.2 * math.sin(i) for i in range(128)]
    random_half = [9.4 + 0.5 * math.cos(i) for i in range(128)]
    comparison = compare_windows(dense, random_half)
    assert comparison.verdict() == HOLDS and comparison.p < 1e-50


def test_exact_mcnemar_equals_scipys_binomial_test():
    better = [1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1]
    worse = [0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1]
    wins = sum(a > b for a, b in zip(better, worse))
    losses = sum(a < b for a, b in zip(better, worse))
    comparison = mcnemar(better, worse)
    assert comparison.p == pytest.approx(stats.binomtest(wins, wins + losses).pvalue, rel=1e-10)
    assert comparison.difference == pytest.approx((sum(better) - sum(worse)) / len(better))
    assert comparison.verdict() == HOLDS  # 8 wins, 1 loss: p = 0.039
    assert mcnemar(worse, better).verdict() == REVERSED
    assert mcnemar(better, better).verdict() == NOT_SIGNIFICANT


@pytest.mark.parametrize("successes,trials", [(0, 1), (3, 10), (7, 9), (12, 30), (50, 100), (0, 0)])
def test_binomial_matches_scipy(successes, trials):
    expected = 1.0 if trials == 0 else stats.binomtest(successes, trials).pvalue
    assert binomial_two_sided(successes, trials) == pytest.approx(expected, rel=1e-10)


def test_seeds_use_a_t_interval_and_report_the_sign_test():
    consistent = [0.041, 0.052, 0.047]
    comparison = across_seeds(consistent)
    assert comparison.p == pytest.approx(stats.ttest_1samp(consistent, 0).pvalue, rel=1e-10)
    assert comparison.verdict() == HOLDS
    assert sign_test(consistent) == pytest.approx(0.25)  # three seeds: the sign test cannot decide
    assert across_seeds([0.04, -0.05, 0.01]).verdict() == NOT_SIGNIFICANT
    assert across_seeds([0.04]).verdict() == NOT_SIGNIFICANT


def test_unpaired_evidence_is_refused():
    with pytest.raises(SlimexpError, match="differs in length"):
        compare_windows([1.0, 2.0], [1.0])
    with pytest.raises(SlimexpError, match="at least 2"):
        paired_t([0.3])
