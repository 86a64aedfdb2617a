"""LoRAP: AWSVD against Eckart–Young, the rank allocation, the FFN score, and tiny models
pruned end to end (ratio, save/reload, LoRA on the low-rank factors); SmolLM2 is slow."""

import time

import numpy as np
import pytest
import torch
from torch import nn

from slimexp.errors import SlimexpError
from slimexp.models.adapters import adapter_for
from slimexp.pruning import lowrank, surgery
from slimexp.pruning.api import prune
from slimexp.pruning.methods.lorap import (
    LoRAP,
    awsvd_factors,
    channel_scores,
    energy_ranks,
    protected_cut,
)


def _error(weight, approx, norms):
    return np.linalg.norm((weight - approx) * norms[None, :])


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_awsvd_reaches_the_activation_weighted_eckart_young_bound(rank):
    rng = np.random.default_rng(rank)
    weight, norms = rng.standard_normal((9, 7)), rng.uniform(0.1, 3.0, 7)
    left, right = awsvd_factors(torch.tensor(weight), torch.tensor(norms), rank)
    approx = (left @ right).numpy()
    sigma = np.linalg.svd(weight * norms[None, :], compute_uv=False)
    bound = np.sqrt((sigma[rank:] ** 2).sum())
    np.testing.assert_allclose(_error(weight, approx, norms), bound, rtol=1e-10, atol=1e-12)
    u, s, vt = np.linalg.svd(weight * norms[None, :], full_matrices=False)
    reference = (u[:, :rank] * s[:rank]) @ vt[:rank] / norms[None, :]
    np.testing.assert_allclose(approx, reference, atol=1e-10)
    # Plain SVD of W (no activation weighting) is never better in the weighted norm.
    uw, sw, vtw = np.linalg.svd(weight, full_matrices=False)
    plain = (uw[:, :rank] * sw[:rank]) @ vtw[:rank]
    assert _error(weight, plain, norms) >= bound - 1e-12


def test_a_dead_input_column_is_dropped_not_divided_by_zero():
    weight, norms = torch.randn(5, 4, dtype=torch.float64), torch.tensor([1.0, 0.0, 2.0, 0.5], dtype=torch.float64)
    left, right = awsvd_factors(weight, norms, 2)
    assert torch.isfinite(right).all() and torch.all(right[:, 1] == 0)


def test_energy_allocation_gives_the_steeper_spectrum_the_smaller_rank():
    steep = torch.tensor([10.0, 1.0, 0.1, 0.01], dtype=torch.float64)
    flat = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    shapes = [(4, 4), (4, 4)]
    # Budget of 16 weights: rank 1 costs 8, so the two ranks sum to 2 at most.
    assert energy_ranks([steep, flat], shapes, 16) == [1, 1]
    # 24 weights: the flat matrix needs rank 2 to follow the steep one's 99% past rank 1.
    ranks = energy_ranks([steep, flat], shapes, 24)
    assert ranks[0] <= ranks[1] and sum(lowrank.factored_params(4, 4, r) for r in ranks) <= 24
    assert energy_ranks([steep, flat], shapes, 32) == [4, 4]  # dense: both fit whole


def test_ffn_scores_equal_the_formula_by_hand():
    rng = np.random.default_rng(0)
    gate, up, down = rng.standard_normal((6, 4)), rng.standard_normal((6, 4)), rng.standard_normal((4, 6))
    x_norm, a_norm = rng.uniform(0, 2, 4), rng.uniform(0, 2, 6)
    by_hand = [
        sum(abs(gate[c, j]) * x_norm[j] + abs(up[c, j]) * x_norm[j] for j in range(4))
        + sum(abs(down[i, c]) * a_norm[c] for i in range(4))
        for c in range(6)
    ]
    scores = channel_scores(*(torch.tensor(a) for a in (gate, up, down, x_norm, a_norm)))
    np.testing.assert_allclose(scores.numpy(), by_hand, rtol=1e-12)
    # 1% of 200 channels: the two lowest stay, the next three go.
    order = torch.randperm(200)
    assert protected_cut(order.double(), 3, 0.01) == sorted(torch.argsort(order)[2:5].tolist())


def test_bad_settings_are_one_line_errors():
    with pytest.raises(SlimexpError, match="allocation"):
        LoRAP(allocation="svd")
    with pytest.raises(SlimexpError, match="protect_lowest_frac"):
        LoRAP(protect_lowest_frac=1.5)
    with pytest.raises(SlimexpError, match="attn_ratio"):
        LoRAP(attn_ratio=-0.1)


def _captured_ffn_inputs(model, calibration):
    layer = adapter_for(model).layers(model)[0]
    seen = {}

    def keep(key):
        def hook(module, args):
            seen.setdefault(key, args[0].double())  # returns None: the input goes on unchanged

        return hook

    hooks = [
        layer.mlp.gate_proj.register_forward_pre_hook(keep("x")),
        layer.mlp.down_proj.register_forward_pre_hook(keep("a")),
    ]
    with torch.no_grad():
        model(calibration)
    for hook in hooks:
        hook.remove()
    return layer, seen


def test_the_engine_scores_layer_0s_channels_with_the_formula(tiny):
    model = tiny("gqa")
    calibration = torch.randint(0, 64, (6, 16))
    layer, seen = _captured_ffn_inputs(model, calibration)
    weights = [layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight, layer.mlp.down_proj.weight]
    x_norm = seen["x"].pow(2).sum((0, 1)).sqrt()
    a_norm = seen["a"].pow(2).sum((0, 1)).sqrt()
    expected = channel_scores(*(w.detach() for w in weights), x_norm, a_norm)
    result = prune(model, method=LoRAP(), ratio=0.5, calibration=calibration, batch_size=4)
    decision = result.selections[0]["decisions"][0]
    np.testing.assert_allclose(decision["scores"].numpy(), expected.numpy(), rtol=1e-6)
    assert decision["removed"] == protected_cut(expected, result.layers[0]["removed_channels"], 0.01)


@pytest.mark.parametrize("kind", ["mha", "gqa"])
@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_tiny_models_hit_the_ratio_and_reload_with_identical_logits(tiny, tmp_path, kind, ratio):
    import slimexp
    from slimexp.models.checkpoint import save_pruned

    model = tiny(kind)
    result = prune(model, method=LoRAP(), ratio=ratio, calibration=torch.randint(0, 64, (6, 16)))
    assert abs(result.achieved_ratio - ratio) <= 0.015, result.achieved_ratio
    adapter = adapter_for(model)
    layer = adapter.layers(model)[0]
    ranks = surgery.widths(layer, adapter)["ranks"]
    assert set(ranks) == {"q", "k", "v", "o"} and all(r > 0 for r in ranks.values())
    assert isinstance(layer.self_attn.q_proj, lowrank.LowRankLinear)
    assert result.notes == []
    save_pruned(model, tmp_path / "m")
    reloaded = slimexp.load_pruned(tmp_path / "m")
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)
    assert surgery.decoder_params(reloaded, adapter) == surgery.decoder_params(model, adapter)


def test_a_factored_projection_stays_dense_where_factoring_would_not_pay(tiny):
    model = tiny("mha")
    prune(model, method=LoRAP(attn_ratio=0.0), ratio=0.2, calibration=torch.randint(0, 64, (4, 16)))
    layer = adapter_for(model).layers(model)[0]
    assert type(layer.self_attn.q_proj) is nn.Linear
    assert "ranks" not in surgery.widths(layer, adapter_for(model))


def test_pipeline_run_saves_reloads_and_recovers_with_lora_on_the_factors(tmp_path):
    """Through the pipeline: LoRAP at 0.5, LoRA recovery adapting the factor Linears and
    merging into them (still low-rank), then save/reload with identical logits."""
    pytest.importorskip("peft")
    import slimexp
    from conftest import config_for
    from slimexp.pipeline import run

    record = run(
        config_for(
            tmp_path,
            "method=lorap",
            "prune.ratio=0.5",
            "results.save_model=true",
            "eval.ppl.max_windows=2",
            "eval.ppl.datasets=[wikitext2]",
            "finetune=lora_slimllm",
            "finetune.max_steps=1",
            "finetune.batch_size=2",
            "finetune.micro_batch_size=2",
            "finetune.max_examples=4",
            "finetune.cutoff_len=64",
        )
    )
    assert abs(record["metrics"]["params/achieved_ratio"] - 0.5) <= 0.015
    # Per layer q/k/v/o give 2 factor Linears each, gate/up/down one: 11 adapted Linears.
    assert record["training"]["adapted_modules"] % 11 == 0 and len(record["training"]["loss"]) == 1
    model = slimexp.load_pruned(record["model_path"])
    attn = adapter_for(model).layers(model)[0].self_attn
    assert isinstance(attn.q_proj, lowrank.LowRankLinear)
    assert not any("lora" in n for n, _ in model.named_modules())


def test_lora_targets_the_two_factors_and_merges_into_them(tiny):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    from slimexp.finetune.lora import lora_targets

    model = tiny("gqa")
    prune(model, method=LoRAP(), ratio=0.5, calibration=torch.randint(0, 64, (4, 16)))
    targets = lora_targets(model, ["q_proj", "down_proj"])
    assert "model.layers.0.self_attn.q_proj.proj_in" in targets
    assert "model.layers.0.self_attn.q_proj.proj_out" in targets
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=targets, init_lora_weights=False))
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        adapted = peft_model(ids).logits
    merged = peft_model.merge_and_unload()
    with torch.no_grad():
        assert (merged(ids).logits - adapted).abs().max() < 1e-4
    assert isinstance(adapter_for(merged).layers(merged)[0].self_attn.q_proj, lowrank.LowRankLinear)


def test_an_old_checkpoint_without_ranks_reloads_dense(tiny, tmp_path):
    import slimexp
    from slimexp.models.checkpoint import save_pruned
    from slimexp.pruning.methods.magnitude import Magnitude

    model = tiny("gqa")
    prune(model, method=Magnitude(), ratio=0.3)
    save_pruned(model, tmp_path / "m")
    reloaded = slimexp.load_pruned(tmp_path / "m")
    assert type(adapter_for(reloaded).layers(reloaded)[0].self_attn.q_proj) is nn.Linear


# -- SmolLM2 (slow) ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_smollm2_hits_the_ratio_beats_random_and_reloads(tmp_path, ratio):
    """recipe=lorap/paper (scale=cpu caps) against method=random at the same ratio, on the
    first 32 windows of WikiText-2 and PTB; a pruned SmolLM2 reloads with the same logits."""
    from test_smollm2 import _save_reload_with_same_logits, _smollm2_config

    from slimexp.models.loader import load_model, model_config_by_name
    from slimexp.pipeline import run

    ppl, seconds, achieved = {}, {}, None
    common = [f"prune.ratio={ratio}", "scale=cpu", "eval.ppl.max_windows=32", "eval.ppl.datasets=[wikitext2,ptb]"]
    for name, method in {"lorap": "recipe=lorap/paper", "random": "method=random"}.items():
        start = time.perf_counter()
        record = run(_smollm2_config(tmp_path, method, *common))
        seconds[name] = round(time.perf_counter() - start, 1)
        assert record["status"] == "done"
        assert abs(record["metrics"]["params/achieved_ratio"] - ratio) <= 0.015, record["metrics"]
        ppl[name] = {d: round(record["metrics"][f"ppl/{d}"], 2) for d in ("wikitext2", "ptb")}
        achieved = record["metrics"]["params/achieved_ratio"] if name == "lorap" else achieved
    print(f"SmolLM2 LoRAP {ratio:.0%}: achieved {achieved:.4f}, ppl {ppl}, seconds {seconds}")
    assert all(ppl["lorap"][d] < ppl["random"][d] for d in ("wikitext2", "ptb"))
    model, tokenizer = load_model(model_config_by_name("smollm2-135m"))
    prune(model, method=LoRAP(), ratio=ratio, calibration=torch.randint(0, 49152, (8, 64)))
    _save_reload_with_same_logits(model, tokenizer, tmp_path)
