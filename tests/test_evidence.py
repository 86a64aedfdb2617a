"""Per-item evidence in records: every window's mean NLL and every document's correctness,
so two runs of one protocol can be compared paired (issue 16, item 1)."""

import math

import pytest
import torch
from test_perplexity_bos import CharTokenizer

from conftest import SHARED_DATA
from slimexp.data.sources import load_texts
from slimexp.evaluation.perplexity import scored_windows, token_windows
from slimexp.evaluation.zeroshot import per_document


def _window_mean_nll(model, window: torch.Tensor) -> float:
    with torch.no_grad():
        log_probs = torch.log_softmax(model(window[None]).logits[0].double(), -1)
    return -sum(log_probs[t - 1, window[t]].item() for t in range(1, len(window))) / (len(window) - 1)


def test_each_window_mean_nll_matches_brute_force_and_gives_the_ppl(tiny):
    model, tok = tiny("gqa"), CharTokenizer()
    ppl, protocol, per_window = scored_windows(model, tok, "wikitext2", str(SHARED_DATA), 16, 5, batch_size=2)
    windows = token_windows(tok, load_texts("wikitext2", "test", str(SHARED_DATA)), "\n\n", 16, 5)
    assert len(per_window) == protocol["windows"] == 5
    assert per_window == pytest.approx([_window_mean_nll(model, w) for w in windows], rel=1e-6)
    assert len(set(per_window)) == 5  # windows differ: no value was broadcast
    assert math.exp(sum(per_window) / len(per_window)) == pytest.approx(ppl, rel=1e-12)


def test_documents_are_kept_in_doc_id_order_with_each_metric():
    output = {
        "samples": {
            "slimexp_piqa": [
                {"doc_id": 2, "acc": 1.0, "acc_norm": 0.0},
                {"doc_id": 0, "acc": 0.0, "acc_norm": 1.0},
                {"doc_id": 1, "acc": 1.0, "acc_norm": 1.0},
            ],
            "slimexp_boolq": [{"doc_id": 1, "acc": 0.0}, {"doc_id": 0, "acc": 1.0}],
        }
    }
    evidence = per_document(output, ["piqa", "boolq"], ["slimexp_piqa", "slimexp_boolq"])
    assert evidence["piqa"] == {"doc_id": [0, 1, 2], "acc": [0.0, 1.0, 1.0], "acc_norm": [1.0, 1.0, 0.0]}
    assert evidence["boolq"] == {"doc_id": [0, 1], "acc": [1.0, 0.0]}  # BoolQ has no acc_norm


def test_a_run_records_the_windows_each_perplexity_is_made_of(tmp_path):
    from conftest import config_for
    from slimexp.pipeline import run

    record = run(config_for(tmp_path, "method=magnitude", "eval.ppl.datasets=[wikitext2,ptb]"))
    for dataset in ("wikitext2", "ptb"):
        windows = record["evidence"][f"ppl/{dataset}"]
        assert len(windows) == record["protocol"][f"ppl/{dataset}"]["windows"]
        ppl = math.exp(sum(windows) / len(windows))
        assert ppl == pytest.approx(record["metrics"][f"ppl/{dataset}"], rel=1e-12)


def test_the_run_seed_shifts_every_recipes_calibration_draw_and_seed_0_keeps_it(tmp_path):
    from slimexp.data.calibration import sample_as_configured

    calib = {"dataset": "c4", "n_samples": 4, "seqlen": 32, "seed": 42, "sampling": "stream", "split": None}
    tok = CharTokenizer()
    published = sample_as_configured(tok, calib, str(SHARED_DATA))
    same = sample_as_configured(tok, calib, str(SHARED_DATA), run_seed=0)
    other = sample_as_configured(tok, calib, str(SHARED_DATA), run_seed=1)
    assert torch.equal(published.input_ids, same.input_ids) and published.protocol == same.protocol
    assert published.protocol["seed"] == 42 and "seed_from" not in published.protocol
    assert not torch.equal(published.input_ids, other.input_ids)
    assert other.protocol["seed"] == 43 and other.protocol["seed_from"] == {"calib.seed": 42, "seed": 1}
    assert torch.equal(other.input_ids, sample_as_configured(tok, {**calib, "seed": 43}, str(SHARED_DATA)).input_ids)


def test_a_draw_of_every_window_is_the_same_at_every_seed_and_such_a_run_is_seed_independent():
    """BookCorpus's local slice holds N stream windows: a draw of N is one set whatever the
    seed (LoRAP at scale=cpu), and the record's protocol says so; a draw of fewer is not."""
    from slimexp.data.calibration import sample_as_configured
    from slimexp.tracking.store import record_seed_independent, seed_independent

    calib = {"dataset": "bookcorpus", "n_samples": 1, "seqlen": 4096, "seed": 0, "sampling": "stream", "split": None}
    tok = CharTokenizer()
    held = sample_as_configured(tok, calib, str(SHARED_DATA)).protocol["source_windows"]
    assert held > 2
    every = {**calib, "n_samples": held}
    draws = [sample_as_configured(tok, every, str(SHARED_DATA), run_seed=s) for s in (0, 1, 2)]
    assert all(torch.equal(draws[0].input_ids, d.input_ids) for d in draws)
    fewer = [sample_as_configured(tok, {**calib, "n_samples": held - 1}, str(SHARED_DATA), run_seed=s) for s in (0, 1)]
    assert not torch.equal(fewer[0].input_ids, fewer[1].input_ids)

    lorap = {"method": {"name": "lorap"}, "model": {"source": "gguf_package"}, "finetune": {"name": "none"}}
    assert seed_independent(lorap, draws[1].protocol)
    assert not seed_independent(lorap, fewer[0].protocol)
    assert not seed_independent({**lorap, "finetune": {"name": "lora_slimllm"}}, draws[1].protocol)  # LoRA's order
    assert not seed_independent({**lorap, "model": {"source": "random"}}, draws[1].protocol)  # the weights
    assert not seed_independent(lorap)  # before the run, the config alone cannot say
    document = sample_as_configured(tok, {**calib, "sampling": "document", "seqlen": 64}, str(SHARED_DATA))
    assert "source_windows" not in document.protocol and not seed_independent(lorap, document.protocol)
    assert seed_independent({"method": {"name": "dense"}, "model": {"source": "gguf_package"}})
    assert record_seed_independent({"config": lorap, "protocol": {"calibration": draws[2].protocol}})
