"""Baseline methods and the layer-wise engine on tiny random models."""

import numpy as np
import pytest
import torch

from conftest import prune_uniformly
from slimexp.models.adapters import adapter_for
from slimexp.pruning import surgery
from slimexp.pruning.engine import PruningMethod
from slimexp.pruning.methods.magnitude import Magnitude
from slimexp.pruning.methods.random import Random
from slimexp.pruning.methods.wanda_sp import WandaSP
from slimexp.pruning.scoring import SquaredNormPerSequence
from slimexp.pruning.units import AttentionUnits


def test_squared_norm_per_sequence_matches_numpy():
    x = torch.randn(7, 5, 4)
    acc = SquaredNormPerSequence()
    for chunk in (x[:3], x[3:4], x[4:]):
        acc.add_batch(chunk)
    expected = np.sqrt((x.numpy() ** 2).sum(axis=(0, 1)) / 7)
    np.testing.assert_allclose(acc.norm().numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("kind", ["mha", "gqa"])
@pytest.mark.parametrize("policy", ["kv_group", "q_head"])
def test_magnitude_removes_the_lowest_norm_units_and_channels(tiny, kind, policy):
    model = tiny(kind)
    adapter = adapter_for(model)
    layer = adapter.layers(model)[0]
    units = AttentionUnits(surgery.geometry(layer, adapter), policy)
    o = adapter.linear(layer, "o").weight.detach().numpy()
    column_norms = np.linalg.norm(o, axis=0)
    unit_scores = torch.tensor([column_norms[units.columns_of(u)].sum() for u in range(units.n_units)])
    down_norms = np.linalg.norm(adapter.linear(layer, "down").weight.detach().numpy(), axis=0)
    targets, infos = prune_uniformly(model, Magnitude(), 0.5, policy)
    assert infos[0]["removed_units"] == units.lowest(unit_scores, targets[0].attn_units)
    kept = adapter.linear(adapter.layers(model)[0], "down").weight.detach().numpy()
    expected_kept = np.sort(np.argsort(down_norms, kind="stable")[targets[0].ffn_channels :])
    reference = tiny(kind).model.layers[0].mlp.down_proj.weight.detach().numpy()
    np.testing.assert_allclose(kept, reference[:, expected_kept])


def test_wanda_sp_scores_equal_direct_computation(tiny):
    model = tiny("gqa")
    adapter = adapter_for(model)
    calibration = torch.randint(0, 64, (5, 16))
    with torch.no_grad():
        hidden = model(calibration, output_hidden_states=True).hidden_states
    layer = adapter.layers(model)[0]
    captured = {}
    handle = adapter.linear(layer, "o").register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0]))
    down_handle = adapter.linear(layer, "down").register_forward_pre_hook(lambda m, a: captured.setdefault("d", a[0]))
    with torch.no_grad():
        model(calibration)
    handle.remove(), down_handle.remove()
    x_o, x_d = captured["x"].numpy(), captured["d"].numpy()
    w_o = adapter.linear(layer, "o").weight.detach().numpy()
    w_d = adapter.linear(layer, "down").weight.detach().numpy()
    col = np.abs(w_o).mean(0) * np.sqrt((x_o**2).sum((0, 1)) / 5)
    chan = np.abs(w_d).mean(0) * np.sqrt((x_d**2).sum((0, 1)) / 5)
    units = AttentionUnits(surgery.geometry(layer, adapter), "kv_group")
    unit_scores = torch.tensor([col[units.columns_of(u)].sum() for u in range(units.n_units)])
    assert hidden[0].shape == (5, 16, 96)
    targets, infos = prune_uniformly(model, WandaSP(), 0.5, "kv_group", calibration)
    assert infos[0]["removed_units"] == units.lowest(unit_scores, targets[0].attn_units)
    expected_kept = np.sort(np.argsort(chan, kind="stable")[targets[0].ffn_channels :])
    reference = tiny("gqa").model.layers[0].mlp.down_proj.weight.detach().numpy()
    np.testing.assert_allclose(
        adapter.linear(adapter.layers(model)[0], "down").weight.detach().numpy(), reference[:, expected_kept]
    )


def test_random_is_seeded():
    def removed(seed, tiny_builder):
        model = tiny_builder("mha")
        _, infos = prune_uniformly(model, Random(seed), 0.5, "kv_group")
        return [i["removed_units"] for i in infos], [
            surgery.widths(layer, adapter_for(model)) for layer in adapter_for(model).layers(model)
        ]

    from conftest import build_tiny

    assert removed(1, build_tiny) == removed(1, build_tiny)
    assert (
        removed(1, build_tiny)[0] != removed(2, build_tiny)[0] or removed(1, build_tiny)[0] != removed(3, build_tiny)[0]
    )


@pytest.mark.parametrize("kind", ["mha", "gqa"])
@pytest.mark.parametrize("policy", ["kv_group", "q_head"])
@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_engine_meets_the_plan_and_the_model_still_runs(tiny, kind, policy, ratio):
    model = tiny(kind, layers=4)
    adapter = adapter_for(model)
    dense = surgery.decoder_params(model, adapter)
    targets, infos = prune_uniformly(model, WandaSP(), ratio, policy, torch.randint(0, 64, (4, 16)))
    for target, info, layer in zip(targets, infos, adapter.layers(model)):
        g = surgery.geometry(layer, adapter)
        units = AttentionUnits(surgery.geometry(tiny(kind).model.layers[0], adapter), policy)
        assert g.d_ff == 80 - target.ffn_channels
        assert len(info["removed_units"] if target.attn_units else []) == target.attn_units
        assert g.n_heads == units.geometry.n_heads - target.attn_units * len(units.heads_of(0))
    achieved = 1 - surgery.decoder_params(model, adapter) / dense
    assert abs(achieved - ratio) < 0.08  # tiny layers: few, large units; SmolLM2 is checked to ±1.5 pt
    model.generate(torch.randint(0, 64, (1, 5)), max_new_tokens=3, do_sample=False, pad_token_id=0)


class _RecordFfnInput(PruningMethod):
    """Sequential-order probe: prunes unit 0, then records what the FFN sees."""

    name = "probe"

    def __init__(self):
        self.seen = {}

    def attention_statistics(self, ctx):
        return {}

    def prune_attention(self, ctx, stats):
        ctx.remove_attention_units([0])

    def ffn_statistics(self, ctx):
        probe = self

        class Keep:
            def add_batch(self, x):
                probe.seen.setdefault(ctx.index, []).append(x)

        return {"mlp.in": Keep()}

    def prune_ffn(self, ctx, stats):
        ctx.remove_channels([0])


def test_sequential_order_scores_the_ffn_after_attention_is_pruned(tiny):
    model, reference = tiny("gqa", layers=2), tiny("gqa", layers=2)
    calibration = torch.randint(0, 64, (4, 8))
    method = _RecordFfnInput()
    prune_uniformly(model, method, 0.3, "kv_group", calibration, batch_size=2)
    adapter = adapter_for(reference)
    layers = adapter.layers(reference)
    surgery.remove_heads(layers[0], adapter, [0, 1, 2], [0])
    captured = []
    handle = adapter.ffn(layers[0]).register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    with torch.no_grad():
        reference(calibration)
    handle.remove()
    torch.testing.assert_close(torch.cat(method.seen[0]), captured[0], atol=1e-5, rtol=1e-5)
    # Layer 1 is fed by the pruned layer 0 (attention and FFN pruned).
    surgery.remove_channels(layers[0], adapter, [0])
    surgery.remove_heads(layers[1], adapter, [0, 1, 2], [0])
    captured.clear()
    handle = adapter.ffn(layers[1]).register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    with torch.no_grad():
        reference(calibration)
    handle.remove()
    torch.testing.assert_close(torch.cat(method.seen[1]), captured[0], atol=1e-5, rtol=1e-5)


def test_every_method_and_schedule_is_a_dataclass_described_by_its_settings():
    """One describe() for all: the name, every setting a config can set, then what the
    component found at run time; bad settings are SlimexpErrors naming the setting."""
    from dataclasses import fields, is_dataclass

    from slimexp.errors import SlimexpError
    from slimexp.pruning.methods.flap import FLAP
    from slimexp.pruning.methods.llm_pruner import LLMPruner
    from slimexp.pruning.methods.slimgpt import SlimGPT
    from slimexp.pruning.methods.slimllm import SlimLLM
    from slimexp.pruning.redundancy import CosineSoftmax
    from slimexp.pruning.schedules import LayerRange, LogIncrease, SelectedLayers, Uniform

    for component in (
        FLAP(),
        LLMPruner(),
        SlimGPT(),
        SlimLLM(),
        Random(3),
        Magnitude(),
        WandaSP(),
        CosineSoftmax(),
        LayerRange(),
        LogIncrease(),
        SelectedLayers(),
        Uniform(),
    ):
        assert is_dataclass(component)
        settings = [f.name for f in fields(component) if f.init]
        assert list(component.describe())[: len(settings) + 1] == ["name", *settings]
    ramp = LogIncrease(r_min=0.1)
    ramp.layer_ratios(0.3, 4)
    assert ramp.describe()["r_max_used"] == pytest.approx(
        0.1 + (0.3 - 0.1) * 4 / sum(__import__("math").log(1 + i) / __import__("math").log(4) for i in range(4))
    )
    for make, message in (
        (lambda: SlimLLM(protect_lowest_frac=1.5), "protect_lowest_frac must lie in"),
        (lambda: FLAP(metric="L2"), "metric must be one of"),
        (lambda: LLMPruner(counts="mine"), "counts must be one of"),
        (lambda: LogIncrease(r_min=-0.1), "r_min must lie in"),
        (lambda: CosineSoftmax(n_pruned_frac=0), "n_pruned_frac must be in"),
        (lambda: LayerRange(start=5, end=2), "layer_range needs 0 <= start < end"),
    ):
        with pytest.raises(SlimexpError, match=message):
            make()
