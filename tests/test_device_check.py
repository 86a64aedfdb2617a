"""The device check (`make device-check`, bench/device_check.py): how two runs' selections
are compared (fast), and the whole `--cpu` variant (slow)."""

import json
import math

import pytest

from bench.device_compare import compare, margin
from conftest import run_module

METHODS = ("slimgpt", "slimllm", "flap", "llm_pruner", "wanda_sp")


def _layer(index, attn_removed, ffn_removed, decisions):
    return {"layer": index, "attn": attn_removed, "ffn": ffn_removed, "decisions": decisions}


def _decision(module, scores, removed, threshold=None):
    return {"module": module, "scores": scores, "removed": removed, "threshold": threshold}


FFN = [0.10, 0.50, 0.30, 0.3000001, 0.90, 0.70]  # channels 2 and 3: a near-tie at the cut


def _run(ffn_removed, attn_removed=(0,), later=(1,)):
    return [
        _layer(0, list(attn_removed), ffn_removed, [
            _decision("attn", [0.1, 0.2, 0.9], list(attn_removed)),
            _decision("ffn", FFN, ffn_removed),
        ]),
        _layer(1, list(later), [], [_decision("attn", [0.5, 0.1, 0.9], list(later))]),
    ]  # fmt: skip


def test_identical_runs_compare_identical():
    result = compare(_run([0, 2]), _run([0, 2]), "sequential", 0.01)
    assert result["identical"] and result["near_ties_only"] and not result["judged_flips"]


def test_a_near_tie_at_the_cut_is_listed_and_passes():
    result = compare(_run([0, 2]), _run([0, 3]), "dense_pass", 0.01)
    assert not result["identical"] and result["near_ties_only"]
    assert result["layers_differing"] == 1 and result["units_differing"] == 2
    assert {f["unit"] for f in result["judged_flips"]} == {2, 3}
    assert all(f["layer"] == 0 and f["module"] == "ffn" for f in result["judged_flips"])
    assert result["worst_margin_sigma"] < 1e-5


def test_a_flip_far_from_the_cut_fails():
    result = compare(_run([0, 2]), _run([0, 4]), "whole_model", 0.01)  # channel 4 scores 0.9: no tie
    assert not result["near_ties_only"]
    flip = next(f for f in result["judged_flips"] if f["unit"] == 4)
    assert flip["removed_by"] == "device" and flip["margin_sigma"] > 1


def test_after_the_first_flip_a_chained_method_counts_decisions_downstream():
    """sequential/dense_pass: the pruned output feeds the next layer, so only the first
    differing decision is judged; global/whole_model decide each layer on the dense model."""
    ref, dev = _run([0, 2]), _run([0, 3], later=(2,))
    chained = compare(ref, dev, "sequential", 0.01)
    assert chained["downstream_decisions"] == 1 and {f["layer"] for f in chained["judged_flips"]} == {0}
    assert chained["near_ties_only"] and chained["layers_differing"] == 2
    independent = compare(ref, dev, "global", 0.01)
    assert independent["downstream_decisions"] == 0 and not independent["near_ties_only"]


def test_a_given_threshold_is_the_cut_off_and_non_candidates_are_never_ties():
    decision = _decision("attn", [-1.0, 0.01, 2.0, math.inf], [0, 1], threshold=0.0101)
    assert margin(decision, 1)["cutoff"] == 0.0101 and margin(decision, 1)["sigma"] < 1e-3
    assert margin(decision, 3)["sigma"] == math.inf


def test_a_decision_only_one_run_made_fails():
    ref = _run([0, 2])
    dev = _run([0, 2])
    dev[1]["decisions"].append(_decision("ffn", [0.1, 0.2], [0]))
    result = compare(ref, dev, "global", 0.01)
    assert not result["near_ties_only"] and result["judged_flips"][0]["removed_by"] == "device"


@pytest.mark.slow
def test_the_cpu_device_check_passes_and_records_every_method_and_part(tmp_path):
    out = tmp_path / "device_check"
    done = run_module("bench.device_check", "--cpu", "--out", out, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["mode"].startswith("cpu")
    for part in ("part_a", "part_b", "part_c"):
        assert set(results[part]) == set(METHODS), part
    for name, row in results["part_a"].items():
        assert row["verdict"] == "ok" and row["selection"]["identical"], name  # CPU against CPU: identical
    for part in ("part_b", "part_c"):
        for name, row in results[part].items():
            assert "error" not in row and len(row["layer_s"]) == results["layers_bc"], (part, name)
    assert (out / "table.md").read_text() in done.stdout


def test_the_table_lists_flips_errors_and_a_missing_planner():
    from bench.device_table import markdown

    flips = compare(_run([0, 2]), _run([0, 4]), "whole_model", 0.01)
    common = {"calibration": "8x64", "prune_s": 1.0, "ppl_wikitext2": 10.0, "order": "whole_model"}
    measured = {
        "geometry": "llama-7b", "dtype": "float16", "calibration": "256x2048", "cap": None, "prune_s": 9.0,
        "layer_s": [4.0, 5.0], "outside_layers_s": 0.0, "layer_peak_bytes": [2**30, 2**31], "peak_bytes": 2**31,
        "achieved_ratio": 0.2, "planned": {"available": False, "error": "slimexp.planner not importable"},
    }  # fmt: skip
    results = {
        "device": "NVIDIA H200", "torch": "2.x", "mode": "cuda", "near_tie_sigma": 0.01, "ppl_tolerance": 0.01,
        "ratio": 0.2, "layers_bc": 2,
        "part_a": {
            "flap": {**common, "reference": common, "selection": flips, "ppl_rel_diff": 0.0, "verdict": "MISMATCH"},
            "slimgpt": {"error": "RuntimeError: CUDA out of memory", "reference": common, "verdict": "ERROR"},
        },
        "part_b": {"wanda_sp": measured, "slimllm": {"error": "boom"}},
    }  # fmt: skip
    table = markdown(results)
    assert "| flap | 8x64 | 1 | 2 | 2 (" in table and "MISMATCH" in table
    assert "| flap | 0 | ffn | 1 | 4 | device |" in table
    assert "ERROR: RuntimeError: CUDA out of memory" in table and "ERROR: boom" in table
    assert "| wanda_sp | 256x2048 | 9.00 | 4.50 (5.00) | 0.00 | 2.00 | 2.00 | – | – | 0.200 |" in table
    assert "planner: slimexp.planner not importable" in table
