"""bench.parallel_runs' comparison of two folders' results: it must find the worst leaf."""

import math

from bench.parallel_runs import largest_difference


def test_identical_results_differ_by_nothing():
    results = {"k": {"ppl/wikitext2": 12.5, "windows": [1.0, 2.0]}}
    assert largest_difference(results, {"k": {"ppl/wikitext2": 12.5, "windows": [1.0, 2.0]}}) == (0.0, "")


def test_the_largest_relative_difference_is_found_and_named():
    a = {"k": {"ppl": 100.0, "windows": [1.0, 4.0]}}
    b = {"k": {"ppl": 100.0001, "windows": [1.0, 4.0 + 4e-5]}}
    worst, where = largest_difference(a, b)
    assert math.isclose(worst, 1e-5, rel_tol=1e-6) and where.startswith("/k/windows[1]")


def test_a_missing_run_or_value_is_an_infinite_difference():
    assert largest_difference({"a": {"ppl": 1.0}}, {"b": {"ppl": 1.0}})[0] == math.inf
    assert largest_difference({"a": {"ppl": 1.0}}, {"a": {"ppl": None}})[0] == math.inf
