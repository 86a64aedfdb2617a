"""End to end on a tiny random model: prune, evaluate, record, skip, save and reload."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

import slimexp
from conftest import SHARED_DATA, config_for
from slimexp.evaluation.perplexity import perplexity
from slimexp.pipeline import resolve_config, run

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize("method", ["dense", "magnitude", "random", "wanda_sp"])
def test_run_records_metrics_and_protocol(tmp_path, method):
    record = run(config_for(tmp_path, f"method={method}", "prune.ratio=0.5"))
    stored = json.loads((tmp_path / "runs" / f"{record['run_key']}.json").read_text())
    assert stored["status"] == "done" and stored["method"] == method
    metrics = stored["metrics"]
    for key in ("ppl/wikitext2", "ppl/ptb", "params/total", "params/achieved_ratio", "mem/peak_rss_gb", "time/total_s"):
        assert key in metrics, key
    assert metrics["ppl/wikitext2"] > 1
    expected_ratio = 0.0 if method == "dense" else 0.5
    assert abs(metrics["params/achieved_ratio"] - expected_ratio) < 0.1
    assert stored["protocol"]["ppl/wikitext2"]["windows"] == 4
    assert stored["protocol"]["ppl/ptb"]["split"] == "validation"
    assert stored["versions"]["torch"] and "sha" in stored["git"]
    assert len(stored["widths"]) == 4
    removed_heads = sum(6 - w["n_heads"] for w in stored["widths"])  # tiny-llama-gqa: 6 query heads
    assert metrics["prune/attn_units_removed"] == sum(w.get("attn_units", 0) for w in stored["widths"])
    assert (metrics["prune/attn_units_removed"] > 0) == (removed_heads > 0)
    if method in ("wanda_sp",):
        assert stored["protocol"]["calibration"] == {
            "dataset": "c4",
            "split": "train",
            "n_samples": 4,
            "seqlen": 32,
            "seed": 0,
            "sampling": "document",
            "data_slice": "head: c4/train (1,000 of 356,317 rows)",  # ../shared/data's head of C4
        }
    assert stored["protocol"]["placement"] == "whole model on cpu"
    assert stored["protocol"]["threads"] == torch.get_num_threads()
    assert stored["weights"] == {"source": "random"}


def test_done_runs_are_skipped(tmp_path, monkeypatch):
    import slimexp.pipeline as pipeline

    first = run(config_for(tmp_path, "method=wanda_sp"))
    monkeypatch.setattr(pipeline, "load_model", lambda *a, **k: pytest.fail("a done run loaded its model again"))
    again = run(config_for(tmp_path, "method=wanda_sp", "logger.mode=disabled", "eval.ppl.batch_size=2"))
    assert again["run_key"] == first["run_key"] and again["finished_at"] == first["finished_at"]


@pytest.mark.parametrize("policy", ["kv_group", "q_head"])
def test_saved_model_reloads_with_the_same_logits(tmp_path, policy):
    record = run(
        config_for(
            tmp_path, "method=wanda_sp", "prune.ratio=0.5", f"prune.attn_unit={policy}", "results.save_model=true"
        )
    )
    model = slimexp.load_pruned(record["model_path"])
    heads = {"kv_group": (3, 1), "q_head": (2, 2)}[policy]  # 0.5 of 2 groups / of 3 heads per group
    assert all((w["n_heads"], w["n_kv_heads"]) == heads for w in record["widths"])
    assert record["metrics"]["params/total"] == sum(p.numel() for p in model.parameters())
    tokenizer = AutoTokenizer.from_pretrained(record["model_path"])
    ppl, _ = perplexity(model, tokenizer, "wikitext2", str(SHARED_DATA), 128, 4)
    assert ppl == pytest.approx(record["metrics"]["ppl/wikitext2"], rel=1e-6)
    ids = tokenizer("The pruned model still speaks.", return_tensors="pt")["input_ids"]
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] == ids.shape[1] + 4


def test_layer_error_analysis_is_zero_for_dense_and_grows_when_pruned(tmp_path):
    overrides = ("eval.layer_error.enabled=true", "eval.layer_error.windows=2", "eval.ppl.datasets=[]")
    dense = run(config_for(tmp_path, "method=dense", *overrides))
    assert dense["analysis"]["ffn_output_mse"] == [0.0] * 4
    pruned = run(config_for(tmp_path, "method=magnitude", "prune.ratio=0.5", *overrides))
    errors = pruned["analysis"]["ffn_output_mse"]
    assert len(errors) == 4 and min(errors) > 0
    assert pruned["protocol"]["layer_error"]["windows"] == 2


def test_latency_is_recorded_with_its_protocol(tmp_path):
    record = run(
        config_for(
            tmp_path,
            "method=magnitude",
            "prune.ratio=0.5",
            "eval=latency",
            "eval.ppl.datasets=[]",
            "eval.latency.prefill_tokens=16",
            "eval.latency.decode_tokens=4",
            "eval.latency.decode_batch=2",
            "eval.latency.repeats=3",
        )
    )
    metrics, protocol = record["metrics"], record["protocol"]["latency"]
    assert metrics["latency/prefill_s"] > 0 and metrics["latency/decode_s"] > 0
    assert metrics["latency/decode_tokens_per_s"] == pytest.approx(2 * 4 / metrics["latency/decode_s"])
    assert len(protocol["prefill_s_all"]) == 3 and protocol["statistic"] == "median"
    assert sorted(protocol["decode_s_all"])[1] == pytest.approx(metrics["latency/decode_s"])
    assert metrics["params/model_bytes"] > 0
    # The dense model was timed beside the pruned one, as many times, and the ratios are
    # of the two medians.
    assert len(protocol["dense_decode_s_all"]) == 3 and protocol["dense_reference"]
    assert sorted(protocol["dense_prefill_s_all"])[1] == pytest.approx(metrics["latency/dense_prefill_s"])
    assert metrics["latency/decode_ratio"] == pytest.approx(
        metrics["latency/decode_s"] / metrics["latency/dense_decode_s"]
    )
    assert metrics["latency/prefill_ratio"] == pytest.approx(
        metrics["latency/prefill_s"] / metrics["latency/dense_prefill_s"]
    )


def test_latency_of_the_dense_model_is_its_own_reference(tmp_path):
    overrides = [
        "eval=latency",
        "eval.ppl.datasets=[]",
        "eval.latency.prefill_tokens=8",
        "eval.latency.decode_tokens=2",
        "eval.latency.decode_batch=1",
        "eval.latency.repeats=1",
    ]
    dense = run(config_for(tmp_path, "method=dense", *overrides))
    assert dense["metrics"]["latency/decode_ratio"] == 1.0 and "latency/dense_decode_s" not in dense["metrics"]
    alone = run(
        config_for(tmp_path, "method=magnitude", "prune.ratio=0.5", "eval.latency.dense_reference=false", *overrides)
    )
    assert "latency/decode_ratio" not in alone["metrics"] and "dense_decode_s_all" not in alone["protocol"]["latency"]


def test_interleaved_timing_takes_turns_within_each_repeat():
    from slimexp.evaluation.latency import _interleaved_seconds

    calls = []
    times = _interleaved_seconds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, 1, "cpu")
    assert calls == ["a", "b", "a", "b", "a", "b", "a", "b"]
    assert [len(v) for v in times.values()] == [3, 3]


def test_a_job_waits_for_a_concurrent_one_with_the_same_key_then_skips(tmp_path):
    """Two sweeps asking for the same run: the second waits on the run's lock and, finding
    the record done, returns it (no second computation, no write)."""
    import threading

    from slimexp.tracking.store import ResultsStore, run_key

    config = config_for(tmp_path, "method=magnitude", "experiment_name=second")
    resolved = resolve_config(config)
    key = run_key(resolved)
    store = ResultsStore(tmp_path)
    result = {}
    with store.claim(key):
        worker = threading.Thread(target=lambda: result.setdefault("record", run(config)))
        worker.start()
        worker.join(timeout=1.5)
        assert worker.is_alive(), "the second job did not wait for the lock"
        store.write({"run_key": key, "status": "done", "experiment": "first", "metrics": {"x": 1}})
        written = store.path(key).stat().st_mtime_ns
    worker.join(timeout=60)
    assert store.read(key)["metrics"] == {"x": 1}  # not recomputed
    assert result["record"]["experiment"] == "first" and store.path(key).stat().st_mtime_ns == written
