"""Unit counts and achieved ratios (DESIGN §4 "Ratio")."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from slimexp.pruning.plan import plan_layers, planned_ratio
from slimexp.pruning.units import AttentionUnits, LayerGeometry, round_count

CONF = Path(__file__).resolve().parents[1] / "conf"

SMOLLM2 = LayerGeometry(hidden=576, n_heads=9, n_kv_heads=3, head_dim=64, d_ff=1536)
LLAMA7B = LayerGeometry(hidden=4096, n_heads=32, n_kv_heads=32, head_dim=128, d_ff=11008)
TINY_MHA = LayerGeometry(hidden=64, n_heads=4, n_kv_heads=4, head_dim=16, d_ff=128)
TINY_GQA = LayerGeometry(hidden=96, n_heads=6, n_kv_heads=2, head_dim=16, d_ff=192)


def test_rounding_follows_the_authors():
    assert round_count(2.5, "round") == 2  # half to even, as Python's round
    assert round_count(3.5, "round") == 4
    assert round_count(307.2, "floor") == 307
    with pytest.raises(ValueError):
        round_count(1.0, "ceil")


def test_smollm2_unit_sizes():
    kv = AttentionUnits(SMOLLM2, "kv_group")
    q = AttentionUnits(SMOLLM2, "q_head")
    assert (kv.n_units, kv.unit_size, kv.unit_params) == (3, 192, 8 * 64 * 576)
    assert (q.n_units, q.unit_size, q.unit_params) == (9, 64, 2 * 64 * 576)
    assert q.count(0.2, "round") == 3  # round(0.6) = 1 head per group
    assert q.lowest(__import__("torch").arange(9.0).flip(0), 3) == [2, 5, 8]
    assert kv.removal([1]) == ([3, 4, 5], [1])
    assert q.removal([0, 3, 6]) == ([0, 3, 6], [])


@pytest.mark.parametrize("geometry,layers", [(SMOLLM2, 30), (TINY_MHA, 4), (TINY_GQA, 4), (LLAMA7B, 32)])
@pytest.mark.parametrize("policy", ["kv_group", "q_head"])
@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_absorbed_rounding_hits_the_target(geometry, layers, policy, ratio):
    targets = plan_layers([geometry] * layers, [ratio] * layers, policy, "round", True)
    assert abs(planned_ratio([geometry] * layers, targets, policy) - ratio) < 0.015


def test_faithful_counts_round_heads_and_channels_separately():
    targets = plan_layers([LLAMA7B] * 32, [0.2] * 32, "kv_group", "round", False)
    assert (targets[0].attn_units, targets[0].ffn_channels) == (6, 2202)  # round(6.4), round(2201.6)
    floor = plan_layers([LLAMA7B] * 32, [0.2] * 32, "kv_group", "floor", False)
    assert (floor[0].attn_units, floor[0].ffn_channels) == (6, 2201)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-gqa"])
@pytest.mark.parametrize("policy", ["kv_group", "q_head"])
@pytest.mark.parametrize("ratio", [0.2, 0.5])
@pytest.mark.parametrize("method", ["magnitude", "flap", "llm_pruner"])
def test_configured_tiny_models_hit_the_target_after_surgery(name, policy, ratio, method):
    """Measured on the pruned model, not the plan: ±1.5 points, as on SmolLM2 (slow tests).
    FLAP allocates globally (its own pool), LLM-Pruner scores from gradients."""
    import torch

    from slimexp.checks import build_method
    from slimexp.models.loader import load_model, model_config_by_name
    from slimexp.pruning.api import PruneSettings, prune

    model, _ = load_model(model_config_by_name(name))
    pruner = build_method(OmegaConf.to_container(OmegaConf.load(CONF / "method" / f"{method}.yaml")))
    calibration = torch.randint(0, 1000, (8, 32), generator=torch.Generator().manual_seed(0))
    result = prune(model, method=pruner, ratio=ratio, calibration=calibration, settings=PruneSettings(policy))
    assert abs(result.achieved_ratio - ratio) <= 0.015
